//! `o8-module.yaml`, the orchestr8 module file: it passes each rule of `o8 module validate`
//! (tests/src/o8.rs), each rule really catches what it names, its security section is what the
//! chart renders, and the command `o8 module deploy --env dev` runs for a helm module installs a
//! working operator on the test cluster.

use std::path::PathBuf;
use std::time::Duration;

use aienv::api::llm_profile::LlmProfile;
use aienv_tests::{
    agents, conditions,
    helm::{find, helm, objects, stdout_of},
    o8::{Severity, findings},
    testenv::{TestEnv, require_env, workspace_root},
};
use anyhow::{Context, Result, ensure};
use kube::Api;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(240);

fn module() -> Result<Value> {
    let path = workspace_root().join("o8-module.yaml");
    let text = std::fs::read_to_string(&path).context("reading o8-module.yaml")?;
    serde_saphyr::from_str(&text).context("parsing o8-module.yaml")
}

fn name_of(module: &Value) -> Result<String> {
    Ok(module["spec"]["module"]["name"]
        .as_str()
        .context("spec.module.name")?
        .to_string())
}

fn chart_of(module: &Value) -> Result<PathBuf> {
    Ok(workspace_root().join(
        module["spec"]["deployment"]["path"]
            .as_str()
            .context("spec.deployment.path")?,
    ))
}

/// What `o8 module deploy --env <env>` runs for a helm module: release and namespace are the
/// module's name, and the chart's `values-<env>.yaml` is added when it exists.
fn o8_helm_args(module: &Value, env: &str) -> Result<Vec<String>> {
    let name = name_of(module)?;
    let chart = chart_of(module)?;
    let mut args: Vec<String> = ["upgrade", "--install", &name]
        .into_iter()
        .map(String::from)
        .collect();
    args.push(chart.to_str().context("chart path")?.to_string());
    args.extend([
        "--namespace".into(),
        name.clone(),
        "--create-namespace".into(),
    ]);
    let values = chart.join(format!("values-{env}.yaml"));
    if values.exists() {
        args.extend(["-f".into(), values.to_str().context("values path")?.into()]);
    }
    Ok(args)
}

#[test]
fn the_module_file_passes_every_rule() -> Result<()> {
    let found = findings(&module()?, &workspace_root());
    let errors: Vec<_> = found
        .iter()
        .filter(|f| f.severity == Severity::Error)
        .collect();
    ensure!(errors.is_empty(), "o8 would refuse the module: {errors:?}");
    // The one warning accepted: o8 recommends the Stagehand browser framework for E2E tests, and
    // aienv's end-to-end suite is Rust against a real cluster (scripts/test).
    let warnings: Vec<&str> = found
        .iter()
        .filter(|f| f.severity == Severity::Warning)
        .map(|f| f.message.as_str())
        .collect();
    ensure!(
        warnings == ["non-standard E2E framework \"cargo-test\""],
        "{warnings:?}"
    );
    Ok(())
}

/// Each rule, broken on a copy of the real module file, reports what it names.
#[test]
fn each_rule_catches_what_it_names() -> Result<()> {
    use Severity::{Error, Warning};
    let cases: &[(&str, Option<Value>, Severity, &str)] = &[
        (
            "/apiVersion",
            Some(json!("orchestr8.io/v1")),
            Error,
            "invalid apiVersion",
        ),
        ("/kind", Some(json!("Module")), Error, "invalid kind"),
        ("/metadata", None, Error, "missing required field metadata"),
        ("/spec/module/name", None, Error, "module field name"),
        ("/spec/module/version", None, Error, "module field version"),
        ("/spec/module/tier", None, Error, "module field tier"),
        (
            "/spec/module/tier",
            Some(json!("gold")),
            Warning,
            "invalid tier gold",
        ),
        (
            "/spec/module/version",
            Some(json!("1.0")),
            Warning,
            "invalid version format",
        ),
        (
            "/spec/deployment",
            None,
            Error,
            "missing deployment configuration",
        ),
        (
            "/spec/deployment/type",
            Some(json!("terraform")),
            Error,
            "invalid deployment type",
        ),
        (
            "/spec/deployment/path",
            None,
            Error,
            "missing deployment path",
        ),
        (
            "/spec/deployment/path",
            Some(json!("manifests")),
            Error,
            "Chart.yaml not found",
        ),
        (
            "/spec/testing",
            None,
            Warning,
            "missing testing configuration",
        ),
        (
            "/spec/testing/e2e",
            None,
            Error,
            "E2E testing configuration is required",
        ),
        (
            "/spec/testing/e2e/path",
            Some(json!("tests/e2e")),
            Warning,
            "tests/e2e not found",
        ),
        ("/spec/requirements", None, Warning, "missing requirements"),
        (
            "/spec/requirements/authentication/enabled",
            Some(json!(true)),
            Warning,
            "clientId",
        ),
        (
            "/spec/requirements/networking/networkPolicies",
            Some(json!(false)),
            Warning,
            "NetworkPolicies disabled",
        ),
        ("/spec/security", None, Warning, "no security configuration"),
        (
            "/spec/security/podSecurityContext/runAsNonRoot",
            Some(json!(false)),
            Error,
            "run as root",
        ),
        (
            "/spec/security/containerSecurityContext/allowPrivilegeEscalation",
            Some(json!(true)),
            Error,
            "privilege escalation",
        ),
        (
            "/spec/security/containerSecurityContext/readOnlyRootFilesystem",
            Some(json!(false)),
            Warning,
            "writable",
        ),
        (
            "/spec/security/containerSecurityContext/capabilities/drop",
            Some(json!(["NET_RAW"])),
            Warning,
            "ALL capabilities",
        ),
        (
            "/spec/security/serviceAccount/automountToken",
            Some(json!(true)),
            Warning,
            "automount",
        ),
        (
            "/spec/security/secrets/provider",
            Some(json!("manual")),
            Warning,
            "manual secret",
        ),
    ];
    let root = workspace_root();
    let base = module()?;
    let baseline = findings(&base, &root);
    for (pointer, value, severity, wanted) in cases {
        let mut m = base.clone();
        let (parent, key) = pointer.rsplit_once('/').context("pointer")?;
        let obj = m
            .pointer_mut(parent)
            .and_then(Value::as_object_mut)
            .with_context(|| format!("{parent} is not an object in o8-module.yaml"))?;
        match value {
            Some(v) => obj.insert(key.to_string(), v.clone()),
            None => obj.remove(key),
        };
        let new: Vec<_> = findings(&m, &root)
            .into_iter()
            .filter(|f| !baseline.contains(f))
            .collect();
        ensure!(
            new.iter()
                .any(|f| f.severity == *severity && f.message.contains(wanted)),
            "{pointer} = {value:?}: want {severity:?} {wanted:?}, got {new:?}"
        );
    }
    // Scanning switched off is reported too (the file leaves compliance to its defaults).
    let mut m = base.clone();
    m["spec"]["compliance"] = json!({"securityScanning": {"enabled": false}});
    ensure!(
        findings(&m, &root)
            .iter()
            .any(|f| f.message == "security scanning disabled")
    );
    Ok(())
}

/// The security and requirements sections say what the chart really renders for each
/// environment `o8 module deploy` takes, and every object carries module=<name>, which
/// `o8 module status` selects pods by.
#[test]
fn the_module_file_states_what_the_chart_renders() -> Result<()> {
    let m = module()?;
    let name = name_of(&m)?;
    let sec = &m["spec"]["security"];
    for env in ["dev", "production"] {
        let mut args = o8_helm_args(&m, env)?;
        // `helm template` takes the same release, chart, namespace and values.
        args.splice(0..2, ["template".to_string()]);
        args.retain(|a| a != "--create-namespace");
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let objs = objects(&stdout_of("helm template", helm(&args)?)?)?;
        for o in &objs {
            ensure!(
                o["metadata"]["labels"]["module"] == name.as_str(),
                "{env}: {} {} lacks module={name}",
                o["kind"],
                o["metadata"]["name"]
            );
        }
        let dep = objs
            .iter()
            .find(|o| o["kind"] == "Deployment")
            .context("no Deployment")?;
        let pod = &dep["spec"]["template"]["spec"];
        ensure!(dep["spec"]["template"]["metadata"]["labels"]["module"] == name.as_str());
        ensure!(
            pod["securityContext"]["runAsNonRoot"] == sec["podSecurityContext"]["runAsNonRoot"]
        );
        ensure!(pod["securityContext"]["runAsUser"] == sec["podSecurityContext"]["runAsUser"]);
        let c = &pod["containers"][0]["securityContext"];
        let claimed = &sec["containerSecurityContext"];
        for field in [
            "allowPrivilegeEscalation",
            "readOnlyRootFilesystem",
            "capabilities",
        ] {
            ensure!(
                c[field] == claimed[field],
                "{env}: container {field} is {}, o8-module.yaml says {}",
                c[field],
                claimed[field]
            );
        }
        let sa = objs
            .iter()
            .find(|o| o["kind"] == "ServiceAccount")
            .context("no ServiceAccount")?;
        ensure!(sa["automountServiceAccountToken"] == sec["serviceAccount"]["automountToken"]);
        let policies = objs.iter().any(|o| o["kind"] == "NetworkPolicy");
        ensure!(
            Value::Bool(policies) == m["spec"]["requirements"]["networking"]["networkPolicies"]
        );
        let metrics = &m["spec"]["requirements"]["monitoring"]["metrics"];
        let svc = objs
            .iter()
            .find(|o| o["kind"] == "Service")
            .context("no Service")?;
        ensure!(
            svc["spec"]["ports"][0]["port"] == metrics["port"],
            "{env}: metrics port"
        );
        ensure!(
            find(&objs, "Deployment", "aienv-operator").is_some(),
            "{env}: Deployment name"
        );
    }
    Ok(())
}

/// Uninstalls the release and its namespace, also when the test fails midway.
struct Release<'a> {
    env: &'a TestEnv,
    name: String,
}

impl Drop for Release<'_> {
    fn drop(&mut self) {
        let kubeconfig = self.env.kubeconfig.to_string_lossy().into_owned();
        let _ = helm(&[
            "uninstall",
            &self.name,
            "--namespace",
            &self.name,
            "--wait",
            "--kubeconfig",
            &kubeconfig,
        ]);
        let _ = self.env.kubectl(
            &[
                "delete",
                "namespace",
                &self.name,
                "--ignore-not-found",
                "--wait=true",
            ],
            None,
        );
    }
}

#[tokio::test]
async fn o8_module_deploy_installs_a_working_operator() -> Result<()> {
    let Some(env) = require_env() else {
        return Ok(());
    };
    let Some(node) = env.require_node() else {
        return Ok(());
    };
    let m = module()?;
    let name = name_of(&m)?;
    let client = env.kube_client().await?;
    aienv_tests::operator::install_crds(&client).await?;
    let values: Value = serde_saphyr::from_str(&std::fs::read_to_string(
        chart_of(&m)?.join("values-dev.yaml"),
    )?)?;
    ensure!(
        format!(
            "{}:{}",
            values["image"]["repository"].as_str().unwrap_or_default(),
            values["image"]["tag"].as_str().unwrap_or_default()
        ) == node.aienv_image,
        "values-dev.yaml does not name the node's image {}",
        node.aienv_image
    );

    let _release = Release {
        env: &env,
        name: name.clone(),
    };
    let mut args = o8_helm_args(&m, "dev")?;
    args.extend([
        "--kubeconfig".into(),
        env.kubeconfig.to_string_lossy().into_owned(),
    ]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    println!(
        "{}",
        stdout_of("o8's helm upgrade --install", helm(&args)?)?
    );

    aienv_tests::operator::installed_operator_leads(&env, &client, &name, "aienv-operator", WAIT)
        .await?;
    // `o8 module status`: the pods labelled module=<name> in the module's namespace.
    let status = env.kubectl(
        &["get", "pods", "-n", &name, "-l", &format!("module={name}")],
        None,
    )?;
    ensure!(status.contains("Running"), "{status}");

    // It works for every namespace (cluster-wide by default): a profile elsewhere resolves.
    let ns = env.test_namespace(&client, "o8-module").await?;
    agents::put_key(&ns, "claude", "apiKey", "sk-test-o8").await?;
    agents::apply_profile(
        &ns,
        "claude",
        json!({
            "provider": "anthropic", "model": "claude-sonnet-4-5",
            "endpoints": {"anthropic": {"baseUrl": "https://llm.example.com"}},
            "auth": {"secretRef": {"name": "claude", "key": "apiKey"}},
        }),
    )
    .await?;
    let profiles: Api<LlmProfile> = ns.api();
    conditions::wait_condition(&profiles, WAIT, "claude", "Ready", "True", "Resolved").await?;
    ns.cleanup().await
}
