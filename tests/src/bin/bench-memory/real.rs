//! `bench-memory real`: the search benchmarks on real embeddings instead of synthetic clusters
//! (which are adversarial for graph indexes and quantisation). The corpus is this machine's
//! package documentation under /usr/share/doc, split into paragraphs, embedded once with the
//! local all-MiniLM-L6-v2 (384-d) and cached in `~/.cache/aienv/bench/` (never in the repo);
//! queries are held-out paragraphs, truth is exact search on the full-precision column.

use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
    time::Instant,
};

use aienv::{
    api::memory_store::{MemoryStoreSpec, default_maintenance_work_mem},
    embed::Provider,
    memory::{Memories, MemoryType, NewMemory, ddl::StoreLayout, index_build::prepare_and_build},
};
use aienv_tests::{
    embed_fixture::{MINILM, MINILM_DIMS, load_minilm},
    testenv::{TEST_SCHEMA, TestEnv},
};
use anyhow::Context as _;

use super::Args;

const QUERIES: usize = 200;

/// Paragraphs of 120–1200 characters from the plain-text files under `root`, deduplicated, in
/// a stable order (sorted), so every run and machine with the same packages gets the same corpus.
fn paragraphs(root: &Path) -> Vec<String> {
    let mut found = BTreeSet::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(dir) = dirs.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                dirs.push(p);
            } else if p.extension().is_none_or(|x| x != "gz")
                && let Ok(text) = std::fs::read_to_string(&p)
            {
                for para in text.split("\n\n") {
                    let flat = para.split_whitespace().collect::<Vec<_>>().join(" ");
                    if (120..=1200).contains(&flat.len()) {
                        found.insert(flat);
                    }
                }
            }
        }
    }
    found.into_iter().collect()
}

fn cache_path(n: usize) -> PathBuf {
    aienv_tests::testenv::cache_dir().join(format!("bench/usr-share-doc-minilm-{n}.json"))
}

/// The corpus with its vectors: from the cache, or embedded now (and cached).
async fn corpus(env: &TestEnv, n: usize) -> anyhow::Result<Vec<(String, Vec<f32>)>> {
    let path = cache_path(n);
    if let Ok(text) = std::fs::read_to_string(&path) {
        return serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()));
    }
    let mut texts = paragraphs(Path::new("/usr/share/doc"));
    anyhow::ensure!(
        texts.len() >= n,
        "only {} paragraphs under /usr/share/doc; ask for --docs {}",
        texts.len(),
        texts.len()
    );
    // Spread over the sorted corpus rather than its first n (which would be one package's).
    let step = texts.len() as f64 / n as f64;
    texts = (0..n)
        .map(|i| texts[(i as f64 * step) as usize].clone())
        .collect();
    let model = load_minilm(&env.embed_model_dir()?, None)?;
    let t = Instant::now();
    // Batches of similar length: a batch is padded to its longest text.
    let mut by_length = texts.clone();
    by_length.sort_by_key(String::len);
    let mut vectors = std::collections::HashMap::with_capacity(n);
    for chunk in by_length.chunks(32) {
        for (text, v) in chunk.iter().zip(model.embed(chunk).await?) {
            vectors.insert(text.clone(), v);
        }
    }
    let out: Vec<(String, Vec<f32>)> = texts
        .into_iter()
        .map(|t| {
            let v = vectors[&t].clone();
            (t, v)
        })
        .collect();
    println!(
        "embedded {n} paragraphs with {MINILM} in {:.0}s (cached in {})",
        t.elapsed().as_secs_f64(),
        path.display()
    );
    std::fs::create_dir_all(path.parent().expect("a parent"))?;
    std::fs::write(&path, serde_json::to_vec(&out)?)?;
    Ok(out)
}

pub async fn run(a: &Args) -> anyhow::Result<()> {
    let env = TestEnv::load().context("test environment not running: scripts/testenv up")?;
    let all = corpus(&env, a.docs + QUERIES).await?;
    // Every (docs / QUERIES)-th paragraph is a query, the rest the store.
    let every = all.len() / QUERIES;
    let (mut stored, mut queries) = (Vec::new(), Vec::new());
    for (i, (text, v)) in all.into_iter().enumerate() {
        if i % every == 0 && queries.len() < QUERIES {
            queries.push(v);
        } else {
            stored.push((text, v));
        }
    }
    let db = env.test_database("bench_real").await?;
    let spec: MemoryStoreSpec = serde_saphyr::from_str(&format!(
        "mode: external\nembedding: {{dimensions: {MINILM_DIMS}, model: {MINILM}}}\n"
    ))?;
    let layout = StoreLayout::from_spec(&spec).expect("a valid layout");
    let build_memory = default_maintenance_work_mem();
    let pool = db.pool_on(TEST_SCHEMA, 8).await?;
    prepare_and_build(&pool, &db.target, &layout, &build_memory).await?;
    let mem = Memories::open(pool.clone()).await?;
    for chunk in stored.chunks(1000) {
        let rows: Vec<NewMemory> = chunk
            .iter()
            .map(|(text, v)| {
                let mut m = NewMemory::new(text.clone(), MemoryType::Rag);
                m.embedding = Some(v.clone());
                m
            })
            .collect();
        mem.store_batch(&rows).await?;
    }
    sqlx::query("VACUUM ANALYZE memories")
        .execute(&pool)
        .await?;
    println!(
        "bench-memory real: {} paragraphs of /usr/share/doc, {} held-out queries, {MINILM} {MINILM_DIMS}-d, k={}, index {} ef_search={}",
        stored.len(),
        queries.len(),
        super::K,
        layout.index_name(),
        mem.search_breadth
    );
    super::unfiltered(&db, &mem, &pool, &layout, &build_memory, &queries, a).await?;
    pool.close().await;
    db.cleanup().await
}
