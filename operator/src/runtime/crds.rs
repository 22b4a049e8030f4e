//! Wait until aienv's CRDs are installed and established before starting the controllers.

use std::time::{Duration, Instant};

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{Api, Client};
use tracing::{info, warn};

fn established(crd: &CustomResourceDefinition) -> bool {
    crd.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| {
            cs.iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
        })
}

/// Poll until every CRD from [`crate::crdgen::all`] is established.
pub async fn wait_established(
    client: &Client,
    timeout: Duration,
    stop: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let names: Vec<String> = crate::crdgen::all()
        .into_iter()
        .filter_map(|c| c.metadata.name)
        .collect();
    let deadline = Instant::now() + timeout;
    tokio::pin!(stop);
    loop {
        let mut missing = Vec::new();
        for name in &names {
            match api.get_opt(name).await? {
                Some(crd) if established(&crd) => {}
                _ => missing.push(name.as_str()),
            }
        }
        if missing.is_empty() {
            info!("CRDs established");
            return Ok(());
        }
        if Instant::now() > deadline {
            anyhow::bail!(
                "CRDs not established after {}s: {} (install them with `aienv crds | kubectl apply --server-side -f -`)",
                timeout.as_secs(),
                missing.join(", ")
            );
        }
        warn!(missing = ?missing, "waiting for CRDs to be established");
        tokio::select! {
            _ = tokio::time::sleep(Duration::from_secs(2)) => {}
            _ = &mut stop => anyhow::bail!("stopped while waiting for CRDs"),
        }
    }
}
