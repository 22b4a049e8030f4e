//! A loopback HTTP server that answers like an LLM provider's models list and generation paths,
//! for probe tests.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri},
};

/// What the server saw and how it answers.
#[derive(Default)]
pub struct Seen {
    /// (authorization, x-api-key) of every request.
    pub auth_headers: Vec<(Option<String>, Option<String>)>,
    /// "METHOD /path" of every request, in order.
    pub requests: Vec<String>,
}

pub struct FakeLlm {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Seen>>,
    /// The key the server accepts (as Bearer or x-api-key).
    pub accepted_key: Arc<Mutex<String>>,
    /// When set, every request is answered with this status (429, 503, ...).
    pub forced_status: Arc<Mutex<Option<u16>>>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeLlm {
    /// Start on 127.0.0.1 with a random port. Serves `GET …/models` and the generation paths
    /// `POST …/v1/messages` and `POST …/chat/completions`; anything else is 404.
    pub async fn start(accepted_key: &str) -> anyhow::Result<Self> {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let accepted = Arc::new(Mutex::new(accepted_key.to_string()));
        let forced = Arc::new(Mutex::new(None));
        let state = (seen.clone(), accepted.clone(), forced.clone());
        let app = Router::new().fallback(answer).with_state(state);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            addr,
            seen,
            accepted_key: accepted,
            forced_status: forced,
            task,
        })
    }

    /// Base URL as a profile would hold it (`http://localhost:PORT`, which the CRD admits).
    pub fn base_url(&self) -> String {
        format!("http://localhost:{}", self.addr.port())
    }

    pub fn requests(&self) -> usize {
        self.seen.lock().unwrap().auth_headers.len()
    }
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

type AppState = (
    Arc<Mutex<Seen>>,
    Arc<Mutex<String>>,
    Arc<Mutex<Option<u16>>>,
);

async fn answer(
    State((seen, accepted, forced)): State<AppState>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
) -> (StatusCode, &'static str) {
    let path = uri.path().to_string();
    seen.lock()
        .unwrap()
        .requests
        .push(format!("{method} {path}"));
    let known = match method {
        Method::GET => path.ends_with("/models"),
        Method::POST => path.ends_with("/v1/messages") || path.ends_with("/chat/completions"),
        _ => false,
    };
    if !known {
        return (StatusCode::NOT_FOUND, r#"{"error":"not found"}"#);
    }
    let h = |n: &str| {
        headers
            .get(n)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let (auth, api_key) = (h("authorization"), h("x-api-key"));
    seen.lock()
        .unwrap()
        .auth_headers
        .push((auth.clone(), api_key.clone()));
    if let Some(code) = *forced.lock().unwrap() {
        let code = StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        return (code, r#"{"error":"forced by the test"}"#);
    }
    let key = accepted.lock().unwrap().clone();
    let ok = auth.as_deref() == Some(&format!("Bearer {key}"))
        || api_key.as_deref() == Some(key.as_str());
    if ok {
        (StatusCode::OK, r#"{"data":[{"id":"test-model"}]}"#)
    } else {
        (StatusCode::UNAUTHORIZED, r#"{"error":"invalid api key"}"#)
    }
}
