//! Everything a BackupSchedule reconcile reads: its MemoryStore, the destination's credentials
//! Secret, and its Jobs with what their pods reported.

use std::collections::BTreeMap;

use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{Pod, Secret},
};
use kube::{Api, ResourceExt, api::ListParams};

use super::{LABEL_SCHEDULE, status::Run};
use crate::{
    api::{backup_schedule::BackupSchedule, memory_store::MemoryStore},
    controller::{Context, Result},
};

/// Where the Jobs find the owner's connection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Database {
    /// The whole URI is one Secret key (external mode; CloudNativePG's app Secret).
    UriInSecret { name: String, key: String },
    /// A URI without password, the password in a Secret key (managed mode).
    PasswordInSecret {
        uri: String,
        name: String,
        key: String,
    },
}

/// The store a schedule backs up, as the Jobs reach it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreBinding {
    pub store: String,
    pub schema: String,
    pub database: Database,
}

pub struct Resolved {
    pub store: Option<MemoryStore>,
    /// The Secrets the spec names, by name (None: absent).
    pub secrets: BTreeMap<String, Option<Secret>>,
    /// This schedule's Jobs, those made by its CronJobs included.
    pub runs: Vec<Run>,
}

/// Secrets the spec names directly (the store's own are the MemoryStore's business: a Ready
/// store has them).
pub fn named_secrets(schedule: &BackupSchedule) -> Vec<String> {
    let d = &schedule.spec.destination;
    let s3 =
        d.s3.as_ref()
            .and_then(|s| s.credentials_secret_ref.as_ref())
            .map(|r| r.name.clone());
    let gcs = d
        .gcs
        .as_ref()
        .and_then(|g| g.credentials_secret_ref.as_ref())
        .map(|r| r.name.clone());
    s3.into_iter().chain(gcs).collect()
}

pub async fn resolve(ctx: &Context, schedule: &BackupSchedule, ns: &str) -> Result<Resolved> {
    let client = ctx.client.clone();
    let store = Api::<MemoryStore>::namespaced(client.clone(), ns)
        .get_opt(&schedule.spec.memory_store_ref)
        .await?;
    let secret_api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let mut secrets = BTreeMap::new();
    for name in named_secrets(schedule) {
        let s = secret_api.get_opt(&name).await?;
        secrets.insert(name, s);
    }
    let selector = format!("{LABEL_SCHEDULE}={}", schedule.name_any());
    let lp = ListParams::default().labels(&selector);
    let jobs = Api::<Job>::namespaced(client.clone(), ns)
        .list(&lp)
        .await?
        .items;
    let pods = Api::<Pod>::namespaced(client, ns);
    let mut runs = Vec::new();
    for job in jobs {
        // Pods are read only for finished Jobs not yet in the status: a steady schedule lists
        // no pods.
        let finished = super::status::finished(&job);
        let pod = match finished {
            Some(_) if !super::status::recorded(schedule.status.as_ref(), &job) => {
                newest_pod(&pods, &job.name_any()).await?
            }
            _ => None,
        };
        runs.push(Run::from_job(&job, pod.as_ref()));
    }
    Ok(Resolved {
        store,
        secrets,
        runs,
    })
}

/// The Job's newest pod (the one whose result counts).
async fn newest_pod(pods: &Api<Pod>, job: &str) -> Result<Option<Pod>> {
    let list = pods
        .list(&ListParams::default().labels(&format!("batch.kubernetes.io/job-name={job}")))
        .await?;
    Ok(list
        .items
        .into_iter()
        .max_by_key(|p| p.metadata.creation_timestamp.clone().map(|t| t.0)))
}
