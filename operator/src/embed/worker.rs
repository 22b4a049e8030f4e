//! The worker loop: claim a batch of pending rows, embed their contents in one request, write the
//! vectors, commit.
//!
//! Exactly once, crash-safe: the claim is `SELECT … FOR UPDATE SKIP LOCKED` inside the transaction
//! that also writes the vectors, and the row locks are held until that commit. A second replica
//! skips locked rows, so no row is sent by two workers at once; a worker that dies (crash, kill,
//! lost connection) never commits, PostgreSQL drops its locks with its session, and the rows are
//! claimable again, untouched. The price is one connection and one open transaction per worker for
//! the length of a provider call, and an edit of a claimed row waits for that call.

use std::{
    ops::Range,
    sync::Arc,
    time::{Duration, Instant},
};

use pgvector::Vector;
use sqlx::{PgPool, Postgres, Transaction};
use tokio::sync::watch;
use tracing::{debug, info, warn};

use crate::memory::Memories;

use super::{
    error::EmbedError,
    metrics::{EmbedMetrics, OutcomeLabel, ReasonLabel},
    provider::{Provider, ProviderError},
    report::{Health, Reporter},
    retry::Backoff,
};

/// What an idle worker with a reporter embeds to learn whether the provider answers (and with
/// the store's dimensions) before any row is pending.
pub const PROBE_TEXT: &str = "aienv embedding provider probe";

/// Claimable rows, oldest first, through `memories_embed_queue_idx` (migration 5). `$1` the
/// batch size. Public so `bench-embed`'s baseline issues exactly this statement.
pub const CLAIM: &str = "SELECT id, content, content_sha256 FROM memories \
     WHERE embedding IS NULL AND embed_failed_at IS NULL \
     ORDER BY id LIMIT $1 FOR UPDATE SKIP LOCKED";

/// What the pending gauge shows (same predicate as [`CLAIM`], so the same index).
const PENDING: &str =
    "SELECT count(*) FROM memories WHERE embedding IS NULL AND embed_failed_at IS NULL";

#[derive(Clone, Debug)]
pub struct WorkerConfig {
    /// Rows per claim (and per request, unless a rejection splits it).
    pub batch_size: u32,
    /// Rejections of one row before it is marked failed and skipped.
    pub max_attempts: u32,
    /// Retries of one request.
    pub backoff: Backoff,
    /// Pause when nothing is pending.
    pub idle_poll: Duration,
    /// After a stop signal, how long the current batch may still take before it is released.
    pub shutdown_grace: Duration,
    /// How often the pending gauge is recounted.
    pub pending_refresh: Duration,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        Self {
            batch_size: 64,
            max_attempts: 3,
            backoff: Backoff::default(),
            idle_poll: Duration::from_secs(1),
            shutdown_grace: Duration::from_secs(20),
            pending_refresh: Duration::from_secs(15),
        }
    }
}

/// What one batch did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct BatchOutcome {
    pub claimed: usize,
    /// Vectors written.
    pub embedded: usize,
    /// Rows the provider rejected singly (attempt counted).
    pub rejected: usize,
    /// Of those, rows now marked failed (attempts exhausted).
    pub failed: usize,
    /// Vectors discarded: the row's content changed (never with the lock held; see [`WRITE`]).
    pub stale: usize,
}

impl std::ops::AddAssign for BatchOutcome {
    fn add_assign(&mut self, o: Self) {
        self.claimed += o.claimed;
        self.embedded += o.embedded;
        self.rejected += o.rejected;
        self.failed += o.failed;
        self.stale += o.stale;
    }
}

/// Write the vectors of still-unchanged rows. The `content_sha256` check: while the claim holds
/// the row locks an edit cannot land in between, so today it never filters anything out — but it
/// keeps this statement correct on its own (a claim that stops holding locks across the provider
/// call, to free connections, or any caller writing vectors outside a claim) instead of leaning
/// on a locking detail three functions away: a vector is only ever written for the text it was
/// computed from. Binds: `$1` ids, `$2` their checksums, `$3` vectors, `$4` the model.
pub const WRITE: &str = "UPDATE memories m SET embedding = u.embedding, embedding_model = $4, embedded_at = now(), embed_error = NULL \
     FROM unnest($1::bigint[], $2::text[], $3::vector[]) AS u(id, sha, embedding) \
     WHERE m.id = u.id AND m.content_sha256 = u.sha AND m.embedding IS NULL \
     RETURNING m.id";

/// Count a rejection; the last allowed one marks the row failed (claims skip it).
const REJECT: &str = "UPDATE memories m SET embed_attempts = m.embed_attempts + 1, embed_error = u.reason, \
     embed_failed_at = CASE WHEN m.embed_attempts + 1 >= $4 THEN now() END \
     FROM unnest($1::bigint[], $2::text[], $3::text[]) AS u(id, sha, reason) \
     WHERE m.id = u.id AND m.content_sha256 = u.sha AND m.embedding IS NULL \
     RETURNING m.id, m.embed_failed_at IS NOT NULL";

/// A row whose vector has been computed, for [`write_vectors`].
#[derive(Clone, Debug)]
pub struct Computed {
    pub id: i64,
    /// Checksum of the text the vector was computed from.
    pub sha: String,
    pub vector: Vec<f32>,
}

/// Write computed vectors for rows whose text is still the one they were computed from; returns
/// the ids written. Public so the checksum guard can be exercised on its own.
pub async fn write_vectors<'c, E>(
    executor: E,
    model: &str,
    rows: &[Computed],
) -> Result<Vec<i64>, EmbedError>
where
    E: sqlx::Executor<'c, Database = Postgres>,
{
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let shas: Vec<&str> = rows.iter().map(|r| r.sha.as_str()).collect();
    let vectors: Vec<Vector> = rows
        .iter()
        .map(|r| Vector::from(r.vector.clone()))
        .collect();
    Ok(sqlx::query_scalar(WRITE)
        .bind(&ids)
        .bind(&shas)
        .bind(&vectors)
        .bind(model)
        .fetch_all(executor)
        .await?)
}

/// One embedding worker over one store.
pub struct Worker {
    pool: PgPool,
    provider: Arc<dyn Provider>,
    config: WorkerConfig,
    metrics: EmbedMetrics,
    dimensions: u32,
    reporter: Option<Reporter>,
}

struct Claimed {
    id: i64,
    content: String,
    sha: String,
}

/// Per-row result of embedding a batch.
enum RowResult {
    Vector(Vec<f32>),
    Rejected {
        reason: &'static str,
        message: String,
    },
}

impl Worker {
    /// A worker on a prepared store (reads its dimensions and model from `aienv_store_config`).
    /// Refuses a provider model other than the store's.
    pub async fn open(
        pool: PgPool,
        provider: Arc<dyn Provider>,
        config: WorkerConfig,
        metrics: EmbedMetrics,
    ) -> Result<Self, EmbedError> {
        if config.batch_size == 0 || config.max_attempts == 0 {
            return Err(EmbedError::Config(
                "--batch-size and --max-attempts must be at least 1".into(),
            ));
        }
        let store = Memories::open(pool.clone()).await?;
        if provider.model() != store.model {
            return Err(EmbedError::ModelMismatch {
                store: store.model,
                given: provider.model().to_string(),
            });
        }
        Ok(Self {
            pool,
            provider,
            config,
            metrics,
            dimensions: store.dimensions,
            reporter: None,
        })
    }

    /// Report what the provider does to the operator (`aienv_embed_workers`); an idle worker then
    /// also probes the provider until it has answered once, and again while it fails.
    pub fn with_reporter(mut self, reporter: Reporter) -> Self {
        self.reporter = Some(reporter);
        self
    }

    /// One probe request (no retries: the loop's backoff paces probes): does the provider answer
    /// with vectors of the store's size?
    pub async fn probe(&self) -> Result<(), EmbedError> {
        let vectors = self.provider.embed(&[PROBE_TEXT.to_string()]).await?;
        match vectors.first() {
            Some(v) if v.len() == self.dimensions as usize => Ok(()),
            Some(v) => Err(self.dimension_mismatch(v.len())),
            None => Err(ProviderError::BadResponse("no vector for the probe".into()).into()),
        }
    }

    fn dimension_mismatch(&self, got: usize) -> EmbedError {
        EmbedError::DimensionMismatch {
            expected: self.dimensions,
            got,
            model: self.provider.model().to_string(),
        }
    }

    async fn note(&self, health: Health) {
        if let Some(r) = &self.reporter {
            r.report(health).await;
        }
    }

    /// Idle: with a reporter, probe unless the provider is known to answer. `Err` when it fails.
    async fn idle_check(&self) -> Result<(), EmbedError> {
        let Some(r) = &self.reporter else {
            return Ok(());
        };
        if r.last() != Some(Health::Answering)
            && let Err(e) = self.probe().await
        {
            r.report(Health::failing(&e)).await;
            return Err(e);
        }
        // Unchanged: only the heartbeat writes.
        r.report(Health::Answering).await;
        Ok(())
    }

    /// Recount the pending rows into the gauge; returns the count.
    pub async fn refresh_pending(&self) -> Result<i64, EmbedError> {
        let n: i64 = sqlx::query_scalar(PENDING).fetch_one(&self.pool).await?;
        self.metrics.pending.set(n);
        Ok(n)
    }

    /// Claim, embed, write and commit one batch. On an error nothing is written and the rows are
    /// released (the transaction rolls back when dropped).
    pub async fn run_once(&self) -> Result<BatchOutcome, EmbedError> {
        let mut tx = self.pool.begin().await?;
        let rows: Vec<(i64, String, String)> = sqlx::query_as(CLAIM)
            .bind(i64::from(self.config.batch_size))
            .fetch_all(&mut *tx)
            .await?;
        if rows.is_empty() {
            tx.commit().await?;
            return Ok(BatchOutcome::default());
        }
        let rows: Vec<Claimed> = rows
            .into_iter()
            .map(|(id, content, sha)| Claimed { id, content, sha })
            .collect();
        self.metrics.batch_size.observe(rows.len() as f64);
        let results = self.embed_isolating(&rows).await?;
        let outcome = self.write(&mut tx, &rows, results).await?;
        tx.commit().await?;
        self.metrics.embedded.inc_by(outcome.embedded as u64);
        self.metrics.stale.inc_by(outcome.stale as u64);
        debug!(?outcome, "batch committed");
        Ok(outcome)
    }

    /// Embed every claimed row, bisecting on a rejection until the rejected rows stand alone.
    /// A failure that is not about the inputs fails the whole batch.
    async fn embed_isolating(&self, rows: &[Claimed]) -> Result<Vec<RowResult>, EmbedError> {
        let texts: Vec<String> = rows.iter().map(|r| r.content.clone()).collect();
        let mut results: Vec<Option<RowResult>> = (0..rows.len()).map(|_| None).collect();
        // A stack of slices of the batch still to send; it starts as the whole batch.
        let mut work: Vec<Range<usize>> = Vec::new();
        work.push(0..rows.len());
        while let Some(range) = work.pop() {
            match self.request(&texts[range.clone()]).await {
                Ok(vectors) => {
                    if vectors.len() != range.len() {
                        return Err(ProviderError::BadResponse(format!(
                            "{} vectors for {} inputs",
                            vectors.len(),
                            range.len()
                        ))
                        .into());
                    }
                    for (i, v) in range.zip(vectors) {
                        if v.len() != self.dimensions as usize {
                            return Err(self.dimension_mismatch(v.len()));
                        }
                        results[i] = Some(if v.iter().all(|x| x.is_finite()) {
                            RowResult::Vector(v)
                        } else {
                            RowResult::Rejected {
                                reason: "InvalidVector",
                                message: "the provider returned NaN or infinity".into(),
                            }
                        });
                    }
                }
                Err(ProviderError::Rejected { status, message }) if range.len() == 1 => {
                    results[range.start] = Some(RowResult::Rejected {
                        reason: "ProviderRejected",
                        message: format!("HTTP {status}: {message}"),
                    });
                }
                Err(ProviderError::Rejected { .. }) => {
                    let mid = range.start + range.len() / 2;
                    // Popped last-in first: the first half goes first.
                    work.push(mid..range.end);
                    work.push(range.start..mid);
                }
                Err(e) => return Err(e.into()),
            }
        }
        Ok(results
            .into_iter()
            .map(|r| r.expect("every row of the batch was answered"))
            .collect())
    }

    /// One request with retries, timed.
    async fn request(&self, texts: &[String]) -> Result<super::provider::Vectors, ProviderError> {
        let provider = self.provider.name();
        self.config
            .backoff
            .run(
                |e, pause| {
                    self.metrics
                        .retries
                        .get_or_create(&ReasonLabel { reason: e.label() })
                        .inc();
                    warn!(error = %e, reason = e.label(), ?pause, "embedding request failed; retrying");
                },
                || async {
                    let start = Instant::now();
                    let r = self.provider.embed(texts).await;
                    let outcome = match &r {
                        Ok(_) => "ok",
                        Err(e) => e.label(),
                    };
                    self.metrics
                        .request_duration
                        .get_or_create(&OutcomeLabel { provider, outcome })
                        .observe(start.elapsed().as_secs_f64());
                    r
                },
            )
            .await
    }

    async fn write(
        &self,
        tx: &mut Transaction<'_, Postgres>,
        rows: &[Claimed],
        results: Vec<RowResult>,
    ) -> Result<BatchOutcome, EmbedError> {
        let mut computed = Vec::new();
        let (mut rej_ids, mut rej_shas, mut rej_reasons) = (Vec::new(), Vec::new(), Vec::new());
        for (row, result) in rows.iter().zip(results) {
            match result {
                RowResult::Vector(vector) => computed.push(Computed {
                    id: row.id,
                    sha: row.sha.clone(),
                    vector,
                }),
                RowResult::Rejected { reason, message } => {
                    self.metrics
                        .rejected
                        .get_or_create(&ReasonLabel { reason })
                        .inc();
                    warn!(id = row.id, reason, %message, "the provider rejected a memory");
                    rej_ids.push(row.id);
                    rej_shas.push(row.sha.as_str());
                    rej_reasons.push((reason, format!("{reason}: {message}")));
                }
            }
        }
        let written = if computed.is_empty() {
            Vec::new()
        } else {
            write_vectors(&mut **tx, self.provider.model(), &computed).await?
        };
        let mut failed = 0;
        if !rej_ids.is_empty() {
            let texts: Vec<&str> = rej_reasons.iter().map(|(_, t)| t.as_str()).collect();
            let marked: Vec<(i64, bool)> = sqlx::query_as(REJECT)
                .bind(&rej_ids)
                .bind(&rej_shas)
                .bind(&texts)
                .bind(i32::try_from(self.config.max_attempts).unwrap_or(i32::MAX))
                .fetch_all(&mut **tx)
                .await?;
            for (id, now_failed) in marked {
                if !now_failed {
                    continue;
                }
                failed += 1;
                let reason = rej_ids
                    .iter()
                    .position(|r| *r == id)
                    .map_or("ProviderRejected", |i| rej_reasons[i].0);
                self.metrics
                    .failed
                    .get_or_create(&ReasonLabel { reason })
                    .inc();
                warn!(
                    id,
                    reason, "memory marked failed: claims skip it until its content changes"
                );
            }
        }
        Ok(BatchOutcome {
            claimed: rows.len(),
            embedded: written.len(),
            rejected: rej_ids.len(),
            failed,
            stale: computed.len() - written.len(),
        })
    }

    /// Work until `stop` turns true. A batch under way when it does gets `shutdown_grace` to
    /// finish; after that it is dropped, which rolls its transaction back and releases its rows.
    /// Returns the sum of all batches.
    pub async fn run(&self, mut stop: watch::Receiver<bool>) -> BatchOutcome {
        let mut total = BatchOutcome::default();
        let mut failures: u32 = 0;
        let mut last_refresh: Option<Instant> = None;
        loop {
            // A dropped sender counts as a stop.
            if *stop.borrow() || stop.has_changed().is_err() {
                break;
            }
            if last_refresh.is_none_or(|t| t.elapsed() >= self.config.pending_refresh) {
                if let Err(e) = self.refresh_pending().await {
                    warn!(error = %e, "cannot count pending rows");
                }
                last_refresh = Some(Instant::now());
            }
            let grace = self.config.shutdown_grace;
            let mut stop_then_grace = stop.clone();
            let result = tokio::select! {
                r = self.run_once() => Some(r),
                _ = async move {
                    let _ = stop_then_grace.wait_for(|s| *s).await;
                    tokio::time::sleep(grace).await;
                } => None,
            };
            let pause = match result {
                None => {
                    warn!("shutdown grace over: released the batch under way");
                    break;
                }
                Some(Ok(o)) if o.claimed == 0 => {
                    let mut stopped = stop.clone();
                    // A probe of a provider that does not answer must not hold up a stop.
                    let checked = tokio::select! {
                        r = self.idle_check() => r,
                        _ = stopped.wait_for(|s| *s) => break,
                    };
                    match checked {
                        Ok(()) => {
                            failures = 0;
                            self.config.idle_poll
                        }
                        Err(e) => {
                            warn!(error = %e, reason = e.label(), "the embedding provider does not answer usefully");
                            failures = failures.saturating_add(1);
                            self.config.backoff.delay(failures - 1, None)
                        }
                    }
                }
                Some(Ok(o)) => {
                    failures = 0;
                    total += o;
                    self.note(Health::Answering).await;
                    continue;
                }
                Some(Err(e)) => {
                    self.metrics
                        .batch_errors
                        .get_or_create(&ReasonLabel { reason: e.label() })
                        .inc();
                    warn!(error = %e, reason = e.label(), "batch released without writing");
                    self.note(Health::failing(&e)).await;
                    failures = failures.saturating_add(1);
                    self.config.backoff.delay(failures - 1, None)
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.wait_for(|s| *s) => {}
            }
        }
        let _ = self.refresh_pending().await;
        if let Some(r) = &self.reporter {
            r.withdraw().await;
        }
        info!(?total, "embedding worker stopped");
        total
    }
}
