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
