//! Deletion: with `deletionPolicy: Delete`, drop what lives outside Kubernetes objects before the
//! finalizer goes — the operator's tables (external mode; never the database itself) and the
//! PostgreSQL PVCs (managed mode). Works from the raw object when the spec cannot be decoded.

use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Secret};
use kube::{
    Api, Resource, ResourceExt,
    api::{ApiResource, DeleteParams, DynamicObject, ListParams},
    runtime::{controller::Action, events::EventType},
};
use tracing::{info, warn};

use super::{FINALIZER, State, children, connection};
use crate::{
    api::{common::SecretKeyRef, memory_store::MemoryStore},
    controller::{Error, Result, finalizer},
    memory::{
        schema,
        tenancy::{AgentLogin, StoreIdentity, StoreTarget},
    },
};

/// What deletion needs to know, read from a decoded or a raw object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    pub delete_data: bool,
    pub mode: String,
    pub external: Option<SecretKeyRef>,
    pub schema: Option<String>,
}

impl Plan {
    /// From the raw spec: anything but an explicit `deletionPolicy: Delete` retains data.
    pub fn from_raw(spec: &serde_json::Value) -> Self {
        let external = spec
            .pointer("/external/connectionSecretRef")
            .and_then(|r| serde_json::from_value::<SecretKeyRef>(r.clone()).ok());
        Self {
            delete_data: spec.get("deletionPolicy").and_then(|v| v.as_str()) == Some("Delete"),
            mode: spec
                .get("mode")
                .and_then(|v| v.as_str())
                .unwrap_or("managed")
                .to_string(),
            external,
            schema: spec
                .get("schema")
                .and_then(|v| v.as_str())
                .map(str::to_string),
        }
    }
}

/// Finalize a decoded store.
pub async fn finalize(store: &MemoryStore, ns: &str, state: &State) -> Result<Action> {
    let spec = serde_json::to_value(&store.spec)?;
    let plan = Plan::from_raw(&spec);
    let has = store.finalizers().iter().any(|f| f == FINALIZER);
    if has {
        let uid = store.metadata.uid.clone().unwrap_or_default();
        run(
            &plan,
            ns,
            &store.name_any(),
            &uid,
            &store.object_ref(&()),
            state,
        )
        .await?;
        let api: Api<MemoryStore> = Api::namespaced(state.ctx.client.clone(), ns);
        finalizer::remove_finalizer(&api, store, FINALIZER).await?;
    }
    state.pools.forget(ns, &store.name_any());
    Ok(Action::await_change())
}

/// Finalize a store whose spec cannot be decoded, from its raw JSON.
pub async fn finalize_raw(ns: &str, name: &str, state: &State) -> Result<Action> {
    let ar = ApiResource::erase::<MemoryStore>(&());
    let api: Api<DynamicObject> = Api::namespaced_with(state.ctx.client.clone(), ns, &ar);
    let Some(obj) = api.get_opt(name).await? else {
        return Ok(Action::await_change());
    };
    if obj.finalizers().iter().any(|f| f == FINALIZER) {
        let plan = Plan::from_raw(&obj.data["spec"]);
        let oref = obj.object_ref(&ar);
        let uid = obj.metadata.uid.clone().unwrap_or_default();
        run(&plan, ns, name, &uid, &oref, state).await?;
        finalizer::remove_finalizer(&api, &obj, FINALIZER).await?;
    }
    state.pools.forget(ns, name);
    Ok(Action::await_change())
}

async fn run(
    plan: &Plan,
    ns: &str,
    name: &str,
    uid: &str,
    oref: &k8s_openapi::api::core::v1::ObjectReference,
    state: &State,
) -> Result<()> {
    if !plan.delete_data {
        return Ok(());
    }
    let ctx = &state.ctx;
    match plan.mode.as_str() {
        "managed" => {
            let pvcs: Api<PersistentVolumeClaim> = Api::namespaced(ctx.client.clone(), ns);
            let n = delete_data_volumes(&pvcs, name).await?;
            info!(pvcs = n, "deleted the managed store's PVCs");
            ctx.event(
                oref,
                EventType::Normal,
                "DataDeleted",
                "Delete",
                format!("deletionPolicy Delete: deleted {n} PersistentVolumeClaim(s)"),
            )
            .await;
        }
        "external" => {
            let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
            let conn = match &plan.external {
                Some(r) => connection::from_external_secret(
                    r,
                    secrets.get_opt(&r.name).await?.as_ref(),
                    ns,
                ),
                None => Err(crate::controller::Problem {
                    reason: "InvalidSpec",
                    message: "no external.connectionSecretRef".into(),
                }),
            };
            let conn = match conn {
                Ok(c) => c,
                Err(p) => {
                    // Nothing can ever be connected to: say so and let the object go.
                    warn!(reason = p.reason, "cannot drop the memory tables");
                    ctx.event(
                        oref,
                        EventType::Warning,
                        "DataNotDeleted",
                        "Delete",
                        format!(
                            "deletionPolicy Delete, but the tables were not dropped: {}",
                            p.message
                        ),
                    )
                    .await;
                    return Ok(());
                }
            };
            let identity = StoreIdentity {
                namespace: ns.to_string(),
                name: name.to_string(),
                uid: uid.to_string(),
            };
            // The agent login only marks the role as the operator's to drop.
            let target = match StoreTarget::new(
                identity,
                &conn.database,
                plan.schema.as_deref(),
                Some(AgentLogin::Password(String::new())),
            ) {
                Ok(t) => t,
                Err(m) => {
                    ctx.event(oref, EventType::Warning, "DataNotDeleted", "Delete", m)
                        .await;
                    return Ok(());
                }
            };
            let pool = state
                .pools
                .get(ns, name, &conn, &target.schema)
                .map_err(Error::Database)?;
            let refused = schema::drop_owned(&pool, &target)
                .await
                .map_err(|e| Error::Database(e.to_string()))?;
            let what = format!(
                "tables {} and role {} on {}",
                schema::OWNED_TABLES.join(", "),
                target.agent_role,
                conn.display()
            );
            let (kind, reason, message) = match refused {
                schema::Dropped::All => (
                    EventType::Normal,
                    "DataDeleted",
                    format!(
                        "deletionPolicy Delete: dropped schema {} ({what})",
                        target.schema
                    ),
                ),
                schema::Dropped::KeptSchema(why) => (
                    EventType::Normal,
                    "DataDeleted",
                    format!(
                        "deletionPolicy Delete: dropped {what}; kept schema {}, which holds other objects: {why}",
                        target.schema
                    ),
                ),
                schema::Dropped::Refused(why) => (
                    EventType::Warning,
                    "DataNotDeleted",
                    format!("deletionPolicy Delete, but nothing was dropped: {why}"),
                ),
            };
            ctx.event(oref, kind, reason, "Delete", message).await;
        }
        // CloudNativePG: the owned Cluster is garbage-collected and CloudNativePG removes its
        // PVCs itself.
        _ => {}
    }
    Ok(())
}

/// The managed store's data volume: the StatefulSet controller makes `data-<store>-0` from the
/// claim template (owned by the StatefulSet, not by the store), so it is picked by that exact name
/// and the store label, never by the label alone.
async fn delete_data_volumes(pvcs: &Api<PersistentVolumeClaim>, store: &str) -> Result<usize> {
    let wanted = children::data_pvc_name(store);
    let list = pvcs
        .list_metadata(&ListParams::default().labels(&format!("{}={store}", children::LABEL_STORE)))
        .await?;
    let mut n = 0;
    for pvc in list.items.iter().filter(|p| p.name_any() == wanted) {
        match pvcs
            .delete(&pvc.name_any(), &DeleteParams::background())
            .await
        {
            Ok(_) => n += 1,
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(Error::Kube(e)),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raw_plan_defaults_to_retain() {
        let p = Plan::from_raw(&serde_json::json!({"mode": "external", "bogus": 1}));
        assert!(!p.delete_data);
        let p = Plan::from_raw(&serde_json::json!({
            "mode": "external", "deletionPolicy": "Delete",
            "external": {"connectionSecretRef": {"name": "pg", "key": "uri"}},
        }));
        assert!(p.delete_data);
        assert_eq!(p.external.unwrap().name, "pg");
    }
}
