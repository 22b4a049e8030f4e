//! Fast tier: every admission case in tests/fixtures/cel-cases.yaml, evaluated locally against the
//! generated CRD schemas with kube's CEL implementation. The same cases run against a real
//! kube-apiserver in tests/tests/crds_admission.rs.

use aienv::crdgen;
use kube::core::cel::Validator;
use serde::Deserialize;

#[derive(Deserialize)]
struct Case {
    name: String,
    kind: String,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    tier: Option<String>,
    spec: serde_json::Value,
    /// Set for updates: the spec the object had before.
    #[serde(default, rename = "oldSpec")]
    old_spec: Option<serde_json::Value>,
}

const CASES: &str = include_str!("../../tests/fixtures/cel-cases.yaml");

fn schema_for(kind: &str) -> serde_json::Value {
    let crd = crdgen::all()
        .into_iter()
        .find(|c| c.spec.names.kind == kind)
        .unwrap_or_else(|| panic!("no CRD for kind {kind}"));
    serde_json::to_value(
        crd.spec.versions[0]
            .schema
            .as_ref()
            .unwrap()
            .open_api_v3_schema
            .as_ref()
            .unwrap(),
    )
    .unwrap()
}

#[test]
fn every_case_is_admitted_or_rejected_with_its_message() {
    let cases: Vec<Case> = serde_saphyr::from_str(CASES).expect("cel-cases.yaml parses");
    let validator = Validator::new();
    let mut failures = Vec::new();
    let mut checked = 0;
    for case in cases.iter().filter(|c| c.tier.as_deref() != Some("server")) {
        let object = |spec: &serde_json::Value| {
            serde_json::json!({
                "apiVersion": "aienv.orchestr8.io/v1alpha1",
                "kind": case.kind,
                "metadata": {"name": case.name, "namespace": "default"},
                "spec": spec,
            })
        };
        let old = case.old_spec.as_ref().map(object);
        let result = validator.validate(&schema_for(&case.kind), &object(&case.spec), old.as_ref());
        checked += 1;
        match (&case.error, result) {
            (None, Ok(())) => {}
            (None, Err(e)) => failures.push(format!("{}: expected accepted, got {e:?}", case.name)),
            (Some(want), Ok(())) => failures.push(format!(
                "{}: expected rejection {want:?}, was accepted",
                case.name
            )),
            (Some(want), Err(errs)) => {
                let messages: Vec<String> = errs.iter().map(|e| e.message.clone()).collect();
                if !messages.iter().any(|m| m.contains(want.as_str())) {
                    failures.push(format!(
                        "{}: expected {want:?}, got {messages:?}",
                        case.name
                    ));
                }
            }
        }
    }
    assert!(checked >= 25, "only {checked} cases checked");
    assert!(
        failures.is_empty(),
        "{} case(s) failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn each_rule_has_a_passing_and_a_failing_case() {
    // Every x-kubernetes-validations message in the CRDs must be exercised by at least one
    // rejected case, and every kind by at least one accepted case.
    let cases: Vec<Case> = serde_saphyr::from_str(CASES).unwrap();
    let yaml = crdgen::all_yaml().unwrap();
    let all: serde_json::Value = serde_json::to_value(crdgen::all()).unwrap();
    let mut messages = Vec::new();
    collect_messages(&all, &mut messages);
    assert!(
        messages.len() >= 12,
        "found only {} rules in {} bytes of CRDs",
        messages.len(),
        yaml.len()
    );
    for m in &messages {
        assert!(
            cases
                .iter()
                .any(|c| c.error.as_deref().is_some_and(|e| m.contains(e))),
            "no rejected case for the rule message {m:?}"
        );
    }
    for crd in crdgen::all() {
        let kind = crd.spec.names.kind;
        assert!(
            cases.iter().any(|c| c.kind == kind && c.error.is_none()),
            "no accepted case for {kind}"
        );
    }
}

fn collect_messages(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::Object(map) => {
            if let Some(serde_json::Value::Array(rules)) = map.get("x-kubernetes-validations") {
                for r in rules {
                    if let Some(m) = r.get("message").and_then(|m| m.as_str()) {
                        out.push(m.to_string());
                    }
                }
            }
            map.values().for_each(|x| collect_messages(x, out));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|x| collect_messages(x, out)),
        _ => {}
    }
}
