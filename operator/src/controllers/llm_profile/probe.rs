//! The live endpoint check: building the request (pure), classifying the answer (pure) and sending
//! it (the only place the API key leaves the process, and only to the profile's own base URL).

use std::time::{Duration, Instant};

use crate::api::llm_profile::{HeaderStyle, LlmProfileSpec, Provider};

/// The HTTP request a probe sends. `Debug` redacts header values: they may hold the key.
#[derive(Clone, PartialEq, Eq)]
pub struct ProbeRequest {
    pub url: String,
    /// `url` as conditions and logs show it: a query (which gateways use for keys) redacted.
    pub shown: String,
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
}

impl std::fmt::Debug for ProbeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("ProbeRequest")
            .field("url", &self.shown)
            .field("headers", &names)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Anthropic's API version header; the models endpoint requires one.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// The path of the models list for a provider, relative to `baseUrl`.
/// Anthropic base URLs carry no `/v1` (Claude Code appends `/v1/messages`); OpenAI-style base URLs
/// end in `/v1` (clients append `/models`, `/chat/completions`); Ollama's native API lists models at
/// `/api/tags` when the base URL is not its OpenAI-compatible `/v1`.
pub fn default_path(provider: Provider, base_url: &str) -> &'static str {
    let trimmed = base_url.trim_end_matches('/');
    match provider {
        Provider::Anthropic if trimmed.ends_with("/v1") => "/models",
        Provider::Anthropic => "/v1/models",
        Provider::Ollama if !trimmed.ends_with("/v1") => "/api/tags",
        _ => "/models",
    }
}

/// Build the probe request for a profile and its key.
pub fn build_request(spec: &LlmProfileSpec, api_key: Option<&str>) -> ProbeRequest {
    let probe = spec.probe.as_ref();
    let path = probe
        .and_then(|p| p.path.as_deref())
        .unwrap_or_else(|| default_path(spec.provider, &spec.base_url));
    let (url, shown) = join_url(&spec.base_url, path);
    let style = spec
        .auth
        .as_ref()
        .map(|a| a.header_style)
        .unwrap_or_default();
    let mut headers: Vec<(String, String)> = spec
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if spec.provider == Provider::Anthropic {
        headers.push(("anthropic-version".into(), ANTHROPIC_VERSION.into()));
    }
    if let Some(key) = api_key {
        match (spec.provider, style) {
            (Provider::Anthropic, HeaderStyle::ApiKey) => {
                headers.push(("x-api-key".into(), key.into()))
            }
            _ => headers.push(("authorization".into(), format!("Bearer {key}"))),
        }
    }
    ProbeRequest {
        url,
        shown,
        headers,
        timeout: Duration::from_secs(probe.map(|p| p.timeout_seconds).unwrap_or(10) as u64),
    }
}

/// `path` appended to the base URL's path, its query kept; and the same URL with the query
/// redacted, for messages.
fn join_url(base: &str, path: &str) -> (String, String) {
    let path = path.trim_start_matches('/');
    match url::Url::parse(base) {
        Ok(mut u) => {
            let joined = format!("{}/{path}", u.path().trim_end_matches('/'));
            u.set_path(&joined);
            u.set_fragment(None);
            let query = u.query().is_some_and(|q| !q.is_empty());
            let url = u.to_string();
            u.set_query(None);
            let shown = if query {
                format!("{u}?<query redacted>")
            } else {
                u.to_string()
            };
            (url, shown)
        }
        // Admission rejects such a base URL; the request then fails and says so.
        Err(_) => {
            let url = format!("{}/{path}", base.trim_end_matches('/'));
            (
                url.clone(),
                url.split('?').next().unwrap_or_default().to_string(),
            )
        }
    }
}

/// What a probe found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx: reachable, key accepted.
    Ok { latency_ms: u64 },
    /// 401/403: reachable, key refused.
    Unauthorized { status: u16, latency_ms: u64 },
    /// 429 (rate limited) or 529 (overloaded): up, but shedding load; not a failure.
    Degraded { status: u16, latency_ms: u64 },
    /// Any other HTTP status: the endpoint answers but not as expected.
    UnexpectedStatus { status: u16, latency_ms: u64 },
    /// No HTTP answer: DNS, connect, TLS or timeout.
    Unreachable {
        reason: &'static str,
        detail: String,
    },
}

impl Outcome {
    /// A failure that may pass (no answer, or a server error): what probe.failureThreshold counts.
    pub fn is_transient_failure(&self) -> bool {
        matches!(
            self,
            Outcome::Unreachable { .. } | Outcome::UnexpectedStatus { status: 500.., .. }
        )
    }
}

/// Classify an HTTP status.
pub fn classify_status(status: u16, latency_ms: u64) -> Outcome {
    match status {
        200..=299 => Outcome::Ok { latency_ms },
        401 | 403 => Outcome::Unauthorized { status, latency_ms },
        429 | 529 => Outcome::Degraded { status, latency_ms },
        _ => Outcome::UnexpectedStatus { status, latency_ms },
    }
}

/// Send the probe. `ca_pem` adds a private CA. Errors never include header values.
pub async fn send(request: &ProbeRequest, ca_pem: Option<&[u8]>) -> Outcome {
    let mut builder = reqwest::Client::builder()
        .timeout(request.timeout)
        .connect_timeout(request.timeout)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy();
    if let Some(pem) = ca_pem {
        match reqwest::Certificate::from_pem_bundle(pem) {
            Ok(certs) => {
                for cert in certs {
                    builder = builder.add_root_certificate(cert);
                }
            }
            Err(_) => {
                return Outcome::Unreachable {
                    reason: "InvalidCA",
                    detail: "tls.caSecretRef does not hold a PEM certificate bundle".into(),
                };
            }
        }
    }
    let client = match builder.build() {
        Ok(c) => c,
        Err(e) => {
            return Outcome::Unreachable {
                reason: "ClientError",
                detail: describe(&e),
            };
        }
    };
    let mut req = client.get(&request.url);
    for (name, value) in &request.headers {
        req = req.header(name, value);
    }
    let start = Instant::now();
    match req.send().await {
        Ok(resp) => classify_status(resp.status().as_u16(), start.elapsed().as_millis() as u64),
        Err(e) if e.is_timeout() => Outcome::Unreachable {
            reason: "Timeout",
            detail: format!("no answer within {}s", request.timeout.as_secs()),
        },
        Err(e) => Outcome::Unreachable {
            reason: "Unreachable",
            // The URL (and any key in its query) is not the error's to repeat.
            detail: describe(&e.without_url()),
        },
    }
}

/// Why a request got no answer, in the words of its root cause (the URL is already in the
/// condition message). Never includes header values.
fn describe(e: &reqwest::Error) -> String {
    let mut root: &dyn std::error::Error = e;
    while let Some(next) = root.source() {
        root = next;
    }
    let what = if e.is_connect() {
        "cannot connect"
    } else if e.is_request() {
        "request failed"
    } else {
        "failed"
    };
    if std::ptr::addr_eq(root, e as &dyn std::error::Error) {
        format!("{what}: {e}")
    } else {
        format!("{what}: {root}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_query_in_the_base_url_is_kept_for_the_request_and_hidden_from_messages() {
        let s = spec("openai", "https://gw.example/v1?api-key=hunter2", "bearer");
        let r = build_request(&s, None);
        assert_eq!(r.url, "https://gw.example/v1/models?api-key=hunter2");
        assert_eq!(r.shown, "https://gw.example/v1/models?<query redacted>");
        assert!(!format!("{r:?}").contains("hunter2"));
        let plain = build_request(&spec("openai", "https://gw.example/v1/", "bearer"), None);
        assert_eq!(plain.shown, "https://gw.example/v1/models");
    }

    fn spec(provider: &str, base: &str, style: &str) -> LlmProfileSpec {
        serde_json::from_value(serde_json::json!({
            "provider": provider, "baseUrl": base, "model": "m",
            "auth": {"secretRef": {"name": "s", "key": "k"}, "headerStyle": style},
            "headers": {"X-Team": "agents"},
            "probe": {"timeoutSeconds": 3}
        }))
        .unwrap()
    }

    fn header<'a>(r: &'a ProbeRequest, name: &str) -> Option<&'a str> {
        r.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    #[test]
    fn anthropic_bearer_uses_authorization_and_version() {
        let r = build_request(
            &spec("anthropic", "https://api.anthropic.com/", "bearer"),
            Some("sk"),
        );
        assert_eq!(r.url, "https://api.anthropic.com/v1/models");
        assert_eq!(header(&r, "authorization"), Some("Bearer sk"));
        assert_eq!(header(&r, "x-api-key"), None);
        assert_eq!(header(&r, "anthropic-version"), Some(ANTHROPIC_VERSION));
        assert_eq!(header(&r, "X-Team"), Some("agents"));
        assert_eq!(r.timeout, Duration::from_secs(3));
    }

    #[test]
    fn anthropic_api_key_style_uses_x_api_key_only() {
        let r = build_request(
            &spec("anthropic", "https://api.anthropic.com", "apiKey"),
            Some("sk"),
        );
        assert_eq!(header(&r, "x-api-key"), Some("sk"));
        assert_eq!(header(&r, "authorization"), None);
    }

    #[test]
    fn openai_style_providers_list_models_under_the_base_url_with_bearer() {
        for provider in ["openai", "qwen", "openaiCompatible"] {
            let r = build_request(
                &spec(
                    provider,
                    "https://dashscope.example/compatible-mode/v1",
                    "apiKey",
                ),
                Some("k"),
            );
            assert_eq!(
                r.url, "https://dashscope.example/compatible-mode/v1/models",
                "{provider}"
            );
            assert_eq!(header(&r, "authorization"), Some("Bearer k"), "{provider}");
            assert_eq!(header(&r, "anthropic-version"), None);
        }
    }

    #[test]
    fn ollama_native_and_openai_compatible_paths() {
        let mut s = spec("ollama", "http://ollama.models.svc:11434", "bearer");
        s.auth = None;
        let r = build_request(&s, None);
        assert_eq!(r.url, "http://ollama.models.svc:11434/api/tags");
        assert_eq!(header(&r, "authorization"), None);
        s.base_url = "http://ollama.models.svc:11434/v1".into();
        assert_eq!(
            build_request(&s, None).url,
            "http://ollama.models.svc:11434/v1/models"
        );
    }

    #[test]
    fn custom_path_overrides_default() {
        let mut s = spec("openai", "https://x.example/v1", "bearer");
        s.probe.as_mut().unwrap().path = Some("health".into());
        assert_eq!(
            build_request(&s, Some("k")).url,
            "https://x.example/v1/health"
        );
    }

    #[test]
    fn debug_output_never_shows_the_key() {
        let r = build_request(
            &spec("openai", "https://x.example/v1", "bearer"),
            Some("sk-secret-123"),
        );
        let shown = format!("{r:?}");
        assert!(!shown.contains("sk-secret-123"), "{shown}");
        assert!(shown.contains("authorization"));
    }

    #[test]
    fn statuses_are_classified() {
        assert_eq!(classify_status(200, 5), Outcome::Ok { latency_ms: 5 });
        assert!(matches!(
            classify_status(401, 1),
            Outcome::Unauthorized { status: 401, .. }
        ));
        assert!(matches!(
            classify_status(403, 1),
            Outcome::Unauthorized { status: 403, .. }
        ));
        assert!(matches!(
            classify_status(500, 1),
            Outcome::UnexpectedStatus { status: 500, .. }
        ));
        assert!(matches!(
            classify_status(404, 1),
            Outcome::UnexpectedStatus { status: 404, .. }
        ));
    }
}
