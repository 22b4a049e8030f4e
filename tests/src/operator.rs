//! Run aienv's CRDs and controllers in-process against the test control plane.

use std::{sync::Arc, time::Duration};

use aienv::controller::{Context, clock::SystemClock, metrics::Metrics};
use anyhow::Result;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api, Client,
    api::{Patch, PatchParams},
};
use prometheus_client::registry::Registry;
use tokio::{sync::watch, task::JoinHandle};

use crate::testenv::wait_for;

/// The name of CloudNativePG's Cluster CRD, which [`install_cnpg_crd`] applies.
pub const CNPG_CRD: &str = "clusters.postgresql.cnpg.io";

/// Applies CloudNativePG's Cluster CRD from `tests/fixtures/cnpg-cluster-crd.yaml` (the
/// controller only needs the type to exist; no CloudNativePG runs).
pub async fn install_cnpg_crd(client: &Client) -> Result<()> {
    let path = crate::testenv::workspace_root().join("tests/fixtures/cnpg-cluster-crd.yaml");
    let crd: CustomResourceDefinition = serde_saphyr::from_str(&std::fs::read_to_string(path)?)?;
    Api::<CustomResourceDefinition>::all(client.clone())
        .patch(
            CNPG_CRD,
            &PatchParams::apply("aienv-tests").force(),
            &Patch::Apply(&crd),
        )
        .await?;
    Ok(())
}

/// Server-side apply every aienv CRD and wait until all are Established. Idempotent, so every test
/// binary can call it.
pub async fn install_crds(client: &Client) -> Result<()> {
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    for crd in aienv::crdgen::all() {
        let name = crd.metadata.name.clone().unwrap();
        api.patch(
            &name,
            &PatchParams::apply("aienv-tests").force(),
            &Patch::Apply(&crd),
        )
        .await?;
    }
    for crd in aienv::crdgen::all() {
        let name = crd.metadata.name.clone().unwrap();
        let api = api.clone();
        wait_for(
            Duration::from_secs(30),
            &format!("CRD {name} Established"),
            || {
                let api = api.clone();
                let name = name.clone();
                async move {
                    let crd = api.get(&name).await?;
                    let ok = crd.status.and_then(|s| s.conditions).is_some_and(|cs| {
                        cs.iter()
                            .any(|c| c.type_ == "Established" && c.status == "True")
                    });
                    Ok(ok.then_some(()))
                }
            },
        )
        .await?;
    }
    Ok(())
}

/// Controllers running in this process, scoped to one namespace so parallel tests do not share
/// objects. Stop them with [`RunningControllers::stop`].
pub struct RunningControllers {
    pub ctx: Arc<Context>,
    stop: watch::Sender<bool>,
    handle: JoinHandle<()>,
}

/// Which controllers to start (the operator's own list).
pub use aienv::controllers::Which;

pub fn start(client: &Client, namespace: &str, which: &[Which]) -> RunningControllers {
    start_with_image(client, namespace, which, None)
}

/// [`start`], with Jobs and workers running `job_image` (the node's aienv image, for tests whose
/// pods run) instead of the release's image name.
pub fn start_with_image(
    client: &Client,
    namespace: &str,
    which: &[Which],
    job_image: Option<&str>,
) -> RunningControllers {
    let mut registry = Registry::default();
    let metrics = Metrics::register(&mut registry);
    let mut ctx = Context::new(
        client.clone(),
        Some(namespace.to_string()),
        metrics,
        Arc::new(SystemClock),
    );
    if let Some(image) = job_image {
        ctx = ctx.with_job_image(image);
    }
    let ctx = Arc::new(ctx);
    let (stop, rx) = watch::channel(false);
    let handle = tokio::spawn(aienv::controllers::run_all(
        ctx.clone(),
        which.to_vec(),
        aienv::runtime::stopped(rx),
    ));
    RunningControllers { ctx, stop, handle }
}

impl RunningControllers {
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = tokio::time::timeout(Duration::from_secs(20), self.handle).await;
    }
}

/// What a test starts from: the test environment, the CRDs, a fresh namespace, and the
/// controllers `which` scoped to it.
pub struct Scenario {
    pub env: crate::testenv::TestEnv,
    pub client: Client,
    pub ns: crate::testenv::TestNamespace,
    pub ops: RunningControllers,
}

/// `None` when the test is to be skipped (no environment; see `require_env`).
pub async fn scenario(prefix: &str, which: &[Which]) -> Result<Option<Scenario>> {
    let Some(env) = crate::testenv::require_env() else {
        return Ok(None);
    };
    Ok(Some(Scenario::on(env, prefix, which).await?))
}

impl Scenario {
    /// The set-up on an environment already required.
    pub async fn on(env: crate::testenv::TestEnv, prefix: &str, which: &[Which]) -> Result<Self> {
        let client = env.kube_client().await?;
        install_crds(&client).await?;
        let ns = env.test_namespace(&client, prefix).await?;
        let ops = start(&client, ns.name(), which);
        Ok(Self {
            env,
            client,
            ns,
            ops,
        })
    }

    /// Stop the controllers and delete the namespace.
    pub async fn finish(self) -> Result<()> {
        self.ops.stop().await;
        self.ns.cleanup().await
    }
}

/// A scenario whose pods must run: also the node.
pub struct PodScenario {
    pub env: crate::testenv::TestEnv,
    pub node: crate::testenv::Node,
    pub client: Client,
    pub ns: crate::testenv::TestNamespace,
    pub ops: RunningControllers,
}

/// `None` when the test is to be skipped (no environment, or no node; see `require_node`).
pub async fn pod_scenario(prefix: &str, which: &[Which]) -> Result<Option<PodScenario>> {
    let Some(env) = crate::testenv::require_env() else {
        return Ok(None);
    };
    let Some(node) = env.require_node() else {
        return Ok(None);
    };
    let client = env.kube_client().await?;
    install_crds(&client).await?;
    let ns = env.test_namespace(&client, prefix).await?;
    // The node's pods run the real aienv image: workers and Jobs start.
    let ops = start_with_image(&client, ns.name(), which, Some(&node.aienv_image));
    Ok(Some(PodScenario {
        env,
        node,
        client,
        ns,
        ops,
    }))
}

/// The operator installed as a Deployment `deployment` in `namespace` (by a chart, an overlay or
/// a module): waits for its rollout (printing the namespace's state if it never comes) and for
/// one of its pods to hold the leader Lease; returns the holder.
pub async fn installed_operator_leads(
    env: &crate::testenv::TestEnv,
    client: &Client,
    namespace: &str,
    deployment: &str,
    timeout: Duration,
) -> Result<String> {
    let deadline = format!("--timeout={}s", timeout.as_secs());
    let target = format!("deployment/{deployment}");
    let rollout = ["-n", namespace, "rollout", "status", &target, &deadline];
    if let Err(e) = env.kubectl(&rollout, None) {
        crate::conditions::print_namespace_state(client.clone(), namespace).await;
        return Err(e);
    }
    let leases: Api<k8s_openapi::api::coordination::v1::Lease> =
        Api::namespaced(client.clone(), namespace);
    wait_for(timeout, "an operator pod holding the Lease", || async {
        let holder = leases
            .get_opt(aienv::runtime::DEFAULT_LEASE_NAME)
            .await?
            .and_then(|l| l.spec?.holder_identity);
        Ok(holder.filter(|h| h.starts_with(deployment)))
    })
    .await
}
