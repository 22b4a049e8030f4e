//! A MemoryStore that embeds with a local model, end to end as a user meets it: the controller's
//! worker Deployment (the model baked into a derived image at `modelDirectory`) runs here as a
//! local process with its env resolved from the real Secrets, embeds the memories agents wrote
//! with the real all-MiniLM-L6-v2, the store reports the provider answering, and
//! `kubectl aienv memory search` embeds a paraphrase with the store's provider and finds the
//! memory it paraphrases first.

use std::time::Duration;

use aienv::memory::{Memories, MemoryType, NewMemory, store_connect_options};
use aienv_tests::{
    embed_fixture::{MINILM, MINILM_DIMS, MinilmReference},
    jobs::{container_env, spawn_container},
    plugin::kubectl_aienv,
    stores::{apply_store, external_scenario, wait_condition, wait_condition_message},
    testenv::{require_env, wait_for},
};
use anyhow::{Context, Result, ensure};
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Secret};
use kube::Api;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

const WAIT: Duration = Duration::from_secs(120);
/// Where the store says the model is inside the workers' image.
const IMAGE_MODEL_DIR: &str = "/opt/aienv/models/all-MiniLM-L6-v2";

#[tokio::test]
async fn a_local_model_store_embeds_in_its_workers_and_the_plugin_finds_memories_by_meaning()
-> Result<()> {
    let Some(sc) = external_scenario("memsearch").await? else {
        return Ok(());
    };
    let env = require_env().context("test environment")?;
    let model_dir = env.embed_model_dir()?;
    let reference = MinilmReference::load()?;
    let (ns, api) = (&sc.ns, &sc.api);
    apply_store(
        api,
        "mem",
        serde_json::json!({"mode": "external", "external": {"connectionSecretRef": {"name": "pg", "key": "uri"}},
            "embedding": {"dimensions": MINILM_DIMS, "model": MINILM,
                          "provider": {"type": "local", "modelDirectory": IMAGE_MODEL_DIR}},
            "workers": {"replicas": 1, "batchSize": 8}}),
    )
    .await?;
    wait_condition(api, "mem", "Ready", "True", "StoreReady").await?;

    // Before any vector exists, the plugin says a local store needs the model here.
    let (ok, _, err) = kubectl_aienv(&env, ns.name(), &["memory", "search", "mem", "anything"]);
    ensure!(!ok && err.contains("--model-dir"), "{err}");

    let deployments: Api<Deployment> = ns.api();
    let d = wait_for(WAIT, "the workers' Deployment", || async {
        deployments.get_opt("mem-embed").await.map_err(Into::into)
    })
    .await?;
    let pod = d.spec.context("spec")?.template.spec.context("pod spec")?;
    let container = &pod.containers[0];
    let secrets: Api<Secret> = ns.api();
    let mut vars = container_env(&secrets, container.env.as_deref().unwrap_or_default()).await?;
    ensure!(vars["AIENV_EMBED_PROVIDER"] == "local", "{vars:?}");
    ensure!(
        vars["AIENV_EMBED_MODEL_DIR"] == IMAGE_MODEL_DIR,
        "{:?}",
        vars.get("AIENV_EMBED_MODEL_DIR")
    );
    ensure!(!vars.contains_key("AIENV_EMBED_BASE_URL"));
    // The derived image's directory is this machine's copy of the same model files.
    vars.insert(
        "AIENV_EMBED_MODEL_DIR".into(),
        model_dir.display().to_string(),
    );

    // Memories as an agent writes them: the first of each paraphrase pair and the unrelated ones.
    let uri: PgConnectOptions = vars["AIENV_DATABASE_URL"].parse()?;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(store_connect_options(uri, &vars["AIENV_STORE_SCHEMA"]))
        .await?;
    let second: Vec<usize> = reference.paraphrases.iter().map(|p| p[1]).collect();
    let stored: Vec<NewMemory> = (0..reference.sentences.len())
        .filter(|i| !second.contains(i))
        .map(|i| NewMemory::new(reference.sentences[i].clone(), MemoryType::Agent))
        .collect();
    Memories::open(pool.clone())
        .await?
        .store_batch(&stored)
        .await?;

    // Inference threads as the pod's CPU limit would set them.
    vars.insert("AIENV_EMBED_THREADS".into(), "2".into());
    let mut child = spawn_container(container, &vars)?;
    let embedded = wait_for(
        WAIT,
        "every memory embedded by the local worker",
        || async {
            let pending: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM memories WHERE embedding IS NULL OR embedding_model <> $1",
            )
            .bind(MINILM)
            .fetch_one(&pool)
            .await?;
            Ok((pending == 0).then_some(()))
        },
    )
    .await;
    if let Err(e) = embedded {
        child.start_kill()?;
        let out = child.wait_with_output().await?;
        anyhow::bail!(
            "{e:?}; the worker said: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The worker's own report reaches the store (its pod does not run here: 0 of 1 available).
    wait_condition_message(api, "mem", "WorkersReady", "False", "the provider answers").await?;

    // What an agent would find for each paraphrase, as a user asks for it.
    let dir = model_dir.display().to_string();
    for [original, paraphrase] in &reference.paraphrases {
        let query = &reference.sentences[*paraphrase];
        let (ok, out, err) = kubectl_aienv(
            &env,
            ns.name(),
            &[
                "memory",
                "search",
                "mem",
                query,
                "-k",
                "3",
                "--model-dir",
                &dir,
            ],
        );
        ensure!(ok, "memory search {query:?}: {err}");
        let mut lines = out.lines();
        ensure!(lines.next().is_some_and(|h| h.starts_with("RANK")), "{out}");
        let first = lines.next().unwrap_or_default();
        let want: String = reference.sentences[*original]
            .split_whitespace()
            .collect::<Vec<_>>()
            .join(" ");
        let shown = want.chars().take(60).collect::<String>();
        ensure!(
            first.starts_with("1 ") && first.contains(&shown),
            "query {query:?} should find {want:?} first:\n{out}"
        );
    }
    child.start_kill()?;
    child.wait().await?;
    pool.close().await;
    sc.finish().await
}
