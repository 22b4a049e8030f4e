//! `aienv`: the operator and its companion commands, in one binary.
#![forbid(unsafe_code)]

use std::path::PathBuf;

use aienv::{crdgen, rbac, runtime};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "aienv",
    version,
    about = "Kubernetes operator for the environment AI coding agents live in"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the controllers, /metrics, /healthz and /readyz.
    Operator(runtime::OperatorArgs),
    /// What the BackupSchedule's Jobs run (backup, restore, verify).
    #[command(flatten)]
    Job(Box<aienv::backup::JobCommand>),
    /// Fill in the vectors of memories stored without one (any number of replicas).
    EmbedWorker(Box<aienv::embed::EmbedWorkerArgs>),
    /// Print the CRDs as YAML, or write one file per CRD into a directory.
    Crds {
        /// Write `<plural>.<group>.yaml` files here instead of printing.
        #[arg(long)]
        write: Option<PathBuf>,
    },
    /// Print the RBAC rules the operator needs (derived from the code), or write the chart's
    /// rule files into a directory.
    Rbac {
        /// Write `namespaced-rules.yaml`, `cluster-scoped-rules.yaml` and `lease-rules.yaml` here
        /// instead of printing (the chart's `files/rbac`).
        #[arg(long)]
        write: Option<PathBuf>,
    },
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    aienv::install_crypto_provider();
    match cli.command {
        Command::Operator(args) => {
            runtime::telemetry::init();
            runtime::run(args).await
        }
        Command::EmbedWorker(args) => {
            runtime::telemetry::init();
            aienv::embed::run(*args).await
        }
        Command::Job(job) => {
            let (log, line, ok) = aienv::backup::run(*job).await;
            aienv::backup::report(&log, &line);
            if ok { Ok(()) } else { std::process::exit(1) }
        }
        Command::Crds { write: None } => {
            print!("{}", crdgen::all_yaml()?);
            Ok(())
        }
        Command::Crds { write: Some(dir) } => {
            std::fs::create_dir_all(&dir)?;
            for crd in crdgen::all() {
                let path = dir.join(crdgen::file_name(&crd));
                std::fs::write(&path, crdgen::to_yaml(&crd)?)?;
                eprintln!("wrote {}", path.display());
            }
            Ok(())
        }
        Command::Rbac { write: None } => {
            print!("{}", rbac::all_yaml()?);
            Ok(())
        }
        Command::Rbac { write: Some(dir) } => {
            std::fs::create_dir_all(&dir)?;
            for (name, rules) in rbac::files() {
                let path = dir.join(name);
                std::fs::write(&path, rbac::to_yaml(rules)?)?;
                eprintln!("wrote {}", path.display());
            }
            Ok(())
        }
    }
}
