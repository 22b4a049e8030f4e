//! BackupSchedule: pg_dump of a MemoryStore to S3 or GCS on a schedule, verified by restoring it.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::Toleration;

use super::common::{Resources, SecretKeyRef, SecretRef};

/// CEL: a 5-field cron or an @-macro (6+ fields are caught by [`SIX_FIELD_RULE`] with its own message).
pub const SCHEDULE_RULE: &str = "self.schedule.matches('^ *@(yearly|annually|monthly|weekly|daily|midnight|hourly) *$') || self.schedule.matches('^ *[^ @]+( +[^ ]+){4,} *$')";
/// CEL: reject cron expressions with a seconds or year field.
pub const SIX_FIELD_RULE: &str = "!self.schedule.matches('^ *[^ @]+( +[^ ]+){5,} *$')";

/// Backs up a MemoryStore with pg_dump to S3 or GCS on a cron schedule, keeps a retention window,
/// runs on demand (annotation `aienv.orchestr8.io/backup-now`), and verifies the newest backup by
/// restoring it into a throwaway database.
#[derive(CustomResource, KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[kube(
    group = "aienv.orchestr8.io",
    version = "v1alpha1",
    kind = "BackupSchedule",
    namespaced,
    shortname = "bsched",
    category = "ai",
    status = "BackupScheduleStatus",
    doc = "BackupSchedule backs up a MemoryStore with pg_dump to S3 or GCS on a schedule, with retention and restore verification.",
    printcolumn(name = "Store", type_ = "string", json_path = ".spec.memoryStoreRef"),
    printcolumn(name = "Schedule", type_ = "string", json_path = ".spec.schedule"),
    printcolumn(
        name = "Last Backup",
        type_ = "date",
        json_path = ".status.lastSuccessfulBackup.time"
    ),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status"
    ),
    printcolumn(
        name = "Reason",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].reason"
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[x_kube(validation = Rule::new(SIX_FIELD_RULE)
    .message("schedule has 6 or more fields (a seconds or year field): use a 5-field cron 'minute hour day-of-month month day-of-week', e.g. '0 3 * * *', or a macro like @daily")
    .field_path(".schedule"))]
#[x_kube(validation = Rule::new(SCHEDULE_RULE)
    .message("schedule must be a 5-field cron expression 'minute hour day-of-month month day-of-week' (e.g. '0 3 * * *') or one of @hourly, @daily, @midnight, @weekly, @monthly, @yearly, @annually")
    .field_path(".schedule"))]
#[serde(rename_all = "camelCase")]
pub struct BackupScheduleSpec {
    /// Name of the MemoryStore in this namespace to back up.
    #[schemars(length(min = 1, max = 253))]
    pub memory_store_ref: String,
    /// When to back up: a 5-field cron expression or an @hourly/@daily/@weekly/@monthly/@yearly macro.
    #[schemars(length(min = 1, max = 128))]
    pub schedule: String,
    /// IANA time zone the schedule is read in (e.g. Europe/Berlin). UTC when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_zone: Option<String>,
    /// Stop scheduling new backups; running ones finish.
    #[serde(default)]
    pub suspend: bool,
    /// Take a backup as soon as the schedule is created, without waiting for the first slot.
    #[serde(default)]
    pub immediate: bool,
    /// What to do when a backup is still running at the next slot.
    #[serde(default)]
    pub concurrency_policy: ConcurrencyPolicy,
    /// Where backups are written.
    pub destination: Destination,
    /// How many backups to keep.
    #[serde(default)]
    pub retention: Retention,
    /// Restore verification of the newest backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub verify: Option<Verify>,
    /// zstd compression of the pg_dump stream, done by the backup process.
    #[serde(default)]
    pub compression: Compression,
    /// Seconds after a missed slot within which the backup may still start (the CronJob's
    /// startingDeadlineSeconds); unset: no deadline.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub starting_deadline_seconds: Option<i64>,
    /// Finished Jobs kept for inspection, as a CronJob's history limits.
    #[serde(default = "default_successful_history")]
    #[schemars(range(min = 0, max = 100))]
    pub successful_jobs_history_limit: i32,
    #[serde(default = "default_failed_history")]
    #[schemars(range(min = 0, max = 100))]
    pub failed_jobs_history_limit: i32,
    /// Service account the backup Jobs run as (for workload identity when no credentials Secret
    /// is given). Its token is mounted only when this is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub service_account_name: Option<String>,
    /// Resources of the backup container (pg_dump and the compressor run in it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<Resources>,
    /// Where the backup pods may run.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
}

fn default_successful_history() -> i32 {
    3
}
fn default_failed_history() -> i32 {
    3
}

/// Concurrency policy of backup runs, as a CronJob's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum ConcurrencyPolicy {
    #[default]
    Forbid,
    Replace,
    Allow,
}

impl ConcurrencyPolicy {
    pub fn as_str(self) -> &'static str {
        match self {
            ConcurrencyPolicy::Forbid => "Forbid",
            ConcurrencyPolicy::Replace => "Replace",
            ConcurrencyPolicy::Allow => "Allow",
        }
    }
}

/// Compression of the dump stream: zstd, always (fast, multithreaded, and restore reads it back
/// without a guess).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Compression {
    /// zstd level: 1 (fastest) to 19 (smallest).
    #[serde(default = "default_zstd_level")]
    #[schemars(range(min = 1, max = 19))]
    pub level: i32,
    /// Compressor threads.
    #[serde(default = "default_zstd_threads")]
    #[schemars(range(min = 1, max = 16))]
    pub threads: u32,
}

impl Default for Compression {
    fn default() -> Self {
        Self {
            level: default_zstd_level(),
            threads: default_zstd_threads(),
        }
    }
}

/// 1: on vector data higher levels cost CPU and store no fewer bytes (docs/backup.md, Benchmark).
fn default_zstd_level() -> i32 {
    1
}
fn default_zstd_threads() -> u32 {
    2
}

/// Object storage destination: exactly one of s3 or gcs.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[x_kube(validation = Rule::new("has(self.s3) != has(self.gcs)")
    .message("set exactly one of destination.s3 or destination.gcs"))]
#[serde(rename_all = "camelCase")]
pub struct Destination {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<S3Destination>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcs: Option<GcsDestination>,
}

/// An S3 (or S3-compatible) bucket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct S3Destination {
    #[schemars(length(min = 3, max = 63))]
    pub bucket: String,
    /// Key prefix; backups go to `<prefix>/<namespace>/<store>/<UTC timestamp>/`.
    #[serde(default)]
    pub prefix: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Endpoint URL for S3-compatible stores (MinIO, Ceph, R2).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Path-style addressing (`endpoint/bucket/key`), needed by most S3-compatible stores.
    #[serde(default)]
    pub force_path_style: bool,
    /// Secret with AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (optionally AWS_SESSION_TOKEN).
    /// Without it the Job uses workload identity (IRSA / pod identity).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretRef>,
}

/// A Google Cloud Storage bucket.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct GcsDestination {
    #[schemars(length(min = 3, max = 222))]
    pub bucket: String,
    #[serde(default)]
    pub prefix: String,
    /// JSON API endpoint (`scheme://host[:port]`) for an emulator or a private endpoint; Google's
    /// when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// Send no credentials at all (an emulator, a public bucket): the Job never asks a metadata
    /// server.
    #[serde(default)]
    pub anonymous: bool,
    /// Secret key holding a service-account JSON key. Without it the Job uses workload identity.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret_ref: Option<SecretKeyRef>,
}

/// Retention. The newest verified backup is never deleted, whatever these say.
#[derive(KubeSchema, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[x_kube(validation = Rule::new("self.keepLast + self.keepDaily + self.keepWeekly + self.keepMonthly > 0")
    .message("retention keeps nothing: set at least one of keepLast, keepDaily, keepWeekly, keepMonthly above 0"))]
#[serde(rename_all = "camelCase")]
pub struct Retention {
    /// Keep the newest N backups.
    #[serde(default = "default_keep_last")]
    #[schemars(range(min = 0, max = 10000))]
    pub keep_last: u32,
    /// Keep the newest backup of each of the last N days.
    #[serde(default = "default_keep_daily")]
    #[schemars(range(min = 0, max = 10000))]
    pub keep_daily: u32,
    /// Keep the newest backup of each of the last N ISO weeks.
    #[serde(default = "default_keep_weekly")]
    #[schemars(range(min = 0, max = 10000))]
    pub keep_weekly: u32,
    /// Keep the newest backup of each of the last N months.
    #[serde(default = "default_keep_monthly")]
    #[schemars(range(min = 0, max = 10000))]
    pub keep_monthly: u32,
}

impl Default for Retention {
    fn default() -> Self {
        Self {
            keep_last: default_keep_last(),
            keep_daily: default_keep_daily(),
            keep_weekly: default_keep_weekly(),
            keep_monthly: default_keep_monthly(),
        }
    }
}

fn default_keep_last() -> u32 {
    7
}
fn default_keep_daily() -> u32 {
    7
}
fn default_keep_weekly() -> u32 {
    4
}
fn default_keep_monthly() -> u32 {
    6
}

/// Restore verification.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Verify {
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// When to verify (5-field cron or macro). Defaults to right after each successful backup.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
}

fn default_true() -> bool {
    true
}

/// Observed state of a BackupSchedule.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupScheduleStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// LastBackupSucceeded, LastVerifySucceeded, Ready.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_schedule_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_schedule_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_successful_backup: Option<BackupRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failed_backup: Option<FailedBackup>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_verified_backup: Option<BackupRecord>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_failed_verify: Option<FailedBackup>,
    #[serde(default)]
    pub consecutive_failures: u32,
    /// The last `aienv.orchestr8.io/backup-now` token a Job was created for: a token is run once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_backup_now_token: Option<String>,
}

/// One backup in object storage.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct BackupRecord {
    pub time: Option<Time>,
    /// Object key of the dump (its folder holds `manifest.json`).
    pub key: String,
    #[serde(default)]
    pub size_bytes: u64,
    #[serde(default)]
    pub sha256: String,
    #[serde(default)]
    pub duration_seconds: f64,
    /// The Job that made (or verified) it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
}

/// A backup that failed.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct FailedBackup {
    pub time: Option<Time>,
    /// Stable failure label, e.g. ToolFailed, StorageError, DeadlineExceeded.
    pub reason: String,
    pub message: String,
    /// The dump a failed verification was of.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
}
