//! A loopback embedding server speaking both protocols the embedding worker knows
//! (`POST /v1/embeddings`, OpenAI-compatible, and `POST /api/embed`, Ollama). It counts every text
//! it is sent, answers with a vector derived from the text (so a test can tell whose vector a row
//! holds), and can be told to answer with scripted errors, to reject inputs holding a word, to
//! answer vectors of another size, or to hold one client's first request until released.
//!
//! [`EmbedServer::start_fast`] is the benchmarks' variant: no bookkeeping, one fixed vector for
//! every input, the answer written as text directly, so the server costs next to nothing beside
//! the client it serves.

use std::{
    collections::{HashMap, VecDeque},
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    extract::State,
    http::{HeaderMap, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::post,
};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

/// The vector the server answers for `text`: `dims` values from the text's sha256.
pub fn vector_for(text: &str, dims: usize) -> Vec<f32> {
    let digest = Sha256::digest(text.as_bytes());
    (0..dims)
        .map(|i| f32::from(digest[i % digest.len()]) / 255.0 + 0.01 * (i / 32) as f32 + 0.001)
        .collect()
}

/// A scripted answer, used once, before any normal answer.
#[derive(Clone, Debug)]
pub struct Scripted {
    pub status: u16,
    pub retry_after: Option<u64>,
}

#[derive(Default)]
struct Inner {
    /// How many times each text was sent.
    seen: HashMap<String, usize>,
    /// (path, authorization, number of inputs) of every request.
    requests: Vec<(String, Option<String>, usize)>,
    script: VecDeque<Scripted>,
    poison: Option<String>,
    /// Hold the first request carrying `Bearer <this>` until released.
    hold_key: Option<String>,
    held_inputs: Vec<String>,
}

#[derive(Clone)]
struct AppState {
    /// Answer without bookkeeping or scripts (see [`EmbedServer::start_fast`]).
    fast: bool,
    inner: Arc<Mutex<Inner>>,
    dims: Arc<AtomicUsize>,
    held: watch::Sender<usize>,
    released: watch::Sender<bool>,
}

pub struct EmbedServer {
    pub addr: SocketAddr,
    state: AppState,
    task: tokio::task::JoinHandle<()>,
}

impl EmbedServer {
    /// Start on 127.0.0.1 (random port), answering `dims`-dimensional vectors.
    pub async fn start(dims: usize) -> anyhow::Result<Self> {
        Self::start_with(dims, false).await
    }

    /// A server for benchmarks: every input gets [`fast_vector`], nothing is counted (`seen` and
    /// `requests` stay empty), scripts, poison and holds do not apply.
    pub async fn start_fast(dims: usize) -> anyhow::Result<Self> {
        Self::start_with(dims, true).await
    }

    async fn start_with(dims: usize, fast: bool) -> anyhow::Result<Self> {
        let state = AppState {
            fast,
            inner: Arc::default(),
            dims: Arc::new(AtomicUsize::new(dims)),
            held: watch::channel(0).0,
            released: watch::channel(false).0,
        };
        let app = Router::new()
            .route("/v1/embeddings", post(embed))
            .route("/api/embed", post(embed))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { addr, state, task })
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.addr.port())
    }

    pub fn set_dims(&self, dims: usize) {
        self.state.dims.store(dims, Ordering::SeqCst);
    }

    /// Answer the next requests with these, in order.
    pub fn script(&self, answers: impl IntoIterator<Item = Scripted>) {
        self.state.inner.lock().unwrap().script.extend(answers);
    }

    /// Reject (HTTP 400) every request with an input containing `word`.
    pub fn poison(&self, word: &str) {
        self.state.inner.lock().unwrap().poison = Some(word.to_string());
    }

    /// Hold the next request authorised with `key` until [`EmbedServer::release`].
    pub fn hold_first_request_of(&self, key: &str) {
        self.state.inner.lock().unwrap().hold_key = Some(key.to_string());
        self.state.released.send_replace(false);
    }

    pub fn release(&self) {
        self.state.released.send_replace(true);
    }

    /// Wait (bounded) until a request is being held; its inputs.
    pub async fn wait_held(&self, timeout: Duration) -> anyhow::Result<Vec<String>> {
        let mut rx = self.state.held.subscribe();
        tokio::time::timeout(timeout, rx.wait_for(|n| *n > 0))
            .await
            .map_err(|_| anyhow::anyhow!("no request was held within {timeout:?}"))??;
        Ok(self.state.inner.lock().unwrap().held_inputs.clone())
    }

    /// How often each text was sent.
    pub fn seen(&self) -> HashMap<String, usize> {
        self.state.inner.lock().unwrap().seen.clone()
    }

    /// (path, authorization, inputs) of every request.
    pub fn requests(&self) -> Vec<(String, Option<String>, usize)> {
        self.state.inner.lock().unwrap().requests.clone()
    }
}

impl Drop for EmbedServer {
    fn drop(&mut self) {
        self.release();
        self.task.abort();
    }
}

fn error(openai: bool, status: StatusCode, message: &str) -> Response {
    let body = if openai {
        serde_json::json!({"error": {"message": message, "type": "invalid_request_error"}})
    } else {
        serde_json::json!({"error": message})
    };
    json(status, &body)
}

fn json(status: StatusCode, body: &serde_json::Value) -> Response {
    json_text(status, body.to_string())
}

fn json_text(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// The vector a fast server answers for every input.
pub fn fast_vector(dims: usize) -> Vec<f32> {
    vector_for("fast", dims)
}

/// Only what a fast answer needs from a request: how many inputs.
#[derive(serde::Deserialize)]
struct InputCount {
    input: Vec<serde::de::IgnoredAny>,
}

/// The answer of a fast server, built as text around one serialised vector.
fn fast_answer(openai: bool, dims: usize, body: &str) -> Response {
    let Ok(req) = serde_json::from_str::<InputCount>(body) else {
        return error(openai, StatusCode::BAD_REQUEST, "no input array");
    };
    let vector = serde_json::to_string(&fast_vector(dims)).expect("floats serialise");
    let n = req.input.len();
    let mut out = String::with_capacity(n * (vector.len() + 48) + 64);
    if openai {
        out.push_str(r#"{"object":"list","model":"fast","data":["#);
        for i in 0..n {
            if i > 0 {
                out.push(',');
            }
            out.push_str(r#"{"object":"embedding","index":"#);
            out.push_str(&i.to_string());
            out.push_str(r#","embedding":"#);
            out.push_str(&vector);
            out.push('}');
        }
    } else {
        out.push_str(r#"{"model":"fast","embeddings":["#);
        for i in 0..n {
            if i > 0 {
                out.push(',');
            }
            out.push_str(&vector);
        }
    }
    out.push_str("]}");
    json_text(StatusCode::OK, out)
}

async fn embed(State(s): State<AppState>, uri: Uri, headers: HeaderMap, body: String) -> Response {
    if s.fast {
        return fast_answer(
            uri.path() == "/v1/embeddings",
            s.dims.load(Ordering::SeqCst),
            &body,
        );
    }
    let body: serde_json::Value = serde_json::from_str(&body).unwrap_or_default();
    let openai = uri.path() == "/v1/embeddings";
    let auth = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let inputs: Vec<String> = body["input"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default();
    let hold = {
        let mut inner = s.inner.lock().unwrap();
        inner
            .requests
            .push((uri.path().to_string(), auth.clone(), inputs.len()));
        for t in &inputs {
            *inner.seen.entry(t.clone()).or_default() += 1;
        }
        let hold = inner.hold_key.is_some()
            && auth.as_deref()
                == inner
                    .hold_key
                    .as_ref()
                    .map(|k| format!("Bearer {k}"))
                    .as_deref();
        if hold {
            inner.hold_key = None;
            inner.held_inputs = inputs.clone();
        }
        if let Some(sc) = inner.script.pop_front() {
            let status = StatusCode::from_u16(sc.status).unwrap();
            let mut r = error(openai, status, "scripted by the test");
            if let Some(ra) = sc.retry_after {
                r.headers_mut()
                    .insert(header::RETRY_AFTER, ra.to_string().parse().unwrap());
            }
            return r;
        }
        if let Some(word) = &inner.poison
            && inputs.iter().any(|t| t.contains(word.as_str()))
        {
            return error(
                openai,
                StatusCode::BAD_REQUEST,
                "an input contains the forbidden word",
            );
        }
        hold
    };
    if hold {
        s.held.send_modify(|n| *n += 1);
        let mut rx = s.released.subscribe();
        let _ = rx.wait_for(|r| *r).await;
    }
    let dims = s.dims.load(Ordering::SeqCst);
    let vectors: Vec<Vec<f32>> = inputs.iter().map(|t| vector_for(t, dims)).collect();
    if openai {
        // Reversed on purpose: clients must order by `index`.
        let data: Vec<_> = vectors
            .into_iter()
            .enumerate()
            .rev()
            .map(|(i, v)| serde_json::json!({"object": "embedding", "index": i, "embedding": v}))
            .collect();
        json(
            StatusCode::OK,
            &serde_json::json!({"object": "list", "data": data, "model": body["model"]}),
        )
    } else {
        json(
            StatusCode::OK,
            &serde_json::json!({"model": body["model"], "embeddings": vectors}),
        )
    }
}
