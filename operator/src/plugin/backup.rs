//! `kubectl aienv backup list | now SCHEDULE`: the schedules with their last backup, and an
//! on-demand backup (a new `aienv.orchestr8.io/backup-now` token, as CloudNativePG's `kubectl
//! cnpg backup` starts one).

use anyhow::{Result, bail};
use kube::{
    Api, Client,
    api::{ListParams, Patch, PatchParams},
};

use super::table::{Row, render};
use crate::{
    api::BackupSchedule,
    controllers::backup_schedule::{BACKUP_NOW_ANNOTATION, cronjob::token_job_name},
};

/// The schedules: store, schedule, last success, next slot, failures in a row, Ready's reason.
pub async fn list(client: &Client, ns: &str) -> Result<String> {
    let api = Api::<BackupSchedule>::namespaced(client.clone(), ns);
    let rows: Vec<Row> = api
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .map(row)
        .collect();
    if rows.is_empty() {
        return Ok(format!("No BackupSchedules in namespace {ns}.\n"));
    }
    Ok(render(
        &[
            "NAME",
            "STORE",
            "SCHEDULE",
            "LAST BACKUP",
            "NEXT",
            "FAILURES",
            "REASON",
        ],
        &rows,
    ))
}

fn row(s: &BackupSchedule) -> Row {
    let st = s.status.clone().unwrap_or_default();
    let time = |t: Option<&k8s_openapi::apimachinery::pkg::apis::meta::v1::Time>| {
        t.map(|t| t.0.to_string()).unwrap_or_else(|| "-".into())
    };
    let reason = crate::conditions::get(&st.conditions, "Ready")
        .map(|c| c.reason.clone())
        .unwrap_or_else(|| "-".into());
    let schedule = match &s.spec.time_zone {
        Some(tz) => format!("{} ({tz})", s.spec.schedule),
        None => s.spec.schedule.clone(),
    };
    vec![
        s.metadata.name.clone().unwrap_or_default(),
        s.spec.memory_store_ref.clone(),
        schedule,
        time(
            st.last_successful_backup
                .as_ref()
                .and_then(|r| r.time.as_ref()),
        ),
        time(st.next_schedule_time.as_ref()),
        st.consecutive_failures.to_string(),
        reason,
    ]
}

/// Ask for one backup now; returns what to watch.
pub async fn now(client: &Client, ns: &str, schedule: &str, token: &str) -> Result<String> {
    let api = Api::<BackupSchedule>::namespaced(client.clone(), ns);
    if api.get_opt(schedule).await?.is_none() {
        bail!(
            "BackupSchedule {schedule:?} not found in namespace {ns:?} (see `kubectl aienv backup list`)"
        );
    }
    let patch = serde_json::json!({"metadata": {"annotations": {BACKUP_NOW_ANNOTATION: token}}});
    api.patch(schedule, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    let job = token_job_name(schedule, token);
    Ok(format!(
        "backupschedule/{schedule}: backup requested (token {token}); Job {job}\n  watch: kubectl -n {ns} get job {job}; kubectl -n {ns} get bsched {schedule}\n"
    ))
}
