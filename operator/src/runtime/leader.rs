//! Leader election with a Lease (kube-lease-manager): only the holder runs the controllers, and a
//! lost lease stops them promptly.

use std::sync::Arc;

use kube::Client;
use kube_lease_manager::LeaseManagerBuilder;
use tokio::sync::watch;
use tracing::{info, warn};

use super::{OperatorArgs, stopped};

/// Run `controllers` each time this process becomes leader; stop them when leadership is lost or
/// `stop` fires. Returns after `stop`.
pub async fn run_while_leader<F, Fut>(
    client: Client,
    args: &OperatorArgs,
    stop: watch::Receiver<bool>,
    controllers: F,
) -> anyhow::Result<()>
where
    F: Fn(std::pin::Pin<Box<dyn Future<Output = ()> + Send + Sync>>) -> Fut,
    Fut: Future<Output = ()>,
{
    let namespace = args
        .leader_election_namespace
        .clone()
        .or_else(|| std::env::var("POD_NAMESPACE").ok())
        .unwrap_or_else(|| "default".to_string());
    let identity = args
        .leader_election_identity
        .clone()
        .unwrap_or_else(default_identity);
    let duration = args.lease_duration_seconds;
    let manager = LeaseManagerBuilder::new(client, &args.leader_election_lease)
        .with_namespace(&namespace)
        .with_identity(&identity)
        .with_duration(duration)
        .with_grace((duration / 3).max(1))
        .with_field_manager("aienv/leader-election")
        .build()
        .await?;
    let (leader_rx, lease_task) = manager.watch().await;
    info!(%identity, lease = %args.leader_election_lease, %namespace, "waiting for leadership");
    let leader_rx = Arc::new(tokio::sync::Mutex::new(leader_rx));
    let mut stop_wait = stop.clone();
    loop {
        {
            let mut rx = leader_rx.lock().await;
            tokio::select! {
                r = rx.wait_for(|l| *l) => if r.is_err() { warn!("lease manager stopped"); break; },
                _ = stop_wait.wait_for(|s| *s) => break,
            }
        }
        info!("became leader");
        let mut lost_rx = leader_rx.lock().await.clone();
        let stop_now = stopped(stop.clone());
        let lost: std::pin::Pin<Box<dyn Future<Output = ()> + Send + Sync>> =
            Box::pin(async move {
                tokio::select! {
                    _ = lost_rx.wait_for(|l| !*l) => warn!("leadership lost: stopping controllers"),
                    _ = stop_now => {}
                }
            });
        controllers(lost).await;
        if *stop.borrow() {
            break;
        }
    }
    // Dropping the receiver ends the lease task, which releases the lease for the next replica.
    drop(leader_rx);
    match lease_task.await {
        Ok(Ok(manager)) => {
            if let Err(e) = manager.release().await {
                warn!(error = %e, "could not release the lease");
            }
        }
        Ok(Err(e)) => warn!(error = %e, "lease manager failed"),
        Err(e) => warn!(error = %e, "lease task panicked"),
    }
    Ok(())
}

fn default_identity() -> String {
    let base = std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "aienv".to_string());
    format!("{base}-{}", std::process::id())
}
