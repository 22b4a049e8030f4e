//! AiEnvironment controller: resolve profiles → select (fallback) → render → apply the Secret and
//! NetworkPolicies → roll the selected workloads → status.

pub mod memory;
pub mod netpol;
pub mod render;
mod resolve;
pub mod rollout;
pub mod select;
pub mod status;
mod sync;
mod watches;
pub mod workloads;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::{
    api::networking::v1::NetworkPolicy, apimachinery::pkg::apis::meta::v1::LabelSelector,
};
use kube::{
    ResourceExt,
    core::{DeserializeGuard, PartialObjectMeta, Selector},
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use tracing::{Instrument, info_span};

use crate::{
    api::{ai_environment::AiEnvironment, llm_profile::LlmProfile, memory_store::MemoryStore},
    controller::shared::{Readers, Subscriptions},
    controller::{
        Context, Error, Problem, Result, apply,
        policy::{self, Backoffs},
    },
};

/// Label of this controller in metrics and logs.
pub const CONTROLLER: &str = "aienvironment";
/// Safety net only: every input is watched.
pub(crate) const RESYNC: Duration = Duration::from_secs(600);

type Guarded = DeserializeGuard<AiEnvironment>;

pub struct State {
    pub ctx: Arc<Context>,
    /// The shared caches of Deployments and StatefulSets the agents are read from.
    pub(crate) workloads: Readers,
    /// Every profile in scope (a reflector of the profile watch): Secret → profiles →
    /// environments is a lookup.
    pub(crate) profiles: Store<DeserializeGuard<LlmProfile>>,
    /// What this process last did per environment. The object a reconcile receives comes from the
    /// watch cache and may not show the status this process wrote a moment ago; deciding on it
    /// alone could roll twice within minIntervalSeconds or announce a failover twice.
    pub(crate) memo: Mutex<HashMap<ObjectRef<Guarded>, Memo>>,
    backoffs: Backoffs,
    /// The controller's view of all environments, to forget memos of deleted ones.
    pub(crate) store: Store<Guarded>,
}

#[derive(Clone, Debug, Default)]
pub(crate) struct Memo {
    pub(crate) last_rollout: Option<jiff::Timestamp>,
    pub(crate) active_profile: Option<String>,
}

impl State {
    /// Update what this process remembers of `env`.
    pub(crate) fn remember(&self, env: &AiEnvironment, update: impl FnOnce(&mut Memo)) {
        update(
            self.memo
                .lock()
                .expect("memo lock")
                .entry(oref(env))
                .or_default(),
        );
    }

    /// Drop what this process remembers of environments that are gone (deleted without this
    /// process seeing their deletion timestamp, e.g. while another replica led).
    fn forget_deleted(&self) {
        let present = |k: &ObjectRef<Guarded>| self.store.get(k).is_some();
        self.memo
            .lock()
            .expect("memo lock")
            .retain(|k, _| present(k));
    }
}

/// Run the controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    subs: Subscriptions,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let metrics = ctx.metrics.clone();
    let cfg = || watcher::Config::default().any_semantic();
    let controller = Controller::new(ctx.watched::<Guarded>(), cfg());
    let store = controller.store();
    let (profiles_reader, profiles_writer) = reflector::store();
    let profile_events = reflector::reflector(
        profiles_writer,
        watcher(ctx.watched::<DeserializeGuard<LlmProfile>>(), cfg()).default_backoff(),
    )
    .touched_objects();
    let state = Arc::new(State {
        ctx: ctx.clone(),
        workloads: subs.readers.clone(),
        profiles: profiles_reader,
        memo: Mutex::default(),
        backoffs: Backoffs::default(),
        store: store.clone(),
    });
    let (s1, s2, s3, s4) = (store.clone(), store.clone(), store.clone(), store);
    let (Some(deployments), Some(statefulsets)) = (subs.deployments, subs.statefulsets) else {
        tracing::error!("the AiEnvironment controller needs the shared workload watches");
        return;
    };
    // Workloads are read from the caches: an empty one before its first list would look like
    // "no workloads selected".
    subs.readers.ready().await;
    let st = state.clone();
    policy::drain(
        controller
            .owns(ctx.watched::<NetworkPolicy>(), cfg())
            .watches_stream(profile_events, move |p| {
                watches::envs_using_profile(&s1, &watches::profile_meta(&p))
            })
            .watches_shared_stream(subs.secrets, move |s| {
                watches::envs_using_secret(&st.store, &st.profiles, &s.metadata)
            })
            .watches_shared_stream(deployments, move |d| {
                watches::envs_selecting(&s2, &d.metadata)
            })
            .watches_shared_stream(statefulsets, move |s| {
                watches::envs_selecting(&s3, &s.metadata)
            })
            .watches(
                ctx.watched::<PartialObjectMeta<MemoryStore>>(),
                cfg(),
                move |m| watches::envs_using_store(&s4, &m.metadata),
            )
            .graceful_shutdown_on(shutdown)
            .run(reconcile, error_policy, state),
        CONTROLLER,
        &metrics,
    )
    .await;
}

fn oref(e: &AiEnvironment) -> ObjectRef<Guarded> {
    ObjectRef::new(&e.name_any()).within(&e.namespace().unwrap_or_default())
}

/// The agents' selector as a list selector; empty selectors are refused (they select everything).
pub fn selector(s: &LabelSelector) -> Result<Selector, Problem> {
    let empty = s.match_labels.as_ref().is_none_or(|m| m.is_empty())
        && s.match_expressions.as_ref().is_none_or(|m| m.is_empty());
    if empty {
        return Err(Problem {
            reason: "SelectorEmpty",
            message: "agents.selector is empty and would select every workload in the namespace: set matchLabels (e.g. app: my-agent)".into(),
        });
    }
    Selector::try_from(s.clone()).map_err(|e| Problem {
        reason: "SelectorInvalid",
        message: format!("agents.selector is not a valid label selector: {e}"),
    })
}

async fn reconcile(guarded: Arc<Guarded>, state: Arc<State>) -> Result<Action> {
    let ctx = &state.ctx;
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    let (env, ns, name) = policy::decoded(&guarded, "AiEnvironment")?;
    if env.metadata.deletion_timestamp.is_some() {
        // Children go with the garbage collector; forget what this process remembered.
        state.memo.lock().expect("memo lock").remove(&oref(env));
        return Ok(Action::await_change());
    }
    let span = info_span!("reconcile", controller = CONTROLLER, namespace = %ns, name = %name);
    async {
        let action = sync::sync(env, &ns, &name, &state).await?;
        state.backoffs.succeeded(env);
        state.forget_deleted();
        Ok(action)
    }
    .instrument(span)
    .await
}

/// The status writer of an environment: a Ready change is an Event, Normal while a rollout is on
/// its way, Warning for problems.
fn status_writer(
    env_ref: &k8s_openapi::api::core::v1::ObjectReference,
) -> crate::controller::status::Writer<'_> {
    crate::controller::status::Writer {
        controller: CONTROLLER,
        manager: apply::manager::AI_ENVIRONMENT,
        reference: env_ref,
        progressing: &["RolloutPending", "CanaryProgressing", "Suspended"],
    }
}

fn error_policy(guarded: Arc<Guarded>, error: &Error, state: Arc<State>) -> Action {
    policy::on_error(CONTROLLER, &guarded, error, &state.ctx, &state.backoffs)
}
