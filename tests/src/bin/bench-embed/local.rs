//! The local provider (candle, in-process) against sentence-transformers (PyTorch) in the
//! throwaway venv of tools/embed-fixture/reference.py, on the same batches of the fixture's
//! sentences with the same thread count; goal ≥ 1× sentence-transformers' rows/s. Two corpora:
//! the fixture's sentences as they are (one past the 256-token limit among short ones: the
//! provider's length grouping saves the padding sentence-transformers computes) and the short
//! sentences alone (padding hardly matters: kernels against kernels).

use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use aienv::embed::Provider;
use aienv_tests::embed_fixture::{MinilmReference, load_minilm};
use anyhow::Context as _;

/// The venv with sentence-transformers: `$AIENV_ST_VENV`, else `st-venv` in the cache.
fn st_venv() -> PathBuf {
    std::env::var_os("AIENV_ST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| aienv_tests::testenv::cache_dir().join("st-venv"))
}

/// Times `model.encode` per batch (one call per batch, as the worker sends them), after a
/// warm-up batch, for each corpus in turn.
const ST_SCRIPT: &str = r#"
import json, sys, time, torch
from sentence_transformers import SentenceTransformer
model_dir, threads = sys.argv[1], int(sys.argv[2])
torch.set_num_threads(threads)
corpora = json.load(sys.stdin)
model = SentenceTransformer(model_dir, device="cpu")
timings = []
for batches in corpora:
    model.encode(batches[0], batch_size=len(batches[0]))
    start = time.perf_counter()
    rows = 0
    for b in batches:
        rows += len(model.encode(b, batch_size=len(b)))
    timings.append({"rows": rows, "seconds": time.perf_counter() - start})
print(json.dumps(timings))
"#;

#[derive(serde::Deserialize)]
struct StTiming {
    rows: usize,
    seconds: f64,
}

/// One corpus: `rows` texts cycled from `sentences`, in batches of `batch`.
struct Corpus {
    label: &'static str,
    batches: Vec<Vec<String>>,
}

impl Corpus {
    fn new(label: &'static str, sentences: &[String], rows: usize, batch: usize) -> Self {
        let texts: Vec<String> = sentences.iter().cycle().take(rows).cloned().collect();
        Self {
            label,
            batches: texts.chunks(batch).map(<[String]>::to_vec).collect(),
        }
    }
}

pub async fn run(
    model_dir: &Path,
    threads: usize,
    rows: usize,
    batch: usize,
) -> anyhow::Result<()> {
    let reference = MinilmReference::load()?;
    let provider = load_minilm(model_dir, Some(threads))?;
    // The fixture's one text past the model's limit (its last sentence) is what padding costs.
    let limit = provider.max_seq_length();
    let short: Vec<String> = reference
        .sentences
        .iter()
        .filter(|s| s.split_whitespace().count() < limit / 2)
        .cloned()
        .collect();
    let corpora = [
        Corpus::new("fixture sentences", &reference.sentences, rows, batch),
        Corpus::new("short sentences only", &short, rows, batch),
    ];
    println!(
        "local provider vs sentence-transformers: {rows} rows per corpus, batches of {batch}, {threads} threads"
    );
    println!(
        "  fixture sentences: its {} sentences, one past the {limit}-token limit; short sentences only: the {} others",
        reference.sentences.len(),
        short.len()
    );

    let mut local = Vec::new();
    for c in &corpora {
        provider.embed(&c.batches[0]).await?; // warm-up, as on the Python side
        let start = Instant::now();
        let mut done = 0;
        for b in &c.batches {
            done += provider.embed(b).await?.len();
        }
        local.push(done as f64 / start.elapsed().as_secs_f64());
    }

    let python = st_venv().join("bin/python");
    if !python.exists() {
        for (c, l) in corpora.iter().zip(&local) {
            println!("  {:<22} local (candle) {l:8.1} rows/s", c.label);
        }
        println!(
            "  sentence-transformers: skipped, no venv at {} (create it as tools/embed-fixture/reference.py says, or set AIENV_ST_VENV)",
            st_venv().display()
        );
        return Ok(());
    }
    let timings = sentence_transformers(&python, model_dir, threads, &corpora).await?;
    for ((c, l), t) in corpora.iter().zip(&local).zip(&timings) {
        let st = t.rows as f64 / t.seconds;
        println!(
            "  {:<22} local (candle) {l:8.1} rows/s   sentence-transformers {st:8.1} rows/s   ratio {:5.2}x (goal >= 1x)",
            c.label,
            l / st
        );
    }
    Ok(())
}

async fn sentence_transformers(
    python: &Path,
    model_dir: &Path,
    threads: usize,
    corpora: &[Corpus],
) -> anyhow::Result<Vec<StTiming>> {
    let mut child = tokio::process::Command::new(python)
        .args(["-c", ST_SCRIPT])
        .arg(model_dir)
        .arg(threads.to_string())
        .env("OMP_NUM_THREADS", threads.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", python.display()))?;
    let mut stdin = child.stdin.take().context("stdin")?;
    let input: Vec<&Vec<Vec<String>>> = corpora.iter().map(|c| &c.batches).collect();
    tokio::io::AsyncWriteExt::write_all(&mut stdin, &serde_json::to_vec(&input)?).await?;
    drop(stdin);
    let out = child.wait_with_output().await?;
    anyhow::ensure!(
        out.status.success(),
        "sentence-transformers failed ({})",
        out.status
    );
    serde_json::from_slice(&out.stdout).context("the timing script's answer")
}
