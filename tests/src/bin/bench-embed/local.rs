//! The local provider (candle, in-process) against sentence-transformers (PyTorch) in the
//! throwaway venv of tools/embed-fixture/reference.py, on the same batches of the fixture's
//! sentences with the same thread count; goal ≥ 1× sentence-transformers' rows/s.

use std::{
    path::{Path, PathBuf},
    time::Instant,
};

use aienv::embed::Provider;
use aienv_tests::embed_fixture::{MinilmReference, load_minilm};
use anyhow::Context as _;

/// The venv with sentence-transformers: `$AIENV_ST_VENV`, else `~/.cache/aienv/st-venv`.
fn st_venv() -> PathBuf {
    std::env::var_os("AIENV_ST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            PathBuf::from(home).join(".cache/aienv/st-venv")
        })
}

/// Times `model.encode` per batch (so both sides pad the same batches), after a warm-up batch.
const ST_SCRIPT: &str = r#"
import json, sys, time, torch
from sentence_transformers import SentenceTransformer
model_dir, threads = sys.argv[1], int(sys.argv[2])
torch.set_num_threads(threads)
batches = json.load(sys.stdin)
model = SentenceTransformer(model_dir, device="cpu")
model.encode(batches[0], batch_size=len(batches[0]))
start = time.perf_counter()
rows = 0
for b in batches:
    rows += len(model.encode(b, batch_size=len(b)))
print(json.dumps({"rows": rows, "seconds": time.perf_counter() - start}))
"#;

#[derive(serde::Deserialize)]
struct StTiming {
    rows: usize,
    seconds: f64,
}

/// `rows` texts cycled from the fixture's sentences, in batches of `batch`.
pub async fn run(
    model_dir: &Path,
    threads: usize,
    rows: usize,
    batch: usize,
) -> anyhow::Result<()> {
    let reference = MinilmReference::load()?;
    let texts: Vec<String> = reference
        .sentences
        .iter()
        .cycle()
        .take(rows)
        .cloned()
        .collect();
    let batches: Vec<Vec<String>> = texts.chunks(batch).map(<[String]>::to_vec).collect();
    println!(
        "local provider vs sentence-transformers: {rows} rows of the fixture's {} sentences, batches of {batch}, {threads} threads",
        reference.sentences.len()
    );

    let provider = load_minilm(model_dir, Some(threads))?;
    provider.embed(&batches[0]).await?; // warm-up, as on the Python side
    let start = Instant::now();
    let mut done = 0;
    for b in &batches {
        done += provider.embed(b).await?.len();
    }
    let local = done as f64 / start.elapsed().as_secs_f64();
    println!("  local (candle):          {local:8.1} rows/s");

    let python = st_venv().join("bin/python");
    if !python.exists() {
        println!(
            "  sentence-transformers:   skipped, no venv at {} (create it as tools/embed-fixture/reference.py says, or set AIENV_ST_VENV)",
            st_venv().display()
        );
        return Ok(());
    }
    let mut child = tokio::process::Command::new(&python)
        .args(["-c", ST_SCRIPT])
        .arg(model_dir)
        .arg(threads.to_string())
        .env("OMP_NUM_THREADS", threads.to_string())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", python.display()))?;
    let mut stdin = child.stdin.take().context("stdin")?;
    tokio::io::AsyncWriteExt::write_all(&mut stdin, &serde_json::to_vec(&batches)?).await?;
    drop(stdin);
    let out = child.wait_with_output().await?;
    anyhow::ensure!(
        out.status.success(),
        "sentence-transformers failed ({})",
        out.status
    );
    let t: StTiming = serde_json::from_slice(&out.stdout).context("the timing script's answer")?;
    let st = t.rows as f64 / t.seconds;
    println!("  sentence-transformers:   {st:8.1} rows/s");
    println!(
        "  ratio local / st:        {:8.2}x (goal >= 1x)",
        local / st
    );
    Ok(())
}
