//! Finalizer bookkeeping: add or remove one finalizer without clobbering a concurrent change.

use std::fmt::Debug;

use kube::{
    Api, Resource,
    api::{Patch, PatchParams},
};
use serde::de::DeserializeOwned;

use super::error::{Error, Result};

/// Add `finalizer` to the object's finalizers if missing .
pub async fn add_finalizer<K>(api: &Api<K>, obj: &K, finalizer: &str) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let current = obj.meta().finalizers.clone().unwrap_or_default();
    if current.iter().any(|f| f == finalizer) {
        return Ok(());
    }
    let mut next = current;
    next.push(finalizer.to_string());
    patch_finalizers(api, obj, next).await
}

/// Remove `finalizer` from the object's finalizers if present.
pub async fn remove_finalizer<K>(api: &Api<K>, obj: &K, finalizer: &str) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let current = obj.meta().finalizers.clone().unwrap_or_default();
    if !current.iter().any(|f| f == finalizer) {
        return Ok(());
    }
    let next: Vec<String> = current
        .iter()
        .filter(|f| *f != finalizer)
        .cloned()
        .collect();
    patch_finalizers(api, obj, next).await
}

async fn patch_finalizers<K>(api: &Api<K>, obj: &K, next: Vec<String>) -> Result<()>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let name = obj
        .meta()
        .name
        .as_deref()
        .ok_or(Error::MissingField("metadata.name"))?;
    // The resourceVersion makes the merge patch conditional: a concurrent change yields 409 and a
    // retry instead of a clobbered list.
    let patch = serde_json::json!({
        "metadata": {"finalizers": next, "resourceVersion": obj.meta().resource_version},
    });
    match api
        .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(Error::Kube(e)),
    }
}
