//! Which environments a change of a watched object concerns. Lookups in the controller's caches;
//! no API call.

use std::collections::BTreeMap;

use kube::{
    Resource,
    core::{DeserializeGuard, ObjectMeta, SelectorExt},
    runtime::reflector::{ObjectRef, Store},
};

use super::{Guarded, selector};
use crate::{
    api::{ai_environment::AiEnvironment, llm_profile::LlmProfile},
    controller::mapping,
};

/// Environments naming the profile as profileRef or a fallback.
pub fn envs_using_profile(envs: &Store<Guarded>, profile: &ObjectMeta) -> Vec<ObjectRef<Guarded>> {
    mapping::users_of(envs, profile, |e: &AiEnvironment, name| {
        e.spec.llm.profile_ref == name || e.spec.llm.fallbacks.iter().any(|f| f == name)
    })
}

/// A profile's metadata, decodable or not.
pub fn profile_meta(p: &DeserializeGuard<LlmProfile>) -> ObjectMeta {
    match &p.0 {
        Ok(p) => p.metadata.clone(),
        Err(invalid) => invalid.metadata.clone(),
    }
}

/// The environment owning the Secret, and environments whose profiles read a key from it
/// (Secret → profiles → environments, both from caches).
pub fn envs_using_secret(
    envs: &Store<Guarded>,
    profiles: &Store<DeserializeGuard<LlmProfile>>,
    secret: &ObjectMeta,
) -> Vec<ObjectRef<Guarded>> {
    let Some(ns) = secret.namespace.as_deref() else {
        return Vec::new();
    };
    let mut out: Vec<ObjectRef<Guarded>> = secret
        .owner_references
        .iter()
        .flatten()
        .filter(|o| {
            o.kind == AiEnvironment::kind(&()) && o.api_version == AiEnvironment::api_version(&())
        })
        .map(|o| ObjectRef::new(&o.name).within(ns))
        .collect();
    let readers = mapping::users_of(profiles, secret, |p: &LlmProfile, name| {
        p.spec
            .auth
            .as_ref()
            .and_then(|a| a.secret_ref.as_ref())
            .is_some_and(|r| r.name == name)
    });
    for profile in readers {
        let meta = ObjectMeta {
            name: Some(profile.name.clone()),
            namespace: profile.namespace.clone(),
            ..Default::default()
        };
        out.extend(envs_using_profile(envs, &meta));
    }
    out
}

/// Environments whose agents.selector matches the workload's labels.
pub fn envs_selecting(envs: &Store<Guarded>, workload: &ObjectMeta) -> Vec<ObjectRef<Guarded>> {
    let empty = BTreeMap::new();
    let labels = workload.labels.as_ref().unwrap_or(&empty);
    mapping::users_of(envs, &in_namespace(workload), |e: &AiEnvironment, _| {
        selector(&e.spec.agents.selector).is_ok_and(|s| s.matches(labels))
    })
}

/// Environments using the MemoryStore.
pub fn envs_using_store(envs: &Store<Guarded>, store: &ObjectMeta) -> Vec<ObjectRef<Guarded>> {
    mapping::users_of(envs, store, |e: &AiEnvironment, name| {
        e.spec.memory.as_ref().is_some_and(|m| m.store_ref == name)
    })
}

/// `users_of` matches within the namespace of an object with a name; a workload's name plays no
/// part in whether it is selected.
fn in_namespace(meta: &ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        name: Some(meta.name.clone().unwrap_or_default()),
        namespace: meta.namespace.clone(),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::runtime::{reflector, watcher::Event};

    fn env(name: &str, yaml_spec: &str) -> Guarded {
        let e: AiEnvironment = serde_saphyr::from_str(&format!(
            "apiVersion: aienv.orchestr8.io/v1alpha1\nkind: AiEnvironment\nmetadata: {{name: {name}, namespace: team}}\nspec: {yaml_spec}\n"
        ))
        .unwrap();
        DeserializeGuard(Ok(e))
    }

    fn meta(ns: &str, name: &str, labels: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.into()),
            namespace: Some(ns.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            ..Default::default()
        }
    }

    #[test]
    fn each_watched_object_wakes_only_the_environments_using_it() {
        let (envs, mut writer) = reflector::store::<Guarded>();
        writer.apply_watcher_event(&Event::Apply(env(
            "dev",
            "{llm: {profileRef: claude, fallbacks: [qwen]}, agents: {selector: {matchLabels: {app: coder}}}, memory: {storeRef: mem}}",
        )));
        writer.apply_watcher_event(&Event::Apply(env(
            "ops",
            "{llm: {profileRef: qwen}, agents: {selector: {matchLabels: {app: ops}}}}",
        )));
        let names = |v: Vec<ObjectRef<Guarded>>| {
            let mut n: Vec<String> = v.into_iter().map(|r| r.name).collect();
            n.sort();
            n
        };
        assert_eq!(
            names(envs_using_profile(&envs, &meta("team", "qwen", &[]))),
            ["dev", "ops"]
        );
        assert_eq!(
            names(envs_using_profile(&envs, &meta("team", "claude", &[]))),
            ["dev"]
        );
        assert!(envs_using_profile(&envs, &meta("other", "qwen", &[])).is_empty());
        assert_eq!(
            names(envs_selecting(
                &envs,
                &meta("team", "x", &[("app", "coder")])
            )),
            ["dev"]
        );
        assert!(envs_selecting(&envs, &meta("team", "x", &[("app", "web")])).is_empty());
        assert_eq!(
            names(envs_using_store(&envs, &meta("team", "mem", &[]))),
            ["dev"]
        );
    }
}
