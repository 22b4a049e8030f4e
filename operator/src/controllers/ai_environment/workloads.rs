//! The selected Deployments and StatefulSets: listing them, and writing the config hash into their
//! pod template with server-side apply under `aienv/rollout`, touching nothing else.

use futures::{StreamExt, stream};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, Patch, PatchParams},
    core::Selector,
};

use super::rollout::{HASH_ANNOTATION, Kind, Workload};
use crate::controller::{Error, Result, apply::manager};
use crate::controllers::memory_store::children::LABEL_CLIENT;

/// How many workload patches are in flight at once.
pub const PATCH_CONCURRENCY: usize = 16;

/// Every Deployment and StatefulSet in `ns` matching `selector`, sorted by kind and name.
pub async fn list(client: &Client, ns: &str, selector: &Selector) -> Result<Vec<Workload>> {
    let lp = ListParams::default().labels_from(selector);
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), ns);
    let statefulsets: Api<StatefulSet> = Api::namespaced(client.clone(), ns);
    let mut out: Vec<Workload> = deployments
        .list(&lp)
        .await?
        .items
        .iter()
        .map(from_deployment)
        .collect();
    out.extend(
        statefulsets
            .list(&lp)
            .await?
            .items
            .iter()
            .map(from_statefulset),
    );
    out.sort_by(|a, b| (a.kind, &a.name).cmp(&(b.kind, &b.name)));
    Ok(out)
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
        updated_replicas: status.updated_replicas.unwrap_or(0),
        available_replicas: status.available_replicas.unwrap_or(0),
        ready_replicas: status.ready_replicas.unwrap_or(0),
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
        updated_replicas: status.updated_replicas.unwrap_or(0),
        available_replicas: status.available_replicas.unwrap_or(0),
        ready_replicas: status.ready_replicas.unwrap_or(0),
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

/// Apply the hash to each target, a few at a time. Returns how many patches the API server
/// accepted (also when one failed: those writes happened) and the first error.
pub async fn patch_all(
    client: &Client,
    ns: &str,
    targets: &[(Kind, String)],
    hash: &str,
    memory_store: Option<&str>,
) -> (u64, Result<()>) {
    let params = PatchParams::apply(manager::ROLLOUT).force();
    stream::iter(targets.iter().cloned())
        .map(|(kind, name)| {
            let client = client.clone();
            let params = params.clone();
            async move {
                let patch = hash_patch(kind, &name, hash, memory_store);
                match kind {
                    Kind::Deployment => {
                        let api: Api<Deployment> = Api::namespaced(client, ns);
                        api.patch(&name, &params, &Patch::Apply(&patch))
                            .await
                            .map(|_| ())
                    }
                    Kind::StatefulSet => {
                        let api: Api<StatefulSet> = Api::namespaced(client, ns);
                        api.patch(&name, &params, &Patch::Apply(&patch))
                            .await
                            .map(|_| ())
                    }
                }
            }
        })
        .buffer_unordered(PATCH_CONCURRENCY)
        .fold((0u64, Ok(())), |(n, first), res| async move {
            match res {
                Ok(()) => (n + 1, first),
                Err(e) => (n, first.and(Err(Error::Kube(e)))),
            }
        })
        .await
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
