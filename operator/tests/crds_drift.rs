//! The committed crds/ must equal what the Rust types generate (`aienv crds --write crds`).

use std::path::Path;

#[test]
fn committed_crds_match_the_types() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds");
    let mut expected_files = Vec::new();
    for crd in aienv::crdgen::all() {
        let file = aienv::crdgen::file_name(&crd);
        let generated = aienv::crdgen::to_yaml(&crd).unwrap();
        let committed = std::fs::read_to_string(dir.join(&file)).unwrap_or_else(|e| {
            panic!("crds/{file} missing ({e}): run `cargo run -p aienv -- crds --write crds`")
        });
        assert!(
            committed == generated,
            "crds/{file} is out of date with the Rust types: run `cargo run -p aienv -- crds --write crds` and commit"
        );
        expected_files.push(file);
    }
    expected_files.sort();
    let mut present: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|f| f != KUSTOMIZATION)
        .collect();
    present.sort();
    assert_eq!(
        present, expected_files,
        "crds/ holds files no type generates"
    );

    // manifests/base and ArgoCD install crds/ through its kustomization: a CRD it leaves out
    // would never be installed.
    let text = std::fs::read_to_string(dir.join(KUSTOMIZATION)).unwrap();
    let kustomization: serde_json::Value = serde_saphyr::from_str(&text).unwrap();
    let mut listed: Vec<String> = kustomization["resources"]
        .as_array()
        .expect("crds/kustomization.yaml has no resources")
        .iter()
        .map(|r| r.as_str().unwrap().to_string())
        .collect();
    listed.sort();
    assert_eq!(
        listed, expected_files,
        "crds/kustomization.yaml must list exactly the CRD files"
    );
}

const KUSTOMIZATION: &str = "kustomization.yaml";

#[test]
fn every_crd_has_status_printer_columns_short_name_and_category() {
    for crd in aienv::crdgen::all() {
        let names = &crd.spec.names;
        assert_eq!(crd.spec.group, "aienv.orchestr8.io");
        assert_eq!(crd.spec.scope, "Namespaced");
        assert!(
            names.short_names.as_ref().is_some_and(|s| !s.is_empty()),
            "{}",
            names.kind
        );
        assert_eq!(
            names.categories.as_deref(),
            Some(&["ai".to_string()][..]),
            "{}",
            names.kind
        );
        let v = &crd.spec.versions[0];
        assert_eq!(v.name, "v1alpha1");
        assert!(
            v.subresources
                .as_ref()
                .and_then(|s| s.status.as_ref())
                .is_some()
        );
        let cols: Vec<&str> = v
            .additional_printer_columns
            .as_ref()
            .unwrap()
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        for want in ["Ready", "Reason", "Age"] {
            assert!(
                cols.contains(&want),
                "{} lacks printer column {want}",
                names.kind
            );
        }
    }
}
