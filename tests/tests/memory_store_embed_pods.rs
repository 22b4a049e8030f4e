//! A managed MemoryStore's embedding in pods, as a cluster runs it: the workers' Deployment from
//! the aienv image, and the embedding server from an Ollama image (built from Ollama's Go module),
//! both with their model on a volume filled beforehand — the pods have no route off the node, so
//! nothing is downloaded. Every memory gets the vector sentence-transformers gives its text.

use std::time::Duration;

use aienv::{
    api::memory_store::MemoryStore,
    memory::{Memories, MemoryType, NewMemory},
};
use aienv_tests::{
    agents::apply_json,
    conditions::{condition, wait_condition},
    embed_fixture::{MINILM, MINILM_DIMS, MinilmReference, cosine},
    operator::{PodScenario, Which, pod_scenario},
    pod_stores::{StaticVolume, agent_pool, copy_model_dir, seed_ollama_models},
    stores::apply_store,
    testenv::{TestNamespace, wait_for},
};
use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::core::v1::{PersistentVolumeClaim, Pod, Secret, Service};
use kube::{
    Api,
    api::{ListParams, LogParams},
};

/// Pods start in seconds here; the margin is for a loaded machine (and a model loading).
const WAIT: Duration = Duration::from_secs(240);

/// Stores the fixture's sentences without vectors, as agents write them, then waits until the
/// workers have embedded every one with `model`; returns (content, vector) pairs.
async fn stored_and_embedded(
    ns: &TestNamespace,
    model: &str,
    sentences: &[String],
) -> Result<Vec<(String, Vec<f32>)>> {
    let secrets: Api<Secret> = ns.api();
    let services: Api<Service> = ns.api();
    let pool = wait_for(WAIT, "the store reachable as its agents", || async {
        Ok(agent_pool(&secrets, &services, "mem").await.ok())
    })
    .await?;
    let memories = Memories::open(pool.clone()).await?;
    let rows: Vec<NewMemory> = sentences
        .iter()
        .map(|s| NewMemory::new(s.clone(), MemoryType::Agent))
        .collect();
    memories.store_batch(&rows).await?;
    let embedded = wait_for(WAIT, "every memory embedded by the workers' pod", || async {
        let rows: Vec<(String, Vec<f32>)> = sqlx::query_as(
            "SELECT content, embedding::real[] FROM memories WHERE embedding IS NOT NULL AND embedding_model = $1",
        )
        .bind(model)
        .fetch_all(&pool)
        .await?;
        Ok((rows.len() == sentences.len()).then_some(rows))
    })
    .await?;
    pool.close().await;
    Ok(embedded)
}

/// The cosine of each fixture sentence's stored vector to sentence-transformers' own.
fn cosines(reference: &MinilmReference, embedded: &[(String, Vec<f32>)]) -> Result<Vec<f64>> {
    reference
        .sentences
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let (_, v) = embedded
                .iter()
                .find(|(c, _)| c == s)
                .with_context(|| format!("sentence {i} not embedded"))?;
            ensure!(
                v.len() == MINILM_DIMS,
                "sentence {i}: {} dimensions",
                v.len()
            );
            Ok(cosine(v, &reference.vectors[i]))
        })
        .collect()
}

async fn pod_log(ns: &TestNamespace, component: &str) -> Result<String> {
    let pods: Api<Pod> = ns.api();
    let lp = ListParams::default().labels(&format!("app.kubernetes.io/component={component}"));
    let mut out = String::new();
    for p in pods.list(&lp).await? {
        let name = p.metadata.name.unwrap_or_default();
        out += &pods
            .logs(&name, &LogParams::default())
            .await
            .unwrap_or_default();
    }
    Ok(out)
}

/// The store hears from its worker that the provider answers.
async fn workers_answer(api: &Api<MemoryStore>) -> Result<()> {
    let s = wait_condition(api, WAIT, "mem", "WorkersReady", "True", "WorkersAvailable").await?;
    let (_, _, msg) = condition(&s, "WorkersReady").context("WorkersReady")?;
    ensure!(msg.contains("the provider answers"), "{msg}");
    Ok(())
}

/// The workers' diagnosis when a wait fails: their conditions and their pods' logs.
async fn explain(api: &Api<MemoryStore>, ns: &TestNamespace, e: anyhow::Error) -> anyhow::Error {
    let status = api.get("mem").await.ok().and_then(|s| s.status);
    let workers = pod_log(ns, "embedding-worker").await.unwrap_or_default();
    let server = pod_log(ns, "embedding-server").await.unwrap_or_default();
    e.context(format!(
        "store status: {status:?}\nworker log:\n{workers}\nserver log:\n{server}"
    ))
}

/// Store `mem` of the scenario: managed, with `embedding` and one worker, after the volume
/// filled in `dir` is bound to claim `claim` in the namespace.
async fn store_with_volume(
    sc: &PodScenario,
    dir: &std::path::Path,
    claim: &str,
    read_only: bool,
    embedding: serde_json::Value,
) -> Result<(Api<MemoryStore>, StaticVolume)> {
    let volume = StaticVolume::create(&sc.client, sc.ns.name(), dir, sc.ns.name(), claim).await?;
    let claims: Api<PersistentVolumeClaim> = sc.ns.api();
    apply_json(&claims, volume.claim(claim, read_only)).await?;
    let api: Api<MemoryStore> = sc.ns.api();
    apply_store(
        &api,
        "mem",
        serde_json::json!({"mode": "managed", "deletionPolicy": "Delete",
            "managed": {"image": sc.node.pg_image, "storage": {"size": "1Gi"}},
            "embedding": embedding,
            "workers": {"replicas": 1, "batchSize": 8}}),
    )
    .await?;
    Ok((api, volume))
}

/// The test's outcome: on failure the store's status and the pods' logs; on success the
/// namespace and the volume removed.
async fn finish(
    sc: PodScenario,
    api: &Api<MemoryStore>,
    volume: StaticVolume,
    outcome: Result<()>,
) -> Result<()> {
    if let Err(e) = outcome {
        return Err(explain(api, &sc.ns, e).await);
    }
    sc.ops.stop().await;
    sc.ns.cleanup().await?;
    volume.remove().await
}

#[tokio::test]
async fn workers_in_a_pod_embed_with_the_local_model_from_a_volume() -> Result<()> {
    let Some(sc) = pod_scenario("embed-local-pods", &[Which::MemoryStore]).await? else {
        return Ok(());
    };
    let reference = MinilmReference::load()?;
    let dir = StaticVolume::dir_for(&sc.env, sc.ns.name())?;
    copy_model_dir(&sc.env.embed_model_dir()?, &dir)?;
    let (api, volume) = store_with_volume(
        &sc,
        &dir,
        "minilm",
        true,
        serde_json::json!({"dimensions": MINILM_DIMS, "model": MINILM,
            "provider": {"type": "local", "modelVolume": {"claimName": "minilm"}}}),
    )
    .await?;
    let outcome = async {
        wait_condition(&api, WAIT, "mem", "Ready", "True", "StoreReady").await?;
        let embedded = stored_and_embedded(&sc.ns, MINILM, &reference.sentences).await?;
        // Every vector is sentence-transformers' own, the text past 256 tokens truncated alike.
        let c = cosines(&reference, &embedded)?;
        ensure!(
            c.iter().all(|c| *c >= 0.999),
            "cosines to sentence-transformers: {c:?}"
        );
        workers_answer(&api).await
    }
    .await;
    finish(sc, &api, volume, outcome).await
}

#[tokio::test]
async fn an_ollama_server_pod_serves_the_model_from_its_volume_to_the_workers() -> Result<()> {
    let Some(sc) = pod_scenario("embed-ollama-pods", &[Which::MemoryStore]).await? else {
        return Ok(());
    };
    let (ollama_image, ollama_bin) = sc.node.ollama()?;
    let reference = MinilmReference::load()?;
    const MODEL: &str = "all-minilm-local";
    // The platform team's step: a models volume with the model in it, made by Ollama itself.
    let dir = StaticVolume::dir_for(&sc.env, sc.ns.name())?;
    seed_ollama_models(&ollama_bin, &dir, MODEL, &sc.env.embed_model_dir()?).await?;
    let (api, volume) = store_with_volume(
        &sc,
        &dir,
        "ollama-models",
        false,
        serde_json::json!({"dimensions": MINILM_DIMS, "model": MODEL, "provider": {"type": "ollama"},
            "server": {"image": ollama_image, "modelVolume": {"claimName": "ollama-models"}}}),
    )
    .await?;
    let outcome = async {
        wait_condition(&api, WAIT, "mem", "Ready", "True", "StoreReady").await?;
        wait_condition(
            &api,
            WAIT,
            "mem",
            "EmbeddingServerReady",
            "True",
            "ServerAvailable",
        )
        .await?;
        let embedded = stored_and_embedded(&sc.ns, MODEL, &reference.sentences).await?;
        let c = cosines(&reference, &embedded)?;
        println!("cosines of Ollama's vectors to sentence-transformers': {c:?}");
        // Ollama converts and runs the model faithfully; its own tokenizer differs from the
        // model's for non-ASCII text (no accent stripping: cosine 0.70 for the French sentence),
        // and it truncates at the model's 512 positions, not sentence-transformers' 256 tokens.
        // So the ASCII texts within the limit are compared (docs/embedding.md says the rest).
        for (i, s) in reference.sentences.iter().enumerate() {
            if s.is_ascii() && i != reference.long {
                ensure!(c[i] >= 0.999, "sentence {i}: cosine {}", c[i]);
            }
        }
        wait_condition(
            &api,
            WAIT,
            "mem",
            "WorkersReady",
            "True",
            "WorkersAvailable",
        )
        .await?;
        // The model came from the volume: the server never tried a pull.
        let log = pod_log(&sc.ns, "embedding-server").await?;
        ensure!(!log.contains("pulling"), "the server pulled:\n{log}");
        anyhow::Ok(())
    }
    .await;
    finish(sc, &api, volume, outcome).await
}
