//! What a round of patches means: the rollout state for status, the Event announcing it, when to
//! look again. Pure.

use std::time::Duration;

use super::{Plan, Workload};
use crate::{
    api::ai_environment::Rollout, controller::Problem,
    controllers::ai_environment::status::RolloutState,
};

/// How one planned patch went; the API error itself stays with the caller.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PatchOutcome {
    /// Patched now: its pods roll.
    Rolled,
    /// Already carried the hash (another replica was first): nothing rolled here.
    AlreadyCurrent,
    /// Deleted meanwhile.
    Gone,
    Failed,
}

/// The Event announcing a rollout this round made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Announcement {
    pub reason: &'static str,
    pub note: String,
}

/// Why the reconcile ends before status is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Retry {
    /// A patch failed: return its error (retried with backoff). Whatever rolled is announced
    /// first.
    Error,
    /// Nothing rolled and nothing failed (another leader's patches got there first): look again
    /// in a moment, when the caches show them.
    Soon,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub state: RolloutState,
    /// Set when this round rolled something: to record (the rollout time) and announce.
    pub announce: Option<Announcement>,
    pub requeue: Option<Duration>,
    pub retry: Option<Retry>,
}

/// Decide on `plan` given how its patches went (`outcomes`, one per target of `Plan::Patch`,
/// none otherwise). Updates the hash of the workloads that now carry it, for status.
pub fn decide(
    plan: &Plan,
    ws: &mut [Workload],
    outcomes: &[PatchOutcome],
    hash: &str,
    profile: &str,
    rollout: &Rollout,
) -> Decision {
    let settled = |state, requeue| Decision {
        state,
        announce: None,
        requeue,
        retry: None,
    };
    match plan {
        Plan::Done => settled(
            RolloutState::Done {
                workloads: ws.len(),
            },
            None,
        ),
        Plan::Throttled(wait) => settled(
            RolloutState::Progressing {
                reason: "RolloutPending",
                message: format!(
                    "coalescing changes: the last rollout was less than agents.rollout.minIntervalSeconds={} ago; the next starts in {}s",
                    rollout.min_interval_seconds,
                    wait.as_secs().max(1)
                ),
            },
            Some(*wait),
        ),
        Plan::CanaryWaiting { canary, timeout_in } => settled(
            RolloutState::Progressing {
                reason: "CanaryProgressing",
                message: format!(
                    "waiting for canary {} to report every replica updated and available (gives up in {}s)",
                    names(ws, &[*canary]),
                    timeout_in.as_secs()
                ),
            },
            Some(*timeout_in),
        ),
        Plan::CanaryTimedOut { canary } => settled(
            RolloutState::Failed(Problem::new(
                "CanaryTimedOut",
                format!(
                    "canary {} did not report every replica updated and available within agents.rollout.canaryTimeoutSeconds={}: check its pods; the other workloads were not rolled",
                    names(ws, &[*canary]),
                    rollout.canary_timeout_seconds
                ),
            )),
            None,
        ),
        Plan::Patch { targets, canary } => {
            let mut rolled = Vec::new();
            let mut failed = false;
            for (i, outcome) in targets.iter().zip(outcomes) {
                match outcome {
                    PatchOutcome::Rolled => {
                        ws[*i].hash = Some(hash.to_string());
                        rolled.push(*i);
                    }
                    PatchOutcome::AlreadyCurrent => ws[*i].hash = Some(hash.to_string()),
                    PatchOutcome::Gone => {}
                    PatchOutcome::Failed => failed = true,
                }
            }
            let retry = failed.then_some(Retry::Error);
            if rolled.is_empty() {
                // No rollout to record or announce.
                return Decision {
                    state: RolloutState::Blocked,
                    announce: None,
                    requeue: None,
                    retry: retry.or(Some(Retry::Soon)),
                };
            }
            let (reason, what) = if *canary {
                ("CanaryStarted", "canary")
            } else {
                ("RolledOut", "workload(s)")
            };
            let announce = Some(Announcement {
                reason,
                note: format!(
                    "config hash {} (profile {profile:?}) applied to {} {what}: {}",
                    &hash[..hash.len().min(12)],
                    rolled.len(),
                    names(ws, &rolled)
                ),
            });
            let (state, requeue) = if *canary {
                (
                    RolloutState::Progressing {
                        reason: "CanaryProgressing",
                        message: format!(
                            "waiting for canary {} to report every replica updated and available",
                            names(ws, &targets[..1])
                        ),
                    },
                    Some(Duration::from_secs(rollout.canary_timeout_seconds.into())),
                )
            } else {
                (
                    RolloutState::Done {
                        workloads: ws.len(),
                    },
                    None,
                )
            };
            Decision {
                state,
                announce,
                requeue,
                retry,
            }
        }
    }
}

/// `Kind/name` of the workloads at `idx`, at most ten named.
pub fn names(ws: &[Workload], idx: &[usize]) -> String {
    let mut parts: Vec<String> = idx
        .iter()
        .take(10)
        .map(|i| format!("{}/{}", ws[*i].kind.as_str(), ws[*i].name))
        .collect();
    if idx.len() > 10 {
        parts.push(format!("and {} more", idx.len() - 10));
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{api::ai_environment::RolloutStrategy, controllers::ai_environment::rollout::Kind};

    fn w(name: &str) -> Workload {
        Workload {
            kind: Kind::Deployment,
            name: name.into(),
            hash: Some("old".into()),
            generation: Some(1),
            observed_generation: Some(1),
            replicas: 1,
            status_replicas: 1,
            updated_replicas: 1,
            available_replicas: 1,
            ready_replicas: 1,
            current_revision: None,
            update_revision: None,
            partition: None,
        }
    }
    fn settings() -> Rollout {
        Rollout {
            strategy: RolloutStrategy::Canary,
            min_interval_seconds: 5,
            canary_timeout_seconds: 60,
        }
    }
    const HASH: &str = "0123456789abcdef";

    #[test]
    fn a_rolled_round_is_announced_with_the_current_hash_and_names() {
        let mut ws = vec![w("a"), w("b"), w("c")];
        let plan = Plan::Patch {
            targets: vec![0, 1, 2],
            canary: false,
        };
        let outcomes = [
            PatchOutcome::Rolled,
            PatchOutcome::AlreadyCurrent,
            PatchOutcome::Gone,
        ];
        let d = decide(&plan, &mut ws, &outcomes, HASH, "dev", &settings());
        assert_eq!(d.state, RolloutState::Done { workloads: 3 });
        assert_eq!(d.retry, None);
        let a = d.announce.unwrap();
        assert_eq!(a.reason, "RolledOut");
        assert_eq!(
            a.note,
            "config hash 0123456789ab (profile \"dev\") applied to 1 workload(s): Deployment/a"
        );
        // Rolled and already current now carry the hash; the one gone keeps what it had.
        assert_eq!(ws[0].hash.as_deref(), Some(HASH));
        assert_eq!(ws[1].hash.as_deref(), Some(HASH));
        assert_eq!(ws[2].hash.as_deref(), Some("old"));
    }

    #[test]
    fn nothing_rolled_is_never_announced() {
        let plan = Plan::Patch {
            targets: vec![0],
            canary: false,
        };
        let mut ws = vec![w("a")];
        let d = decide(
            &plan,
            &mut ws,
            &[PatchOutcome::AlreadyCurrent],
            HASH,
            "dev",
            &settings(),
        );
        assert_eq!((d.announce, d.retry), (None, Some(Retry::Soon)));
        let d = decide(
            &plan,
            &mut ws,
            &[PatchOutcome::Failed],
            HASH,
            "dev",
            &settings(),
        );
        assert_eq!((d.announce, d.retry), (None, Some(Retry::Error)));
    }

    #[test]
    fn a_partial_failure_announces_what_rolled_and_still_retries() {
        let plan = Plan::Patch {
            targets: vec![0, 1],
            canary: false,
        };
        let mut ws = vec![w("a"), w("b")];
        let outcomes = [PatchOutcome::Failed, PatchOutcome::Rolled];
        let d = decide(&plan, &mut ws, &outcomes, HASH, "dev", &settings());
        assert_eq!(d.retry, Some(Retry::Error));
        assert!(
            d.announce
                .unwrap()
                .note
                .ends_with("1 workload(s): Deployment/b")
        );
    }

    #[test]
    fn a_canary_round_waits_for_the_canary_until_its_timeout() {
        let plan = Plan::Patch {
            targets: vec![1],
            canary: true,
        };
        let mut ws = vec![w("a"), w("b")];
        let d = decide(
            &plan,
            &mut ws,
            &[PatchOutcome::Rolled],
            HASH,
            "dev",
            &settings(),
        );
        assert_eq!(d.announce.unwrap().reason, "CanaryStarted");
        assert_eq!(d.requeue, Some(Duration::from_secs(60)));
        match d.state {
            RolloutState::Progressing { reason, message } => {
                assert_eq!(reason, "CanaryProgressing");
                assert!(message.contains("Deployment/b"), "{message}");
            }
            other => panic!("{other:?}"),
        }
        let timed_out = decide(
            &Plan::CanaryTimedOut { canary: 1 },
            &mut ws,
            &[],
            HASH,
            "dev",
            &settings(),
        );
        match timed_out.state {
            RolloutState::Failed(p) => {
                assert_eq!(p.reason, "CanaryTimedOut");
                assert!(
                    p.message.contains("canaryTimeoutSeconds=60"),
                    "{}",
                    p.message
                );
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_long_list_of_names_is_cut_at_ten() {
        let ws: Vec<Workload> = (0..12).map(|i| w(&format!("w{i}"))).collect();
        let all: Vec<usize> = (0..12).collect();
        let n = names(&ws, &all);
        assert!(n.starts_with("Deployment/w0, Deployment/w1"), "{n}");
        assert!(n.ends_with("Deployment/w9, and 2 more"), "{n}");
    }
}
