//! `aienv embed-worker`: fills in `memories.embedding` for rows stored without one, exactly once,
//! with any number of replicas (docs/embedding.md). [`provider`] is the backend interface,
//! [`openai`] and [`ollama`] the two HTTP protocols, [`worker`] the claim/embed/write loop,
//! [`local`] the in-process model (feature `local-embed`), [`retry`] the backoff, [`metrics`] its
//! `/metrics`.

pub mod error;
#[cfg(feature = "local-embed")]
pub mod local;
pub mod metrics;
pub mod ollama;
pub mod openai;
pub mod provider;
pub mod query;
pub mod report;
pub mod retry;
pub mod worker;

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, atomic::AtomicBool},
    time::Duration,
};

use prometheus_client::registry::Registry;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use tokio::sync::watch;
use tracing::info;

pub use error::EmbedError;
pub use provider::{ApiKey, HttpProvider, Provider, ProviderError};
pub use worker::{BatchOutcome, Worker, WorkerConfig};

/// Environment variable of the provider's API key (a Secret in the pod).
pub const API_KEY_ENV: &str = "AIENV_EMBED_API_KEY";

/// Environment variable of the local provider's model directory.
pub const MODEL_DIR_ENV: &str = "AIENV_EMBED_MODEL_DIR";

/// Which provider embeds: an HTTP protocol, or the model in-process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ProviderKind {
    /// `POST {base}/v1/embeddings` (OpenAI, vLLM, LiteLLM, llama.cpp, TEI).
    #[value(name = "openai")]
    OpenAi,
    /// `POST {base}/api/embed`.
    Ollama,
    /// A sentence-transformers model from `--model-dir`, run in-process (no server).
    Local,
}

impl ProviderKind {
    pub fn name(self) -> &'static str {
        match self {
            ProviderKind::OpenAi => "openai",
            ProviderKind::Ollama => "ollama",
            ProviderKind::Local => "local",
        }
    }
}

/// Settings of `aienv embed-worker`.
#[derive(Clone, Debug, clap::Args)]
pub struct EmbedWorkerArgs {
    /// The store's database, as its owner or a role that may update `memories` (never logged).
    #[arg(long, env = crate::backup::env::DATABASE_URL, hide_env_values = true)]
    pub database_url: String,
    /// The password, when the URI has none.
    #[arg(long, env = crate::backup::env::DATABASE_PASSWORD, hide_env_values = true)]
    pub database_password: Option<String>,
    /// The store's schema (its tables are found through search_path).
    #[arg(long, env = "AIENV_STORE_SCHEMA")]
    pub schema: String,
    /// Embedding provider: an HTTP protocol (openai, ollama) or the in-process model (local).
    #[arg(
        long,
        env = "AIENV_EMBED_PROVIDER",
        value_enum,
        default_value = "openai"
    )]
    pub provider: ProviderKind,
    /// Base URL of the embedding server, without `/v1` (e.g. `http://embeddings:8080`); openai
    /// and ollama only.
    #[arg(long, env = "AIENV_EMBED_BASE_URL")]
    pub base_url: Option<String>,
    /// Directory of the sentence-transformers model (config.json, model.safetensors,
    /// tokenizer.json); local only.
    #[arg(long, env = MODEL_DIR_ENV)]
    pub model_dir: Option<PathBuf>,
    /// Inference threads of the local provider (all cores when unset).
    #[arg(long, env = "AIENV_EMBED_THREADS")]
    pub threads: Option<usize>,
    /// Model to ask for; the store's `embedding.model` when unset, and it must equal it when set.
    #[arg(long, env = "AIENV_EMBED_MODEL")]
    pub model: Option<String>,
    /// Bearer token for the server (from a Secret). Never logged or exported.
    #[arg(long = "api-key", env = API_KEY_ENV, hide_env_values = true, hide = true)]
    pub api_key: Option<ApiKey>,
    /// Rows per claim and per request.
    #[arg(long, env = "AIENV_EMBED_BATCH_SIZE", default_value_t = 64)]
    pub batch_size: u32,
    /// Rejections (HTTP 400/413/422 for the row alone) before a row is marked failed.
    #[arg(long, default_value_t = 3)]
    pub max_attempts: u32,
    /// Retries of a request on 429, 5xx, timeouts and connection errors.
    #[arg(long, default_value_t = 5)]
    pub max_retries: u32,
    /// First retry pause in milliseconds (doubled each retry, jittered).
    #[arg(long, default_value_t = 500)]
    pub backoff_base_ms: u64,
    /// Ceiling of the retry pause in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    pub backoff_max_ms: u64,
    /// Timeout of one embedding request.
    #[arg(long, default_value_t = 60)]
    pub request_timeout_seconds: u64,
    /// Pause when nothing is pending, in milliseconds.
    #[arg(long, default_value_t = 1000)]
    pub idle_poll_ms: u64,
    /// After SIGTERM, how long the batch under way may take before it is released.
    #[arg(long, default_value_t = 20)]
    pub shutdown_grace_seconds: u64,
    /// How often the pending-rows gauge is recounted.
    #[arg(long, default_value_t = 15)]
    pub pending_refresh_seconds: u64,
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "AIENV_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
}

impl EmbedWorkerArgs {
    pub fn worker_config(&self) -> WorkerConfig {
        WorkerConfig {
            batch_size: self.batch_size,
            max_attempts: self.max_attempts,
            backoff: retry::Backoff {
                base: Duration::from_millis(self.backoff_base_ms),
                max: Duration::from_millis(self.backoff_max_ms),
                max_retries: self.max_retries,
            },
            idle_poll: Duration::from_millis(self.idle_poll_ms),
            shutdown_grace: Duration::from_secs(self.shutdown_grace_seconds),
            pending_refresh: Duration::from_secs(self.pending_refresh_seconds),
        }
    }

    /// Connection options for the store's schema; the password set apart from the URI.
    pub fn connect_options(&self) -> Result<PgConnectOptions, EmbedError> {
        let has_password = url::Url::parse(&self.database_url)
            .map_err(|_| {
                EmbedError::Config(format!("{} is not a URI", crate::backup::env::DATABASE_URL))
            })?
            .password()
            .is_some();
        let mut o: PgConnectOptions = self.database_url.parse()?;
        if let (false, Some(p)) = (has_password, &self.database_password) {
            o = o.password(p);
        }
        Ok(crate::memory::store_connect_options(o, &self.schema))
    }
}

/// The provider for a protocol.
pub fn provider(
    kind: ProviderKind,
    base_url: &str,
    model: &str,
    key: Option<ApiKey>,
    timeout: Duration,
) -> Result<Arc<dyn Provider>, ProviderError> {
    let wire = match kind {
        ProviderKind::OpenAi => &openai::WIRE,
        ProviderKind::Ollama => &ollama::WIRE,
        ProviderKind::Local => {
            return Err(ProviderError::Local(
                "the local provider is loaded from a model directory, not a URL".into(),
            ));
        }
    };
    Ok(Arc::new(HttpProvider::new(
        wire, base_url, model, key, timeout,
    )?))
}

impl EmbedWorkerArgs {
    /// The provider these flags ask for, named `model` (the store's `embedding.model`).
    pub fn build_provider(&self, model: &str) -> Result<Arc<dyn Provider>, EmbedError> {
        let flag_error = |msg: &str| EmbedError::Config(msg.to_string());
        match self.provider {
            ProviderKind::Local => {
                let Some(dir) = &self.model_dir else {
                    return Err(flag_error(
                        "--provider local needs --model-dir (or AIENV_EMBED_MODEL_DIR): the directory of a sentence-transformers model in safetensors format",
                    ));
                };
                local_provider(dir, self.threads, model)
            }
            kind => {
                let Some(base) = &self.base_url else {
                    return Err(EmbedError::Config(format!(
                        "--provider {} needs --base-url (or AIENV_EMBED_BASE_URL), the embedding server's URL",
                        kind.name()
                    )));
                };
                Ok(provider(
                    kind,
                    base,
                    model,
                    self.api_key.clone(),
                    Duration::from_secs(self.request_timeout_seconds),
                )?)
            }
        }
    }
}

#[cfg(feature = "local-embed")]
fn local_provider(
    dir: &std::path::Path,
    threads: Option<usize>,
    model: &str,
) -> Result<Arc<dyn Provider>, EmbedError> {
    let p = local::LocalProvider::load(dir, threads)
        .map_err(|e| EmbedError::Config(e.to_string()))?
        .named(model);
    Ok(Arc::new(p))
}

#[cfg(not(feature = "local-embed"))]
fn local_provider(
    _dir: &std::path::Path,
    _threads: Option<usize>,
    _model: &str,
) -> Result<Arc<dyn Provider>, EmbedError> {
    Err(EmbedError::Config(
        "this aienv was built without the local-embed feature; use --provider openai or ollama"
            .into(),
    ))
}

/// Run the worker until SIGTERM/SIGINT, serving its metrics.
pub async fn run(args: EmbedWorkerArgs) -> anyhow::Result<()> {
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(args.connect_options()?)
        .await
        .map_err(EmbedError::from)?;
    let model = match &args.model {
        Some(m) => m.clone(),
        None => {
            crate::memory::Memories::open(pool.clone())
                .await
                .map_err(EmbedError::from)?
                .model
        }
    };
    // From here on a failure is also written where the operator reads it (WorkersReady), so a
    // crash-looping pod says why on the MemoryStore.
    let reporter = report::Reporter::new(
        pool.clone(),
        report::worker_name(),
        args.provider.name(),
        model.clone(),
    );
    reporter.sweep().await;
    let mut registry = Registry::default();
    let metrics = metrics::EmbedMetrics::register(&mut registry);
    let opened = match args.build_provider(&model) {
        Ok(provider) => Worker::open(pool.clone(), provider, args.worker_config(), metrics).await,
        Err(e) => Err(e),
    };
    let worker = match opened {
        Ok(w) => w.with_reporter(reporter),
        Err(e) => {
            reporter.report(report::Health::failing(&e)).await;
            return Err(e.into());
        }
    };

    let (stop_tx, stop_rx) = watch::channel(false);
    let http = tokio::spawn(crate::runtime::http::serve(
        args.http_addr,
        Arc::new(registry),
        // Ready once the store's layout has been read and the model checked (just now).
        Arc::new(AtomicBool::new(true)),
        crate::runtime::stopped(stop_rx.clone()),
    ));
    tokio::spawn(async move {
        crate::runtime::telemetry::shutdown_signal().await;
        info!("shutdown signal received");
        let _ = stop_tx.send(true);
    });
    info!(
        provider = args.provider.name(),
        model,
        batch_size = args.batch_size,
        "embedding worker started"
    );
    worker.run(stop_rx).await;
    let _ = http.await;
    pool.close().await;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: EmbedWorkerArgs,
    }

    #[test]
    fn flags_parse_and_the_key_stays_hidden() {
        let cli = Cli::try_parse_from([
            "x",
            "--database-url",
            "postgres://u@db/x",
            "--schema",
            "aienv_mem",
            "--provider",
            "ollama",
            "--base-url",
            "http://127.0.0.1:11434",
            "--api-key",
            "sk-very-secret",
        ])
        .unwrap();
        assert_eq!(cli.args.provider, ProviderKind::Ollama);
        assert_eq!(cli.args.worker_config().batch_size, 64);
        assert!(!format!("{:?}", cli.args).contains("very-secret"));
    }

    #[test]
    fn each_provider_asks_for_its_own_flag() {
        let parse = |extra: &[&str]| {
            let mut argv = vec!["x", "--database-url", "postgres://u@db/x", "--schema", "s"];
            argv.extend_from_slice(extra);
            Cli::try_parse_from(argv).unwrap().args
        };
        let e = parse(&["--provider", "local"])
            .build_provider("m")
            .err()
            .unwrap();
        assert!(e.to_string().contains("--model-dir"), "{e}");
        let e = parse(&["--provider", "ollama"])
            .build_provider("m")
            .err()
            .unwrap();
        assert!(e.to_string().contains("--base-url"), "{e}");
        let local = parse(&["--provider", "local", "--model-dir", "/m", "--threads", "2"]);
        assert_eq!(local.model_dir.as_deref(), Some(std::path::Path::new("/m")));
        assert_eq!(local.threads, Some(2));
    }
}
