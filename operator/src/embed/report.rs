//! What the workers tell the operator: one row per worker in `aienv_embed_workers` (migration 6),
//! saying whether the provider last answered with vectors the store can take, and if not the
//! error's stable label and message. The operator reads the fresh rows into `WorkersReady`, so a
//! wrong dimension or an unreachable provider shows on the MemoryStore, not only in a pod's log.
//!
//! Written when the state changes and as a heartbeat, never once per batch: a busy worker adds one
//! statement every [`HEARTBEAT`]. A worker that stops cleanly deletes its row; one that was
//! killed leaves it, the operator ignores it once it is older than [`FRESH_FOR`], and the next
//! worker to start deletes it after an hour.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use sqlx::PgPool;
use tracing::debug;

use super::error::EmbedError;

/// How often an unchanged state is written again.
pub const HEARTBEAT: Duration = Duration::from_secs(30);

/// Rows older than this are a worker that is gone. Longer than a crash-looping pod's longest
/// restart pause (5 minutes), so the reason it crashed stays on the status between restarts.
pub const FRESH_FOR: Duration = Duration::from_secs(330);

/// Longest message kept (the status shows it).
const MAX_MESSAGE: usize = 400;

const UPSERT: &str = "INSERT INTO aienv_embed_workers AS w (worker, provider, model, ok, reason, message) \
     VALUES ($1, $2, $3, $4, $5, $6) \
     ON CONFLICT (worker) DO UPDATE SET provider = EXCLUDED.provider, model = EXCLUDED.model, \
       ok = EXCLUDED.ok, reason = EXCLUDED.reason, message = EXCLUDED.message, seen_at = now(), \
       since = CASE WHEN w.ok IS DISTINCT FROM EXCLUDED.ok OR w.reason IS DISTINCT FROM EXCLUDED.reason \
                    THEN now() ELSE w.since END";

/// Whether the provider last answered usefully.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Health {
    Answering,
    Failing {
        reason: &'static str,
        message: String,
    },
}

impl Health {
    pub fn failing(e: &EmbedError) -> Self {
        let mut message = e.to_string();
        if message.chars().count() > MAX_MESSAGE {
            message = message.chars().take(MAX_MESSAGE).collect::<String>() + "…";
        }
        Health::Failing {
            reason: e.label(),
            message,
        }
    }
}

/// One worker's row.
pub struct Reporter {
    pool: PgPool,
    worker: String,
    provider: &'static str,
    model: String,
    last: Mutex<Option<(Health, Instant)>>,
}

impl Reporter {
    pub fn new(pool: PgPool, worker: String, provider: &'static str, model: String) -> Self {
        Self {
            pool,
            worker,
            provider,
            model,
            last: Mutex::new(None),
        }
    }

    /// What was last reported, if anything.
    pub fn last(&self) -> Option<Health> {
        self.last
            .lock()
            .expect("reporter lock")
            .as_ref()
            .map(|(h, _)| h.clone())
    }

    /// Delete the rows of workers gone for an hour (killed, never withdrawn): done by each
    /// worker as it starts, so the table stays small without a write on the operator's path.
    pub async fn sweep(&self) {
        let _ = sqlx::query(
            "DELETE FROM aienv_embed_workers WHERE seen_at < now() - interval '1 hour'",
        )
        .execute(&self.pool)
        .await;
    }

    /// Record `health` if it differs from the last report or the heartbeat is due. A failure to
    /// write is logged and retried with the next report: reporting never stops the work.
    pub async fn report(&self, health: Health) {
        let due = match &*self.last.lock().expect("reporter lock") {
            Some((h, at)) => *h != health || at.elapsed() >= HEARTBEAT,
            None => true,
        };
        if !due {
            return;
        }
        let (ok, reason, message) = match &health {
            Health::Answering => (true, None, None),
            Health::Failing { reason, message } => (false, Some(*reason), Some(message.as_str())),
        };
        let written = sqlx::query(UPSERT)
            .bind(&self.worker)
            .bind(self.provider)
            .bind(&self.model)
            .bind(ok)
            .bind(reason)
            .bind(message)
            .execute(&self.pool)
            .await;
        match written {
            Ok(_) => *self.last.lock().expect("reporter lock") = Some((health, Instant::now())),
            Err(e) => {
                debug!(error = %crate::memory::error::describe(&e), "cannot record the worker's state")
            }
        }
    }

    /// A clean stop: the row goes, so a scaled-down worker never speaks for the store.
    pub async fn withdraw(&self) {
        let _ = sqlx::query("DELETE FROM aienv_embed_workers WHERE worker = $1")
            .bind(&self.worker)
            .execute(&self.pool)
            .await;
    }
}

/// This worker's name: the pod's (`HOSTNAME`, set by the kubelet), else the host's and the pid.
pub fn worker_name() -> String {
    match std::env::var("HOSTNAME") {
        Ok(h) if !h.is_empty() => h,
        _ => {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
            format!("{}-{}", host.trim(), std::process::id())
        }
    }
}

/// A worker's fresh report, as the operator reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WorkerReport {
    pub worker: String,
    pub ok: bool,
    pub reason: Option<String>,
    pub message: Option<String>,
}

/// The reports of workers seen within [`FRESH_FOR`], by worker name. Read-only: the operator
/// looks at this every reconcile. Runs on a connection whose search_path is the store's schema.
pub async fn read_reports(pool: &PgPool) -> Result<Vec<WorkerReport>, sqlx::Error> {
    let rows: Vec<(String, bool, Option<String>, Option<String>)> = sqlx::query_as(
        "SELECT worker, ok, reason, message FROM aienv_embed_workers \
         WHERE seen_at > now() - make_interval(secs => $1) ORDER BY worker",
    )
    .bind(FRESH_FOR.as_secs_f64())
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(worker, ok, reason, message)| WorkerReport {
            worker,
            ok,
            reason,
            message,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_messages_are_cut_and_the_label_kept() {
        let e = EmbedError::Config("x".repeat(2000));
        let Health::Failing { reason, message } = Health::failing(&e) else {
            panic!("failing")
        };
        assert_eq!(reason, "InvalidConfiguration");
        assert!(message.chars().count() <= MAX_MESSAGE + 1);
    }
}
