//! Reading and waiting for conditions of any aienv kind.

use std::{fmt::Debug, time::Duration};

use aienv::api::common::HasConditions;
use anyhow::Result;
use kube::Api;
use serde::de::DeserializeOwned;

use crate::testenv::wait_for;

/// (status, reason, message) of the condition `type_`.
pub fn condition<K: HasConditions>(obj: &K, type_: &str) -> Option<(String, String, String)> {
    obj.conditions()
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.clone(), c.reason.clone(), c.message.clone()))
}

/// Wait (up to `timeout`) until `name`'s condition `type_` has `status` and `reason`; returns the
/// object. On timeout the last conditions are printed.
pub async fn wait_condition<K>(
    api: &Api<K>,
    timeout: Duration,
    name: &str,
    type_: &str,
    status: &str,
    reason: &str,
) -> Result<K>
where
    K: kube::Resource + HasConditions + Clone + DeserializeOwned + Debug,
{
    let what = format!("{name}: {type_}={status} ({reason})");
    let res = wait_for(timeout, &what, || async {
        let o = api.get(name).await?;
        Ok(condition(&o, type_)
            .filter(|(s, r, _)| s == status && r == reason)
            .map(|_| o))
    })
    .await;
    if res.is_err() {
        let o = api.get(name).await?;
        eprintln!("last conditions of {name}: {:#?}", o.conditions());
        if let Some(ns) = kube::Resource::meta(&o).namespace.as_deref() {
            print_namespace_state(api.clone().into_client(), ns).await;
        }
    }
    res
}

/// What a failed wait needs for its post-mortem: the namespace's pods (phase, why a container
/// waits or ended), its volume claims and its latest Events.
pub async fn print_namespace_state(client: kube::Client, ns: &str) {
    use k8s_openapi::api::core::v1::{Event, PersistentVolumeClaim, Pod};
    let lp = kube::api::ListParams::default();
    if let Ok(pods) = Api::<Pod>::namespaced(client.clone(), ns).list(&lp).await {
        for p in pods {
            let st = p.status.unwrap_or_default();
            let containers: Vec<String> = st
                .init_container_statuses
                .into_iter()
                .flatten()
                .chain(st.container_statuses.into_iter().flatten())
                .map(|c| {
                    let state = c.state.unwrap_or_default();
                    let why = state
                        .waiting
                        .map(|w| format!("waiting {}", w.reason.unwrap_or_default()))
                        .or(state.terminated.map(|t| {
                            format!("ended {} ({})", t.reason.unwrap_or_default(), t.exit_code)
                        }))
                        .unwrap_or_else(|| "running".into());
                    format!("{}: {why}, ready={}", c.name, c.ready)
                })
                .collect();
            eprintln!(
                "pod {}: {} on {:?} ip {:?} [{}]",
                p.metadata.name.unwrap_or_default(),
                st.phase.unwrap_or_default(),
                p.spec.and_then(|s| s.node_name),
                st.pod_ip,
                containers.join("; ")
            );
        }
    }
    if let Ok(pvcs) = Api::<PersistentVolumeClaim>::namespaced(client.clone(), ns)
        .list(&lp)
        .await
    {
        for c in pvcs {
            let phase = c.status.and_then(|s| s.phase).unwrap_or_default();
            eprintln!("pvc {}: {phase}", c.metadata.name.unwrap_or_default());
        }
    }
    if let Ok(events) = Api::<Event>::namespaced(client, ns).list(&lp).await {
        let n = events.items.len();
        for e in events.items.into_iter().skip(n.saturating_sub(25)) {
            eprintln!(
                "event {} {}/{}: {} {}",
                e.type_.unwrap_or_default(),
                e.involved_object.kind.unwrap_or_default(),
                e.involved_object.name.unwrap_or_default(),
                e.reason.unwrap_or_default(),
                e.message.unwrap_or_default()
            );
        }
    }
}
