//! Resolve what an environment references: its profiles (from the controller's cache) and the
//! active profile's key (read from its Secret, which no cache holds).

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, ResourceExt,
    core::DeserializeGuard,
    runtime::reflector::{ObjectRef, Store},
};

use crate::{
    api::{ai_environment::AiEnvironment, llm_profile::LlmProfile},
    controller::{Problem, Result},
    controllers::llm_profile::validate,
};

/// The environment's profile and fallbacks that exist and decode, by name.
pub fn profiles(
    env: &AiEnvironment,
    ns: &str,
    cache: &Store<DeserializeGuard<LlmProfile>>,
) -> BTreeMap<String, LlmProfile> {
    let llm = &env.spec.llm;
    std::iter::once(&llm.profile_ref)
        .chain(&llm.fallbacks)
        .filter_map(|n| {
            let g = cache.get(&ObjectRef::new(n).within(ns))?;
            let p = g.0.as_ref().ok()?.clone();
            Some((n.clone(), p))
        })
        .collect()
}

/// The API key of a profile (None for keyless profiles), or why it cannot be read.
pub async fn api_key(
    profile: &LlmProfile,
    secrets: &Api<Secret>,
    ns: &str,
) -> Result<Result<Option<String>, Problem>> {
    let Some(r) = profile
        .spec
        .auth
        .as_ref()
        .and_then(|a| a.secret_ref.as_ref())
    else {
        return Ok(Ok(None));
    };
    let pname = profile.name_any();
    let found = secrets.get_opt(&r.name).await?;
    Ok(
        // The same opt-in as the profile's: a key is never copied from a Secret that did not.
        match validate::api_key_value(r, found.as_ref(), ns) {
            Ok(v) => String::from_utf8(v).map(Some).map_err(|_| {
                Problem::new(
                    "SecretKeyInvalid",
                    format!(
                        "LlmProfile {pname:?}: key {:?} of Secret {:?} is not UTF-8 text: store the key itself",
                        r.key, r.name
                    ),
                )
            }),
            Err(p) => Err(Problem::new(
                p.reason,
                format!("LlmProfile {pname:?}: {}", p.message),
            )),
        },
    )
}
