//! The `aienv operator` binary as a platform team runs it: it waits for the CRDs, serves
//! /healthz, /readyz and /metrics, takes the leader Lease, reconciles, logs JSON when not on a
//! terminal, and exits cleanly on SIGTERM.

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    time::Duration,
};

use aienv::api::llm_profile::LlmProfile;
use aienv_tests::{
    operator::install_crds,
    testenv::{require_env, wait_for},
};
use k8s_openapi::api::{coordination::v1::Lease, core::v1::Secret};
use kube::{
    Api,
    api::{Patch, PatchParams, PostParams},
};

/// The operator binary: $AIENV_BIN, else target/debug/aienv (scripts/test builds it first).
fn operator_bin() -> PathBuf {
    if let Ok(p) = std::env::var("AIENV_BIN") {
        return p.into();
    }
    let p = aienv_tests::testenv::workspace_root().join("target/debug/aienv");
    assert!(
        p.exists(),
        "{} missing: run `cargo build -p aienv` first (scripts/test does)",
        p.display()
    );
    p
}

#[tokio::test]
async fn operator_binary_serves_health_metrics_leads_reconciles_and_stops_on_sigterm()
-> anyhow::Result<()> {
    let Some(env) = require_env() else {
        return Ok(());
    };
    let client = env.kube_client().await?;
    install_crds(&client).await?;
    let ns = env.test_namespace(&client, "operator-proc").await?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();

    let mut child = Command::new(operator_bin())
        .args(["operator", "--http-addr", &format!("127.0.0.1:{port}")])
        .args([
            "--watch-namespace",
            ns.name(),
            "--leader-election-namespace",
            ns.name(),
        ])
        .env("KUBECONFIG", &env.kubeconfig)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()?;
    let http = reqwest::Client::new();
    let base = format!("http://127.0.0.1:{port}");

    wait_for(Duration::from_secs(30), "/readyz", || async {
        let r = http.get(format!("{base}/readyz")).send().await?;
        Ok(r.status().is_success().then_some(()))
    })
    .await?;
    assert!(
        http.get(format!("{base}/healthz"))
            .send()
            .await?
            .status()
            .is_success()
    );

    // It holds the Lease in its namespace.
    let leases: Api<Lease> = ns.api();
    wait_for(Duration::from_secs(30), "the leader Lease", || async {
        let l = leases.get_opt("aienv-operator-leader").await?;
        Ok(l.and_then(|l| l.spec?.holder_identity).map(|_| ()))
    })
    .await?;

    // It reconciles.
    let secrets: Api<Secret> = ns.api();
    secrets
        .create(
            &PostParams::default(),
            &serde_json::from_value(serde_json::json!({
                "metadata": {"name": "key", "labels": {"aienv.orchestr8.io/llm-key": "true"}},
                "stringData": {"k": "sk-process-test"}
            }))?,
        )
        .await?;
    let profiles: Api<LlmProfile> = ns.api();
    let obj = serde_json::json!({
        "apiVersion": "aienv.orchestr8.io/v1alpha1", "kind": "LlmProfile", "metadata": {"name": "p"},
        "spec": {"provider": "openai", "baseUrl": "https://api.openai.com/v1", "model": "gpt-5",
                 "auth": {"secretRef": {"name": "key", "key": "k"}}},
    });
    profiles
        .patch("p", &PatchParams::apply("aienv-tests"), &Patch::Apply(&obj))
        .await?;
    wait_for(Duration::from_secs(30), "profile Ready", || async {
        let p = profiles.get("p").await?;
        let ready = p
            .status
            .iter()
            .flat_map(|s| &s.conditions)
            .any(|c| c.type_ == "Ready" && c.status == "True");
        Ok(ready.then_some(()))
    })
    .await?;

    let metrics = http.get(format!("{base}/metrics")).send().await?;
    assert!(
        metrics.headers()["content-type"]
            .to_str()?
            .starts_with("application/openmetrics-text")
    );
    let body = metrics.text().await?;
    assert!(
        body.contains("aienv_controller_reconciles_total{controller=\"llmprofile\"}"),
        "{body}"
    );
    assert!(
        body.contains("aienv_controller_status_writes_total{controller=\"llmprofile\"}"),
        "{body}"
    );
    assert!(body.contains("# EOF"), "OpenMetrics ends with # EOF");

    // SIGTERM: clean exit, Lease released for the next replica.
    let pid = child.id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()?
            .success()
    );
    let status = wait_for(Duration::from_secs(30), "operator exit", || {
        let s = child.try_wait();
        async move { Ok(s?) }
    })
    .await?;
    assert!(status.success(), "operator exited with {status}");
    let lease = leases.get("aienv-operator-leader").await?;
    let holder = lease.spec.and_then(|s| s.holder_identity);
    assert!(
        holder.is_none(),
        "lease still held by {holder:?} after shutdown"
    );

    let mut stderr = String::new();
    use std::io::Read;
    child.stderr.take().unwrap().read_to_string(&mut stderr)?;
    let lines: Vec<&str> = stderr.lines().filter(|l| !l.trim().is_empty()).collect();
    assert!(!lines.is_empty());
    for line in &lines {
        let v: serde_json::Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line}"));
        assert!(v.get("level").is_some(), "{line}");
    }
    assert!(
        !stderr.contains("sk-process-test"),
        "the key leaked into the logs"
    );
    ns.cleanup().await
}
