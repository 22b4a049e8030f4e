//! The BackupSchedule controller on the real control plane, with an external MemoryStore on the
//! harness PostgreSQL and the S3 server: bad input is a condition (and a store that appears is
//! picked up), the CronJob is what the schedule says, kube-controller-manager's CronJob controller
//! starts a Job when due, a backup-now token starts exactly one Job, `immediate` runs one at
//! creation and its verification follows; each Job's pod is run here in a kubelet's stead
//! (`aienv_tests::jobs`) and the status, Events and metrics follow what it reported.

use std::time::Duration;

use aienv::{
    api::{BackupSchedule, MemoryStore},
    controllers::backup_schedule::{
        BACKUP_NOW_ANNOTATION, CONTROLLER, LABEL_OPERATION, LABEL_SCHEDULE, cronjob::token_job_name,
    },
};
use aienv_tests::{
    agents::apply_json,
    conditions::{condition, wait_condition},
    jobs::run_job_pod,
    operator::Which,
    plugin::kubectl_aienv,
    stores::{ExternalScenario, apply_store, events_text, external_scenario_with, put_secret},
    testenv::{TestEnv, require_env, wait_for},
};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use kube::{
    Api,
    api::{ListParams, Patch, PatchParams},
};

const WAIT: Duration = Duration::from_secs(60);
/// A label no node has: the Jobs' pods stay unscheduled, and `run_job_pod` runs them here.
const NOWHERE: (&str, &str) = ("aienv.test/no-such-node", "true");

async fn ready_store(sc: &ExternalScenario) -> anyhow::Result<()> {
    apply_store(
        &sc.api,
        "mem",
        serde_json::json!({"mode": "external",
            "external": {"connectionSecretRef": {"name": "pg", "key": "uri"}},
            "embedding": {"dimensions": 4}}),
    )
    .await?;
    let store: MemoryStore =
        aienv_tests::stores::wait_condition(&sc.api, "mem", "Ready", "True", "StoreReady").await?;
    let schema = store.status.unwrap().endpoint.unwrap().schema.unwrap();
    let pool = sc.db.pool_on(&schema, 1).await?;
    sqlx::query(
        "INSERT INTO memories (content, embedding, agent_id, content_sha256)
         SELECT 'memory ' || i, ('[' || i || ',1,2,3]')::vector, 'agent', md5(i::text) FROM generate_series(1, 300) i",
    )
    .execute(&pool)
    .await?;
    Ok(())
}

fn spec(env: &TestEnv, bucket: &str, extra: serde_json::Value) -> serde_json::Value {
    let mut s = serde_json::json!({
        "memoryStoreRef": "mem", "schedule": "0 3 * * *", "timeZone": "Europe/Berlin",
        "destination": {"s3": {"bucket": bucket, "prefix": "bk", "endpoint": env.s3_endpoint,
            "region": env.s3_region, "forcePathStyle": true, "credentialsSecretRef": {"name": "s3"}}},
        "nodeSelector": {NOWHERE.0: NOWHERE.1},
    });
    if let (Some(s), Some(e)) = (s.as_object_mut(), extra.as_object()) {
        for (k, v) in e {
            s.insert(k.clone(), v.clone());
        }
    }
    s
}

async fn apply_schedule(
    api: &Api<BackupSchedule>,
    name: &str,
    spec: serde_json::Value,
) -> anyhow::Result<()> {
    apply_json(
        api,
        serde_json::json!({"apiVersion": "aienv.orchestr8.io/v1alpha1", "kind": "BackupSchedule",
            "metadata": {"name": name}, "spec": spec}),
    )
    .await?;
    Ok(())
}

async fn s3_secret(sc: &ExternalScenario, env: &TestEnv) -> anyhow::Result<()> {
    put_secret(
        &sc.ns,
        "s3",
        &[
            ("AWS_ACCESS_KEY_ID", &env.aws_access_key_id),
            ("AWS_SECRET_ACCESS_KEY", &env.aws_secret_access_key),
        ],
    )
    .await
}

async fn jobs_of(api: &Api<Job>, schedule: &str) -> anyhow::Result<Vec<Job>> {
    Ok(api
        .list(&ListParams::default().labels(&format!("{LABEL_SCHEDULE}={schedule}")))
        .await?
        .items)
}

fn name(j: &Job) -> String {
    j.metadata.name.clone().unwrap_or_default()
}

/// A Ready external store with 300 memories, a bucket and its credentials Secret, and the
/// MemoryStore and BackupSchedule controllers.
struct Fixture {
    sc: ExternalScenario,
    env: TestEnv,
    api: Api<BackupSchedule>,
    jobs: Api<Job>,
    bucket: String,
}

async fn fixture(prefix: &str) -> anyhow::Result<Option<Fixture>> {
    let Some(sc) =
        external_scenario_with(prefix, &[Which::MemoryStore, Which::BackupSchedule]).await?
    else {
        return Ok(None);
    };
    let env = require_env().expect("required above");
    let bucket = env.s3_bucket(prefix).await?;
    ready_store(&sc).await?;
    s3_secret(&sc, &env).await?;
    Ok(Some(Fixture {
        api: sc.ns.api(),
        jobs: sc.ns.api(),
        sc,
        env,
        bucket,
    }))
}

/// Run the Job's pod here, expect it to succeed, and wait for the schedule's condition to say so.
async fn run_to_success(
    sc: &ExternalScenario,
    env: &TestEnv,
    api: &Api<BackupSchedule>,
    job: &Job,
    type_: &str,
    reason: &str,
) -> anyhow::Result<BackupSchedule> {
    let ran = run_job_pod(&sc.client, sc.ns.name(), &name(job), &env.pg_bin).await?;
    assert_eq!(ran.exit_code, 0, "{}\n{}", ran.message, ran.stderr);
    wait_condition(api, WAIT, "nightly", type_, "True", reason).await
}

#[tokio::test]
async fn bad_input_is_a_condition_and_the_cronjob_is_the_schedule() -> anyhow::Result<()> {
    let Some(sc) =
        external_scenario_with("bsched-valid", &[Which::MemoryStore, Which::BackupSchedule])
            .await?
    else {
        return Ok(());
    };
    let env = require_env().expect("required above");
    let api: Api<BackupSchedule> = sc.ns.api();
    let bucket = env.s3_bucket("bsched-valid").await?;

    // An unknown time zone, with the names expected.
    apply_schedule(
        &api,
        "nightly",
        spec(
            &env,
            &bucket,
            serde_json::json!({"timeZone": "Mars/Olympus"}),
        ),
    )
    .await?;
    let s = wait_condition(&api, WAIT, "nightly", "Ready", "False", "InvalidTimeZone").await?;
    assert!(condition(&s, "Ready").unwrap().2.contains("Europe/Berlin"));
    // No store yet.
    apply_schedule(&api, "nightly", spec(&env, &bucket, serde_json::json!({}))).await?;
    let s = wait_condition(&api, WAIT, "nightly", "Ready", "False", "StoreNotFound").await?;
    assert!(condition(&s, "Ready").unwrap().2.contains("mem"));
    assert!(
        events_text(&sc.ns, "nightly")
            .await?
            .iter()
            .any(|(r, _)| r == "StoreNotFound")
    );
    let cron_jobs: Api<CronJob> = sc.ns.api();
    assert!(
        cron_jobs.get_opt("nightly").await?.is_none(),
        "nothing is scheduled for a missing store"
    );

    // The store appears but cannot connect yet: backups wait for it.
    apply_store(
        &sc.api,
        "mem",
        serde_json::json!({"mode": "external",
            "external": {"connectionSecretRef": {"name": "pg-not-yet", "key": "uri"}}}),
    )
    .await?;
    let s = wait_condition(&api, WAIT, "nightly", "Ready", "False", "StoreNotReady").await?;
    assert!(
        condition(&s, "Ready").unwrap().2.contains("pg-not-yet"),
        "{:?}",
        condition(&s, "Ready")
    );
    // Ready now: the schedule notices by itself; the credentials are checked next.
    ready_store(&sc).await?;
    wait_condition(
        &api,
        WAIT,
        "nightly",
        "Ready",
        "False",
        "CredentialsNotFound",
    )
    .await?;
    put_secret(&sc.ns, "s3", &[("AWS_ACCESS_KEY_ID", "x")]).await?;
    let s = wait_condition(
        &api,
        WAIT,
        "nightly",
        "Ready",
        "False",
        "CredentialsKeyMissing",
    )
    .await?;
    assert!(
        condition(&s, "Ready")
            .unwrap()
            .2
            .contains("AWS_SECRET_ACCESS_KEY")
    );
    s3_secret(&sc, &env).await?;
    let s = wait_condition(&api, WAIT, "nightly", "Ready", "True", "Scheduled").await?;

    // 03:00 in Berlin, whatever the day: 02:00 UTC in winter, 01:00 in summer.
    let next = s
        .status
        .as_ref()
        .unwrap()
        .next_schedule_time
        .clone()
        .unwrap()
        .0;
    let berlin = next.to_zoned(jiff::tz::TimeZone::get("Europe/Berlin")?);
    assert_eq!((berlin.hour(), berlin.minute()), (3, 0), "{berlin}");
    assert!(
        next > jiff::Timestamp::now()
            && next < jiff::Timestamp::now() + jiff::SignedDuration::from_hours(25)
    );
    assert_eq!(
        condition(&s, "LastBackupSucceeded").unwrap().1,
        "NoBackupYet"
    );

    let cj = cron_jobs.get("nightly").await?;
    let cspec = cj.spec.unwrap();
    assert_eq!(cspec.schedule, "0 3 * * *");
    assert_eq!(cspec.time_zone.as_deref(), Some("Europe/Berlin"));
    assert_eq!(cspec.concurrency_policy.as_deref(), Some("Forbid"));
    assert_eq!(cspec.suspend, Some(false));
    let pod = cspec.job_template.spec.unwrap().template;
    let labels = pod.metadata.unwrap().labels.unwrap();
    assert_eq!(
        labels["aienv.orchestr8.io/memory-store"], "mem",
        "admitted by the store's NetworkPolicy"
    );
    let pspec = pod.spec.unwrap();
    assert_eq!(pspec.automount_service_account_token, Some(false));
    let c = &pspec.containers[0];
    assert_eq!(c.args.as_ref().unwrap()[0], "backup");
    let env_names: Vec<_> = c
        .env
        .as_ref()
        .unwrap()
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert!(env_names.contains(&"AIENV_DATABASE_URL"));
    assert!(
        c.env.as_ref().unwrap().iter().all(|e| e
            .value
            .as_deref()
            .is_none_or(|v| !v.contains("postgres://"))),
        "the connection comes from the Secret, not inline"
    );

    // A verification schedule of its own is a second CronJob.
    apply_schedule(
        &api,
        "nightly",
        spec(
            &env,
            &bucket,
            serde_json::json!({"verify": {"enabled": true, "schedule": "@weekly"}}),
        ),
    )
    .await?;
    let verify = wait_for(WAIT, "CronJob nightly-verify", || async {
        Ok(cron_jobs.get_opt("nightly-verify").await?)
    })
    .await?;
    let vspec = verify.spec.unwrap();
    assert_eq!(vspec.schedule, "@weekly");
    let vargs = vspec
        .job_template
        .spec
        .unwrap()
        .template
        .spec
        .unwrap()
        .containers[0]
        .args
        .clone()
        .unwrap();
    assert_eq!(vargs[0], "verify");
    let s = wait_condition(
        &api,
        WAIT,
        "nightly",
        "LastVerifySucceeded",
        "Unknown",
        "NotVerifiedYet",
    )
    .await?;
    assert_eq!(condition(&s, "Ready").unwrap().0, "True");
    // Switched off again: the verify CronJob goes, the condition too.
    apply_schedule(&api, "nightly", spec(&env, &bucket, serde_json::json!({}))).await?;
    wait_for(WAIT, "CronJob nightly-verify deleted", || async {
        Ok(cron_jobs
            .get_opt("nightly-verify")
            .await?
            .is_none()
            .then_some(()))
    })
    .await?;

    // Suspending is passed on; the status says so.
    apply_schedule(
        &api,
        "nightly",
        spec(&env, &bucket, serde_json::json!({"suspend": true})),
    )
    .await?;
    let s = wait_condition(&api, WAIT, "nightly", "Ready", "True", "Suspended").await?;
    assert!(s.status.unwrap().next_schedule_time.is_none());
    wait_for(WAIT, "CronJob suspended", || async {
        Ok(cron_jobs
            .get("nightly")
            .await?
            .spec
            .unwrap()
            .suspend
            .filter(|s| *s)
            .map(|_| ()))
    })
    .await?;

    // A cron expression Kubernetes' CronJob does not take (croner would) is reported, not lost.
    apply_schedule(
        &api,
        "nightly",
        spec(&env, &bucket, serde_json::json!({"schedule": "0 3 L * *"})),
    )
    .await?;
    let s = wait_condition(
        &api,
        WAIT,
        "nightly",
        "Ready",
        "False",
        "RejectedByKubernetes",
    )
    .await?;
    assert!(
        condition(&s, "Ready").unwrap().2.contains("schedule"),
        "{:?}",
        condition(&s, "Ready")
    );
    assert_eq!(
        cron_jobs.get("nightly").await?.spec.unwrap().schedule,
        "0 3 * * *",
        "the last good CronJob stays"
    );

    sc.finish().await
}

#[tokio::test]
async fn tokens_and_the_cronjob_controller_start_backups_and_their_results_reach_the_status()
-> anyhow::Result<()> {
    let Some(Fixture {
        sc,
        env,
        api,
        jobs,
        bucket,
    }) = fixture("bsched-run").await?
    else {
        return Ok(());
    };
    apply_schedule(&api, "nightly", spec(&env, &bucket, serde_json::json!({}))).await?;
    wait_condition(&api, WAIT, "nightly", "Ready", "True", "Scheduled").await?;
    assert!(
        jobs_of(&jobs, "nightly").await?.is_empty(),
        "nothing runs before its time"
    );

    // A token: exactly one Job, however often the schedule is reconciled.
    let annotate = |token: &'static str| {
        let api = api.clone();
        async move {
            let patch =
                serde_json::json!({"metadata": {"annotations": {BACKUP_NOW_ANNOTATION: token}}});
            api.patch("nightly", &PatchParams::default(), &Patch::Merge(&patch))
                .await
        }
    };
    // As a user asks for it: `kubectl aienv backup now`.
    let (ok, out, err) = kubectl_aienv(
        &env,
        sc.ns.name(),
        &["backup", "now", "nightly", "--token", "t1"],
    );
    assert!(ok, "{err}");
    assert!(out.contains(&token_job_name("nightly", "t1")), "{out}");
    let job = wait_for(WAIT, "the token's Job", || async {
        Ok(jobs_of(&jobs, "nightly").await?.into_iter().next())
    })
    .await?;
    for i in 0..3 {
        let patch =
            serde_json::json!({"metadata": {"annotations": {"aienv.test/touch": i.to_string()}}});
        api.patch("nightly", &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
    }
    wait_for(WAIT, "lastBackupNowToken", || async {
        Ok(api
            .get("nightly")
            .await?
            .status
            .and_then(|s| s.last_backup_now_token)
            .filter(|t| t == "t1"))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        jobs_of(&jobs, "nightly").await?.len(),
        1,
        "one Job per token"
    );

    // The backup runs and succeeds: the status, an Event and the metrics say so.
    let s = run_to_success(
        &sc,
        &env,
        &api,
        &job,
        "LastBackupSucceeded",
        "BackupSucceeded",
    )
    .await?;
    let st = s.status.clone().unwrap();
    let record = st.last_successful_backup.clone().unwrap();
    assert!(
        record.key.starts_with(&format!("bk/{}/mem/", sc.ns.name())),
        "{}",
        record.key
    );
    assert!(record.size_bytes > 0 && record.sha256.len() == 64);
    assert_eq!(record.job.as_deref(), Some(name(&job).as_str()));
    let manifests = aienv::backup::storage::Destination {
        store: std::sync::Arc::new(env.s3_store(&bucket)?),
        prefix: "bk".into(),
    }
    .list(sc.ns.name(), "mem")
    .await?;
    assert_eq!(manifests.len(), 1);
    assert_eq!(manifests[0].key, record.key);
    assert_eq!(manifests[0].row_counts["memories"], 300);
    assert!(
        events_text(&sc.ns, "nightly")
            .await?
            .iter()
            .any(|(r, n)| r == "BackupSucceeded" && n.contains(&record.key))
    );
    let (ok, out, _) = kubectl_aienv(&env, sc.ns.name(), &["backup", "list"]);
    assert!(
        ok && out.contains("nightly")
            && out.contains("0 3 * * * (Europe/Berlin)")
            && out.contains("Scheduled"),
        "{out}"
    );
    let backups = &sc.ops.ctx.metrics.backups;
    assert_eq!(backups.failures(sc.ns.name(), "nightly"), 0);

    // A second token whose backup fails (the bucket is gone): reported as failed, never as done.
    let gone = aienv_tests::testenv::unique_name("bsched-gone", '-', 40);
    apply_schedule(&api, "nightly", spec(&env, &gone, serde_json::json!({}))).await?;
    annotate("t2").await?;
    let failing = wait_for(WAIT, "the second token's Job", || async {
        Ok(jobs_of(&jobs, "nightly")
            .await?
            .into_iter()
            .find(|j| name(j) != name(&job)))
    })
    .await?;
    let ran = run_job_pod(&sc.client, sc.ns.name(), &name(&failing), &env.pg_bin).await?;
    assert_ne!(ran.exit_code, 0);
    let s = wait_condition(
        &api,
        WAIT,
        "nightly",
        "LastBackupSucceeded",
        "False",
        "StorageError",
    )
    .await?;
    let st = s.status.unwrap();
    assert_eq!(st.consecutive_failures, 1);
    assert_eq!(
        st.last_successful_backup.unwrap().key,
        record.key,
        "the last good backup is still named"
    );
    assert!(
        events_text(&sc.ns, "nightly")
            .await?
            .iter()
            .any(|(r, _)| r == "BackupFailed")
    );
    assert_eq!(backups.failures(sc.ns.name(), "nightly"), 1);

    // kube-controller-manager's CronJob controller starts a Job when one is due.
    apply_schedule(
        &api,
        "nightly",
        spec(&env, &bucket, serde_json::json!({"schedule": "* * * * *"})),
    )
    .await?;
    let scheduled = wait_for(
        Duration::from_secs(100),
        "a Job from the CronJob",
        || async {
            Ok(jobs_of(&jobs, "nightly").await?.into_iter().find(|j| {
                j.metadata
                    .owner_references
                    .as_ref()
                    .is_some_and(|o| o.iter().any(|o| o.kind == "CronJob"))
            }))
        },
    )
    .await?;
    assert_eq!(
        scheduled.metadata.labels.as_ref().unwrap()[LABEL_OPERATION],
        "backup"
    );
    apply_schedule(
        &api,
        "nightly",
        spec(
            &env,
            &bucket,
            serde_json::json!({"schedule": "* * * * *", "suspend": true}),
        ),
    )
    .await?;
    let ran = run_job_pod(&sc.client, sc.ns.name(), &name(&scheduled), &env.pg_bin).await?;
    assert_eq!(ran.exit_code, 0, "{}\n{}", ran.message, ran.stderr);
    wait_for(WAIT, "the scheduled backup in the status", || async {
        let st = api.get("nightly").await?.status.unwrap_or_default();
        Ok((st
            .last_successful_backup
            .as_ref()
            .and_then(|r| r.job.clone())
            == Some(name(&scheduled)))
        .then_some(st))
    })
    .await
    .map(|st| {
        assert_eq!(st.consecutive_failures, 0);
        assert!(st.last_schedule_time.is_some());
    })?;
    assert_eq!(sc.ops.ctx.metrics.failures(CONTROLLER, "KubeError"), 0);
    sc.finish().await
}

#[tokio::test]
async fn an_immediate_backup_is_verified_by_restoring_it() -> anyhow::Result<()> {
    let Some(sc) = external_scenario_with(
        "bsched-verify",
        &[Which::MemoryStore, Which::BackupSchedule],
    )
    .await?
    else {
        return Ok(());
    };
    let env = require_env().expect("required above");
    let api: Api<BackupSchedule> = sc.ns.api();
    let jobs: Api<Job> = sc.ns.api();
    let bucket = env.s3_bucket("bsched-verify").await?;
    ready_store(&sc).await?;
    s3_secret(&sc, &env).await?;
    apply_schedule(
        &api,
        "nightly",
        spec(
            &env,
            &bucket,
            serde_json::json!({"immediate": true, "verify": {"enabled": true}}),
        ),
    )
    .await?;
    let first = wait_for(WAIT, "the immediate Job", || async {
        Ok(jobs_of(&jobs, "nightly").await?.into_iter().next())
    })
    .await?;
    assert_eq!(name(&first), "nightly-initial");
    let s = run_to_success(
        &sc,
        &env,
        &api,
        &first,
        "LastBackupSucceeded",
        "BackupSucceeded",
    )
    .await?;
    let key = s.status.unwrap().last_successful_backup.unwrap().key;
    assert_eq!(
        condition(&api.get("nightly").await?, "LastVerifySucceeded")
            .unwrap()
            .1,
        "NotVerifiedYet"
    );

    // The verification of that backup follows, once.
    let verify = wait_for(WAIT, "the verify Job", || async {
        Ok(jobs_of(&jobs, "nightly").await?.into_iter().find(|j| {
            j.metadata
                .labels
                .as_ref()
                .is_some_and(|l| l[LABEL_OPERATION] == "verify")
        }))
    })
    .await?;
    let s = run_to_success(
        &sc,
        &env,
        &api,
        &verify,
        "LastVerifySucceeded",
        "VerifySucceeded",
    )
    .await?;
    assert_eq!(
        s.status
            .as_ref()
            .unwrap()
            .last_verified_backup
            .as_ref()
            .unwrap()
            .key,
        key
    );
    // verified.json next to the manifest, which retention honours.
    let store = env.s3_store(&bucket)?;
    let folder = key.trim_end_matches("dump.zst");
    use object_store::ObjectStoreExt;
    let verified = store
        .get(&object_store::path::Path::from(format!(
            "{folder}verified.json"
        )))
        .await?
        .bytes()
        .await?;
    let v: serde_json::Value = serde_json::from_slice(&verified)?;
    assert_eq!(v["rowCounts"]["memories"], 300);
    assert_eq!(v["nearest"], 5);
    // The throwaway database is gone.
    let (left,): (i64,) =
        sqlx::query_as("SELECT count(*) FROM pg_database WHERE datname LIKE 'aienv_verify_%'")
            .fetch_one(&sc.db.pool)
            .await?;
    assert_eq!(left, 0);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        jobs_of(&jobs, "nightly").await?.len(),
        2,
        "one backup, one verification, nothing more"
    );
    sc.finish().await
}

#[tokio::test]
async fn a_gcs_schedule_backs_up_to_the_emulator() -> anyhow::Result<()> {
    let Some(Fixture {
        sc, env, api, jobs, ..
    }) = fixture("bsched-gcs").await?
    else {
        return Ok(());
    };
    let bucket = env.gcs_bucket("bsched-gcs").await?;
    let mut s = spec(&env, &bucket, serde_json::json!({}));
    s["destination"] = serde_json::json!({"gcs": {"bucket": bucket, "prefix": "bk",
        "endpoint": env.gcs_endpoint, "anonymous": true}});
    apply_schedule(&api, "nightly", s).await?;
    wait_condition(&api, WAIT, "nightly", "Ready", "True", "Scheduled").await?;
    let patch = serde_json::json!({"metadata": {"annotations": {BACKUP_NOW_ANNOTATION: "gcs-1"}}});
    api.patch("nightly", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    let job = wait_for(WAIT, "the token's Job", || async {
        Ok(jobs_of(&jobs, "nightly").await?.into_iter().next())
    })
    .await?;
    let s = run_to_success(
        &sc,
        &env,
        &api,
        &job,
        "LastBackupSucceeded",
        "BackupSucceeded",
    )
    .await?;
    let key = s.status.unwrap().last_successful_backup.unwrap().key;
    // The dump and its manifest are in the GCS bucket (listed through the emulator's JSON API).
    let listed: serde_json::Value = reqwest::get(format!(
        "{}/storage/v1/b/{bucket}/o?prefix=bk/",
        env.gcs_endpoint.trim_end_matches('/')
    ))
    .await?
    .json()
    .await?;
    let names: Vec<&str> = listed["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["name"].as_str())
        .collect();
    assert!(names.contains(&key.as_str()), "{names:?}");
    assert!(
        names.iter().any(|n| n.ends_with("manifest.json")),
        "{names:?}"
    );
    sc.finish().await
}
