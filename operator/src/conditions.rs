//! metav1.Condition bookkeeping shared by every controller.
//!
//! Controllers describe the conditions they want with [`Desired`]; [`merge`] folds them into the
//! existing list, keeping `lastTransitionTime` unless the status flips, so a steady object produces
//! an identical status and therefore no write.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Condition status, as metav1 spells it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    True,
    False,
    Unknown,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::True => "True",
            Status::False => "False",
            Status::Unknown => "Unknown",
        }
    }
}

impl From<bool> for Status {
    fn from(b: bool) -> Self {
        if b { Status::True } else { Status::False }
    }
}

/// A condition a controller wants to be true of its object right now.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Desired {
    pub type_: &'static str,
    pub status: Status,
    /// CamelCase, stable: also used as the Event reason.
    pub reason: String,
    /// What a person can act on. Never contains secret values.
    pub message: String,
}

impl Desired {
    pub fn new(
        type_: &'static str,
        status: impl Into<Status>,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self {
            type_,
            status: status.into(),
            reason: reason.into(),
            message: message.into(),
        }
    }
    pub fn true_(
        type_: &'static str,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::new(type_, Status::True, reason, message)
    }
    pub fn false_(
        type_: &'static str,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::new(type_, Status::False, reason, message)
    }
    pub fn unknown(
        type_: &'static str,
        reason: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        Self::new(type_, Status::Unknown, reason, message)
    }
}

/// Upsert `desired` into `existing` (by type). Types not mentioned are kept as they are.
/// `lastTransitionTime` is carried over when the status did not change.
pub fn merge(
    existing: &[Condition],
    desired: impl IntoIterator<Item = Desired>,
    generation: Option<i64>,
    now: &Time,
) -> Vec<Condition> {
    let mut out: Vec<Condition> = existing.to_vec();
    for d in desired {
        let transition = match out.iter().find(|c| c.type_ == d.type_) {
            Some(old) if old.status == d.status.as_str() => old.last_transition_time.clone(),
            _ => now.clone(),
        };
        let cond = Condition {
            type_: d.type_.to_string(),
            status: d.status.as_str().to_string(),
            reason: d.reason,
            message: d.message,
            observed_generation: generation,
            last_transition_time: transition,
        };
        match out.iter_mut().find(|c| c.type_ == cond.type_) {
            Some(slot) => *slot = cond,
            None => out.push(cond),
        }
    }
    out
}

/// Drop conditions of the given types (e.g. probe conditions once the probe is switched off).
pub fn remove(conditions: &mut Vec<Condition>, types: &[&str]) {
    conditions.retain(|c| !types.contains(&c.type_.as_str()));
}

/// Equal in everything but `lastTransitionTime`, regardless of order.
pub fn equal_ignoring_time(a: &[Condition], b: &[Condition]) -> bool {
    let key = |c: &Condition| {
        (
            c.type_.clone(),
            c.status.clone(),
            c.reason.clone(),
            c.message.clone(),
            c.observed_generation,
        )
    };
    let mut ka: Vec<_> = a.iter().map(key).collect();
    let mut kb: Vec<_> = b.iter().map(key).collect();
    ka.sort();
    kb.sort();
    ka == kb
}

/// The condition of a type, if present.
pub fn get<'a>(conditions: &'a [Condition], type_: &str) -> Option<&'a Condition> {
    conditions.iter().find(|c| c.type_ == type_)
}

/// Whether the condition of a type is present with status True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    get(conditions, type_).is_some_and(|c| c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(secs: i64) -> Time {
        Time(jiff::Timestamp::from_second(secs).unwrap())
    }

    #[test]
    fn new_condition_gets_now_and_generation() {
        let out = merge(
            &[],
            [Desired::true_("Ready", "Ok", "fine")],
            Some(3),
            &t(100),
        );
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].status, "True");
        assert_eq!(out[0].observed_generation, Some(3));
        assert_eq!(out[0].last_transition_time, t(100));
    }

    #[test]
    fn same_status_keeps_transition_time_even_when_message_changes() {
        let first = merge(&[], [Desired::true_("Ready", "Ok", "a")], Some(1), &t(100));
        let second = merge(
            &first,
            [Desired::true_("Ready", "Ok", "b")],
            Some(2),
            &t(200),
        );
        assert_eq!(second[0].last_transition_time, t(100));
        assert_eq!(second[0].message, "b");
        assert_eq!(second[0].observed_generation, Some(2));
    }

    #[test]
    fn flipped_status_moves_transition_time() {
        let first = merge(&[], [Desired::true_("Ready", "Ok", "a")], Some(1), &t(100));
        let second = merge(
            &first,
            [Desired::false_("Ready", "Broken", "b")],
            Some(1),
            &t(200),
        );
        assert_eq!(second[0].last_transition_time, t(200));
        assert_eq!(second[0].reason, "Broken");
    }

    #[test]
    fn steady_merge_is_identical_so_no_write_is_needed() {
        let d = || {
            [
                Desired::true_("Ready", "Ok", "a"),
                Desired::false_("Stalled", "No", "b"),
            ]
        };
        let first = merge(&[], d(), Some(1), &t(100));
        let second = merge(&first, d(), Some(1), &t(500));
        assert_eq!(first, second);
        assert!(equal_ignoring_time(&first, &second));
    }

    #[test]
    fn untouched_types_are_kept_and_order_is_stable() {
        let first = merge(
            &[],
            [Desired::true_("A", "R", "m"), Desired::true_("B", "R", "m")],
            Some(1),
            &t(1),
        );
        let second = merge(&first, [Desired::false_("B", "R2", "m2")], Some(1), &t(2));
        assert_eq!(
            second.iter().map(|c| c.type_.as_str()).collect::<Vec<_>>(),
            ["A", "B"]
        );
        assert_eq!(second[0], first[0]);
    }

    #[test]
    fn equality_ignores_time_and_order_but_not_content() {
        let a = merge(
            &[],
            [Desired::true_("A", "R", "m"), Desired::true_("B", "R", "m")],
            Some(1),
            &t(1),
        );
        let mut b = merge(
            &[],
            [Desired::true_("B", "R", "m"), Desired::true_("A", "R", "m")],
            Some(1),
            &t(99),
        );
        assert!(equal_ignoring_time(&a, &b));
        b[0].message = "other".into();
        assert!(!equal_ignoring_time(&a, &b));
    }

    #[test]
    fn remove_drops_only_named_types() {
        let mut c = merge(
            &[],
            [Desired::true_("A", "R", "m"), Desired::true_("B", "R", "m")],
            None,
            &t(1),
        );
        remove(&mut c, &["A"]);
        assert_eq!(c.len(), 1);
        assert_eq!(c[0].type_, "B");
    }
}
