//! A kubelet's part for the pod of a backup Job, which cannot run on the test node (it would need
//! the harness PostgreSQL and S3 on the host's loopback): its container's command runs here as a
//! local process, with the environment the pod would get (Secret references resolved from the
//! real Secrets); then what it wrote to its termination log becomes the pod's termination
//! message and the pod's phase its outcome, as a kubelet reports them. The real Job controller
//! takes it from there.

use std::{path::PathBuf, time::Duration};

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::{
    Api, Client,
    api::{ListParams, Patch, PatchParams},
};

use crate::testenv::wait_for;

/// The aienv binary: $AIENV_BIN, else debug/aienv under $CARGO_TARGET_DIR, else
/// target/debug/aienv.
pub fn aienv_bin() -> PathBuf {
    std::env::var_os("AIENV_BIN")
        .map(PathBuf::from)
        .or_else(|| {
            std::env::var_os("CARGO_TARGET_DIR").map(|d| PathBuf::from(d).join("debug/aienv"))
        })
        .unwrap_or_else(|| crate::testenv::workspace_root().join("target/debug/aienv"))
}

/// A container's env as the kubelet would give it: literals, and Secret keys read from the real
/// Secrets (a missing optional key leaves the variable out, a missing required one is an error).
pub async fn container_env(
    secrets: &Api<Secret>,
    env: &[k8s_openapi::api::core::v1::EnvVar],
) -> Result<std::collections::BTreeMap<String, String>> {
    let mut out = std::collections::BTreeMap::new();
    for e in env {
        let value = match (
            &e.value,
            e.value_from
                .as_ref()
                .and_then(|v| v.secret_key_ref.as_ref()),
        ) {
            (Some(v), _) => Some(v.clone()),
            (None, Some(r)) => {
                let secret = secrets.get_opt(&r.name).await?;
                let v = secret
                    .and_then(|s| s.data)
                    .and_then(|d| d.get(&r.key).cloned())
                    .map(|b| String::from_utf8_lossy(&b.0).into_owned());
                if v.is_none() && r.optional != Some(true) {
                    bail!(
                        "Secret {} key {} is missing: the kubelet would not start the pod",
                        r.name,
                        r.key
                    );
                }
                v
            }
            (None, None) if e.value_from.is_none() => Some(String::new()),
            _ => bail!("{}: only values and secretKeyRef are expected", e.name),
        };
        if let Some(v) = value {
            out.insert(e.name.clone(), v);
        }
    }
    Ok(out)
}

/// Start a long-running container (a worker) here as a local process: its args, only the given
/// env, and `/metrics` on a free loopback port instead of the pod's. Killed when dropped.
pub fn spawn_container(
    container: &k8s_openapi::api::core::v1::Container,
    env: &std::collections::BTreeMap<String, String>,
) -> Result<tokio::process::Child> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    Ok(tokio::process::Command::new(aienv_bin())
        .args(container.args.clone().unwrap_or_default())
        .env_clear()
        .envs(env)
        .env("AIENV_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?)
}

/// What the pod's process did.
pub struct Ran {
    pub pod: String,
    pub exit_code: i32,
    pub message: String,
    pub stderr: String,
}

/// Run the pod of Job `job` here (see the module doc). `pg_bin` is where pg_dump lives on this
/// machine (the image has it on PATH).
pub async fn run_job_pod(
    client: &Client,
    ns: &str,
    job: &str,
    pg_bin: &std::path::Path,
) -> Result<Ran> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    let selector = format!("batch.kubernetes.io/job-name={job}");
    let pod = wait_for(
        Duration::from_secs(60),
        &format!("pod of Job {job}"),
        || async {
            Ok(pods
                .list(&ListParams::default().labels(&selector))
                .await?
                .items
                .into_iter()
                .next())
        },
    )
    .await?;
    let name = pod.metadata.name.clone().context("pod name")?;
    let spec = pod.spec.clone().context("pod spec")?;
    let c = &spec.containers[0];
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let log = tempfile_path(&name);
    let mut cmd = tokio::process::Command::new(aienv_bin());
    cmd.args(c.args.clone().unwrap_or_default())
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("AIENV_PG_BIN", pg_bin)
        .env(aienv::backup::env::TERMINATION_LOG, &log)
        .kill_on_drop(true);
    cmd.envs(container_env(&secrets, c.env.as_deref().unwrap_or_default()).await?);
    let out = tokio::time::timeout(Duration::from_secs(180), cmd.output())
        .await
        .context("the Job's process ran over 180 s")??;
    let exit_code = out.status.code().unwrap_or(137);
    let message = std::fs::read_to_string(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    let now = jiff::Timestamp::now().to_string();
    let (phase, reason) = if exit_code == 0 {
        ("Succeeded", "Completed")
    } else {
        ("Failed", "Error")
    };
    let status = serde_json::json!({"status": {
        "phase": phase,
        "containerStatuses": [{
            "name": c.name, "image": c.image, "imageID": "", "ready": false, "restartCount": 0,
            "started": false,
            "state": {"terminated": {"exitCode": exit_code, "reason": reason, "message": message,
                "startedAt": now, "finishedAt": now}}
        }]
    }});
    pods.patch_status(&name, &PatchParams::default(), &Patch::Merge(&status))
        .await?;
    Ok(Ran {
        pod: name,
        exit_code,
        message,
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

fn tempfile_path(pod: &str) -> PathBuf {
    std::env::temp_dir().join(format!("aienv-termination-{pod}-{}", std::process::id()))
}
