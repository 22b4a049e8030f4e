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
use rayon::prelude::*;
use tokenizers::{Tokenizer, TruncationParams};

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
        // replaced: truncation at sentence-transformers' max_seq_length, and no padding, as
        // `embed` pads each group of similar lengths itself.
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: max_seq_length,
                ..Default::default()
            }))
            .map_err(|e| bad(TOKENIZER, e.to_string()))?;
        tokenizer.with_padding(None);

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
        let failed = |e: &dyn std::fmt::Display| ProviderError::Local(e.to_string());
        let encodings = self
            .tokenizer
            .encode_batch(inputs.to_vec(), true)
            .map_err(|e| failed(&e))?;
        let lengths: Vec<usize> = encodings.iter().map(|e| e.get_ids().len()).collect();
        let units = work_units(
            length_groups(&lengths),
            &lengths,
            rayon::current_num_threads(),
        );
        let pooled: Vec<Vec<Vec<f32>>> = units
            .par_iter()
            .map(|unit| {
                let members: Vec<&tokenizers::Encoding> =
                    unit.iter().map(|&i| &encodings[i]).collect();
                self.forward(&members)
            })
            .collect::<candle_core::Result<_>>()
            .map_err(|e| failed(&e))?;
        let mut vectors: Vec<Vec<f32>> = vec![Vec::new(); encodings.len()];
        for (unit, unit_vectors) in units.iter().zip(pooled) {
            for (&i, v) in unit.iter().zip(unit_vectors) {
                vectors[i] = v;
            }
        }
        Ok(vectors)
    }

    /// One forward pass over texts padded to the longest of them (padding is masked out of the
    /// attention and the pooling, so it changes no vector, only the work).
    fn forward(&self, members: &[&tokenizers::Encoding]) -> candle_core::Result<Vec<Vec<f32>>> {
        let len = members.iter().map(|e| e.get_ids().len()).max().unwrap_or(0);
        let padded = |f: fn(&tokenizers::Encoding) -> &[u32]| -> candle_core::Result<Tensor> {
            let mut data = Vec::with_capacity(members.len() * len);
            for e in members {
                let row = f(e);
                data.extend_from_slice(row);
                data.resize(data.len() + len - row.len(), 0);
            }
            Tensor::from_vec(data, (members.len(), len), &Device::Cpu)
        };
        let ids = padded(tokenizers::Encoding::get_ids)?;
        let type_ids = padded(tokenizers::Encoding::get_type_ids)?;
        let mask = padded(tokenizers::Encoding::get_attention_mask)?;
        let hidden = self.bert.forward(&ids, &type_ids, Some(&mask))?;
        mean_pool_normalised(&hidden, &mask)?.to_vec2::<f32>()
    }
}

/// Padding allowed in one forward pass, as a fraction of the real tokens.
const PADDING_SLACK: f64 = 0.25;

/// The rows of a batch (by index) in groups of similar token length, each run as one forward
/// pass: a batch padded to its longest text would compute every short text at the long one's
/// length (and attention at its square), so one 256-token memory among short ones would cost the
/// whole batch several times its real work. Sorted by length, a group grows while padding it to
/// its longest stays within [`PADDING_SLACK`] of its real tokens.
fn length_groups(lengths: &[usize]) -> Vec<Vec<usize>> {
    let mut order: Vec<usize> = (0..lengths.len()).collect();
    order.sort_by_key(|&i| lengths[i]);
    let mut groups: Vec<Vec<usize>> = Vec::new();
    let mut current: Vec<usize> = Vec::new();
    let mut real = 0usize;
    for i in order {
        let longest = lengths[i]; // ascending: the newcomer is the group's longest
        let padded = (current.len() + 1) * longest;
        if !current.is_empty() && padded as f64 > (real + longest) as f64 * (1.0 + PADDING_SLACK) {
            groups.push(std::mem::take(&mut current));
            real = 0;
        }
        current.push(i);
        real += longest;
    }
    if !current.is_empty() {
        groups.push(current);
    }
    groups
}

/// The length groups as forward passes run side by side on the inference threads: about half
/// of a pass is candle's element-wise work (GELU, softmax, the mask, layer norms), which runs on
/// one thread, so one pass at a time would leave the other cores idle outside the matrix
/// products. While there are fewer passes than threads, the largest is cut in two (smaller
/// passes make the matrix products less efficient, so no more than that); the costliest
/// (rows × length) go first.
fn work_units(groups: Vec<Vec<usize>>, lengths: &[usize], threads: usize) -> Vec<Vec<usize>> {
    let cost = |unit: &Vec<usize>| unit.len() * unit.iter().map(|&i| lengths[i]).max().unwrap_or(0);
    let mut units = groups;
    while units.len() < threads {
        let Some(largest) = (0..units.len())
            .filter(|&u| units[u].len() > 1)
            .max_by_key(|&u| cost(&units[u]))
        else {
            break;
        };
        let half = units[largest].len() / 2;
        let second = units[largest].split_off(half);
        units.push(second);
    }
    units.sort_by_key(|unit| std::cmp::Reverse(cost(unit)));
    units
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
    fn length_groups_cover_every_row_once_and_bound_the_padding() {
        let lengths = [12, 256, 9, 30, 31, 11, 256, 64, 10, 29];
        let groups = length_groups(&lengths);
        let mut seen: Vec<usize> = groups.iter().flatten().copied().collect();
        seen.sort();
        assert_eq!(seen, (0..lengths.len()).collect::<Vec<_>>());
        for g in &groups {
            let real: usize = g.iter().map(|&i| lengths[i]).sum();
            let longest = g.iter().map(|&i| lengths[i]).max().unwrap();
            assert!(
                (g.len() * longest) as f64 <= real as f64 * (1.0 + PADDING_SLACK),
                "{g:?}"
            );
        }
        // The two long texts share a pass; the short ones are not padded to them.
        assert!(groups.iter().any(|g| g == &vec![1, 6]), "{groups:?}");
        assert!(length_groups(&[]).is_empty());
    }

    #[test]
    fn work_units_give_every_thread_a_pass_and_keep_the_groups_otherwise() {
        let lengths = [10, 10, 10, 10, 40, 40, 12];
        let all = |units: &[Vec<usize>]| {
            let mut rows: Vec<usize> = units.iter().flatten().copied().collect();
            rows.sort();
            rows
        };
        // Three groups on two threads stay three passes, costliest first.
        let units = work_units(vec![vec![0, 1, 2, 3], vec![4, 5], vec![6]], &lengths, 2);
        assert_eq!(units, [vec![4, 5], vec![0, 1, 2, 3], vec![6]]);
        // One group on two threads is cut in two; on one thread it stays whole.
        let units = work_units(vec![vec![0, 1, 2, 3]], &lengths, 2);
        assert_eq!(units, [vec![0, 1], vec![2, 3]]);
        assert_eq!(
            work_units(vec![vec![0, 1, 2, 3]], &lengths, 1),
            [vec![0, 1, 2, 3]]
        );
        // More threads than rows: every row its own pass, none lost.
        let units = work_units(vec![vec![0, 1], vec![4]], &lengths, 8);
        assert_eq!(units.len(), 3);
        assert_eq!(all(&units), [0, 1, 4]);
        assert!(work_units(Vec::new(), &lengths, 4).is_empty());
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
