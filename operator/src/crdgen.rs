//! CRD YAML generated from the Rust types (`aienv crds`); `crds/` holds the committed copy.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

use crate::api::{AiEnvironment, BackupSchedule, LlmProfile, MemoryStore};

/// Every CRD aienv installs.
pub fn all() -> Vec<CustomResourceDefinition> {
    vec![
        AiEnvironment::crd(),
        BackupSchedule::crd(),
        LlmProfile::crd(),
        MemoryStore::crd(),
    ]
}

/// The committed file name of a CRD, e.g. `llmprofiles.aienv.orchestr8.io.yaml`.
pub fn file_name(crd: &CustomResourceDefinition) -> String {
    format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or("unnamed"))
}

/// One CRD as YAML.
pub fn to_yaml(crd: &CustomResourceDefinition) -> Result<String, serde_saphyr::SerializeError> {
    serde_saphyr::to_string(crd)
}

/// All CRDs as one multi-document YAML stream (what `aienv crds` prints).
pub fn all_yaml() -> Result<String, serde_saphyr::SerializeError> {
    let mut out = String::new();
    for crd in all() {
        out.push_str("---\n");
        out.push_str(&to_yaml(&crd)?);
    }
    Ok(out)
}
