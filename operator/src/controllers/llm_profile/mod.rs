//! LlmProfile controller: resolve the key Secret → validate → probe (when due) → status.

pub mod endpoints;
pub mod probe;
pub mod status;
pub mod validate;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::api::core::v1::Secret;
use kube::{
    Api, Resource, ResourceExt,
    core::{DeserializeGuard, PartialObjectMeta},
    runtime::{
        Controller,
        controller::Action,
        reflector::{ObjectRef, Store},
        watcher,
    },
};
use sha2::{Digest, Sha256};
use tracing::{Instrument, info_span};

use self::{status::Finding, validate::Problem};
use crate::{
    api::llm_profile::{LlmProfile, LlmProfileStatus},
    conditions,
    controller::shared::Subscriptions,
    controller::{
        Context, Error, Result, apply, mapping,
        policy::{self, Backoffs},
    },
};

/// Label of this controller in metrics and logs.
pub const CONTROLLER: &str = "llmprofile";

type Guarded = DeserializeGuard<LlmProfile>;

/// What the controller remembers between reconciles: when it last probed what.
#[derive(Default)]
pub struct ProbeMemo {
    last: Mutex<HashMap<ObjectRef<Guarded>, Probed>>,
}

#[derive(Clone, PartialEq, Eq)]
struct Probed {
    generation: Option<i64>,
    /// sha256 over the key and CA used; never stored anywhere but memory.
    inputs: [u8; 32],
    /// When it was probed: the schedule, since status.lastProbeTime is only a heartbeat.
    at: jiff::Timestamp,
}

/// status.lastProbeTime is refreshed at least this often (or every ten intervals, if longer),
/// so a stale time still shows that probing stopped; probes in between write nothing unless
/// something a user reads changed.
pub const PROBE_HEARTBEAT: Duration = Duration::from_secs(600);

pub struct State {
    pub ctx: Arc<Context>,
    memo: ProbeMemo,
    backoffs: Backoffs,
}

/// Run the controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    subs: Subscriptions,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let metrics = ctx.metrics.clone();
    let profiles = ctx.watched::<Guarded>();
    let controller = Controller::new(profiles, watcher::Config::default().any_semantic());
    let store = controller.store();
    let state = Arc::new(State {
        ctx,
        memo: ProbeMemo::default(),
        backoffs: Backoffs::default(),
    });
    policy::drain(
        controller
            .watches_shared_stream(subs.secrets, move |secret| {
                profiles_referencing(&store, &secret)
            })
            .graceful_shutdown_on(shutdown)
            .run(reconcile, error_policy, state),
        CONTROLLER,
        &metrics,
    )
    .await;
}

/// Profiles in the Secret's namespace whose key or CA lives in that Secret.
fn profiles_referencing(
    store: &Store<Guarded>,
    secret: &PartialObjectMeta<Secret>,
) -> Vec<ObjectRef<Guarded>> {
    mapping::users_of(store, &secret.metadata, |p: &LlmProfile, name| {
        let key = p
            .spec
            .auth
            .as_ref()
            .and_then(|a| a.secret_ref.as_ref())
            .map(|r| r.name.as_str());
        let ca = p.spec.tls.as_ref().map(|t| t.ca_secret_ref.name.as_str());
        key == Some(name) || ca == Some(name)
    })
}

async fn reconcile(guarded: Arc<Guarded>, state: Arc<State>) -> Result<Action> {
    let ctx = &state.ctx;
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    let (profile, ns, name) = policy::decoded(&guarded, "LlmProfile")?;
    let span = info_span!("reconcile", controller = CONTROLLER, namespace = %ns, name = %name);
    async {
        let found = observe(profile, &ns, &state).await?;
        let action = write_status(profile, &ns, &name, found, ctx).await?;
        state.backoffs.succeeded(profile);
        Ok(action)
    }
    .instrument(span)
    .await
}

/// Resolve Secrets, validate, and probe when a probe is due. Returns None when nothing changed
/// since the last probe (the status stays as it is), with when to look again.
async fn observe(
    profile: &LlmProfile,
    ns: &str,
    state: &State,
) -> Result<(Option<Finding>, Option<Duration>)> {
    let spec = &profile.spec;
    let secrets: Api<Secret> = Api::namespaced(state.ctx.client.clone(), ns);
    if let Err(p) = validate::validate_spec(spec) {
        return Ok((Some(Finding::Rejected(p)), None));
    }
    let key = match spec.auth.as_ref().and_then(|a| a.secret_ref.as_ref()) {
        Some(r) => match validate::api_key_value(r, secrets.get_opt(&r.name).await?.as_ref(), ns) {
            Ok(v) => Some(v),
            Err(p) => return Ok((Some(Finding::Rejected(p)), None)),
        },
        None => None,
    };
    let ca = match &spec.tls {
        Some(tls) => {
            let r = &tls.ca_secret_ref;
            match validate::secret_value(
                r,
                secrets.get_opt(&r.name).await?.as_ref(),
                ns,
                "a PEM CA bundle",
            ) {
                Ok(v) => Some(v),
                Err(p) => return Ok((Some(Finding::Rejected(p)), None)),
            }
        }
        None => None,
    };
    let Some(probe_spec) = spec.probe.as_ref().filter(|p| p.enabled) else {
        return Ok((Some(Finding::AcceptedUnprobed), None));
    };
    let key_str = match key.as_deref().map(std::str::from_utf8) {
        Some(Ok(k)) => Some(k),
        Some(Err(_)) => {
            return Ok((
                Some(Finding::Rejected(Problem {
                    reason: "SecretKeyInvalid",
                    message: "the API key is not valid UTF-8 text: store the key itself, not a binary file".into(),
                })),
                None,
            ));
        }
        None => None,
    };

    let interval = Duration::from_secs(probe_spec.interval_seconds.into());
    let oref = ObjectRef::<Guarded>::new(&profile.name_any()).within(ns);
    let inputs = fingerprint(key.as_deref(), ca.as_deref());
    let now = state.ctx.clock.now();
    let remembered = state
        .memo
        .last
        .lock()
        .expect("memo lock")
        .get(&oref)
        .cloned();
    // Nothing remembered (a restart, a new key or generation): probe now.
    let since_last: Option<Duration> = remembered
        .as_ref()
        .and_then(|p| now.duration_since(p.at).try_into().ok());
    let same_inputs = remembered
        .is_some_and(|p| p.generation == profile.metadata.generation && p.inputs == inputs);
    if let (true, Some(elapsed)) = (same_inputs, since_last)
        && elapsed < interval
    {
        return Ok((None, Some(interval - elapsed)));
    }

    let requests = probe::build_requests(spec, key_str);
    let (url, outcome) = probe::send_all(&requests, ca.as_deref()).await;
    state.memo.last.lock().expect("memo lock").insert(
        oref,
        Probed {
            generation: profile.metadata.generation,
            inputs,
            at: now,
        },
    );
    let secret_name = spec
        .auth
        .as_ref()
        .and_then(|a| a.secret_ref.as_ref())
        .map(|r| r.name.clone());
    Ok((
        Some(Finding::Probed {
            url,
            outcome,
            secret_name,
        }),
        Some(interval),
    ))
}

fn fingerprint(key: Option<&[u8]>, ca: Option<&[u8]>) -> [u8; 32] {
    let mut h = Sha256::new();
    for part in [key, ca] {
        match part {
            Some(p) => {
                h.update([1]);
                h.update((p.len() as u64).to_be_bytes());
                h.update(p);
            }
            None => h.update([0]),
        }
    }
    h.finalize().into()
}

/// Fold the finding into the status, write it only if it changed, and publish an Event when Ready
/// changes.
async fn write_status(
    profile: &LlmProfile,
    ns: &str,
    name: &str,
    (finding, next): (Option<Finding>, Option<Duration>),
    ctx: &Context,
) -> Result<Action> {
    let requeue = next
        .map(Action::requeue)
        .unwrap_or_else(|| Action::requeue(Duration::from_secs(300)));
    let Some(finding) = finding else {
        return Ok(requeue);
    };
    let old = profile.status.clone().unwrap_or_default();
    let now = ctx.clock.now_time();
    let (desired, removed) = status::conditions(&finding);
    let warning = endpoints::unversioned_openai(&endpoints::resolve(&profile.spec));
    let desired = status::with_path_warning(desired, warning);
    let failures = match &finding {
        Finding::Probed { outcome, .. } if outcome.is_transient_failure() => {
            old.consecutive_failures.unwrap_or(0).saturating_add(1)
        }
        _ => 0,
    };
    let was_ready = old
        .conditions
        .iter()
        .any(|c| c.type_ == status::READY && c.status == "True");
    let threshold = profile
        .spec
        .probe
        .as_ref()
        .map(|p| p.failure_threshold)
        .unwrap_or(1);
    let desired = status::hold_ready(desired, failures, threshold, was_ready);
    let mut conds = old.conditions.clone();
    conditions::remove(&mut conds, removed);
    let conds = conditions::merge(&conds, desired, profile.metadata.generation, &now);
    let mut new = LlmProfileStatus {
        observed_generation: profile.metadata.generation,
        conditions: conds,
        latency_ms: old.latency_ms,
        last_probe_time: old.last_probe_time.clone(),
        consecutive_failures: (failures > 0).then_some(failures),
    };
    match &finding {
        Finding::Probed { outcome, .. } => {
            let measured = status::latency(outcome);
            if status::latency_moved(old.latency_ms, measured) {
                new.latency_ms = measured;
            }
            let beat = PROBE_HEARTBEAT.max(requeue_interval(profile) * 10);
            let heartbeat_due = old.last_probe_time.as_ref().is_none_or(|t| {
                Duration::try_from(now.0.duration_since(t.0)).unwrap_or_default() >= beat
            });
            // The time changes with every probe: by itself it is not worth a write.
            new.last_probe_time = if heartbeat_due {
                Some(now.clone())
            } else {
                old.last_probe_time.clone()
            };
        }
        _ => {
            new.latency_ms = None;
            new.last_probe_time = None;
        }
    }
    if crate::controller::status::differs(&old, &new)
        && let Finding::Probed { .. } = &finding
    {
        // Whatever is written carries the time of the probe that found it.
        new.last_probe_time = Some(now.clone());
    }
    let api: Api<LlmProfile> = Api::namespaced(ctx.client.clone(), ns);
    let writer = crate::controller::status::Writer {
        controller: CONTROLLER,
        manager: apply::manager::LLM_PROFILE,
        reference: &profile.object_ref(&()),
        progressing: &[],
    };
    writer.write(ctx, &api, name, &old, &new, false).await?;
    Ok(requeue)
}

fn requeue_interval(profile: &LlmProfile) -> Duration {
    Duration::from_secs(
        profile
            .spec
            .probe
            .as_ref()
            .map(|p| p.interval_seconds)
            .unwrap_or(60)
            .into(),
    )
}

fn error_policy(guarded: Arc<Guarded>, error: &Error, state: Arc<State>) -> Action {
    policy::on_error(CONTROLLER, &guarded, error, &state.ctx, &state.backoffs)
}
