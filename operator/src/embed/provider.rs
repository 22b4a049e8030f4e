//! The one interface every embedding backend implements (a batch of texts in, one vector per text
//! out, in order), its errors, and the HTTP plumbing the two HTTP protocols share.

use std::{fmt, str::FromStr, time::Duration};

use futures::future::BoxFuture;
use reqwest::{StatusCode, header::RETRY_AFTER};

/// One vector per input, in input order.
pub type Vectors = Vec<Vec<f32>>;

/// An embedding backend. Object-safe (boxed futures) so the worker holds `Arc<dyn Provider>`.
pub trait Provider: Send + Sync {
    /// Short protocol name for logs and metrics ("openai", "ollama").
    fn name(&self) -> &'static str;
    /// The model asked for; written to `memories.embedding_model`.
    fn model(&self) -> &str;
    /// Embed `inputs` in one request.
    fn embed<'a>(&'a self, inputs: &'a [String]) -> BoxFuture<'a, Result<Vectors, ProviderError>>;
}

/// What can go wrong talking to a provider. Messages never hold the API key.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    #[error("rate limited by the provider (HTTP 429)")]
    RateLimited { retry_after: Option<Duration> },
    #[error("the provider is unavailable (HTTP {status})")]
    Unavailable {
        status: u16,
        retry_after: Option<Duration>,
    },
    #[error("the request to the provider timed out")]
    Timeout,
    #[error("cannot reach the provider: {0}")]
    Unreachable(String),
    /// 400, 413 or 422: something in the inputs; the worker bisects the batch to find the row.
    #[error("the provider rejected the input (HTTP {status}): {message}")]
    Rejected { status: u16, message: String },
    /// Any other 4xx (bad key, unknown model, wrong path): configuration, never a row's fault, so
    /// it is neither retried nor bisected; the batch is released.
    #[error("the provider refused the request (HTTP {status}): {message}")]
    Refused { status: u16, message: String },
    #[error("unexpected answer from the provider: {0}")]
    BadResponse(String),
    /// The local model failed on a batch (configuration or a bug, not a row's text: inputs are
    /// truncated to fit), so it is neither retried nor bisected.
    #[error("local inference failed: {0}")]
    Local(String),
}

impl ProviderError {
    /// Short, stable label (logs, metrics).
    pub fn label(&self) -> &'static str {
        match self {
            ProviderError::RateLimited { .. } => "RateLimited",
            ProviderError::Unavailable { .. } => "ProviderUnavailable",
            ProviderError::Timeout => "ProviderTimeout",
            ProviderError::Unreachable(_) => "ProviderUnreachable",
            ProviderError::Rejected { .. } => "ProviderRejected",
            ProviderError::Refused { .. } => "ProviderRefused",
            ProviderError::BadResponse(_) => "BadResponse",
            ProviderError::Local(_) => "LocalInference",
        }
    }

    /// Worth trying the same request again after a pause.
    pub fn is_retriable(&self) -> bool {
        matches!(
            self,
            ProviderError::RateLimited { .. }
                | ProviderError::Unavailable { .. }
                | ProviderError::Timeout
                | ProviderError::Unreachable(_)
        )
    }

    /// The server's `Retry-After`, when it sent one.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            ProviderError::RateLimited { retry_after }
            | ProviderError::Unavailable { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// An API key (from a Secret through an env var). Never printed: `Debug` and `Display` redact it.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey(String);

impl ApiKey {
    pub fn new(key: impl Into<String>) -> Self {
        Self(key.into())
    }
    fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiKey(<redacted>)")
    }
}

impl FromStr for ApiKey {
    type Err = std::convert::Infallible;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Ok(Self(s.trim().to_string()))
    }
}

/// Longest provider message kept in an error (they end up in `memories.embed_error` and logs).
const MAX_MESSAGE: usize = 300;

/// The HTTP side both protocols share: one client, the base URL, the optional Bearer key.
#[derive(Clone)]
pub struct HttpEndpoint {
    client: reqwest::Client,
    base: String,
    key: Option<ApiKey>,
}

impl HttpEndpoint {
    pub fn new(base: &str, key: Option<ApiKey>, timeout: Duration) -> Result<Self, ProviderError> {
        // reqwest's rustls takes the process-wide provider (ring); harmless when already there.
        crate::install_crypto_provider();
        let client = reqwest::Client::builder()
            .timeout(timeout)
            .build()
            .map_err(|e| ProviderError::Unreachable(e.without_url().to_string()))?;
        Ok(Self {
            client,
            base: base.trim_end_matches('/').to_string(),
            key: key.filter(|k| !k.0.is_empty()),
        })
    }

    /// POST `body` as JSON to `{base}{path}`; the body of a 2xx answer, or the classified error.
    pub async fn post(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<bytes::Bytes, ProviderError> {
        let mut req = self.client.post(format!("{}{path}", self.base)).json(body);
        if let Some(k) = &self.key {
            req = req.bearer_auth(k.expose());
        }
        let resp = req.send().await.map_err(|e| self.transport(e))?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(parse_retry_after);
        let body = resp.bytes().await.map_err(|e| self.transport(e))?;
        if status.is_success() {
            return Ok(body);
        }
        Err(classify(
            status,
            retry_after,
            self.redact(&error_message(&body)),
        ))
    }

    fn transport(&self, e: reqwest::Error) -> ProviderError {
        if e.is_timeout() {
            ProviderError::Timeout
        } else {
            // without_url: a base URL may carry credentials of its own.
            ProviderError::Unreachable(self.redact(&e.without_url().to_string()))
        }
    }

    /// A provider may echo what it was sent; the key never leaves through an error.
    fn redact(&self, text: &str) -> String {
        match &self.key {
            Some(k) if !k.0.is_empty() => text.replace(k.expose(), "<redacted>"),
            _ => text.to_string(),
        }
    }
}

/// Map a non-2xx status to the error the worker acts on.
pub fn classify(
    status: StatusCode,
    retry_after: Option<Duration>,
    message: String,
) -> ProviderError {
    let code = status.as_u16();
    match code {
        429 => ProviderError::RateLimited { retry_after },
        500..=599 => ProviderError::Unavailable {
            status: code,
            retry_after,
        },
        400 | 413 | 422 => ProviderError::Rejected {
            status: code,
            message,
        },
        _ => ProviderError::Refused {
            status: code,
            message,
        },
    }
}

/// `Retry-After` in seconds (the HTTP-date form is ignored: the worker's own backoff applies).
pub fn parse_retry_after(v: &str) -> Option<Duration> {
    v.trim().parse::<u64>().ok().map(Duration::from_secs)
}

/// The human part of an error body: OpenAI's `{"error":{"message":…}}`, Ollama's
/// `{"error":"…"}`, else the text itself; shortened.
pub fn error_message(body: &[u8]) -> String {
    let text = match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) => match &v["error"] {
            serde_json::Value::String(s) => s.clone(),
            e if e["message"].is_string() => e["message"].as_str().unwrap_or_default().to_string(),
            _ => String::from_utf8_lossy(body).into_owned(),
        },
        Err(_) => String::from_utf8_lossy(body).into_owned(),
    };
    let text = text.trim();
    if text.chars().count() > MAX_MESSAGE {
        let cut: String = text.chars().take(MAX_MESSAGE).collect();
        format!("{cut}…")
    } else {
        text.to_string()
    }
}

/// One HTTP embedding protocol: where to post, what to send, how to read the answer.
pub struct Wire {
    pub name: &'static str,
    pub path: &'static str,
    pub body: fn(&str, &[String]) -> serde_json::Value,
    pub parse: fn(&[u8], usize) -> Result<Vectors, ProviderError>,
}

/// An embedding server spoken to over HTTP in one of the [`Wire`] protocols.
pub struct HttpProvider {
    http: HttpEndpoint,
    model: String,
    wire: &'static Wire,
}

impl HttpProvider {
    pub fn new(
        wire: &'static Wire,
        base: &str,
        model: impl Into<String>,
        key: Option<ApiKey>,
        timeout: Duration,
    ) -> Result<Self, ProviderError> {
        Ok(Self {
            http: HttpEndpoint::new(base, key, timeout)?,
            model: model.into(),
            wire,
        })
    }
}

impl Provider for HttpProvider {
    fn name(&self) -> &'static str {
        self.wire.name
    }

    fn model(&self) -> &str {
        &self.model
    }

    fn embed<'a>(&'a self, inputs: &'a [String]) -> BoxFuture<'a, Result<Vectors, ProviderError>> {
        use futures::FutureExt;
        async move {
            let body = (self.wire.body)(&self.model, inputs);
            let answer = self.http.post(self.wire.path, &body).await?;
            (self.wire.parse)(&answer, inputs.len())
        }
        .boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_map_to_what_the_worker_does() {
        let c = |s: u16| classify(StatusCode::from_u16(s).unwrap(), None, "m".into());
        assert!(c(429).is_retriable());
        assert!(c(503).is_retriable());
        assert!(matches!(
            c(400),
            ProviderError::Rejected { status: 400, .. }
        ));
        assert!(matches!(c(413), ProviderError::Rejected { .. }));
        // A bad key or an unknown model is configuration: never bisected into poison rows.
        assert!(matches!(c(401), ProviderError::Refused { .. }));
        assert!(matches!(c(404), ProviderError::Refused { .. }));
        assert!(!c(401).is_retriable() && !c(400).is_retriable());
    }

    #[test]
    fn retry_after_is_seconds() {
        assert_eq!(parse_retry_after(" 2 "), Some(Duration::from_secs(2)));
        assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT"), None);
        let e = classify(
            StatusCode::TOO_MANY_REQUESTS,
            Some(Duration::from_secs(3)),
            String::new(),
        );
        assert_eq!(e.retry_after(), Some(Duration::from_secs(3)));
    }

    #[test]
    fn error_messages_of_both_protocols() {
        assert_eq!(
            error_message(br#"{"error":{"message":"bad input","type":"x"}}"#),
            "bad input"
        );
        assert_eq!(
            error_message(br#"{"error":"model not found"}"#),
            "model not found"
        );
        assert_eq!(error_message(b"plain"), "plain");
        assert!(error_message("x".repeat(1000).as_bytes()).chars().count() <= MAX_MESSAGE + 1);
    }

    #[test]
    fn the_key_is_never_printed() {
        let key: ApiKey = "sk-secret-123".parse().unwrap();
        assert!(!format!("{key:?}").contains("secret"));
        let ep =
            HttpEndpoint::new("http://127.0.0.1:1", Some(key), Duration::from_secs(1)).unwrap();
        assert_eq!(ep.redact("echo sk-secret-123 back"), "echo <redacted> back");
    }
}
