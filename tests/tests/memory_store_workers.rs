//! The embedding workers the MemoryStore controller provisions: a Deployment running
//! `aienv embed-worker` with the store's agent login and provider. The test runs that
//! Deployment's container, its args and env with every Secret reference resolved from the real
//! Secrets, as a local process against the harness database and a loopback embedding server, so
//! the pod spec shipped is one that embeds the store's memories. Removing the provider removes
//! the workers.

use std::time::Duration;

use aienv::memory::{Memories, MemoryType, NewMemory, store_connect_options};
use aienv_tests::{
    embed_server::EmbedServer,
    jobs::{container_env, spawn_container},
    stores::{apply_store, external_scenario, wait_condition, wait_condition_message},
    testenv::wait_for,
};
use anyhow::{Context, Result, ensure};
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Secret};
use kube::Api;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

const DIMS: usize = 4;
const ROWS: usize = 25;
const WAIT: Duration = Duration::from_secs(90);

#[tokio::test]
async fn the_worker_deployment_the_controller_ships_embeds_the_stores_memories() -> Result<()> {
    let Some(sc) = external_scenario("memstore-workers").await? else {
        return Ok(());
    };
    let (ns, api) = (&sc.ns, &sc.api);
    let server = EmbedServer::start(DIMS).await?;
    apply_store(
        api,
        "mem",
        serde_json::json!({"mode": "external", "external": {"connectionSecretRef": {"name": "pg", "key": "uri"}},
            "embedding": {"dimensions": DIMS, "model": "test-embed",
                          "provider": {"type": "openai", "url": server.base_url()}},
            "workers": {"replicas": 2, "batchSize": 8}}),
    )
    .await?;
    wait_condition(api, "mem", "Ready", "True", "StoreReady").await?;
    let deployments: Api<Deployment> = ns.api();
    let d = wait_for(WAIT, "the workers' Deployment", || async {
        deployments.get_opt("mem-embed").await.map_err(Into::into)
    })
    .await?;
    let spec = d.spec.clone().context("spec")?;
    ensure!(spec.replicas == Some(2));
    // Its pods cannot start on this cluster (the operator's image is named by its release
    // tag here), and the store says so without losing Ready.
    let s = wait_condition(api, "mem", "WorkersReady", "False", "WorkersUnavailable").await?;
    let (_, _, msg) =
        aienv_tests::conditions::condition(&s, "WorkersReady").context("WorkersReady")?;
    ensure!(msg.contains("0 of 2 workers available"), "{msg}");

    // Memories waiting for their vectors, written as agents write them.
    let secrets: Api<Secret> = ns.api();
    let pod = spec.template.spec.context("pod spec")?;
    let container = &pod.containers[0];
    let env = container_env(&secrets, container.env.as_deref().unwrap_or_default()).await?;
    let uri: PgConnectOptions = env["AIENV_DATABASE_URL"].parse()?;
    let pool = PgPoolOptions::new()
        .max_connections(2)
        .connect_with(store_connect_options(uri, &env["AIENV_STORE_SCHEMA"]))
        .await?;
    let memories = Memories::open(pool.clone()).await?;
    let rows: Vec<NewMemory> = (0..ROWS)
        .map(|i| NewMemory::new(format!("worker memory {i}"), MemoryType::Agent))
        .collect();
    memories.store_batch(&rows).await?;

    // The provider answers vectors of the wrong size: the worker writes nothing, and the store
    // says what is wrong, with both sizes, instead of only "0 of 2 available".
    server.set_dims(DIMS * 2);

    // The container's command, as a local process: only its env (and a free port for /metrics).
    let mut child = spawn_container(container, &env)?;
    let reported = wait_condition(api, "mem", "WorkersReady", "False", "DimensionMismatch").await;
    let reported = match reported {
        Ok(s) => s,
        Err(e) => {
            child.start_kill()?;
            let out = child.wait_with_output().await?;
            anyhow::bail!(
                "{e:?}; the worker said: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    };
    let (_, _, msg) =
        aienv_tests::conditions::condition(&reported, "WorkersReady").context("WorkersReady")?;
    ensure!(
        msg.contains(&format!("returned {}-dimensional", DIMS * 2))
            && msg.contains(&format!("vector({DIMS})")),
        "{msg}"
    );
    let ready = aienv_tests::conditions::condition(&reported, "Ready").context("Ready")?;
    ensure!(
        ready.0 == "True",
        "the store stays Ready (it takes and serves memories without vectors): {ready:?}"
    );
    let written: i64 =
        sqlx::query_scalar("SELECT count(*) FROM memories WHERE embedding IS NOT NULL")
            .fetch_one(&pool)
            .await?;
    ensure!(written == 0, "{written} vectors of the wrong size written");
    wait_for(WAIT, "an Event naming the mismatch", || async {
        let events = aienv_tests::stores::events_text(ns, "mem").await?;
        Ok(events
            .iter()
            .any(|(reason, note)| reason == "DimensionMismatch" && note.contains("vector(4)"))
            .then_some(()))
    })
    .await?;

    // Fixed: the worker's next try embeds, and the store hears the provider answers again.
    server.set_dims(DIMS);
    let embedded = wait_for(WAIT, "every memory embedded by the worker", || async {
        let n: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM memories WHERE embedding IS NOT NULL AND embedding_model = 'test-embed'",
        )
        .fetch_one(&pool)
        .await?;
        Ok((n == ROWS as i64).then_some(n))
    })
    .await;
    if embedded.is_err() {
        child.start_kill()?;
        let out = child.wait_with_output().await?;
        anyhow::bail!(
            "{embedded:?}; the worker said: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    ensure!(server.seen().len() == ROWS, "each text embedded once");
    wait_condition_message(api, "mem", "WorkersReady", "False", "the provider answers").await?;
    child.start_kill()?;
    child.wait().await?;

    // No provider, no workers: the Deployment goes, and so does the condition.
    apply_store(
        api,
        "mem",
        serde_json::json!({"mode": "external", "external": {"connectionSecretRef": {"name": "pg", "key": "uri"}},
            "embedding": {"dimensions": DIMS, "model": "test-embed"}}),
    )
    .await?;
    wait_for(WAIT, "the workers' Deployment deleted", || async {
        Ok(deployments
            .get_opt("mem-embed")
            .await?
            .is_none()
            .then_some(()))
    })
    .await?;
    wait_for(WAIT, "WorkersReady removed", || async {
        let s = api.get("mem").await?;
        Ok(aienv_tests::conditions::condition(&s, "WorkersReady")
            .is_none()
            .then_some(()))
    })
    .await?;
    pool.close().await;
    sc.finish().await
}

#[tokio::test]
async fn an_embedding_server_is_run_behind_a_service_and_the_workers_use_it() -> Result<()> {
    let Some(sc) = external_scenario("memstore-server").await? else {
        return Ok(());
    };
    let (ns, api) = (&sc.ns, &sc.api);
    let external = serde_json::json!({"connectionSecretRef": {"name": "pg", "key": "uri"}});
    apply_store(
        api,
        "mem",
        serde_json::json!({"mode": "external", "external": external,
            "embedding": {"dimensions": 384, "model": "BAAI/bge-small-en-v1.5",
                          "provider": {"type": "tei"},
                          "server": {"image": "text-embeddings-inference:cpu-1.8", "replicas": 1}}}),
    )
    .await?;
    wait_condition(api, "mem", "Ready", "True", "StoreReady").await?;
    let deployments: Api<Deployment> = ns.api();
    let services: Api<k8s_openapi::api::core::v1::Service> = ns.api();
    let server = wait_for(WAIT, "the server's Deployment", || async {
        deployments
            .get_opt("mem-embed-server")
            .await
            .map_err(Into::into)
    })
    .await?;
    let pod = server.spec.context("spec")?.template;
    let labels = pod.metadata.context("labels")?.labels.unwrap_or_default();
    let c = &pod.spec.context("pod spec")?.containers[0];
    ensure!(c.image.as_deref() == Some("text-embeddings-inference:cpu-1.8"));
    ensure!(
        c.args.as_deref().unwrap_or_default()[..2] == ["--model-id", "BAAI/bge-small-en-v1.5"],
        "{:?}",
        c.args
    );
    let svc = services.get("mem-embed-server").await?;
    let selector = svc.spec.and_then(|s| s.selector).unwrap_or_default();
    ensure!(
        !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v)),
        "the Service selects the server's pods: {selector:?} vs {labels:?}"
    );
    // The workers are pointed at the Service.
    let workers = deployments.get("mem-embed").await?;
    let env = workers
        .spec
        .context("spec")?
        .template
        .spec
        .context("pod")?
        .containers[0]
        .env
        .clone()
        .unwrap_or_default();
    let url = env
        .iter()
        .find(|e| e.name == "AIENV_EMBED_BASE_URL")
        .and_then(|e| e.value.clone());
    ensure!(
        url.as_deref() == Some(&format!("http://mem-embed-server.{}.svc", ns.name())[..]),
        "{url:?}"
    );
    // No image of it runs on this control plane: the store says the server is not there yet.
    wait_condition_message(api, "mem", "EmbeddingServerReady", "False", "0 of 1").await?;

    // A server of one's own instead: the operator's goes, Service and all.
    apply_store(
        api,
        "mem",
        serde_json::json!({"mode": "external", "external": external,
            "embedding": {"dimensions": 384, "model": "BAAI/bge-small-en-v1.5",
                          "provider": {"type": "tei", "url": "http://tei.models.svc"}}}),
    )
    .await?;
    wait_for(
        WAIT,
        "the server's Deployment and Service deleted",
        || async {
            let gone = deployments.get_opt("mem-embed-server").await?.is_none()
                && services.get_opt("mem-embed-server").await?.is_none();
            Ok(gone.then_some(()))
        },
    )
    .await?;
    wait_for(WAIT, "EmbeddingServerReady removed", || async {
        let s = api.get("mem").await?;
        Ok(
            aienv_tests::conditions::condition(&s, "EmbeddingServerReady")
                .is_none()
                .then_some(()),
        )
    })
    .await?;
    ensure!(
        deployments.get_opt("mem-embed").await?.is_some(),
        "the workers stay"
    );
    sc.finish().await
}
