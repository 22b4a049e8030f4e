//! Every sample AiEnvironment renders a working config for each of its harnesses, from its
//! profile and from every fallback (the samples are what new users apply first).

use std::collections::BTreeMap;

use aienv::{
    api::{ai_environment::AiEnvironment, llm_profile::LlmProfile},
    controllers::{ai_environment::render, llm_profile::endpoints},
};

#[test]
fn every_sample_environment_renders_each_harness_from_each_of_its_profiles() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../manifests/samples");
    let mut profiles = BTreeMap::new();
    let mut envs = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let docs: Vec<serde_json::Value> = serde_saphyr::from_str_multiple(&text).unwrap();
        for doc in docs {
            match doc["kind"].as_str() {
                Some("LlmProfile") => {
                    let p: LlmProfile = serde_json::from_value(doc).unwrap();
                    profiles.insert(p.metadata.name.clone().unwrap(), p);
                }
                Some("AiEnvironment") => {
                    envs.push(serde_json::from_value::<AiEnvironment>(doc).unwrap())
                }
                _ => {}
            }
        }
    }
    assert!(
        !envs.is_empty() && profiles.len() >= 4,
        "samples not found in {dir:?}"
    );
    for env in &envs {
        let llm = &env.spec.llm;
        for name in std::iter::once(&llm.profile_ref).chain(&llm.fallbacks) {
            let p = profiles
                .get(name)
                .unwrap_or_else(|| panic!("sample profile {name} missing"));
            if let Err(e) = render::check_harnesses(&llm.harnesses, &endpoints::resolve(&p.spec)) {
                panic!("sample environment with profile {name}: {}", e.message);
            }
        }
    }
}
