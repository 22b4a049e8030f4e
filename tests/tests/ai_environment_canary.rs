//! The canary strategy on the real control plane: the second workload is not touched before the
//! first reports every replica updated and available, and a canary that never does stops the
//! rollout with RolledOut=False.

use std::time::Duration;

use aienv_tests::{
    agents::{
        apply_env, apply_profile, create_deployment, deployment_hash, env_condition, put_key,
        wait_env,
    },
    operator::{self, Which, install_crds},
    testenv::{require_env, wait_for},
};
use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Patch, PatchParams};

#[tokio::test]
async fn the_rest_wait_for_the_canary_and_a_stuck_canary_stops_the_rollout() -> anyhow::Result<()> {
    let Some(env) = require_env() else {
        return Ok(());
    };
    let client = env.kube_client().await?;
    install_crds(&client).await?;
    let ns = env.test_namespace(&client, "aienv-canary").await?;
    let ctrl = operator::start(&client, ns.name(), &[Which::AiEnvironment]);
    put_key(&ns, "k", "apiKey", "sk-canary-SECRET").await?;
    apply_profile(
        &ns,
        "p",
        serde_json::json!({
            "provider": "openai", "baseUrl": "https://llm.example.com/v1", "model": "m",
            "auth": {"secretRef": {"name": "k", "key": "apiKey"}},
        }),
    )
    .await?;
    // Sorted by name, agent-a is the canary. No kubelet runs its pod, so it never becomes
    // available on its own.
    create_deployment(&ns, "agent-a", &[("app", "agent")], 1).await?;
    create_deployment(&ns, "agent-b", &[("app", "agent")], 1).await?;
    apply_env(
        &ns,
        "dev",
        serde_json::json!({
            "llm": {"profileRef": "p", "harnesses": ["generic"]},
            "agents": {"selector": {"matchLabels": {"app": "agent"}},
                       "rollout": {"strategy": "canary", "minIntervalSeconds": 0,
                                   "canaryTimeoutSeconds": 10}},
        }),
    )
    .await?;

    let e = wait_env(&ns, "dev", "RolledOut", "False", "CanaryProgressing").await?;
    let hash = e.status.unwrap().rendered_hash.unwrap();
    assert_eq!(
        deployment_hash(&ns, "agent-a").await?.as_deref(),
        Some(hash.as_str())
    );
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        deployment_hash(&ns, "agent-b").await?,
        None,
        "agent-b patched before the canary was available"
    );

    // The canary never becomes available: the rollout stops, agent-b untouched.
    let e = wait_env(&ns, "dev", "RolledOut", "False", "CanaryTimedOut").await?;
    let msg = env_condition(&e, "RolledOut").unwrap().2;
    assert!(
        msg.contains("Deployment/agent-a") && msg.contains("canaryTimeoutSeconds=10"),
        "{msg}"
    );
    wait_env(&ns, "dev", "Ready", "False", "CanaryTimedOut").await?;
    assert_eq!(deployment_hash(&ns, "agent-b").await?, None);

    // The canary's status reports every (now zero) replica updated and available: the rest follow.
    // (Writing the status subresource by hand does not stick: kube-controller-manager's deployment
    // controller recomputes it from the ReplicaSets at once, so the test scales the canary instead.)
    ns.api::<Deployment>()
        .patch(
            "agent-a",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"spec": {"replicas": 0}})),
        )
        .await?;
    wait_for(
        Duration::from_secs(30),
        "agent-b patched after the canary",
        || async {
            Ok(
                (deployment_hash(&ns, "agent-b").await?.as_deref() == Some(hash.as_str()))
                    .then_some(()),
            )
        },
    )
    .await?;
    let a = ns.api::<Deployment>().get("agent-a").await?;
    let st = a.status.unwrap();
    assert_eq!(st.observed_generation, a.metadata.generation);
    assert_eq!(st.updated_replicas.unwrap_or(0), 0);
    wait_env(&ns, "dev", "RolledOut", "True", "RolledOut").await?;
    ctrl.stop().await;
    ns.cleanup().await
}
