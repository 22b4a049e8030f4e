//! `helm install` of charts/aienv-operator onto the test cluster, the way a user installs aienv:
//! the operator runs as two pods from the image built here, under the chart's ServiceAccount and
//! RBAC, reaches the API server through the `kubernetes` Service, takes the Lease, and brings an
//! environment (its agent rolled), a managed store (a PostgreSQL pod it reaches through cluster
//! DNS) and the store's backup schedule to Ready. `helm upgrade` to a changed value rolls the
//! operator pods and the new leader goes on working; `helm uninstall` leaves the CRDs, the
//! objects and the store's data.

use std::{path::Path, time::Duration};

use aienv::api::{
    backup_schedule::BackupSchedule, llm_profile::LlmProfile, memory_store::MemoryStore,
};
use aienv_tests::{
    agents, conditions,
    helm::{chart_dir, helm, stdout_of},
    operator,
    testenv::{require_env, wait_for},
};
use anyhow::{Context, Result, ensure};
use k8s_openapi::{
    api::{
        apps::v1::{Deployment, StatefulSet},
        batch::v1::CronJob,
        coordination::v1::Lease,
        core::v1::{PersistentVolumeClaim, Pod},
    },
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{Api, api::ListParams};

/// Pods start in seconds here; the margin is for a loaded machine.
const WAIT: Duration = Duration::from_secs(180);
const LEASE: &str = "aienv-operator-leader";

fn run_helm(what: &str, kubeconfig: &Path, args: &[&str]) -> Result<String> {
    let mut all = args.to_vec();
    let kubeconfig = kubeconfig.to_str().context("kubeconfig path")?;
    all.extend_from_slice(&["--kubeconfig", kubeconfig]);
    stdout_of(what, helm(&all)?)
}

/// The operator pods of the release, by the chart's selector labels, with their Ready state.
async fn operator_pods(pods: &Api<Pod>, release: &str) -> Result<Vec<(String, bool)>> {
    let lp = ListParams::default().labels(&format!("app.kubernetes.io/instance={release}"));
    Ok(pods
        .list(&lp)
        .await?
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none())
        .map(|p| {
            (
                p.metadata.name.clone().unwrap_or_default(),
                agents::pod_ready(&p),
            )
        })
        .collect())
}

/// The Lease's holder once it is one of `pods`.
async fn leader_among(leases: &Api<Lease>, pods: &[String]) -> Result<String> {
    wait_for(WAIT, "the Lease held by an operator pod", || async {
        let holder = leases
            .get_opt(LEASE)
            .await?
            .and_then(|l| l.spec)
            .and_then(|s| s.holder_identity)
            .unwrap_or_default();
        Ok(pods
            .iter()
            .any(|p| holder.starts_with(p.as_str()))
            .then_some(holder))
    })
    .await
}

#[tokio::test]
async fn helm_install_runs_the_operator_as_pods_and_upgrade_and_uninstall_keep_the_work()
-> Result<()> {
    let Some(env) = require_env() else {
        return Ok(());
    };
    let Some(node) = env.require_node() else {
        return Ok(());
    };
    let client = env.kube_client().await?;
    operator::install_crds(&client).await?;
    let ns = env.test_namespace(&client, "helm-install").await?;
    // The release name doubles as fullnameOverride: the chart's ClusterRole is cluster-wide.
    let release = ns.name().to_string();
    let (repository, tag) = node
        .aienv_image
        .rsplit_once(':')
        .context("AIENV_IMAGE has no tag")?;
    let chart = chart_dir();
    let chart = chart.to_str().context("chart path")?;
    let image_repository = format!("image.repository={repository}");
    let image_tag = format!("image.tag={tag}");
    let watch = format!("watchNamespace={release}");
    let fullname = format!("fullnameOverride={release}");
    let timeout = format!("{}s", WAIT.as_secs());
    let install = [
        "install",
        &release,
        chart,
        "--namespace",
        &release,
        "--skip-crds",
        "--wait",
        "--timeout",
        &timeout,
        "--set",
        &image_repository,
        "--set",
        &image_tag,
        "--set",
        "image.pullPolicy=Never",
        "--set",
        &watch,
        "--set",
        &fullname,
    ];
    let pods: Api<Pod> = ns.api();
    if let Err(e) = run_helm("helm install", &env.kubeconfig, &install) {
        conditions::print_namespace_state(client.clone(), &release).await;
        return Err(e);
    }

    let first = operator_pods(&pods, &release).await?;
    ensure!(
        first.len() == 2 && first.iter().all(|(_, ready)| *ready),
        "two Ready operator pods after helm install --wait: {first:?}"
    );
    let names: Vec<String> = first.iter().map(|(n, _)| n.clone()).collect();
    let leases: Api<Lease> = ns.api();
    let leader = leader_among(&leases, &names).await?;
    println!("leader after install: {leader}");

    // The work: an environment rolled onto its agent, and a managed store running in a pod.
    agents::put_key(&ns, "claude", "apiKey", "sk-test-helm-install").await?;
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
    let rolled = agents::deployment_hash(&ns, "agent").await?;
    ensure!(rolled.is_some(), "the agent Deployment was not rolled");

    let stores: Api<MemoryStore> = ns.api();
    aienv_tests::stores::apply_store(
        &stores,
        "mem",
        serde_json::json!({"mode": "managed", "deletionPolicy": "Retain",
            "embedding": {"dimensions": 4},
            "managed": {"image": node.pg_image, "storage": {"size": "1Gi"}}}),
    )
    .await?;
    conditions::wait_condition(&stores, WAIT, "mem", "Ready", "True", "StoreReady").await?;
    // And a backup schedule for it: its CronJob, under the chart's Role.
    let schedules: Api<BackupSchedule> = ns.api();
    agents::apply_json(
        &schedules,
        serde_json::json!({
            "apiVersion": "aienv.orchestr8.io/v1alpha1", "kind": "BackupSchedule",
            "metadata": {"name": "nightly"},
            "spec": {"memoryStoreRef": "mem", "schedule": "0 3 * * *",
                     "destination": {"s3": {"bucket": "aienv-helm-install"}}},
        }),
    )
    .await?;
    conditions::wait_condition(&schedules, WAIT, "nightly", "Ready", "True", "Scheduled").await?;
    let cronjobs: Api<CronJob> = ns.api();
    ensure!(
        cronjobs.list(&ListParams::default()).await?.items.len() == 1,
        "no CronJob for the schedule"
    );

    // helm upgrade with a changed value: new pods, a new leader among them, and it works.
    let upgrade = [
        "upgrade",
        &release,
        chart,
        "--namespace",
        &release,
        "--reuse-values",
        "--skip-crds",
        "--wait",
        "--timeout",
        &timeout,
        "--set",
        "logLevel=debug",
    ];
    run_helm("helm upgrade", &env.kubeconfig, &upgrade)?;
    let second = wait_for(WAIT, "only the upgraded operator pods left", || async {
        let now = operator_pods(&pods, &release).await?;
        let fresh = now.len() == 2 && now.iter().all(|(n, ready)| *ready && !names.contains(n));
        Ok(fresh.then_some(now))
    })
    .await?;
    let names2: Vec<String> = second.into_iter().map(|(n, _)| n).collect();
    let leader2 = leader_among(&leases, &names2).await?;
    println!("leader after upgrade: {leader2}");
    agents::apply_profile(
        &ns,
        "claude-2",
        serde_json::json!({
            "provider": "anthropic", "model": "claude-sonnet-4-5",
            "endpoints": {"anthropic": {"baseUrl": "https://llm2.example.com"}},
            "auth": {"secretRef": {"name": "claude", "key": "apiKey"}},
        }),
    )
    .await?;
    let profiles: Api<LlmProfile> = ns.api();
    conditions::wait_condition(&profiles, WAIT, "claude-2", "Ready", "True", "Resolved").await?;
    // What the first leader did stands: no second roll, the store still Ready.
    ensure!(
        agents::deployment_hash(&ns, "agent").await? == rolled,
        "the upgrade rolled the agents again"
    );
    conditions::wait_condition(&stores, WAIT, "mem", "Ready", "True", "StoreReady").await?;

    // helm uninstall: the operator goes; CRDs, objects and the store's data stay.
    run_helm(
        "helm uninstall",
        &env.kubeconfig,
        &[
            "uninstall",
            &release,
            "--namespace",
            &release,
            "--wait",
            "--timeout",
            &timeout,
        ],
    )?;
    let deployments: Api<Deployment> = ns.api();
    ensure!(
        deployments.get_opt(&release).await?.is_none(),
        "the operator's Deployment outlived helm uninstall"
    );
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    ensure!(
        crds.get_opt("memorystores.aienv.orchestr8.io")
            .await?
            .is_some()
    );
    ensure!(
        stores.get_opt("mem").await?.is_some(),
        "the MemoryStore was deleted"
    );
    let sts: Api<StatefulSet> = ns.api();
    ensure!(sts.list(&ListParams::default()).await?.items.len() == 1);
    let pvcs: Api<PersistentVolumeClaim> = ns.api();
    ensure!(
        !pvcs.list(&ListParams::default()).await?.items.is_empty(),
        "the store's volume is gone"
    );
    ns.cleanup().await
}
