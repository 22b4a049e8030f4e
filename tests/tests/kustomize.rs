//! The kustomize install path (`kubectl apply -k`): manifests/base is the Helm chart rendered
//! (checked against the chart, not trusted), each overlay renders with the real `kubectl
//! kustomize` into what its comment promises, the dev overlay applied to the test cluster runs
//! the operator as a pod from the image built here, and every sample (manifests/samples) applied
//! through it is accepted and becomes Ready where this machine allows.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aienv::api::{
    backup_schedule::BackupSchedule, llm_profile::LlmProfile, memory_store::MemoryStore,
};
use aienv_tests::{
    agents, conditions,
    helm::objects,
    operator,
    testenv::{TestEnv, require_env, unique_name, wait_for, workspace_root},
};
use anyhow::{Context, Result, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use kube::Api;
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(240);
const NAMESPACE: &str = "aienv-system";
const DEPLOYMENT: &str = "aienv-operator";

fn overlay(name: &str) -> PathBuf {
    workspace_root().join("manifests/overlays").join(name)
}

/// A new, empty directory of this test run's own.
fn scratch_dir(prefix: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(unique_name(&format!("aienv-{prefix}"), '-', 60));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// `to` as a path relative to the directory `from` (both absolute): kustomize takes resource
/// directories by relative path only.
fn relative_to(from: &Path, to: &Path) -> PathBuf {
    let from: Vec<_> = from.components().collect();
    let to: Vec<_> = to.components().collect();
    let common = from.iter().zip(&to).take_while(|(a, b)| a == b).count();
    let mut rel = PathBuf::new();
    for _ in common..from.len() {
        rel.push("..");
    }
    rel.extend(&to[common..]);
    rel
}

fn path_str(p: &Path) -> Result<&str> {
    p.to_str().context("non-UTF-8 path")
}

/// `kubectl kustomize <dir>`, parsed.
fn kustomize(env: &TestEnv, dir: &Path) -> Result<Vec<Value>> {
    objects(&env.kubectl(&["kustomize", path_str(dir)?], None)?)
}

fn one<'a>(objs: &'a [Value], kind: &str) -> Result<&'a Value> {
    let found: Vec<&Value> = objs.iter().filter(|o| o["kind"] == kind).collect();
    ensure!(found.len() == 1, "{} {kind} objects, want 1", found.len());
    Ok(found[0])
}

fn operator_container(deployment: &Value) -> Result<&Value> {
    deployment["spec"]["template"]["spec"]["containers"]
        .as_array()
        .and_then(|c| c.iter().find(|c| c["name"] == "operator"))
        .context("no container named operator")
}

fn env_value<'a>(container: &'a Value, name: &str) -> Option<&'a str> {
    container["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)?["value"]
        .as_str()
}

/// The base is exactly the chart rendered with its default values (less Helm's own labels):
/// `tools/manifests/render-base.sh` makes it, and a chart change without a re-render fails here.
#[test]
fn the_base_is_the_chart_rendered() -> Result<()> {
    let committed = workspace_root().join("manifests/base/operator.yaml");
    let fresh = scratch_dir("render-base")?.join("operator.yaml");
    let out = std::process::Command::new(workspace_root().join("tools/manifests/render-base.sh"))
        .arg(&fresh)
        .output()?;
    aienv_tests::helm::stdout_of("tools/manifests/render-base.sh", out)?;
    let want = std::fs::read_to_string(&fresh)?;
    let have = std::fs::read_to_string(&committed)?;
    ensure!(
        have == want,
        "manifests/base/operator.yaml differs from the chart: run tools/manifests/render-base.sh and commit"
    );
    ensure!(!have.contains("managed-by: Helm") && !have.contains("helm.sh/chart"));
    Ok(())
}

/// What each overlay promises, from what `kubectl kustomize` really makes of it.
#[test]
fn each_overlay_renders_the_operator_it_describes() -> Result<()> {
    let Some(env) = require_env() else {
        return Ok(());
    };
    for name in ["dev", "production"] {
        let objs = kustomize(&env, &overlay(name))?;
        let crds = objs
            .iter()
            .filter(|o| o["kind"] == "CustomResourceDefinition")
            .count();
        ensure!(crds == 4, "{name}: {crds} CRDs");
        let ns = one(&objs, "Namespace")?;
        ensure!(ns["metadata"]["name"] == NAMESPACE);
        ensure!(ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted");
        for o in &objs {
            let kind = o["kind"].as_str().unwrap_or_default();
            let namespaced = !matches!(
                kind,
                "CustomResourceDefinition" | "Namespace" | "ClusterRole" | "ClusterRoleBinding"
            );
            if namespaced {
                ensure!(
                    o["metadata"]["namespace"] == NAMESPACE,
                    "{name}: {kind} {} outside {NAMESPACE}",
                    o["metadata"]["name"]
                );
            }
            ensure!(
                o["metadata"]["labels"]["app.kubernetes.io/managed-by"] != "Helm",
                "{name}: {kind} says Helm manages it"
            );
        }
        for kind in [
            "ServiceAccount",
            "ClusterRole",
            "ClusterRoleBinding",
            "NetworkPolicy",
        ] {
            one(&objs, kind).with_context(|| format!("{name}: {kind}"))?;
        }
        let binding = one(&objs, "ClusterRoleBinding")?;
        ensure!(binding["subjects"][0]["namespace"] == NAMESPACE);

        let deployment = one(&objs, "Deployment")?;
        let c = operator_container(deployment)?;
        let image = c["image"].as_str().context("no image")?;
        // Backup and verify Jobs run the operator's own image, whatever the overlay made it.
        ensure!(
            env_value(c, "AIENV_JOB_IMAGE") == Some(image),
            "{name}: AIENV_JOB_IMAGE {:?} is not the operator's image {image}",
            env_value(c, "AIENV_JOB_IMAGE")
        );
        let sc = &c["securityContext"];
        ensure!(
            sc["runAsNonRoot"] == true
                && sc["allowPrivilegeEscalation"] == false
                && sc["readOnlyRootFilesystem"] == true
                && sc["capabilities"]["drop"] == serde_json::json!(["ALL"]),
            "{name}: not restricted: {sc}"
        );
        let replicas = deployment["spec"]["replicas"].as_i64();
        let pdbs = objs
            .iter()
            .filter(|o| o["kind"] == "PodDisruptionBudget")
            .count();
        match name {
            "dev" => {
                ensure!(image == "aienv.local/aienv:dev", "dev image {image}");
                ensure!(c["imagePullPolicy"] == "Never");
                ensure!(
                    replicas == Some(1) && pdbs == 0,
                    "dev: {replicas:?}, {pdbs} PDBs"
                );
            }
            _ => {
                ensure!(
                    image == format!("aienv:{}", env!("CARGO_PKG_VERSION")),
                    "production image {image}"
                );
                ensure!(
                    replicas == Some(2) && pdbs == 1,
                    "production: {replicas:?}, {pdbs} PDBs"
                );
                ensure!(
                    c["args"]
                        .as_array()
                        .is_some_and(|a| a.iter().any(|x| x == "--leader-elect=true")),
                    "production without leader election"
                );
            }
        }
    }
    Ok(())
}

/// Deletes what the dev overlay installed outside the CRDs, also when the test fails midway:
/// a cluster-wide operator left running would reconcile the next tests' objects.
struct InstalledOverlay<'a>(&'a TestEnv);

impl Drop for InstalledOverlay<'_> {
    fn drop(&mut self) {
        for args in [
            &[
                "delete",
                "namespace",
                NAMESPACE,
                "--ignore-not-found",
                "--wait=true",
            ][..],
            &[
                "delete",
                "clusterrole,clusterrolebinding",
                DEPLOYMENT,
                "--ignore-not-found",
            ][..],
        ] {
            if let Err(e) = self.0.kubectl(args, None) {
                eprintln!("cleaning up the dev overlay: {e:#}");
            }
        }
    }
}

/// A kustomization of the samples for this node: images it has (nothing is pulled here) and a
/// smaller volume, the way a user points samples at a registry mirror.
fn samples_for_node(dir: &Path, pg_image: &str) -> Result<PathBuf> {
    let (pg_name, pg_tag) = pg_image.rsplit_once(':').context("image without tag")?;
    let samples = workspace_root().join("manifests/samples");
    let text = serde_json::json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [path_str(&relative_to(dir, &samples))?],
        "images": [{"name": "coding-agent", "newName": pg_name, "newTag": pg_tag}],
        "patches": [{
            "target": {"kind": "MemoryStore", "name": "team-memory"},
            "patch": serde_json::json!([
                {"op": "replace", "path": "/spec/managed/image", "value": pg_image},
                {"op": "replace", "path": "/spec/managed/storage/size", "value": "1Gi"},
            ]).to_string(),
        }],
    });
    let path = dir.join("kustomization.yaml");
    std::fs::write(&path, text.to_string())?;
    Ok(dir.to_path_buf())
}

#[tokio::test]
async fn the_dev_overlay_runs_the_operator_and_the_samples_become_ready() -> Result<()> {
    let Some(env) = require_env() else {
        return Ok(());
    };
    let Some(node) = env.require_node() else {
        return Ok(());
    };
    let client = env.kube_client().await?;
    let dev = overlay("dev");
    let rendered = kustomize(&env, &dev)?;
    let image = operator_container(one(&rendered, "Deployment")?)?["image"].clone();
    ensure!(
        image == node.aienv_image.as_str(),
        "the dev overlay runs {image}, the node has {}",
        node.aienv_image
    );

    // CRDs earlier tests applied under another field manager: take them over, as an upgrade would.
    let _installed = InstalledOverlay(&env);
    env.kubectl(
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "-k",
            path_str(&dev)?,
        ],
        None,
    )?;
    let holder =
        operator::installed_operator_leads(&env, &client, NAMESPACE, DEPLOYMENT, WAIT).await?;
    println!("leader: {holder}");

    // The production overlay is accepted whole by the API server (a dry run: its image is not
    // on this node).
    let prod = overlay("production");
    let dry = env.kubectl(
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--dry-run=server",
            "-k",
            path_str(&prod)?,
        ],
        None,
    )?;
    let prod_objects = kustomize(&env, &prod)?.len();
    ensure!(
        dry.matches("(server dry run)").count() == prod_objects,
        "production dry run: {dry}"
    );

    // Every sample, into one namespace, with the LLM keys a user creates.
    let ns = env.test_namespace(&client, "samples").await?;
    for (secret, key) in [
        ("anthropic", "api-key"),
        ("openai", "api-key"),
        ("dashscope", "api-key"),
        ("litellm", "master-key"),
    ] {
        agents::put_key(&ns, secret, key, &format!("sk-test-{secret}")).await?;
    }
    let samples = samples_for_node(&scratch_dir("samples")?, &node.pg_image)?;
    let applied = env.kubectl(
        &[
            "apply",
            "--server-side",
            "-n",
            ns.name(),
            "-k",
            path_str(&samples)?,
        ],
        None,
    )?;
    println!("{applied}");

    // Every profile is accepted (its key resolves); its probe cannot reach the endpoint from
    // this machine, which has no internet, and says so.
    let profiles: Api<LlmProfile> = ns.api();
    for p in ["claude", "openai", "qwen", "gateway", "local-qwen"] {
        conditions::wait_condition(&profiles, WAIT, p, "Accepted", "True", "Resolved").await?;
        let o =
            conditions::wait_condition(&profiles, WAIT, p, "Ready", "False", "EndpointUnreachable")
                .await?;
        let (_, _, msg) = conditions::condition(&o, "Ready").context("no Ready")?;
        ensure!(msg.contains("/models failed: cannot connect"), "{p}: {msg}");
    }
    let stores: Api<MemoryStore> = ns.api();
    conditions::wait_condition(&stores, WAIT, "team-memory", "Ready", "True", "StoreReady").await?;
    // The external sample points at a database this cluster does not have, and says so.
    let ext = conditions::wait_condition(
        &stores,
        WAIT,
        "shared-memory",
        "Ready",
        "False",
        "DatabaseUnreachable",
    )
    .await?;
    let (_, _, msg) = conditions::condition(&ext, "Ready").context("no Ready")?;
    ensure!(
        msg.contains("postgres.databases.svc:5432") && msg.contains("cannot resolve the host name"),
        "{msg}"
    );

    let schedules: Api<BackupSchedule> = ns.api();
    conditions::wait_condition(
        &schedules,
        WAIT,
        "team-memory-nightly",
        "Ready",
        "True",
        "Scheduled",
    )
    .await?;
    // The GCS schedule waits for its store, and names what the store lacks.
    let gcs = conditions::wait_condition(
        &schedules,
        WAIT,
        "shared-memory-gcs",
        "Ready",
        "False",
        "StoreNotReady",
    )
    .await?;
    let (_, _, msg) = conditions::condition(&gcs, "Ready").context("no Ready")?;
    ensure!(msg.contains("DatabaseUnreachable"), "{msg}");

    // The environment renders its Secret and rolls the sample agent onto it: a running pod.
    let dev_env = wait_for(WAIT, "environment dev rendered", || async {
        let e = ns
            .api::<aienv::api::ai_environment::AiEnvironment>()
            .get("dev")
            .await?;
        Ok(e.status
            .as_ref()
            .and_then(|s| s.rendered_hash.clone())
            .map(|h| (e, h)))
    })
    .await?;
    // Its profiles' endpoints are out of reach here: the config is rendered and rolled all the
    // same, and Ready says why it is not.
    ensure!(
        dev_env
            .0
            .status
            .as_ref()
            .and_then(|s| s.active_profile.as_deref())
            == Some("claude")
    );
    let deployments: Api<Deployment> = ns.api();
    ensure!(deployments.get_opt("coding-agent").await?.is_some());
    agents::ready_pod_selected_with_hash(
        &ns,
        "app.kubernetes.io/name=coding-agent",
        &dev_env.1,
        WAIT,
    )
    .await?;
    for env_name in ["dev", "codex"] {
        agents::wait_env(&ns, env_name, "Ready", "False", "ActiveProfileUnhealthy").await?;
    }

    // All of it under the base's cluster-wide RBAC: the operator's own metrics (through the API
    // server's service proxy) count no refused list, watch or call.
    let metrics = env.kubectl(
        &[
            "get",
            "--raw",
            &format!(
                "/api/v1/namespaces/{NAMESPACE}/services/{DEPLOYMENT}-metrics:http/proxy/metrics"
            ),
        ],
        None,
    )?;
    ensure!(
        metrics.contains("aienv_controller_reconciles_total"),
        "{metrics}"
    );
    let forbidden: Vec<&str> = metrics
        .lines()
        .filter(|l| l.contains("Forbidden") && !l.starts_with('#') && !l.ends_with(" 0"))
        .collect();
    ensure!(forbidden.is_empty(), "refused by RBAC: {forbidden:?}");
    ns.cleanup().await
}
