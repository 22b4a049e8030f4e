//! AiEnvironment with agent pods that really run on the test node: an agent started after the
//! rollout sees the rendered Secret exactly as docs/ai-environment.md tells users to mount it, and
//! the canary gate follows real pod readiness.

use std::time::Duration;

use aienv::controllers::ai_environment::rollout::HASH_ANNOTATION;
use aienv_tests::{
    agents::{
        self, apply_env, apply_profile, create_deployment_with_pod, deployment_hash, env_condition,
        put_key, wait_env,
    },
    operator::{PodScenario, Which, pod_scenario},
    testenv::{TestNamespace, wait_for},
};
use k8s_openapi::api::{
    apps::v1::Deployment,
    core::v1::{Pod, Secret},
};
use kube::api::{ListParams, LogParams, Patch, PatchParams};
use sha2::{Digest, Sha256};

const WAIT: Duration = Duration::from_secs(120);

async fn ready_pod_with_hash(
    ns: &TestNamespace,
    workload: &str,
    hash: &str,
) -> anyhow::Result<Pod> {
    agents::ready_pod_with_hash(ns, workload, hash, WAIT).await
}

fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// What the agent container prints: the sha256 of every file it reads and of every variable the
/// harnesses need, and whether its config files can be written to.
const AGENT_SCRIPT: &str = r#"
for f in .claude/settings.json .codex/config.toml .qwen/settings.json; do
  echo "file $f $(sha256sum < "$HOME/$f" | cut -d' ' -f1)"
  if (: >> "$HOME/$f") 2>/dev/null; then echo "writable $f"; fi
done
for v in ANTHROPIC_BASE_URL ANTHROPIC_API_KEY ANTHROPIC_MODEL OPENAI_BASE_URL OPENAI_API_KEY OPENAI_MODEL AIENV_PROFILE; do
  eval "val=\${$v-}"
  [ -n "$val" ] && echo "env $v $(printf '%s' "$val" | sha256sum | cut -d' ' -f1)"
done
echo done
exec sleep 3600
"#;

#[tokio::test]
async fn an_agent_pod_reads_the_rendered_config_as_documented() -> anyhow::Result<()> {
    let Some(PodScenario {
        node,
        ns,
        ops: ctrl,
        ..
    }) = pod_scenario("aienv-pods", &[Which::AiEnvironment]).await?
    else {
        return Ok(());
    };
    put_key(&ns, "k", "apiKey", "sk-pod-SECRET").await?;
    apply_profile(
        &ns,
        "p",
        serde_json::json!({
            "provider": "openaiCompatible", "model": "claude-x",
            "endpoints": {"anthropic": {"baseUrl": "https://llm.example.com"},
                          "openai": {"baseUrl": "https://llm.example.com/v1", "responses": true}},
            "auth": {"secretRef": {"name": "k", "key": "apiKey"}, "headerStyle": "apiKey"},
        }),
    )
    .await?;
    // The mounts of docs/ai-environment.md: envFrom for variables, read-only single files.
    let mount = |path: &str, key: &str| {
        serde_json::json!({"name": "llm", "mountPath": format!("/home/agent/{path}"),
                           "subPath": key, "readOnly": true})
    };
    let pod = serde_json::json!({
        "terminationGracePeriodSeconds": 1,
        "securityContext": {"runAsNonRoot": true, "runAsUser": 1000, "runAsGroup": 1000,
                            "seccompProfile": {"type": "RuntimeDefault"}},
        "containers": [{
            "name": "agent", "image": node.pg_image, "imagePullPolicy": "IfNotPresent",
            "command": ["sh", "-c", AGENT_SCRIPT],
            "env": [{"name": "HOME", "value": "/home/agent"}],
            "envFrom": [{"secretRef": {"name": "dev-llm"}}],
            "securityContext": {"allowPrivilegeEscalation": false, "capabilities": {"drop": ["ALL"]}},
            "volumeMounts": [
                mount(".claude/settings.json", "claude-settings.json"),
                mount(".codex/config.toml", "codex-config.toml"),
                mount(".qwen/settings.json", "qwen-settings.json"),
                {"name": "home", "mountPath": "/home/agent"},
            ],
        }],
        "volumes": [{"name": "llm", "secret": {"secretName": "dev-llm"}},
                    {"name": "home", "emptyDir": {}}],
    });
    create_deployment_with_pod(&ns, "agent", &[("app", "agent")], 1, pod).await?;
    apply_env(
        &ns,
        "dev",
        serde_json::json!({
            "llm": {"profileRef": "p", "harnesses": ["claudeCode", "codex", "qwenCode"]},
            "agents": {"selector": {"matchLabels": {"app": "agent"}}},
        }),
    )
    .await?;
    let e = wait_env(&ns, "dev", "RolledOut", "True", "RolledOut").await?;
    let hash = e.status.unwrap().rendered_hash.unwrap();
    let pod = ready_pod_with_hash(&ns, "agent", &hash).await?;
    let name = pod.metadata.name.unwrap();
    let logs = wait_for(WAIT, "the agent's report", || async {
        let text = ns.api::<Pod>().logs(&name, &LogParams::default()).await?;
        Ok(text.contains("done").then_some(text))
    })
    .await?;

    let data = ns.api::<Secret>().get("dev-llm").await?.data.unwrap();
    for (path, key) in [
        (".claude/settings.json", "claude-settings.json"),
        (".codex/config.toml", "codex-config.toml"),
        (".qwen/settings.json", "qwen-settings.json"),
    ] {
        let want = format!("file {path} {}", sha256(&data[key].0));
        assert!(logs.contains(&want), "{want} not in:\n{logs}");
        assert!(
            !logs.contains(&format!("writable {path}")),
            "{path} is writable:\n{logs}"
        );
    }
    for var in [
        "ANTHROPIC_BASE_URL",
        "ANTHROPIC_API_KEY",
        "ANTHROPIC_MODEL",
        "OPENAI_BASE_URL",
        "OPENAI_API_KEY",
        "OPENAI_MODEL",
        "AIENV_PROFILE",
    ] {
        let want = format!("env {var} {}", sha256(&data[var].0));
        assert!(logs.contains(&want), "{want} not in:\n{logs}");
    }
    assert!(
        logs.contains(&format!(
            "env ANTHROPIC_API_KEY {}",
            sha256(b"sk-pod-SECRET")
        )),
        "the container sees the key itself"
    );
    ctrl.stop().await;
    ns.cleanup().await
}

/// An agent Deployment whose pods run a shell; `ready` is the readiness probe's command.
fn agent_pod(image: &str, ready: &str) -> serde_json::Value {
    serde_json::json!({
        "terminationGracePeriodSeconds": 1,
        "containers": [{
            "name": "agent", "image": image, "imagePullPolicy": "IfNotPresent",
            "command": ["sleep", "3600"],
            "readinessProbe": {"exec": {"command": ["sh", "-c", ready]},
                               "periodSeconds": 1, "failureThreshold": 1},
        }],
    })
}

#[tokio::test]
async fn a_canary_that_fails_readiness_holds_the_rest_until_it_is_healthy() -> anyhow::Result<()> {
    let Some(PodScenario {
        node,
        ns,
        ops: ctrl,
        ..
    }) = pod_scenario("aienv-canary-pods", &[Which::AiEnvironment]).await?
    else {
        return Ok(());
    };
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
    // Sorted by name, agent-a is the canary: its pods run but never pass readiness.
    create_deployment_with_pod(
        &ns,
        "agent-a",
        &[("app", "agent")],
        1,
        agent_pod(&node.pg_image, "false"),
    )
    .await?;
    create_deployment_with_pod(
        &ns,
        "agent-b",
        &[("app", "agent")],
        1,
        agent_pod(&node.pg_image, "true"),
    )
    .await?;
    apply_env(
        &ns,
        "dev",
        serde_json::json!({
            "llm": {"profileRef": "p", "harnesses": ["generic"]},
            "agents": {"selector": {"matchLabels": {"app": "agent"}},
                       "rollout": {"strategy": "canary", "minIntervalSeconds": 0,
                                   "canaryTimeoutSeconds": 15}},
        }),
    )
    .await?;
    let e = wait_env(&ns, "dev", "RolledOut", "False", "CanaryProgressing").await?;
    let hash = e.status.unwrap().rendered_hash.unwrap();
    assert_eq!(
        deployment_hash(&ns, "agent-a").await?.as_deref(),
        Some(hash.as_str())
    );

    // The canary's new pod runs and fails readiness: the rollout stops, agent-b is untouched.
    let e = wait_env(&ns, "dev", "RolledOut", "False", "CanaryTimedOut").await?;
    let msg = env_condition(&e, "RolledOut").unwrap().2;
    assert!(msg.contains("Deployment/agent-a"), "{msg}");
    let pods = ns.api::<Pod>();
    let canary_pods = pods
        .list(&ListParams::default().labels("workload=agent-a"))
        .await?;
    assert!(
        canary_pods.items.iter().any(|p| {
            p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
                && p.metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(HASH_ANNOTATION))
                    == Some(&hash)
        }),
        "the canary's new pod really runs"
    );
    assert_eq!(deployment_hash(&ns, "agent-b").await?, None);

    // Fixed: the canary's pods pass readiness, the rest follow.
    let fixed = serde_json::json!({"spec": {"template": {"spec": {"containers": [{
        "name": "agent",
        "readinessProbe": {"exec": {"command": ["sh", "-c", "true"]}},
    }]}}}});
    ns.api::<Deployment>()
        .patch("agent-a", &PatchParams::default(), &Patch::Strategic(fixed))
        .await?;
    ready_pod_with_hash(&ns, "agent-a", &hash).await?;
    wait_for(WAIT, "agent-b rolled after the canary", || async {
        Ok(
            (deployment_hash(&ns, "agent-b").await?.as_deref() == Some(hash.as_str()))
                .then_some(()),
        )
    })
    .await?;
    ready_pod_with_hash(&ns, "agent-b", &hash).await?;
    wait_env(&ns, "dev", "RolledOut", "True", "RolledOut").await?;
    ctrl.stop().await;
    ns.cleanup().await
}
