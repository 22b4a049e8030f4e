//! Helpers for tests whose MemoryStores run in pods: the store's database reached as an agent
//! would, a volume filled on the host before a pod mounts it (as a platform team seeds a model
//! volume for a cluster without a model registry), and an Ollama models directory made from a
//! sentence-transformers model by the real Ollama binary.

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::core::v1::{PersistentVolume, Secret, Service};
use kube::{
    Api, Client,
    api::{DeleteParams, PostParams},
};
use sha2::{Digest, Sha256};
use sqlx::postgres::PgPoolOptions;

use crate::testenv::wait_for;

pub fn secret_text(s: &Secret, key: &str) -> String {
    String::from_utf8(s.data.as_ref().unwrap()[key].0.clone()).unwrap()
}

/// The store's database as an agent would use it, reached through the client Service's
/// ClusterIP (the host has no cluster DNS; kube-proxy routes the ClusterIP).
pub async fn agent_pool(
    secrets: &Api<Secret>,
    services: &Api<Service>,
    store: &str,
) -> Result<sqlx::PgPool> {
    login_pool(secrets, services, store, None).await
}

/// Like [`agent_pool`], logging in as `(user, password)` instead of the agents' role.
pub async fn login_pool(
    secrets: &Api<Secret>,
    services: &Api<Service>,
    store: &str,
    login: Option<(&str, &str)>,
) -> Result<sqlx::PgPool> {
    let app = secrets.get(&format!("{store}-app")).await?;
    let ip = services.get(store).await?.spec.unwrap().cluster_ip.unwrap();
    let mut url = url::Url::parse(&secret_text(&app, "uri"))?;
    url.set_host(Some(&ip))?;
    if let Some((user, password)) = login {
        url.set_username(user).ok();
        url.set_password(Some(password)).ok();
    }
    Ok(PgPoolOptions::new()
        .max_connections(2)
        .acquire_timeout(Duration::from_secs(10))
        .connect(url.as_str())
        .await?)
}

/// A hostPath PersistentVolume over a host directory, pre-bound to claim `claim` in
/// namespace `ns` (the claim must name it as `volumeName`, with `storageClassName: ""`).
/// Retained: [`StaticVolume::remove`] deletes it and the directory.
pub struct StaticVolume {
    pub name: String,
    pub dir: PathBuf,
    client: Client,
}

impl StaticVolume {
    /// A fresh directory under the test environment's state (`$AIENV_TESTENV_DIR/test-volumes`),
    /// readable by the pods' non-root user.
    pub fn dir_for(env: &crate::testenv::TestEnv, name: &str) -> Result<PathBuf> {
        let root = env
            .vars
            .get("AIENV_TESTENV_DIR")
            .map(PathBuf::from)
            .context("the env file has no AIENV_TESTENV_DIR")?;
        let dir = root.join("test-volumes").join(name);
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(dir)
    }

    pub async fn create(
        client: &Client,
        name: &str,
        dir: &Path,
        ns: &str,
        claim: &str,
    ) -> Result<Self> {
        // Pods run as 65532 and hostPath volumes get no fsGroup: the tree becomes theirs.
        let status = std::process::Command::new("chown")
            .args(["-R", "65532:65532"])
            .arg(dir)
            .status()?;
        ensure!(status.success(), "chown {} failed", dir.display());
        let pv: PersistentVolume = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "PersistentVolume",
            "metadata": {"name": name},
            "spec": {"capacity": {"storage": "1Gi"}, "accessModes": ["ReadWriteOnce", "ReadOnlyMany"],
                "persistentVolumeReclaimPolicy": "Retain", "storageClassName": "",
                "hostPath": {"path": dir, "type": "Directory"},
                "claimRef": {"namespace": ns, "name": claim}},
        }))?;
        let api: Api<PersistentVolume> = Api::all(client.clone());
        let _ = api.delete(name, &DeleteParams::default()).await;
        wait_for(
            Duration::from_secs(30),
            "an older volume of that name gone",
            || async { Ok(api.get_opt(name).await?.is_none().then_some(())) },
        )
        .await?;
        api.create(&PostParams::default(), &pv).await?;
        Ok(Self {
            name: name.into(),
            dir: dir.to_path_buf(),
            client: client.clone(),
        })
    }

    /// The claim a store names: bound to this volume, no provisioner involved.
    pub fn claim(&self, claim: &str, read_only: bool) -> serde_json::Value {
        let mode = if read_only {
            "ReadOnlyMany"
        } else {
            "ReadWriteOnce"
        };
        serde_json::json!({
            "apiVersion": "v1", "kind": "PersistentVolumeClaim",
            "metadata": {"name": claim},
            "spec": {"accessModes": [mode], "storageClassName": "", "volumeName": self.name,
                "resources": {"requests": {"storage": "1Gi"}}},
        })
    }

    pub async fn remove(self) -> Result<()> {
        let api: Api<PersistentVolume> = Api::all(self.client.clone());
        let _ = api.delete(&self.name, &DeleteParams::default()).await;
        let _ = std::fs::remove_dir_all(&self.dir);
        Ok(())
    }
}

/// Copy a model directory (files and one level of subdirectories, as sentence-transformers
/// lays them out) into `to`.
pub fn copy_model_dir(from: &Path, to: &Path) -> Result<()> {
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            std::fs::create_dir_all(&target)?;
            copy_model_dir(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target)?;
        }
    }
    Ok(())
}

/// The files of a sentence-transformers model Ollama converts, by their path in the model
/// directory. `ollama create` itself names files by their base name only, so the pooling
/// module's `1_Pooling/config.json` would overwrite `config.json`; the create API takes the
/// relative paths.
const OLLAMA_MODEL_FILES: &[&str] = &[
    "model.safetensors",
    "config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "modules.json",
    "sentence_bert_config.json",
    "1_Pooling/config.json",
];

/// Make `models` an Ollama models directory holding `model_dir` (safetensors) as `name`:
/// starts the real `ollama serve` on a loopback port with `OLLAMA_MODELS=models`, uploads the
/// files and asks it to create (convert) the model, then stops it.
pub async fn seed_ollama_models(
    ollama: &Path,
    models: &Path,
    name: &str,
    model_dir: &Path,
) -> Result<()> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    // Its key pair goes to $HOME/.ollama, not into the volume.
    let home = std::env::temp_dir().join(format!("aienv-ollama-home-{port}"));
    std::fs::create_dir_all(&home)?;
    let mut serve = tokio::process::Command::new(ollama)
        .arg("serve")
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("HOME", &home)
        .env("OLLAMA_HOST", format!("127.0.0.1:{port}"))
        .env("OLLAMA_MODELS", models)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", ollama.display()))?;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::new();
    let created = async {
        wait_for(
            Duration::from_secs(60),
            "ollama serve listening",
            || async { Ok(http.head(&base).send().await.ok().map(|_| ())) },
        )
        .await?;
        let mut files = serde_json::Map::new();
        for f in OLLAMA_MODEL_FILES {
            let bytes = std::fs::read(model_dir.join(f)).with_context(|| format!("reading {f}"))?;
            let digest = format!("sha256:{}", hex::encode(Sha256::digest(&bytes)));
            let r = http
                .post(format!("{base}/api/blobs/{digest}"))
                .body(bytes)
                .send()
                .await?;
            ensure!(r.status().is_success(), "uploading {f}: {}", r.status());
            files.insert((*f).into(), digest.into());
        }
        let r = http
            .post(format!("{base}/api/create"))
            .json(&serde_json::json!({"model": name, "files": files, "stream": false}))
            .timeout(Duration::from_secs(300))
            .send()
            .await?;
        let status = r.status();
        let body = r.text().await?;
        ensure!(
            status.is_success() && body.contains("success"),
            "ollama create {name}: {status} {body}"
        );
        anyhow::Ok(())
    }
    .await;
    serve.start_kill()?;
    let out = serve.wait_with_output().await?;
    let _ = std::fs::remove_dir_all(&home);
    created.with_context(|| {
        let log = String::from_utf8_lossy(&out.stderr);
        let tail: Vec<&str> = log.lines().rev().take(15).collect();
        format!(
            "ollama serve said (last lines):\n{}",
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        )
    })
}
