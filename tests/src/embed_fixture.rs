//! The reference vectors of all-MiniLM-L6-v2 computed by sentence-transformers itself
//! (tests/fixtures/minilm-reference.json, written by tools/embed-fixture/reference.py), and the
//! local provider on the testenv's copy of the same model.

use std::path::Path;

use aienv::embed::local::LocalProvider;
use anyhow::Context;

use crate::testenv::{TestEnv, workspace_root};

/// What reference.py wrote.
#[derive(Debug, serde::Deserialize)]
pub struct MinilmReference {
    pub max_seq_length: usize,
    /// Index pairs of sentences that say the same thing.
    pub paraphrases: Vec<[usize; 2]>,
    /// Index of the sentence longer than `max_seq_length` tokens.
    pub long: usize,
    pub sentences: Vec<String>,
    /// Token count of each sentence before truncation.
    pub tokens: Vec<usize>,
    pub vectors: Vec<Vec<f32>>,
}

impl MinilmReference {
    pub fn load() -> anyhow::Result<Self> {
        let path = workspace_root().join("tests/fixtures/minilm-reference.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        serde_json::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }
}

/// The local provider on the model of the testenv's venv, named as the test stores' model.
pub fn minilm(env: &TestEnv, threads: Option<usize>) -> anyhow::Result<LocalProvider> {
    load_minilm(&env.embed_model_dir()?, threads)
}

pub fn load_minilm(dir: &Path, threads: Option<usize>) -> anyhow::Result<LocalProvider> {
    Ok(LocalProvider::load(dir, threads)?.named(MINILM))
}

/// `embedding.model` of the test stores embedded with the local model.
pub const MINILM: &str = "all-MiniLM-L6-v2";
/// Its vector size.
pub const MINILM_DIMS: usize = 384;

/// Cosine similarity (the vectors need not be normalised).
pub fn cosine(a: &[f32], b: &[f32]) -> f64 {
    let dot: f64 = a
        .iter()
        .zip(b)
        .map(|(x, y)| f64::from(*x) * f64::from(*y))
        .sum();
    let norm = |v: &[f32]| v.iter().map(|x| f64::from(*x).powi(2)).sum::<f64>().sqrt();
    dot / (norm(a) * norm(b))
}
