//! Agent workloads, profiles and environments for the AiEnvironment tests and the benchmark.

use std::{collections::BTreeMap, time::Duration};

use aienv::{
    api::ai_environment::AiEnvironment, controllers::ai_environment::rollout::HASH_ANNOTATION,
};
use anyhow::Result;
use k8s_openapi::api::{
    apps::v1::{Deployment, ReplicaSet, StatefulSet},
    core::v1::{Pod, Secret},
    events::v1::Event,
};
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams, PostParams},
};

use crate::testenv::{TestNamespace, wait_for};

pub const WAIT: Duration = Duration::from_secs(60);
const MANAGER: &str = "aienv-tests";

/// Server-side apply an object given as JSON (apiVersion, kind, metadata.name, ...).
pub async fn apply_json<K>(api: &Api<K>, obj: serde_json::Value) -> Result<K>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let name = obj["metadata"]["name"].as_str().unwrap().to_string();
    Ok(api
        .patch(
            &name,
            &PatchParams::apply(MANAGER).force(),
            &Patch::Apply(&obj),
        )
        .await?)
}

pub async fn apply_profile(ns: &TestNamespace, name: &str, spec: serde_json::Value) -> Result<()> {
    apply_json(
        &ns.api::<aienv::api::llm_profile::LlmProfile>(),
        serde_json::json!({
            "apiVersion": "aienv.orchestr8.io/v1alpha1", "kind": "LlmProfile",
            "metadata": {"name": name}, "spec": spec,
        }),
    )
    .await?;
    Ok(())
}

pub async fn apply_env(ns: &TestNamespace, name: &str, spec: serde_json::Value) -> Result<()> {
    apply_json(
        &ns.api::<AiEnvironment>(),
        serde_json::json!({
            "apiVersion": "aienv.orchestr8.io/v1alpha1", "kind": "AiEnvironment",
            "metadata": {"name": name}, "spec": spec,
        }),
    )
    .await?;
    Ok(())
}

/// Create or update a Secret holding one API key, labelled so profiles may read it.
pub async fn put_key(ns: &TestNamespace, name: &str, key: &str, value: &str) -> Result<()> {
    put_secret(ns, name, key, value, true).await
}

/// Create or update a Secret holding one key; `llm_key` adds the opt-in label for LlmProfiles.
pub async fn put_secret(
    ns: &TestNamespace,
    name: &str,
    key: &str,
    value: &str,
    llm_key: bool,
) -> Result<()> {
    let labels = match llm_key {
        true => {
            serde_json::json!({aienv::controllers::llm_profile::validate::LLM_KEY_LABEL: "true"})
        }
        false => serde_json::json!({}),
    };
    apply_json(
        &ns.api::<Secret>(),
        serde_json::json!({
            "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "labels": labels},
            "stringData": {key: value},
        }),
    )
    .await?;
    Ok(())
}

/// A Deployment labelled `labels` (on the object and its pods) whose image exists nowhere: its
/// pods never start, so only the objects matter.
pub async fn create_deployment(
    ns: &TestNamespace,
    name: &str,
    labels: &[(&str, &str)],
    replicas: i32,
) -> Result<Deployment> {
    let pod = serde_json::json!({"containers": [{
        "name": "agent", "image": "registry.invalid/agent:1",
    }]});
    create_deployment_with_pod(ns, name, labels, replicas, pod).await
}

/// A Deployment labelled `labels` (on the object and its pods) running the pod spec `pod`.
pub async fn create_deployment_with_pod(
    ns: &TestNamespace,
    name: &str,
    labels: &[(&str, &str)],
    replicas: i32,
    pod: serde_json::Value,
) -> Result<Deployment> {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut pod_labels = labels.clone();
    pod_labels.insert("workload".into(), name.into());
    let obj = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"workload": name}},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": pod,
            },
        },
    });
    Ok(ns
        .api::<Deployment>()
        .create(&PostParams::default(), &serde_json::from_value(obj)?)
        .await?)
}

/// A StatefulSet labelled `labels` (on the object and its pods), with no replicas.
pub async fn create_statefulset(
    ns: &TestNamespace,
    name: &str,
    labels: &[(&str, &str)],
) -> Result<StatefulSet> {
    let labels: BTreeMap<String, String> = labels
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut pod_labels = labels.clone();
    pod_labels.insert("workload".into(), name.into());
    let obj = serde_json::json!({
        "apiVersion": "apps/v1", "kind": "StatefulSet",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 0,
            "selector": {"matchLabels": {"workload": name}},
            "template": {
                "metadata": {"labels": pod_labels},
                "spec": {"containers": [{"name": "agent", "image": "registry.invalid/agent:1"}]},
            },
        },
    });
    Ok(ns
        .api::<StatefulSet>()
        .create(&PostParams::default(), &serde_json::from_value(obj)?)
        .await?)
}

/// The config hash on a StatefulSet's pod template.
pub async fn statefulset_hash(ns: &TestNamespace, name: &str) -> Result<Option<String>> {
    let s = ns.api::<StatefulSet>().get(name).await?;
    Ok(s.spec
        .and_then(|s| s.template.metadata)
        .and_then(|m| m.annotations)
        .and_then(|a| a.get(HASH_ANNOTATION).cloned()))
}

/// The config hash on a Deployment's pod template.
pub async fn deployment_hash(ns: &TestNamespace, name: &str) -> Result<Option<String>> {
    let d = ns.api::<Deployment>().get(name).await?;
    Ok(d.spec
        .and_then(|s| s.template.metadata)
        .and_then(|m| m.annotations)
        .and_then(|a| a.get(HASH_ANNOTATION).cloned()))
}

/// ReplicaSets the controller-manager created for the Deployment.
pub async fn replicasets_of(ns: &TestNamespace, name: &str) -> Result<usize> {
    let d = ns.api::<Deployment>().get(name).await?;
    let uid = d.uid().unwrap_or_default();
    let list = ns.api::<ReplicaSet>().list(&ListParams::default()).await?;
    Ok(list
        .items
        .iter()
        .filter(|rs| rs.owner_references().iter().any(|o| o.uid == uid))
        .count())
}

/// Wait until the Deployment has exactly `n` ReplicaSets, then check it stays there for `settle`.
pub async fn expect_replicasets(
    ns: &TestNamespace,
    name: &str,
    n: usize,
    settle: Duration,
) -> Result<()> {
    wait_for(WAIT, &format!("{name} has {n} ReplicaSets"), || async {
        Ok((replicasets_of(ns, name).await? == n).then_some(()))
    })
    .await?;
    tokio::time::sleep(settle).await;
    let now = replicasets_of(ns, name).await?;
    anyhow::ensure!(
        now == n,
        "{name}: expected {n} ReplicaSets, found {now} after settling"
    );
    Ok(())
}

pub fn env_condition(e: &AiEnvironment, type_: &str) -> Option<(String, String, String)> {
    crate::conditions::condition(e, type_)
}

/// Wait until the environment's condition has `status` and `reason`.
pub async fn wait_env(
    ns: &TestNamespace,
    name: &str,
    type_: &str,
    status: &str,
    reason: &str,
) -> Result<AiEnvironment> {
    crate::conditions::wait_condition(
        &ns.api::<AiEnvironment>(),
        WAIT,
        name,
        type_,
        status,
        reason,
    )
    .await
}

/// Every Event of the namespace as "reason type note" lines.
pub async fn events_text(ns: &TestNamespace) -> Result<String> {
    let list = ns.api::<Event>().list(&ListParams::default()).await?;
    Ok(list
        .items
        .iter()
        .map(|e| {
            format!(
                "{} {} {}",
                e.reason.clone().unwrap_or_default(),
                e.type_.clone().unwrap_or_default(),
                e.note.clone().unwrap_or_default()
            )
        })
        .collect::<Vec<_>>()
        .join("\n"))
}

/// Whether the pod's Ready condition is True.
pub fn pod_ready(p: &Pod) -> bool {
    p.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The running, Ready pod of workload `workload` (label `workload=<name>`, as the builders here
/// set it) whose template carries config hash `hash`.
pub async fn ready_pod_with_hash(
    ns: &TestNamespace,
    workload: &str,
    hash: &str,
    timeout: Duration,
) -> Result<Pod> {
    ready_pod_selected_with_hash(ns, &format!("workload={workload}"), hash, timeout).await
}

/// The running, Ready pod matching label selector `selector` whose template carries config hash
/// `hash`.
pub async fn ready_pod_selected_with_hash(
    ns: &TestNamespace,
    selector: &str,
    hash: &str,
    timeout: Duration,
) -> Result<Pod> {
    let pods = ns.api::<Pod>();
    wait_for(
        timeout,
        &format!("a Ready {selector} pod with hash {hash}"),
        || async {
            let list = pods.list(&ListParams::default().labels(selector)).await?;
            Ok(list.items.into_iter().find(|p| {
                let annotated = p
                    .metadata
                    .annotations
                    .as_ref()
                    .and_then(|a| a.get(HASH_ANNOTATION))
                    .is_some_and(|h| h == hash);
                annotated && pod_ready(p) && p.metadata.deletion_timestamp.is_none()
            }))
        },
    )
    .await
}
