//! Conditions of an AiEnvironment, computed from what reconcile found. Pure.

use super::select::Selection;
use crate::{conditions::Desired, controller::Problem};

pub const PROFILE_RESOLVED: &str = "ProfileResolved";
pub const SECRET_RENDERED: &str = "SecretRendered";
pub const ROLLED_OUT: &str = "RolledOut";
pub const MEMORY_READY: &str = "MemoryReady";
pub const FAILED_OVER: &str = "FailedOver";
pub const NETWORK_POLICY_READY: &str = "NetworkPolicyReady";
pub const READY: &str = "Ready";

/// How far the rollout got.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RolloutState {
    /// Not attempted: profile or Secret is not usable.
    Blocked,
    /// Every selected workload carries the hash.
    Done { workloads: usize },
    /// Waiting (coalescing, or the canary): not done yet, nothing wrong.
    Progressing {
        reason: &'static str,
        message: String,
    },
    /// Something a person must fix (no workload selected, canary timed out, bad selector).
    Failed(Problem),
}

/// The memory store, as far as the environment is concerned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemoryState {
    NotConfigured,
    Ready { secret_name: Option<String> },
    NotReady(Problem),
}

/// Everything the conditions are computed from.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Findings {
    pub profile: Result<Selection, Problem>,
    /// None when the profile did not resolve.
    pub secret: Option<Result<String, Problem>>,
    pub rollout: RolloutState,
    pub memory: MemoryState,
    /// None when networkPolicy.enabled is false; the summary, or why a policy could not be applied.
    pub network_policy: Option<Result<String, Problem>>,
    pub secret_name: String,
    /// Fallbacks failover may not pick because they cannot serve every harness, with why.
    pub unfit_fallbacks: Vec<String>,
}

/// Conditions to upsert, and the types to remove.
pub fn conditions(f: &Findings) -> (Vec<Desired>, Vec<&'static str>) {
    let mut out = Vec::new();
    let mut remove = Vec::new();
    let mut not_ready: Option<(String, String)> = None;
    let mut block = |reason: &str, message: &str| {
        if not_ready.is_none() {
            not_ready = Some((reason.to_string(), message.to_string()));
        }
    };

    match &f.profile {
        Ok(sel) => {
            out.push(Desired::true_(
                PROFILE_RESOLVED,
                "Resolved",
                format!("active profile {:?}", sel.active),
            ));
            match &sel.failed_over {
                Some(why) => out.push(Desired::true_(
                    FAILED_OVER,
                    why.reason,
                    format!("using fallback {:?}: {}", sel.active, why.message),
                )),
                None => out.push(Desired::false_(
                    FAILED_OVER,
                    "OnPrimary",
                    "the primary profile (llm.profileRef) is active",
                )),
            }
            if let Some(why) = &sel.active_failing {
                // A Ready fallback left out for its protocols must not read as "none is Ready".
                let message = if f.unfit_fallbacks.is_empty() {
                    format!("{}; no fallback in llm.fallbacks is Ready", why.message)
                } else {
                    format!(
                        "{}; no fallback in llm.fallbacks is both Ready and able to serve llm.harnesses (skipped, they cannot serve them: {})",
                        why.message,
                        f.unfit_fallbacks.join(", ")
                    )
                };
                block("ActiveProfileUnhealthy", &message);
            }
        }
        Err(p) => {
            out.push(Desired::false_(
                PROFILE_RESOLVED,
                p.reason,
                p.message.clone(),
            ));
            block(p.reason, &p.message);
        }
    }

    match &f.secret {
        Some(Ok(hash)) => out.push(Desired::true_(
            SECRET_RENDERED,
            "Rendered",
            format!(
                "Secret {:?} rendered (config hash {})",
                f.secret_name,
                short(hash)
            ),
        )),
        Some(Err(p)) => {
            out.push(Desired::false_(
                SECRET_RENDERED,
                p.reason,
                p.message.clone(),
            ));
            block(p.reason, &p.message);
        }
        None => out.push(Desired::unknown(
            SECRET_RENDERED,
            "ProfileNotResolved",
            "nothing rendered until the profile resolves (see ProfileResolved)",
        )),
    }

    match &f.rollout {
        RolloutState::Blocked => {
            out.push(Desired::false_(
                ROLLED_OUT,
                "Blocked",
                "nothing rolled: fix the ProfileResolved or SecretRendered problem first",
            ));
        }
        RolloutState::Done { workloads } => out.push(Desired::true_(
            ROLLED_OUT,
            "RolledOut",
            format!("{workloads} selected workload(s) carry the current config hash"),
        )),
        RolloutState::Progressing { reason, message } => {
            out.push(Desired::false_(ROLLED_OUT, *reason, message.clone()));
            block(reason, message);
        }
        RolloutState::Failed(p) => {
            out.push(Desired::false_(ROLLED_OUT, p.reason, p.message.clone()));
            block(p.reason, &p.message);
        }
    }

    match &f.memory {
        MemoryState::NotConfigured => out.push(Desired::true_(
            MEMORY_READY,
            "NotConfigured",
            "no memory.storeRef: the agents get no memory store",
        )),
        MemoryState::Ready { secret_name } => out.push(Desired::true_(
            MEMORY_READY,
            "StoreReady",
            match secret_name {
                Some(s) => {
                    format!("memory store Ready; agents read its connection from Secret {s:?}")
                }
                None => "memory store Ready".to_string(),
            },
        )),
        MemoryState::NotReady(p) => {
            out.push(Desired::false_(MEMORY_READY, p.reason, p.message.clone()));
            block(p.reason, &p.message);
        }
    }

    match &f.network_policy {
        Some(Ok(summary)) => out.push(Desired::true_(
            NETWORK_POLICY_READY,
            "Applied",
            summary.clone(),
        )),
        Some(Err(p)) => {
            // The agents run unfenced: not Ready, whatever else is fine.
            out.push(Desired::false_(
                NETWORK_POLICY_READY,
                p.reason,
                p.message.clone(),
            ));
            block(p.reason, &p.message);
        }
        None => remove.push(NETWORK_POLICY_READY),
    }

    out.push(match not_ready {
        None => Desired::true_(
            READY,
            "Ready",
            "profile rendered and every selected workload carries it",
        ),
        Some((reason, message)) => Desired::false_(READY, reason, message),
    });
    (out, remove)
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::conditions::Status;

    fn sel() -> Selection {
        Selection {
            active: "p".into(),
            failed_over: None,
            active_failing: None,
            switch_back_in: None,
            transition: None,
        }
    }
    fn base() -> Findings {
        Findings {
            profile: Ok(sel()),
            secret: Some(Ok("a".repeat(64))),
            rollout: RolloutState::Done { workloads: 2 },
            memory: MemoryState::NotConfigured,
            network_policy: Some(Ok("x".into())),
            secret_name: "dev-llm".into(),
            unfit_fallbacks: vec![],
        }
    }

    #[test]
    fn a_ready_fallback_skipped_for_its_protocols_is_named_not_called_unready() {
        let failing = Problem {
            reason: "PrimaryUnreachable",
            message: "LlmProfile \"p\" is unreachable".into(),
        };
        let mut f = base();
        f.profile = Ok(Selection {
            active_failing: Some(failing),
            ..sel()
        });
        let (c, _) = conditions(&f);
        assert!(
            get(&c, READY)
                .message
                .ends_with("no fallback in llm.fallbacks is Ready")
        );
        f.unfit_fallbacks = vec!["\"o\" (harness claudeCode needs endpoints.anthropic)".into()];
        let (c, _) = conditions(&f);
        let ready = get(&c, READY);
        assert_eq!(ready.reason, "ActiveProfileUnhealthy");
        assert!(
            ready
                .message
                .contains("cannot serve them: \"o\" (harness claudeCode")
                && !ready.message.contains("is Ready;"),
            "{}",
            ready.message
        );
    }
    fn get<'a>(c: &'a [Desired], t: &str) -> &'a Desired {
        c.iter().find(|d| d.type_ == t).unwrap()
    }

    #[test]
    fn all_good_is_ready() {
        let (c, removed) = conditions(&base());
        assert_eq!(get(&c, READY).status, Status::True);
        assert_eq!(get(&c, FAILED_OVER).status, Status::False);
        assert!(removed.is_empty());
    }

    #[test]
    fn missing_profile_blocks_everything_and_names_the_reason() {
        let mut f = base();
        f.profile = Err(Problem {
            reason: "ProfileNotFound",
            message: "create it".into(),
        });
        f.secret = None;
        f.rollout = RolloutState::Blocked;
        let (c, _) = conditions(&f);
        assert_eq!(get(&c, READY).reason, "ProfileNotFound");
        assert_eq!(get(&c, SECRET_RENDERED).status, Status::Unknown);
        assert_eq!(get(&c, ROLLED_OUT).reason, "Blocked");
        assert!(c.iter().all(|d| d.type_ != FAILED_OVER));
    }

    #[test]
    fn a_policy_that_cannot_be_applied_is_not_ready() {
        let mut f = base();
        f.network_policy = Some(Err(Problem::new(
            "NetworkPolicyConflict",
            "NetworkPolicy \"dev-egress\" already exists",
        )));
        let (c, _) = conditions(&f);
        assert_eq!(get(&c, NETWORK_POLICY_READY).status, Status::False);
        assert_eq!(get(&c, READY).reason, "NetworkPolicyConflict");
    }

    #[test]
    fn disabled_policies_drop_their_condition() {
        let mut f = base();
        f.network_policy = None;
        let (_, removed) = conditions(&f);
        assert_eq!(removed, [NETWORK_POLICY_READY]);
    }
}
