//! Rollout planning: which selected workloads get the new config hash now (`plan`), and what
//! the patches' outcome means for status, Events and the next look (`decide`). Pure; the patch
//! itself is in `workloads.rs`.

mod decide;
pub use decide::{Announcement, Decision, PatchOutcome, Retry, decide, names};

use std::time::Duration;

use jiff::Timestamp;

use crate::api::ai_environment::{Rollout, RolloutStrategy};

/// Pod-template annotation carrying the rendered Secret's sha256.
pub const HASH_ANNOTATION: &str = "aienv.orchestr8.io/config-hash";

/// Deployment or StatefulSet.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Deployment,
    StatefulSet,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Deployment => "Deployment",
            Kind::StatefulSet => "StatefulSet",
        }
    }
}

/// What the planner needs to know of one selected workload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Workload {
    pub kind: Kind,
    pub name: String,
    /// The config hash on its pod template now.
    pub hash: Option<String>,
    pub generation: Option<i64>,
    pub observed_generation: Option<i64>,
    /// spec.replicas (default 1).
    pub replicas: i32,
    /// status.replicas: pods of every revision, old ones still terminating included.
    pub status_replicas: i32,
    pub updated_replicas: i32,
    pub available_replicas: i32,
    pub ready_replicas: i32,
    /// StatefulSet: status.currentRevision and status.updateRevision.
    pub current_revision: Option<String>,
    pub update_revision: Option<String>,
    /// StatefulSet: spec.updateStrategy.rollingUpdate.partition.
    pub partition: Option<i32>,
}

impl Workload {
    /// Rolled out as `kubectl rollout status` means it: the controller has seen the current
    /// template, and — Deployment — every desired replica is updated, no old replica is left and
    /// the updated ones are available; StatefulSet — every replica is ready and on the update
    /// revision (or, with a partition, every replica above it is updated).
    pub fn rolled_out(&self) -> bool {
        if self.generation.is_none() || self.observed_generation < self.generation {
            return false;
        }
        match self.kind {
            Kind::Deployment => {
                self.updated_replicas >= self.replicas
                    && self.status_replicas <= self.updated_replicas
                    && self.available_replicas >= self.updated_replicas
            }
            Kind::StatefulSet => {
                let on_revision = match self.partition {
                    Some(p) if p > 0 => self.updated_replicas >= self.replicas - p,
                    _ => {
                        self.update_revision.is_some()
                            && self.update_revision == self.current_revision
                    }
                };
                self.ready_replicas >= self.replicas && on_revision
            }
        }
    }
}

/// What to do now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Plan {
    /// Every workload carries the hash.
    Done,
    /// Patch these (indexes into the workloads); `canary` says this is the canary stage.
    Patch { targets: Vec<usize>, canary: bool },
    /// A rollout happened less than minIntervalSeconds ago: look again after this long.
    Throttled(Duration),
    /// The canary carries the hash but is not yet updated and available.
    CanaryWaiting { canary: usize, timeout_in: Duration },
    /// The canary did not become updated and available within canaryTimeoutSeconds.
    CanaryTimedOut { canary: usize },
}

/// The canary: the first workload (by kind and name) that runs pods. One scaled to zero proves
/// nothing about the new configuration; when none runs pods, the first.
fn canary_of(workloads: &[Workload]) -> usize {
    workloads.iter().position(|w| w.replicas > 0).unwrap_or(0)
}

/// Plan the rollout of `hash` to `workloads` (sorted by kind and name; see [`canary_of`]).
pub fn plan(
    workloads: &[Workload],
    hash: &str,
    rollout: &Rollout,
    last_rollout: Option<Timestamp>,
    now: Timestamp,
) -> Plan {
    let stale: Vec<usize> = (0..workloads.len())
        .filter(|i| workloads[*i].hash.as_deref() != Some(hash))
        .collect();
    if stale.is_empty() {
        return Plan::Done;
    }
    let since_last =
        last_rollout.map(|t| Duration::try_from(now.duration_since(t)).unwrap_or_default());
    let throttle = || {
        let min = Duration::from_secs(rollout.min_interval_seconds.into());
        since_last.filter(|s| *s < min).map(|s| min - s)
    };
    match rollout.strategy {
        RolloutStrategy::Rolling => match throttle() {
            Some(wait) => Plan::Throttled(wait),
            None => Plan::Patch {
                targets: stale,
                canary: false,
            },
        },
        RolloutStrategy::Canary => {
            let c = canary_of(workloads);
            if stale.contains(&c) {
                return match throttle() {
                    Some(wait) => Plan::Throttled(wait),
                    None => Plan::Patch {
                        targets: vec![c],
                        canary: workloads.len() > 1,
                    },
                };
            }
            if workloads[c].rolled_out() {
                return Plan::Patch {
                    targets: stale,
                    canary: false,
                };
            }
            let timeout = Duration::from_secs(rollout.canary_timeout_seconds.into());
            let waited = since_last.unwrap_or(timeout);
            if waited >= timeout {
                Plan::CanaryTimedOut { canary: c }
            } else {
                Plan::CanaryWaiting {
                    canary: c,
                    timeout_in: timeout - waited,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(name: &str, hash: Option<&str>) -> Workload {
        Workload {
            kind: Kind::Deployment,
            name: name.into(),
            hash: hash.map(str::to_string),
            generation: Some(2),
            observed_generation: Some(1),
            replicas: 2,
            status_replicas: 2,
            updated_replicas: 0,
            available_replicas: 0,
            ready_replicas: 0,
            current_revision: None,
            update_revision: None,
            partition: None,
        }
    }
    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }
    fn rollout(strategy: RolloutStrategy) -> Rollout {
        Rollout {
            strategy,
            min_interval_seconds: 5,
            canary_timeout_seconds: 60,
        }
    }

    #[test]
    fn unchanged_hash_plans_nothing() {
        let ws = [w("a", Some("h")), w("b", Some("h"))];
        assert_eq!(
            plan(&ws, "h", &rollout(RolloutStrategy::Rolling), None, t(0)),
            Plan::Done
        );
    }

    #[test]
    fn rolling_patches_only_stale_ones_and_coalesces_bursts() {
        let ws = [w("a", Some("h")), w("b", Some("old")), w("c", None)];
        let r = rollout(RolloutStrategy::Rolling);
        assert_eq!(
            plan(&ws, "h", &r, Some(t(0)), t(10)),
            Plan::Patch {
                targets: vec![1, 2],
                canary: false
            }
        );
        assert_eq!(
            plan(&ws, "h", &r, Some(t(8)), t(10)),
            Plan::Throttled(Duration::from_secs(3))
        );
    }

    #[test]
    fn canary_goes_first_and_the_rest_wait_until_it_is_available() {
        let r = rollout(RolloutStrategy::Canary);
        let mut ws = vec![w("a", Some("old")), w("b", Some("old"))];
        assert_eq!(
            plan(&ws, "h", &r, None, t(100)),
            Plan::Patch {
                targets: vec![0],
                canary: true
            }
        );
        ws[0].hash = Some("h".into());
        assert_eq!(
            plan(&ws, "h", &r, Some(t(100)), t(110)),
            Plan::CanaryWaiting {
                canary: 0,
                timeout_in: Duration::from_secs(50)
            }
        );
        assert_eq!(
            plan(&ws, "h", &r, Some(t(100)), t(160)),
            Plan::CanaryTimedOut { canary: 0 }
        );
        ws[0].observed_generation = Some(2);
        ws[0].updated_replicas = 2;
        ws[0].available_replicas = 2;
        assert_eq!(
            plan(&ws, "h", &r, Some(t(100)), t(161)),
            Plan::Patch {
                targets: vec![1],
                canary: false
            }
        );
    }

    #[test]
    fn a_deployment_with_old_pods_left_is_not_rolled_out() {
        let mut x = w("a", Some("h"));
        x.observed_generation = Some(2);
        x.updated_replicas = 2;
        x.available_replicas = 2;
        x.status_replicas = 3; // an old pod is still terminating
        assert!(!x.rolled_out());
        x.status_replicas = 2;
        assert!(x.rolled_out());
    }

    #[test]
    fn a_statefulset_is_rolled_out_on_its_update_revision() {
        let mut s = w("db", Some("h"));
        s.kind = Kind::StatefulSet;
        s.observed_generation = Some(2);
        s.ready_replicas = 2;
        s.updated_replicas = 2;
        s.current_revision = Some("db-1".into());
        s.update_revision = Some("db-2".into());
        assert!(
            !s.rolled_out(),
            "ready, but pods of the old revision remain"
        );
        s.current_revision = Some("db-2".into());
        assert!(s.rolled_out());
        // With a partition only the pods above it are updated.
        s.current_revision = Some("db-1".into());
        s.partition = Some(1);
        s.updated_replicas = 1;
        assert!(s.rolled_out());
    }

    #[test]
    fn a_workload_scaled_to_zero_is_not_the_canary() {
        let r = rollout(RolloutStrategy::Canary);
        let mut ws = vec![w("a", Some("old")), w("b", Some("old"))];
        ws[0].replicas = 0;
        assert_eq!(
            plan(&ws, "h", &r, None, t(100)),
            Plan::Patch {
                targets: vec![1],
                canary: true
            }
        );
        ws[1].hash = Some("h".into());
        assert_eq!(
            plan(&ws, "h", &r, Some(t(100)), t(110)),
            Plan::CanaryWaiting {
                canary: 1,
                timeout_in: Duration::from_secs(50)
            }
        );
    }

    #[test]
    fn an_old_generation_is_not_rolled_out() {
        let mut x = w("a", Some("h"));
        x.updated_replicas = 2;
        x.available_replicas = 2;
        assert!(!x.rolled_out());
        x.observed_generation = Some(2);
        assert!(x.rolled_out());
    }
}
