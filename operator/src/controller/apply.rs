//! Server-side apply with a field manager per controller.

use std::fmt::Debug;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
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
    pub kind: &'static str,
    pub name: String,
    pub namespace: String,
    pub owner_kind: String,
    /// Who controls it instead, for the message.
    pub holder: String,
}

/// Whether the child `kind`/`name` may be written for `owner`: it is absent, or its controller
/// ownerReference has the owner's UID. Pure.
pub fn check_controlled(
    kind: &'static str,
    name: &str,
    namespace: &str,
    existing: Option<&ObjectMeta>,
    owner: &k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference,
) -> Result<(), Conflict> {
    let Some(meta) = existing else {
        return Ok(());
    };
    let controller = meta
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true));
    if controller.is_some_and(|c| c.uid == owner.uid) {
        return Ok(());
    }
    Err(Conflict {
        kind,
        name: name.to_string(),
        namespace: namespace.to_string(),
        owner_kind: owner.kind.clone(),
        holder: match controller {
            Some(c) if c.kind == owner.kind && c.name == owner.name => {
                format!("its controller is an earlier {} of that name", c.kind)
            }
            Some(c) => format!("its controller is {} {:?}", c.kind, c.name),
            None => "it has no controller".to_string(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    fn owner(uid: &str) -> OwnerReference {
        OwnerReference {
            api_version: "aienv.orchestr8.io/v1alpha1".into(),
            kind: "AiEnvironment".into(),
            name: "dev".into(),
            uid: uid.into(),
            controller: Some(true),
            block_owner_deletion: Some(true),
        }
    }

    #[test]
    fn only_absent_or_own_children_may_be_written() {
        let ours = owner("u1");
        assert!(check_controlled("Secret", "dev-llm", "ns", None, &ours).is_ok());
        let mut meta = ObjectMeta {
            owner_references: Some(vec![owner("u1")]),
            ..Default::default()
        };
        assert!(check_controlled("Secret", "dev-llm", "ns", Some(&meta), &ours).is_ok());

        let user_made = ObjectMeta::default();
        let c = check_controlled("Secret", "dev-llm", "ns", Some(&user_made), &ours).unwrap_err();
        let msg = c.to_string();
        assert!(msg.contains("Secret \"dev-llm\" already exists"), "{msg}");
        assert!(msg.contains("it has no controller"), "{msg}");
        assert!(msg.contains("kubectl delete secret dev-llm -n ns"), "{msg}");

        // Owned, but not as controller; or controlled by a deleted namesake.
        meta.owner_references.as_mut().unwrap()[0].controller = None;
        assert!(check_controlled("Secret", "dev-llm", "ns", Some(&meta), &ours).is_err());
        meta.owner_references = Some(vec![owner("old-uid")]);
        let c = check_controlled("Secret", "dev-llm", "ns", Some(&meta), &ours).unwrap_err();
        assert!(c.holder.contains("earlier AiEnvironment"), "{}", c.holder);
    }
}
