//! BackupSchedule controller: resolve (store, credentials, Jobs) → validate → build (CronJobs,
//! on-demand Jobs) → apply → status from the Jobs' results. No finalizer: everything it makes is
//! a Kubernetes object it owns, and the backups in the bucket outlive the schedule on purpose.

pub mod cronjob;
pub mod resolve;
pub mod retention;
pub mod status;
pub mod validate;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::{
    api::{
        batch::v1::{CronJob, Job},
        core::v1::Secret,
    },
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::{
    Api, Resource, ResourceExt,
    core::{DeserializeGuard, PartialObjectMeta},
    runtime::{
        Controller,
        controller::Action,
        events::EventType,
        reflector::{ObjectRef, Store},
        watcher,
    },
};
use tracing::{Instrument, info_span};

use self::{
    cronjob::Inputs,
    resolve::Resolved,
    status::{Happened, Operation},
    validate::Plan,
};
use crate::{
    api::{
        backup_schedule::{BackupSchedule, BackupScheduleStatus},
        memory_store::MemoryStore,
    },
    conditions,
    controller::{
        Context, Error, Problem, Result, apply,
        backup_metrics::Observed,
        children::{ChildSet, Lifetime},
        mapping,
        policy::{self, Backoffs},
        shared::Subscriptions,
        status::Writer,
    },
};

/// Label of this controller in metrics and logs.
pub const CONTROLLER: &str = "backupschedule";
/// On every CronJob, Job and pod of a schedule: its name.
pub const LABEL_SCHEDULE: &str = "aienv.orchestr8.io/backup-schedule";
/// `backup` or `verify`.
pub const LABEL_OPERATION: &str = "aienv.orchestr8.io/operation";
/// On a verify Job started for one backup: the backup's timestamp folder.
pub const VERIFY_OF_ANNOTATION: &str = "aienv.orchestr8.io/verify-of";
/// Set it to a new value to run one backup now: each distinct value runs exactly one Job.
pub const BACKUP_NOW_ANNOTATION: &str = "aienv.orchestr8.io/backup-now";

type Guarded = DeserializeGuard<BackupSchedule>;

pub struct State {
    pub ctx: Arc<Context>,
    backoffs: Backoffs,
    /// The status last written, by the schedule's uid, until the watch brings it back.
    written: Mutex<HashMap<String, BackupScheduleStatus>>,
}

impl State {
    fn remember(&self, uid: &str, status: &BackupScheduleStatus) {
        self.written
            .lock()
            .expect("status memo")
            .insert(uid.to_string(), status.clone());
    }

    fn forget(&self, uid: &str) {
        self.written.lock().expect("status memo").remove(uid);
    }

    /// The object's status, or what this process wrote last when the watch is behind.
    fn base(&self, uid: &str, observed: &BackupScheduleStatus) -> BackupScheduleStatus {
        match self.written.lock().expect("status memo").get(uid) {
            Some(written) => status::newest(observed, written),
            None => observed.clone(),
        }
    }
}

/// Run the controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    subs: Subscriptions,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let metrics = ctx.metrics.clone();
    let cfg = || watcher::Config::default().any_semantic();
    let controller = Controller::new(ctx.watched::<Guarded>(), cfg());
    let schedules = controller.store();
    let (by_store, by_secret) = (schedules.clone(), schedules.clone());
    let state = Arc::new(State {
        ctx: ctx.clone(),
        backoffs: Backoffs::default(),
        written: Mutex::default(),
    });
    policy::drain(
        controller
            .owns(ctx.watched::<CronJob>(), cfg().labels(LABEL_SCHEDULE))
            // The CronJob's Jobs are the CronJob's children: mapped by label, not owner.
            .watches(ctx.watched::<Job>(), cfg().labels(LABEL_SCHEDULE), |job| {
                let ns = job.namespace()?;
                let name = job.labels().get(LABEL_SCHEDULE)?.clone();
                Some(ObjectRef::new(&name).within(&ns))
            })
            // A store appearing or becoming Ready wakes the schedules naming it.
            .watches(
                ctx.watched::<DeserializeGuard<MemoryStore>>(),
                cfg(),
                move |store| {
                    let meta = match &store.0 {
                        Ok(s) => &s.metadata,
                        Err(invalid) => &invalid.metadata,
                    };
                    mapping::users_of(&by_store, meta, |s: &BackupSchedule, name| {
                        s.spec.memory_store_ref == name
                    })
                },
            )
            .watches_shared_stream(subs.secrets, move |secret| {
                schedules_using(&by_secret, &secret)
            })
            .graceful_shutdown_on(shutdown)
            .run(reconcile, error_policy, state),
        CONTROLLER,
        &metrics,
    )
    .await;
}

fn schedules_using(
    store: &Store<Guarded>,
    secret: &PartialObjectMeta<Secret>,
) -> Vec<ObjectRef<Guarded>> {
    mapping::users_of(store, &secret.metadata, |s: &BackupSchedule, name| {
        resolve::named_secrets(s).iter().any(|n| n == name)
    })
}

async fn reconcile(guarded: Arc<Guarded>, state: Arc<State>) -> Result<Action> {
    let ctx = &state.ctx;
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    let (schedule, ns, name) = policy::decoded(&guarded, "BackupSchedule")?;
    let span = info_span!("reconcile", controller = CONTROLLER, namespace = %ns, name = %name);
    async {
        let uid = schedule.metadata.uid.clone().unwrap_or_default();
        if schedule.metadata.deletion_timestamp.is_some() {
            ctx.metrics.backups.remove(&ns, &name);
            state.forget(&uid);
            return Ok(Action::await_change());
        }
        let resolved = resolve::resolve(ctx, schedule, &ns).await?;
        let old = schedule.status.clone().unwrap_or_default();
        let (mut new, happened) = status::fold_runs(&state.base(&uid, &old), &resolved.runs);
        let plan = validate::validate(schedule, &resolved);
        let mut problem = plan.as_ref().err().cloned();
        let mut next = None;
        if let Ok(plan) = &plan {
            if let Err(p) = apply_children(schedule, &ns, plan, &resolved, &mut new, ctx).await? {
                problem = Some(p);
            }
            if !schedule.spec.suspend {
                next = validate::next_slot(&plan.backup_cron, &plan.tz, ctx.clock.now());
            }
        }
        new.next_schedule_time = next.map(Time);
        let (action, written) =
            write_status(schedule, &ns, &name, old, new, problem, &happened, ctx).await?;
        state.remember(&uid, &written);
        state.backoffs.succeeded(schedule);
        Ok(action)
    }
    .instrument(span)
    .await
}

/// Apply the CronJobs and the Jobs due now; returns a problem Kubernetes found with them.
async fn apply_children(
    schedule: &BackupSchedule,
    ns: &str,
    plan: &Plan,
    resolved: &Resolved,
    new: &mut BackupScheduleStatus,
    ctx: &Context,
) -> Result<Result<(), Problem>> {
    let name = schedule.name_any();
    let tz_name = schedule.spec.time_zone.as_deref().unwrap_or("UTC");
    let inputs = Inputs {
        schedule,
        binding: &plan.binding,
        image: &ctx.job_image,
        time_zone: tz_name,
    };
    let owner = schedule
        .controller_owner_ref(&())
        .ok_or(Error::MissingField("metadata.uid"))?;
    let mut set = ChildSet::new(
        ctx.client.clone(),
        ns,
        owner,
        LABEL_SCHEDULE,
        apply::manager::BACKUP_SCHEDULE,
        CONTROLLER,
        &ctx.metrics,
    );
    let mut cron_jobs = vec![inputs.backup_cron_job()];
    if let Some(Some(_)) = &plan.verify_cron
        && let Some(s) = schedule
            .spec
            .verify
            .as_ref()
            .and_then(|v| v.schedule.as_deref())
    {
        cron_jobs.push(inputs.verify_cron_job(s));
    }
    set.expect::<CronJob>().await?;
    for cj in cron_jobs {
        if let Err(p) = refused(set.add(cj, Lifetime::Owned).await)? {
            return Ok(Err(p));
        }
    }

    // Jobs cannot change once made: the ones there stay until they expire.
    let existing: Vec<&str> = resolved.runs.iter().map(|r| r.job.as_str()).collect();
    for job in &existing {
        set.keep::<Job>(job).await?;
    }
    let mut wanted: Vec<(String, Operation, Option<String>)> = Vec::new();
    if let Some(token) = schedule
        .annotations()
        .get(BACKUP_NOW_ANNOTATION)
        .map(|t| t.trim())
        .filter(|t| !t.is_empty())
        && new.last_backup_now_token.as_deref() != Some(token)
    {
        wanted.push((
            cronjob::token_job_name(&name, token),
            Operation::Backup,
            None,
        ));
        new.last_backup_now_token = Some(token.to_string());
    }
    let never_ran = new.last_successful_backup.is_none()
        && new.last_failed_backup.is_none()
        && !resolved
            .runs
            .iter()
            .any(|r| r.operation == Operation::Backup);
    if schedule.spec.immediate && never_ran {
        wanted.push((cronjob::initial_job_name(&name), Operation::Backup, None));
    }
    // Verification right after each successful backup, once per backup.
    if let Some(None) = &plan.verify_cron
        && let Some(last) = &new.last_successful_backup
        && new.last_verified_backup.as_ref().map(|v| &v.key) != Some(&last.key)
        && let Some(stamp) = cronjob::backup_stamp(&last.key)
        && new
            .last_failed_verify
            .as_ref()
            .and_then(|f| f.key.as_deref())
            != Some(stamp)
    {
        wanted.push((
            cronjob::verify_job_name(&name, stamp),
            Operation::Verify,
            Some(stamp.to_string()),
        ));
    }
    for (job_name, op, backup) in wanted {
        if existing.contains(&job_name.as_str()) {
            continue;
        }
        let job = inputs.on_demand_job(job_name.clone(), op, backup.as_deref());
        if let Err(p) = refused(set.add(job, Lifetime::Owned).await)? {
            return Ok(Err(p));
        }
        let why = match (op, &backup) {
            (Operation::Verify, Some(b)) => format!("verifying backup {b}"),
            _ => "backup requested".to_string(),
        };
        ctx.event(
            &schedule.object_ref(&()),
            EventType::Normal,
            match op {
                Operation::Backup => "BackupStarted",
                Operation::Verify => "VerifyStarted",
            },
            "CreateJob",
            format!("Job {job_name}: {why}"),
        )
        .await;
    }
    set.finish().await?;
    Ok(Ok(()))
}

/// An object Kubernetes refuses (422: a cron expression or time zone its validation rejects) or
/// one of that name this schedule does not own, as a problem; other errors stay errors.
fn refused<K>(
    applied: Result<Result<K, crate::controller::apply::Conflict>>,
) -> Result<Result<(), Problem>> {
    match applied {
        Ok(Ok(_)) => Ok(Ok(())),
        Ok(Err(conflict)) => Ok(Err(Problem::new("ChildConflict", conflict.to_string()))),
        Err(Error::Kube(kube::Error::Api(s))) if s.code == 422 => Ok(Err(Problem::new(
            "RejectedByKubernetes",
            format!(
                "Kubernetes refused the schedule's CronJob or Job: {}",
                s.message
            ),
        ))),
        Err(e) => Err(e),
    }
}

#[allow(clippy::too_many_arguments)]
async fn write_status(
    schedule: &BackupSchedule,
    ns: &str,
    name: &str,
    old: BackupScheduleStatus,
    mut new: BackupScheduleStatus,
    problem: Option<Problem>,
    happened: &[Happened],
    ctx: &Context,
) -> Result<(Action, BackupScheduleStatus)> {
    let now = ctx.clock.now();
    let verify = schedule.spec.verify.as_ref().is_some_and(|v| v.enabled);
    let next_text = new.next_schedule_time.as_ref().map(|t| {
        let tz = validate::time_zone(&schedule.spec).unwrap_or(jiff::tz::TimeZone::UTC);
        t.0.to_zoned(tz).strftime("%Y-%m-%d %H:%M %Z").to_string()
    });
    let (desired, removed) = status::conditions(
        &new,
        problem.as_ref(),
        schedule.spec.suspend,
        verify,
        next_text.as_deref(),
    );
    let mut conds = old.conditions.clone();
    conditions::remove(&mut conds, removed);
    new.conditions = conditions::merge(&conds, desired, schedule.metadata.generation, &Time(now));
    new.observed_generation = schedule.metadata.generation;

    let reference = schedule.object_ref(&());
    for h in happened {
        let (type_, reason, note) = match h {
            Happened::BackupSucceeded(r) => (
                EventType::Normal,
                "BackupSucceeded",
                format!(
                    "{} ({} bytes, {:.1}s)",
                    r.key, r.size_bytes, r.duration_seconds
                ),
            ),
            Happened::BackupFailed(f) => {
                ctx.metrics.backups.failed(ns, name);
                (
                    EventType::Warning,
                    "BackupFailed",
                    format!("{}: {}", f.reason, f.message),
                )
            }
            Happened::VerifySucceeded(r) => (
                EventType::Normal,
                "VerifySucceeded",
                format!(
                    "{} restored into a throwaway database and matched its manifest",
                    r.key
                ),
            ),
            Happened::VerifyFailed(f) => (
                EventType::Warning,
                "VerifyFailed",
                format!("{}: {}", f.reason, f.message),
            ),
        };
        ctx.event(&reference, type_, reason, "Observe", note).await;
    }
    let seconds = |t: &Option<Time>| t.as_ref().map(|t| t.0.as_second());
    ctx.metrics.backups.observe(
        ns,
        name,
        &Observed {
            last_success: new
                .last_successful_backup
                .as_ref()
                .and_then(|r| seconds(&r.time)),
            last_verified: new
                .last_verified_backup
                .as_ref()
                .and_then(|r| seconds(&r.time)),
            duration_seconds: new
                .last_successful_backup
                .as_ref()
                .map(|r| r.duration_seconds),
            size_bytes: new.last_successful_backup.as_ref().map(|r| r.size_bytes),
            consecutive_failures: new.consecutive_failures,
        },
    );

    let api: Api<BackupSchedule> = Api::namespaced(ctx.client.clone(), ns);
    Writer {
        controller: CONTROLLER,
        manager: apply::manager::BACKUP_SCHEDULE,
        reference: &reference,
        progressing: &["StoreNotReady"],
    }
    .write(ctx, &api, name, &old, &new, false)
    .await?;
    // Look again just after the next slot, so nextScheduleTime moves on; the Jobs' own changes
    // wake the schedule sooner.
    let wait = new
        .next_schedule_time
        .as_ref()
        .and_then(|t| Duration::try_from(t.0.duration_since(now)).ok())
        .map(|d| d + Duration::from_secs(2))
        .unwrap_or(Duration::from_secs(3600))
        .clamp(Duration::from_secs(5), Duration::from_secs(3600));
    Ok((Action::requeue(wait), new))
}

fn error_policy(guarded: Arc<Guarded>, error: &Error, state: Arc<State>) -> Action {
    policy::on_error(CONTROLLER, &guarded, error, &state.ctx, &state.backoffs)
}
