//! Memory benchmark on the harness PostgreSQL 18 + pgvector: synthetic *clustered* 768-d vectors
//! (uniform random vectors understate recall), HNSW k=20 search at 1 and 4 clients with recall
//! against exact search, filtered search at 0.1 / 1 / 10 % selectivity, and batched vs single-row
//! writes. Every figure is printed with its ratio to a baseline measured in the same run.
//!
//! The API's search against the bare SQL statement on the same table, at 1 and 4 clients.
//!
//! `cargo run --release -p aienv-tests --bin bench-memory -- [--rows 100000] [--queries 200] [--repeat 3] [--passes 5]`
//! (needs `scripts/testenv up`; building the index on 100k rows takes minutes on 2 cores).

use std::time::{Duration, Instant};

use aienv::{
    api::memory_store::{MemoryStoreSpec, default_maintenance_work_mem},
    memory::{
        Filter, Memories, MemoryType, NewMemory, ddl::StoreLayout, index_build::prepare_and_build,
    },
};
use aienv_tests::testenv::{TEST_SCHEMA, TestEnv};
use anyhow::Context as _;
use rand::{Rng, SeedableRng, rngs::StdRng};

mod real;

const DIMS: usize = 768;
const K: u32 = 20;

struct Args {
    rows: usize,
    queries: usize,
    clusters: usize,
    write_rows: usize,
    /// Alternating runs of each search path (best kept).
    repeat: usize,
    /// Times each unfiltered run goes through the queries.
    passes: usize,
    /// `real`: paragraphs of this machine's package docs embedded with MiniLM instead of the
    /// synthetic clusters (cached outside the repo).
    real: bool,
    /// Paragraphs in the real corpus.
    docs: usize,
}

fn args() -> Args {
    let mut a = Args {
        rows: 100_000,
        queries: 200,
        clusters: 100,
        write_rows: 2_000,
        repeat: 3,
        passes: 5,
        real: false,
        docs: 20_000,
    };
    let mut argv: Vec<String> = std::env::args().skip(1).collect();
    if argv.first().map(String::as_str) == Some("real") {
        a.real = true;
        argv.remove(0);
    }
    let mut i = 0;
    while i + 1 < argv.len() {
        let v: usize = argv[i + 1].parse().expect("a number");
        match argv[i].as_str() {
            "--rows" => a.rows = v,
            "--queries" => a.queries = v,
            "--clusters" => a.clusters = v,
            "--write-rows" => a.write_rows = v,
            "--repeat" => a.repeat = v,
            "--passes" => a.passes = v,
            "--docs" => a.docs = v,
            other => panic!("unknown flag {other}"),
        }
        i += 2;
    }
    a
}

fn normalise(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter_mut().for_each(|x| *x /= n);
}

/// Gaussian-ish noise from the sum of uniforms (cheap and good enough).
fn noise(rng: &mut StdRng) -> f32 {
    (0..4).map(|_| rng.random::<f32>() - 0.5).sum::<f32>()
}

struct Corpus {
    centers: Vec<Vec<f32>>,
}

impl Corpus {
    fn new(clusters: usize, rng: &mut StdRng) -> Self {
        let centers = (0..clusters)
            .map(|_| {
                let mut c: Vec<f32> = (0..DIMS).map(|_| noise(rng)).collect();
                normalise(&mut c);
                c
            })
            .collect();
        Self { centers }
    }

    /// A point near a random center (spread so neighbours inside a cluster are not trivial).
    fn point(&self, rng: &mut StdRng) -> Vec<f32> {
        let c = &self.centers[rng.random_range(0..self.centers.len())];
        let mut v: Vec<f32> = c.iter().map(|x| x + 0.045 * noise(rng)).collect();
        normalise(&mut v);
        v
    }
}

fn memory(i: usize, v: Vec<f32>) -> NewMemory {
    let mut m = NewMemory::new(format!("synthetic memory {i}"), MemoryType::Rag);
    // Selectivity groups: agent p01 = 0.1 %, agent p1 = 1 %, session s10 = 10 %.
    m.agent_id = Some(if i.is_multiple_of(1000) {
        "p01".into()
    } else if i % 100 == 50 {
        "p1".into()
    } else {
        format!("a{}", i % 37)
    });
    m.session_id = Some(if i % 10 == 3 {
        "s10".into()
    } else {
        format!("s{}", i % 13)
    });
    m.embedding = Some(v);
    m
}

fn pct(sorted: &[Duration], p: f64) -> f64 {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx].as_secs_f64() * 1000.0
}

struct Run {
    qps: f64,
    p50: f64,
    p95: f64,
    p99: f64,
    recall: f64,
}

/// Who answers the queries.
#[derive(Clone)]
enum Searcher {
    /// `Memories::search_vector` (the handle decides: one statement or a transaction).
    Api(Memories),
    /// `Memories::search_vector_exact`: the ground truth.
    Exact(Memories),
    /// The bare `ORDER BY embedding <=> $1 LIMIT k` on a pool with the same session settings:
    /// what the API costs on top of pgvector.
    Raw(sqlx::PgPool),
}

const RAW: &str = "SELECT id, content, memory_type, agent_id, session_id, metadata FROM memories \
     ORDER BY embedding <=> $1 LIMIT $2";

impl Searcher {
    async fn ids(&self, q: &[f32], filter: &Filter) -> anyhow::Result<Vec<i64>> {
        let hits = match self {
            Searcher::Api(m) => m.search_vector(q, K, filter).await?,
            Searcher::Exact(m) => m.search_vector_exact(q, K, filter).await?,
            Searcher::Raw(pool) => {
                let rows = sqlx::query(RAW)
                    .bind(pgvector::Vector::from(q.to_vec()))
                    .bind(i64::from(K))
                    .fetch_all(pool)
                    .await?;
                return Ok(rows
                    .iter()
                    .map(|r| sqlx::Row::get::<i64, _>(r, "id"))
                    .collect());
            }
        };
        Ok(hits.iter().map(|h| h.id).collect())
    }
}

async fn run_queries(
    mem: &Memories,
    queries: &[Vec<f32>],
    truth: &[Vec<i64>],
    filter: &Filter,
    clients: usize,
    exact: bool,
) -> anyhow::Result<Run> {
    let who = if exact {
        Searcher::Exact(mem.clone())
    } else {
        Searcher::Api(mem.clone())
    };
    run_with(&who, queries, truth, filter, clients).await
}

async fn run_with(
    who: &Searcher,
    queries: &[Vec<f32>],
    truth: &[Vec<i64>],
    filter: &Filter,
    clients: usize,
) -> anyhow::Result<Run> {
    let start = Instant::now();
    let per_client = queries.len().div_ceil(clients);
    let tasks = (0..clients).map(|c| {
        let who = who.clone();
        let qs: Vec<(usize, Vec<f32>)> = queries
            .iter()
            .cloned()
            .enumerate()
            .skip(c * per_client)
            .take(per_client)
            .collect();
        let filter = filter.clone();
        tokio::spawn(async move {
            let mut out = Vec::new();
            for (i, q) in qs {
                let t = Instant::now();
                let ids = who.ids(&q, &filter).await?;
                out.push((i, t.elapsed(), ids));
            }
            anyhow::Ok(out)
        })
    });
    let mut lat = Vec::new();
    let mut found = 0usize;
    let mut wanted = 0usize;
    for r in futures::future::join_all(tasks).await {
        for (i, d, ids) in r?? {
            lat.push(d);
            if let Some(t) = truth.get(i) {
                wanted += t.len();
                found += ids.iter().filter(|id| t.contains(id)).count();
            }
        }
    }
    let elapsed = start.elapsed().as_secs_f64();
    lat.sort();
    Ok(Run {
        qps: lat.len() as f64 / elapsed,
        p50: pct(&lat, 0.5),
        p95: pct(&lat, 0.95),
        p99: pct(&lat, 0.99),
        recall: if wanted == 0 {
            1.0
        } else {
            found as f64 / wanted as f64
        },
    })
}

async fn truth(
    mem: &Memories,
    queries: &[Vec<f32>],
    filter: &Filter,
) -> anyhow::Result<Vec<Vec<i64>>> {
    let mut out = Vec::new();
    for q in queries {
        out.push(
            mem.search_vector_exact(q, K, filter)
                .await?
                .iter()
                .map(|h| h.id)
                .collect(),
        );
    }
    Ok(out)
}

/// Float against half precision on the same table and queries: the half index is built beside
/// the float one (the planner takes each for the expression it serves), then both are searched
/// alternately; recall against exact search on the full-precision column.
async fn compare_precision(
    mem: &Memories,
    pool: &sqlx::PgPool,
    layout: &StoreLayout,
    build_memory: &str,
    queries: &[Vec<f32>],
    truth: &[Vec<i64>],
    repeat: usize,
) -> anyhow::Result<()> {
    use aienv::api::memory_store::Precision;
    let mut half_layout = layout.clone();
    half_layout.precision = Precision::Half;
    let mut conn = pool.acquire().await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "SET maintenance_work_mem = '{build_memory}'"
    )))
    .execute(&mut *conn)
    .await?;
    let t = Instant::now();
    sqlx::query(sqlx::AssertSqlSafe(half_layout.create_index()))
        .execute(&mut *conn)
        .await?;
    let half_build = t.elapsed().as_secs_f64();
    drop(conn);
    let size = |name: String| async move {
        let bytes: i64 = sqlx::query_scalar("SELECT pg_relation_size($1::regclass)")
            .bind(name)
            .fetch_one(pool)
            .await?;
        anyhow::Ok(bytes as f64 / 1e6)
    };
    let (float_mb, half_mb) = (
        size(layout.index_name()).await?,
        size(half_layout.index_name()).await?,
    );
    let mut half = mem.clone();
    half.precision = Precision::Half;
    let (float_s, half_s) = (Searcher::Api(mem.clone()), Searcher::Api(half));
    for clients in [1, 4] {
        let (mut f, mut h) = (None::<Run>, None::<Run>);
        for _ in 0..repeat {
            let rf = run_with(&float_s, queries, truth, &Filter::default(), clients).await?;
            let rh = run_with(&half_s, queries, truth, &Filter::default(), clients).await?;
            if f.as_ref().is_none_or(|b| rf.qps > b.qps) {
                f = Some(rf);
            }
            if h.as_ref().is_none_or(|b| rh.qps > b.qps) {
                h = Some(rh);
            }
        }
        let (f, h) = (f.expect("repeat >= 1"), h.expect("repeat >= 1"));
        println!(
            "precision {clients} client(s): float {:.0} QPS recall {:.3} index {float_mb:.0} MB (baseline); half {:.0} QPS = {:.2}x, recall {:.3}, index {half_mb:.0} MB = {:.2}x (built in {half_build:.1}s)",
            f.qps,
            f.recall,
            h.qps,
            h.qps / f.qps,
            h.recall,
            half_mb / float_mb
        );
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP INDEX {}",
        half_layout.index_name()
    )))
    .execute(pool)
    .await?;
    Ok(())
}

/// Exact search (baseline), the API against the bare statement, and float against half: the
/// unfiltered figures every corpus gets.
async fn unfiltered(
    db: &aienv_tests::testenv::TestDatabase,
    mem: &Memories,
    pool: &sqlx::PgPool,
    layout: &StoreLayout,
    build_memory: &str,
    queries: &[Vec<f32>],
    a: &Args,
) -> anyhow::Result<()> {
    let none = Filter::default();
    let exact_truth = truth(mem, queries, &none).await?;
    let exact = run_queries(
        mem,
        &queries[..queries.len().min(50)],
        &exact_truth,
        &none,
        1,
        true,
    )
    .await?;
    println!(
        "exact (baseline, 1 client): {:.1} QPS p50 {:.1} ms p99 {:.1} ms",
        exact.qps, exact.p50, exact.p99
    );
    // Each timed run goes `passes` times through the queries: a 1-client run over 200 fast
    // queries lasts a quarter of a second, and on this machine that is mostly noise.
    let (queries, exact_truth): (Vec<_>, Vec<_>) = (0..a.passes.max(1))
        .flat_map(|_| queries.iter().cloned().zip(exact_truth.iter().cloned()))
        .unzip();
    compare_round_trips(db, mem, &queries, &exact_truth, exact.qps, a.repeat).await?;
    compare_precision(
        mem,
        pool,
        layout,
        build_memory,
        &queries,
        &exact_truth,
        a.repeat,
    )
    .await
}

/// The API at 1 and 4 clients against the bare statement (see [`Searcher::Raw`]).
async fn compare_round_trips(
    db: &aienv_tests::testenv::TestDatabase,
    mem: &Memories,
    queries: &[Vec<f32>],
    truth: &[Vec<i64>],
    exact_qps: f64,
    repeat: usize,
) -> anyhow::Result<()> {
    let none = Filter::default();
    // The bare statement on a pool with the same session settings (baseline), the handle that
    // sets them per transaction (`open`), and the one whose connections start with them
    // (`connect`: one statement per unfiltered search). Runs alternate, best of `repeat` each, so
    // a noisy moment hurts all three alike.
    let options = aienv::memory::store_connect_options(db.url.parse()?, TEST_SCHEMA);
    let connected = Memories::connect(options.clone(), 8).await?;
    let raw_pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(8)
        .test_before_acquire(false)
        .connect_with(options.options([
            ("hnsw.ef_search", mem.search_breadth.to_string()),
            ("hnsw.iterative_scan", "off".to_string()),
        ]))
        .await?;
    let raw = Searcher::Raw(raw_pool.clone());
    let per_tx = Searcher::Api(mem.clone());
    let one_statement = Searcher::Api(connected.clone());
    for clients in [1, 4] {
        let (mut best_raw, mut best_tx, mut best_one) = (0f64, 0f64, 0f64);
        let mut recall = 0.0;
        for _ in 0..repeat {
            best_raw = best_raw.max(run_with(&raw, queries, truth, &none, clients).await?.qps);
            best_tx = best_tx.max(run_with(&per_tx, queries, truth, &none, clients).await?.qps);
            let r = run_with(&one_statement, queries, truth, &none, clients).await?;
            recall = r.recall;
            best_one = best_one.max(r.qps);
        }
        println!(
            "hnsw k={K} {clients} client(s): raw SQL {best_raw:.0} QPS (baseline); API per-transaction settings {best_tx:.0} QPS = {:.3}x; API one statement {best_one:.0} QPS = {:.3}x ({:.0}x exact), recall {recall:.3}",
            best_tx / best_raw,
            best_one / best_raw,
            best_one / exact_qps,
        );
    }
    raw_pool.close().await;
    connected.pool().close().await;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args();
    if a.real {
        return real::run(&a).await;
    }
    let env = TestEnv::load().context("test environment not running: scripts/testenv up")?;
    let db = env.test_database("bench_mem").await?;
    let mut rng = StdRng::seed_from_u64(42);
    let corpus = Corpus::new(a.clusters, &mut rng);
    let spec: MemoryStoreSpec = serde_saphyr::from_str("mode: external\n")?;
    let layout = StoreLayout::from_spec(&spec).expect("default layout");
    // The index is built the way the operator builds it: in its own session, with the
    // MemoryStore's default maintenance_work_mem.
    let build_memory = default_maintenance_work_mem();
    let pool = db.pool_on(TEST_SCHEMA, 8).await?;
    prepare_and_build(&pool, &db.target, &layout, &build_memory).await?;
    let mem = Memories::open(pool.clone()).await?;
    println!(
        "bench-memory: rows={} dims={DIMS} clusters={} queries={} k={K}; index {} ef_search={} iterative_scan=relaxed_order (filtered) max_scan_tuples={}",
        a.rows,
        a.clusters,
        a.queries,
        layout.index_name(),
        mem.search_breadth,
        mem.max_scan_tuples
    );

    // Writes, with the HNSW index in place (what production sees).
    let single: Vec<NewMemory> = (0..a.write_rows)
        .map(|i| memory(i, corpus.point(&mut rng)))
        .collect();
    let t = Instant::now();
    for m in &single {
        mem.store(m).await?;
    }
    let single_rps = a.write_rows as f64 / t.elapsed().as_secs_f64();
    let batched: Vec<NewMemory> = (0..a.write_rows)
        .map(|i| memory(i, corpus.point(&mut rng)))
        .collect();
    let t = Instant::now();
    for chunk in batched.chunks(500) {
        mem.store_batch(chunk).await?;
    }
    let batch_rps = a.write_rows as f64 / t.elapsed().as_secs_f64();
    println!(
        "writes with vectors ({} rows each, HNSW index present): single-row {single_rps:.0} rows/s (baseline); batched x500 {batch_rps:.0} rows/s = {:.1}x",
        a.write_rows,
        batch_rps / single_rps
    );
    // The usual path: content now, vector later from the embedding workers.
    let pending = |rng: &mut StdRng| -> Vec<NewMemory> {
        (0..a.write_rows)
            .map(|i| {
                let mut m = memory(i, corpus.point(rng));
                m.embedding = None;
                m
            })
            .collect()
    };
    let single = pending(&mut rng);
    let t = Instant::now();
    for m in &single {
        mem.store(m).await?;
    }
    let single_rps = a.write_rows as f64 / t.elapsed().as_secs_f64();
    let batched = pending(&mut rng);
    let t = Instant::now();
    for chunk in batched.chunks(500) {
        mem.store_batch(chunk).await?;
    }
    let batch_rps = a.write_rows as f64 / t.elapsed().as_secs_f64();
    println!(
        "writes pending embedding ({} rows each): single-row {single_rps:.0} rows/s (baseline); batched x500 {batch_rps:.0} rows/s = {:.1}x",
        a.write_rows,
        batch_rps / single_rps
    );

    // Bulk load without the index, then build it (as a re-index would).
    sqlx::query("TRUNCATE memories").execute(&pool).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP INDEX {}",
        layout.index_name()
    )))
    .execute(&pool)
    .await?;
    let t = Instant::now();
    let mut i = 0;
    while i < a.rows {
        let n = (a.rows - i).min(1000);
        let chunk: Vec<NewMemory> = (i..i + n)
            .map(|j| memory(j, corpus.point(&mut rng)))
            .collect();
        mem.store_batch(&chunk).await?;
        i += n;
    }
    let load = t.elapsed();
    sqlx::query("VACUUM ANALYZE memories")
        .execute(&pool)
        .await?;
    let t = Instant::now();
    prepare_and_build(&pool, &db.target, &layout, &build_memory).await?;
    println!(
        "load: {} rows in {:.1}s ({:.0} rows/s, no index); HNSW build {:.1}s (maintenance_work_mem {build_memory}, the operator's default)",
        a.rows,
        load.as_secs_f64(),
        a.rows as f64 / load.as_secs_f64(),
        t.elapsed().as_secs_f64()
    );

    let queries: Vec<Vec<f32>> = (0..a.queries).map(|_| corpus.point(&mut rng)).collect();
    unfiltered(&db, &mem, &pool, &layout, &build_memory, &queries, &a).await?;
    for (label, filter) in [
        (
            "0.1%",
            Filter {
                agent_id: Some("p01".into()),
                ..Default::default()
            },
        ),
        (
            "1%",
            Filter {
                agent_id: Some("p1".into()),
                ..Default::default()
            },
        ),
        (
            "10%",
            Filter {
                session_id: Some("s10".into()),
                ..Default::default()
            },
        ),
    ] {
        let t = truth(&mem, &queries, &filter).await?;
        let base = run_queries(&mem, &queries[..a.queries.min(50)], &t, &filter, 1, true).await?;
        let r = run_queries(&mem, &queries, &t, &filter, 1, false).await?;
        println!(
            "filtered {label}: recall {:.3} p95 {:.2} ms p50 {:.2} ms ({:.0} QPS; exact baseline p95 {:.2} ms = {:.1}x)",
            r.recall,
            r.p95,
            r.p50,
            r.qps,
            base.p95,
            base.p95 / r.p95
        );
    }
    pool.close().await;
    db.cleanup().await
}
