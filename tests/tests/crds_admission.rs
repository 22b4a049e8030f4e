//! On the real kube-apiserver: the CRDs install and become Established, and the API server itself
//! admits or rejects every case in tests/fixtures/cel-cases.yaml with the rule's message.

use aienv_tests::{operator::install_crds, testenv::require_env};
use kube::{
    Api,
    api::{DynamicObject, PostParams},
    core::GroupVersionKind,
    discovery,
};
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    name: String,
    kind: String,
    #[serde(default)]
    error: Option<String>,
    spec: serde_json::Value,
    /// Set for updates: the object is created with this spec, then replaced with `spec`.
    #[serde(default, rename = "oldSpec")]
    old_spec: Option<serde_json::Value>,
}

const CASES: &str = include_str!("../fixtures/cel-cases.yaml");

#[tokio::test]
async fn api_server_admits_and_rejects_each_case_with_its_message() -> anyhow::Result<()> {
    let Some(env) = require_env() else {
        return Ok(());
    };
    let client = env.kube_client().await?;
    install_crds(&client).await?;
    let ns = env.test_namespace(&client, "admission").await?;

    let cases: Vec<Case> = serde_saphyr::from_str(CASES)?;
    let mut failures = Vec::new();
    for case in &cases {
        let gvk = GroupVersionKind::gvk("aienv.orchestr8.io", "v1alpha1", &case.kind);
        let (ar, _caps) = discovery::pinned_kind(&client, &gvk).await?;
        let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns.name(), &ar);
        let mut obj: DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "aienv.orchestr8.io/v1alpha1",
            "kind": case.kind,
            "metadata": {"name": case.name},
            "spec": case.old_spec.as_ref().unwrap_or(&case.spec),
        }))?;
        let res = match &case.old_spec {
            None => api.create(&PostParams::default(), &obj).await,
            Some(_) => {
                let created = api.create(&PostParams::default(), &obj).await?;
                obj.metadata.resource_version = created.metadata.resource_version;
                obj.data["spec"] = case.spec.clone();
                api.replace(&case.name, &PostParams::default(), &obj).await
            }
        };
        match (&case.error, res) {
            (None, Ok(_)) => {}
            (None, Err(e)) => failures.push(format!("{}: expected accepted, got {e}", case.name)),
            (Some(want), Ok(_)) => failures.push(format!(
                "{}: expected rejection {want:?}, was accepted",
                case.name
            )),
            (Some(want), Err(kube::Error::Api(status))) => {
                if status.code != 422 || !status.message.contains(want.as_str()) {
                    failures.push(format!(
                        "{}: expected 422 with {want:?}, got {} {}",
                        case.name, status.code, status.message
                    ));
                }
            }
            (Some(_), Err(e)) => failures.push(format!("{}: unexpected error {e}", case.name)),
        }
    }
    ns.cleanup().await?;
    assert!(cases.len() >= 30, "only {} cases", cases.len());
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    Ok(())
}

#[tokio::test]
async fn crds_are_established_with_short_names_and_category() -> anyhow::Result<()> {
    let Some(env) = require_env() else {
        return Ok(());
    };
    let client = env.kube_client().await?;
    install_crds(&client).await?;
    // What `kubectl get ai` and `kubectl get llmp` rely on: discovery knows the short names and
    // the category.
    let discovery = discovery::Discovery::new(client.clone())
        .filter(&["aienv.orchestr8.io"])
        .run()
        .await?;
    let group = discovery
        .get("aienv.orchestr8.io")
        .expect("group discovered");
    let kinds: Vec<String> = group
        .recommended_resources()
        .into_iter()
        .map(|(ar, _)| ar.kind)
        .collect();
    for kind in [
        "AiEnvironment",
        "BackupSchedule",
        "LlmProfile",
        "MemoryStore",
    ] {
        assert!(
            kinds.contains(&kind.to_string()),
            "{kind} not served: {kinds:?}"
        );
    }
    let out = std::process::Command::new(env.k8s_bin.join("kubectl"))
        .args(["--kubeconfig"])
        .arg(&env.kubeconfig)
        .args([
            "api-resources",
            "--api-group=aienv.orchestr8.io",
            "--categories=ai",
            "-o",
            "wide",
        ])
        .output()?;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "kubectl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for short in ["aienv", "bsched", "llmp", "memstore"] {
        assert!(
            text.split_whitespace().any(|w| w == short),
            "short name {short} missing:\n{text}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn creating_the_crds_prints_no_warning() -> anyhow::Result<()> {
    let Some(env) = require_env() else {
        return Ok(());
    };
    // Under a group of its own, so the API server validates them as new CRDs (it warns about
    // unrecognized formats on create) without touching the installed ones.
    let yaml = aienv::crdgen::all_yaml()?.replace("aienv.orchestr8.io", "formatcheck.aienv.test");
    let mut child = std::process::Command::new(env.k8s_bin.join("kubectl"))
        .arg("--kubeconfig")
        .arg(&env.kubeconfig)
        .args(["create", "--dry-run=server", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()?;
    use std::io::Write;
    child.stdin.take().unwrap().write_all(yaml.as_bytes())?;
    let out = child.wait_with_output()?;
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "kubectl create failed: {stderr}");
    assert!(
        !stderr.contains("Warning"),
        "the API server warned: {stderr}"
    );
    Ok(())
}
