//! The embedding worker against the harness PostgreSQL and a loopback embedding server
//! (tests/src/embed_server.rs): three replicas embed every row exactly once, a worker killed
//! mid-batch loses nothing and duplicates nothing, both protocols retry 429/5xx honouring
//! Retry-After, a vector of the wrong size writes nothing, a poison row is isolated and marked
//! failed, an edit during embedding ends with the new text's vector, and a stopped worker releases
//! its batch.

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, Instant},
};

use aienv::embed::{
    EmbedError, ProviderKind, Worker, WorkerConfig,
    metrics::{EmbedMetrics, ReasonLabel},
    retry::Backoff,
    worker::{Computed, write_vectors},
};
use aienv::memory::{Memories, MemoryType, NewMemory, ddl::StoreLayout, write::content_sha256};
use aienv_tests::{
    embed_server::{EmbedServer, Scripted, vector_for},
    testenv::{self, TEST_SCHEMA, TestDatabase, wait_for},
};
use pgvector::Vector;
use sqlx::PgPool;
use tokio::sync::watch;

const DIMS: usize = 8;
const LIMIT: Duration = Duration::from_secs(120);

fn layout() -> StoreLayout {
    let spec: aienv::api::memory_store::MemoryStoreSpec = serde_saphyr::from_str(&format!(
        "mode: external\nembedding: {{dimensions: {DIMS}}}\n"
    ))
    .unwrap();
    StoreLayout::from_spec(&spec).unwrap()
}

fn config(batch_size: u32) -> WorkerConfig {
    WorkerConfig {
        batch_size,
        max_attempts: 2,
        backoff: Backoff {
            base: Duration::from_millis(10),
            max: Duration::from_millis(200),
            max_retries: 5,
        },
        idle_poll: Duration::from_millis(20),
        shutdown_grace: Duration::from_secs(5),
        pending_refresh: Duration::from_millis(100),
    }
}

/// A prepared store holding `n` memories "memory {i}" without vectors, and an audit table that
/// records every committed NULL -> vector write (so "embedded twice" is visible in the database).
async fn store_with(
    env: &testenv::TestEnv,
    prefix: &str,
    n: usize,
) -> anyhow::Result<TestDatabase> {
    let db = env.test_database(prefix).await?;
    db.prepare(&layout()).await?;
    let mem = Memories::open(db.pool.clone()).await?;
    let rows: Vec<NewMemory> = (0..n)
        .map(|i| NewMemory::new(format!("memory {i}"), MemoryType::Agent))
        .collect();
    for chunk in rows.chunks(500) {
        mem.store_batch(chunk).await?;
    }
    for sql in [
        "CREATE TABLE embed_audit (id bigint NOT NULL)",
        "CREATE FUNCTION embed_audit() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN INSERT INTO embed_audit VALUES (NEW.id); RETURN NEW; END $$",
        "CREATE TRIGGER memories_embed_audit AFTER UPDATE OF embedding ON memories FOR EACH ROW \
         WHEN (OLD.embedding IS NULL AND NEW.embedding IS NOT NULL) EXECUTE FUNCTION embed_audit()",
    ] {
        sqlx::query(sql).execute(&db.pool).await?;
    }
    Ok(db)
}

async fn worker(
    db: &TestDatabase,
    server: &EmbedServer,
    kind: ProviderKind,
    key: &str,
    config: WorkerConfig,
    metrics: EmbedMetrics,
) -> anyhow::Result<(Worker, PgPool)> {
    let pool = db.pool_on(TEST_SCHEMA, 2).await?;
    let model = Memories::open(pool.clone()).await?.model;
    let provider = aienv::embed::provider(
        kind,
        &server.base_url(),
        &model,
        Some(key.parse()?),
        Duration::from_secs(30),
    )?;
    Ok((
        Worker::open(pool.clone(), provider, config, metrics).await?,
        pool,
    ))
}

async fn pending(pool: &PgPool) -> anyhow::Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT count(*) FROM memories WHERE embedding IS NULL AND embed_failed_at IS NULL",
    )
    .fetch_one(pool)
    .await?)
}

/// (audit rows, distinct ids in the audit).
async fn audit(pool: &PgPool) -> anyhow::Result<(i64, i64)> {
    Ok(
        sqlx::query_as("SELECT count(*), count(DISTINCT id) FROM embed_audit")
            .fetch_one(pool)
            .await?,
    )
}

/// Every row with a vector holds the vector of its own text, with model and time recorded;
/// returns how many rows have none.
async fn vectors_match_texts(pool: &PgPool) -> anyhow::Result<usize> {
    let rows: Vec<(String, Option<Vector>, Option<String>, bool)> = sqlx::query_as(
        "SELECT content, embedding, embedding_model, embedded_at IS NOT NULL FROM memories ORDER BY id",
    )
    .fetch_all(pool)
    .await?;
    let mut missing = 0;
    for (content, v, model, stamped) in rows {
        match v {
            Some(v) => {
                assert_eq!(
                    v.to_vec(),
                    vector_for(&content, DIMS),
                    "vector of {content:?}"
                );
                assert!(
                    model.is_some() && stamped,
                    "{content:?}: model and embedded_at set"
                );
            }
            None => missing += 1,
        }
    }
    Ok(missing)
}

async fn wait_all_embedded(pool: &PgPool, n: i64) -> anyhow::Result<()> {
    wait_for(LIMIT, "every row embedded", || async {
        let (written, _) = audit(pool).await?;
        Ok((pending(pool).await? == 0 && written >= n).then_some(()))
    })
    .await
}

#[tokio::test]
async fn three_workers_embed_every_row_exactly_once() -> anyhow::Result<()> {
    let Some(env) = testenv::require_env() else {
        return Ok(());
    };
    const N: usize = 2000;
    let db = store_with(&env, "embed_once", N).await?;
    let server = EmbedServer::start(DIMS).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut registry = prometheus_client::registry::Registry::default();
    let first_metrics = EmbedMetrics::register(&mut registry);
    let mut workers = Vec::new();
    for (i, key) in ["key-a", "key-b", "key-c"].into_iter().enumerate() {
        let metrics = if i == 0 {
            first_metrics.clone()
        } else {
            EmbedMetrics::unregistered()
        };
        workers.push(
            worker(&db, &server, ProviderKind::OpenAi, key, config(25), metrics)
                .await?
                .0,
        );
    }
    // All three open before any starts, so they really compete for the rows.
    let tasks: Vec<_> = workers
        .into_iter()
        .map(|w| {
            let rx = stop_rx.clone();
            tokio::spawn(async move { w.run(rx).await })
        })
        .collect();
    wait_all_embedded(&db.pool, N as i64).await?;
    stop_tx.send(true)?;
    let mut embedded = Vec::new();
    for t in tasks {
        embedded.push(tokio::time::timeout(LIMIT, t).await??.embedded);
    }

    assert_eq!(
        embedded.iter().sum::<usize>(),
        N,
        "per worker: {embedded:?}"
    );
    let seen = server.seen();
    assert_eq!(seen.len(), N, "every text reached the server");
    let twice: Vec<_> = seen.iter().filter(|(_, n)| **n != 1).collect();
    assert!(twice.is_empty(), "texts sent more than once: {twice:?}");
    assert_eq!(
        audit(&db.pool).await?,
        (N as i64, N as i64),
        "one write per row"
    );
    assert_eq!(
        vectors_match_texts(&db.pool).await?,
        0,
        "no row left without a vector"
    );
    let keys: HashSet<_> = server.requests().into_iter().filter_map(|r| r.1).collect();
    assert_eq!(keys.len(), 3, "all three workers sent requests: {keys:?}");

    // The first worker's counters, as /metrics serves them.
    let router = aienv::runtime::http::router(
        Arc::new(registry),
        Arc::new(std::sync::atomic::AtomicBool::new(true)),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let http = tokio::spawn(async move { axum::serve(listener, router).await });
    let text = reqwest::get(format!("http://{addr}/metrics"))
        .await?
        .text()
        .await?;
    http.abort();
    assert!(
        text.contains(&format!("aienv_embed_embedded_rows_total {}", embedded[0])),
        "{text}"
    );
    assert!(text.contains("aienv_embed_pending_rows 0"), "{text}");
    assert!(text.contains("aienv_embed_batch_size_count"), "{text}");
    assert!(
        text.contains(
            "aienv_embed_request_duration_seconds_count{provider=\"openai\",outcome=\"ok\"}"
        ),
        "{text}"
    );
    db.cleanup().await
}

#[tokio::test]
async fn a_worker_killed_mid_batch_loses_nothing_and_embeds_nothing_twice() -> anyhow::Result<()> {
    let Some(env) = testenv::require_env() else {
        return Ok(());
    };
    const N: usize = 1000;
    let db = store_with(&env, "embed_kill", N).await?;
    let server = EmbedServer::start(DIMS).await?;
    // The first request of worker A hangs in the server: A is mid-batch, 50 rows claimed.
    server.hold_first_request_of("key-a");
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut handles = Vec::new();
    let mut pools = Vec::new();
    for key in ["key-a", "key-b", "key-c"] {
        let (w, pool) = worker(
            &db,
            &server,
            ProviderKind::OpenAi,
            key,
            config(50),
            EmbedMetrics::unregistered(),
        )
        .await?;
        let rx = stop_rx.clone();
        handles.push(tokio::spawn(async move { w.run(rx).await }));
        pools.push(pool);
    }
    let held = server.wait_held(LIMIT).await?;
    assert_eq!(held.len(), 50);
    let a = handles.remove(0);
    a.abort();
    assert!(a.await.unwrap_err().is_cancelled());
    // Its connections end, as a crashed pod's would.
    pools[0].close().await;
    server.release();

    wait_all_embedded(&db.pool, N as i64).await?;
    stop_tx.send(true)?;
    for h in handles {
        tokio::time::timeout(LIMIT, h).await??;
    }
    assert_eq!(audit(&db.pool).await?, (N as i64, N as i64), "none twice");
    assert_eq!(vectors_match_texts(&db.pool).await?, 0, "none lost");
    let seen = server.seen();
    let resent: HashSet<String> = seen
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(t, _)| t.clone())
        .collect();
    assert_eq!(
        resent,
        held.iter().cloned().collect::<HashSet<_>>(),
        "only the killed batch was sent again"
    );
    assert!(seen.values().all(|n| *n <= 2), "{seen:?}");
    db.cleanup().await
}

async fn protocol_scenarios(kind: ProviderKind, prefix: &str) -> anyhow::Result<()> {
    let Some(env) = testenv::require_env() else {
        return Ok(());
    };
    let db = store_with(&env, prefix, 10).await?;
    let server = EmbedServer::start(DIMS).await?;
    let path = match kind {
        ProviderKind::OpenAi => "/v1/embeddings",
        ProviderKind::Ollama => "/api/embed",
        ProviderKind::Local => unreachable!("an HTTP protocol"),
    };

    // 503, then 429 asking for a second, then success: retried, and the second was waited.
    let metrics = EmbedMetrics::unregistered();
    let (w, _) = worker(&db, &server, kind, "k", config(10), metrics.clone()).await?;
    server.script([
        Scripted {
            status: 503,
            retry_after: None,
        },
        Scripted {
            status: 429,
            retry_after: Some(1),
        },
    ]);
    let start = Instant::now();
    let outcome = w.run_once().await?;
    assert_eq!((outcome.claimed, outcome.embedded), (10, 10));
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "Retry-After honoured: {:?}",
        start.elapsed()
    );
    let requests = server.requests();
    assert_eq!(requests.len(), 3, "{requests:?}");
    assert!(
        requests
            .iter()
            .all(|r| r.0 == path && r.1.as_deref() == Some("Bearer k"))
    );
    for reason in ["ProviderUnavailable", "RateLimited"] {
        assert_eq!(
            metrics.retries.get_or_create(&ReasonLabel { reason }).get(),
            1,
            "{reason}"
        );
    }
    assert_eq!(vectors_match_texts(&db.pool).await?, 0);

    // Vectors of the wrong size: the typed error, nothing written, the rows still claimable.
    sqlx::query("TRUNCATE memories, embed_audit")
        .execute(&db.pool)
        .await?;
    let mem = Memories::open(db.pool.clone()).await?;
    let rows: Vec<NewMemory> = (0..10)
        .map(|i| NewMemory::new(format!("dims {i}"), MemoryType::Agent))
        .collect();
    mem.store_batch(&rows).await?;
    server.set_dims(5);
    match w.run_once().await {
        Err(
            e @ EmbedError::DimensionMismatch {
                expected: 8,
                got: 5,
                ..
            },
        ) => {
            let s = e.to_string();
            assert!(
                s.contains("5-dimensional") && s.contains("vector(8)"),
                "{s}"
            );
        }
        other => panic!("expected DimensionMismatch, got {other:?}"),
    }
    assert_eq!(audit(&db.pool).await?.0, 0, "nothing written");
    assert_eq!(pending(&db.pool).await?, 10, "every row still pending");
    let touched: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM memories WHERE embed_attempts > 0 OR embed_error IS NOT NULL",
    )
    .fetch_one(&db.pool)
    .await?;
    assert_eq!(touched, 0, "a configuration error is no row's fault");
    server.set_dims(DIMS);

    // A poison row among 20: isolated, marked failed with the reason after max_attempts (2),
    // skipped by claims; the other 19 embedded.
    sqlx::query("TRUNCATE memories, embed_audit")
        .execute(&db.pool)
        .await?;
    let rows: Vec<NewMemory> = (0..20)
        .map(|i| {
            let text = if i == 7 {
                "a POISON pill".to_string()
            } else {
                format!("row {i}")
            };
            NewMemory::new(text, MemoryType::Agent)
        })
        .collect();
    mem.store_batch(&rows).await?;
    server.poison("POISON");
    let metrics = EmbedMetrics::unregistered();
    let (w, _) = worker(&db, &server, kind, "k", config(20), metrics.clone()).await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let run = tokio::spawn(async move {
        let total = w.run(stop_rx).await;
        (w, total)
    });
    wait_for(LIMIT, "nothing claimable left", || async {
        Ok((pending(&db.pool).await? == 0).then_some(()))
    })
    .await?;
    stop_tx.send(true)?;
    let (w, total) = tokio::time::timeout(LIMIT, run).await??;
    assert_eq!((total.embedded, total.failed), (19, 1), "{total:?}");
    let (attempts, error, failed, vector): (i32, Option<String>, bool, Option<Vector>) =
        sqlx::query_as(
            "SELECT embed_attempts, embed_error, embed_failed_at IS NOT NULL, embedding FROM memories WHERE content = 'a POISON pill'",
        )
        .fetch_one(&db.pool)
        .await?;
    assert_eq!((attempts, failed, vector.is_none()), (2, true, true));
    let error = error.unwrap_or_default();
    assert!(
        error.contains("ProviderRejected")
            && error.contains("HTTP 400")
            && error.contains("forbidden word"),
        "{error}"
    );
    assert_eq!(
        vectors_match_texts(&db.pool).await?,
        1,
        "only the poison row has no vector"
    );
    assert_eq!(
        metrics
            .failed
            .get_or_create(&ReasonLabel {
                reason: "ProviderRejected"
            })
            .get(),
        1
    );
    assert_eq!(
        w.run_once().await?.claimed,
        0,
        "a failed row is not claimed again"
    );
    db.cleanup().await
}

#[tokio::test]
async fn openai_protocol_retries_guards_dimensions_and_isolates_poison() -> anyhow::Result<()> {
    protocol_scenarios(ProviderKind::OpenAi, "embed_openai").await
}

#[tokio::test]
async fn ollama_protocol_retries_guards_dimensions_and_isolates_poison() -> anyhow::Result<()> {
    protocol_scenarios(ProviderKind::Ollama, "embed_ollama").await
}

#[tokio::test]
async fn a_row_edited_while_embedded_ends_with_its_new_texts_vector() -> anyhow::Result<()> {
    let Some(env) = testenv::require_env() else {
        return Ok(());
    };
    let db = store_with(&env, "embed_edit", 5).await?;
    let server = EmbedServer::start(DIMS).await?;
    server.hold_first_request_of("key-e");
    let (w, _) = worker(
        &db,
        &server,
        ProviderKind::OpenAi,
        "key-e",
        config(5),
        EmbedMetrics::unregistered(),
    )
    .await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let run = tokio::spawn(async move {
        w.run(stop_rx).await;
        w
    });
    let held = server.wait_held(LIMIT).await?;
    assert!(held.contains(&"memory 3".to_string()), "{held:?}");
    let mem = Memories::open(db.pool.clone()).await?;
    let id: i64 = sqlx::query_scalar("SELECT id FROM memories WHERE content = 'memory 3'")
        .fetch_one(&db.pool)
        .await?;
    let editor = mem.clone();
    let edit = tokio::spawn(async move { editor.update_content(id, "memory 3, edited").await });
    // The edit waits on the claimed row's lock while the old text is being embedded.
    wait_for(LIMIT, "the edit to wait on the row lock", || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND wait_event_type = 'Lock' AND query LIKE 'UPDATE memories SET content%'",
        )
        .fetch_one(&db.pool)
        .await?;
        Ok((waiting == 1).then_some(()))
    })
    .await?;
    server.release();
    assert!(tokio::time::timeout(LIMIT, edit).await???);
    wait_for(LIMIT, "the edited row embedded again", || async {
        let v: Option<Vector> = sqlx::query_scalar("SELECT embedding FROM memories WHERE id = $1")
            .bind(id)
            .fetch_one(&db.pool)
            .await?;
        Ok(v.is_some().then_some(()))
    })
    .await?;
    stop_tx.send(true)?;
    let _w = tokio::time::timeout(LIMIT, run).await??;
    // Every row, the edited one included, holds its current text's vector.
    assert_eq!(vectors_match_texts(&db.pool).await?, 0);
    let seen = server.seen();
    assert_eq!(seen.get("memory 3").copied(), Some(1));
    assert_eq!(seen.get("memory 3, edited").copied(), Some(1));

    // The write's own guard: a vector computed for an older text is not written over a newer one.
    mem.update_content(id, "memory 3, edited twice").await?;
    let late = Computed {
        id,
        sha: content_sha256("memory 3, edited"),
        vector: vector_for("memory 3, edited", DIMS),
    };
    assert!(
        write_vectors(&db.pool, &mem.model, &[late])
            .await?
            .is_empty()
    );
    let current = Computed {
        id,
        sha: content_sha256("memory 3, edited twice"),
        vector: vector_for("memory 3, edited twice", DIMS),
    };
    assert_eq!(write_vectors(&db.pool, &mem.model, &[current]).await?, [id]);
    assert_eq!(vectors_match_texts(&db.pool).await?, 0);
    db.cleanup().await
}

#[tokio::test]
async fn a_stopped_worker_releases_its_batch_after_the_grace() -> anyhow::Result<()> {
    let Some(env) = testenv::require_env() else {
        return Ok(());
    };
    let db = store_with(&env, "embed_stop", 6).await?;
    let server = EmbedServer::start(DIMS).await?;
    server.hold_first_request_of("key-s");
    let mut cfg = config(6);
    cfg.shutdown_grace = Duration::from_millis(300);
    let (w, _) = worker(
        &db,
        &server,
        ProviderKind::OpenAi,
        "key-s",
        cfg,
        EmbedMetrics::unregistered(),
    )
    .await?;
    let (stop_tx, stop_rx) = watch::channel(false);
    let run = tokio::spawn(async move { w.run(stop_rx).await });
    server.wait_held(LIMIT).await?;
    stop_tx.send(true)?;
    let total = tokio::time::timeout(LIMIT, run).await??;
    assert_eq!(total.embedded, 0);
    // Released, not lost: another worker claims and embeds all six at once.
    let (other, _) = worker(
        &db,
        &server,
        ProviderKind::OpenAi,
        "key-t",
        config(6),
        EmbedMetrics::unregistered(),
    )
    .await?;
    let outcome = other.run_once().await?;
    assert_eq!((outcome.claimed, outcome.embedded), (6, 6));
    assert_eq!(vectors_match_texts(&db.pool).await?, 0);
    server.release();
    db.cleanup().await
}

#[tokio::test]
async fn the_embed_worker_command_serves_metrics_hides_its_key_and_stops_on_sigterm()
-> anyhow::Result<()> {
    let Some(env) = testenv::require_env() else {
        return Ok(());
    };
    const N: usize = 300;
    const KEY: &str = "sk-test-key-do-not-print";
    let db = store_with(&env, "embed_cmd", N).await?;
    let server = EmbedServer::start(DIMS).await?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let bin = aienv_tests::jobs::aienv_bin();
    // Fail fast and say why when the binary is another build's (the target dir may be shared).
    let help = std::process::Command::new(&bin)
        .args(["embed-worker", "--help"])
        .output()
        .map_err(|e| anyhow::anyhow!("running {} (set AIENV_BIN): {e}", bin.display()))?;
    assert!(
        help.status.success(),
        "{} has no embed-worker subcommand: build this tree's binary and point AIENV_BIN at it\n{}",
        bin.display(),
        String::from_utf8_lossy(&help.stderr)
    );
    let child = tokio::process::Command::new(&bin)
        .args([
            "embed-worker",
            "--schema",
            TEST_SCHEMA,
            "--provider",
            "ollama",
        ])
        .args(["--base-url", &server.base_url(), "--batch-size", "40"])
        .args(["--idle-poll-ms", "50", "--pending-refresh-seconds", "0"])
        .args(["--http-addr", &format!("127.0.0.1:{port}")])
        .env("AIENV_DATABASE_URL", &db.url)
        .env("AIENV_EMBED_API_KEY", KEY)
        .env("RUST_LOG", "debug")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| anyhow::anyhow!("starting {} (set AIENV_BIN): {e}", bin.display()))?;
    let url = format!("http://127.0.0.1:{port}/metrics");
    let metrics = wait_for(LIMIT, "the worker to report every row embedded", || async {
        let Ok(resp) = reqwest::get(&url).await else {
            return Ok(None);
        };
        let text = resp.text().await?;
        Ok(text
            .contains(&format!("aienv_embed_embedded_rows_total {N}"))
            .then_some(text))
    })
    .await?;
    assert_eq!(vectors_match_texts(&db.pool).await?, 0);
    assert!(
        server
            .requests()
            .iter()
            .all(|r| r.0 == "/api/embed" && r.1.as_deref() == Some(&format!("Bearer {KEY}"))),
        "the key reaches the server as a Bearer token"
    );
    let pid = child.id().expect("running").to_string();
    let killed = std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()?;
    assert!(killed.success());
    let out = tokio::time::timeout(LIMIT, child.wait_with_output()).await??;
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stdout}\n{stderr}");
    for text in [&metrics, &stdout.to_string(), &stderr.to_string()] {
        assert!(!text.contains(KEY), "the key leaked: {text}");
    }
    assert!(
        stderr.contains("embedding worker stopped") || stdout.contains("embedding worker stopped"),
        "{stderr}"
    );
    db.cleanup().await
}
