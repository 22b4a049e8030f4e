//! `kubectl aienv`: status of environments and their children, LLM profile switching, backups,
//! memory search.
#![forbid(unsafe_code)]

use aienv::plugin;
use clap::{Parser, Subcommand};
use kube::{Client, Config};

#[derive(Parser)]
#[command(name = "kubectl-aienv", version, about = "kubectl plugin for aienv")]
struct Cli {
    /// Namespace (defaults to the kubeconfig context's namespace).
    #[arg(short, long, global = true)]
    namespace: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// All aienv objects in the namespace with Ready and its reason; or one environment in detail
    /// (conditions, rollout targets, children).
    Status { environment: Option<String> },
    /// LLM profiles.
    Llm {
        #[command(subcommand)]
        command: LlmCommand,
    },
    /// Backup schedules.
    Backup {
        #[command(subcommand)]
        command: BackupCommand,
    },
    /// Agent memory in a MemoryStore.
    Memory {
        #[command(subcommand)]
        command: MemoryCommand,
    },
}

#[derive(Subcommand)]
enum MemoryCommand {
    /// What an agent would find for TEXT: the query embedded by the store's provider, hybrid
    /// (vector + full-text) search, best first.
    Search {
        store: String,
        text: String,
        /// How many memories.
        #[arg(short, default_value_t = 10)]
        k: u32,
        /// Only this agent's memories.
        #[arg(long)]
        agent: Option<String>,
        /// Only this session's memories.
        #[arg(long)]
        session: Option<String>,
        /// The database from here (e.g. a port-forward), instead of the `<store>-app` Secret's
        /// host; that Secret's user, password and database are kept unless given.
        #[arg(long)]
        database_url: Option<String>,
        /// The embedding API from here, instead of the store's embedding.provider.url.
        #[arg(long)]
        provider_url: Option<String>,
        /// For a local-model store: the model's directory on this machine.
        #[arg(long)]
        model_dir: Option<std::path::PathBuf>,
    },
}

#[derive(Subcommand)]
enum BackupCommand {
    /// Schedules with their last backup, next slot and failures.
    List,
    /// Run one backup of a schedule now (each call is a new request).
    Now {
        schedule: String,
        /// The request's token (default: the current time): the same token runs once.
        #[arg(long)]
        token: Option<String>,
    },
}

#[derive(Subcommand)]
enum LlmCommand {
    /// Profiles with provider, model, Ready and probe latency.
    List,
    /// Point an environment at another profile (rolls its agents once).
    Switch {
        environment: String,
        profile: String,
    },
}

#[tokio::main]
async fn main() {
    aienv::install_crypto_provider();
    let cli = Cli::parse();
    if let Err(e) = run(cli).await {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = Config::infer().await?;
    let ns = cli
        .namespace
        .unwrap_or_else(|| config.default_namespace.clone());
    let client = Client::try_from(config)?;
    let out = match cli.command {
        Command::Status { environment: None } => plugin::status_all(&client, &ns).await?,
        Command::Status {
            environment: Some(env),
        } => plugin::status_environment(&client, &ns, &env).await?,
        Command::Llm {
            command: LlmCommand::List,
        } => plugin::llm_list(&client, &ns).await?,
        Command::Llm {
            command:
                LlmCommand::Switch {
                    environment,
                    profile,
                },
        } => plugin::llm_switch(&client, &ns, &environment, &profile).await?,
        Command::Backup {
            command: BackupCommand::List,
        } => plugin::backup::list(&client, &ns).await?,
        Command::Backup {
            command: BackupCommand::Now { schedule, token },
        } => {
            let token = token.unwrap_or_else(|| jiff::Timestamp::now().as_second().to_string());
            plugin::backup::now(&client, &ns, &schedule, &token).await?
        }
        Command::Memory {
            command:
                MemoryCommand::Search {
                    store,
                    text,
                    k,
                    agent,
                    session,
                    database_url,
                    provider_url,
                    model_dir,
                },
        } => {
            let opts = plugin::memory::SearchOptions {
                k,
                filter: aienv::memory::Filter {
                    agent_id: agent,
                    session_id: session,
                    memory_type: None,
                },
                database_url,
                reach: aienv::embed::query::Reach {
                    base_url: provider_url,
                    model_dir,
                    ..Default::default()
                },
            };
            plugin::memory::search(&client, &ns, &store, &text, opts).await?
        }
    };
    print!("{out}");
    Ok(())
}
