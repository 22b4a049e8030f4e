//! Children an object owned before and no longer wants are deleted by label.

use std::fmt::Debug;

use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, ListParams},
};
use serde::de::DeserializeOwned;

use super::error::{Error, Result};

/// Delete every object in `api` matching `label_selector` whose name is not in `keep`. Returns the
/// names deleted. Objects already gone are not an error.
pub async fn delete_unwanted<K>(
    api: &Api<K>,
    label_selector: &str,
    keep: &[String],
) -> Result<Vec<String>>
where
    K: Resource + Clone + DeserializeOwned + Debug,
{
    let list = api
        .list_metadata(&ListParams::default().labels(label_selector))
        .await?;
    let mut deleted = Vec::new();
    for obj in list.items {
        let name = obj.name_any();
        if keep.contains(&name) {
            continue;
        }
        match api.delete(&name, &DeleteParams::background()).await {
            Ok(_) => deleted.push(name),
            Err(kube::Error::Api(s)) if s.code == 404 => {}
            Err(e) => return Err(Error::Kube(e)),
        }
    }
    Ok(deleted)
}
