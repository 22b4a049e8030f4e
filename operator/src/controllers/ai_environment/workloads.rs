//! The selected Deployments and StatefulSets: listing them, and writing the config hash into their
//! pod template with server-side apply under `aienv/rollout`, touching nothing else.

use futures::{StreamExt, stream};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::{
    Api, Client, ResourceExt,
    api::{Patch, PatchParams},
    core::{Selector, SelectorExt},
};

use super::rollout::{HASH_ANNOTATION, Kind, Workload};
use crate::controller::{apply::manager, shared::Readers};
use crate::controllers::memory_store::children::LABEL_CLIENT;

/// How many workload patches are in flight at once.
pub const PATCH_CONCURRENCY: usize = 16;

/// Every Deployment and StatefulSet in `ns` matching `selector`, from the shared watch caches
/// (no API call), sorted by kind and name.
pub fn list(caches: &Readers, ns: &str, selector: &Selector) -> Vec<Workload> {
    let matches = |meta: &kube::api::ObjectMeta| {
        meta.namespace.as_deref() == Some(ns)
            && selector.matches(meta.labels.as_ref().unwrap_or(&Default::default()))
    };
    let mut out: Vec<Workload> = caches
        .deployments
        .state()
        .iter()
        .filter(|d| matches(&d.metadata))
        .map(|d| from_deployment(d))
        .collect();
    out.extend(
        caches
            .statefulsets
            .state()
            .iter()
            .filter(|s| matches(&s.metadata))
            .map(|s| from_statefulset(s)),
    );
    out.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
    out
}

fn template_hash(
    annotations: Option<&std::collections::BTreeMap<String, String>>,
) -> Option<String> {
    annotations.and_then(|a| a.get(HASH_ANNOTATION)).cloned()
}

pub fn from_deployment(d: &Deployment) -> Workload {
    let spec = d.spec.as_ref();
    let status = d.status.clone().unwrap_or_default();
    Workload {
        kind: Kind::Deployment,
        name: d.name_any(),
        hash: template_hash(
            spec.and_then(|s| s.template.metadata.as_ref())
                .and_then(|m| m.annotations.as_ref()),
        ),
        generation: d.metadata.generation,
        observed_generation: status.observed_generation,
        replicas: spec.and_then(|s| s.replicas).unwrap_or(1),
        status_replicas: status.replicas.unwrap_or(0),
        updated_replicas: status.updated_replicas.unwrap_or(0),
        available_replicas: status.available_replicas.unwrap_or(0),
        ready_replicas: status.ready_replicas.unwrap_or(0),
        current_revision: None,
        update_revision: None,
        partition: None,
    }
}

pub fn from_statefulset(s: &StatefulSet) -> Workload {
    let spec = s.spec.as_ref();
    let status = s.status.clone().unwrap_or_default();
    Workload {
        kind: Kind::StatefulSet,
        name: s.name_any(),
        hash: template_hash(
            spec.and_then(|s| s.template.metadata.as_ref())
                .and_then(|m| m.annotations.as_ref()),
        ),
        generation: s.metadata.generation,
        observed_generation: status.observed_generation,
        replicas: spec.and_then(|s| s.replicas).unwrap_or(1),
        status_replicas: status.replicas,
        updated_replicas: status.updated_replicas.unwrap_or(0),
        available_replicas: status.available_replicas.unwrap_or(0),
        ready_replicas: status.ready_replicas.unwrap_or(0),
        current_revision: status.current_revision.clone(),
        update_revision: status.update_revision.clone(),
        partition: spec
            .and_then(|s| s.update_strategy.as_ref())
            .and_then(|u| u.rolling_update.as_ref())
            .and_then(|r| r.partition),
    }
}

/// The partial object applied to a workload: the hash annotation, and with a memory store the
/// pod label its NetworkPolicy admits (`aienv.orchestr8.io/memory-store=<store>`). Dropping the
/// store drops the label: the apply owns exactly these fields.
pub fn hash_patch(
    kind: Kind,
    name: &str,
    hash: &str,
    memory_store: Option<&str>,
) -> serde_json::Value {
    let mut template =
        serde_json::json!({ "metadata": { "annotations": { HASH_ANNOTATION: hash } } });
    if let Some(store) = memory_store {
        template["metadata"]["labels"] = serde_json::json!({ LABEL_CLIENT: store });
    }
    serde_json::json!({
        "apiVersion": "apps/v1",
        "kind": kind.as_str(),
        "metadata": { "name": name },
        "spec": { "template": template },
    })
}

/// What applying the hash did to one target.
#[derive(Debug)]
pub enum Patched {
    /// The template changed: this rolls the workload.
    Rolled,
    /// It already carried the hash (another operator replica was first): nothing written.
    AlreadyCurrent,
    /// Gone since it was listed.
    Gone,
    Failed(kube::Error),
}

/// Apply the hash to each target, a few at a time, reading each first so a workload another
/// replica already rolled is not reported as rolled again. One result per target, in order.
pub async fn patch_all(
    client: &Client,
    ns: &str,
    targets: &[(Kind, String)],
    hash: &str,
    memory_store: Option<&str>,
) -> Vec<Patched> {
    let params = PatchParams::apply(manager::ROLLOUT).force();
    stream::iter(targets.iter().cloned())
        .map(|(kind, name)| {
            let client = client.clone();
            let params = params.clone();
            async move {
                let patch = hash_patch(kind, &name, hash, memory_store);
                let result = match kind {
                    Kind::Deployment => {
                        let api: Api<Deployment> = Api::namespaced(client, ns);
                        patch_one(&api, &name, &params, &patch, |d| from_deployment(d).hash).await
                    }
                    Kind::StatefulSet => {
                        let api: Api<StatefulSet> = Api::namespaced(client, ns);
                        patch_one(&api, &name, &params, &patch, |s| from_statefulset(s).hash).await
                    }
                };
                match result {
                    Ok(None) => Patched::Gone,
                    Ok(Some(true)) => Patched::Rolled,
                    Ok(Some(false)) => Patched::AlreadyCurrent,
                    Err(e) => Patched::Failed(e),
                }
            }
        })
        .buffered(PATCH_CONCURRENCY)
        .collect()
        .await
}

/// Some(true) when this patch changed the template, Some(false) when it already had the hash
/// (and the pod label), None when the workload is gone. The patch carries the resourceVersion
/// read just before as a precondition, so "changed" is exact even with a second replica racing:
/// on a conflict the workload is read again.
async fn patch_one<K>(
    api: &Api<K>,
    name: &str,
    params: &PatchParams,
    patch: &serde_json::Value,
    hash_of: impl Fn(&K) -> Option<String>,
) -> std::result::Result<Option<bool>, kube::Error>
where
    K: Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug + kube::Resource,
{
    let want = patch["spec"]["template"]["metadata"]["annotations"][HASH_ANNOTATION].as_str();
    let mut attempt = 0;
    loop {
        let Some(current) = api.get_opt(name).await? else {
            return Ok(None);
        };
        let labels_now = serde_json::to_value(&current)
            .ok()
            .map(|v| v["spec"]["template"]["metadata"]["labels"].clone())
            .unwrap_or_default();
        let labels_match = patch["spec"]["template"]["metadata"]["labels"]
            .as_object()
            .is_none_or(|want| want.iter().all(|(k, v)| labels_now.get(k) == Some(v)));
        if hash_of(&current).as_deref() == want && labels_match {
            return Ok(Some(false));
        }
        let mut guarded = patch.clone();
        guarded["metadata"]["resourceVersion"] = current.meta().resource_version.clone().into();
        match api.patch(name, params, &Patch::Apply(&guarded)).await {
            Ok(_) => return Ok(Some(true)),
            Err(kube::Error::Api(s)) if s.code == 409 && attempt < 3 => attempt += 1,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_patch_carries_only_the_annotation() {
        let p = hash_patch(Kind::Deployment, "agent", "abc", None);
        assert_eq!(
            p,
            serde_json::json!({
                "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "agent"},
                "spec": {"template": {"metadata": {"annotations": {"aienv.orchestr8.io/config-hash": "abc"}}}}
            })
        );
    }
}
