//! The worker's `/metrics` (`aienv_embed_*`). Labels are stable error labels only: never texts,
//! ids, URLs or keys.

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    pub reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabel {
    pub provider: &'static str,
    pub outcome: &'static str,
}

#[derive(Clone)]
pub struct EmbedMetrics {
    /// Rows without a vector that claims still pick (refreshed every --pending-refresh-seconds).
    pub pending: Gauge,
    /// Vectors written.
    pub embedded: Counter,
    /// Rows given up on (embed_failed_at set), by reason.
    pub failed: Family<ReasonLabel, Counter>,
    /// Rows a provider rejected once (they may still succeed or fail later), by reason.
    pub rejected: Family<ReasonLabel, Counter>,
    /// Vectors not written because the row's text changed meanwhile (it stays pending).
    pub stale: Counter,
    /// Rows per claimed batch.
    pub batch_size: Histogram,
    /// Batches that failed as a whole and were released, by reason.
    pub batch_errors: Family<ReasonLabel, Counter>,
    /// Provider request latency, by outcome ("ok" or the error label).
    pub request_duration: Family<OutcomeLabel, Histogram>,
    /// Requests retried, by reason.
    pub retries: Family<ReasonLabel, Counter>,
}

fn latency() -> Histogram {
    Histogram::new([
        0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
    ])
}

impl EmbedMetrics {
    /// Register under `aienv_embed_*`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            pending: Gauge::default(),
            embedded: Counter::default(),
            failed: Family::default(),
            rejected: Family::default(),
            stale: Counter::default(),
            batch_size: Histogram::new([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0]),
            batch_errors: Family::default(),
            request_duration: Family::new_with_constructor(latency),
            retries: Family::default(),
        };
        let r = registry.sub_registry_with_prefix("aienv_embed");
        r.register(
            "pending_rows",
            "Rows without a vector that workers still claim",
            m.pending.clone(),
        );
        r.register("embedded_rows", "Vectors written", m.embedded.clone());
        r.register(
            "failed_rows",
            "Rows given up on after --max-attempts rejections, by reason",
            m.failed.clone(),
        );
        r.register(
            "rejected_rows",
            "Rows a provider rejected (one attempt), by reason",
            m.rejected.clone(),
        );
        r.register(
            "stale_rows",
            "Vectors discarded because the row's content changed while it was embedded",
            m.stale.clone(),
        );
        r.register("batch_size", "Rows per claimed batch", m.batch_size.clone());
        r.register(
            "batch_errors",
            "Batches released without writing, by reason",
            m.batch_errors.clone(),
        );
        r.register(
            "request_duration_seconds",
            "Embedding request latency, by provider and outcome",
            m.request_duration.clone(),
        );
        r.register(
            "request_retries",
            "Embedding requests retried, by reason",
            m.retries.clone(),
        );
        m
    }

    /// Unregistered metrics (tests, or a worker nobody scrapes).
    pub fn unregistered() -> Self {
        Self::register(&mut Registry::default())
    }
}
