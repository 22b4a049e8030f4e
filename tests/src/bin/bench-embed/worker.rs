//! The `worker` section: a store of N pending memories (384-d, MiniLM's size, with the store's
//! HNSW index, as in production) embedded against a loopback server that answers instantly
//! (`EmbedServer::start_fast`), so what is left is the worker, PostgreSQL and HTTP on loopback.
//! Each run starts from the same table (truncated and refilled from a template).
//!
//! - Baseline "direct": the bench itself issues the worker's own statements ([`CLAIM`],
//!   [`WRITE`]) and the same `POST /v1/embeddings` per batch, with nothing else: no retries,
//!   metrics, bisection or checks. The worker's overhead is its rows/s against this one's.
//! - "worker": the real `aienv::embed::Worker::run` with one replica.
//! - Both at `--batch` (default 64, the worker's default) and at 1 (one row per request, on
//!   `--single-rows` rows: the rate is what counts). Runs alternate and repeat `--repeat` times;
//!   the median is reported, the range beside it.

use std::time::{Duration, Instant};

use aienv::{
    embed::{
        ProviderKind, Worker, WorkerConfig,
        metrics::EmbedMetrics,
        worker::{CLAIM, WRITE},
    },
    memory::{Memories, MemoryType, NewMemory, ddl::StoreLayout},
};
use aienv_tests::{
    embed_server::EmbedServer,
    testenv::{TEST_SCHEMA, TestDatabase, TestEnv},
};
use anyhow::{Context as _, bail};
use pgvector::Vector;
use rand::{Rng, SeedableRng, rngs::StdRng};
use sqlx::PgPool;
use tokio::sync::watch;

use crate::Flags;

const DIMS: usize = 384;
/// Connections of each run's pool (what `aienv embed-worker` opens).
const POOL: u32 = 2;
const TIMEOUT: Duration = Duration::from_secs(60);
/// The template every run's table is refilled from.
const TEMPLATE: &str = "bench_embed_template";
const COLUMNS: &str = "id, content, memory_type, agent_id, session_id, metadata, content_sha256, created_at, updated_at";

pub struct Options {
    rows: usize,
    single_rows: usize,
    batch: usize,
    repeat: usize,
    /// Drop the store's HNSW index (1 = drop): what is left is the worker, the row writes, HTTP.
    no_index: bool,
}

impl Options {
    pub fn from_flags(f: &mut Flags) -> anyhow::Result<Self> {
        let o = Self {
            rows: f.usize("rows", 20_000)?,
            single_rows: f.usize("single-rows", 2_000)?,
            batch: f.usize("batch", WorkerConfig::default().batch_size as usize)?,
            repeat: f.usize("repeat", 3)?,
            no_index: f.usize("no-index", 0)? == 1,
        };
        if o.rows == 0 || o.batch == 0 || o.repeat == 0 || o.single_rows == 0 {
            bail!("--rows, --single-rows, --batch and --repeat must be at least 1");
        }
        Ok(o)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Runner {
    Direct,
    Worker,
}

impl Runner {
    fn name(self) -> &'static str {
        match self {
            Runner::Direct => "direct (baseline)",
            Runner::Worker => "worker",
        }
    }
}

/// One timed run.
#[derive(Clone, Copy, Debug)]
struct Measured {
    rows: usize,
    secs: f64,
    /// CPU of this process (the client and the loopback server), user + system.
    cpu_s: f64,
}

impl Measured {
    fn rps(&self) -> f64 {
        self.rows as f64 / self.secs
    }
}

/// Wall clock and process CPU from one point on.
struct Clock {
    started: Instant,
    cpu_s: f64,
}

impl Clock {
    fn start() -> Self {
        Self {
            started: Instant::now(),
            cpu_s: process_cpu(),
        }
    }

    fn stop(&self, rows: usize) -> Measured {
        Measured {
            rows,
            secs: self.started.elapsed().as_secs_f64(),
            cpu_s: process_cpu() - self.cpu_s,
        }
    }
}

/// A memory of a sentence or two, like an agent's note (what the server is sent).
fn text(i: usize, rng: &mut StdRng) -> String {
    const WORDS: &[&str] = &[
        "user",
        "prefers",
        "deploy",
        "staging",
        "cluster",
        "before",
        "review",
        "the",
        "config",
        "database",
        "migration",
        "failed",
        "because",
        "timeout",
        "retry",
        "agent",
        "noted",
        "that",
        "backup",
        "restored",
        "latency",
        "index",
        "query",
        "slow",
        "fixed",
        "after",
        "upgrade",
        "secret",
        "rotated",
        "weekly",
        "release",
        "notes",
        "mention",
        "tests",
        "flaky",
    ];
    let mut s = format!("memory {i}:");
    for _ in 0..rng.random_range(20..40) {
        s.push(' ');
        s.push_str(WORDS[rng.random_range(0..WORDS.len())]);
    }
    s.push('.');
    s
}

async fn load(
    env: &TestEnv,
    rows: usize,
    no_index: bool,
) -> anyhow::Result<(TestDatabase, String)> {
    let db = env.test_database("bench_embed").await?;
    let spec: aienv::api::memory_store::MemoryStoreSpec = serde_saphyr::from_str(&format!(
        "mode: external\nembedding: {{dimensions: {DIMS}}}\n"
    ))?;
    let layout = StoreLayout::from_spec(&spec).expect("layout");
    db.prepare(&layout).await?;
    if no_index {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP INDEX {}",
            layout.index_name()
        )))
        .execute(&db.pool)
        .await?;
    }
    let mem = Memories::open(db.pool.clone()).await?;
    let mut rng = StdRng::seed_from_u64(12);
    let all: Vec<NewMemory> = (0..rows)
        .map(|i| NewMemory::new(text(i, &mut rng), MemoryType::Agent))
        .collect();
    for chunk in all.chunks(1000) {
        mem.store_batch(chunk).await?;
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE TABLE {TEMPLATE} AS SELECT {COLUMNS} FROM memories"
    )))
    .execute(&db.pool)
    .await?;
    Ok((db, mem.model))
}

/// Every row pending again, from the same template, freshly vacuumed and analysed.
async fn reset(pool: &PgPool) -> anyhow::Result<()> {
    sqlx::query("TRUNCATE memories").execute(pool).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO memories ({COLUMNS}) SELECT {COLUMNS} FROM {TEMPLATE}"
    )))
    .execute(pool)
    .await?;
    sqlx::query("VACUUM ANALYZE memories").execute(pool).await?;
    Ok(())
}

/// CPU seconds (user + system) of this process so far, from /proc/self/stat.
fn process_cpu() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields 14 and 15 (utime, stime), counted after the `(comm)` that may hold spaces.
    let ticks: u64 = stat
        .rsplit_once(')')
        .map(|(_, rest)| {
            rest.split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|v| v.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or_default();
    // USER_HZ is 100 on Linux.
    ticks as f64 / 100.0
}

/// The request the worker's OpenAI protocol sends, serialised straight from borrowed texts.
#[derive(serde::Serialize)]
struct Request<'a> {
    model: &'a str,
    input: &'a [&'a str],
    encoding_format: &'static str,
}

#[derive(serde::Deserialize)]
struct Response {
    data: Vec<Item>,
}

#[derive(serde::Deserialize)]
struct Item {
    index: usize,
    embedding: Vec<f32>,
}

/// What one run embeds: `target` rows of the pool's store, `batch` rows per request.
#[derive(Clone, Copy)]
struct Job<'a> {
    pool: &'a PgPool,
    base_url: &'a str,
    model: &'a str,
    batch: usize,
    target: usize,
}

/// The baseline: the worker's statements and request, one batch after another, until `target`
/// rows are written or nothing is pending.
async fn direct(job: &Job<'_>) -> anyhow::Result<Measured> {
    let Job {
        pool,
        base_url,
        model,
        batch,
        target,
    } = *job;
    let client = reqwest::Client::builder().timeout(TIMEOUT).build()?;
    let url = format!("{base_url}/v1/embeddings");
    let clock = Clock::start();
    let mut done = 0;
    while done < target {
        let mut tx = pool.begin().await?;
        let rows: Vec<(i64, String, String)> = sqlx::query_as(CLAIM)
            .bind(batch as i64)
            .fetch_all(&mut *tx)
            .await?;
        if rows.is_empty() {
            break;
        }
        let texts: Vec<&str> = rows.iter().map(|r| r.1.as_str()).collect();
        let answer = client
            .post(&url)
            .json(&Request {
                model,
                input: &texts,
                encoding_format: "float",
            })
            .send()
            .await?
            .error_for_status()?
            .bytes()
            .await?;
        let answer: Response = serde_json::from_slice(&answer)?;
        let mut vectors: Vec<Option<Vector>> = vec![None; rows.len()];
        for item in answer.data {
            vectors[item.index] = Some(Vector::from(item.embedding));
        }
        let vectors: Vec<Vector> = vectors
            .into_iter()
            .collect::<Option<_>>()
            .context("a vector per input")?;
        let ids: Vec<i64> = rows.iter().map(|r| r.0).collect();
        let shas: Vec<&str> = rows.iter().map(|r| r.2.as_str()).collect();
        let written: Vec<i64> = sqlx::query_scalar(WRITE)
            .bind(&ids)
            .bind(&shas)
            .bind(&vectors)
            .bind(model)
            .fetch_all(&mut *tx)
            .await?;
        tx.commit().await?;
        done += written.len();
    }
    Ok(clock.stop(done))
}

/// The real worker, run until it has written `target` rows (its own counter, read every
/// millisecond), then stopped; timed from its start to that count.
async fn worker(job: &Job<'_>) -> anyhow::Result<Measured> {
    let Job {
        pool,
        base_url,
        model,
        batch,
        target,
    } = *job;
    let provider = aienv::embed::provider(ProviderKind::OpenAi, base_url, model, None, TIMEOUT)?;
    let metrics = EmbedMetrics::unregistered();
    let config = WorkerConfig {
        batch_size: u32::try_from(batch)?,
        ..WorkerConfig::default()
    };
    let w = Worker::open(pool.clone(), provider, config, metrics.clone()).await?;
    let (stop, stopped) = watch::channel(false);
    let clock = Clock::start();
    let run = tokio::spawn(async move { w.run(stopped).await });
    let deadline = Instant::now() + Duration::from_secs(600);
    while (metrics.embedded.get() as usize) < target {
        if run.is_finished() || Instant::now() > deadline {
            bail!(
                "the worker stopped or stalled at {} of {target} rows",
                metrics.embedded.get()
            );
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let m = clock.stop(metrics.embedded.get() as usize);
    stop.send(true)?;
    run.await?;
    Ok(m)
}

async fn measure(
    db: &TestDatabase,
    server: &EmbedServer,
    model: &str,
    runner: Runner,
    batch: usize,
    target: usize,
) -> anyhow::Result<Measured> {
    reset(&db.pool).await?;
    let pool = db.pool_on(TEST_SCHEMA, POOL).await?;
    // Connected before the clock starts (the worker connects in `open`, also untimed).
    sqlx::query("SELECT 1").execute(&pool).await?;
    let base = server.base_url();
    let job = Job {
        pool: &pool,
        base_url: &base,
        model,
        batch,
        target,
    };
    let m = match runner {
        Runner::Direct => direct(&job).await?,
        Runner::Worker => worker(&job).await?,
    };
    // Not a timing check: a run that wrote fewer vectors than it counted measured nothing.
    let written: i64 =
        sqlx::query_scalar("SELECT count(*) FROM memories WHERE embedding IS NOT NULL")
            .fetch_one(&db.pool)
            .await?;
    if m.rows < target || (written as usize) < m.rows {
        bail!(
            "{} at batch {batch}: {} rows counted, {written} vectors in the table, {target} wanted",
            runner.name(),
            m.rows
        );
    }
    pool.close().await;
    Ok(m)
}

/// Median and range of a series of runs, in rows/s.
struct Summary {
    median: f64,
    min: f64,
    max: f64,
    /// Median CPU of this process per row, in microseconds.
    cpu_us: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn summary(runs: &[Measured]) -> Summary {
    let rps: Vec<f64> = runs.iter().map(Measured::rps).collect();
    Summary {
        median: median(rps.clone()),
        min: rps.iter().copied().fold(f64::INFINITY, f64::min),
        max: rps.iter().copied().fold(0.0, f64::max),
        cpu_us: median(runs.iter().map(|m| m.cpu_s * 1e6 / m.rows as f64).collect()),
    }
}

pub async fn run(env: &TestEnv, o: &Options) -> anyhow::Result<()> {
    let t = Instant::now();
    let (db, model) = load(env, o.rows, o.no_index).await?;
    let server = EmbedServer::start_fast(DIMS).await?;
    println!(
        "worker: {} pending memories x {DIMS}-d (HNSW index {}), loaded in {:.1}s; loopback server answering one fixed vector instantly; batch {} on all {} rows, batch 1 on {} rows; {} runs each, alternating",
        o.rows,
        if o.no_index { "dropped" } else { "present" },
        t.elapsed().as_secs_f64(),
        o.batch,
        o.rows,
        o.single_rows.min(o.rows),
        o.repeat
    );
    let configs = [
        (Runner::Direct, o.batch, o.rows),
        (Runner::Worker, o.batch, o.rows),
        (Runner::Direct, 1, o.single_rows.min(o.rows)),
        (Runner::Worker, 1, o.single_rows.min(o.rows)),
    ];
    let mut runs: Vec<Vec<Measured>> = vec![Vec::new(); configs.len()];
    for rep in 0..o.repeat {
        for (i, &(runner, batch, target)) in configs.iter().enumerate() {
            let m = measure(&db, &server, &model, runner, batch, target).await?;
            println!(
                "  run {}: {:<17} batch {batch:>3}: {:>6} rows in {:.2}s = {:.0} rows/s, process CPU {:.0} us/row",
                rep + 1,
                runner.name(),
                m.rows,
                m.secs,
                m.rps(),
                m.cpu_s * 1e6 / m.rows as f64
            );
            runs[i].push(m);
        }
    }
    let s: Vec<Summary> = runs.iter().map(|r| summary(r)).collect();
    for (i, &(runner, batch, _)) in configs.iter().enumerate() {
        println!(
            "{:<17} batch {batch:>3}: {:.0} rows/s median ({:.0}-{:.0}); process CPU {:.0} us/row",
            runner.name(),
            s[i].median,
            s[i].min,
            s[i].max,
            s[i].cpu_us
        );
    }
    let overhead =
        |direct: &Summary, worker: &Summary| 100.0 * (1.0 - worker.median / direct.median);
    println!();
    println!(
        "goals (issue 12): worker >= 5000 rows/s: {:.0} rows/s; overhead <= 5 % vs direct at batch {}: {:.1} % ({:.3}x direct); batch {} >= 10x batch 1: {:.1}x",
        s[1].median,
        o.batch,
        overhead(&s[0], &s[1]),
        s[1].median / s[0].median,
        o.batch,
        s[1].median / s[3].median
    );
    println!(
        "at batch 1 the worker's per-batch cost shows most: overhead {:.1} % ({:.3}x direct); direct batch {} = {:.1}x direct batch 1",
        overhead(&s[2], &s[3]),
        s[3].median / s[2].median,
        o.batch,
        s[0].median / s[2].median
    );
    db.cleanup().await
}
