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
    .into_iter()
    .map(known_formats_only)
    .collect()
}

/// schemars marks unsigned integers with formats like `uint32`, which the API server does not know
/// (`kubectl apply` warns `unrecognized format`). Drop them and keep their range as
/// minimum/maximum, which the API server does enforce.
fn known_formats_only(crd: CustomResourceDefinition) -> CustomResourceDefinition {
    fn walk(v: &mut serde_json::Value) {
        match v {
            serde_json::Value::Object(map) => {
                let max = match map.get("format").and_then(|f| f.as_str()) {
                    Some("uint8") => Some(Some(u64::from(u8::MAX))),
                    Some("uint16") => Some(Some(u64::from(u16::MAX))),
                    Some("uint32") => Some(Some(u64::from(u32::MAX))),
                    Some("uint64" | "uint") => Some(None),
                    _ => None,
                };
                if let Some(max) = max {
                    map.remove("format");
                    map.entry("minimum").or_insert(0.0.into());
                    if let Some(max) = max {
                        map.entry("maximum").or_insert((max as f64).into());
                    }
                }
                map.values_mut().for_each(walk);
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(walk),
            _ => {}
        }
    }
    let mut v = serde_json::to_value(&crd).expect("a CRD serializes");
    walk(&mut v);
    serde_json::from_value(v).expect("a CRD with fewer formats still deserializes")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_carry_only_formats_the_api_server_knows() {
        let yaml = all_yaml().unwrap();
        // The formats kube-apiserver recognises that our types produce.
        let known = ["date-time", "int32", "int64", "double", "byte"];
        for line in yaml
            .lines()
            .filter(|l| l.trim_start().starts_with("format:"))
        {
            let f = line.trim_start().trim_start_matches("format:").trim();
            assert!(known.contains(&f), "unknown format {f:?}");
        }
        // The bound of an unsigned field survives as a minimum.
        let crd = all()
            .into_iter()
            .find(|c| c.spec.names.kind == "LlmProfile")
            .unwrap();
        let v = serde_json::to_value(&crd).unwrap();
        let latency = v
            .pointer(
                "/spec/versions/0/schema/openAPIV3Schema/properties/status/properties/latencyMs",
            )
            .unwrap();
        assert_eq!(latency["minimum"], 0.0);
        assert!(latency.get("format").is_none());
    }
}
