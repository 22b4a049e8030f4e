//! The error policy every controller uses, and the Ready-transition Event.
//!
//! Transient errors are retried with capped exponential backoff per object; the count resets on the
//! next successful reconcile. Invalid or undecodable objects wait for a change instead of looping.

use std::{collections::HashMap, sync::Mutex};

use k8s_openapi::{api::core::v1::ObjectReference, apimachinery::pkg::apis::meta::v1::Condition};
use kube::{
    Resource, ResourceExt,
    core::DeserializeGuard,
    runtime::{controller::Action, events::EventType},
};
use tracing::warn;

use super::{Context, Error};

/// Consecutive failures per object (namespace, name).
#[derive(Default)]
pub struct Backoffs(Mutex<HashMap<(String, String), u32>>);

impl Backoffs {
    fn failed(&self, key: (String, String)) -> u32 {
        let mut m = self.0.lock().expect("backoff lock");
        let n = m.entry(key).or_default();
        *n += 1;
        *n
    }

    /// Forget an object's failures after a successful reconcile.
    pub fn succeeded<K: Resource>(&self, obj: &K) {
        let key = (obj.namespace().unwrap_or_default(), obj.name_any());
        self.0.lock().expect("backoff lock").remove(&key);
    }
}

/// (namespace, name) of a guarded object, decodable or not.
pub fn guard_key<K: Resource>(guarded: &DeserializeGuard<K>) -> (String, String) {
    match &guarded.0 {
        Ok(o) => (o.namespace().unwrap_or_default(), o.name_any()),
        Err(i) => (
            i.metadata.namespace.clone().unwrap_or_default(),
            i.metadata.name.clone().unwrap_or_default(),
        ),
    }
}

/// Count the failure, then back off (transient) or wait for a change (the object is wrong).
pub fn on_error<K: Resource>(
    controller: &'static str,
    guarded: &DeserializeGuard<K>,
    error: &Error,
    ctx: &Context,
    backoffs: &Backoffs,
) -> Action {
    ctx.metrics.failure(controller, error.label());
    let key = guard_key(guarded);
    if !error.is_transient() {
        warn!(controller, namespace = %key.0, name = %key.1, error = %error, "waiting for a change");
        return Action::await_change();
    }
    let n = backoffs.failed(key.clone());
    warn!(controller, namespace = %key.0, name = %key.1, error = %error, attempt = n, "reconcile failed; retrying");
    Action::requeue(Error::backoff(n))
}

/// Run a controller's result stream to its end. Reconcile failures are already counted and logged
/// by [`on_error`]; what reaches here is only logged at debug.
pub async fn drain<S, T, E>(results: S, controller: &'static str)
where
    S: futures::Stream<Item = Result<T, E>>,
    E: std::fmt::Display,
{
    use futures::StreamExt;
    results
        .for_each(|res| async move {
            if let Err(e) = res {
                tracing::debug!(controller, error = %e, "reconcile loop");
            }
        })
        .await;
}

/// Publish an Event when the Ready condition's status or reason changed between two condition
/// lists: Normal when it became True, Warning otherwise.
pub async fn ready_event(
    ctx: &Context,
    reference: &ObjectReference,
    old: &[Condition],
    new: &[Condition],
) {
    let old_ready = crate::conditions::get(old, "Ready");
    let Some(nr) = crate::conditions::get(new, "Ready") else {
        return;
    };
    if old_ready.map(|c| (&c.status, &c.reason)) == Some((&nr.status, &nr.reason)) {
        return;
    }
    let type_ = if nr.status == "True" {
        EventType::Normal
    } else {
        EventType::Warning
    };
    ctx.event(
        reference,
        type_,
        &nr.reason,
        "Reconcile",
        nr.message.clone(),
    )
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;

    #[test]
    fn failures_count_up_and_reset_on_success() {
        let b = Backoffs::default();
        let key = ("ns".to_string(), "cm".to_string());
        assert_eq!(b.failed(key.clone()), 1);
        assert_eq!(b.failed(key.clone()), 2);
        let mut cm = ConfigMap::default();
        cm.metadata.namespace = Some("ns".into());
        cm.metadata.name = Some("cm".into());
        b.succeeded(&cm);
        assert_eq!(b.failed(key), 1, "a success resets the backoff");
    }
}
