//! The environment's MemoryStore, read generically (its Ready condition and status.endpoint), so
//! this controller does not depend on the rest of the MemoryStore schema.

use kube::{
    Api, Client,
    api::{ApiResource, DynamicObject},
};

use super::{netpol::DEFAULT_DB_PORT, status::MemoryState};
use crate::{
    api::{ai_environment::MemoryBinding, memory_store::MemoryStore},
    controller::Result,
    controllers::llm_profile::validate::Problem,
};

/// The memory condition, and the database port the NetworkPolicy opens (None without a store).
pub async fn observe(
    client: &Client,
    ns: &str,
    binding: Option<&MemoryBinding>,
) -> Result<(MemoryState, Option<u16>)> {
    let Some(b) = binding else {
        return Ok((MemoryState::NotConfigured, None));
    };
    let ar = ApiResource::erase::<MemoryStore>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns, &ar);
    let store = api.get_opt(&b.store_ref).await?;
    Ok(interpret(&b.store_ref, store.as_ref().map(|s| &s.data)))
}

/// Pure part: from the store's JSON (None when it does not exist).
pub fn interpret(name: &str, store: Option<&serde_json::Value>) -> (MemoryState, Option<u16>) {
    let Some(obj) = store else {
        return (
            MemoryState::NotReady(Problem {
                reason: "MemoryStoreNotFound",
                message: format!(
                    "MemoryStore {name:?} (memory.storeRef) does not exist in this namespace: create it or fix memory.storeRef"
                ),
            }),
            Some(DEFAULT_DB_PORT),
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
    (state, Some(port))
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
        let pending = serde_json::json!({"status": {}});
        assert_eq!(interpret("m", Some(&pending)).1, Some(5432));
        let ready = serde_json::json!({"status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "endpoint": {"host": "h", "port": 6432, "secretName": "m-conn"}}});
        let (s, port) = interpret("m", Some(&ready));
        assert_eq!(port, Some(6432));
        assert_eq!(
            s,
            MemoryState::Ready {
                secret_name: Some("m-conn".into())
            }
        );
    }
}
