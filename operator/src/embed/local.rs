//! The local provider: a sentence-transformers BERT model (safetensors + tokenizer.json) run
//! in-process on the CPU with candle, pooled and normalised exactly as sentence-transformers does
//! (mean over the attention mask, then L2), so the demo and the tests embed with a real model and
//! no server. Texts longer than the model's `max_seq_length` are truncated at token level.

use std::{
    fs,
    path::{Path, PathBuf},
    sync::Arc,
};

use candle_core::{DType, Device, Tensor};
use candle_nn::VarBuilder;
use candle_transformers::models::bert::{BertModel, Config};
use futures::{FutureExt, future::BoxFuture};
use tokenizers::{PaddingParams, PaddingStrategy, Tokenizer, TruncationParams};

use super::provider::{Provider, ProviderError, Vectors};

/// Files a sentence-transformers model directory must hold.
const CONFIG: &str = "config.json";
const WEIGHTS: &str = "model.safetensors";
const TOKENIZER: &str = "tokenizer.json";
/// `max_seq_length` (sentence-transformers' truncation limit; absent → the model's positions).
const ST_CONFIG: &str = "sentence_bert_config.json";
/// The pooling module; only mean pooling is implemented, so another mode is refused at load.
const POOLING: &str = "1_Pooling/config.json";

/// Why a model directory cannot be loaded. Every message names the file.
#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error(
        "model directory {dir}: {file} is missing (a sentence-transformers model in safetensors format needs config.json, model.safetensors and tokenizer.json)"
    )]
    MissingFile { dir: PathBuf, file: &'static str },
    #[error("model directory {dir}: cannot read {file}: {reason}")]
    BadFile {
        dir: PathBuf,
        file: &'static str,
        reason: String,
    },
    #[error(
        "model directory {dir}: {file} asks for {mode} pooling; only mean pooling is supported"
    )]
    UnsupportedPooling {
        dir: PathBuf,
        file: &'static str,
        mode: String,
    },
    #[error("cannot start {threads} inference threads: {reason}")]
    Threads { threads: usize, reason: String },
}

impl LocalError {
    /// Short, stable label (logs, metrics).
    pub fn label(&self) -> &'static str {
        match self {
            LocalError::MissingFile { .. } => "ModelFileMissing",
            LocalError::BadFile { .. } => "ModelFileInvalid",
            LocalError::UnsupportedPooling { .. } => "UnsupportedPooling",
            LocalError::Threads { .. } => "InferenceThreads",
        }
    }
}

/// The loaded model, shared with the blocking inference threads.
struct Model {
    bert: BertModel,
    tokenizer: Tokenizer,
    /// Inference runs inside this pool, so `--threads` bounds candle's and the tokenizer's rayon work.
    pool: rayon::ThreadPool,
}

/// In-process BERT embeddings (see the module docs).
pub struct LocalProvider {
    model: Arc<Model>,
    name: String,
    max_seq_length: usize,
    dimensions: usize,
}

#[derive(serde::Deserialize)]
struct StConfig {
    max_seq_length: Option<usize>,
}

#[derive(serde::Deserialize)]
struct PoolingConfig {
    #[serde(default)]
    pooling_mode_cls_token: bool,
    #[serde(default = "yes")]
    pooling_mode_mean_tokens: bool,
    #[serde(default)]
    pooling_mode_max_tokens: bool,
    #[serde(default)]
    pooling_mode_mean_sqrt_len_tokens: bool,
}

fn yes() -> bool {
    true
}

impl LocalProvider {
    /// Load the model in `dir` (config.json, model.safetensors, tokenizer.json; optionally
    /// sentence_bert_config.json and 1_Pooling/config.json). `threads`: inference threads (all
    /// cores when unset). The provider's model name is the directory's name until [`Self::named`].
    pub fn load(dir: &Path, threads: Option<usize>) -> Result<Self, LocalError> {
        let bad = |file: &'static str, reason: String| LocalError::BadFile {
            dir: dir.to_path_buf(),
            file,
            reason,
        };
        let config: Config =
            serde_json::from_slice(&read(dir, CONFIG)?).map_err(|e| bad(CONFIG, e.to_string()))?;
        check_pooling(dir)?;
        let max_seq_length = match read_optional(dir, ST_CONFIG)? {
            Some(b) => {
                serde_json::from_slice::<StConfig>(&b)
                    .map_err(|e| bad(ST_CONFIG, e.to_string()))?
                    .max_seq_length
            }
            None => None,
        }
        .unwrap_or(config.max_position_embeddings)
        .min(config.max_position_embeddings);

        if !dir.join(TOKENIZER).is_file() {
            return Err(missing(dir, TOKENIZER));
        }
        let mut tokenizer =
            Tokenizer::from_file(dir.join(TOKENIZER)).map_err(|e| bad(TOKENIZER, e.to_string()))?;
        // tokenizer.json's own settings (MiniLM ships truncation and fixed padding at 128) are
        // replaced by what sentence-transformers applies: its max_seq_length, padding to the
        // longest text of the batch.
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_seq_length,
                ..Default::default()
            }))
            .map_err(|e| bad(TOKENIZER, e.to_string()))?;
        tokenizer.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::BatchLongest,
            ..Default::default()
        }));

        let weights = read(dir, WEIGHTS)?;
        let vb = VarBuilder::from_buffered_safetensors(weights, DType::F32, &Device::Cpu)
            .map_err(|e| bad(WEIGHTS, e.to_string()))?;
        let bert = BertModel::load(vb, &config).map_err(|e| bad(WEIGHTS, e.to_string()))?;

        let threads = threads.unwrap_or(0); // 0: rayon's default, one per core
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("embed-{i}"))
            .build()
            .map_err(|e| LocalError::Threads {
                threads,
                reason: e.to_string(),
            })?;
        let name = dir
            .canonicalize()
            .unwrap_or_else(|_| dir.to_path_buf())
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        Ok(Self {
            model: Arc::new(Model {
                bert,
                tokenizer,
                pool,
            }),
            name,
            max_seq_length,
            dimensions: config.hidden_size,
        })
    }

    /// The model name written to `memories.embedding_model` (the store's `embedding.model`).
    pub fn named(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Tokens kept of a text (longer ones are truncated).
    pub fn max_seq_length(&self) -> usize {
        self.max_seq_length
    }

    /// Size of the vectors.
    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    /// Embed on the calling thread (inside the provider's pool).
    pub fn embed_blocking(&self, inputs: &[String]) -> Result<Vectors, ProviderError> {
        let model = &self.model;
        model.pool.install(|| model.embed(inputs))
    }
}

impl Model {
    fn embed(&self, inputs: &[String]) -> Result<Vectors, ProviderError> {
        if inputs.is_empty() {
            return Ok(Vec::new());
        }
        let failed = |e: &dyn std::fmt::Display| ProviderError::Local(e.to_string());
        let encodings = self
            .tokenizer
            .encode_batch(inputs.to_vec(), true)
            .map_err(|e| failed(&e))?;
        let rows = encodings.len();
        let len = encodings[0].get_ids().len();
        let flat = |f: fn(&tokenizers::Encoding) -> &[u32]| -> Vec<u32> {
            encodings
                .iter()
                .flat_map(|e| f(e).iter().copied())
                .collect()
        };
        let tensor = |data: Vec<u32>| {
            Tensor::from_vec(data, (rows, len), &Device::Cpu).map_err(|e| failed(&e))
        };
        let ids = tensor(flat(tokenizers::Encoding::get_ids))?;
        let type_ids = tensor(flat(tokenizers::Encoding::get_type_ids))?;
        let mask = tensor(flat(tokenizers::Encoding::get_attention_mask))?;
        let pooled = (|| {
            let hidden = self.bert.forward(&ids, &type_ids, Some(&mask))?;
            mean_pool_normalised(&hidden, &mask)?.to_vec2::<f32>()
        })()
        .map_err(|e| failed(&e))?;
        Ok(pooled)
    }
}

/// sentence-transformers' Pooling (mean over the tokens the mask keeps, the count clamped at 1e-9)
/// followed by its Normalize (`F.normalize`: divide by the L2 norm clamped at 1e-12).
fn mean_pool_normalised(hidden: &Tensor, mask: &Tensor) -> candle_core::Result<Tensor> {
    let mask = mask.to_dtype(DType::F32)?.unsqueeze(2)?; // (batch, seq, 1)
    let summed = hidden.broadcast_mul(&mask)?.sum(1)?; // (batch, hidden)
    let counts = mask.sum(1)?.clamp(1e-9f32, f32::MAX)?; // (batch, 1)
    let mean = summed.broadcast_div(&counts)?;
    let norm = mean
        .sqr()?
        .sum_keepdim(1)?
        .sqrt()?
        .clamp(1e-12f32, f32::MAX)?;
    mean.broadcast_div(&norm)
}

impl Provider for LocalProvider {
    fn name(&self) -> &'static str {
        "local"
    }

    fn model(&self) -> &str {
        &self.name
    }

    fn embed<'a>(&'a self, inputs: &'a [String]) -> BoxFuture<'a, Result<Vectors, ProviderError>> {
        let model = self.model.clone();
        let inputs = inputs.to_vec();
        // Inference is seconds of CPU work: off the async threads.
        tokio::task::spawn_blocking(move || model.pool.install(|| model.embed(&inputs)))
            .map(|joined| joined.map_err(|e| ProviderError::Local(e.to_string()))?)
            .boxed()
    }
}

fn missing(dir: &Path, file: &'static str) -> LocalError {
    LocalError::MissingFile {
        dir: dir.to_path_buf(),
        file,
    }
}

fn read(dir: &Path, file: &'static str) -> Result<Vec<u8>, LocalError> {
    read_optional(dir, file)?.ok_or_else(|| missing(dir, file))
}

fn read_optional(dir: &Path, file: &'static str) -> Result<Option<Vec<u8>>, LocalError> {
    match fs::read(dir.join(file)) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(LocalError::BadFile {
            dir: dir.to_path_buf(),
            file,
            reason: e.to_string(),
        }),
    }
}

/// Refuse a pooling module other than mean pooling (CLS, max…) instead of embedding wrongly.
fn check_pooling(dir: &Path) -> Result<(), LocalError> {
    let Some(b) = read_optional(dir, POOLING)? else {
        return Ok(());
    };
    let p: PoolingConfig = serde_json::from_slice(&b).map_err(|e| LocalError::BadFile {
        dir: dir.to_path_buf(),
        file: POOLING,
        reason: e.to_string(),
    })?;
    let other = [
        (p.pooling_mode_cls_token, "CLS-token"),
        (p.pooling_mode_max_tokens, "max"),
        (p.pooling_mode_mean_sqrt_len_tokens, "mean-sqrt-len"),
        (!p.pooling_mode_mean_tokens, "no mean"),
    ];
    match other.iter().find(|(on, _)| *on) {
        Some((_, mode)) => Err(LocalError::UnsupportedPooling {
            dir: dir.to_path_buf(),
            file: POOLING,
            mode: (*mode).to_string(),
        }),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_is_named() {
        let dir = std::env::temp_dir().join(format!("aienv-no-model-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let e = LocalProvider::load(&dir, Some(1)).err().unwrap();
        assert!(e.to_string().contains("config.json is missing"), "{e}");
        fs::write(dir.join(CONFIG), "{not json").unwrap();
        let e = LocalProvider::load(&dir, Some(1)).err().unwrap();
        assert_eq!(e.label(), "ModelFileInvalid");
        assert!(e.to_string().contains("cannot read config.json"), "{e}");
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn pooling_is_mean_over_the_mask_then_l2() {
        // Two rows, 3 tokens of 2 dims; the second row's last token is padding.
        let hidden = Tensor::new(
            &[
                [[1f32, 0.], [3., 0.], [0., 4.]],
                [[3., 4.], [3., 4.], [100., 100.]],
            ],
            &Device::Cpu,
        )
        .unwrap();
        let mask = Tensor::new(&[[1u32, 1, 1], [1, 1, 0]], &Device::Cpu).unwrap();
        let v = mean_pool_normalised(&hidden, &mask)
            .unwrap()
            .to_vec2::<f32>()
            .unwrap();
        // Row 0: mean (4/3, 4/3) → (0.7071, 0.7071); row 1: padding ignored, (3,4)/5.
        assert!((v[0][0] - std::f32::consts::FRAC_1_SQRT_2).abs() < 1e-6);
        assert!((v[1][0] - 0.6).abs() < 1e-6 && (v[1][1] - 0.8).abs() < 1e-6);
    }
}
