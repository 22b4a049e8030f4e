//! The status of a BackupSchedule, from its Jobs: each finished Job is folded in once, in the
//! order the Jobs finished, from the result line its pod left as termination message (Jobs have
//! no API access of their own). A Job without a readable result never counts as a success.
//! Pure.

use jiff::Timestamp;
use k8s_openapi::{
    api::{batch::v1::Job, core::v1::Pod},
    apimachinery::pkg::apis::meta::v1::Time,
};
use serde::Deserialize;

use super::{LABEL_OPERATION, VERIFY_OF_ANNOTATION};
use crate::{
    api::backup_schedule::{BackupRecord, BackupScheduleStatus, FailedBackup},
    conditions::Desired,
    controller::Problem,
};

pub const READY: &str = "Ready";
pub const LAST_BACKUP: &str = "LastBackupSucceeded";
pub const LAST_VERIFY: &str = "LastVerifySucceeded";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Operation {
    Backup,
    Verify,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Backup => "backup",
            Operation::Verify => "verify",
        }
    }
}

/// The line `aienv backup|verify` leaves as the termination message.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ResultLine {
    pub result: String,
    #[serde(default)]
    pub key: String,
    #[serde(default)]
    pub sha256: String,
    #[serde(default)]
    pub size_bytes: u64,
    #[serde(default)]
    pub duration_seconds: f64,
    #[serde(default)]
    pub reason: String,
    #[serde(default)]
    pub message: String,
}

/// One Job of the schedule, as far as the status is concerned.
#[derive(Clone, Debug, PartialEq)]
pub struct Run {
    pub job: String,
    pub operation: Operation,
    pub created: Option<Timestamp>,
    /// When it finished and whether it succeeded.
    pub finished: Option<(Timestamp, bool)>,
    /// The result line, when the pod left one.
    pub result: Option<ResultLine>,
    /// Why Kubernetes ended it, when it did (DeadlineExceeded, OOMKilled, …).
    pub ended_by: Option<(String, String)>,
    /// The dump a verify Job checks, when it was started for one.
    pub verify_of: Option<String>,
}

/// When a Job finished, and whether it succeeded.
pub fn finished(job: &Job) -> Option<(Timestamp, bool)> {
    let status = job.status.as_ref()?;
    let cond = status
        .conditions
        .as_ref()?
        .iter()
        .find(|c| (c.type_ == "Complete" || c.type_ == "Failed") && c.status == "True")?;
    let at = status
        .completion_time
        .as_ref()
        .filter(|_| cond.type_ == "Complete")
        .or(cond.last_transition_time.as_ref())
        .map(|t| t.0)?;
    Some((at, cond.type_ == "Complete"))
}

impl Run {
    pub fn from_job(job: &Job, pod: Option<&Pod>) -> Run {
        let labels = job.metadata.labels.clone().unwrap_or_default();
        let operation = match labels.get(LABEL_OPERATION).map(String::as_str) {
            Some("verify") => Operation::Verify,
            _ => Operation::Backup,
        };
        let terminated = pod
            .and_then(|p| p.status.as_ref())
            .and_then(|s| s.container_statuses.as_ref())
            .and_then(|cs| cs.first())
            .and_then(|c| c.state.as_ref())
            .and_then(|s| s.terminated.as_ref());
        let result = terminated
            .and_then(|t| t.message.as_deref())
            .and_then(|m| serde_json::from_str::<ResultLine>(m.trim()).ok());
        let job_failure = job
            .status
            .as_ref()
            .and_then(|s| s.conditions.as_ref())
            .and_then(|cs| {
                cs.iter()
                    .find(|c| c.type_ == "Failed" && c.status == "True")
            })
            .map(|c| {
                (
                    c.reason.clone().unwrap_or_else(|| "JobFailed".into()),
                    c.message.clone().unwrap_or_default(),
                )
            });
        let pod_failure = terminated.filter(|t| t.exit_code != 0).map(|t| {
            (
                t.reason.clone().unwrap_or_else(|| "Error".into()),
                format!("the container exited with code {}", t.exit_code),
            )
        });
        Run {
            job: job.metadata.name.clone().unwrap_or_default(),
            operation,
            created: job.metadata.creation_timestamp.as_ref().map(|t| t.0),
            finished: finished(job),
            result,
            ended_by: pod_failure.or(job_failure),
            verify_of: job
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(VERIFY_OF_ANNOTATION))
                .cloned(),
        }
    }

    /// The success record, if this run succeeded and said what it made.
    fn success(&self, at: Timestamp) -> Option<BackupRecord> {
        let r = self.result.as_ref().filter(|r| r.result == "succeeded")?;
        Some(BackupRecord {
            time: Some(Time(at)),
            key: r.key.clone(),
            size_bytes: r.size_bytes,
            sha256: r.sha256.clone(),
            duration_seconds: r.duration_seconds,
            job: Some(self.job.clone()),
        })
    }

    fn failure(&self, at: Timestamp) -> FailedBackup {
        let (reason, message) = match (&self.result, &self.ended_by) {
            (Some(r), _) if r.result == "failed" => (r.reason.clone(), r.message.clone()),
            (_, Some((reason, message))) => (reason.clone(), message.clone()),
            _ => (
                "ResultMissing".into(),
                format!(
                    "Job {} left no result line in its pod's termination message (was the pod deleted?)",
                    self.job
                ),
            ),
        };
        FailedBackup {
            time: Some(Time(at)),
            reason,
            message,
            key: self.verify_of.clone(),
            job: Some(self.job.clone()),
        }
    }
}

/// The newest (finish time, Job) already folded into the status for `op`.
fn watermark(status: &BackupScheduleStatus, op: Operation) -> Option<(Timestamp, String)> {
    let (ok, failed) = match op {
        Operation::Backup => (&status.last_successful_backup, &status.last_failed_backup),
        Operation::Verify => (&status.last_verified_backup, &status.last_failed_verify),
    };
    let ok = ok
        .as_ref()
        .and_then(|r| Some((r.time.as_ref()?.0, r.job.clone().unwrap_or_default())));
    let failed = failed
        .as_ref()
        .and_then(|r| Some((r.time.as_ref()?.0, r.job.clone().unwrap_or_default())));
    ok.max(failed)
}

/// Whether the status already holds what this finished Job reported.
pub fn recorded(status: Option<&BackupScheduleStatus>, job: &Job) -> bool {
    let (Some(status), Some((at, _))) = (status, finished(job)) else {
        return false;
    };
    let op = match job
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(LABEL_OPERATION))
        .map(String::as_str)
    {
        Some("verify") => Operation::Verify,
        _ => Operation::Backup,
    };
    let name = job.metadata.name.clone().unwrap_or_default();
    watermark(status, op).is_some_and(|w| (at, name) <= w)
}

/// Per operation, the records of whichever of `a` and `b` has folded more Jobs: the status this
/// process wrote last, when the watch has not delivered it yet, is not folded again (which would
/// repeat its Events and count its failures twice).
pub fn newest(a: &BackupScheduleStatus, b: &BackupScheduleStatus) -> BackupScheduleStatus {
    let mut out = a.clone();
    if watermark(b, Operation::Backup) > watermark(a, Operation::Backup) {
        out.last_successful_backup = b.last_successful_backup.clone();
        out.last_failed_backup = b.last_failed_backup.clone();
        out.consecutive_failures = b.consecutive_failures;
        out.last_schedule_time = b
            .last_schedule_time
            .clone()
            .max(a.last_schedule_time.clone());
    }
    if watermark(b, Operation::Verify) > watermark(a, Operation::Verify) {
        out.last_verified_backup = b.last_verified_backup.clone();
        out.last_failed_verify = b.last_failed_verify.clone();
    }
    if b.last_backup_now_token.is_some() {
        out.last_backup_now_token = b.last_backup_now_token.clone();
    }
    out
}

/// Something that happened since the last status, for Events and metrics.
#[derive(Clone, Debug, PartialEq)]
pub enum Happened {
    BackupSucceeded(BackupRecord),
    BackupFailed(FailedBackup),
    VerifySucceeded(BackupRecord),
    VerifyFailed(FailedBackup),
}

/// Fold the Jobs that finished since `old` into a new status (conditions aside).
pub fn fold_runs(
    old: &BackupScheduleStatus,
    runs: &[Run],
) -> (BackupScheduleStatus, Vec<Happened>) {
    let mut new = old.clone();
    let mut happened = Vec::new();
    let mut done: Vec<(&Run, Timestamp, bool)> = runs
        .iter()
        .filter_map(|r| r.finished.map(|(at, ok)| (r, at, ok)))
        .collect();
    done.sort_by(|a, b| (a.1, &a.0.job).cmp(&(b.1, &b.0.job)));
    for (run, at, ok) in done {
        let key = (at, run.job.clone());
        if watermark(&new, run.operation).is_some_and(|w| key <= w) {
            continue;
        }
        let success = ok.then(|| run.success(at)).flatten();
        match (run.operation, success) {
            (Operation::Backup, Some(record)) => {
                new.consecutive_failures = 0;
                new.last_successful_backup = Some(record.clone());
                happened.push(Happened::BackupSucceeded(record));
            }
            (Operation::Backup, None) => {
                let f = run.failure(at);
                new.consecutive_failures = new.consecutive_failures.saturating_add(1);
                new.last_failed_backup = Some(f.clone());
                happened.push(Happened::BackupFailed(f));
            }
            (Operation::Verify, Some(record)) => {
                new.last_verified_backup = Some(record.clone());
                happened.push(Happened::VerifySucceeded(record));
            }
            (Operation::Verify, None) => {
                let f = run.failure(at);
                new.last_failed_verify = Some(f.clone());
                happened.push(Happened::VerifyFailed(f));
            }
        }
    }
    // The latest start of a backup: the CronJob's or an on-demand Job's.
    let started = runs
        .iter()
        .filter(|r| r.operation == Operation::Backup)
        .filter_map(|r| r.created)
        .max();
    if let Some(t) = started
        && old.last_schedule_time.as_ref().is_none_or(|o| o.0 < t)
    {
        new.last_schedule_time = Some(Time(t));
    }
    (new, happened)
}

fn newer<'a>(ok: Option<&'a Time>, failed: Option<&'a Time>) -> Option<bool> {
    match (ok, failed) {
        (None, None) => None,
        (Some(_), None) => Some(true),
        (None, Some(_)) => Some(false),
        (Some(a), Some(b)) => Some(a.0 >= b.0),
    }
}

/// The conditions: Ready (the schedule can run), LastBackupSucceeded, LastVerifySucceeded (when
/// verification is on).
pub fn conditions(
    status: &BackupScheduleStatus,
    problem: Option<&Problem>,
    suspended: bool,
    verify: bool,
    next: Option<&str>,
) -> (Vec<Desired>, &'static [&'static str]) {
    let ready = match (problem, suspended) {
        (Some(p), _) => Desired::false_(READY, p.reason, p.message.clone()),
        (None, true) => Desired::true_(
            READY,
            "Suspended",
            "spec.suspend is true: no backups are scheduled; on-demand backups still run",
        ),
        (None, false) => Desired::true_(
            READY,
            "Scheduled",
            match next {
                Some(n) => format!("next backup at {n}"),
                None => "scheduled".into(),
            },
        ),
    };
    let ok = status.last_successful_backup.as_ref();
    let failed = status.last_failed_backup.as_ref();
    let last_backup = match newer(
        ok.and_then(|r| r.time.as_ref()),
        failed.and_then(|f| f.time.as_ref()),
    ) {
        None => Desired::unknown(LAST_BACKUP, "NoBackupYet", "no backup has finished yet"),
        Some(true) => {
            let r = ok.expect("newer says it exists");
            Desired::true_(
                LAST_BACKUP,
                "BackupSucceeded",
                format!(
                    "{} ({} bytes, {:.1}s)",
                    r.key, r.size_bytes, r.duration_seconds
                ),
            )
        }
        Some(false) => {
            let f = failed.expect("newer says it exists");
            let times = status.consecutive_failures;
            Desired::false_(
                LAST_BACKUP,
                f.reason.clone(),
                format!("{} ({times} failed in a row)", f.message),
            )
        }
    };
    if !verify {
        return (vec![ready, last_backup], &[LAST_VERIFY]);
    }
    let ok = status.last_verified_backup.as_ref();
    let failed = status.last_failed_verify.as_ref();
    let last_verify = match newer(
        ok.and_then(|r| r.time.as_ref()),
        failed.and_then(|f| f.time.as_ref()),
    ) {
        None => Desired::unknown(
            LAST_VERIFY,
            "NotVerifiedYet",
            "no verification has finished yet",
        ),
        Some(true) => {
            let r = ok.expect("newer says it exists");
            Desired::true_(
                LAST_VERIFY,
                "VerifySucceeded",
                format!("{} restored and matched its manifest", r.key),
            )
        }
        Some(false) => {
            let f = failed.expect("newer says it exists");
            Desired::false_(LAST_VERIFY, f.reason.clone(), f.message.clone())
        }
    };
    (vec![ready, last_backup, last_verify], &[])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(job: &str, op: Operation, at: i64, result: Option<&str>) -> Run {
        Run {
            job: job.into(),
            operation: op,
            created: Some(Timestamp::from_second(at - 10).unwrap()),
            finished: result
                .map(|r| (Timestamp::from_second(at).unwrap(), r.contains("succeeded"))),
            result: result.and_then(|r| serde_json::from_str(r).ok()),
            ended_by: None,
            verify_of: None,
        }
    }

    const OK: &str = r#"{"result":"succeeded","operation":"backup","key":"p/ns/mem/20261202T030000Z/dump.zst","sha256":"ab","sizeBytes":10,"durationSeconds":1.5}"#;
    const FAILED: &str = r#"{"result":"failed","operation":"backup","reason":"StorageError","message":"object storage: connection refused"}"#;

    #[test]
    fn each_finished_job_counts_once_in_finishing_order() {
        let runs = vec![
            run("b", Operation::Backup, 200, Some(FAILED)),
            run("a", Operation::Backup, 100, Some(OK)),
            run("c", Operation::Backup, 300, Some(FAILED)),
            run("running", Operation::Backup, 400, None),
        ];
        let (s, happened) = fold_runs(&BackupScheduleStatus::default(), &runs);
        assert_eq!(happened.len(), 3);
        assert_eq!(s.consecutive_failures, 2);
        assert_eq!(
            s.last_successful_backup.as_ref().unwrap().job.as_deref(),
            Some("a")
        );
        assert_eq!(
            s.last_failed_backup.as_ref().unwrap().reason,
            "StorageError"
        );
        assert_eq!(s.last_schedule_time.as_ref().unwrap().0.as_second(), 390);
        // Folding the same Jobs again changes nothing and reports nothing.
        let (again, none) = fold_runs(&s, &runs);
        assert_eq!(again, s);
        assert!(none.is_empty());
        let (ds, _) = conditions(&s, None, false, false, Some("2026-12-03T03:00:00Z"));
        let last = ds.iter().find(|d| d.type_ == LAST_BACKUP).unwrap();
        assert_eq!(last.reason, "StorageError");
        assert!(last.message.contains("2 failed in a row"), "{last:?}");
    }

    #[test]
    fn a_status_not_yet_seen_back_is_not_folded_twice() {
        let runs = vec![run("a", Operation::Backup, 100, Some(FAILED))];
        let stale = BackupScheduleStatus::default();
        let (written, happened) = fold_runs(&stale, &runs);
        assert_eq!(happened.len(), 1);
        // The next reconcile reads the stale object; the written status is remembered.
        let (again, none) = fold_runs(&newest(&stale, &written), &runs);
        assert!(none.is_empty());
        assert_eq!(again.consecutive_failures, 1);
        // And a newer object (another replica wrote more) wins over what this one remembers.
        let more = vec![
            run("a", Operation::Backup, 100, Some(FAILED)),
            run("b", Operation::Backup, 200, Some(OK)),
        ];
        let (theirs, _) = fold_runs(&written, &more);
        assert_eq!(newest(&theirs, &written), theirs);
    }

    #[test]
    fn a_job_that_succeeded_without_a_result_line_is_no_success() {
        let mut r = run("x", Operation::Backup, 100, Some(OK));
        r.result = None;
        let (s, _) = fold_runs(&BackupScheduleStatus::default(), &[r]);
        assert!(s.last_successful_backup.is_none());
        assert_eq!(s.last_failed_backup.unwrap().reason, "ResultMissing");
    }

    #[test]
    fn a_killed_pod_says_why() {
        let mut r = run("x", Operation::Backup, 100, Some(FAILED));
        r.result = None;
        r.ended_by = Some((
            "OOMKilled".into(),
            "the container exited with code 137".into(),
        ));
        let (s, _) = fold_runs(&BackupScheduleStatus::default(), &[r]);
        assert_eq!(s.last_failed_backup.unwrap().reason, "OOMKilled");
    }

    #[test]
    fn a_success_after_failures_resets_the_count() {
        let runs = vec![
            run("a", Operation::Backup, 100, Some(FAILED)),
            run("b", Operation::Backup, 200, Some(OK)),
        ];
        let (s, _) = fold_runs(&BackupScheduleStatus::default(), &runs);
        assert_eq!(s.consecutive_failures, 0);
        let (ds, _) = conditions(&s, None, false, true, None);
        assert_eq!(ds[1].reason, "BackupSucceeded");
        assert_eq!(ds[2].reason, "NotVerifiedYet");
    }
}
