//! Running `kubectl aienv` as a user does.

use std::{path::PathBuf, process::Command};

use crate::testenv::TestEnv;

/// The plugin binary, next to $AIENV_BIN (else target/debug).
pub fn plugin_bin() -> PathBuf {
    let p = crate::jobs::aienv_bin().with_file_name("kubectl-aienv");
    assert!(
        p.exists(),
        "{} missing: run `cargo build -p aienv --bins` first (scripts/test does)",
        p.display()
    );
    p
}

/// Run the plugin in `ns`; returns (success, stdout, stderr).
pub fn kubectl_aienv(env: &TestEnv, ns: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(plugin_bin())
        .args(["-n", ns])
        .args(args)
        .env("KUBECONFIG", &env.kubeconfig)
        .output()
        .expect("run kubectl-aienv");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
