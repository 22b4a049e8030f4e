//! The environment's MemoryStore, read generically (its Ready condition and status.endpoint), so
//! this controller does not depend on the rest of the MemoryStore schema.

use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject},
};

use std::collections::BTreeMap;

use super::{
    netpol::{DEFAULT_DB_PORT, MemoryDestination, MemoryPeer, host_cidr},
    status::MemoryState,
};
use crate::{
    api::{ai_environment::MemoryBinding, memory_store::MemoryStore},
    controller::Result,
    controllers::llm_profile::validate::Problem,
};

/// The memory condition, and where the NetworkPolicy lets the agents reach the database (None
/// without a store, or while it cannot be located).
pub async fn observe(
    client: &Client,
    ns: &str,
    binding: Option<&MemoryBinding>,
) -> Result<(MemoryState, Option<MemoryPeer>)> {
    let Some(b) = binding else {
        return Ok((MemoryState::NotConfigured, None));
    };
    let ar = ApiResource::erase::<MemoryStore>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let store = api.get_opt(&b.store_ref).await?;
    Ok(interpret(&b.store_ref, store.as_ref().map(|s| &s.data)))
}

/// The store's database: its pods (managed: the StatefulSet's; cloudnativepg: the Cluster's
/// instances) or, in external mode, the host it reports.
fn locate(name: &str, store: &serde_json::Value, port: u16) -> Option<MemoryPeer> {
    let to = match store["spec"]["mode"].as_str().unwrap_or("managed") {
        "managed" => MemoryDestination::Pods(BTreeMap::from([
            (
                crate::controllers::memory_store::children::LABEL_STORE.to_string(),
                name.to_string(),
            ),
            (
                crate::controllers::memory_store::children::LABEL_COMPONENT.to_string(),
                crate::controllers::memory_store::children::COMPONENT_DB.to_string(),
            ),
        ])),
        "cloudnativepg" => MemoryDestination::Pods(BTreeMap::from([(
            "cnpg.io/cluster".to_string(),
            crate::controllers::memory_store::children::cnpg_cluster_name(name),
        )])),
        _ => {
            let host = store["status"]["endpoint"]["host"].as_str()?;
            let bare = host.trim_start_matches('[').trim_end_matches(']');
            match bare.parse::<std::net::IpAddr>() {
                Ok(ip) => MemoryDestination::Cidr(host_cidr(ip)),
                Err(_) => MemoryDestination::Anywhere {
                    host: host.to_string(),
                },
            }
        }
    };
    Some(MemoryPeer { port, to })
}

/// Pure part: from the store's JSON (None when it does not exist).
pub fn interpret(
    name: &str,
    store: Option<&serde_json::Value>,
) -> (MemoryState, Option<MemoryPeer>) {
    let Some(obj) = store else {
        return (
            MemoryState::NotReady(Problem {
                reason: "MemoryStoreNotFound",
                message: format!(
                    "MemoryStore {name:?} (memory.storeRef) does not exist in this namespace: create it or fix memory.storeRef"
                ),
            }),
            None,
        );
    };
    let status = &obj["status"];
    let port = status["endpoint"]["port"]
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
        .unwrap_or(DEFAULT_DB_PORT);
    let ready = status["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == "Ready"));
    let state = match ready {
        Some(c) if c["status"] == "True" => MemoryState::Ready {
            secret_name: status["endpoint"]["secretName"]
                .as_str()
                .map(str::to_string),
        },
        Some(c) => MemoryState::NotReady(Problem {
            reason: "MemoryStoreNotReady",
            message: format!(
                "MemoryStore {name:?} is not Ready ({}): {}",
                c["reason"].as_str().unwrap_or(""),
                c["message"].as_str().unwrap_or("")
            ),
        }),
        None => MemoryState::NotReady(Problem {
            reason: "MemoryStorePending",
            message: format!("MemoryStore {name:?} has not reported Ready yet"),
        }),
    };
    (state, locate(name, obj, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_pending_ready() {
        assert!(matches!(
            interpret("m", None).0,
            MemoryState::NotReady(Problem {
                reason: "MemoryStoreNotFound",
                ..
            })
        ));
        assert_eq!(interpret("m", None).1, None, "no store: no memory egress");
        // A managed store's pods are known before it reports anything.
        let pending = serde_json::json!({"spec": {"mode": "managed"}, "status": {}});
        let peer = interpret("m", Some(&pending)).1.unwrap();
        assert_eq!(peer.port, 5432);
        assert!(
            matches!(&peer.to, MemoryDestination::Pods(l) if l["aienv.orchestr8.io/store"] == "m")
        );
        let ready = serde_json::json!({"spec": {"mode": "external"}, "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "endpoint": {"host": "10.1.2.3", "port": 6432, "secretName": "m-conn"}}});
        let (s, peer) = interpret("m", Some(&ready));
        assert_eq!(
            peer,
            Some(MemoryPeer {
                port: 6432,
                to: MemoryDestination::Cidr("10.1.2.3/32".into())
            })
        );
        let cnpg = serde_json::json!({"spec": {"mode": "cloudnativepg"}, "status": {}});
        let peer = interpret("m", Some(&cnpg)).1.unwrap();
        assert!(matches!(&peer.to, MemoryDestination::Pods(l) if l["cnpg.io/cluster"] == "m-pg"));
        assert_eq!(
            s,
            MemoryState::Ready {
                secret_name: Some("m-conn".into())
            }
        );
    }
}
