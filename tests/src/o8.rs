//! The rules orchestr8's `o8 module validate` applies to a module file (`o8-module.yaml`),
//! written down here so a test can hold aienv's module file to each of them. The published `o8`
//! tool itself is not installed: a release of its PyPI package is known to be malicious.

use std::path::Path;

use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    /// `o8 module validate` fails.
    Error,
    /// Reported; the module still validates.
    Warning,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub severity: Severity,
    pub message: String,
}

const TIERS: [&str; 4] = ["core", "standard", "custom", "experimental"];
const DEPLOYMENT_TYPES: [&str; 4] = ["helm", "kustomize", "raw", "operator"];

/// `major.minor.patch`, an optional leading `v` and `-prerelease` of word characters and dots.
fn is_semver(v: &str) -> bool {
    let v = v.strip_prefix('v').unwrap_or(v);
    let (core, pre) = match v.split_once('-') {
        Some((c, p)) => (c, Some(p)),
        None => (v, None),
    };
    let parts: Vec<&str> = core.split('.').collect();
    parts.len() == 3
        && parts
            .iter()
            .all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()))
        && pre.is_none_or(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_alphanumeric() || c == '_' || c == '.')
        })
}

fn truthy(v: &Value, default: bool) -> bool {
    v.as_bool().unwrap_or(default)
}

fn present(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::String(s) => !s.is_empty(),
        Value::Object(m) => !m.is_empty(),
        Value::Array(a) => !a.is_empty(),
        _ => true,
    }
}

/// Everything o8 would report about `module`, a module file whose directory is `root`.
pub fn findings(module: &Value, root: &Path) -> Vec<Finding> {
    let mut out = Vec::new();
    let mut report = |severity, message: String| out.push(Finding { severity, message });
    use Severity::{Error, Warning};

    for field in ["apiVersion", "kind", "metadata", "spec"] {
        if module.get(field).is_none() {
            report(Error, format!("missing required field {field}"));
        }
    }
    if module["apiVersion"] != "orchestr8.platform/v1alpha1" {
        report(
            Error,
            format!("invalid apiVersion {}", module["apiVersion"]),
        );
    }
    if module["kind"] != "ModuleSpecification" {
        report(Error, format!("invalid kind {}", module["kind"]));
    }

    let spec = &module["spec"];
    let m = &spec["module"];
    for field in ["name", "version", "tier"] {
        if !present(&m[field]) {
            report(Error, format!("missing required module field {field}"));
        }
    }
    if let Some(tier) = m["tier"].as_str()
        && !TIERS.contains(&tier)
    {
        report(Warning, format!("invalid tier {tier}"));
    }
    if let Some(version) = m["version"].as_str()
        && !is_semver(version)
    {
        report(Warning, format!("invalid version format {version}"));
    }

    let d = &spec["deployment"];
    if !present(d) {
        report(Error, "missing deployment configuration".into());
    } else {
        let kind = d["type"].as_str().unwrap_or_default();
        if !DEPLOYMENT_TYPES.contains(&kind) {
            report(Error, format!("invalid deployment type {}", d["type"]));
        }
        match d["path"].as_str().filter(|p| !p.is_empty()) {
            None => report(Error, "missing deployment path".into()),
            Some(path) => {
                let dir = root.join(path);
                let marker = match kind {
                    "helm" => Some(dir.join("Chart.yaml")),
                    "kustomize" if dir.join("base/kustomization.yaml").exists() => None,
                    "kustomize" => Some(dir.join("kustomization.yaml")),
                    _ => None,
                };
                if let Some(marker) = marker
                    && !marker.exists()
                {
                    report(Error, format!("{} not found", marker.display()));
                }
            }
        }
    }

    let testing = &spec["testing"];
    if !present(testing) {
        report(Warning, "missing testing configuration".into());
    } else if !present(&testing["e2e"]) {
        report(Error, "E2E testing configuration is required".into());
    } else {
        let e2e = &testing["e2e"];
        if e2e["framework"] != "stagehand" {
            report(
                Warning,
                format!("non-standard E2E framework {}", e2e["framework"]),
            );
        }
        match e2e["path"].as_str() {
            None => report(Warning, "E2E test path not specified".into()),
            Some(p) if !root.join(p).exists() => {
                report(Warning, format!("E2E test path {p} not found"))
            }
            Some(_) => {}
        }
    }

    let req = &spec["requirements"];
    if !present(req) {
        report(Warning, "missing requirements section".into());
    } else {
        let auth = &req["authentication"];
        if truthy(&auth["enabled"], true) && !present(&auth["clientId"]) {
            report(
                Warning,
                "authentication enabled but clientId not specified".into(),
            );
        }
        if !truthy(&req["networking"]["networkPolicies"], true) {
            report(Warning, "NetworkPolicies disabled".into());
        }
    }

    let sec = &spec["security"];
    if !present(sec) {
        report(Warning, "no security configuration".into());
    } else {
        if !truthy(&sec["podSecurityContext"]["runAsNonRoot"], true) {
            report(Error, "pod configured to run as root".into());
        }
        let c = &sec["containerSecurityContext"];
        if truthy(&c["allowPrivilegeEscalation"], false) {
            report(Error, "privilege escalation allowed".into());
        }
        if !truthy(&c["readOnlyRootFilesystem"], true) {
            report(Warning, "root filesystem is writable".into());
        }
        let drops_all = c["capabilities"]["drop"]
            .as_array()
            .is_some_and(|d| d.iter().any(|x| x == "ALL"));
        if !drops_all {
            report(Warning, "not dropping ALL capabilities".into());
        }
        if truthy(&sec["serviceAccount"]["automountToken"], false) {
            report(Warning, "service account token automount enabled".into());
        }
        if sec["secrets"]["provider"] == "manual" {
            report(Warning, "manual secret management".into());
        }
    }
    if !truthy(&spec["compliance"]["securityScanning"]["enabled"], true) {
        report(Warning, "security scanning disabled".into());
    }
    out
}
