//! Vector-index builds running in the background, one per store: a reconcile starts one when
//! the index is missing and reports on it while it runs (polling, see `BUILD_POLL`), so a build
//! of hours never holds a reconcile or the schema lock.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use sqlx::PgPool;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use crate::memory::{
    ddl::StoreLayout,
    index_build::{self, BuildOutcome},
};

/// How often a store whose index is building is looked at again.
pub const BUILD_POLL: Duration = Duration::from_secs(5);
/// How long a failed build waits before it is tried again.
pub const RETRY_AFTER: Duration = Duration::from_secs(60);

type Key = (String, String);

enum Build {
    Running {
        index: String,
        task: JoinHandle<()>,
    },
    Failed {
        index: String,
        /// The maintenance_work_mem it failed with: a new one is tried at once.
        memory: String,
        message: String,
        at: Instant,
    },
}

/// What the store's build is doing.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BuildSeen {
    /// Started by this call.
    Started,
    Running,
    /// The last attempt failed (and is retried after [`RETRY_AFTER`]).
    Failed(String),
}

#[derive(Default, Clone)]
pub struct IndexBuilds {
    builds: Arc<Mutex<HashMap<Key, Build>>>,
}

impl IndexBuilds {
    /// Make sure the layout's index is being built for `ns/name`.
    pub fn ensure(
        &self,
        ns: &str,
        name: &str,
        pool: &PgPool,
        layout: &StoreLayout,
        maintenance_work_mem: &str,
    ) -> BuildSeen {
        let key = (ns.to_string(), name.to_string());
        let wanted = layout.index_name();
        let mut builds = self.builds.lock().expect("index builds lock");
        match builds.get(&key) {
            Some(Build::Running { index, task }) if *index == wanted && !task.is_finished() => {
                return BuildSeen::Running;
            }
            Some(Build::Failed {
                index,
                memory,
                message,
                at,
            }) if *index == wanted
                && memory == maintenance_work_mem
                && at.elapsed() < RETRY_AFTER =>
            {
                return BuildSeen::Failed(message.clone());
            }
            _ => {}
        }
        let (pool, layout, mem) = (
            pool.clone(),
            layout.clone(),
            maintenance_work_mem.to_string(),
        );
        let shared = self.builds.clone();
        let task_key = key.clone();
        let index = wanted.clone();
        let task = tokio::spawn(async move {
            let started = Instant::now();
            let result = index_build::build(&pool, &layout, &mem).await;
            let mut builds = shared.lock().expect("index builds lock");
            match result {
                Ok(BuildOutcome::Built) => {
                    info!(index = %index, seconds = started.elapsed().as_secs_f64(), "built vector index");
                    builds.remove(&task_key);
                }
                Ok(BuildOutcome::Busy) => {
                    builds.remove(&task_key);
                }
                Err(e) => {
                    warn!(index = %index, error = %e, "vector index build failed");
                    builds.insert(
                        task_key,
                        Build::Failed {
                            index,
                            memory: mem,
                            message: e.to_string(),
                            at: Instant::now(),
                        },
                    );
                }
            }
        });
        builds.insert(
            key,
            Build::Running {
                index: wanted,
                task,
            },
        );
        BuildSeen::Started
    }

    /// Stop tracking (and abort) the builds of stores `keep` does not name.
    pub fn retain(&self, keep: impl Fn(&str, &str) -> bool) {
        self.builds
            .lock()
            .expect("index builds lock")
            .retain(|(ns, name), b| {
                let kept = keep(ns, name);
                if !kept && let Build::Running { task, .. } = b {
                    task.abort();
                }
                kept
            });
    }
}
