//! The embedding workers the MemoryStore controller provisions: a Deployment running
//! `aienv embed-worker` with the store's agent login and provider. The test runs that
//! Deployment's container, its args and env with every Secret reference resolved from the real
//! Secrets, as a local process against the harness database and a loopback embedding server, so
//! the pod spec shipped is one that embeds the store's memories. Removing the provider removes
//! the workers.

use std::{collections::BTreeMap, process::Stdio, time::Duration};

use aienv::memory::{Memories, MemoryType, NewMemory, store_connect_options};
use aienv_tests::{
    embed_server::EmbedServer,
    jobs::aienv_bin,
    stores::{apply_store, external_scenario, wait_condition},
    testenv::wait_for,
};
use anyhow::{Context, Result, ensure};
use k8s_openapi::api::{apps::v1::Deployment, core::v1::Secret};
use kube::Api;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

const DIMS: usize = 4;
const ROWS: usize = 25;
const WAIT: Duration = Duration::from_secs(90);

/// The value of `name` in the container's env: a literal, or the Secret key it references.
async fn resolve_env(
    secrets: &Api<Secret>,
    env: &[k8s_openapi::api::core::v1::EnvVar],
) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for e in env {
        let value = match (&e.value, &e.value_from) {
            (Some(v), _) => v.clone(),
            (None, Some(from)) => {
                let r = from
                    .secret_key_ref
                    .as_ref()
                    .with_context(|| format!("{}: only secretKeyRef is expected", e.name))?;
                let s = secrets.get(&r.name).await?;
                let bytes = s
                    .data
                    .as_ref()
                    .and_then(|d| d.get(&r.key))
                    .with_context(|| {
                        format!("{}: Secret {} has no key {}", e.name, r.name, r.key)
                    })?;
                String::from_utf8(bytes.0.clone())?
            }
            (None, None) => String::new(),
        };
        out.insert(e.name.clone(), value);
    }
    Ok(out)
}

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
    let env = resolve_env(&secrets, container.env.as_deref().unwrap_or_default()).await?;
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

    // The container's command, as a local process: only its env (and a free port for /metrics).
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let mut child = tokio::process::Command::new(aienv_bin())
        .args(container.args.clone().unwrap_or_default())
        .env_clear()
        .envs(&env)
        .env("AIENV_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
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
