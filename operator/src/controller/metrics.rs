//! Reconcile metrics: one family per measure, labelled by controller (one registry for the process,
//! a sub-registry per component).

use std::time::Instant;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, histogram::Histogram},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ControllerLabel {
    pub controller: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct FailureLabels {
    pub controller: &'static str,
    pub error: &'static str,
}

fn duration_histogram() -> Histogram {
    Histogram::new([
        0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ])
}

/// Reconcile counters and timings for all controllers.
#[derive(Clone)]
pub struct Metrics {
    reconciles: Family<ControllerLabel, Counter>,
    failures: Family<FailureLabels, Counter>,
    duration: Family<ControllerLabel, Histogram>,
    status_writes: Family<ControllerLabel, Counter>,
    child_writes: Family<ControllerLabel, Counter>,
    watch_errors: Family<FailureLabels, Counter>,
    kube_requests: Family<VerbLabel, Counter>,
    /// Per-schedule backup results (`aienv_backup_*`).
    pub backups: super::backup_metrics::BackupMetrics,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct VerbLabel {
    pub verb: &'static str,
}

impl Metrics {
    /// Register the families under `aienv_controller_*`.
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self {
            reconciles: Family::default(),
            failures: Family::default(),
            duration: Family::new_with_constructor(duration_histogram),
            status_writes: Family::default(),
            child_writes: Family::default(),
            watch_errors: Family::default(),
            kube_requests: Family::default(),
            backups: super::backup_metrics::BackupMetrics::register(registry),
        };
        registry.register(
            "aienv_kube_requests",
            "Requests sent to the Kubernetes API, by verb (get includes list)",
            m.kube_requests.clone(),
        );
        let sub = registry.sub_registry_with_prefix("aienv_controller");
        sub.register(
            "reconciles",
            "Reconciliations started",
            m.reconciles.clone(),
        );
        sub.register(
            "failures",
            "Reconciliations that failed, by error label",
            m.failures.clone(),
        );
        sub.register(
            "reconcile_duration_seconds",
            "Time spent in one reconciliation",
            m.duration.clone(),
        );
        sub.register(
            "status_writes",
            "Status updates written to the API server",
            m.status_writes.clone(),
        );
        sub.register(
            "child_writes",
            "Writes to objects other than the reconciled one (children, rolled workloads)",
            m.child_writes.clone(),
        );
        sub.register(
            "watch_errors",
            "Failed lists and watches of the objects a controller watches, by error label (Forbidden: missing RBAC; NotFound: missing CRD)",
            m.watch_errors.clone(),
        );
        m
    }

    pub fn kube_request(&self, verb: &'static str) {
        self.kube_requests.get_or_create(&VerbLabel { verb }).inc();
    }

    /// Requests sent so far with `verb`.
    pub fn kube_requests(&self, verb: &'static str) -> u64 {
        self.kube_requests.get_or_create(&VerbLabel { verb }).get()
    }

    /// Count a reconcile and time it until the returned guard is dropped.
    pub fn reconcile(&self, controller: &'static str) -> ReconcileTimer {
        self.reconciles
            .get_or_create(&ControllerLabel { controller })
            .inc();
        ReconcileTimer {
            start: Instant::now(),
            histogram: self
                .duration
                .get_or_create(&ControllerLabel { controller })
                .clone(),
        }
    }

    pub fn failure(&self, controller: &'static str, error: &'static str) {
        self.failures
            .get_or_create(&FailureLabels { controller, error })
            .inc();
    }

    pub fn status_write(&self, controller: &'static str) {
        self.status_writes
            .get_or_create(&ControllerLabel { controller })
            .inc();
    }

    pub fn watch_error(&self, controller: &'static str, error: &'static str) {
        self.watch_errors
            .get_or_create(&FailureLabels { controller, error })
            .inc();
    }

    /// Watch errors with this label so far (tests read this).
    pub fn watch_errors(&self, controller: &'static str, error: &'static str) -> u64 {
        self.watch_errors
            .get_or_create(&FailureLabels { controller, error })
            .get()
    }

    /// Count `n` writes to other objects (children applied, workloads patched).
    pub fn child_writes_inc(&self, controller: &'static str, n: u64) {
        self.child_writes
            .get_or_create(&ControllerLabel { controller })
            .inc_by(n);
    }

    /// Writes to other objects so far (tests and benchmarks read this).
    pub fn child_writes(&self, controller: &'static str) -> u64 {
        self.child_writes
            .get_or_create(&ControllerLabel { controller })
            .get()
    }

    /// Failures with this error label so far (tests and benchmarks read this).
    pub fn failures(&self, controller: &'static str, error: &'static str) -> u64 {
        self.failures
            .get_or_create(&FailureLabels { controller, error })
            .get()
    }

    /// Reconciles started so far (tests and benchmarks read this).
    pub fn reconciles(&self, controller: &'static str) -> u64 {
        self.reconciles
            .get_or_create(&ControllerLabel { controller })
            .get()
    }

    /// Status writes so far (tests and benchmarks read this).
    pub fn status_writes(&self, controller: &'static str) -> u64 {
        self.status_writes
            .get_or_create(&ControllerLabel { controller })
            .get()
    }
}

/// Observes the reconcile duration when dropped.
pub struct ReconcileTimer {
    start: Instant,
    histogram: Histogram,
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        self.histogram.observe(self.start.elapsed().as_secs_f64());
    }
}
