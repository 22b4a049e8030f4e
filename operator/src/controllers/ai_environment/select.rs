//! Which profile is active: the primary, or the first healthy fallback while the primary's probe
//! fails, and back to the primary once it has been Ready for `switchBackAfterSeconds`. Pure.

use std::{collections::BTreeMap, time::Duration};

use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;

use crate::{
    api::ai_environment::LlmBinding,
    conditions,
    controllers::llm_profile::{
        status::{CREDENTIALS_VALID, ENDPOINT_REACHABLE, READY},
        validate::Problem,
    },
};

/// The decision.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Selection {
    /// The profile to render.
    pub active: String,
    /// Set while a fallback is active: why the primary was left.
    pub failed_over: Option<Problem>,
    /// Set when the active profile itself is failing and no healthy fallback exists.
    pub active_failing: Option<Problem>,
    /// Set while the primary is healthy but not yet for long enough to switch back.
    pub switch_back_in: Option<Duration>,
    /// The transition this decision makes, if any (for Events).
    pub transition: Option<Transition>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transition {
    FailedOver {
        from: String,
        to: String,
    },
    /// `early`: before the hold ended, because the fallback failed.
    SwitchedBack {
        from: String,
        early: bool,
    },
}

/// The probe of `conds` reports the endpoint unreachable or the key refused.
pub fn failing(name: &str, conds: &[Condition]) -> Option<Problem> {
    for (type_, reason) in [
        (ENDPOINT_REACHABLE, "PrimaryUnreachable"),
        (CREDENTIALS_VALID, "PrimaryCredentialsInvalid"),
    ] {
        if let Some(c) = conditions::get(conds, type_)
            && c.status == "False"
        {
            return Some(Problem {
                reason,
                message: format!(
                    "LlmProfile {name:?} {type_}=False ({}): {}",
                    c.reason, c.message
                ),
            });
        }
    }
    None
}

/// Since when the profile has been Ready=True.
fn ready_since(conds: &[Condition]) -> Option<Timestamp> {
    conditions::get(conds, READY)
        .filter(|c| c.status == "True")
        .map(|c| c.last_transition_time.0)
}

/// Choose the active profile. `profiles` holds the conditions of every referenced profile that
/// exists; `current` is the profile active so far (status.activeProfile).
pub fn select(
    llm: &LlmBinding,
    current: Option<&str>,
    profiles: &BTreeMap<String, Vec<Condition>>,
    now: Timestamp,
) -> Result<Selection, Problem> {
    let primary = llm.profile_ref.as_str();
    let Some(primary_conds) = profiles.get(primary) else {
        return Err(Problem {
            reason: "ProfileNotFound",
            message: format!(
                "LlmProfile {primary:?} (llm.profileRef) does not exist in this namespace: create it or fix llm.profileRef"
            ),
        });
    };
    if let Some(missing) = llm.fallbacks.iter().find(|f| !profiles.contains_key(*f)) {
        return Err(Problem {
            reason: "FallbackNotFound",
            message: format!(
                "LlmProfile {missing:?} (in llm.fallbacks) does not exist in this namespace: create it or remove it from llm.fallbacks"
            ),
        });
    }
    let healthy_fallback = |skip: Option<&str>| {
        llm.fallbacks
            .iter()
            .filter(|f| Some(f.as_str()) != skip)
            .find(|f| conditions::is_true(&profiles[*f], READY))
            .cloned()
    };
    let primary_failing = failing(primary, primary_conds);
    let on_fallback = current.filter(|c| *c != primary && llm.fallbacks.iter().any(|f| f == c));

    let Some(cur) = on_fallback else {
        // On the primary.
        let Some(why) = primary_failing else {
            return Ok(Selection {
                active: primary.into(),
                failed_over: None,
                active_failing: None,
                switch_back_in: None,
                transition: None,
            });
        };
        return Ok(match healthy_fallback(None) {
            Some(f) => Selection {
                transition: Some(Transition::FailedOver {
                    from: primary.into(),
                    to: f.clone(),
                }),
                active: f,
                failed_over: Some(why),
                active_failing: None,
                switch_back_in: None,
            },
            None => Selection {
                active: primary.into(),
                failed_over: None,
                active_failing: Some(why),
                switch_back_in: None,
                transition: None,
            },
        });
    };

    // On a fallback: switch back once the primary has been Ready long enough.
    let switch_back = |early| Selection {
        active: primary.into(),
        failed_over: None,
        active_failing: None,
        switch_back_in: None,
        transition: Some(Transition::SwitchedBack {
            from: cur.into(),
            early,
        }),
    };
    let hold = Duration::from_secs(llm.switch_back_after_seconds.into());
    let mut switch_back_in = None;
    if primary_failing.is_none()
        && let Some(since) = ready_since(primary_conds)
    {
        let healthy_for: Duration = now.duration_since(since).try_into().unwrap_or_default();
        if healthy_for >= hold {
            return Ok(switch_back(false));
        }
        switch_back_in = Some(hold - healthy_for);
    }
    let why = primary_failing.unwrap_or_else(|| Problem {
        reason: "PrimaryNotReadyLongEnough",
        message: format!(
            "LlmProfile {primary:?} must be Ready for {}s before switching back",
            llm.switch_back_after_seconds
        ),
    });
    // The fallback in use may fail too: back to the primary at once when it is Ready (the hold
    // only guards against leaving a working fallback), else the next healthy fallback, else stay.
    if let Some(cur_failing) = failing(cur, &profiles[cur]) {
        if switch_back_in.is_some() {
            return Ok(switch_back(true));
        }
        return Ok(match healthy_fallback(Some(cur)) {
            Some(f) => Selection {
                transition: Some(Transition::FailedOver {
                    from: cur.into(),
                    to: f.clone(),
                }),
                active: f,
                failed_over: Some(why),
                active_failing: None,
                switch_back_in,
            },
            None => Selection {
                active: cur.into(),
                failed_over: Some(why),
                active_failing: Some(cur_failing),
                switch_back_in,
                transition: None,
            },
        });
    }
    Ok(Selection {
        active: cur.into(),
        failed_over: Some(why),
        active_failing: None,
        switch_back_in,
        transition: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(s).unwrap()
    }
    fn cond(type_: &str, status: &str, since: i64) -> Condition {
        Condition {
            type_: type_.into(),
            status: status.into(),
            reason: "R".into(),
            message: "m".into(),
            observed_generation: None,
            last_transition_time: Time(t(since)),
        }
    }
    fn healthy(since: i64) -> Vec<Condition> {
        vec![
            cond(ENDPOINT_REACHABLE, "True", since),
            cond(CREDENTIALS_VALID, "True", since),
            cond(READY, "True", since),
        ]
    }
    fn unreachable(since: i64) -> Vec<Condition> {
        vec![
            cond(ENDPOINT_REACHABLE, "False", since),
            cond(READY, "False", since),
        ]
    }
    fn binding() -> LlmBinding {
        serde_json::from_value(serde_json::json!({
            "profileRef": "p", "fallbacks": ["f1", "f2"], "switchBackAfterSeconds": 60
        }))
        .unwrap()
    }

    #[test]
    fn missing_primary_or_fallback_is_a_problem() {
        let llm = binding();
        let mut m = BTreeMap::new();
        assert_eq!(
            select(&llm, None, &m, t(0)).unwrap_err().reason,
            "ProfileNotFound"
        );
        m.insert("p".to_string(), healthy(0));
        m.insert("f1".to_string(), healthy(0));
        let e = select(&llm, None, &m, t(0)).unwrap_err();
        assert_eq!(e.reason, "FallbackNotFound");
        assert!(e.message.contains("\"f2\""));
    }

    #[test]
    fn healthy_primary_stays() {
        let m = BTreeMap::from([
            ("p".to_string(), healthy(0)),
            ("f1".to_string(), healthy(0)),
            ("f2".to_string(), healthy(0)),
        ]);
        let s = select(&binding(), Some("p"), &m, t(100)).unwrap();
        assert_eq!(s.active, "p");
        assert!(s.failed_over.is_none() && s.transition.is_none());
    }

    #[test]
    fn fails_over_to_first_ready_fallback_and_switches_back_after_hold() {
        let mut m = BTreeMap::from([
            ("p".to_string(), unreachable(10)),
            ("f1".to_string(), unreachable(0)),
            ("f2".to_string(), healthy(0)),
        ]);
        let s = select(&binding(), Some("p"), &m, t(20)).unwrap();
        assert_eq!(s.active, "f2");
        assert_eq!(s.failed_over.unwrap().reason, "PrimaryUnreachable");
        assert!(matches!(s.transition, Some(Transition::FailedOver { .. })));

        // Primary recovers at 100: stays on f2 until 160.
        m.insert("p".to_string(), healthy(100));
        let s = select(&binding(), Some("f2"), &m, t(130)).unwrap();
        assert_eq!(s.active, "f2");
        assert_eq!(s.switch_back_in, Some(Duration::from_secs(30)));
        assert!(s.transition.is_none());
        let s = select(&binding(), Some("f2"), &m, t(160)).unwrap();
        assert_eq!(s.active, "p");
        assert!(matches!(
            s.transition,
            Some(Transition::SwitchedBack { .. })
        ));
    }

    #[test]
    fn no_healthy_fallback_stays_on_primary_and_says_so() {
        let m = BTreeMap::from([
            ("p".to_string(), unreachable(10)),
            ("f1".to_string(), unreachable(0)),
            ("f2".to_string(), vec![]),
        ]);
        let s = select(&binding(), None, &m, t(20)).unwrap();
        assert_eq!(s.active, "p");
        assert_eq!(s.active_failing.unwrap().reason, "PrimaryUnreachable");
    }

    #[test]
    fn failing_fallback_moves_to_the_next_or_back_to_a_ready_primary() {
        let mut m = BTreeMap::from([
            ("p".to_string(), unreachable(10)),
            ("f1".to_string(), unreachable(30)),
            ("f2".to_string(), healthy(0)),
        ]);
        let s = select(&binding(), Some("f1"), &m, t(40)).unwrap();
        assert_eq!(s.active, "f2");

        // The primary is Ready again since 35, inside its 60s hold, when f1 fails: back at once.
        m.insert("p".to_string(), healthy(35));
        let s = select(&binding(), Some("f1"), &m, t(40)).unwrap();
        assert_eq!(s.active, "p");
        assert_eq!(
            s.transition,
            Some(Transition::SwitchedBack {
                from: "f1".into(),
                early: true
            })
        );
        assert!(s.failed_over.is_none() && s.switch_back_in.is_none());
    }

    #[test]
    fn a_switched_profile_ref_resets_to_the_new_primary() {
        let m = BTreeMap::from([
            ("p".to_string(), healthy(0)),
            ("f1".to_string(), healthy(0)),
            ("f2".to_string(), healthy(0)),
        ]);
        let s = select(&binding(), Some("old-primary"), &m, t(40)).unwrap();
        assert_eq!(s.active, "p");
    }
}
