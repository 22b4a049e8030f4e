//! The real Helm (built from its Go module by `tools/helm/build.sh`) and the chart
//! `charts/aienv-operator`, for the chart's tests.

use std::path::PathBuf;
use std::process::{Command, Output};
use std::sync::OnceLock;

use anyhow::{Context, Result, bail};
use serde_json::Value;

use crate::testenv::workspace_root;

/// The chart's directory in this checkout.
pub fn chart_dir() -> PathBuf {
    workspace_root().join("charts/aienv-operator")
}

/// The `helm` binary: what `tools/helm/build.sh` prints (it builds Helm the first time), else
/// `$AIENV_HELM` (the env file of `scripts/testenv` exports it).
/// Looked up once per test process.
pub fn helm_bin() -> Result<PathBuf> {
    static BIN: OnceLock<Result<PathBuf, String>> = OnceLock::new();
    BIN.get_or_init(|| find_helm().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn find_helm() -> Result<PathBuf> {
    let build = workspace_root().join("tools/helm/build.sh");
    let out = Command::new(&build).output();
    if let Ok(out) = &out
        && out.status.success()
    {
        let bin = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()).join("helm");
        if bin.is_file() {
            return Ok(bin);
        }
    }
    if let Some(p) = std::env::var_os("AIENV_HELM").map(PathBuf::from)
        && p.is_file()
    {
        return Ok(p);
    }
    bail!(
        "no helm: {} failed ({:?}) and AIENV_HELM is unset",
        build.display(),
        out.map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
    )
}

/// `helm <args>`, with its output whether it succeeded or not.
pub fn helm(args: &[&str]) -> Result<Output> {
    let bin = helm_bin()?;
    Command::new(&bin)
        .args(args)
        .output()
        .with_context(|| format!("running {}", bin.display()))
}

/// `helm template <release> <chart> --namespace <ns> <args>`: the rendered stream, or an error
/// with helm's stderr.
pub fn template(release: &str, namespace: &str, args: &[&str]) -> Result<String> {
    let chart = chart_dir();
    let chart = chart.to_str().context("chart path")?;
    let mut all = vec!["template", release, chart, "--namespace", namespace];
    all.extend_from_slice(args);
    stdout_of("helm template", helm(&all)?)
}

/// The stdout of a command that succeeded, or an error with what it printed.
pub fn stdout_of(what: &str, out: Output) -> Result<String> {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        bail!(
            "{what} failed ({}): {stdout}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(stdout)
}

/// The objects of a rendered stream (documents that are only comments are left out).
pub fn objects(rendered: &str) -> Result<Vec<Value>> {
    let docs: Vec<Option<Value>> =
        serde_saphyr::from_multiple(rendered).context("parsing helm's output")?;
    Ok(docs
        .into_iter()
        .flatten()
        .filter(|v| !v.is_null())
        .collect())
}

/// The object of this kind and name.
pub fn find<'a>(objects: &'a [Value], kind: &str, name: &str) -> Option<&'a Value> {
    objects
        .iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
}
