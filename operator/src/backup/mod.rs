//! What a backup Job runs: `aienv backup` (pg_dump of the store's schema, compressed with zstd in
//! this process, streamed into an S3 multipart or a GCS resumable upload, the manifest written
//! last) and `aienv
//! restore` (the newest or a named backup, its sha256 checked while streaming, row counts compared
//! with the manifest). The clap `Args` here are the one contract between the commands and what
//! starts them.

pub mod dump;
pub mod gcs;
pub mod manifest;
pub mod restore;
pub mod retention;
pub mod s3_uploads;
pub mod storage;
pub mod verify;

use std::path::PathBuf;

/// Errors of a backup or a restore. Messages never hold a password.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("database: {0}")]
    Database(String),
    #[error("{tool} failed: {message}")]
    Tool { tool: &'static str, message: String },
    #[error("object storage: {0}")]
    Storage(String),
    #[error("no backup of {0} found (only backups with a manifest count)")]
    NotFound(String),
    #[error("{0}")]
    Refused(String),
    #[error("the backup is corrupt: {0}")]
    Corrupt(String),
    #[error("restored data differs from the backup's manifest: {0}")]
    Mismatch(String),
}

impl Error {
    /// Stable label for the termination message, metrics and Event reasons.
    pub fn label(&self) -> &'static str {
        match self {
            Error::Database(_) => "DatabaseError",
            Error::Tool { .. } => "ToolFailed",
            Error::Storage(_) => "StorageError",
            Error::NotFound(_) => "BackupNotFound",
            Error::Refused(_) => "TargetNotEmpty",
            Error::Corrupt(_) => "ChecksumMismatch",
            Error::Mismatch(_) => "RowCountMismatch",
        }
    }
}

impl From<sqlx::Error> for Error {
    fn from(e: sqlx::Error) -> Self {
        Error::Database(crate::memory::error::describe(&e))
    }
}

/// Environment variables the Jobs pass what Secrets hold in (the CronJob builder names the same
/// constants, so the two cannot drift).
pub mod env {
    pub const DATABASE_URL: &str = "AIENV_DATABASE_URL";
    pub const DATABASE_PASSWORD: &str = "AIENV_DATABASE_PASSWORD";
    pub const TERMINATION_LOG: &str = "AIENV_TERMINATION_LOG";
}

/// The store a backup is of (its folder in the bucket) and how to reach its database.
#[derive(Clone, Debug, clap::Args)]
pub struct StoreArgs {
    /// Namespace of the MemoryStore.
    #[arg(long, env = "AIENV_STORE_NAMESPACE")]
    pub namespace: String,
    /// Name of the MemoryStore.
    #[arg(long, env = "AIENV_STORE")]
    pub store: String,
    /// The store's schema.
    #[arg(long, env = "AIENV_STORE_SCHEMA")]
    pub schema: String,
    /// The owner's connection URI (from a Secret; never logged).
    #[arg(long, env = env::DATABASE_URL, hide_env_values = true)]
    pub database_url: String,
    /// The password, when the URI has none (a managed store's credentials Secret holds the
    /// password alone).
    #[arg(long, env = env::DATABASE_PASSWORD, hide_env_values = true)]
    pub database_password: Option<String>,
    /// Folder of pg_dump and pg_restore; PATH when unset.
    #[arg(long, env = "AIENV_PG_BIN")]
    pub pg_bin: Option<PathBuf>,
}

impl StoreArgs {
    /// The URI and the password apart: the URI's own, else `database_password`.
    fn split_password(&self) -> Result<(url::Url, Option<String>), Error> {
        let mut url = url::Url::parse(&self.database_url)
            .map_err(|e| Error::Database(format!("{} is not a URI: {e}", env::DATABASE_URL)))?;
        let password = url
            .password()
            .map(percent_decode)
            .or_else(|| self.database_password.clone());
        let _ = url.set_password(None);
        Ok((url, password))
    }

    /// A connection to the store's database.
    pub async fn connect(&self) -> Result<sqlx::PgConnection, Error> {
        use sqlx::ConnectOptions;
        let (url, password) = self.split_password()?;
        let mut options: sqlx::postgres::PgConnectOptions = url
            .as_str()
            .parse()
            .map_err(|e: sqlx::Error| Error::Database(crate::memory::error::describe(&e)))?;
        if let Some(p) = password {
            options = options.password(&p);
        }
        Ok(options.connect().await?)
    }
}

#[derive(Clone, Debug, clap::Args)]
pub struct BackupArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub destination: storage::DestinationArgs,
    #[command(flatten)]
    pub retention: retention::RetentionArgs,
    /// zstd level (1 fastest … 19). 1 by default: on vector data higher levels cost CPU and
    /// store no fewer bytes (docs/backup.md, Benchmark).
    #[arg(long, default_value_t = 1)]
    pub zstd_level: i32,
    /// zstd worker threads.
    #[arg(long, default_value_t = 2)]
    pub zstd_threads: u32,
    /// Where the one-line JSON result goes besides stdout (a Job's termination message).
    #[arg(long, env = env::TERMINATION_LOG, default_value = "/dev/termination-log")]
    pub termination_log: PathBuf,
}

#[derive(Clone, Debug, clap::Args)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub destination: storage::DestinationArgs,
    /// The backup to restore (its timestamp folder, e.g. 20261202T031500Z); the newest when unset.
    #[arg(long)]
    pub backup: Option<String>,
    /// Replace a schema that already holds tables.
    #[arg(long, default_value_t = false)]
    pub force: bool,
    #[arg(long, env = env::TERMINATION_LOG, default_value = "/dev/termination-log")]
    pub termination_log: PathBuf,
}

/// A pg tool's connection: the URI without its password (which goes in PGPASSWORD, so it is not
/// on a command line).
pub(crate) fn pg_command(args: &StoreArgs, tool: &str) -> Result<tokio::process::Command, Error> {
    let (url, password) = args.split_password()?;
    let program = match &args.pg_bin {
        Some(dir) => dir.join(tool),
        None => PathBuf::from(tool),
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.arg(format!("--dbname={url}")).kill_on_drop(true);
    if let Some(p) = password {
        cmd.env("PGPASSWORD", p);
    }
    Ok(cmd)
}

/// Start a pg tool; its stderr is collected for the error message.
pub(crate) fn spawn_tool(
    mut cmd: tokio::process::Command,
    tool: &'static str,
) -> Result<(tokio::process::Child, tokio::task::JoinHandle<String>), Error> {
    use tokio::io::AsyncReadExt;
    let mut child = cmd
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| Error::Tool {
            tool,
            message: format!("cannot start: {e}"),
        })?;
    let mut stderr = child.stderr.take().expect("piped");
    let collected = tokio::spawn(async move {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s).await;
        s
    });
    Ok((child, collected))
}

/// A percent-encoded URI component, decoded (`+` stays `+`: this is not a form).
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                out.push((h * 16 + l) as u8);
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Row counts of every table of `schema`, and the memories with an embedding, in the
/// transaction `tx` runs in.
pub(crate) async fn row_counts(
    tx: &mut sqlx::PgConnection,
    schema: &str,
) -> Result<(std::collections::BTreeMap<String, i64>, i64), Error> {
    let tables: Vec<(String,)> =
        sqlx::query_as("SELECT tablename::text FROM pg_tables WHERE schemaname = $1 ORDER BY 1")
            .bind(schema)
            .fetch_all(&mut *tx)
            .await?;
    let mut counts = std::collections::BTreeMap::new();
    for (t,) in &tables {
        let q = format!("SELECT count(*) FROM {}.{}", ident(schema), ident(t));
        let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(q))
            .fetch_one(&mut *tx)
            .await?;
        counts.insert(t.clone(), n);
    }
    let vectors = if counts.contains_key("memories") {
        let q = format!(
            "SELECT count(*) FROM {}.memories WHERE embedding IS NOT NULL",
            ident(schema)
        );
        sqlx::query_as::<_, (i64,)>(sqlx::AssertSqlSafe(q))
            .fetch_one(&mut *tx)
            .await?
            .0
    } else {
        0
    };
    Ok((counts, vectors))
}

/// The commands a BackupSchedule's Jobs run: the CronJob builder writes these, `aienv` parses them.
#[derive(Clone, Debug, clap::Subcommand)]
pub enum JobCommand {
    /// Back up a MemoryStore's schema to object storage (what a backup Job runs).
    Backup(BackupArgs),
    /// Restore the newest or a named backup into a MemoryStore's database.
    Restore(RestoreArgs),
    /// Restore the newest backup into a throwaway database, check it against its manifest, and
    /// record the result next to it.
    Verify(verify::VerifyArgs),
}

/// The termination message is cut at 4096 bytes by the kubelet: the line stays well under it
/// (lists are counted, messages shortened), so it always parses.
const MESSAGE_LIMIT: usize = 1500;

/// Run one Job command; returns where its result line goes, the line, and whether it succeeded.
pub async fn run(job: JobCommand) -> (PathBuf, serde_json::Value, bool) {
    let (log, operation, result) = match job {
        JobCommand::Backup(args) => {
            let result = dump::backup(&args).await;
            // Retention only after a backup that succeeded: a failing schedule never thins out
            // the backups that still work.
            let retention = match (&result, args.retention.retention) {
                (Ok(_), true) => Some(
                    retention::apply_with_uploads(
                        &args.destination,
                        &args.store.namespace,
                        &args.store.store,
                        &args.retention,
                        jiff::Timestamp::now(),
                    )
                    .await
                    .map_err(|e| e.to_string()),
                ),
                _ => None,
            };
            let result = result.map(|m| {
                let mut line = success_line(&m, m.duration_seconds);
                match retention {
                    Some(Ok(applied)) => {
                        line["retention"] = serde_json::json!({"kept": applied.kept,
                            "deleted": applied.deleted.len(), "incomplete": applied.incomplete.len()})
                    }
                    Some(Err(e)) => line["retentionError"] = shorten(&e).into(),
                    None => {}
                }
                line
            });
            (args.termination_log, "backup", result)
        }
        JobCommand::Restore(args) => {
            let result = restore::restore(&args).await;
            let result = result.map(|m| success_line(&m, m.duration_seconds));
            (args.termination_log, "restore", result)
        }
        JobCommand::Verify(args) => {
            let result = verify::verify(&args).await.map(|(m, v)| {
                let mut line = success_line(&m, v.duration_seconds);
                line["vectorCount"] = v.vector_count.into();
                line
            });
            (args.termination_log, "verify", result)
        }
    };
    match result {
        Ok(mut line) => {
            line["result"] = "succeeded".into();
            line["operation"] = operation.into();
            (log, line, true)
        }
        Err(e) => (
            log,
            serde_json::json!({"result": "failed", "operation": operation, "reason": e.label(),
                "message": shorten(&e.to_string())}),
            false,
        ),
    }
}

fn success_line(m: &manifest::Manifest, duration_seconds: f64) -> serde_json::Value {
    serde_json::json!({"key": m.key, "sha256": m.sha256, "sizeBytes": m.size_bytes,
        "durationSeconds": duration_seconds, "rowCounts": m.row_counts})
}

fn shorten(s: &str) -> String {
    match s.char_indices().nth(MESSAGE_LIMIT) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_string(),
    }
}

/// Print the result line and leave it as the Job's termination message.
pub fn report(path: &std::path::Path, result: &serde_json::Value) {
    let line = result.to_string();
    println!("{line}");
    // Absent outside a pod: stdout is the record then.
    let _ = std::fs::write(path, &line);
}

/// A quoted SQL identifier.
pub(crate) fn ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_are_decoded_like_uri_userinfo() {
        assert_eq!(super::percent_decode("a%40b%2Fc+d%zz"), "a@b/c+d%zz");
    }
}
