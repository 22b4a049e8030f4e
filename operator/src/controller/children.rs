//! The children of one object, applied as a set (as Stackable's `ClusterResources`): `add` stamps
//! the common labels, the controller ownerReference and a spec hash, and skips a child the server
//! already holds exactly; `finish` deletes what this object applied before and no longer wants —
//! selected by label *and* controlled by this object's UID, never by label alone (another operator,
//! CloudNativePG for one, may carry our labels onto objects of its own).

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::{
    Api, Client, Resource,
    api::{ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams},
};
use serde::{Serialize, de::DeserializeOwned};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{
    apply::Conflict,
    error::{Error, Result},
    labels::{LABEL_MANAGED_BY, MANAGED_BY, SPEC_HASH_ANNOTATION},
    metrics::Metrics,
};

/// Whether a child goes with its owner (garbage-collected) or outlives it (data kept under
/// `deletionPolicy: Retain`). A child that outlives carries no ownerReference, so `finish` never
/// deletes it; a later owner of the same name, labelled the same, takes it over.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifetime {
    Owned,
    Outlives,
}

/// What the server holds of one kind, listed once per reconcile.
struct Listed {
    api: Api<DynamicObject>,
    kind: String,
    by_name: BTreeMap<String, Value>,
    wanted: BTreeSet<String>,
}

impl Listed {
    /// The object of that name: from the list, or — when the list (by this owner's label) lacks
    /// it — from the server, so an unlabelled object of a user's is seen and never overwritten.
    async fn existing(&mut self, name: &str) -> Result<Option<Value>> {
        if let Some(v) = self.by_name.get(name) {
            return Ok(Some(v.clone()));
        }
        match self.api.get_opt(name).await? {
            Some(o) => Ok(Some(serde_json::to_value(o)?)),
            None => Ok(None),
        }
    }
}

pub struct ChildSet<'a> {
    client: Client,
    namespace: String,
    owner: OwnerReference,
    /// The label every child of this owner carries (e.g. `aienv.orchestr8.io/store=<name>`).
    owner_label: (&'static str, String),
    manager: &'static str,
    controller: &'static str,
    metrics: &'a Metrics,
    kinds: BTreeMap<String, Listed>,
}

impl<'a> ChildSet<'a> {
    pub fn new(
        client: Client,
        namespace: &str,
        owner: OwnerReference,
        owner_label: &'static str,
        manager: &'static str,
        controller: &'static str,
        metrics: &'a Metrics,
    ) -> Self {
        let value = owner.name.clone();
        Self {
            client,
            namespace: namespace.to_string(),
            owner,
            owner_label: (owner_label, value),
            manager,
            controller,
            metrics,
            kinds: BTreeMap::new(),
        }
    }

    /// The label selector of this owner's children.
    pub fn selector(&self) -> String {
        format!("{}={}", self.owner_label.0, self.owner_label.1)
    }

    /// Apply `obj` unless the server holds it exactly; returns the object as stored, or the
    /// conflict when an object of that name exists that this owner does not control.
    pub async fn add<K>(&mut self, obj: K, lifetime: Lifetime) -> Result<Result<K, Conflict>>
    where
        K: Resource<DynamicType = ()> + Serialize + DeserializeOwned,
    {
        let stored = self
            .add_value(
                &ApiResource::erase::<K>(&()),
                serde_json::to_value(&obj)?,
                lifetime,
            )
            .await?;
        Ok(match stored {
            Ok(v) => Ok(serde_json::from_value(v)?),
            Err(c) => Err(c),
        })
    }

    /// `add` for a kind without Rust types (another operator's CRD). A kind the API server does
    /// not serve is `Error::Kube` with code 404.
    pub async fn add_dynamic(
        &mut self,
        ar: &ApiResource,
        obj: DynamicObject,
        lifetime: Lifetime,
    ) -> Result<Result<DynamicObject, Conflict>> {
        let stored = self
            .add_value(ar, serde_json::to_value(&obj)?, lifetime)
            .await?;
        Ok(match stored {
            Ok(v) => Ok(serde_json::from_value(v)?),
            Err(c) => Err(c),
        })
    }

    /// The conflict `add` would report for the child `name` of kind `K`, checked before anything
    /// is applied (a Secret of a user's that holds the name of one the owner will write).
    pub async fn conflict<K>(&mut self, name: &str) -> Result<Option<Conflict>>
    where
        K: Resource<DynamicType = ()>,
    {
        let ar = ApiResource::erase::<K>(&());
        let (owner, label, namespace) = (
            self.owner.clone(),
            self.owner_label.clone(),
            self.namespace.clone(),
        );
        let listed = self.listed(&ar).await?;
        Ok(listed.existing(name).await?.and_then(|existing| {
            may_write(
                &existing,
                &owner,
                (label.0, &label.1),
                name,
                &namespace,
                &ar,
            )
            .err()
        }))
    }

    /// Declare a kind this owner may have children of, so `finish` removes them even when none
    /// is added this time (a feature switched off).
    pub async fn expect<K>(&mut self) -> Result<()>
    where
        K: Resource<DynamicType = ()>,
    {
        self.listed(&ApiResource::erase::<K>(&())).await.map(|_| ())
    }

    /// Keep the child `name` of kind `K` as the server holds it, without applying: for children
    /// that cannot change once made (a Job's pod template) and stay until they expire.
    pub async fn keep<K>(&mut self, name: &str) -> Result<()>
    where
        K: Resource<DynamicType = ()>,
    {
        let listed = self.listed(&ApiResource::erase::<K>(&())).await?;
        listed.wanted.insert(name.to_string());
        Ok(())
    }

    /// Delete the children of every kind seen that this owner applied before and no longer
    /// wants. Returns `kind/name` of each deleted.
    pub async fn finish(self) -> Result<Vec<String>> {
        let uid = self.owner.uid.clone();
        let mut deleted = Vec::new();
        for listed in self.kinds.values() {
            for (name, obj) in &listed.by_name {
                if listed.wanted.contains(name) || !applied_by_set(obj, &uid) {
                    continue;
                }
                match listed.api.delete(name, &DeleteParams::background()).await {
                    Ok(_) => deleted.push(format!("{}/{name}", listed.kind)),
                    Err(kube::Error::Api(s)) if s.code == 404 => {}
                    Err(e) => return Err(Error::Kube(e)),
                }
            }
        }
        self.metrics
            .child_writes_inc(self.controller, deleted.len() as u64);
        Ok(deleted)
    }

    async fn listed(&mut self, ar: &ApiResource) -> Result<&mut Listed> {
        let key = format!("{}/{}", ar.api_version, ar.kind);
        if !self.kinds.contains_key(&key) {
            let api: Api<DynamicObject> =
                Api::namespaced_with(self.client.clone(), &self.namespace, ar);
            let list = api
                .list(&ListParams::default().labels(&self.selector()))
                .await?;
            let by_name = list
                .items
                .into_iter()
                .filter_map(|o| {
                    let name = o.metadata.name.clone()?;
                    let mut v = serde_json::to_value(o).ok()?;
                    // Items of a list carry no apiVersion and kind of their own.
                    v["apiVersion"] = ar.api_version.clone().into();
                    v["kind"] = ar.kind.clone().into();
                    Some((name, v))
                })
                .collect();
            self.kinds.insert(
                key.clone(),
                Listed {
                    api,
                    kind: ar.kind.clone(),
                    by_name,
                    wanted: BTreeSet::new(),
                },
            );
        }
        Ok(self.kinds.get_mut(&key).expect("inserted above"))
    }

    async fn add_value(
        &mut self,
        ar: &ApiResource,
        obj: Value,
        lifetime: Lifetime,
    ) -> Result<Result<Value, Conflict>> {
        let desired = stamp(
            obj,
            ar,
            &self.owner,
            (self.owner_label.0, &self.owner_label.1),
            lifetime,
        );
        let name = desired["metadata"]["name"]
            .as_str()
            .ok_or(Error::MissingField("metadata.name"))?
            .to_string();
        let (owner, label, manager) = (self.owner.clone(), self.owner_label.clone(), self.manager);
        let namespace = self.namespace.clone();
        let listed = self.listed(ar).await?;
        listed.wanted.insert(name.clone());
        if let Some(existing) = listed.existing(&name).await? {
            if let Err(c) = may_write(
                &existing,
                &owner,
                (label.0, &label.1),
                &name,
                &namespace,
                ar,
            ) {
                return Ok(Err(c));
            }
            match difference(&existing, &desired) {
                None => return Ok(Ok(existing)),
                Some(path) => {
                    tracing::debug!(kind = %ar.kind, %name, field = %path, "child differs; applying")
                }
            }
        }
        let stored = listed
            .api
            .patch(
                &name,
                &PatchParams::apply(manager).force(),
                &Patch::Apply(&desired),
            )
            .await?;
        let stored = serde_json::to_value(stored)?;
        listed.by_name.insert(name, stored.clone());
        self.metrics.child_writes_inc(self.controller, 1);
        Ok(Ok(stored))
    }
}

/// The object as it is applied: common labels, the owner's label, the controller ownerReference
/// (unless it outlives its owner), `stringData` folded into `data` (the server stores only
/// `data`, so a desired `stringData` would never compare equal) and the hash of all of it. Pure.
fn stamp(
    mut obj: Value,
    ar: &ApiResource,
    owner: &OwnerReference,
    label: (&str, &str),
    lifetime: Lifetime,
) -> Value {
    obj["apiVersion"] = ar.api_version.clone().into();
    obj["kind"] = ar.kind.clone().into();
    if ar.kind == "Secret"
        && ar.group.is_empty()
        && let Some(Value::Object(string_data)) =
            obj.as_object_mut().and_then(|o| o.remove("stringData"))
    {
        use base64::Engine;
        let data = obj["data"].as_object_mut().cloned().unwrap_or_default();
        let mut data = data;
        for (k, v) in string_data {
            let text = v.as_str().unwrap_or_default();
            data.insert(
                k,
                base64::engine::general_purpose::STANDARD
                    .encode(text)
                    .into(),
            );
        }
        obj["data"] = Value::Object(data);
    }
    let meta = &mut obj["metadata"];
    meta["labels"][LABEL_MANAGED_BY] = MANAGED_BY.into();
    meta["labels"][label.0] = label.1.into();
    match lifetime {
        Lifetime::Owned => {
            meta["ownerReferences"] =
                serde_json::to_value(vec![owner]).expect("an OwnerReference serializes");
        }
        Lifetime::Outlives => {
            if let Some(m) = meta.as_object_mut() {
                m.remove("ownerReferences");
            }
        }
    }
    if let Some(m) = meta.as_object_mut()
        && let Some(Value::Object(a)) = m.get_mut("annotations")
    {
        a.remove(SPEC_HASH_ANNOTATION);
        if a.is_empty() {
            m.remove("annotations");
        }
    }
    let hash = hex::encode(Sha256::digest(obj.to_string()));
    obj["metadata"]["annotations"][SPEC_HASH_ANNOTATION] = hash.into();
    obj
}

/// The path of the first field `want` sets that `have` does not hold (None: `have` holds it
/// exactly; fields the server defaulted or others own may be extra; an empty map or list wanted
/// is satisfied by its absence). It goes into the log line saying why a child is applied again.
/// Pure.
fn difference(have: &Value, want: &Value) -> Option<String> {
    let empty = |v: &Value| match v {
        Value::Object(m) => m.is_empty(),
        Value::Array(a) => a.is_empty(),
        Value::Null => true,
        _ => false,
    };
    match (have, want) {
        (Value::Object(h), Value::Object(w)) => w.iter().find_map(|(k, wv)| match h.get(k) {
            Some(hv) => difference(hv, wv).map(|d| format!(".{k}{d}")),
            None if empty(wv) => None,
            None => Some(format!(".{k}")),
        }),
        (Value::Array(h), Value::Array(w)) if h.len() == w.len() => h
            .iter()
            .zip(w)
            .enumerate()
            .find_map(|(i, (hv, wv))| difference(hv, wv).map(|d| format!("[{i}]{d}"))),
        (_, Value::Null) => None,
        _ if have == want => None,
        _ => Some(String::new()),
    }
}

/// Whether the child's controller ownerReference is `uid`.
fn controller_uid(obj: &Value) -> Option<&str> {
    obj["metadata"]["ownerReferences"]
        .as_array()?
        .iter()
        .find(|r| r["controller"].as_bool() == Some(true))?["uid"]
        .as_str()
}

/// A child `finish` may delete: controlled by this owner and applied through a ChildSet (the
/// spec hash); generated-once Secrets such as passwords carry none and are never collected here.
fn applied_by_set(obj: &Value, uid: &str) -> bool {
    controller_uid(obj) == Some(uid)
        && !obj["metadata"]["annotations"][SPEC_HASH_ANNOTATION].is_null()
}

/// An existing object may be overwritten when this owner controls it, or when nobody controls it
/// and it carries this owner's label (a child that outlived an earlier owner of that name).
fn may_write(
    existing: &Value,
    owner: &OwnerReference,
    label: (&str, &str),
    name: &str,
    namespace: &str,
    ar: &ApiResource,
) -> Result<(), Conflict> {
    let controller = existing["metadata"]["ownerReferences"]
        .as_array()
        .and_then(|refs| {
            refs.iter()
                .find(|r| r["controller"].as_bool() == Some(true))
        });
    let labelled = existing["metadata"]["labels"][label.0].as_str() == Some(label.1);
    match controller {
        Some(c) if c["uid"].as_str() == Some(owner.uid.as_str()) => return Ok(()),
        None if labelled => return Ok(()),
        _ => {}
    }
    let field = |k: &str| controller.and_then(|c| c[k].as_str()).unwrap_or_default();
    Err(Conflict {
        kind: ar.kind.clone(),
        name: name.to_string(),
        namespace: namespace.to_string(),
        owner_kind: owner.kind.clone(),
        holder: match controller {
            Some(_) if field("kind") == owner.kind && field("name") == owner.name => {
                format!("its controller is an earlier {} of that name", owner.kind)
            }
            Some(_) => format!("its controller is {} {:?}", field("kind"), field("name")),
            None => "it has no controller and lacks this object's label".to_string(),
        },
    })
}

/// Whether the controller ownerReference among `refs` has `uid`.
pub fn controlled_by(refs: &[OwnerReference], uid: &str) -> bool {
    refs.iter()
        .any(|r| r.controller == Some(true) && r.uid == uid)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Secret;
    use serde_json::json;

    fn oref(uid: &str, controller: Option<bool>) -> OwnerReference {
        OwnerReference {
            api_version: "aienv.orchestr8.io/v1alpha1".into(),
            kind: "MemoryStore".into(),
            name: "mem".into(),
            uid: uid.into(),
            controller,
            block_owner_deletion: Some(true),
        }
    }

    fn secret_ar() -> ApiResource {
        ApiResource::erase::<Secret>(&())
    }

    #[test]
    fn only_the_controller_reference_counts() {
        assert!(controlled_by(&[oref("a", Some(true))], "a"));
        assert!(!controlled_by(&[oref("a", Some(false))], "a"));
        assert!(!controlled_by(&[oref("a", None)], "a"));
        assert!(!controlled_by(&[oref("b", Some(true))], "a"));
        assert!(!controlled_by(&[], "a"));
    }

    #[test]
    fn stamped_children_carry_labels_owner_hash_and_data_not_string_data() {
        let obj = json!({"metadata": {"name": "mem-app"}, "stringData": {"k": "v"}});
        let s = stamp(
            obj.clone(),
            &secret_ar(),
            &oref("u", Some(true)),
            ("store", "mem"),
            Lifetime::Owned,
        );
        assert_eq!(s["kind"], "Secret");
        assert_eq!(s["data"]["k"], "dg==");
        assert!(s.get("stringData").is_none());
        assert_eq!(s["metadata"]["labels"][LABEL_MANAGED_BY], MANAGED_BY);
        assert_eq!(s["metadata"]["labels"]["store"], "mem");
        assert_eq!(controller_uid(&s), Some("u"));
        let h = s["metadata"]["annotations"][SPEC_HASH_ANNOTATION].clone();
        assert!(h.as_str().is_some_and(|h| h.len() == 64));
        // Same input, same hash (restamping what was stamped too); other data, another hash.
        let again = stamp(
            s.clone(),
            &secret_ar(),
            &oref("u", Some(true)),
            ("store", "mem"),
            Lifetime::Owned,
        );
        assert_eq!(again["metadata"]["annotations"][SPEC_HASH_ANNOTATION], h);
        let other = json!({"metadata": {"name": "mem-app"}, "stringData": {"k": "w"}});
        let o = stamp(
            other,
            &secret_ar(),
            &oref("u", Some(true)),
            ("store", "mem"),
            Lifetime::Owned,
        );
        assert_ne!(o["metadata"]["annotations"][SPEC_HASH_ANNOTATION], h);

        let kept = stamp(
            obj,
            &secret_ar(),
            &oref("u", Some(true)),
            ("store", "mem"),
            Lifetime::Outlives,
        );
        assert!(kept["metadata"].get("ownerReferences").is_none());
        assert!(
            !applied_by_set(&kept, "u"),
            "a child that outlives is never collected"
        );
    }

    #[test]
    fn server_defaults_do_not_count_as_a_change_but_drift_does() {
        let want = json!({"spec": {"ports": [{"port": 5432}], "selector": {}}, "metadata": {"labels": {"a": "1"}}});
        let have = json!({"spec": {"ports": [{"port": 5432, "protocol": "TCP"}], "clusterIP": "10.0.0.1"},
                          "metadata": {"labels": {"a": "1", "b": "2"}, "resourceVersion": "9"}});
        assert_eq!(difference(&have, &want), None);
        let drifted = json!({"spec": {"ports": [{"port": 5433, "protocol": "TCP"}]}, "metadata": {"labels": {"a": "1"}}});
        assert_eq!(
            difference(&drifted, &want).as_deref(),
            Some(".spec.ports[0].port")
        );
        let extra_port = json!({"spec": {"ports": [{"port": 5432}, {"port": 1}]}, "metadata": {"labels": {"a": "1"}}});
        assert_eq!(
            difference(&extra_port, &want).as_deref(),
            Some(".spec.ports"),
            "a list the owner sets is its whole list"
        );
    }

    #[test]
    fn only_own_or_unclaimed_labelled_children_may_be_written() {
        let owner = oref("u1", Some(true));
        let ar = secret_ar();
        let with = |refs: Value, labels: Value| json!({"metadata": {"ownerReferences": refs, "labels": labels}});
        let ours = with(
            json!([{"uid": "u1", "controller": true, "kind": "MemoryStore", "name": "mem"}]),
            json!({}),
        );
        assert!(may_write(&ours, &owner, ("store", "mem"), "x", "ns", &ar).is_ok());
        let retained = with(Value::Null, json!({"store": "mem"}));
        assert!(may_write(&retained, &owner, ("store", "mem"), "x", "ns", &ar).is_ok());

        let users = with(Value::Null, json!({}));
        let c = may_write(&users, &owner, ("store", "mem"), "mem-app", "ns", &ar).unwrap_err();
        let msg = c.to_string();
        assert!(msg.contains("Secret \"mem-app\" already exists"), "{msg}");
        assert!(msg.contains("kubectl delete secret mem-app -n ns"), "{msg}");
        let earlier = with(
            json!([{"uid": "old", "controller": true, "kind": "MemoryStore", "name": "mem"}]),
            json!({"store": "mem"}),
        );
        let c = may_write(&earlier, &owner, ("store", "mem"), "x", "ns", &ar).unwrap_err();
        assert!(c.holder.contains("earlier MemoryStore"), "{}", c.holder);
        let cnpg = with(
            json!([{"uid": "c", "controller": true, "kind": "Cluster", "name": "mem-pg"}]),
            json!({"store": "mem"}),
        );
        let c = may_write(&cnpg, &owner, ("store", "mem"), "x", "ns", &ar).unwrap_err();
        assert!(c.holder.contains("Cluster \"mem-pg\""), "{}", c.holder);
    }
}
