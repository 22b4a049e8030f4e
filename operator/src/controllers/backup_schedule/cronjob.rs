//! The CronJobs and Jobs of a BackupSchedule, built from its spec and what [`super::validate`]
//! resolved. The container's flags are `aienv backup|verify`'s own ([`crate::backup::JobCommand`]);
//! what Secrets hold goes in through the environment variables those flags read. Pure.

use std::collections::BTreeMap;

use k8s_openapi::api::{
    batch::v1::{CronJob, CronJobSpec, Job, JobSpec, JobTemplateSpec},
    core::v1::{
        Container, EmptyDirVolumeSource, EnvVar, EnvVarSource, PodSpec, PodTemplateSpec,
        SecretKeySelector, SecretVolumeSource, Volume, VolumeMount,
    },
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sha2::{Digest, Sha256};

use super::{
    LABEL_OPERATION, LABEL_SCHEDULE, VERIFY_OF_ANNOTATION,
    resolve::{Database, StoreBinding},
    retention,
    status::Operation,
};
use crate::{
    api::backup_schedule::{BackupSchedule, Destination},
    backup::env,
    controller::{
        labels::{LABEL_COMPONENT, LABEL_MANAGED_BY, MANAGED_BY},
        pods::{restricted_container_security, restricted_pod_security},
    },
    controllers::memory_store::children::LABEL_CLIENT,
};

/// The uid the Jobs run as (the image's non-root user).
pub use crate::controller::pods::RUN_AS;
/// On-demand Jobs are deleted a week after they finish; their result is in the status by then.
pub const ON_DEMAND_TTL: i32 = 7 * 24 * 3600;
/// Where a GCS service-account key is mounted.
pub const GCS_KEY_DIR: &str = "/var/run/aienv/gcs";
/// Environment variables the object-storage clients read themselves (no flag of ours).
pub const CLIENT_ENV: [&str; 1] = ["AWS_SESSION_TOKEN"];

/// What every Job of one schedule shares.
pub struct Inputs<'a> {
    pub schedule: &'a BackupSchedule,
    pub binding: &'a StoreBinding,
    pub image: &'a str,
    pub time_zone: &'a str,
}

impl Inputs<'_> {
    fn name(&self) -> String {
        self.schedule.metadata.name.clone().unwrap_or_default()
    }
    fn namespace(&self) -> String {
        self.schedule.metadata.namespace.clone().unwrap_or_default()
    }

    fn labels(&self, op: Operation) -> BTreeMap<String, String> {
        BTreeMap::from([
            (LABEL_MANAGED_BY.into(), MANAGED_BY.into()),
            (LABEL_SCHEDULE.into(), self.name()),
            (LABEL_OPERATION.into(), op.as_str().into()),
            (
                LABEL_COMPONENT.into(),
                format!("memory-store-{}", op.as_str()),
            ),
        ])
    }

    /// The container's flags: store, destination, and per operation retention and compression
    /// or the backup to verify.
    pub fn args(&self, op: Operation, backup: Option<&str>) -> Vec<String> {
        let spec = &self.schedule.spec;
        let mut args = vec![
            op.as_str().to_string(),
            format!("--namespace={}", self.namespace()),
            format!("--store={}", self.binding.store),
            format!("--schema={}", self.binding.schema),
        ];
        args.extend(destination_flags(&spec.destination));
        match op {
            Operation::Backup => {
                args.extend(retention::flags(&spec.retention, self.time_zone));
                args.push(format!("--zstd-level={}", spec.compression.level));
                args.push(format!("--zstd-threads={}", spec.compression.threads));
            }
            Operation::Verify => {
                if let Some(b) = backup {
                    args.push(format!("--backup={b}"));
                }
            }
        }
        args
    }

    fn env(&self) -> Vec<EnvVar> {
        let from_secret = |var: &str, name: &str, key: &str, optional: bool| EnvVar {
            name: var.into(),
            value: None,
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: name.into(),
                    key: key.into(),
                    optional: optional.then_some(true),
                }),
                ..Default::default()
            }),
        };
        let literal = |var: &str, value: String| EnvVar {
            name: var.into(),
            value: Some(value),
            value_from: None,
        };
        let mut out = match &self.binding.database {
            Database::UriInSecret { name, key } => {
                vec![from_secret(env::DATABASE_URL, name, key, false)]
            }
            Database::PasswordInSecret { uri, name, key } => vec![
                literal(env::DATABASE_URL, uri.clone()),
                from_secret(env::DATABASE_PASSWORD, name, key, false),
            ],
        };
        let d = &self.schedule.spec.destination;
        if let Some(r) =
            d.s3.as_ref()
                .and_then(|s| s.credentials_secret_ref.as_ref())
        {
            out.push(from_secret(
                "AWS_ACCESS_KEY_ID",
                &r.name,
                "AWS_ACCESS_KEY_ID",
                false,
            ));
            out.push(from_secret(
                "AWS_SECRET_ACCESS_KEY",
                &r.name,
                "AWS_SECRET_ACCESS_KEY",
                false,
            ));
            out.push(from_secret(
                "AWS_SESSION_TOKEN",
                &r.name,
                "AWS_SESSION_TOKEN",
                true,
            ));
        }
        if let Some(r) = d
            .gcs
            .as_ref()
            .and_then(|g| g.credentials_secret_ref.as_ref())
        {
            out.push(literal(
                "GOOGLE_APPLICATION_CREDENTIALS",
                format!("{GCS_KEY_DIR}/{}", r.key),
            ));
        }
        out
    }

    /// The pod every Job of `op` runs: restricted, no API token unless a service account is
    /// named (workload identity), labelled as a client of the store so its NetworkPolicy admits it.
    pub fn pod_template(&self, op: Operation, backup: Option<&str>) -> PodTemplateSpec {
        let spec = &self.schedule.spec;
        let mut labels = self.labels(op);
        labels.insert(LABEL_CLIENT.into(), self.binding.store.clone());
        let mut volumes = vec![Volume {
            name: "tmp".into(),
            empty_dir: Some(EmptyDirVolumeSource::default()),
            ..Default::default()
        }];
        let mut mounts = vec![VolumeMount {
            name: "tmp".into(),
            mount_path: "/tmp".into(),
            ..Default::default()
        }];
        if let Some(r) = spec
            .destination
            .gcs
            .as_ref()
            .and_then(|g| g.credentials_secret_ref.as_ref())
        {
            volumes.push(Volume {
                name: "gcs-key".into(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(r.name.clone()),
                    default_mode: Some(0o400),
                    ..Default::default()
                }),
                ..Default::default()
            });
            mounts.push(VolumeMount {
                name: "gcs-key".into(),
                mount_path: GCS_KEY_DIR.into(),
                read_only: Some(true),
                ..Default::default()
            });
        }
        PodTemplateSpec {
            metadata: Some(ObjectMeta {
                labels: Some(labels),
                ..Default::default()
            }),
            spec: Some(PodSpec {
                restart_policy: Some("Never".into()),
                service_account_name: spec.service_account_name.clone(),
                automount_service_account_token: Some(spec.service_account_name.is_some()),
                node_selector: (!spec.node_selector.is_empty()).then(|| spec.node_selector.clone()),
                tolerations: (!spec.tolerations.is_empty()).then(|| spec.tolerations.clone()),
                security_context: Some(restricted_pod_security()),
                containers: vec![Container {
                    name: op.as_str().into(),
                    image: Some(self.image.into()),
                    image_pull_policy: Some("IfNotPresent".into()),
                    args: Some(self.args(op, backup)),
                    env: Some(self.env()),
                    resources: spec.resources.clone(),
                    termination_message_policy: Some("File".into()),
                    volume_mounts: Some(mounts),
                    security_context: Some(restricted_container_security()),
                    ..Default::default()
                }],
                volumes: Some(volumes),
                ..Default::default()
            }),
        }
    }

    fn job_spec(&self, op: Operation, backup: Option<&str>, ttl: Option<i32>) -> JobSpec {
        JobSpec {
            // A failed backup is reported, not retried in place: the next slot or a new token
            // runs it again.
            backoff_limit: Some(0),
            ttl_seconds_after_finished: ttl,
            template: self.pod_template(op, backup),
            ..Default::default()
        }
    }

    /// The backup CronJob, named after the schedule.
    pub fn backup_cron_job(&self) -> CronJob {
        let spec = &self.schedule.spec;
        self.cron_job(
            self.name(),
            Operation::Backup,
            spec.schedule.trim().to_string(),
            spec.concurrency_policy.as_str(),
        )
    }

    /// The verify CronJob (`<schedule>-verify`), when verification has a schedule of its own.
    pub fn verify_cron_job(&self, schedule: &str) -> CronJob {
        self.cron_job(
            format!("{}-verify", self.name()),
            Operation::Verify,
            schedule.trim().to_string(),
            "Forbid",
        )
    }

    fn cron_job(&self, name: String, op: Operation, schedule: String, policy: &str) -> CronJob {
        let spec = &self.schedule.spec;
        CronJob {
            metadata: ObjectMeta {
                name: Some(name),
                namespace: Some(self.namespace()),
                labels: Some(self.labels(op)),
                ..Default::default()
            },
            spec: Some(CronJobSpec {
                schedule,
                time_zone: spec.time_zone.clone(),
                suspend: Some(spec.suspend),
                concurrency_policy: Some(policy.into()),
                starting_deadline_seconds: spec.starting_deadline_seconds,
                successful_jobs_history_limit: Some(spec.successful_jobs_history_limit),
                failed_jobs_history_limit: Some(spec.failed_jobs_history_limit),
                job_template: JobTemplateSpec {
                    metadata: Some(ObjectMeta {
                        labels: Some(self.labels(op)),
                        ..Default::default()
                    }),
                    spec: Some(self.job_spec(op, None, None)),
                },
            }),
            status: None,
        }
    }

    /// A Job outside the CronJob: for a backup-now token, the immediate first backup, or the
    /// verification of one backup.
    pub fn on_demand_job(&self, name: String, op: Operation, backup: Option<&str>) -> Job {
        let mut metadata = ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace()),
            labels: Some(self.labels(op)),
            ..Default::default()
        };
        if let Some(b) = backup {
            metadata.annotations = Some(BTreeMap::from([(
                VERIFY_OF_ANNOTATION.into(),
                b.to_string(),
            )]));
        }
        Job {
            metadata,
            spec: Some(self.job_spec(op, backup, Some(ON_DEMAND_TTL))),
            status: None,
        }
    }
}

/// `--bucket` and friends for the destination.
pub fn destination_flags(d: &Destination) -> Vec<String> {
    let mut flags = Vec::new();
    let prefix = |flags: &mut Vec<String>, p: &str| {
        if !p.trim_matches('/').is_empty() {
            flags.push(format!("--prefix={}", p.trim_matches('/')));
        }
    };
    if let Some(s3) = &d.s3 {
        flags.push(format!("--bucket={}", s3.bucket));
        prefix(&mut flags, &s3.prefix);
        if let Some(e) = &s3.endpoint {
            flags.push(format!("--s3-endpoint={e}"));
        }
        if let Some(r) = &s3.region {
            flags.push(format!("--s3-region={r}"));
        }
        if s3.force_path_style {
            flags.push("--s3-path-style".into());
        }
    } else if let Some(gcs) = &d.gcs {
        flags.push(format!("--gcs-bucket={}", gcs.bucket));
        prefix(&mut flags, &gcs.prefix);
        if let Some(e) = &gcs.endpoint {
            flags.push(format!("--gcs-endpoint={e}"));
        }
        if gcs.anonymous {
            flags.push("--gcs-anonymous".into());
        }
    }
    flags
}

/// The Job a backup-now token starts: one name per token.
pub fn token_job_name(schedule: &str, token: &str) -> String {
    let h = hex::encode(Sha256::digest(token.as_bytes()));
    format!("{schedule}-now-{}", &h[..10])
}

/// The immediate first backup's Job.
pub fn initial_job_name(schedule: &str) -> String {
    format!("{schedule}-initial")
}

/// The timestamp folder of a dump key (`…/<store>/<stamp>/dump.zst`).
pub fn backup_stamp(key: &str) -> Option<&str> {
    key.rsplit('/').nth(1).filter(|s| !s.is_empty())
}

/// The Job verifying one backup right after it was made.
pub fn verify_job_name(schedule: &str, stamp: &str) -> String {
    format!("{schedule}-verify-{}", stamp.to_ascii_lowercase())
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, Parser};

    use super::*;
    use crate::backup::JobCommand;

    #[derive(Parser)]
    struct Cli {
        #[command(subcommand)]
        command: JobCommand,
    }

    fn schedule(dest: serde_json::Value) -> BackupSchedule {
        let mut s = BackupSchedule::new(
            "nightly",
            serde_json::from_value(serde_json::json!({
                "memoryStoreRef": "mem", "schedule": "0 3 * * *", "timeZone": "Europe/Berlin",
                "destination": dest, "retention": {"keepLast": 3, "keepDaily": 0, "keepWeekly": 0, "keepMonthly": 2},
                "compression": {"level": 5, "threads": 3}
            }))
            .unwrap(),
        );
        s.metadata.namespace = Some("team".into());
        s
    }

    fn external() -> StoreBinding {
        binding(Database::UriInSecret {
            name: "pg".into(),
            key: "uri".into(),
        })
    }

    fn inputs<'a>(s: &'a BackupSchedule, b: &'a StoreBinding, time_zone: &'a str) -> Inputs<'a> {
        Inputs {
            schedule: s,
            binding: b,
            image: "aienv:1",
            time_zone,
        }
    }

    fn binding(db: Database) -> StoreBinding {
        StoreBinding {
            store: "mem".into(),
            schema: "aienv_mem".into(),
            database: db,
        }
    }

    /// The container's flags and environment, parsed by `aienv` itself: every variable set is
    /// one a flag reads (or a storage client's own), and the values arrive where they belong.
    fn parse(template: &PodTemplateSpec) -> JobCommand {
        let c = &template.spec.as_ref().unwrap().containers[0];
        let mut argv = vec!["aienv".to_string()];
        argv.extend(c.args.clone().unwrap());
        let op = argv[1].clone();
        let cmd = Cli::command();
        let sub = cmd.find_subcommand(&op).unwrap();
        for e in c.env.clone().unwrap() {
            let arg = sub
                .get_arguments()
                .find(|a| a.get_env().and_then(|v| v.to_str()) == Some(e.name.as_str()));
            match arg {
                Some(a) => {
                    let value = e.value.clone().unwrap_or_else(|| format!("<{}>", e.name));
                    argv.push(format!("--{}={value}", a.get_long().unwrap()));
                }
                None => assert!(
                    CLIENT_ENV.contains(&e.name.as_str()),
                    "{} is read by nothing",
                    e.name
                ),
            }
        }
        Cli::try_parse_from(argv).unwrap().command
    }

    #[test]
    fn the_backup_container_is_what_aienv_backup_parses() {
        let s = schedule(
            serde_json::json!({"s3": {"bucket": "bk", "prefix": "/p/", "endpoint": "http://minio:9000",
            "region": "eu-1", "forcePathStyle": true, "credentialsSecretRef": {"name": "s3"}}}),
        );
        let b = external();
        let inputs = inputs(&s, &b, "Europe/Berlin");
        let cj = inputs.backup_cron_job();
        let spec = cj.spec.as_ref().unwrap();
        assert_eq!(spec.schedule, "0 3 * * *");
        assert_eq!(spec.time_zone.as_deref(), Some("Europe/Berlin"));
        assert_eq!(spec.concurrency_policy.as_deref(), Some("Forbid"));
        let template = &spec.job_template.spec.as_ref().unwrap().template;
        let JobCommand::Backup(args) = parse(template) else {
            panic!("not a backup")
        };
        assert_eq!(
            (
                args.store.namespace.as_str(),
                args.store.store.as_str(),
                args.store.schema.as_str()
            ),
            ("team", "mem", "aienv_mem")
        );
        assert_eq!(args.store.database_url, "<AIENV_DATABASE_URL>");
        assert_eq!(args.destination.bucket.as_deref(), Some("bk"));
        assert_eq!(args.destination.prefix, "p");
        assert_eq!(
            args.destination.s3_endpoint.as_deref(),
            Some("http://minio:9000")
        );
        assert_eq!(args.destination.s3_region, "eu-1");
        assert!(args.destination.s3_path_style);
        assert!(args.retention.retention);
        assert_eq!(
            (
                args.retention.keep_last,
                args.retention.keep_daily,
                args.retention.keep_monthly
            ),
            (3, 0, 2)
        );
        assert_eq!(args.retention.time_zone, "Europe/Berlin");
        assert_eq!((args.zstd_level, args.zstd_threads), (5, 3));
    }

    #[test]
    fn a_managed_store_passes_its_password_apart_and_the_pod_is_restricted() {
        let s = schedule(serde_json::json!({"s3": {"bucket": "bk"}}));
        let b = binding(Database::PasswordInSecret {
            uri: "postgres://aienv@mem.team.svc:5432/memory".into(),
            name: "mem-credentials".into(),
            key: "password".into(),
        });
        let inputs = inputs(&s, &b, "UTC");
        let job = inputs.on_demand_job(token_job_name("nightly", "t1"), Operation::Backup, None);
        let template = &job.spec.as_ref().unwrap().template;
        let JobCommand::Backup(args) = parse(template) else {
            panic!("not a backup")
        };
        assert_eq!(
            args.store.database_url,
            "postgres://aienv@mem.team.svc:5432/memory"
        );
        assert_eq!(
            args.store.database_password.as_deref(),
            Some("<AIENV_DATABASE_PASSWORD>")
        );
        let pod = template.spec.as_ref().unwrap();
        assert_eq!(pod.automount_service_account_token, Some(false));
        assert_eq!(
            pod.security_context.as_ref().unwrap().run_as_non_root,
            Some(true)
        );
        let c = &pod.containers[0].security_context.as_ref().unwrap();
        assert_eq!(c.read_only_root_filesystem, Some(true));
        assert_eq!(c.allow_privilege_escalation, Some(false));
        // The store's NetworkPolicy admits pods with this label.
        let labels = template.metadata.as_ref().unwrap().labels.as_ref().unwrap();
        assert_eq!(labels[LABEL_CLIENT], "mem");
        assert_eq!(job.spec.as_ref().unwrap().backoff_limit, Some(0));
    }

    #[test]
    fn a_gcs_destination_mounts_its_key_and_names_the_file() {
        let s = schedule(
            serde_json::json!({"gcs": {"bucket": "gb", "prefix": "p", "endpoint": "http://gcs:4443",
            "credentialsSecretRef": {"name": "gcs-key", "key": "sa.json"}}}),
        );
        let b = external();
        let inputs = inputs(&s, &b, "UTC");
        let template = inputs.pod_template(Operation::Backup, None);
        let JobCommand::Backup(args) = parse(&template) else {
            panic!("not a backup")
        };
        let d = &args.destination;
        assert_eq!(
            (d.bucket.as_deref(), d.gcs_bucket.as_deref()),
            (None, Some("gb"))
        );
        assert_eq!(d.gcs_endpoint.as_deref(), Some("http://gcs:4443"));
        assert!(!d.gcs_anonymous);
        let file = d.gcs_credentials_file.clone().unwrap();
        assert_eq!(file, std::path::Path::new(GCS_KEY_DIR).join("sa.json"));
        let pod = template.spec.unwrap();
        let mount = &pod.containers[0].volume_mounts.as_ref().unwrap()[1];
        assert_eq!(
            (mount.mount_path.as_str(), mount.read_only),
            (GCS_KEY_DIR, Some(true))
        );
        let volume = &pod.volumes.unwrap()[1];
        assert_eq!(
            volume.secret.as_ref().unwrap().secret_name.as_deref(),
            Some("gcs-key")
        );
    }

    #[test]
    fn a_verify_job_names_its_backup() {
        let s = schedule(serde_json::json!({"s3": {"bucket": "bk"}}));
        let b = external();
        let inputs = inputs(&s, &b, "UTC");
        let key = "aienv/team/mem/20261202T031500Z/dump.zst";
        let stamp = backup_stamp(key).unwrap();
        let name = verify_job_name("nightly", stamp);
        assert_eq!(name, "nightly-verify-20261202t031500z");
        let job = inputs.on_demand_job(name, Operation::Verify, Some(stamp));
        let JobCommand::Verify(args) = parse(&job.spec.unwrap().template) else {
            panic!("not a verify")
        };
        assert_eq!(args.backup.as_deref(), Some("20261202T031500Z"));
    }

    #[test]
    fn one_job_name_per_token() {
        assert_eq!(token_job_name("s", "a"), token_job_name("s", "a"));
        assert_ne!(token_job_name("s", "a"), token_job_name("s", "b"));
        assert!(
            verify_job_name(
                &"x".repeat(super::super::validate::MAX_NAME),
                "20261202T031500Z"
            )
            .len()
                <= 63
        );
    }
}
