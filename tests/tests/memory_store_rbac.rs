//! The MemoryStore controller under least-privilege RBAC: without rights on CloudNativePG Clusters
//! (CRD installed) and NetworkPolicies, managed/external stores still work and the refused watch is
//! counted. Its own binary: the cloudnativepg test in memory_store.rs deletes the CNPG CRD.

use std::time::Duration;

use aienv::{api::memory_store::MemoryStore, controllers::memory_store::CONTROLLER};
use aienv_tests::{
    conditions,
    operator::{self, Which, install_cnpg_crd, install_crds},
    testenv::{require_env, wait_for},
};
use k8s_openapi::api::{
    core::v1::Secret,
    rbac::v1::{Role, RoleBinding},
};
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
    config::{KubeConfigOptions, Kubeconfig},
};

const WAIT: Duration = Duration::from_secs(60);

#[tokio::test]
async fn external_store_works_without_cnpg_or_networkpolicy_rights() -> anyhow::Result<()> {
    let Some(env) = require_env() else {
        return Ok(());
    };
    let admin = env.kube_client().await?;
    install_crds(&admin).await?;
    // CloudNativePG installed, but the operator may not touch its Clusters.
    install_cnpg_crd(&admin).await?;
    let ns = env.test_namespace(&admin, "memstore-rbac").await?;
    let db = env.test_database("memstore_rbac").await?;

    let user = format!("aienv-limited-{}", ns.name());
    let role: Role = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "aienv-limited"},
        "rules": [
            {"apiGroups": [""], "resources": ["secrets", "services", "persistentvolumeclaims", "events"], "verbs": ["*"]},
            {"apiGroups": ["events.k8s.io"], "resources": ["events"], "verbs": ["*"]},
            {"apiGroups": ["apps"], "resources": ["statefulsets"], "verbs": ["*"]},
            {"apiGroups": ["aienv.orchestr8.io"], "resources": ["memorystores", "memorystores/status"], "verbs": ["*"]},
        ],
    }))?;
    ns.api::<Role>()
        .create(&PostParams::default(), &role)
        .await?;
    let binding: RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "aienv-limited"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "aienv-limited"},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": user}],
    }))?;
    ns.api::<RoleBinding>()
        .create(&PostParams::default(), &binding)
        .await?;
    let mut config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(&env.kubeconfig)?,
        &KubeConfigOptions::default(),
    )
    .await?;
    config.auth_info.impersonate = Some(user);
    let limited = kube::Client::try_from(config)?;

    let secret: Secret = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "pg"}, "stringData": {"uri": db.url},
    }))?;
    ns.api::<Secret>()
        .create(&PostParams::default(), &secret)
        .await?;
    let ops = operator::start(&limited, ns.name(), &[Which::MemoryStore]);
    let api: Api<MemoryStore> = ns.api();
    let store = serde_json::json!({
        "apiVersion": "aienv.orchestr8.io/v1alpha1", "kind": "MemoryStore",
        "metadata": {"name": "mem"},
        "spec": {"mode": "external", "external": {"connectionSecretRef": {"name": "pg", "key": "uri"}},
            "embedding": {"dimensions": 4}},
    });
    api.patch(
        "mem",
        &PatchParams::apply("aienv-tests").force(),
        &Patch::Apply(&store),
    )
    .await?;
    conditions::wait_condition(&api, WAIT, "mem", "Ready", "True", "StoreReady").await?;
    // The NetworkPolicy watch is refused: counted, not silently ignored.
    wait_for(WAIT, "a Forbidden watch error counted", || async {
        Ok((ops.ctx.metrics.watch_errors(CONTROLLER, "Forbidden") > 0).then_some(()))
    })
    .await?;
    assert_eq!(ops.ctx.metrics.failures(CONTROLLER, "KubeError"), 0);
    ops.stop().await;
    ns.cleanup().await?;
    db.cleanup().await
}
