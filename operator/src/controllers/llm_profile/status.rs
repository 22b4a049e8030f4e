//! Conditions of an LlmProfile, computed from what reconcile found. Pure.

use super::{probe::Outcome, validate::Problem};
use crate::conditions::Desired;

pub const ACCEPTED: &str = "Accepted";
pub const ENDPOINT_REACHABLE: &str = "EndpointReachable";
pub const CREDENTIALS_VALID: &str = "CredentialsValid";
pub const READY: &str = "Ready";

/// The probe conditions, dropped when there is nothing to say about the endpoint.
pub const PROBE_CONDITIONS: [&str; 2] = [ENDPOINT_REACHABLE, CREDENTIALS_VALID];

/// What this reconcile learned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Finding {
    /// The spec or a referenced Secret is wrong.
    Rejected(Problem),
    /// Usable; no probe configured.
    AcceptedUnprobed,
    /// Usable and probed just now.
    Probed {
        url: String,
        outcome: Outcome,
        secret_name: Option<String>,
    },
}

/// Whether a new latency reading is worth a status write: it moved by more than 20 % of the
/// recorded one and by more than 100 ms (below that it is scheduling noise, on a busy node too),
/// or it appeared or went away.
pub fn latency_moved(recorded: Option<u64>, measured: Option<u64>) -> bool {
    match (recorded, measured) {
        (Some(old), Some(new)) => {
            let delta = old.abs_diff(new);
            delta > 100 && delta * 5 > old
        }
        (a, b) => a.is_some() != b.is_some(),
    }
}

/// An accepted profile whose OpenAI base looks wrong says so in Accepted (still True: some
/// vendors really serve their API at an unversioned base).
pub fn with_path_warning(mut desired: Vec<Desired>, warning: Option<String>) -> Vec<Desired> {
    if let Some(w) = warning
        && let Some(a) = desired
            .iter_mut()
            .find(|d| d.type_ == ACCEPTED && d.status == crate::conditions::Status::True)
    {
        a.reason = "OpenAIBaseUnversioned".into();
        a.message = w;
    }
    desired
}

/// The conditions to upsert, and the ones to remove.
pub fn conditions(finding: &Finding) -> (Vec<Desired>, &'static [&'static str]) {
    match finding {
        Finding::Rejected(p) => (
            vec![
                Desired::false_(ACCEPTED, p.reason, p.message.clone()),
                Desired::false_(READY, p.reason, p.message.clone()),
            ],
            &PROBE_CONDITIONS,
        ),
        Finding::AcceptedUnprobed => (
            vec![
                Desired::true_(
                    ACCEPTED,
                    "Resolved",
                    "spec is valid and the API key Secret resolves",
                ),
                Desired::true_(READY, "Resolved", "profile resolved; no probe configured"),
            ],
            &PROBE_CONDITIONS,
        ),
        Finding::Probed {
            url,
            outcome,
            secret_name,
        } => {
            let accepted = Desired::true_(
                ACCEPTED,
                "Resolved",
                "spec is valid and the API key Secret resolves",
            );
            let key_hint = secret_name
                .as_deref()
                .map(|s| format!("check the API key in Secret {s:?}"))
                .unwrap_or_else(|| "this profile sends no API key: set auth.secretRef".to_string());
            let conds = match outcome {
                // Latency is status.latencyMs (written when it moves): a message that changed with
                // every probe would rewrite the status, and wake every environment, each time.
                Outcome::Ok { .. } => vec![
                    accepted,
                    Desired::true_(ENDPOINT_REACHABLE, "Reachable", format!("{url} answered")),
                    Desired::true_(
                        CREDENTIALS_VALID,
                        "Accepted",
                        "the endpoint accepted the API key",
                    ),
                    Desired::true_(
                        READY,
                        "EndpointHealthy",
                        "endpoint reachable and key accepted",
                    ),
                ],
                Outcome::Degraded { status, .. } => {
                    let why = if *status == 429 {
                        "RateLimited"
                    } else {
                        "Overloaded"
                    };
                    vec![
                        accepted,
                        Desired::true_(
                            ENDPOINT_REACHABLE,
                            why,
                            format!("{url} answered HTTP {status}: shedding load, not down"),
                        ),
                        Desired::unknown(
                            CREDENTIALS_VALID,
                            "NotChecked",
                            format!("HTTP {status} says nothing about the key"),
                        ),
                        Desired::true_(
                            READY,
                            "EndpointDegraded",
                            format!(
                                "{url} answered HTTP {status} ({why}): usable, requests may be slowed"
                            ),
                        ),
                    ]
                }
                Outcome::Unauthorized { status, .. } => vec![
                    accepted,
                    Desired::true_(
                        ENDPOINT_REACHABLE,
                        "Reachable",
                        format!("{url} answered HTTP {status}"),
                    ),
                    Desired::false_(
                        CREDENTIALS_VALID,
                        "Unauthorized",
                        format!("the endpoint refused the API key (HTTP {status}): {key_hint}"),
                    ),
                    Desired::false_(
                        READY,
                        "CredentialsInvalid",
                        format!("the endpoint refused the API key (HTTP {status}): {key_hint}"),
                    ),
                ],
                Outcome::UnexpectedStatus { status, .. } if *status >= 500 => vec![
                    accepted,
                    Desired::false_(
                        ENDPOINT_REACHABLE,
                        "ServerError",
                        format!("{url} answered HTTP {status}: the endpoint is failing"),
                    ),
                    Desired::unknown(
                        CREDENTIALS_VALID,
                        "NotChecked",
                        "the endpoint did not answer normally",
                    ),
                    Desired::false_(
                        READY,
                        "EndpointUnhealthy",
                        format!("{url} answered HTTP {status}"),
                    ),
                ],
                Outcome::UnexpectedStatus { status, .. } => vec![
                    accepted,
                    Desired::true_(
                        ENDPOINT_REACHABLE,
                        "Reachable",
                        format!("{url} answered HTTP {status}"),
                    ),
                    Desired::unknown(
                        CREDENTIALS_VALID,
                        "NotChecked",
                        format!("HTTP {status} says nothing about the key"),
                    ),
                    Desired::false_(
                        READY,
                        "UnexpectedStatus",
                        format!("{url} answered HTTP {status}: check baseUrl and probe.path"),
                    ),
                ],
                Outcome::Unreachable { reason, detail } => vec![
                    accepted,
                    Desired::false_(
                        ENDPOINT_REACHABLE,
                        *reason,
                        format!("{url} failed: {detail}"),
                    ),
                    Desired::unknown(
                        CREDENTIALS_VALID,
                        "NotChecked",
                        "the endpoint could not be reached",
                    ),
                    Desired::false_(
                        READY,
                        "EndpointUnreachable",
                        format!("{url} failed: {detail}"),
                    ),
                ],
            };
            (conds, &[])
        }
    }
}

/// Below probe.failureThreshold a profile that was Ready stays Ready: the probe conditions say
/// what failed, Ready says how many failures are left before it is marked down.
pub fn hold_ready(
    mut desired: Vec<Desired>,
    failures: u32,
    threshold: u32,
    was_ready: bool,
) -> Vec<Desired> {
    if failures == 0 || !was_ready || failures >= threshold {
        return desired;
    }
    let what = desired
        .iter()
        .find(|d| d.type_ == ENDPOINT_REACHABLE)
        .map(|d| d.message.clone())
        .unwrap_or_default();
    for d in desired.iter_mut().filter(|d| d.type_ == READY) {
        *d = Desired::true_(
            READY,
            "ProbeFailing",
            format!(
                "{failures} of {threshold} consecutive probes failed (probe.failureThreshold), still in use: {what}"
            ),
        );
    }
    desired
}

/// Latency to record, when the probe got an HTTP answer.
pub fn latency(outcome: &Outcome) -> Option<u64> {
    match outcome {
        Outcome::Ok { latency_ms }
        | Outcome::Degraded { latency_ms, .. }
        | Outcome::Unauthorized { latency_ms, .. }
        | Outcome::UnexpectedStatus { latency_ms, .. } => Some(*latency_ms),
        Outcome::Unreachable { .. } => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_is_rewritten_only_when_it_really_moves() {
        assert!(!latency_moved(Some(3), Some(90)), "87 ms is noise");
        assert!(!latency_moved(Some(800), Some(920)), "15 % is noise");
        assert!(latency_moved(Some(800), Some(1000)));
        assert!(latency_moved(None, Some(5)) && latency_moved(Some(5), None));
        assert!(!latency_moved(None, None));
    }
    use crate::conditions::Status;

    fn ready(f: &Finding) -> Desired {
        conditions(f)
            .0
            .into_iter()
            .find(|d| d.type_ == READY)
            .unwrap()
    }

    fn probed(outcome: Outcome) -> Finding {
        Finding::Probed {
            url: "https://x/v1/models".into(),
            outcome,
            secret_name: Some("llm-key".into()),
        }
    }

    #[test]
    fn rejected_is_not_ready_and_drops_probe_conditions() {
        let f = Finding::Rejected(Problem {
            reason: "SecretNotFound",
            message: "Secret \"k\" not found".into(),
        });
        let (d, removed) = conditions(&f);
        assert_eq!(d[0].status, Status::False);
        assert_eq!(ready(&f).reason, "SecretNotFound");
        assert_eq!(removed, PROBE_CONDITIONS);
    }

    #[test]
    fn probe_ok_is_ready() {
        let r = ready(&probed(Outcome::Ok { latency_ms: 12 }));
        assert_eq!(r.status, Status::True);
        // Latency lives in status.latencyMs: a message changing with it would rewrite status.
        let again = ready(&probed(Outcome::Ok { latency_ms: 480 }));
        assert_eq!(r.message, again.message);
    }

    #[test]
    fn unauthorized_marks_credentials_invalid_and_names_the_secret() {
        let f = probed(Outcome::Unauthorized {
            status: 401,
            latency_ms: 3,
        });
        let (d, _) = conditions(&f);
        let creds = d.iter().find(|c| c.type_ == CREDENTIALS_VALID).unwrap();
        assert_eq!(creds.status, Status::False);
        assert!(creds.message.contains("llm-key"));
        assert_eq!(ready(&f).reason, "CredentialsInvalid");
        let reach = d.iter().find(|c| c.type_ == ENDPOINT_REACHABLE).unwrap();
        assert_eq!(reach.status, Status::True);
    }

    #[test]
    fn unreachable_and_server_errors_mark_endpoint_unreachable() {
        let f = probed(Outcome::Unreachable {
            reason: "Timeout",
            detail: "no answer within 3s".into(),
        });
        let (d, _) = conditions(&f);
        let reach = d.iter().find(|c| c.type_ == ENDPOINT_REACHABLE).unwrap();
        assert_eq!(
            (reach.status, reach.reason.as_str()),
            (Status::False, "Timeout")
        );
        assert_eq!(ready(&f).reason, "EndpointUnreachable");
        let f = probed(Outcome::UnexpectedStatus {
            status: 503,
            latency_ms: 1,
        });
        assert_eq!(ready(&f).reason, "EndpointUnhealthy");
        let f = probed(Outcome::UnexpectedStatus {
            status: 404,
            latency_ms: 1,
        });
        assert_eq!(ready(&f).reason, "UnexpectedStatus");
    }

    #[test]
    fn a_ready_profile_stays_ready_until_the_threshold_and_throttling_is_not_down() {
        let failed = probed(Outcome::Unreachable {
            reason: "Timeout",
            detail: "timed out".into(),
        });
        let (d, _) = conditions(&failed);
        let held = hold_ready(d.clone(), 1, 3, true);
        let r = held.iter().find(|d| d.type_ == READY).unwrap();
        assert_eq!(
            (r.status, r.reason.as_str()),
            (Status::True, "ProbeFailing")
        );
        assert!(r.message.contains("1 of 3"), "{}", r.message);
        let e = held.iter().find(|d| d.type_ == ENDPOINT_REACHABLE).unwrap();
        assert_eq!(
            e.status,
            Status::False,
            "the probe condition tells the truth"
        );
        let down = hold_ready(d.clone(), 3, 3, true);
        assert_eq!(
            down.iter().find(|d| d.type_ == READY).unwrap().reason,
            "EndpointUnreachable"
        );
        let never_ready = hold_ready(d, 1, 3, false);
        let (ok, _) = conditions(&probed(Outcome::Ok { latency_ms: 3 }));
        assert_eq!(
            hold_ready(ok.clone(), 0, 3, true),
            ok,
            "a good probe is left as it is"
        );
        assert_eq!(
            never_ready
                .iter()
                .find(|d| d.type_ == READY)
                .unwrap()
                .status,
            Status::False
        );
        for status in [429, 529] {
            let f = probed(crate::controllers::llm_profile::probe::classify_status(
                status, 7,
            ));
            let (d, _) = conditions(&f);
            let r = d.iter().find(|d| d.type_ == READY).unwrap();
            assert_eq!(
                (r.status, r.reason.as_str()),
                (Status::True, "EndpointDegraded")
            );
        }
        assert!(
            crate::controllers::llm_profile::probe::classify_status(503, 1).is_transient_failure()
        );
        assert!(
            !crate::controllers::llm_profile::probe::classify_status(529, 1).is_transient_failure()
        );
        assert!(
            !crate::controllers::llm_profile::probe::classify_status(404, 1).is_transient_failure()
        );
    }
}
