//! Children an object owned before and no longer wants are deleted: selected by label *and*
//! controlled by that object's UID, never by label alone (another operator, CloudNativePG for
//! one, may carry our labels onto objects of its own).

use std::fmt::Debug;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{
    Api, Resource, ResourceExt,
    api::{DeleteParams, ListParams},
};
use serde::de::DeserializeOwned;

use super::error::{Error, Result};

/// Delete every object in `api` matching `label_selector`, whose controller ownerReference is
/// `owner_uid`, and whose name is not in `keep`. Returns the names deleted. Objects already gone
/// are not an error.
pub async fn delete_unwanted<K>(
    api: &Api<K>,
    label_selector: &str,
    owner_uid: &str,
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
        if keep.contains(&name) || !controlled_by(obj.owner_references(), owner_uid) {
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

/// Whether the controller ownerReference among `refs` has `uid`.
pub fn controlled_by(refs: &[OwnerReference], uid: &str) -> bool {
    refs.iter()
        .any(|r| r.controller == Some(true) && r.uid == uid)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oref(uid: &str, controller: Option<bool>) -> OwnerReference {
        OwnerReference {
            uid: uid.into(),
            controller,
            ..Default::default()
        }
    }

    #[test]
    fn only_the_controller_reference_counts() {
        assert!(controlled_by(&[oref("a", Some(true))], "a"));
        assert!(!controlled_by(&[oref("a", Some(false))], "a"));
        assert!(!controlled_by(&[oref("a", None)], "a"));
        assert!(!controlled_by(&[oref("b", Some(true))], "a"));
        assert!(!controlled_by(&[], "a"));
    }
}
