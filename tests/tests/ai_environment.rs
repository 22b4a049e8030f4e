//! The AiEnvironment controller against the real control plane: the rendered Secret, exactly one
//! new ReplicaSet per real change, zero writes when nothing changes, coalesced bursts, bad input,
//! NetworkPolicies and garbage collection.

use std::time::Duration;

use aienv::{
    api::ai_environment::AiEnvironment,
    controllers::ai_environment::{CONTROLLER, rollout::HASH_ANNOTATION},
};
use aienv_tests::{
    agents::{
        WAIT, apply_env, apply_profile, create_deployment, create_statefulset, deployment_hash,
        env_condition, events_text, expect_replicasets, put_key, put_secret, replicasets_of,
        statefulset_hash, wait_env,
    },
    operator::{self, Scenario, Which, scenario},
    testenv::{TestNamespace, wait_for},
};
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Secret, networking::v1::NetworkPolicy};
use kube::{
    Api, ResourceExt,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};

const KEY1: &str = "sk-test-SECRET-first-7f3a";
const KEY2: &str = "sk-test-SECRET-rotated-91bc";
const SETTLE: Duration = Duration::from_secs(3);

/// A gateway speaking both protocols, so every harness renders from it.
fn profile_spec(model: &str, secret: &str) -> serde_json::Value {
    serde_json::json!({
        "provider": "openaiCompatible", "model": model,
        "endpoints": {"anthropic": {"baseUrl": "https://llm.example.com"},
                      "openai": {"baseUrl": "https://llm.example.com/v1", "responses": true}},
        "auth": {"secretRef": {"name": secret, "key": "apiKey"}},
    })
}

fn env_spec(profile: &str, min_interval: u32) -> serde_json::Value {
    serde_json::json!({
        "llm": {"profileRef": profile, "harnesses": ["claudeCode", "codex", "qwenCode", "generic"]},
        "agents": {"selector": {"matchLabels": {"app": "agent"}},
                   "rollout": {"minIntervalSeconds": min_interval}},
    })
}

async fn rendered_hash(ns: &TestNamespace, name: &str) -> anyhow::Result<Option<String>> {
    let e = ns.api::<AiEnvironment>().get(name).await?;
    Ok(e.status.and_then(|s| s.rendered_hash))
}

/// Wait until every Deployment carries the environment's rendered hash, which must differ from
/// `previous`; returns it.
async fn wait_rolled(
    ns: &TestNamespace,
    env: &str,
    deployments: &[&str],
    previous: Option<&str>,
) -> anyhow::Result<String> {
    wait_for(WAIT, "all deployments carry the new hash", || async {
        let e = ns.api::<AiEnvironment>().get(env).await?;
        let Some(h) = e.status.and_then(|s| s.rendered_hash) else {
            return Ok(None);
        };
        if Some(h.as_str()) == previous {
            return Ok(None);
        }
        for d in deployments {
            if deployment_hash(ns, d).await?.as_deref() != Some(h.as_str()) {
                return Ok(None);
            }
        }
        Ok(Some(h))
    })
    .await
}

#[tokio::test]
async fn renders_the_secret_and_rolls_each_deployment_exactly_once_per_change() -> anyhow::Result<()>
{
    let Some(Scenario { ns, ops: ctrl, .. }) =
        scenario("aienv-roll", &[Which::AiEnvironment]).await?
    else {
        return Ok(());
    };
    put_key(&ns, "claude", "apiKey", KEY1).await?;
    apply_profile(&ns, "claude", profile_spec("claude-sonnet-4-5", "claude")).await?;
    apply_profile(&ns, "other", profile_spec("claude-opus-4-1", "claude")).await?;
    for d in ["agent-a", "agent-b"] {
        create_deployment(&ns, d, &[("app", "agent")], 1).await?;
    }
    create_deployment(&ns, "bystander", &[("app", "web")], 1).await?;
    for d in ["agent-a", "agent-b", "bystander"] {
        expect_replicasets(&ns, d, 1, Duration::ZERO).await?;
    }
    apply_env(&ns, "dev", env_spec("claude", 0)).await?;

    // Created: the Secret is rendered and owned, every selected Deployment is annotated once.
    let e = wait_env(&ns, "dev", "Ready", "True", "Ready").await?;
    let status = e.status.clone().unwrap();
    assert_eq!(status.active_profile.as_deref(), Some("claude"));
    let h1 = status.rendered_hash.clone().unwrap();
    let secret = ns.api::<Secret>().get("dev-llm").await?;
    let owner = &secret.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("AiEnvironment", Some(true))
    );
    let data = secret.data.clone().unwrap();
    for key in [
        "ANTHROPIC_BASE_URL",
        "ANTHROPIC_AUTH_TOKEN",
        "claude-settings.json",
        "codex-config.toml",
        "qwen-settings.json",
        "OPENAI_API_KEY",
        "AIENV_PROFILE",
    ] {
        assert!(data.contains_key(key), "Secret lacks {key}");
    }
    let settings: serde_json::Value = serde_json::from_slice(&data["claude-settings.json"].0)?;
    assert_eq!(settings["env"]["ANTHROPIC_MODEL"], "claude-sonnet-4-5");
    for d in ["agent-a", "agent-b"] {
        assert_eq!(deployment_hash(&ns, d).await?.as_deref(), Some(h1.as_str()));
        expect_replicasets(&ns, d, 2, Duration::ZERO).await?;
    }
    assert_eq!(deployment_hash(&ns, "bystander").await?, None);
    assert_eq!(status.targets.len(), 2);

    // The rollout manager owns only the annotation.
    let d = ns.api::<Deployment>().get("agent-a").await?;
    let mf = d
        .managed_fields()
        .iter()
        .find(|m| m.manager.as_deref() == Some("aienv/rollout"))
        .expect("aienv/rollout manages a field");
    let owned = serde_json::to_string(&mf.fields_v1)?;
    assert!(
        owned.contains(HASH_ANNOTATION) && !owned.contains("containers"),
        "{owned}"
    );

    // Nothing changed: a reconcile (triggered by touching a watched profile) writes nothing.
    // First let the controller-manager finish reporting the rollout (targets mirror it).
    wait_for(WAIT, "targets report their replicas updated", || async {
        let e = ns.api::<AiEnvironment>().get("dev").await?;
        let t = e.status.map(|s| s.targets).unwrap_or_default();
        Ok((t.len() == 2 && t.iter().all(|t| t.updated_replicas == 1)).then_some(()))
    })
    .await?;
    tokio::time::sleep(SETTLE).await;
    let before = ns.api::<AiEnvironment>().get("dev").await?.status;
    let writes = ctrl.ctx.metrics.child_writes(CONTROLLER);
    let status_writes = ctrl.ctx.metrics.status_writes(CONTROLLER);
    let env_rv = ns
        .api::<AiEnvironment>()
        .get("dev")
        .await?
        .resource_version();
    let secret_rv = ns.api::<Secret>().get("dev-llm").await?.resource_version();
    let reconciles = ctrl.ctx.metrics.reconciles(CONTROLLER);
    let m = &ctrl.ctx.metrics;
    let api_writes = || {
        ["create", "update", "patch", "delete"]
            .iter()
            .map(|v| m.kube_requests(v))
            .sum::<u64>()
    };
    let (reads_before, writes_before) = (m.kube_requests("get"), api_writes());
    ns.api::<aienv::api::llm_profile::LlmProfile>()
        .patch(
            "claude",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"metadata": {"annotations": {"touched": "1"}}})),
        )
        .await?;
    wait_for(WAIT, "a reconcile after the touch", || async {
        Ok((ctrl.ctx.metrics.reconciles(CONTROLLER) > reconciles).then_some(()))
    })
    .await?;
    tokio::time::sleep(SETTLE).await;
    // What a steady reconcile costs the API server: no write at all, and per reconcile at most
    // three reads — the list of its Secrets and of its NetworkPolicies (ChildSet) and the
    // profile's key Secret. Profiles and workloads come from the caches.
    let rounds = m.reconciles(CONTROLLER) - reconciles;
    let reads = m.kube_requests("get") - reads_before;
    println!(
        "steady: {rounds} reconcile(s), {reads} read(s), {} write(s)",
        api_writes() - writes_before
    );
    assert_eq!(
        api_writes(),
        writes_before,
        "a steady reconcile wrote to the API"
    );
    assert!(
        reads <= 3 * rounds,
        "{reads} reads in {rounds} reconcile(s): more than the ChildSet lists and the key"
    );
    assert_eq!(ctrl.ctx.metrics.child_writes(CONTROLLER), writes);
    let after = ns.api::<AiEnvironment>().get("dev").await?.status;
    assert_eq!(before, after);
    assert_eq!(ctrl.ctx.metrics.status_writes(CONTROLLER), status_writes);
    assert_eq!(
        ns.api::<AiEnvironment>()
            .get("dev")
            .await?
            .resource_version(),
        env_rv
    );
    assert_eq!(
        ns.api::<Secret>().get("dev-llm").await?.resource_version(),
        secret_rv
    );
    for d in ["agent-a", "agent-b"] {
        assert_eq!(replicasets_of(&ns, d).await?, 2);
    }

    // Key rotation rolls once.
    put_key(&ns, "claude", "apiKey", KEY2).await?;
    let h2 = wait_rolled(&ns, "dev", &["agent-a", "agent-b"], Some(&h1)).await?;
    for d in ["agent-a", "agent-b"] {
        expect_replicasets(&ns, d, 3, SETTLE).await?;
    }
    let secret = ns.api::<Secret>().get("dev-llm").await?;
    assert_eq!(
        secret.data.unwrap()["ANTHROPIC_AUTH_TOKEN"].0,
        KEY2.as_bytes()
    );

    // Switching profileRef rolls once.
    apply_env(&ns, "dev", env_spec("other", 0)).await?;
    let _h3 = wait_rolled(&ns, "dev", &["agent-a", "agent-b"], Some(&h2)).await?;
    for d in ["agent-a", "agent-b"] {
        expect_replicasets(&ns, d, 4, SETTLE).await?;
    }
    assert_eq!(replicasets_of(&ns, "bystander").await?, 1);
    let e = wait_env(&ns, "dev", "Ready", "True", "Ready").await?;
    assert_eq!(
        e.status.as_ref().unwrap().active_profile.as_deref(),
        Some("other")
    );

    // No secret value anywhere a person or a log collector can see.
    let events = events_text(&ns).await?;
    assert!(events.contains("RolledOut"), "{events}");
    // Each rollout's Event names its own hash: a repeat is not folded into the first one's.
    for h in [&h1, &h2] {
        assert!(
            events.contains(&format!("config hash {}", &h[..12])),
            "no RolledOut Event names {h}:\n{events}"
        );
    }
    let status_json = serde_json::to_string(&e.status)?;
    for key in [KEY1, KEY2] {
        assert!(!events.contains(key) && !status_json.contains(key));
    }

    ctrl.stop().await;
    ns.cleanup().await
}

#[tokio::test]
async fn a_burst_of_profile_edits_is_coalesced() -> anyhow::Result<()> {
    let Some(Scenario { ns, ops: ctrl, .. }) =
        scenario("aienv-burst", &[Which::AiEnvironment]).await?
    else {
        return Ok(());
    };
    put_key(&ns, "claude", "apiKey", KEY1).await?;
    apply_profile(&ns, "claude", profile_spec("model-0", "claude")).await?;
    for d in ["agent-a", "agent-b"] {
        create_deployment(&ns, d, &[("app", "agent")], 1).await?;
    }
    apply_env(&ns, "dev", env_spec("claude", 5)).await?;
    let h0 = wait_rolled(&ns, "dev", &["agent-a", "agent-b"], None).await?;
    for d in ["agent-a", "agent-b"] {
        expect_replicasets(&ns, d, 2, Duration::ZERO).await?;
    }

    // 20 edits within 2 s.
    for i in 1..=20 {
        apply_profile(&ns, "claude", profile_spec(&format!("model-{i}"), "claude")).await?;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    wait_for(WAIT, "the last edit reached the Secret", || async {
        let s = ns.api::<Secret>().get("dev-llm").await?;
        let m = s.data.unwrap().get("ANTHROPIC_MODEL").map(|b| b.0.clone());
        Ok((m.as_deref() == Some(b"model-20".as_slice())).then_some(()))
    })
    .await?;
    let last = wait_for(WAIT, "deployments carry the final hash", || async {
        let h = rendered_hash(&ns, "dev").await?;
        let a = deployment_hash(&ns, "agent-a").await?;
        let b = deployment_hash(&ns, "agent-b").await?;
        Ok((h.is_some() && h != Some(h0.clone()) && a == h && b == h).then_some(h))
    })
    .await?;
    assert!(last.is_some());
    // Let any pending coalesced rollout happen, then count: at most 2 rollouts per target.
    tokio::time::sleep(Duration::from_secs(7)).await;
    for d in ["agent-a", "agent-b"] {
        let n = replicasets_of(&ns, d).await?;
        assert!(
            (3..=4).contains(&n),
            "{d}: {n} ReplicaSets, expected 1 + initial + at most 2"
        );
    }
    wait_env(&ns, "dev", "Ready", "True", "Ready").await?;
    ctrl.stop().await;
    ns.cleanup().await
}

#[tokio::test]
async fn bad_input_is_a_condition_and_an_event_and_nothing_rolls() -> anyhow::Result<()> {
    let Some(Scenario { ns, ops: ctrl, .. }) =
        scenario("aienv-bad", &[Which::AiEnvironment]).await?
    else {
        return Ok(());
    };
    create_deployment(&ns, "agent-a", &[("app", "agent")], 1).await?;

    // Missing profile.
    apply_env(&ns, "dev", env_spec("nope", 0)).await?;
    let e = wait_env(&ns, "dev", "ProfileResolved", "False", "ProfileNotFound").await?;
    let (_, _, msg) = env_condition(&e, "ProfileResolved").unwrap();
    assert!(
        msg.contains("\"nope\"") && msg.contains("llm.profileRef"),
        "{msg}"
    );
    wait_env(&ns, "dev", "Ready", "False", "ProfileNotFound").await?;
    wait_env(&ns, "dev", "RolledOut", "False", "Blocked").await?;

    // Profile exists, its key Secret does not.
    apply_profile(&ns, "claude", profile_spec("m", "claude-key")).await?;
    apply_env(&ns, "dev", env_spec("claude", 0)).await?;
    let e = wait_env(&ns, "dev", "SecretRendered", "False", "SecretNotFound").await?;
    let (_, _, msg) = env_condition(&e, "SecretRendered").unwrap();
    assert!(msg.contains("claude-key"), "{msg}");

    // The key Secret exists but did not opt in: its key is not copied into dev-llm.
    put_secret(&ns, "claude-key", "apiKey", KEY1, false).await?;
    let e = wait_env(&ns, "dev", "SecretRendered", "False", "SecretNotAllowed").await?;
    let (_, _, msg) = env_condition(&e, "SecretRendered").unwrap();
    assert!(
        msg.contains("kubectl label secret claude-key")
            && msg.contains("aienv.orchestr8.io/llm-key=true"),
        "{msg}"
    );
    assert!(ns.api::<Secret>().get_opt("dev-llm").await?.is_none());

    // A fallback that does not exist (the key Secret arrives meanwhile: still nothing rolls).
    let mut spec = env_spec("claude", 0);
    spec["llm"]["fallbacks"] = serde_json::json!(["ghost"]);
    apply_env(&ns, "dev", spec).await?;
    let e = wait_env(&ns, "dev", "ProfileResolved", "False", "FallbackNotFound").await?;
    assert!(
        env_condition(&e, "ProfileResolved")
            .unwrap()
            .2
            .contains("\"ghost\"")
    );
    put_key(&ns, "claude-key", "apiKey", KEY1).await?;
    tokio::time::sleep(SETTLE).await;
    assert_eq!(deployment_hash(&ns, "agent-a").await?, None);
    assert!(ns.api::<Secret>().get_opt("dev-llm").await?.is_none());

    // A selector that matches nothing.
    let mut spec = env_spec("claude", 0);
    spec["agents"]["selector"] = serde_json::json!({"matchLabels": {"app": "nobody"}});
    apply_env(&ns, "dev", spec).await?;
    let e = wait_env(&ns, "dev", "RolledOut", "False", "NoWorkloadsSelected").await?;
    assert!(
        env_condition(&e, "RolledOut")
            .unwrap()
            .2
            .contains("app=nobody")
    );
    assert_eq!(deployment_hash(&ns, "agent-a").await?, None);
    assert_eq!(replicasets_of(&ns, "agent-a").await?, 1);

    let events = events_text(&ns).await?;
    for reason in [
        "ProfileNotFound",
        "SecretNotFound",
        "SecretNotAllowed",
        "FallbackNotFound",
        "NoWorkloadsSelected",
    ] {
        assert!(events.contains(reason), "no {reason} Event in:\n{events}");
    }
    assert!(!events.contains(KEY1));
    ctrl.stop().await;
    ns.cleanup().await
}

#[tokio::test]
async fn network_policies_follow_the_spec_and_everything_is_garbage_collected() -> anyhow::Result<()>
{
    let Some(Scenario { ns, ops: ctrl, .. }) =
        scenario("aienv-netpol", &[Which::AiEnvironment]).await?
    else {
        return Ok(());
    };
    put_key(&ns, "claude", "apiKey", KEY1).await?;
    apply_profile(&ns, "claude", profile_spec("m", "claude")).await?;
    create_deployment(&ns, "agent-a", &[("app", "agent")], 1).await?;
    apply_env(&ns, "dev", env_spec("claude", 0)).await?;
    let e = wait_env(&ns, "dev", "NetworkPolicyReady", "True", "Applied").await?;
    assert!(
        env_condition(&e, "NetworkPolicyReady")
            .unwrap()
            .2
            .contains("ANY address")
    );
    let np: Api<NetworkPolicy> = ns.api();
    let names = |l: Vec<NetworkPolicy>| {
        let mut n: Vec<String> = l.iter().map(|p| p.name_any()).collect();
        n.sort();
        n
    };
    let list = np.list(&ListParams::default()).await?.items;
    assert_eq!(
        names(list.clone()),
        ["dev-allow-dns", "dev-allow-llm", "dev-default-deny"]
    );
    let llm = list
        .iter()
        .find(|p| p.name_any() == "dev-allow-llm")
        .unwrap();
    let v = serde_json::to_value(llm)?;
    assert_eq!(v["spec"]["podSelector"]["matchLabels"]["app"], "agent");
    assert_eq!(v["spec"]["egress"][0]["ports"][0]["port"], 443);

    // DNS goes to port 53 of any address (kube-dns, OpenShift's and NodeLocal DNSCache alike).
    let dns = serde_json::to_value(np.get("dev-allow-dns").await?)?;
    assert!(dns["spec"]["egress"][0].get("to").is_none(), "{dns}");
    assert_eq!(dns["spec"]["egress"][0]["ports"][0]["port"], 53);

    // A hand edit of a field the operator sets (another field manager) is put back: unchanged
    // children cost no write, changed ones are applied again.
    np.patch(
        "dev-allow-dns",
        &PatchParams::default(),
        &Patch::Merge(serde_json::json!({"spec": {"egress": [{"ports": [{"port": 5353, "protocol": "UDP"}]}]}})),
    )
    .await?;
    wait_for(WAIT, "the DNS policy restored", || async {
        let v = serde_json::to_value(np.get("dev-allow-dns").await?)?;
        Ok((v["spec"]["egress"][0]["ports"][0]["port"] == 53).then_some(()))
    })
    .await?;

    // CIDRs and a memory store. While it does not exist, no memory egress at all.
    let mut spec = env_spec("claude", 0);
    spec["networkPolicy"] = serde_json::json!({"llmEgressCidrs": ["10.1.0.0/16"], "llmPort": 8443});
    spec["memory"] = serde_json::json!({"storeRef": "mem"});
    apply_env(&ns, "dev", spec.clone()).await?;
    wait_env(&ns, "dev", "MemoryReady", "False", "MemoryStoreNotFound").await?;
    assert!(np.get_opt("dev-allow-memory").await?.is_none());
    // A managed store: egress on its port to its database pods only.
    let stores: Api<aienv::api::memory_store::MemoryStore> = ns.api();
    stores
        .create(
            &Default::default(),
            &serde_json::from_value(serde_json::json!({
                "apiVersion": "aienv.orchestr8.io/v1alpha1", "kind": "MemoryStore",
                "metadata": {"name": "mem"}, "spec": {"mode": "managed"},
            }))?,
        )
        .await?;
    let memory = wait_for(WAIT, "memory policy", || async {
        Ok(np.get_opt("dev-allow-memory").await?)
    })
    .await?;
    let rule = &serde_json::to_value(&memory)?["spec"]["egress"][0];
    assert_eq!(rule["ports"][0]["port"], 5432);
    assert_eq!(
        rule["to"][0]["podSelector"]["matchLabels"],
        serde_json::json!({"aienv.orchestr8.io/store": "mem", "app.kubernetes.io/component": "memory-store-db"})
    );
    let llm = serde_json::to_value(np.get("dev-allow-llm").await?)?;
    assert_eq!(
        llm["spec"]["egress"][0]["to"][0]["ipBlock"]["cidr"],
        "10.1.0.0/16"
    );
    assert_eq!(llm["spec"]["egress"][0]["ports"][0]["port"], 8443);

    // Disabled: all removed.
    spec["networkPolicy"]["enabled"] = serde_json::json!(false);
    apply_env(&ns, "dev", spec).await?;
    wait_for(WAIT, "policies removed", || async {
        Ok(np
            .list(&ListParams::default())
            .await?
            .items
            .is_empty()
            .then_some(()))
    })
    .await?;
    // The status that drops the condition is written after the policies are deleted.
    let envs = ns.api::<AiEnvironment>();
    wait_for(WAIT, "NetworkPolicyReady removed", || async {
        let e = envs.get("dev").await?;
        Ok(env_condition(&e, "NetworkPolicyReady")
            .is_none()
            .then_some(()))
    })
    .await?;

    // Re-enabled, then the environment is deleted: the garbage collector removes its children.
    apply_env(&ns, "dev", env_spec("claude", 0)).await?;
    wait_for(WAIT, "policies back", || async {
        Ok((np.list(&ListParams::default()).await?.items.len() == 3).then_some(()))
    })
    .await?;
    ns.api::<AiEnvironment>()
        .delete("dev", &DeleteParams::foreground())
        .await?;
    wait_for(
        WAIT,
        "Secret and NetworkPolicies garbage-collected",
        || async {
            let secret = ns.api::<Secret>().get_opt("dev-llm").await?;
            let pols = np.list(&ListParams::default()).await?.items;
            Ok((secret.is_none() && pols.is_empty()).then_some(()))
        },
    )
    .await?;
    // The workload stays, with the last hash it was given.
    assert!(deployment_hash(&ns, "agent-a").await?.is_some());
    ctrl.stop().await;
    ns.cleanup().await
}

#[tokio::test]
async fn statefulsets_are_rolled_like_deployments() -> anyhow::Result<()> {
    let Some(Scenario { ns, ops: ctrl, .. }) =
        scenario("aienv-sts", &[Which::AiEnvironment]).await?
    else {
        return Ok(());
    };
    put_key(&ns, "claude", "apiKey", KEY1).await?;
    apply_profile(&ns, "claude", profile_spec("m1", "claude")).await?;
    create_statefulset(&ns, "agent-sts", &[("app", "agent")]).await?;
    create_deployment(&ns, "agent-a", &[("app", "agent")], 1).await?;
    apply_env(&ns, "dev", env_spec("claude", 0)).await?;
    let e = wait_env(&ns, "dev", "Ready", "True", "Ready").await?;
    let h1 = e.status.as_ref().unwrap().rendered_hash.clone().unwrap();
    assert_eq!(
        statefulset_hash(&ns, "agent-sts").await?.as_deref(),
        Some(h1.as_str())
    );
    let kinds: Vec<String> = e
        .status
        .unwrap()
        .targets
        .iter()
        .map(|t| format!("{}/{}", t.kind, t.name))
        .collect();
    assert_eq!(kinds, ["Deployment/agent-a", "StatefulSet/agent-sts"]);
    apply_profile(&ns, "claude", profile_spec("m2", "claude")).await?;
    let h2 = wait_rolled(&ns, "dev", &["agent-a"], Some(&h1)).await?;
    wait_for(WAIT, "statefulset carries the new hash", || async {
        Ok(
            (statefulset_hash(&ns, "agent-sts").await?.as_deref() == Some(h2.as_str()))
                .then_some(()),
        )
    })
    .await?;
    let sts = ns
        .api::<k8s_openapi::api::apps::v1::StatefulSet>()
        .get("agent-sts")
        .await?;
    assert_eq!(
        sts.metadata.generation,
        Some(3),
        "created, then one write per change"
    );
    ctrl.stop().await;
    ns.cleanup().await
}

#[tokio::test]
async fn a_users_secret_named_like_the_rendered_one_is_never_taken_over() -> anyhow::Result<()> {
    let Some(Scenario { ns, ops: ctrl, .. }) =
        scenario("aienv-conflict", &[Which::AiEnvironment]).await?
    else {
        return Ok(());
    };
    create_deployment(&ns, "agent-a", &[("app", "agent")], 1).await?;
    put_key(&ns, "claude", "apiKey", KEY1).await?;
    apply_profile(&ns, "claude", profile_spec("m", "claude")).await?;
    // The user's own Secret, named like the environment's.
    put_secret(&ns, "dev-llm", "password", "users-own-value", false).await?;
    apply_env(&ns, "dev", env_spec("claude", 0)).await?;
    let e = wait_env(&ns, "dev", "SecretRendered", "False", "SecretConflict").await?;
    let (_, _, msg) = env_condition(&e, "SecretRendered").unwrap();
    assert!(
        msg.contains("Secret \"dev-llm\" already exists")
            && msg.contains("kubectl delete secret dev-llm"),
        "{msg}"
    );
    wait_env(&ns, "dev", "Ready", "False", "SecretConflict").await?;
    wait_env(&ns, "dev", "RolledOut", "False", "Blocked").await?;
    let s = ns.api::<Secret>().get("dev-llm").await?;
    assert!(s.metadata.owner_references.is_none(), "not adopted");
    let data = s.data.unwrap_or_default();
    assert_eq!(data.keys().collect::<Vec<_>>(), ["password"]);
    assert_eq!(deployment_hash(&ns, "agent-a").await?, None);
    assert!(events_text(&ns).await?.contains("SecretConflict"));

    // Deleting the environment leaves the user's Secret alone.
    ns.api::<AiEnvironment>()
        .delete("dev", &DeleteParams::default())
        .await?;
    wait_for(WAIT, "dev deleted", || async {
        Ok(ns
            .api::<AiEnvironment>()
            .get_opt("dev")
            .await?
            .is_none()
            .then_some(()))
    })
    .await?;
    tokio::time::sleep(SETTLE).await;
    assert!(ns.api::<Secret>().get_opt("dev-llm").await?.is_some());
    ctrl.stop().await;
    ns.cleanup().await
}

#[tokio::test]
async fn two_racing_replicas_roll_each_workload_once_and_announce_it_once() -> anyhow::Result<()> {
    let Some(Scenario {
        client,
        ns,
        ops: ctrl,
        ..
    }) = scenario("aienv-race", &[Which::AiEnvironment]).await?
    else {
        return Ok(());
    };
    // A second operator replica with the same scope (as during a leader hand-over): both see
    // every change and race to patch the same workloads.
    let second = operator::start(&client, ns.name(), &[Which::AiEnvironment]);
    put_key(&ns, "claude", "apiKey", KEY1).await?;
    apply_profile(&ns, "claude", profile_spec("claude-sonnet-4-5", "claude")).await?;
    let agents = ["agent-a", "agent-b", "agent-c", "agent-d"];
    for d in agents {
        create_deployment(&ns, d, &[("app", "agent")], 1).await?;
    }
    apply_env(&ns, "dev", env_spec("claude", 0)).await?;
    let e = wait_env(&ns, "dev", "Ready", "True", "Ready").await?;
    let h1 = e.status.unwrap().rendered_hash.unwrap();
    put_key(&ns, "claude", "apiKey", KEY2).await?;
    let h2 = wait_rolled(&ns, "dev", &agents, Some(&h1)).await?;
    for d in agents {
        expect_replicasets(&ns, d, 3, SETTLE).await?;
    }
    // Across both replicas' Events, each workload is named once per hash.
    let events = events_text(&ns).await?;
    for h in [&h1, &h2] {
        let tag = format!("config hash {}", &h[..12]);
        let announced: Vec<&str> = events
            .lines()
            .filter(|l| l.starts_with("RolledOut") && l.contains(&tag))
            .collect();
        for d in agents {
            let n = announced.iter().filter(|l| l.contains(d)).count();
            assert_eq!(n, 1, "{d} announced {n} times for {h}:\n{events}");
        }
    }
    second.stop().await;
    ctrl.stop().await;
    ns.cleanup().await
}

/// The status an LlmProfile controller would write (it does not run here): Ready, or its probe
/// failing.
async fn set_profile_health(ns: &TestNamespace, name: &str, up: bool) -> anyhow::Result<()> {
    let (s, r) = if up {
        ("True", "Reachable")
    } else {
        ("False", "Unreachable")
    };
    let t = "2026-01-01T00:00:00Z";
    let cond = |type_: &str| {
        serde_json::json!({"type": type_, "status": s, "reason": r, "message": "set by the test",
                           "lastTransitionTime": t})
    };
    ns.api::<aienv::api::llm_profile::LlmProfile>()
        .patch_status(
            name,
            &PatchParams::apply("test").force(),
            &Patch::Apply(serde_json::json!({
                "apiVersion": "aienv.orchestr8.io/v1alpha1", "kind": "LlmProfile",
                "status": {"conditions": [cond("Ready"), cond("EndpointReachable")]},
            })),
        )
        .await?;
    Ok(())
}

#[tokio::test]
async fn a_harness_the_profile_cannot_serve_is_named_and_failover_skips_such_fallbacks()
-> anyhow::Result<()> {
    let Some(Scenario { ns, ops: ctrl, .. }) =
        scenario("aienv-harness", &[Which::AiEnvironment]).await?
    else {
        return Ok(());
    };
    create_deployment(&ns, "agent-a", &[("app", "agent")], 1).await?;
    put_key(&ns, "k", "apiKey", KEY1).await?;
    let auth = serde_json::json!({"secretRef": {"name": "k", "key": "apiKey"}});
    let anthropic = serde_json::json!({"provider": "anthropic", "baseUrl": "https://a.example.com",
                                       "model": "m", "auth": auth});
    apply_profile(&ns, "claude", anthropic.clone()).await?;
    // Codex speaks only the OpenAI Responses API; an Anthropic-only profile cannot serve it.
    apply_env(
        &ns,
        "dev",
        serde_json::json!({"llm": {"profileRef": "claude", "harnesses": ["claudeCode", "codex"]},
                           "agents": {"selector": {"matchLabels": {"app": "agent"}}}}),
    )
    .await?;
    let e = wait_env(&ns, "dev", "SecretRendered", "False", "HarnessUnsupported").await?;
    let msg = env_condition(&e, "SecretRendered").unwrap().2;
    assert!(
        msg.contains("harness codex") && msg.contains("endpoints.openai"),
        "{msg}"
    );
    wait_env(&ns, "dev", "Ready", "False", "HarnessUnsupported").await?;
    wait_env(&ns, "dev", "RolledOut", "False", "Blocked").await?;
    assert!(ns.api::<Secret>().get_opt("dev-llm").await?.is_none());
    assert_eq!(deployment_hash(&ns, "agent-a").await?, None);

    // Failover: the primary is down; the first fallback is Ready but offers no Anthropic
    // endpoint for Claude Code, so the second is chosen.
    apply_profile(&ns, "primary", anthropic.clone()).await?;
    apply_profile(
        &ns,
        "openai-only",
        serde_json::json!({"provider": "openai", "model": "m", "auth": auth}),
    )
    .await?;
    apply_profile(&ns, "second", anthropic).await?;
    set_profile_health(&ns, "primary", false).await?;
    set_profile_health(&ns, "openai-only", true).await?;
    set_profile_health(&ns, "second", true).await?;
    apply_env(
        &ns,
        "fo",
        serde_json::json!({"llm": {"profileRef": "primary", "fallbacks": ["openai-only", "second"],
                                   "harnesses": ["claudeCode"]},
                           "agents": {"selector": {"matchLabels": {"app": "agent"}}}}),
    )
    .await?;
    let e = wait_env(&ns, "fo", "FailedOver", "True", "PrimaryUnreachable").await?;
    assert_eq!(e.status.unwrap().active_profile.as_deref(), Some("second"));
    // Only the unfit fallback: the environment says it was skipped and why, not merely that no
    // fallback is Ready (it is).
    apply_env(
        &ns,
        "fo-unfit",
        serde_json::json!({"llm": {"profileRef": "primary", "fallbacks": ["openai-only"],
                                   "harnesses": ["claudeCode"]},
                           "agents": {"selector": {"matchLabels": {"app": "agent"}}}}),
    )
    .await?;
    let e = wait_env(&ns, "fo-unfit", "Ready", "False", "ActiveProfileUnhealthy").await?;
    let msg = env_condition(&e, "Ready").unwrap().2;
    assert!(
        msg.contains("cannot serve them: \"openai-only\"") && msg.contains("harness claudeCode"),
        "{msg}"
    );
    ctrl.stop().await;
    ns.cleanup().await
}
