//! The error policy every controller uses, and the Ready-transition Event.
//!
//! Transient errors are retried with capped exponential backoff per object; the count resets on the
//! next successful reconcile. Invalid or undecodable objects wait for a change instead of looping.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use kube::{
    Resource, ResourceExt,
    core::DeserializeGuard,
    runtime::{
        controller::{self as runtime_controller, Action},
        watcher,
    },
};
use tracing::warn;

use super::{Context, Error, metrics::Metrics};

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

    /// Forget the failures of objects `keep` does not name (deleted ones).
    pub fn retain(&self, keep: impl Fn(&str, &str) -> bool) {
        self.0
            .lock()
            .expect("backoff lock")
            .retain(|(ns, name), _| keep(ns, name));
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
/// by [`on_error`]. Watch errors (a 403 from missing RBAC, a 404 for a missing CRD) mean the
/// controller stops seeing changes of that kind: they are counted and warned about, at most once a
/// minute per kind of error so a failing watch's retries do not flood the log.
pub async fn drain<S, T, RE>(results: S, controller: &'static str, metrics: &Metrics)
where
    S: futures::Stream<Item = Result<T, runtime_controller::Error<RE, watcher::Error>>>,
    RE: std::error::Error + 'static,
{
    use futures::StreamExt;
    let mut results = std::pin::pin!(results);
    let mut limiter = WarnLimiter::default();
    while let Some(res) = results.next().await {
        match res {
            Ok(_) | Err(runtime_controller::Error::ReconcilerFailed(..)) => {}
            Err(runtime_controller::Error::QueueError(e)) => {
                let label = watch_error_label(&e);
                metrics.watch_error(controller, label);
                if let Some(suppressed) = limiter.admit(label, Instant::now()) {
                    warn!(controller, error = %e, kind = label, suppressed, "watch failed: changes of this kind are not seen until it recovers");
                }
            }
            Err(e) => tracing::debug!(controller, error = %e, "reconcile loop"),
        }
    }
}

/// Short, stable label of a watch error for the metric and the log.
pub fn watch_error_label(e: &watcher::Error) -> &'static str {
    let code = match e {
        watcher::Error::InitialListFailed(k)
        | watcher::Error::WatchStartFailed(k)
        | watcher::Error::WatchFailed(k) => match k {
            kube::Error::Api(s) => Some(s.code),
            _ => return "Transport",
        },
        watcher::Error::WatchError(s) => Some(s.code),
        watcher::Error::NoResourceVersion => return "NoResourceVersion",
    };
    match code {
        Some(401) => "Unauthorized",
        Some(403) => "Forbidden",
        Some(404) => "NotFound",
        Some(410) => "Expired",
        _ => "ApiError",
    }
}

/// Lets one warning per label through per [`WarnLimiter::EVERY`], counting the ones held back.
#[derive(Default)]
pub struct WarnLimiter(HashMap<&'static str, (Instant, u64)>);

impl WarnLimiter {
    pub const EVERY: Duration = Duration::from_secs(60);

    /// `Some(suppressed since the last warning)` when a warning may be logged now.
    pub fn admit(&mut self, label: &'static str, now: Instant) -> Option<u64> {
        match self.0.get_mut(label) {
            Some((last, held)) if now.duration_since(*last) < Self::EVERY => {
                *held += 1;
                None
            }
            Some((last, held)) => {
                *last = now;
                Some(std::mem::take(held))
            }
            None => {
                self.0.insert(label, (now, 0));
                Some(0)
            }
        }
    }
}

/// The object a reconcile is for, with its namespace and name. An object that cannot be decoded
/// (schema drift, a hand edit) is an error that waits for the object to change.
pub fn decoded<'a, K>(
    guarded: &'a DeserializeGuard<K>,
    kind: &str,
) -> Result<(&'a K, String, String), Error>
where
    K: Resource,
{
    let obj = match &guarded.0 {
        Ok(o) => o,
        Err(invalid) => {
            let name = invalid.metadata.name.clone().unwrap_or_default();
            warn!(%name, error = %invalid.error, "undecodable {kind}");
            return Err(Error::Undecodable(format!(
                "{kind} {name}: {}",
                invalid.error
            )));
        }
    };
    let ns = obj
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    Ok((obj, ns, obj.name_any()))
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

    #[test]
    fn watch_errors_are_labelled_by_status() {
        let api = |code| {
            watcher::Error::InitialListFailed(kube::Error::Api(Box::new(
                kube::core::Status::failure("no", "Forbidden").with_code(code),
            )))
        };
        assert_eq!(watch_error_label(&api(403)), "Forbidden");
        assert_eq!(watch_error_label(&api(404)), "NotFound");
        assert_eq!(watch_error_label(&api(500)), "ApiError");
        assert_eq!(
            watch_error_label(&watcher::Error::NoResourceVersion),
            "NoResourceVersion"
        );
    }

    #[test]
    fn warnings_are_limited_per_label_and_count_what_was_held_back() {
        let mut l = WarnLimiter::default();
        let t0 = Instant::now();
        assert_eq!(l.admit("Forbidden", t0), Some(0));
        assert_eq!(l.admit("Forbidden", t0 + Duration::from_secs(1)), None);
        assert_eq!(l.admit("Forbidden", t0 + Duration::from_secs(2)), None);
        assert_eq!(l.admit("NotFound", t0 + Duration::from_secs(2)), Some(0));
        assert_eq!(l.admit("Forbidden", t0 + WarnLimiter::EVERY), Some(2));
        assert_eq!(l.admit("Forbidden", t0 + WarnLimiter::EVERY), None);
    }
}
