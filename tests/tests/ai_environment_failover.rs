//! Failover and switch-back with two loopback LLM endpoints, with the LlmProfile controller probing
//! them and the AiEnvironment controller reacting to the probes.

use std::time::Duration;

use aienv::api::ai_environment::AiEnvironment;
use aienv_tests::{
    agents::{
        apply_env, apply_profile, create_deployment, deployment_hash, env_condition, events_text,
        expect_replicasets, put_key, wait_env,
    },
    llm_server::FakeLlm,
    operator::{Scenario, Which, scenario},
    testenv::wait_for,
};
use k8s_openapi::api::apps::v1::Deployment;

const PRIMARY_KEY: &str = "sk-primary-SECRET-1";
const FALLBACK_KEY: &str = "sk-fallback-SECRET-2";
const SWITCH_BACK: i64 = 8;

fn profile(base_url: &str, secret: &str) -> serde_json::Value {
    serde_json::json!({
        "provider": "anthropic", "baseUrl": base_url, "model": "m",
        "auth": {"secretRef": {"name": secret, "key": "apiKey"}},
        "probe": {"intervalSeconds": 5, "timeoutSeconds": 2},
    })
}

#[tokio::test]
async fn fails_over_when_the_primary_fails_and_switches_back_after_the_hold() -> anyhow::Result<()>
{
    let Some(Scenario { ns, ops: ctrl, .. }) =
        scenario("aienv-failover", &[Which::LlmProfile, Which::AiEnvironment]).await?
    else {
        return Ok(());
    };
    let primary = FakeLlm::start(PRIMARY_KEY).await?;
    let fallback = FakeLlm::start(FALLBACK_KEY).await?;
    put_key(&ns, "primary-key", "apiKey", PRIMARY_KEY).await?;
    put_key(&ns, "fallback-key", "apiKey", FALLBACK_KEY).await?;
    apply_profile(&ns, "primary", profile(&primary.base_url(), "primary-key")).await?;
    apply_profile(
        &ns,
        "fallback",
        profile(&fallback.base_url(), "fallback-key"),
    )
    .await?;
    create_deployment(&ns, "agent-a", &[("app", "agent")], 1).await?;
    apply_env(
        &ns,
        "dev",
        serde_json::json!({
            "llm": {"profileRef": "primary", "fallbacks": ["fallback"],
                    "switchBackAfterSeconds": SWITCH_BACK, "harnesses": ["claudeCode"]},
            "agents": {"selector": {"matchLabels": {"app": "agent"}},
                       "rollout": {"minIntervalSeconds": 0}},
        }),
    )
    .await?;
    let api = ns.api::<AiEnvironment>();
    let active = || async {
        let e = api.get("dev").await?;
        anyhow::Ok(e.status.and_then(|s| s.active_profile))
    };

    let e = wait_env(&ns, "dev", "Ready", "True", "Ready").await?;
    assert_eq!(e.status.unwrap().active_profile.as_deref(), Some("primary"));
    wait_env(&ns, "dev", "FailedOver", "False", "OnPrimary").await?;
    expect_replicasets(&ns, "agent-a", 2, Duration::ZERO).await?;

    // The primary starts refusing its key: fail over to the fallback, roll once.
    *primary.accepted_key.lock().unwrap() = "rotated-elsewhere".into();
    let e = wait_env(
        &ns,
        "dev",
        "FailedOver",
        "True",
        "PrimaryCredentialsInvalid",
    )
    .await?;
    let status = e.status.clone().unwrap();
    assert_eq!(status.active_profile.as_deref(), Some("fallback"));
    let hash = status.rendered_hash.clone().unwrap();
    wait_for(
        Duration::from_secs(30),
        "agent-a carries the fallback hash",
        || async {
            Ok(
                (deployment_hash(&ns, "agent-a").await?.as_deref() == Some(hash.as_str()))
                    .then_some(()),
            )
        },
    )
    .await?;
    expect_replicasets(&ns, "agent-a", 3, Duration::from_secs(2)).await?;
    let d = ns.api::<Deployment>().get("agent-a").await?;
    assert_eq!(
        d.metadata.generation,
        Some(3),
        "create, first rollout, failover"
    );
    let secret = ns
        .api::<k8s_openapi::api::core::v1::Secret>()
        .get("dev-llm")
        .await?;
    let data = secret.data.unwrap();
    assert_eq!(data["ANTHROPIC_AUTH_TOKEN"].0, FALLBACK_KEY.as_bytes());
    assert_eq!(data["AIENV_PROFILE"].0, b"fallback");

    // While the primary keeps failing, the environment stays on the fallback.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(active().await?.as_deref(), Some("fallback"));

    // The primary recovers: back only after it has been Ready for switchBackAfterSeconds.
    *primary.accepted_key.lock().unwrap() = PRIMARY_KEY.into();
    let e = wait_env(&ns, "dev", "FailedOver", "False", "OnPrimary").await?;
    assert_eq!(
        e.status.as_ref().unwrap().active_profile.as_deref(),
        Some("primary")
    );
    let profile = ns
        .api::<aienv::api::llm_profile::LlmProfile>()
        .get("primary")
        .await?;
    let ready_since = profile
        .status
        .unwrap()
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Ready" && c.status == "True")
        .unwrap()
        .last_transition_time
        .0;
    let switched_at = e
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "FailedOver")
        .unwrap()
        .last_transition_time
        .0;
    let held = switched_at.duration_since(ready_since).as_secs();
    assert!(
        held >= SWITCH_BACK,
        "switched back after {held}s, hold is {SWITCH_BACK}s"
    );
    // Rolled once more, back to the primary's configuration: the Deployment's template equals the
    // first one again, so the controller-manager scales the first ReplicaSet back up instead of
    // creating a fourth; the generation counts the template changes.
    let hash = e.status.as_ref().unwrap().rendered_hash.clone().unwrap();
    wait_for(
        Duration::from_secs(30),
        "agent-a carries the primary hash again",
        || async {
            Ok(
                (deployment_hash(&ns, "agent-a").await?.as_deref() == Some(hash.as_str()))
                    .then_some(()),
            )
        },
    )
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let d = ns.api::<Deployment>().get("agent-a").await?;
    assert_eq!(
        d.metadata.generation,
        Some(4),
        "create, first rollout, failover, switch-back"
    );
    expect_replicasets(&ns, "agent-a", 3, Duration::ZERO).await?;
    assert!(env_condition(&e, "Ready").is_some());

    let events = events_text(&ns).await?;
    assert!(events.contains("FailedOver Warning"), "{events}");
    assert!(events.contains("SwitchedBack Normal"), "{events}");
    for key in [PRIMARY_KEY, FALLBACK_KEY] {
        assert!(!events.contains(key));
    }
    ctrl.stop().await;
    ns.cleanup().await
}
