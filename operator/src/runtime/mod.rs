//! `aienv operator`: the process around the controllers — client, CRD wait, HTTP endpoints,
//! leader election and shutdown.

pub mod crds;
pub mod http;
pub mod leader;
pub mod telemetry;

use std::{
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use kube::Client;
use prometheus_client::registry::Registry;
use tokio::sync::watch;
use tracing::info;

use crate::controller::{Context, clock::SystemClock, metrics::Metrics};

/// The leader-election Lease's name unless `--leader-election-lease` says otherwise.
pub const DEFAULT_LEASE_NAME: &str = "aienv-operator-leader";

/// Settings of `aienv operator`.
#[derive(Clone, Debug, clap::Args)]
pub struct OperatorArgs {
    /// Address of /metrics, /healthz and /readyz.
    #[arg(long, env = "AIENV_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,
    /// Only the holder of the Lease reconciles, so two replicas are safe.
    #[arg(long, env = "AIENV_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    pub leader_elect: bool,
    /// Namespace of the leader-election Lease (defaults to POD_NAMESPACE, then "default").
    #[arg(long, env = "AIENV_LEADER_ELECTION_NAMESPACE")]
    pub leader_election_namespace: Option<String>,
    /// This replica's identity in the Lease (defaults to POD_NAME or HOSTNAME, plus the PID).
    #[arg(long, env = "AIENV_LEADER_ELECTION_IDENTITY")]
    pub leader_election_identity: Option<String>,
    /// Name of the leader-election Lease (the chart's Role grants this name only).
    #[arg(long, default_value = DEFAULT_LEASE_NAME)]
    pub leader_election_lease: String,
    /// Seconds a Lease stays valid without renewal.
    #[arg(long, default_value_t = 15)]
    pub lease_duration_seconds: u64,
    /// Watch only this namespace instead of the whole cluster.
    #[arg(long, env = "AIENV_WATCH_NAMESPACE")]
    pub watch_namespace: Option<String>,
    /// Image of the backup and verify Jobs: the operator's own image (they run `aienv backup`).
    #[arg(long, env = "AIENV_JOB_IMAGE", default_value = crate::controller::context::DEFAULT_JOB_IMAGE)]
    pub job_image: String,
    /// How long to wait for the CRDs to be established before giving up.
    #[arg(long, default_value_t = 120)]
    pub crd_wait_seconds: u64,
}

/// Run until SIGTERM/SIGINT.
pub async fn run(args: OperatorArgs) -> anyhow::Result<()> {
    let client = Client::try_default().await?;
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let ready = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = watch::channel(false);

    let http = tokio::spawn(http::serve(
        args.http_addr,
        Arc::new(registry),
        ready.clone(),
        stopped(stop_rx.clone()),
    ));
    tokio::spawn(async move {
        telemetry::shutdown_signal().await;
        info!("shutdown signal received");
        let _ = stop_tx.send(true);
    });

    crds::wait_established(
        &client,
        Duration::from_secs(args.crd_wait_seconds),
        stopped(stop_rx.clone()),
    )
    .await?;
    ready.store(true, Ordering::SeqCst);
    let ctx = Arc::new(
        Context::new(
            client.clone(),
            args.watch_namespace.clone(),
            metrics,
            Arc::new(SystemClock),
        )
        .with_job_image(args.job_image.clone()),
    );

    if args.leader_elect {
        leader::run_while_leader(client, &args, stop_rx.clone(), move |lost| {
            run_controllers(ctx.clone(), lost)
        })
        .await?;
    } else {
        run_controllers(ctx, stopped(stop_rx.clone())).await;
    }
    let _ = http.await;
    info!("operator stopped");
    Ok(())
}

/// A future that resolves once `rx` says stop (or its sender is gone).
// Not an `async fn`: the controller runtime needs the future to be `Sync`, which only an explicit
// `impl Future` return type can promise.
#[allow(clippy::manual_async_fn)]
pub fn stopped(mut rx: watch::Receiver<bool>) -> impl Future<Output = ()> + Send + Sync + 'static {
    async move {
        let _ = rx.wait_for(|s| *s).await;
    }
}

/// All controllers, until `shutdown`.
async fn run_controllers(
    ctx: Arc<Context>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    info!("starting controllers");
    crate::controllers::run_all(ctx, crate::controllers::Which::ALL.to_vec(), shutdown).await;
    info!("controllers stopped");
}
