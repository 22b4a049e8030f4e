//! The Helm chart `charts/aienv-operator` with the real Helm: lint, render, the values schema,
//! the API server's dry run of what it renders, and its agreement with the code (RBAC rules,
//! CLI flags, probe paths, metric names, CRDs).

use std::collections::BTreeSet;
use std::process::Command;

use aienv::rbac;
use aienv::runtime::OperatorArgs;
use aienv_tests::helm::{chart_dir, find, helm, helm_bin, objects, stdout_of, template};
use aienv_tests::testenv::{require_env, workspace_root};
use anyhow::{Context, Result, ensure};
use k8s_openapi::api::rbac::v1::PolicyRule;
use serde_json::Value;

const RELEASE: &str = "aienv";
/// The release's objects are named after it (fullname: the release name contains the chart's).
const FULLNAME: &str = "aienv-aienv-operator";
/// Every optional part on.
const ALL_ON: &[&str] = &[
    "--set",
    "metrics.serviceMonitor.enabled=true",
    "--set",
    "metrics.prometheusRule.enabled=true",
    "--set",
    "metrics.dashboard.enabled=true",
];

fn render(namespace: &str, args: &[&str]) -> Result<Vec<Value>> {
    objects(&template(RELEASE, namespace, args)?)
}

fn rules(obj: &Value) -> Vec<PolicyRule> {
    serde_json::from_value(obj["rules"].clone()).expect("rules")
}

fn kinds(objs: &[Value]) -> BTreeSet<String> {
    objs.iter()
        .map(|o| o["kind"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn container(objs: &[Value]) -> &Value {
    &find(objs, "Deployment", FULLNAME).expect("the Deployment")["spec"]["template"]["spec"]["containers"]
        [0]
}

fn env_value<'a>(c: &'a Value, name: &str) -> Option<&'a str> {
    c["env"]
        .as_array()?
        .iter()
        .find(|e| e["name"] == name)
        .and_then(|e| e["value"].as_str())
}

#[test]
fn helm_lint_strict_passes_with_defaults_and_with_every_option() -> Result<()> {
    let chart = chart_dir();
    let chart = chart.to_str().context("chart path")?;
    for extra in [&[][..], ALL_ON, &["--set", "watchNamespace=team-a"]] {
        let mut args = vec!["lint", "--strict", chart];
        args.extend_from_slice(extra);
        let stdout = stdout_of(&format!("helm lint {extra:?}"), helm(&args)?)?;
        ensure!(
            stdout.contains("0 chart(s) failed"),
            "helm lint {extra:?}: {stdout}"
        );
    }
    Ok(())
}

#[test]
fn defaults_render_a_cluster_wide_operator_with_the_codes_rules() -> Result<()> {
    let objs = render("aienv-system", &[])?;
    assert_eq!(
        kinds(&objs),
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "Deployment",
            "NetworkPolicy",
            "PodDisruptionBudget",
            "Role",
            "RoleBinding",
            "Service",
            "ServiceAccount"
        ]
        .map(String::from)
        .into(),
        "optional parts (ServiceMonitor, PrometheusRule, dashboard) are off by default"
    );
    for o in &objs {
        assert_eq!(o["metadata"]["labels"]["module"], "aienv", "{}", o["kind"]);
    }
    let cr = find(&objs, "ClusterRole", FULLNAME).context("ClusterRole")?;
    assert_eq!(rules(cr), rbac::cluster_rules());
    // The only Role is the leader election's, in the release namespace.
    let roles: Vec<&Value> = objs.iter().filter(|o| o["kind"] == "Role").collect();
    assert_eq!(roles.len(), 1);
    assert_eq!(roles[0]["metadata"]["namespace"], "aienv-system");
    assert_eq!(rules(roles[0]), rbac::lease_rules());
    let binding = find(&objs, "ClusterRoleBinding", FULLNAME).context("binding")?;
    assert_eq!(binding["subjects"][0]["name"], FULLNAME);
    assert_eq!(binding["subjects"][0]["namespace"], "aienv-system");
    let deploy = find(&objs, "Deployment", FULLNAME).context("Deployment")?;
    assert_eq!(deploy["spec"]["replicas"], 2);
    assert_eq!(
        deploy["spec"]["template"]["spec"]["serviceAccountName"],
        FULLNAME
    );
    let pdb = find(&objs, "PodDisruptionBudget", FULLNAME).context("PDB")?;
    assert_eq!(pdb["spec"]["minAvailable"], 1);
    let c = container(&objs);
    assert_eq!(env_value(c, "AIENV_WATCH_NAMESPACE"), None);
    assert_eq!(
        env_value(c, "AIENV_LEADER_ELECTION_NAMESPACE"),
        Some("aienv-system")
    );
    Ok(())
}

#[test]
fn watch_namespace_grants_the_namespaced_rules_by_a_role_there() -> Result<()> {
    let objs = render("aienv-system", &["--set", "watchNamespace=team-a"])?;
    let cr = find(&objs, "ClusterRole", FULLNAME).context("ClusterRole")?;
    assert_eq!(
        rules(cr),
        rbac::cluster_scoped_rules(),
        "only the CRDs cluster-wide"
    );
    let role = objs
        .iter()
        .find(|o| o["kind"] == "Role" && o["metadata"]["namespace"] == "team-a")
        .context("a Role in team-a")?;
    assert_eq!(rules(role), rbac::namespaced_rules());
    let rb = objs
        .iter()
        .find(|o| o["kind"] == "RoleBinding" && o["metadata"]["namespace"] == "team-a")
        .context("a RoleBinding in team-a")?;
    assert_eq!(rb["roleRef"]["name"], role["metadata"]["name"]);
    assert_eq!(rb["subjects"][0]["namespace"], "aienv-system");
    assert_eq!(
        env_value(container(&objs), "AIENV_WATCH_NAMESPACE"),
        Some("team-a")
    );
    Ok(())
}

/// The container's args and AIENV_* variables are ones `aienv operator` accepts, and the probes
/// and ports are the paths and port it serves.
#[test]
fn the_deployment_speaks_the_operators_cli_and_probes_what_it_serves() -> Result<()> {
    use clap::Args;
    let objs = render("aienv-system", &["--set", "service.port=9191"])?;
    let c = container(&objs);
    let cmd = OperatorArgs::augment_args(clap::Command::new("operator")).no_binary_name(true);
    let known_env: BTreeSet<String> = cmd
        .get_arguments()
        .filter_map(|a| a.get_env())
        .map(|e| e.to_string_lossy().into_owned())
        .collect();
    let args: Vec<String> = serde_json::from_value(c["args"].clone())?;
    assert_eq!(args[0], "operator", "the subcommand");
    let parsed = cmd
        .clone()
        .try_get_matches_from(&args[1..])
        .map_err(|e| anyhow::anyhow!("aienv operator rejects {args:?}: {e}"))?;
    assert_eq!(parsed.get_one::<bool>("leader_elect"), Some(&true));
    for e in c["env"].as_array().context("env")? {
        let name = e["name"].as_str().context("name")?;
        if name.starts_with("AIENV_") {
            assert!(known_env.contains(name), "{name} is no flag's variable");
        }
    }
    assert_eq!(env_value(c, "AIENV_HTTP_ADDR"), Some("0.0.0.0:9191"));
    assert_eq!(c["ports"][0]["containerPort"], 9191);
    let port_name = c["ports"][0]["name"].clone();
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert_eq!(c["livenessProbe"]["httpGet"]["port"], port_name);
    assert_eq!(c["readinessProbe"]["httpGet"]["port"], port_name);
    let served = std::fs::read_to_string(workspace_root().join("operator/src/runtime/http.rs"))?;
    for path in ["\"/healthz\"", "\"/readyz\"", "\"/metrics\""] {
        assert!(
            served.contains(&format!(".route({path}")),
            "{path} is served"
        );
    }
    let svc = find(&objs, "Service", &format!("{FULLNAME}-metrics")).context("Service")?;
    assert_eq!(svc["spec"]["ports"][0]["port"], 9191);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], port_name);
    // The Jobs run the operator's own image.
    assert_eq!(env_value(c, "AIENV_JOB_IMAGE"), c["image"].as_str());
    Ok(())
}

#[test]
fn the_pods_run_restricted() -> Result<()> {
    let objs = render("aienv-system", &[])?;
    let pod =
        &find(&objs, "Deployment", FULLNAME).context("Deployment")?["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let sc = &pod["containers"][0]["securityContext"];
    assert_eq!(sc["readOnlyRootFilesystem"], true);
    assert_eq!(sc["allowPrivilegeEscalation"], false);
    assert_eq!(sc["capabilities"]["drop"], serde_json::json!(["ALL"]));
    assert_eq!(sc["runAsNonRoot"], true);
    let anti =
        &pod["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0];
    assert_eq!(
        anti["podAffinityTerm"]["topologyKey"],
        "kubernetes.io/hostname"
    );
    let sa = find(&objs, "ServiceAccount", FULLNAME).context("ServiceAccount")?;
    assert_eq!(sa["automountServiceAccountToken"], false);
    assert_eq!(pod["automountServiceAccountToken"], true);
    Ok(())
}

#[test]
fn the_schema_rejects_bad_values_with_helms_message() -> Result<()> {
    let cases: &[(&[&str], &str)] = &[
        (
            &["--set-string", "replicas=two"],
            "at '/replicas': got string, want integer",
        ),
        (
            &["--set", "replica=2"],
            "additional properties 'replica' not allowed",
        ),
        (
            &["--set", "securityContext.allowPrivilegeEscalation=true"],
            "at '/securityContext/allowPrivilegeEscalation': value must be false",
        ),
        (
            &["--set", "podSecurityContext.runAsNonRoot=false"],
            "at '/podSecurityContext/runAsNonRoot': value must be true",
        ),
        (
            &["--set", "image.pullPolicy=Sometimes"],
            "at '/image/pullPolicy'",
        ),
        (&["--set", "watchNamespace=Team_A"], "at '/watchNamespace'"),
    ];
    for (args, message) in cases {
        let err = template(RELEASE, "aienv-system", args)
            .err()
            .with_context(|| format!("{args:?} was accepted"))?;
        let text = err.to_string();
        assert!(
            text.contains("values don't meet the specifications of the schema")
                && text.contains(message),
            "{args:?}: {text}"
        );
    }
    Ok(())
}

/// The metric names in the alerts and the dashboard are ones the operator (or the embed worker,
/// `aienv_embed_*`) exports.
#[test]
fn every_option_renders_and_alerts_on_metrics_that_exist() -> Result<()> {
    let objs = render("aienv-system", ALL_ON)?;
    let k = kinds(&objs);
    for kind in ["ServiceMonitor", "PrometheusRule", "ConfigMap"] {
        assert!(k.contains(kind), "{kind} in {k:?}");
    }
    let mut registry = prometheus_client::registry::Registry::default();
    let m = aienv::controller::metrics::Metrics::register(&mut registry);
    let _e = aienv::embed::metrics::EmbedMetrics::register(&mut registry);
    // A family is exported once it has a sample: one of each.
    let c = "aienvironment";
    m.kube_request("get");
    drop(m.reconcile(c));
    m.failure(c, "Kube");
    m.status_write(c);
    m.watch_error(c, "Forbidden");
    m.child_writes_inc(c, 1);
    m.backups.observe(
        "ns",
        "nightly",
        &aienv::controller::backup_metrics::Observed {
            last_success: Some(1),
            last_verified: Some(1),
            duration_seconds: Some(1.0),
            size_bytes: Some(1),
            consecutive_failures: 1,
        },
    );
    m.backups.failed("ns", "nightly");
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)?;
    let exported: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    let mut exprs = String::new();
    let rule = objs
        .iter()
        .find(|o| o["kind"] == "PrometheusRule")
        .context("PrometheusRule")?;
    let mut alerts = BTreeSet::new();
    for g in rule["spec"]["groups"].as_array().context("groups")? {
        for r in g["rules"].as_array().context("rules")? {
            alerts.insert(r["alert"].as_str().context("alert")?.to_string());
            exprs.push_str(r["expr"].as_str().context("expr")?);
            exprs.push('\n');
        }
    }
    for wanted in [
        "AienvBackupStale",
        "AienvBackupFailing",
        "AienvBackupVerifyFailing",
        "AienvRolloutFailing",
        "AienvReconcileErrors",
        "AienvEmbeddingBacklog",
    ] {
        assert!(alerts.contains(wanted), "{wanted} in {alerts:?}");
    }
    let cm = find(&objs, "ConfigMap", &format!("{FULLNAME}-dashboard")).context("dashboard")?;
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let dashboard: Value = serde_json::from_str(
        cm["data"]["aienv-operator.json"]
            .as_str()
            .context("the dashboard JSON")?,
    )?;
    for p in dashboard["panels"].as_array().context("panels")? {
        exprs.push_str(p["targets"][0]["expr"].as_str().context("panel expr")?);
        exprs.push('\n');
    }
    let used: BTreeSet<String> = exprs
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("aienv_"))
        .map(|w| w.to_string())
        .collect();
    ensure!(used.len() > 5, "the exprs name metrics: {used:?}");
    for name in &used {
        let family = ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .find_map(|s| name.strip_suffix(s))
            .unwrap_or(name);
        assert!(
            exported.contains(family) || exported.contains(name.as_str()),
            "{name} is not exported (exported: {exported:?})"
        );
    }
    Ok(())
}

/// The chart's crds/ are byte-for-byte the repository's crds/ (one source of truth, generated by
/// `aienv crds --write crds`): copy them with `cp crds/*.orchestr8.io.yaml charts/aienv-operator/crds/`.
#[test]
fn the_charts_crds_are_the_repositorys() -> Result<()> {
    let read = |dir: std::path::PathBuf| -> Result<Vec<(String, String)>> {
        let mut files = Vec::new();
        for e in std::fs::read_dir(&dir).with_context(|| dir.display().to_string())? {
            let e = e?;
            // crds/ also holds the kustomization that manifests/base installs it by.
            if e.file_name() == "kustomization.yaml" {
                continue;
            }
            files.push((
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read_to_string(e.path())?,
            ));
        }
        files.sort();
        Ok(files)
    };
    let source = read(workspace_root().join("crds"))?;
    let copy = read(chart_dir().join("crds"))?;
    assert_eq!(source.len(), 4);
    let names = |f: &[(String, String)]| f.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>();
    assert_eq!(names(&copy), names(&source));
    for ((name, a), (_, b)) in source.iter().zip(&copy) {
        assert!(
            a == b,
            "charts/aienv-operator/crds/{name} differs from crds/{name}: copy it again"
        );
    }
    // Helm ships them: --include-crds renders the four CRDs.
    let with = objects(&template(RELEASE, "aienv-system", &["--include-crds"])?)?;
    let crds = with
        .iter()
        .filter(|o| o["kind"] == "CustomResourceDefinition")
        .count();
    assert_eq!(crds, 4);
    Ok(())
}

#[test]
fn the_charts_app_version_is_the_workspaces() -> Result<()> {
    let chart: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(chart_dir().join("Chart.yaml"))?)?;
    assert_eq!(chart["appVersion"], env!("CARGO_PKG_VERSION"));
    assert_eq!(chart["annotations"]["module"], "aienv");
    Ok(())
}

/// The API server accepts everything the chart renders (dry run; nothing is installed). The
/// monitoring.coreos.com kinds are left out: the test cluster has no Prometheus Operator CRDs.
#[test]
fn the_api_server_accepts_the_rendered_manifests() -> Result<()> {
    let Some(env) = require_env() else {
        return Ok(());
    };
    // Namespaces that exist on every cluster (a dry run needs its objects' namespace).
    let cases: &[&[&str]] = &[&[], &["--set", "watchNamespace=kube-public"], ALL_ON];
    for args in cases {
        let objs = render("default", args)?;
        let core: Vec<&Value> = objs
            .iter()
            .filter(|o| {
                !o["apiVersion"]
                    .as_str()
                    .unwrap_or_default()
                    .starts_with("monitoring.coreos.com/")
            })
            .collect();
        let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": core});
        let stdout = env.kubectl(
            &["apply", "--dry-run=server", "-f", "-"],
            Some(&list.to_string()),
        )?;
        assert_eq!(
            stdout.matches("(server dry run)").count(),
            core.len(),
            "{args:?}: {stdout}"
        );
    }
    Ok(())
}

/// NOTES.txt (rendered by a client-only dry-run install: no cluster is contacted) names the real
/// Deployment and Lease and says how CRDs are upgraded.
#[test]
fn the_notes_name_the_deployment_the_lease_and_the_crd_upgrade() -> Result<()> {
    let chart = chart_dir();
    let out = Command::new(helm_bin()?)
        .args(["install", RELEASE])
        .arg(&chart)
        .args(["--namespace", "aienv-system", "--dry-run=client"])
        .args(["--set", "watchNamespace=team-a"])
        .env("KUBECONFIG", "/nonexistent")
        .output()?;
    let stdout = stdout_of("helm install --dry-run=client", out)?;
    let notes = stdout.split("NOTES:").nth(1).context("NOTES")?;
    for wanted in [
        format!("rollout status deployment/{FULLNAME}"),
        format!("get lease {}", aienv::runtime::DEFAULT_LEASE_NAME),
        "kubectl apply --server-side --force-conflicts -f".to_string(),
        "watches namespace team-a only".to_string(),
        format!("{FULLNAME}-metrics.aienv-system:8080/metrics"),
    ] {
        assert!(notes.contains(&wanted), "{wanted:?} in {notes}");
    }
    Ok(())
}

/// The controllers, given a client that impersonates the chart's ServiceAccount (with the chart's
/// RBAC applied for real, `watchNamespace` mode), bring an environment and an external store to
/// Ready, and no list, watch or write is refused.
#[tokio::test]
async fn the_controllers_work_under_exactly_the_charts_rbac() -> Result<()> {
    use aienv_tests::{agents, operator, stores};
    let Some(env) = require_env() else {
        return Ok(());
    };
    let admin = env.kube_client().await?;
    operator::install_crds(&admin).await?;
    let ns = env.test_namespace(&admin, "aienv-chart-rbac").await?;
    let name = ns.name().to_string();
    let kubectl = |args: &[&str], stdin: Option<String>| env.kubectl(args, stdin.as_deref());
    // The chart's ServiceAccount and RBAC only; the release name makes the ClusterRole unique.
    let objs = render(
        &name,
        &[
            "--set",
            &format!("watchNamespace={name}"),
            "--set",
            &format!("fullnameOverride={name}"),
        ],
    )?;
    let rbac_objs: Vec<&Value> = objs
        .iter()
        .filter(|o| {
            [
                "ServiceAccount",
                "Role",
                "RoleBinding",
                "ClusterRole",
                "ClusterRoleBinding",
            ]
            .contains(&o["kind"].as_str().unwrap_or_default())
        })
        .collect();
    assert_eq!(
        rbac_objs.len(),
        7,
        "SA, 2 Roles, 2 RoleBindings, ClusterRole(Binding)"
    );
    let list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": rbac_objs});
    kubectl(&["apply", "-f", "-"], Some(list.to_string()))?;

    // Errors, not panics, from here on: the ClusterRole is removed whatever happens.
    let scenario = async {
        let kubeconfig = kube::config::Kubeconfig::read_from(&env.kubeconfig)?;
        let mut config = kube::Config::from_custom_kubeconfig(
            kubeconfig,
            &kube::config::KubeConfigOptions::default(),
        )
        .await?;
        config.auth_info.impersonate = Some(format!("system:serviceaccount:{name}:{name}"));
        config.auth_info.impersonate_groups = Some(vec![
            "system:serviceaccounts".into(),
            format!("system:serviceaccounts:{name}"),
            "system:authenticated".into(),
        ]);
        let sa = kube::Client::try_from(config)?;
        aienv::runtime::crds::wait_established(
            &sa,
            std::time::Duration::from_secs(30),
            std::future::pending(),
        )
        .await?;
        let ops = operator::start(&sa, &name, &operator::Which::ALL);
        let db = env.test_database("aienv_chart_rbac").await?;
        let run = async {
            agents::put_key(&ns, "claude", "apiKey", "sk-test-chart-rbac").await?;
            agents::apply_profile(
                &ns,
                "claude",
                serde_json::json!({
                    "provider": "anthropic", "model": "claude-sonnet-4-5",
                    "endpoints": {"anthropic": {"baseUrl": "https://llm.example.com"}},
                    "auth": {"secretRef": {"name": "claude", "key": "apiKey"}},
                }),
            )
            .await?;
            agents::create_deployment(&ns, "agent", &[("app", "agent")], 1).await?;
            agents::apply_env(
                &ns,
                "dev",
                serde_json::json!({
                    "llm": {"profileRef": "claude", "harnesses": ["claudeCode"]},
                    "agents": {"selector": {"matchLabels": {"app": "agent"}}},
                }),
            )
            .await?;
            agents::wait_env(&ns, "dev", "Ready", "True", "Ready").await?;
            ensure!(
                agents::deployment_hash(&ns, "agent").await?.is_some(),
                "rolled"
            );
            stores::put_secret(&ns, "pg", &[("uri", &db.url)]).await?;
            let api = ns.api();
            stores::apply_store(
                &api,
                "mem",
                serde_json::json!({"mode": "external",
                    "external": {"connectionSecretRef": {"name": "pg", "key": "uri"}},
                    "embedding": {"dimensions": 4}, "deletionPolicy": "Delete"}),
            )
            .await?;
            stores::wait_condition(&api, "mem", "Ready", "True", "StoreReady").await?;
            // A BackupSchedule: its CronJob is created (its pods would go nowhere: no node has
            // the label).
            stores::put_secret(
                &ns,
                "s3",
                &[
                    ("AWS_ACCESS_KEY_ID", &env.aws_access_key_id),
                    ("AWS_SECRET_ACCESS_KEY", &env.aws_secret_access_key),
                ],
            )
            .await?;
            let schedules: kube::Api<aienv::api::backup_schedule::BackupSchedule> = ns.api();
            agents::apply_json(
                &schedules,
                serde_json::json!({"apiVersion": "aienv.orchestr8.io/v1alpha1",
                    "kind": "BackupSchedule", "metadata": {"name": "nightly"},
                    "spec": {"memoryStoreRef": "mem", "schedule": "0 3 * * *",
                        "destination": {"s3": {"bucket": "chart-rbac", "endpoint": env.s3_endpoint,
                            "region": env.s3_region, "forcePathStyle": true,
                            "credentialsSecretRef": {"name": "s3"}}},
                        "nodeSelector": {"aienv.test/no-such-node": "true"}}}),
            )
            .await?;
            let cron_jobs: kube::Api<k8s_openapi::api::batch::v1::CronJob> = ns.api();
            aienv_tests::testenv::wait_for(
                std::time::Duration::from_secs(60),
                "the backup CronJob",
                || async { Ok(cron_jobs.get_opt("nightly").await?) },
            )
            .await?;
            // An immediate backup: the operator creates its Job.
            use aienv::controllers::backup_schedule::{BACKUP_NOW_ANNOTATION, LABEL_SCHEDULE};
            let now =
                serde_json::json!({"metadata": {"annotations": {BACKUP_NOW_ANNOTATION: "t1"}}});
            schedules
                .patch(
                    "nightly",
                    &kube::api::PatchParams::default(),
                    &kube::api::Patch::Merge(&now),
                )
                .await?;
            let jobs: kube::Api<k8s_openapi::api::batch::v1::Job> = ns.api();
            let by_schedule =
                kube::api::ListParams::default().labels(&format!("{LABEL_SCHEDULE}=nightly"));
            aienv_tests::testenv::wait_for(
                std::time::Duration::from_secs(60),
                "the backup-now Job",
                || async {
                    let l = jobs.list(&by_schedule).await?;
                    Ok((!l.items.is_empty()).then_some(()))
                },
            )
            .await?;
            // Events were written (events.k8s.io create under the Role).
            ensure!(!agents::events_text(&ns).await?.is_empty(), "no Events");
            let m = &ops.ctx.metrics;
            for c in [
                "llmprofile",
                "aienvironment",
                "memorystore",
                "backupschedule",
            ] {
                ensure!(
                    m.watch_errors(c, "Forbidden") == 0,
                    "{c} was refused a watch"
                );
                // A refused call fails the reconcile as a KubeError.
                ensure!(m.failures(c, "KubeError") == 0, "{c} failed a call");
            }
            anyhow::Ok(())
        }
        .await;
        ops.stop().await;
        db.cleanup().await?;
        run
    }
    .await;
    let cluster_wide = format!("clusterrole/{name}");
    let binding = format!("clusterrolebinding/{name}");
    kubectl(
        &["delete", "--ignore-not-found", &cluster_wide, &binding],
        None,
    )?;
    ns.cleanup().await?;
    scenario
}
