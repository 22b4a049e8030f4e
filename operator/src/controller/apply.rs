//! Server-side apply with a field manager per controller.

use std::fmt::Debug;

use kube::{
    Api, Resource,
    api::{Patch, PatchParams},
};
use serde::{Serialize, de::DeserializeOwned};

use super::error::{Error, Result};

/// Field manager of each controller; also what ArgoCD's `managedFieldsManagers` names.
pub mod manager {
    pub const LLM_PROFILE: &str = "aienv/llmprofile";
    pub const AI_ENVIRONMENT: &str = "aienv/aienvironment";
    pub const ROLLOUT: &str = "aienv/rollout";
    pub const MEMORY_STORE: &str = "aienv/memorystore";
    pub const BACKUP_SCHEDULE: &str = "aienv/backupschedule";
}

/// Apply the status of `K` named `name`, owning exactly the fields in `status`.
pub async fn apply_status<K, S>(api: &Api<K>, manager: &str, name: &str, status: &S) -> Result<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
    S: Serialize,
{
    let patch = serde_json::json!({
        "apiVersion": K::api_version(&()),
        "kind": K::kind(&()),
        "status": status,
    });
    api.patch_status(
        name,
        &PatchParams::apply(manager).force(),
        &Patch::Apply(&patch),
    )
    .await
    .map_err(Error::Kube)
}

/// Apply a whole object (children), forcing ownership of the fields it sets.
pub async fn apply<K>(api: &Api<K>, manager: &str, obj: &K) -> Result<K>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    let name = obj
        .meta()
        .name
        .as_deref()
        .ok_or(Error::MissingField("metadata.name"))?;
    api.patch(
        name,
        &PatchParams::apply(manager).force(),
        &Patch::Apply(obj),
    )
    .await
    .map_err(Error::Kube)
}

/// Create `obj` unless an object of that name exists; never overwrites. Returns the object as
/// stored (the existing one, or the one just created). For values generated once, like passwords.
pub async fn create_if_absent<K>(api: &Api<K>, manager: &str, obj: &K) -> Result<K>
where
    K: Resource + Clone + DeserializeOwned + Serialize + Debug,
{
    let name = obj
        .meta()
        .name
        .as_deref()
        .ok_or(Error::MissingField("metadata.name"))?;
    if let Some(existing) = api.get_opt(name).await? {
        return Ok(existing);
    }
    let pp = kube::api::PostParams {
        field_manager: Some(manager.to_string()),
        ..Default::default()
    };
    match api.create(&pp, obj).await {
        Ok(created) => Ok(created),
        // Someone (another replica, a restarted operator) created it first: theirs wins.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(api.get(name).await?),
        Err(e) => Err(Error::Kube(e)),
    }
}

/// An object of a child's name exists and this object does not control it. Force-applying over it
/// would take over a user's object, and the garbage collector would delete it with ours.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "{kind} {name:?} already exists and is not controlled by this {owner_kind} ({holder}): the operator does not take over objects it did not create. Move what it holds elsewhere and delete it (kubectl delete {} {name} -n {namespace}), or give this {owner_kind} another name",
    kind.to_lowercase()
)]
pub struct Conflict {
    pub kind: String,
    pub name: String,
    pub namespace: String,
    pub owner_kind: String,
    /// Who controls it instead, for the message.
    pub holder: String,
}
