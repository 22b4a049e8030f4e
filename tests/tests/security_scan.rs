//! checkov (PyPI) over everything aienv installs: the chart rendered, the kustomize overlays
//! and the samples (tools/checkov/scan.sh). Any failed check fails this test with checkov's
//! report; an accepted finding carries a skip annotation with its reason on the object itself.

use aienv_tests::testenv::{require_env, workspace_root};
use anyhow::Result;

#[test]
fn checkov_finds_no_failed_check() -> Result<()> {
    // kubectl (for `kubectl kustomize`) comes from the test environment.
    let Some(env) = require_env() else {
        return Ok(());
    };
    let out = std::process::Command::new(workspace_root().join("tools/checkov/scan.sh"))
        .env("KUBECTL", env.k8s_bin.join("kubectl"))
        .output()?;
    let report = String::from_utf8_lossy(&out.stdout);
    println!("{report}");
    assert!(
        out.status.success(),
        "checkov failed checks (or could not run):\n{report}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        report.contains("Passed checks:"),
        "checkov scanned nothing: {report}"
    );
    Ok(())
}
