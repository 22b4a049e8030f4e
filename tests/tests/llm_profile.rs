//! The LlmProfile controller against the real control plane: Secret resolution, live probes
//! against loopback HTTP servers, Events, and zero writes when nothing changes.

use std::time::Duration;

use aienv::{api::llm_profile::LlmProfile, controllers::llm_profile::CONTROLLER};
use aienv_tests::{
    agents::{
        apply_env, apply_profile, create_deployment, events_text, put_key, put_secret, wait_env,
    },
    conditions::{self, condition},
    llm_server::FakeLlm,
    operator::{self, Scenario, Which, scenario},
    testenv::wait_for,
};
use kube::{
    Api,
    api::{Patch, PatchParams},
};

const WAIT: Duration = Duration::from_secs(30);

async fn wait_condition(
    api: &Api<LlmProfile>,
    name: &str,
    type_: &str,
    status: &str,
    reason: &str,
) -> anyhow::Result<LlmProfile> {
    conditions::wait_condition(api, WAIT, name, type_, status, reason).await
}

#[tokio::test]
async fn missing_secret_then_missing_key_then_resolved() -> anyhow::Result<()> {
    let Some(Scenario { ns, ops: ctrl, .. }) =
        scenario("llmp-secret", &[Which::LlmProfile]).await?
    else {
        return Ok(());
    };
    let api: Api<LlmProfile> = ns.api();
    apply_profile(&ns, "claude", serde_json::json!({
        "provider": "anthropic", "baseUrl": "https://api.anthropic.com", "model": "claude-sonnet-4-5",
        "auth": {"secretRef": {"name": "anthropic", "key": "api-key"}},
    }))
    .await?;

    let p = wait_condition(&api, "claude", "Ready", "False", "SecretNotFound").await?;
    let (_, _, msg) = condition(&p, "Ready").unwrap();
    assert!(
        msg.contains("\"anthropic\"") && msg.contains("\"api-key\""),
        "{msg}"
    );
    assert_eq!(condition(&p, "Accepted").unwrap().0, "False");
    assert_eq!(
        p.status.as_ref().unwrap().observed_generation,
        p.metadata.generation
    );

    assert!(msg.contains("aienv.orchestr8.io/llm-key=true"), "{msg}");

    // The Secret appears without the opt-in label: nothing is read from it, not even its key names.
    put_secret(&ns, "anthropic", "token", "sk-ant-never-shown", false).await?;
    let p = wait_condition(&api, "claude", "Ready", "False", "SecretNotAllowed").await?;
    let (_, _, msg) = condition(&p, "Ready").unwrap();
    let label_cmd = format!(
        "kubectl label secret anthropic -n {} aienv.orchestr8.io/llm-key=true",
        ns.name()
    );
    assert!(msg.contains(&label_cmd), "{msg}");
    assert!(
        !msg.contains("token"),
        "names a key of a Secret that did not opt in: {msg}"
    );

    // Labelled, but with the wrong key: the Secret watch re-reconciles the profile.
    put_key(&ns, "anthropic", "token", "sk-ant-never-shown").await?;
    let p = wait_condition(&api, "claude", "Ready", "False", "SecretKeyNotFound").await?;
    let (_, _, msg) = condition(&p, "Ready").unwrap();
    assert!(
        msg.contains("token"),
        "lists the keys the Secret has: {msg}"
    );

    // Fixed: no probe configured, so the profile is Ready once the key resolves.
    put_key(&ns, "anthropic", "api-key", "sk-ant-never-shown").await?;
    let p = wait_condition(&api, "claude", "Ready", "True", "Resolved").await?;
    assert!(condition(&p, "EndpointReachable").is_none());

    let text = serde_json::to_string(&p)? + &events_text(&ns).await?;
    assert!(
        !text.contains("sk-ant-never-shown"),
        "the key leaked into status or events"
    );
    assert!(
        events_text(&ns).await?.contains("SecretNotFound"),
        "a Warning Event says what is wrong"
    );
    ctrl.stop().await;
    ns.cleanup().await
}

#[tokio::test]
async fn probe_ok_then_401_after_key_rotation_then_ok_again() -> anyhow::Result<()> {
    let Some(Scenario { ns, ops: ctrl, .. }) = scenario("llmp-probe", &[Which::LlmProfile]).await?
    else {
        return Ok(());
    };
    let server = FakeLlm::start("sk-good-123").await?;
    let api: Api<LlmProfile> = ns.api();
    put_key(&ns, "llm-key", "key", "sk-good-123").await?;
    apply_profile(&ns, "qwen", serde_json::json!({
        "provider": "openaiCompatible", "baseUrl": format!("{}/v1", server.base_url()), "model": "qwen3-coder",
        "auth": {"secretRef": {"name": "llm-key", "key": "key"}},
        "probe": {"intervalSeconds": 3600, "timeoutSeconds": 5},
    }))
    .await?;

    let p = wait_condition(&api, "qwen", "Ready", "True", "EndpointHealthy").await?;
    assert_eq!(condition(&p, "EndpointReachable").unwrap().0, "True");
    assert_eq!(condition(&p, "CredentialsValid").unwrap().0, "True");
    let status = p.status.clone().unwrap();
    assert!(status.latency_ms.is_some() && status.last_probe_time.is_some());
    let seen = server.seen.lock().unwrap().auth_headers.clone();
    assert_eq!(
        seen.last().unwrap().0.as_deref(),
        Some("Bearer sk-good-123"),
        "OpenAI-style bearer auth"
    );

    // Rotate to a key the endpoint refuses: the Secret change re-probes at once, despite the
    // hour-long interval.
    put_key(&ns, "llm-key", "key", "sk-revoked-456").await?;
    let p = wait_condition(&api, "qwen", "CredentialsValid", "False", "Unauthorized").await?;
    assert_eq!(condition(&p, "Ready").unwrap().1, "CredentialsInvalid");
    assert!(
        condition(&p, "Ready").unwrap().2.contains("llm-key"),
        "names the Secret to fix"
    );
    assert_eq!(condition(&p, "EndpointReachable").unwrap().0, "True");

    // The endpoint now accepts the rotated key; editing the spec (new generation) re-probes.
    *server.accepted_key.lock().unwrap() = "sk-revoked-456".into();
    apply_profile(&ns, "qwen", serde_json::json!({
        "provider": "openaiCompatible", "baseUrl": format!("{}/v1", server.base_url()), "model": "qwen3-coder-plus",
        "auth": {"secretRef": {"name": "llm-key", "key": "key"}},
        "probe": {"intervalSeconds": 3600, "timeoutSeconds": 5},
    }))
    .await?;
    wait_condition(&api, "qwen", "Ready", "True", "EndpointHealthy").await?;

    let everything = serde_json::to_string(&api.get("qwen").await?)? + &events_text(&ns).await?;
    for key in ["sk-good-123", "sk-revoked-456"] {
        assert!(
            !everything.contains(key),
            "key {key} leaked into status or events"
        );
    }
    let events = events_text(&ns).await?;
    assert!(
        events.contains("CredentialsInvalid") && events.contains("EndpointHealthy"),
        "{events}"
    );
    ctrl.stop().await;
    ns.cleanup().await
}

#[tokio::test]
async fn anthropic_api_key_style_sends_x_api_key() -> anyhow::Result<()> {
    let Some(Scenario { ns, ops: ctrl, .. }) = scenario("llmp-xkey", &[Which::LlmProfile]).await?
    else {
        return Ok(());
    };
    let server = FakeLlm::start("sk-ant-xyz").await?;
    let api: Api<LlmProfile> = ns.api();
    put_key(&ns, "ant", "k", "sk-ant-xyz").await?;
    apply_profile(
        &ns,
        "claude",
        serde_json::json!({
            "provider": "anthropic", "baseUrl": server.base_url(), "model": "claude-sonnet-4-5",
            "auth": {"secretRef": {"name": "ant", "key": "k"}, "headerStyle": "apiKey"},
            "probe": {"intervalSeconds": 3600},
        }),
    )
    .await?;
    wait_condition(&api, "claude", "Ready", "True", "EndpointHealthy").await?;
    let seen = server.seen.lock().unwrap().auth_headers.clone();
    assert_eq!(
        seen.last().unwrap(),
        &(None, Some("sk-ant-xyz".to_string())),
        "x-api-key only, no bearer"
    );
    ctrl.stop().await;
    ns.cleanup().await
}

#[tokio::test]
async fn every_protocol_is_probed_and_completion_mode_uses_the_generation_path()
-> anyhow::Result<()> {
    let Some(Scenario { ns, ops: ctrl, .. }) =
        scenario("llmp-protocols", &[Which::LlmProfile]).await?
    else {
        return Ok(());
    };
    let server = FakeLlm::start("sk-gw-1").await?;
    let api: Api<LlmProfile> = ns.api();
    put_key(&ns, "gw", "k", "sk-gw-1").await?;
    let base = server.base_url();
    let mut spec = serde_json::json!({
        "provider": "openaiCompatible", "model": "gw-model",
        "endpoints": {"anthropic": {"baseUrl": base}, "openai": {"baseUrl": format!("{base}/v1")}},
        "auth": {"secretRef": {"name": "gw", "key": "k"}, "headerStyle": "apiKey"},
        "probe": {"intervalSeconds": 3600},
    });
    apply_profile(&ns, "gw", spec.clone()).await?;
    wait_condition(&api, "gw", "Ready", "True", "EndpointHealthy").await?;
    {
        let seen = server.seen.lock().unwrap();
        assert_eq!(
            seen.requests,
            ["GET /v1/models", "GET /v1/models"],
            "both protocols"
        );
        // OpenAI with Bearer, Anthropic with the profile's header style.
        let key = Some("sk-gw-1".to_string());
        assert!(
            seen.auth_headers
                .contains(&(Some("Bearer sk-gw-1".into()), None))
        );
        assert!(seen.auth_headers.contains(&(None, key)));
    }
    spec["probe"]["mode"] = "completion".into();
    apply_profile(&ns, "gw", spec).await?;
    wait_for(WAIT, "completion probes", || async {
        let r = server.seen.lock().unwrap().requests.clone();
        Ok(r.iter().any(|x| x == "POST /v1/messages").then_some(r))
    })
    .await?;
    wait_condition(&api, "gw", "Ready", "True", "EndpointHealthy").await?;
    let r = server.seen.lock().unwrap().requests.clone();
    assert!(
        r.contains(&"POST /v1/chat/completions".to_string()),
        "{r:?}"
    );

    // An OpenAI base without a version: usable, with a warning that names the paths called.
    apply_profile(
        &ns,
        "bare",
        serde_json::json!({
            "provider": "openaiCompatible", "baseUrl": base, "model": "m",
            "auth": {"secretRef": {"name": "gw", "key": "k"}},
        }),
    )
    .await?;
    let p = wait_condition(&api, "bare", "Accepted", "True", "OpenAIBaseUnversioned").await?;
    let msg = condition(&p, "Accepted").unwrap().2;
    assert!(msg.contains(&format!("{base}/chat/completions")), "{msg}");
    ctrl.stop().await;
    ns.cleanup().await
}

#[tokio::test]
async fn unreachable_endpoint_is_reported() -> anyhow::Result<()> {
    let Some(Scenario { ns, ops: ctrl, .. }) = scenario("llmp-down", &[Which::LlmProfile]).await?
    else {
        return Ok(());
    };
    // A port that was just free and is now closed.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0")?;
        l.local_addr()?.port()
    };
    let api: Api<LlmProfile> = ns.api();
    apply_profile(&ns, "local", serde_json::json!({
        "provider": "ollama", "baseUrl": format!("http://127.0.0.1:{port}/v1"), "model": "qwen3-coder",
        "probe": {"intervalSeconds": 3600, "timeoutSeconds": 3},
    }))
    .await?;
    let p = wait_condition(&api, "local", "EndpointReachable", "False", "Unreachable").await?;
    assert_eq!(condition(&p, "Ready").unwrap().1, "EndpointUnreachable");
    assert_eq!(condition(&p, "CredentialsValid").unwrap().0, "Unknown");
    assert!(
        condition(&p, "Ready")
            .unwrap()
            .2
            .contains(&format!("127.0.0.1:{port}"))
    );
    assert!(p.status.unwrap().latency_ms.is_none());
    ctrl.stop().await;
    ns.cleanup().await
}

#[tokio::test]
async fn steady_profile_costs_zero_writes_over_many_probes_and_reconciles() -> anyhow::Result<()> {
    let Some(Scenario {
        client,
        ns,
        ops: ctrl,
        ..
    }) = scenario("llmp-steady", &[Which::LlmProfile]).await?
    else {
        return Ok(());
    };
    // The environments using the profile run too: a profile status write would wake them.
    let envs = operator::start(&client, ns.name(), &[Which::AiEnvironment]);
    let server = FakeLlm::start("k").await?;
    let api: Api<LlmProfile> = ns.api();
    put_key(&ns, "key", "k", "k").await?;
    // Probing every 5 s (the minimum; the default is 60 s), so the window below sees several.
    apply_profile(
        &ns,
        "steady",
        serde_json::json!({
            "provider": "openai", "baseUrl": format!("{}/v1", server.base_url()), "model": "gpt-5",
            "auth": {"secretRef": {"name": "key", "key": "k"}},
            "probe": {"intervalSeconds": 5},
        }),
    )
    .await?;
    create_deployment(&ns, "agent", &[("app", "agent")], 1).await?;
    apply_env(
        &ns,
        "dev",
        serde_json::json!({
            "llm": {"profileRef": "steady", "harnesses": ["codex"]},
            "agents": {"selector": {"matchLabels": {"app": "agent"}}},
        }),
    )
    .await?;
    let before = wait_condition(&api, "steady", "Ready", "True", "EndpointHealthy").await?;
    wait_env(&ns, "dev", "Ready", "True", "Ready").await?;
    // Let in-flight reconciles and the rollout's status reports settle, and two more probes run:
    // the first one, taken while the test binaries start in parallel, may be slow enough that a
    // settled latency is a real move (the rule writes it) — that is not the steady state.
    let settling = server.requests();
    wait_for(WAIT, "two probes after Ready", || async {
        Ok((server.requests() >= settling + 2).then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let before = api
        .get("steady")
        .await
        .map(|p| p.status)
        .unwrap_or(before.status);
    let metrics = &ctrl.ctx.metrics;
    let writes = metrics.status_writes(CONTROLLER);
    let env_writes = envs
        .ctx
        .metrics
        .status_writes(aienv::controllers::ai_environment::CONTROLLER);
    let reconciles = metrics.reconciles(CONTROLLER);
    let probes = server.requests();

    // Ten metadata-only touches: each triggers a reconcile, none changes what the profile means.
    for i in 0..10 {
        let patch = serde_json::json!({"metadata": {"annotations": {"test/touch": i.to_string()}}});
        api.patch("steady", &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    wait_for(WAIT, "ten more reconciles", || async {
        Ok((metrics.reconciles(CONTROLLER) >= reconciles + 5).then_some(()))
    })
    .await?;
    // Three probes at least, each answering as before (latency within noise).
    wait_for(WAIT, "three more probes", || async {
        Ok((server.requests() >= probes + 3).then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let after = api.get("steady").await?;
    assert_eq!(
        metrics.status_writes(CONTROLLER),
        writes,
        "a steady profile must not write its status, probes included: {before:#?} -> {:#?}",
        after.status
    );
    assert_eq!(
        after.status, before,
        "status unchanged, timestamps included"
    );
    assert_eq!(
        envs.ctx
            .metrics
            .status_writes(aienv::controllers::ai_environment::CONTROLLER),
        env_writes,
        "the environment using it writes nothing either"
    );
    assert!(
        server.requests() <= probes + 6,
        "probes keep to the interval, touches do not add any ({} -> {})",
        probes,
        server.requests()
    );
    envs.stop().await;
    ctrl.stop().await;
    ns.cleanup().await
}

#[tokio::test]
async fn one_failed_probe_is_not_down_and_throttling_never_is() -> anyhow::Result<()> {
    let Some(Scenario { ns, ops: ctrl, .. }) =
        scenario("llmp-threshold", &[Which::LlmProfile]).await?
    else {
        return Ok(());
    };
    let server = FakeLlm::start("sk-threshold").await?;
    let api: Api<LlmProfile> = ns.api();
    put_key(&ns, "k", "key", "sk-threshold").await?;
    apply_profile(&ns, "p", serde_json::json!({
        "provider": "openaiCompatible", "baseUrl": format!("{}/v1", server.base_url()), "model": "m",
        "auth": {"secretRef": {"name": "k", "key": "key"}},
        "probe": {"intervalSeconds": 5, "timeoutSeconds": 2, "failureThreshold": 2},
    }))
    .await?;
    wait_condition(&api, "p", "Ready", "True", "EndpointHealthy").await?;

    // Rate limited (429) and overloaded (529): usable, Ready stays True.
    for (code, why) in [(429, "RateLimited"), (529, "Overloaded")] {
        *server.forced_status.lock().unwrap() = Some(code);
        wait_condition(&api, "p", "EndpointReachable", "True", why).await?;
        let p = wait_condition(&api, "p", "Ready", "True", "EndpointDegraded").await?;
        assert!(
            condition(&p, "Ready")
                .unwrap()
                .2
                .contains(&code.to_string())
        );
        assert_eq!(p.status.unwrap().consecutive_failures, None);
    }

    // A server error: the first failure keeps Ready (the probe condition tells the truth), the
    // second marks the profile down.
    *server.forced_status.lock().unwrap() = Some(503);
    let long = Duration::from_secs(60);
    let p = conditions::wait_condition(&api, long, "p", "Ready", "True", "ProbeFailing").await?;
    assert_eq!(condition(&p, "EndpointReachable").unwrap().0, "False");
    assert!(condition(&p, "Ready").unwrap().2.contains("1 of 2"));
    assert_eq!(p.status.unwrap().consecutive_failures, Some(1));
    let p =
        conditions::wait_condition(&api, long, "p", "Ready", "False", "EndpointUnhealthy").await?;
    assert_eq!(p.status.unwrap().consecutive_failures, Some(2));

    // Healthy again: Ready at once, the count gone.
    *server.forced_status.lock().unwrap() = None;
    let p = conditions::wait_condition(&api, long, "p", "Ready", "True", "EndpointHealthy").await?;
    assert_eq!(p.status.unwrap().consecutive_failures, None);
    ctrl.stop().await;
    ns.cleanup().await
}
