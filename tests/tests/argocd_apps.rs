//! ArgoCD's Applications for aienv (argocd/applications/) and the argocd-cm ignoreDifferences
//! snippet: accepted with strict field validation by a real API server that serves ArgoCD's own
//! CRDs (from the argo-cd Go module, tools/argocd/crds.sh), synced in the order the kinds need,
//! pointing at paths this checkout has, and ignoring exactly the operator's rollout field manager.

use std::{path::PathBuf, process::Command, time::Duration};

use aienv::controller::apply::manager;
use aienv_tests::testenv::{self, TestEnv, wait_for, workspace_root};
use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::{
    Api,
    api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, ValidationDirective},
};
use serde_json::Value;

const APPLICATIONS: [&str; 3] = ["aienv-crds", "aienv-operator", "aienv-samples"];

fn application_path(name: &str) -> PathBuf {
    workspace_root().join(format!("argocd/applications/{name}.yaml"))
}

fn read_yaml(path: &PathBuf) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_saphyr::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

fn application(name: &str) -> Result<Value> {
    read_yaml(&application_path(name))
}

/// ArgoCD's Application and AppProject CRDs, applied to the test cluster and Established.
async fn install_argocd_crds(client: &kube::Client) -> Result<()> {
    let out = Command::new(workspace_root().join("tools/argocd/crds.sh"))
        .output()
        .context("running tools/argocd/crds.sh")?;
    ensure!(
        out.status.success(),
        "tools/argocd/crds.sh failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = PathBuf::from(String::from_utf8(out.stdout)?.trim());
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for file in ["application-crd.yaml", "appproject-crd.yaml"] {
        let crd: CustomResourceDefinition = serde_json::from_value(read_yaml(&dir.join(file))?)?;
        let name = crd.metadata.name.clone().context("CRD without a name")?;
        crds.patch(
            &name,
            &PatchParams::apply("aienv-tests").force(),
            &Patch::Apply(&crd),
        )
        .await
        .with_context(|| format!("applying {file}"))?;
        wait_for(
            Duration::from_secs(60),
            &format!("{name} Established"),
            || {
                let crds = crds.clone();
                let name = name.clone();
                async move {
                    let crd = crds.get(&name).await?;
                    let established = crd
                        .status
                        .and_then(|s| s.conditions)
                        .unwrap_or_default()
                        .iter()
                        .any(|c| c.type_ == "Established" && c.status == "True");
                    Ok(established.then_some(()))
                }
            },
        )
        .await?;
    }
    Ok(())
}

fn applications_api(client: &kube::Client, ns: &str) -> Api<DynamicObject> {
    let gvk = GroupVersionKind::gvk("argoproj.io", "v1alpha1", "Application");
    Api::namespaced_with(client.clone(), ns, &ApiResource::from_gvk(&gvk))
}

/// A server-side dry-run apply with strict field validation: an unknown or mistyped field fails.
async fn dry_run_apply(api: &Api<DynamicObject>, mut app: Value, ns: &str) -> Result<()> {
    app["metadata"]["namespace"] = Value::String(ns.to_string());
    let obj: DynamicObject = serde_json::from_value(app)?;
    let name = obj
        .metadata
        .name
        .clone()
        .context("Application without a name")?;
    let mut params = PatchParams::apply("aienv-tests").dry_run();
    params.field_validation = Some(ValidationDirective::Strict);
    api.patch(&name, &params, &Patch::Apply(&obj)).await?;
    Ok(())
}

fn env() -> Option<TestEnv> {
    testenv::require_env()
}

#[tokio::test]
async fn applications_are_accepted_by_argocds_own_schema_and_a_broken_one_is_not() -> Result<()> {
    let Some(env) = env() else { return Ok(()) };
    let client = env.kube_client().await?;
    install_argocd_crds(&client).await?;
    let ns = env.test_namespace(&client, "argocd-apps").await?;
    let api = applications_api(&client, ns.name());

    for name in APPLICATIONS {
        dry_run_apply(&api, application(name)?, ns.name())
            .await
            .with_context(|| format!("argocd/applications/{name}.yaml was rejected"))?;
    }

    // The check can fail: a misspelt field and a wrongly typed one are refused.
    let mut misspelt = application("aienv-samples")?;
    misspelt["spec"]["syncPolicy"]["syncOption"] = serde_json::json!(["ServerSideApply=true"]);
    let mut mistyped = application("aienv-operator")?;
    mistyped["spec"]["source"]["helm"]["skipCrds"] = Value::String("yes".into());
    for (field, app) in [("syncOption", misspelt), ("skipCrds", mistyped)] {
        match dry_run_apply(&api, app, ns.name()).await {
            Ok(()) => bail!("an Application with a bad {field} was accepted"),
            Err(e) => ensure!(
                format!("{e:#}").contains(field),
                "the bad {field} was refused for another reason: {e:#}"
            ),
        }
    }
    ns.cleanup().await
}

fn wave(app: &Value) -> Result<i64> {
    app["metadata"]["annotations"]["argocd.argoproj.io/sync-wave"]
        .as_str()
        .context("no argocd.argoproj.io/sync-wave annotation")?
        .parse()
        .context("sync-wave is not an integer")
}

fn sync_options(app: &Value) -> Vec<&str> {
    app["spec"]["syncPolicy"]["syncOptions"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

#[test]
fn applications_sync_crds_first_from_paths_this_checkout_has() -> Result<()> {
    let [crds, operator, samples] = APPLICATIONS.map(|n| application(n).expect(n));
    ensure!(
        wave(&crds)? < wave(&operator)? && wave(&operator)? < wave(&samples)?,
        "sync waves must order CRDs, then the operator, then the samples"
    );
    ensure!(sync_options(&crds).contains(&"ServerSideApply=true"));
    ensure!(sync_options(&samples).contains(&"SkipDryRunOnMissingResource=true"));
    ensure!(
        operator["spec"]["source"]["helm"]["skipCrds"] == Value::Bool(true),
        "the operator's Application must leave the CRDs to aienv-crds"
    );
    ensure!(
        crds["spec"]["syncPolicy"]["automated"]["prune"] != Value::Bool(true),
        "pruning a CRD deletes every object of its kind"
    );

    let root = workspace_root();
    for app in [&crds, &operator, &samples] {
        let path = app["spec"]["source"]["path"]
            .as_str()
            .context("no source.path")?;
        let dir = root.join(path);
        ensure!(
            dir.is_dir(),
            "source.path {path} is not a directory of this checkout"
        );
        let has_yaml = std::fs::read_dir(&dir)?
            .filter_map(|e| e.ok())
            .any(|e| e.path().extension().is_some_and(|x| x == "yaml"));
        ensure!(has_yaml, "{path} holds no manifests");
    }
    ensure!(
        root.join(
            operator["spec"]["source"]["path"]
                .as_str()
                .unwrap_or_default()
        )
        .join("Chart.yaml")
        .is_file(),
        "the operator's source.path is not a Helm chart"
    );
    Ok(())
}

#[test]
fn ignore_differences_name_exactly_the_operators_rollout_manager() -> Result<()> {
    let samples = application("aienv-samples")?;
    let entries = samples["spec"]["ignoreDifferences"]
        .as_array()
        .context("aienv-samples has no ignoreDifferences")?;
    for kind in ["Deployment", "StatefulSet"] {
        let entry = entries
            .iter()
            .find(|e| e["group"] == "apps" && e["kind"] == kind)
            .with_context(|| format!("no ignoreDifferences entry for apps/{kind}"))?;
        ensure!(
            entry["managedFieldsManagers"] == serde_json::json!([manager::ROLLOUT]),
            "apps/{kind} must ignore exactly the fields of {}: {entry}",
            manager::ROLLOUT
        );
    }
    ensure!(sync_options(&samples).contains(&"RespectIgnoreDifferences=true"));

    let cm = read_yaml(&workspace_root().join("argocd/argocd-cm-ignore-rollout.yaml"))?;
    for kind in ["Deployment", "StatefulSet"] {
        let key = format!("resource.customizations.ignoreDifferences.apps_{kind}");
        let text = cm["data"][&key]
            .as_str()
            .with_context(|| format!("argocd-cm lacks {key}"))?;
        let value: Value = serde_saphyr::from_str(text)?;
        ensure!(
            value["managedFieldsManagers"] == serde_json::json!([manager::ROLLOUT]),
            "{key} must name {}: {text}",
            manager::ROLLOUT
        );
    }
    Ok(())
}
