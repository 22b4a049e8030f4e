//! Per-schedule backup metrics, set from each BackupSchedule's status, so "no successful backup in
//! 26 h" is one alert: `time() - aienv_backup_last_success_timestamp_seconds > 26*3600`.

use std::sync::atomic::AtomicU64;

use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge},
    registry::Registry,
};

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ScheduleLabels {
    pub namespace: String,
    pub schedule: String,
}

fn labels(namespace: &str, schedule: &str) -> ScheduleLabels {
    ScheduleLabels {
        namespace: namespace.into(),
        schedule: schedule.into(),
    }
}

#[derive(Clone, Default)]
pub struct BackupMetrics {
    last_success: Family<ScheduleLabels, Gauge>,
    last_verified: Family<ScheduleLabels, Gauge>,
    duration: Family<ScheduleLabels, Gauge<f64, AtomicU64>>,
    size: Family<ScheduleLabels, Gauge>,
    consecutive_failures: Family<ScheduleLabels, Gauge>,
    failures: Family<ScheduleLabels, Counter>,
}

/// What the status says of one schedule.
pub struct Observed {
    pub last_success: Option<i64>,
    pub last_verified: Option<i64>,
    pub duration_seconds: Option<f64>,
    pub size_bytes: Option<u64>,
    pub consecutive_failures: u32,
}

impl BackupMetrics {
    pub fn register(registry: &mut Registry) -> Self {
        let m = Self::default();
        let sub = registry.sub_registry_with_prefix("aienv_backup");
        sub.register(
            "last_success_timestamp_seconds",
            "Unix time the newest successful backup finished, per BackupSchedule",
            m.last_success.clone(),
        );
        sub.register(
            "last_verified_timestamp_seconds",
            "Unix time the newest successful restore verification finished",
            m.last_verified.clone(),
        );
        sub.register(
            "last_duration_seconds",
            "Duration of the newest successful backup",
            m.duration.clone(),
        );
        sub.register(
            "last_size_bytes",
            "Compressed size of the newest successful backup",
            m.size.clone(),
        );
        sub.register(
            "consecutive_failures",
            "Backups that failed since the last success",
            m.consecutive_failures.clone(),
        );
        sub.register(
            "failures",
            "Backups that failed (counted as the operator sees them finish)",
            m.failures.clone(),
        );
        m
    }

    pub fn observe(&self, namespace: &str, schedule: &str, o: &Observed) {
        let l = labels(namespace, schedule);
        if let Some(t) = o.last_success {
            self.last_success.get_or_create(&l).set(t);
        }
        if let Some(t) = o.last_verified {
            self.last_verified.get_or_create(&l).set(t);
        }
        if let Some(d) = o.duration_seconds {
            self.duration.get_or_create(&l).set(d);
        }
        if let Some(s) = o.size_bytes {
            self.size
                .get_or_create(&l)
                .set(i64::try_from(s).unwrap_or(i64::MAX));
        }
        self.consecutive_failures
            .get_or_create(&l)
            .set(o.consecutive_failures.into());
    }

    pub fn failed(&self, namespace: &str, schedule: &str) {
        self.failures
            .get_or_create(&labels(namespace, schedule))
            .inc();
    }

    /// Failures counted so far (tests read this).
    pub fn failures(&self, namespace: &str, schedule: &str) -> u64 {
        self.failures
            .get_or_create(&labels(namespace, schedule))
            .get()
    }

    /// Forget a schedule that is gone.
    pub fn remove(&self, namespace: &str, schedule: &str) {
        let l = labels(namespace, schedule);
        self.last_success.remove(&l);
        self.last_verified.remove(&l);
        self.duration.remove(&l);
        self.size.remove(&l);
        self.consecutive_failures.remove(&l);
        self.failures.remove(&l);
    }
}
