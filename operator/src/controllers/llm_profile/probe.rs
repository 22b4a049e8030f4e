//! The live endpoint check: building the request (pure), classifying the answer (pure) and sending
//! it (the only place the API key leaves the process, and only to the profile's own base URL).

use std::time::{Duration, Instant};

use super::endpoints;
use crate::api::llm_profile::{HeaderStyle, LlmProfileSpec, ProbeMode, Provider};

/// The HTTP request a probe sends. `Debug` redacts header values: they may hold the key.
#[derive(Clone, PartialEq, Eq)]
pub struct ProbeRequest {
    /// GET for a models list, POST for a completion.
    pub post: bool,
    pub url: String,
    /// `url` as conditions and logs show it: a query (which gateways use for keys) redacted.
    pub shown: String,
    pub headers: Vec<(String, String)>,
    /// JSON body of a completion probe.
    pub body: Option<String>,
    pub timeout: Duration,
}

impl std::fmt::Debug for ProbeRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.headers.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("ProbeRequest")
            .field("post", &self.post)
            .field("url", &self.shown)
            .field("headers", &names)
            .field("timeout", &self.timeout)
            .finish()
    }
}

/// Anthropic's API version header; the models endpoint requires one.
pub const ANTHROPIC_VERSION: &str = "2023-06-01";

/// The probe requests of a profile: one per wire protocol it offers (each protocol an environment
/// may use must answer). `models` mode lists models (`GET {anthropic}/v1/models` with the
/// profile's header style, `GET {openai}/models` with Bearer); `completion` mode asks for one
/// token on the real generation path (`POST …/v1/messages`, `POST …/chat/completions`), since a
/// models list can answer while generation fails. `probe.path` replaces the path of the first.
pub fn build_requests(spec: &LlmProfileSpec, api_key: Option<&str>) -> Vec<ProbeRequest> {
    let probe = spec.probe.as_ref();
    let completion = probe.is_some_and(|p| p.mode == ProbeMode::Completion);
    let timeout = Duration::from_secs(probe.map(|p| p.timeout_seconds).unwrap_or(10) as u64);
    let offered = endpoints::resolve(spec);
    let extra: Vec<(String, String)> = spec
        .headers
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let style = spec
        .auth
        .as_ref()
        .map(|a| a.header_style)
        .unwrap_or_default();
    let body = |path_for_chat: bool| {
        let mut b = serde_json::json!({
            "model": spec.model,
            "max_tokens": 1,
            "messages": [{"role": "user", "content": "ping"}],
        });
        if path_for_chat {
            b["stream"] = false.into();
        }
        b.to_string()
    };
    let mut out = Vec::new();
    if let Some(root) = &offered.anthropic {
        let mut headers = extra.clone();
        headers.push(("anthropic-version".into(), ANTHROPIC_VERSION.into()));
        if let Some(key) = api_key {
            headers.push(match style {
                HeaderStyle::ApiKey => ("x-api-key".into(), key.into()),
                HeaderStyle::Bearer => ("authorization".into(), format!("Bearer {key}")),
            });
        }
        let path = if completion {
            "/v1/messages"
        } else {
            "/v1/models"
        };
        out.push((root.clone(), path, headers, completion.then(|| body(false))));
    }
    if let Some(o) = &offered.openai {
        let mut headers = extra;
        if let Some(key) = api_key {
            headers.push(("authorization".into(), format!("Bearer {key}")));
        }
        let path = if completion {
            "/chat/completions"
        } else {
            "/models"
        };
        out.push((
            o.base_url.clone(),
            path,
            headers,
            completion.then(|| body(true)),
        ));
    }
    // The native protocol first: that is the one probe.path is meant for.
    if spec.provider != Provider::Anthropic && out.len() == 2 {
        out.swap(0, 1);
    }
    out.into_iter()
        .enumerate()
        .map(|(i, (base, path, mut headers, body))| {
            let path = match probe.and_then(|p| p.path.as_deref()) {
                Some(custom) if i == 0 => custom,
                _ => path,
            };
            if body.is_some() {
                headers.push(("content-type".into(), "application/json".into()));
            }
            let (url, shown) = join_url(&base, path);
            ProbeRequest {
                post: body.is_some(),
                url,
                shown,
                headers,
                body,
                timeout,
            }
        })
        .collect()
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
    /// How bad it is, for picking the outcome of several requests.
    fn severity(&self) -> u8 {
        match self {
            Outcome::Ok { .. } => 0,
            Outcome::Degraded { .. } => 1,
            Outcome::UnexpectedStatus { .. } => 2,
            Outcome::Unauthorized { .. } => 3,
            Outcome::Unreachable { .. } => 4,
        }
    }

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

/// Send every request of a probe; the outcome is the worst of theirs (an endpoint an environment
/// may use that does not answer is not Ready), with the URL it concerns.
pub async fn send_all(requests: &[ProbeRequest], ca_pem: Option<&[u8]>) -> (String, Outcome) {
    let mut worst: Option<(String, Outcome)> = None;
    for r in requests {
        let o = send(r, ca_pem).await;
        if worst
            .as_ref()
            .is_none_or(|(_, w)| o.severity() > w.severity())
        {
            let method = if r.post { "POST" } else { "GET" };
            worst = Some((format!("{method} {}", r.shown), o));
        }
    }
    worst.unwrap_or_else(|| {
        (
            String::new(),
            Outcome::Unreachable {
                reason: "NoEndpoint",
                detail: "the profile offers no endpoint".into(),
            },
        )
    })
}

/// Send one probe request. `ca_pem` adds a private CA. Errors never include header values.
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
    let mut req = if request.post {
        client.post(&request.url)
    } else {
        client.get(&request.url)
    };
    if let Some(body) = &request.body {
        req = req.body(body.clone());
    }
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

    fn build_request(spec: &LlmProfileSpec, key: Option<&str>) -> ProbeRequest {
        let mut all = build_requests(spec, key);
        assert_eq!(all.len(), 1, "{all:?}");
        all.remove(0)
    }

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
        assert!(!r.post);
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
                &spec(provider, "https://gw.example/compatible-mode/v1", "apiKey"),
                Some("k"),
            );
            assert_eq!(
                r.url, "https://gw.example/compatible-mode/v1/models",
                "{provider}"
            );
            assert_eq!(header(&r, "authorization"), Some("Bearer k"), "{provider}");
            assert_eq!(header(&r, "anthropic-version"), None);
        }
    }

    #[test]
    fn every_protocol_a_gateway_offers_is_probed_native_first() {
        let mut s = spec("openaiCompatible", "https://gw.example/v1", "apiKey");
        s.endpoints = Some(
            serde_json::from_value(serde_json::json!({
                "anthropic": {"baseUrl": "https://gw.example"}
            }))
            .unwrap(),
        );
        let all = build_requests(&s, Some("k"));
        let urls: Vec<&str> = all.iter().map(|r| r.url.as_str()).collect();
        assert_eq!(
            urls,
            [
                "https://gw.example/v1/models",
                "https://gw.example/v1/models"
            ]
        );
        assert_eq!(header(&all[0], "authorization"), Some("Bearer k"));
        // The Anthropic one with its header style and version.
        assert_eq!(header(&all[1], "x-api-key"), Some("k"));
        assert_eq!(
            header(&all[1], "anthropic-version"),
            Some(ANTHROPIC_VERSION)
        );
    }

    #[test]
    fn completion_mode_asks_for_one_token_on_the_generation_path() {
        let mut s = spec(
            "qwen",
            "https://dashscope-intl.aliyuncs.com/compatible-mode/v1",
            "bearer",
        );
        s.probe.as_mut().unwrap().mode = ProbeMode::Completion;
        let all = build_requests(&s, Some("k"));
        assert_eq!(all.len(), 2, "DashScope offers both protocols");
        assert_eq!(
            all[0].url,
            "https://dashscope-intl.aliyuncs.com/compatible-mode/v1/chat/completions"
        );
        assert_eq!(
            all[1].url,
            "https://dashscope-intl.aliyuncs.com/apps/anthropic/v1/messages"
        );
        for r in &all {
            assert!(r.post);
            let body: serde_json::Value = serde_json::from_str(r.body.as_deref().unwrap()).unwrap();
            assert_eq!(body["model"], "m");
            assert_eq!(body["max_tokens"], 1);
            assert_eq!(header(r, "content-type"), Some("application/json"));
        }
    }

    #[test]
    fn ollama_is_probed_on_its_openai_and_anthropic_paths_without_a_key() {
        let mut s = spec("ollama", "http://ollama.models.svc:11434", "bearer");
        s.auth = None;
        let all = build_requests(&s, None);
        let urls: Vec<&str> = all.iter().map(|r| r.url.as_str()).collect();
        assert_eq!(
            urls,
            [
                "http://ollama.models.svc:11434/v1/models",
                "http://ollama.models.svc:11434/v1/models"
            ]
        );
        assert!(all.iter().all(|r| header(r, "authorization").is_none()));
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
