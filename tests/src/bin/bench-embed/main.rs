//! Embedding benchmark, in sections, each printing its figures with ratios against a baseline
//! measured in the same run:
//! - `worker` ([`worker`]): the embedding worker's rows/s against a loopback server that answers
//!   instantly, versus the same claim/request/UPDATE sequence issued directly (its overhead), and
//!   batched versus one row per request. Needs the harness PostgreSQL (`scripts/testenv up`).
//! - `local` ([`local`]): the local (candle) provider's rows/s against sentence-transformers on the
//!   same sentences and thread count (the model from the testenv's env file or
//!   `AIENV_EMBED_MODEL_DIR`; sentence-transformers from the venv `AIENV_ST_VENV`).
//!
//! `cargo run --release -p aienv-tests --bin bench-embed -- [SECTION...] [--rows 20000]
//! [--single-rows 2000] [--batch 64] [--repeat 3] [--no-index 1] [--threads 2] [--local-rows 640]
//! [--local-batch 32]`; no section named runs them all.

mod local;
mod worker;

use std::collections::BTreeMap;

use aienv_tests::testenv::TestEnv;
use anyhow::{Context as _, bail};

/// A part of the benchmark, chosen by name on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Section {
    Worker,
    Local,
}

impl Section {
    const ALL: [Section; 2] = [Section::Worker, Section::Local];

    fn name(self) -> &'static str {
        match self {
            Section::Worker => "worker",
            Section::Local => "local",
        }
    }
}

/// `--name value` flags; each selected section takes its own, and what nobody took is an error.
pub struct Flags(BTreeMap<String, String>);

impl Flags {
    /// A number flag, or `default`.
    pub fn usize(&mut self, name: &str, default: usize) -> anyhow::Result<usize> {
        match self.0.remove(name) {
            Some(v) => v
                .parse()
                .with_context(|| format!("--{name} wants a number, not {v:?}")),
            None => Ok(default),
        }
    }

    fn finish(self) -> anyhow::Result<()> {
        match self.0.keys().next() {
            Some(k) => bail!("unknown flag --{k} for the sections run"),
            None => Ok(()),
        }
    }
}

fn parse(argv: &[String]) -> anyhow::Result<(Vec<Section>, Flags)> {
    let mut sections = Vec::new();
    let mut flags = BTreeMap::new();
    let mut it = argv.iter();
    while let Some(a) = it.next() {
        if let Some(name) = a.strip_prefix("--") {
            let v = it
                .next()
                .with_context(|| format!("--{name} wants a value"))?;
            flags.insert(name.to_string(), v.clone());
        } else {
            let s = Section::ALL
                .into_iter()
                .find(|s| s.name() == a)
                .with_context(|| {
                    let names: Vec<_> = Section::ALL.iter().map(|s| s.name()).collect();
                    format!("unknown section {a:?} (sections: {})", names.join(", "))
                })?;
            sections.push(s);
        }
    }
    if sections.is_empty() {
        sections = Section::ALL.to_vec();
    }
    Ok((sections, Flags(flags)))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let (sections, mut flags) = parse(&argv)?;
    let worker_options = if sections.contains(&Section::Worker) {
        Some(worker::Options::from_flags(&mut flags)?)
    } else {
        None
    };
    let local_options = if sections.contains(&Section::Local) {
        Some((
            flags.usize("threads", 2)?,
            flags.usize("local-rows", 640)?,
            flags.usize("local-batch", 32)?,
        ))
    } else {
        None
    };
    flags.finish()?;
    println!(
        "bench-embed: sections {}; {} cores",
        sections
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(", "),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    if let Some(o) = worker_options {
        let env = TestEnv::load().context("test environment not running: scripts/testenv up")?;
        worker::run(&env, &o).await?;
    }
    if let Some((threads, rows, batch)) = local_options {
        let model_dir = match std::env::var_os("AIENV_EMBED_MODEL_DIR") {
            Some(d) => d.into(),
            None => TestEnv::load()
                .context("no test environment and no AIENV_EMBED_MODEL_DIR")?
                .embed_model_dir()?,
        };
        local::run(&model_dir, threads, rows, batch).await?;
    }
    Ok(())
}
