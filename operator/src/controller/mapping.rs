//! Mapping a watched object (a Secret, a profile…) to the guarded objects that use it.

use kube::{
    Resource, ResourceExt,
    core::{DeserializeGuard, ObjectMeta},
    runtime::reflector::{ObjectRef, Store},
};

/// Objects in `store`, in `other`'s namespace, for which `uses(object, other_name)` holds.
/// Undecodable objects are skipped: they reference nothing we can read.
pub fn users_of<K>(
    store: &Store<DeserializeGuard<K>>,
    other: &ObjectMeta,
    uses: impl Fn(&K, &str) -> bool,
) -> Vec<ObjectRef<DeserializeGuard<K>>>
where
    K: Resource<DynamicType = ()> + Clone,
{
    let (Some(ns), Some(name)) = (other.namespace.as_deref(), other.name.as_deref()) else {
        return Vec::new();
    };
    store
        .state()
        .iter()
        .filter_map(|g| g.0.as_ref().ok())
        .filter(|o| o.namespace().as_deref() == Some(ns) && uses(o, name))
        .map(|o| ObjectRef::new(&o.name_any()).within(ns))
        .collect()
}
