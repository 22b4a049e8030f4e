//! `kubectl aienv` as a user runs it, against the real control plane with the controllers running.

use std::time::Duration;

use aienv::api::ai_environment::AiEnvironment;
use aienv_tests::{
    agents::{apply_env, apply_profile, create_deployment, put_key},
    operator::{Scenario, Which, scenario},
    testenv::{TestEnv, wait_for},
};
use k8s_openapi::api::core::v1::Secret;

fn plugin(env: &TestEnv, ns: &str, args: &[&str]) -> (bool, String, String) {
    aienv_tests::plugin::kubectl_aienv(env, ns, args)
}

#[tokio::test]
async fn status_list_and_switch() -> anyhow::Result<()> {
    let Some(Scenario {
        env, ns, ops: ctrl, ..
    }) = scenario("plugin", &[Which::LlmProfile, Which::AiEnvironment]).await?
    else {
        return Ok(());
    };

    put_key(&ns, "keys", "claude", "sk-plugin-claude-secret").await?;
    put_key(&ns, "keys2", "qwen", "sk-plugin-qwen-secret").await?;
    apply_profile(&ns, "claude", serde_json::json!({
        "provider": "anthropic", "baseUrl": "https://api.anthropic.com", "model": "claude-sonnet-4-5",
        "auth": {"secretRef": {"name": "keys", "key": "claude"}},
    }))
    .await?;
    apply_profile(&ns, "qwen", serde_json::json!({
        "provider": "qwen", "baseUrl": "https://dashscope.example.com/compatible-mode/v1", "model": "qwen3-coder-plus",
        "auth": {"secretRef": {"name": "keys2", "key": "qwen"}},
    }))
    .await?;
    create_deployment(&ns, "agent", &[("app", "agent")], 1).await?;
    apply_env(&ns, "dev", serde_json::json!({
        "llm": {"profileRef": "claude", "fallbacks": ["qwen"], "harnesses": ["claudeCode", "qwenCode"]},
        "agents": {"selector": {"matchLabels": {"app": "agent"}}},
    }))
    .await?;
    let secrets = ns.api::<Secret>();
    wait_for(Duration::from_secs(60), "dev-llm rendered", || async {
        Ok(secrets.get_opt("dev-llm").await?.map(|_| ()))
    })
    .await?;
    // The Secret is written before the status that reports it.
    let envs = ns.api::<AiEnvironment>();
    wait_for(Duration::from_secs(60), "status reports claude", || async {
        let e = envs.get("dev").await?;
        Ok((e.status.and_then(|s| s.active_profile).as_deref() == Some("claude")).then_some(()))
    })
    .await?;

    // status: every object with Ready and its reason.
    let (ok, out, err) = plugin(&env, ns.name(), &["status"]);
    assert!(ok, "{err}");
    assert!(out.starts_with("KIND"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("LlmProfile") && l.contains("claude") && l.contains("True")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.starts_with("AiEnvironment") && l.contains("dev")),
        "{out}"
    );

    // status ENV: binding, conditions, targets and children.
    let (ok, out, err) = plugin(&env, ns.name(), &["status", "dev"]);
    assert!(ok, "{err}");
    assert!(out.contains("profile:   claude (active: claude)"), "{out}");
    assert!(out.contains("ProfileResolved"), "{out}");
    assert!(
        out.lines()
            .any(|l| l.contains("Deployment") && l.contains("agent")),
        "{out}"
    );
    assert!(
        out.lines()
            .any(|l| l.contains("Secret") && l.contains("dev-llm")),
        "{out}"
    );

    // llm list.
    let (ok, out, err) = plugin(&env, ns.name(), &["llm", "list"]);
    assert!(ok, "{err}");
    assert!(
        out.lines()
            .any(|l| l.starts_with("qwen") && l.contains("qwen3-coder-plus") && l.contains("qwen")),
        "{out}"
    );

    // switch to a profile that does not exist: refused, nothing changed.
    let (ok, _, err) = plugin(&env, ns.name(), &["llm", "switch", "dev", "gpt"]);
    assert!(!ok);
    assert!(err.contains("LlmProfile \"gpt\" not found"), "{err}");

    // switch to qwen: the fallback list stays valid (qwen leaves it) and the controller follows.
    let (ok, out, err) = plugin(&env, ns.name(), &["llm", "switch", "dev", "qwen"]);
    assert!(ok, "{err}");
    assert!(out.contains("switched from claude to qwen"), "{out}");
    let e = envs.get("dev").await?;
    assert_eq!(e.spec.llm.profile_ref, "qwen");
    assert!(e.spec.llm.fallbacks.is_empty());
    wait_for(Duration::from_secs(60), "active profile qwen", || async {
        let e = envs.get("dev").await?;
        Ok((e.status.and_then(|s| s.active_profile).as_deref() == Some("qwen")).then_some(()))
    })
    .await?;

    let all =
        plugin(&env, ns.name(), &["status", "dev"]).1 + &plugin(&env, ns.name(), &["status"]).1;
    assert!(
        !all.contains("sk-plugin"),
        "a key leaked into the plugin's output"
    );
    ctrl.stop().await;
    ns.cleanup().await
}
