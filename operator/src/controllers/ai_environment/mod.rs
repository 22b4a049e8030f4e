//! AiEnvironment controller: resolve profiles → select (fallback) → render → apply the Secret and
//! NetworkPolicies → roll the selected workloads → status.

pub mod memory;
pub mod netpol;
pub mod render;
pub mod rollout;
pub mod select;
pub mod status;
pub mod workloads;

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::Duration,
};

use k8s_openapi::{
    ByteString,
    api::{core::v1::Secret, networking::v1::NetworkPolicy},
    apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference, Time},
};
use kube::{
    Api, Resource, ResourceExt,
    api::ListParams,
    core::{DeserializeGuard, PartialObjectMeta, Selector, SelectorExt},
    runtime::{
        Controller, WatchStreamExt,
        controller::Action,
        events::EventType,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use sha2::{Digest, Sha256};
use tracing::{Instrument, info_span, warn};

use self::{
    rollout::{HASH_ANNOTATION, Plan},
    select::{Selection, Transition},
    status::{Findings, RolloutState},
};
use crate::{
    api::{
        ai_environment::{AiEnvironment, AiEnvironmentStatus, RolloutTarget},
        llm_profile::LlmProfile,
        memory_store::MemoryStore,
    },
    conditions,
    controller::shared::{Readers, Subscriptions},
    controller::{
        Context, Error, Result, apply, children,
        policy::{self, Backoffs},
    },
    controllers::llm_profile::validate::{self, Problem},
};

/// Label of this controller in metrics and logs.
pub const CONTROLLER: &str = "aienvironment";
/// Annotation on generated children: sha256 of what was applied, so unchanged children cost no write.
pub const SPEC_HASH_ANNOTATION: &str = "aienv.orchestr8.io/spec-hash";
/// Safety net only: every input is watched.
const RESYNC: Duration = Duration::from_secs(600);

type Guarded = DeserializeGuard<AiEnvironment>;

pub struct State {
    pub ctx: Arc<Context>,
    /// The shared caches of Deployments and StatefulSets the agents are read from.
    workloads: Readers,
    /// Every profile in scope (a reflector of the profile watch): Secret → profiles →
    /// environments is a lookup.
    profiles: Store<DeserializeGuard<LlmProfile>>,
    /// What this process last did per environment. The object a reconcile receives comes from the
    /// watch cache and may not show the status this process wrote a moment ago; deciding on it
    /// alone could roll twice within minIntervalSeconds or announce a failover twice.
    memo: Mutex<HashMap<ObjectRef<Guarded>, Memo>>,
    backoffs: Backoffs,
    /// The controller's view of all environments, to forget memos of deleted ones.
    store: Store<Guarded>,
}

#[derive(Clone, Debug, Default)]
struct Memo {
    last_rollout: Option<jiff::Timestamp>,
    active_profile: Option<String>,
}

impl State {
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
                envs_using_profile(&s1, &profile_meta(&p))
            })
            .watches_shared_stream(subs.secrets, move |s| envs_using_secret(&st, &s.metadata))
            .watches_shared_stream(deployments, move |d| envs_selecting(&s2, &d.metadata))
            .watches_shared_stream(statefulsets, move |s| envs_selecting(&s3, &s.metadata))
            .watches(
                ctx.watched::<PartialObjectMeta<MemoryStore>>(),
                cfg(),
                move |m| envs_using_store(&s4, &m.metadata),
            )
            .graceful_shutdown_on(shutdown)
            .run(reconcile, error_policy, state),
        CONTROLLER,
        &metrics,
    )
    .await;
}

fn decoded(store: &Store<Guarded>) -> Vec<Arc<Guarded>> {
    store.state()
}

fn same_ns<'a>(
    envs: &'a [Arc<Guarded>],
    ns: &'a str,
) -> impl Iterator<Item = &'a AiEnvironment> + 'a {
    envs.iter()
        .filter_map(|g| g.0.as_ref().ok())
        .filter(move |e| e.namespace().as_deref() == Some(ns))
}

fn oref(e: &AiEnvironment) -> ObjectRef<Guarded> {
    ObjectRef::new(&e.name_any()).within(&e.namespace().unwrap_or_default())
}

/// Environments naming the profile as profileRef or a fallback.
fn envs_using_profile(store: &Store<Guarded>, meta: &ObjectMeta) -> Vec<ObjectRef<Guarded>> {
    let (Some(ns), Some(name)) = (meta.namespace.as_deref(), meta.name.as_deref()) else {
        return Vec::new();
    };
    let envs = decoded(store);
    same_ns(&envs, ns)
        .filter(|e| {
            e.spec.llm.profile_ref == name || e.spec.llm.fallbacks.iter().any(|f| f == name)
        })
        .map(oref)
        .collect()
}

/// A profile's metadata, decodable or not.
fn profile_meta(p: &DeserializeGuard<LlmProfile>) -> ObjectMeta {
    match &p.0 {
        Ok(p) => p.metadata.clone(),
        Err(invalid) => invalid.metadata.clone(),
    }
}

/// The environment owning the Secret, and environments whose profiles read a key from it.
fn envs_using_secret(state: &State, meta: &ObjectMeta) -> Vec<ObjectRef<Guarded>> {
    let (Some(ns), Some(name)) = (meta.namespace.as_deref(), meta.name.as_deref()) else {
        return Vec::new();
    };
    let mut out: Vec<ObjectRef<Guarded>> = meta
        .owner_references
        .iter()
        .flatten()
        .filter(|o| {
            o.kind == AiEnvironment::kind(&()) && o.api_version == AiEnvironment::api_version(&())
        })
        .map(|o| ObjectRef::new(&o.name).within(ns))
        .collect();
    for profile in state.profiles.state() {
        let Ok(p) = &profile.0 else { continue };
        let reads_it = p.namespace().as_deref() == Some(ns)
            && p.spec
                .auth
                .as_ref()
                .and_then(|a| a.secret_ref.as_ref())
                .is_some_and(|r| r.name == name);
        if reads_it {
            out.extend(envs_using_profile(&state.store, &p.metadata));
        }
    }
    out
}

/// Environments whose agents.selector matches the workload's labels.
fn envs_selecting(store: &Store<Guarded>, meta: &ObjectMeta) -> Vec<ObjectRef<Guarded>> {
    let Some(ns) = meta.namespace.as_deref() else {
        return Vec::new();
    };
    let empty = BTreeMap::new();
    let labels = meta.labels.as_ref().unwrap_or(&empty);
    let envs = decoded(store);
    same_ns(&envs, ns)
        .filter(|e| {
            selector(&e.spec.agents.selector)
                .map(|s| s.matches(labels))
                .unwrap_or(false)
        })
        .map(oref)
        .collect()
}

/// Environments using the MemoryStore.
fn envs_using_store(store: &Store<Guarded>, meta: &ObjectMeta) -> Vec<ObjectRef<Guarded>> {
    let (Some(ns), Some(name)) = (meta.namespace.as_deref(), meta.name.as_deref()) else {
        return Vec::new();
    };
    let envs = decoded(store);
    same_ns(&envs, ns)
        .filter(|e| e.spec.memory.as_ref().is_some_and(|m| m.store_ref == name))
        .map(oref)
        .collect()
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
    let env = match &guarded.0 {
        Ok(e) => e,
        Err(invalid) => {
            let name = invalid.metadata.name.clone().unwrap_or_default();
            warn!(%name, error = %invalid.error, "undecodable AiEnvironment");
            return Err(Error::Undecodable(format!(
                "AiEnvironment {name}: {}",
                invalid.error
            )));
        }
    };
    if env.metadata.deletion_timestamp.is_some() {
        // Children go with the garbage collector; forget what this process remembered.
        state.memo.lock().expect("memo lock").remove(&oref(env));
        return Ok(Action::await_change());
    }
    let ns = env
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = env.name_any();
    let span = info_span!("reconcile", controller = CONTROLLER, namespace = %ns, name = %name);
    async {
        let action = sync(env, &ns, &name, &state).await?;
        state.backoffs.succeeded(env);
        state.forget_deleted();
        Ok(action)
    }
    .instrument(span)
    .await
}

/// The API key of a profile (None for keyless profiles), or why it cannot be read.
async fn api_key(
    profile: &LlmProfile,
    secrets: &Api<Secret>,
    ns: &str,
) -> Result<Result<Option<String>, Problem>> {
    let Some(r) = profile
        .spec
        .auth
        .as_ref()
        .and_then(|a| a.secret_ref.as_ref())
    else {
        return Ok(Ok(None));
    };
    let pname = profile.name_any();
    let found = secrets.get_opt(&r.name).await?;
    Ok(
        // The same opt-in as the profile's: a key is never copied from a Secret that did not.
        match validate::api_key_value(r, found.as_ref(), ns) {
            Ok(v) => String::from_utf8(v).map(Some).map_err(|_| Problem {
                reason: "SecretKeyInvalid",
                message: format!(
                    "LlmProfile {pname:?}: key {:?} of Secret {:?} is not UTF-8 text: store the key itself",
                    r.key, r.name
                ),
            }),
            Err(p) => Err(Problem {
                reason: p.reason,
                message: format!("LlmProfile {pname:?}: {}", p.message),
            }),
        },
    )
}

fn sha256_json<T: serde::Serialize>(v: &T) -> Result<String> {
    Ok(hex::encode(Sha256::digest(serde_json::to_vec(v)?)))
}

/// Apply the rendered Secret unless it already holds exactly this. Returns whether it wrote, or
/// the conflict when a Secret of that name exists that this environment does not control.
async fn apply_secret(
    secrets: &Api<Secret>,
    ns: &str,
    name: &str,
    owner: &OwnerReference,
    rendered: &render::Rendered,
) -> Result<Result<bool, apply::Conflict>> {
    let data: BTreeMap<String, ByteString> = rendered
        .data
        .iter()
        .map(|(k, v)| (k.clone(), ByteString(v.clone().into_bytes())))
        .collect();
    if let Some(existing) = secrets.get_opt(name).await? {
        if let Err(c) = apply::check_controlled("Secret", name, ns, Some(&existing.metadata), owner)
        {
            return Ok(Err(c));
        }
        let same = existing.annotations().get(HASH_ANNOTATION) == Some(&rendered.hash)
            && existing.data.as_ref() == Some(&data)
            && existing
                .owner_references()
                .iter()
                .any(|o| o.uid == owner.uid);
        if same {
            return Ok(Ok(false));
        }
    }
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            labels: Some(BTreeMap::from([
                (netpol::ENV_LABEL.to_string(), owner.name.clone()),
                (
                    crate::controller::labels::LABEL_MANAGED_BY.into(),
                    crate::controller::labels::MANAGED_BY.into(),
                ),
            ])),
            annotations: Some(BTreeMap::from([(
                HASH_ANNOTATION.to_string(),
                rendered.hash.clone(),
            )])),
            owner_references: Some(vec![owner.clone()]),
            ..Default::default()
        },
        data: Some(data),
        type_: Some("Opaque".into()),
        ..Default::default()
    };
    apply::apply(secrets, apply::manager::AI_ENVIRONMENT, &secret).await?;
    Ok(Ok(true))
}

/// Apply the NetworkPolicies (or delete them when disabled); returns the summary for status.
async fn sync_network_policies(
    env: &AiEnvironment,
    ns: &str,
    owner: &OwnerReference,
    memory: Option<&netpol::MemoryPeer>,
    ctx: &Context,
) -> Result<Option<String>> {
    let api: Api<NetworkPolicy> = Api::namespaced(ctx.client.clone(), ns);
    let label = format!("{}={}", netpol::ENV_LABEL, env.name_any());
    if !env.spec.network_policy.enabled {
        let deleted = children::delete_unwanted(&api, &label, &owner.uid, &[]).await?;
        ctx.metrics
            .child_writes_inc(CONTROLLER, deleted.len() as u64);
        return Ok(None);
    }
    let built = netpol::build(
        &env.name_any(),
        owner,
        &env.spec.agents.selector,
        &env.spec.network_policy,
        memory,
    );
    let existing: BTreeMap<String, Option<String>> = api
        .list_metadata(&ListParams::default().labels(&label))
        .await?
        .items
        .into_iter()
        .map(|m| {
            let h = m.annotations().get(SPEC_HASH_ANNOTATION).cloned();
            (m.name_any(), h)
        })
        .collect();
    let mut keep = Vec::new();
    for mut p in built.policies {
        let h = sha256_json(&p)?;
        let name = p.name_any();
        keep.push(name.clone());
        if existing.get(&name) == Some(&Some(h.clone())) {
            continue;
        }
        p.metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
            .insert(SPEC_HASH_ANNOTATION.into(), h);
        apply::apply(&api, apply::manager::AI_ENVIRONMENT, &p).await?;
        ctx.metrics.child_writes_inc(CONTROLLER, 1);
    }
    let deleted = children::delete_unwanted(&api, &label, &owner.uid, &keep).await?;
    ctx.metrics
        .child_writes_inc(CONTROLLER, deleted.len() as u64);
    Ok(Some(built.summary))
}

fn names(ws: &[rollout::Workload], idx: &[usize]) -> String {
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

async fn sync(env: &AiEnvironment, ns: &str, name: &str, state: &State) -> Result<Action> {
    let ctx = &state.ctx;
    let client = ctx.client.clone();
    let now = ctx.clock.now();
    let spec = &env.spec;
    let old = env.status.clone().unwrap_or_default();
    let env_ref = env.object_ref(&());
    let secret_name = format!("{name}-llm");
    let owner = env
        .controller_owner_ref(&())
        .ok_or(Error::MissingField("metadata.uid"))?;

    if spec.suspend {
        let conds = conditions::merge(
            &old.conditions,
            [conditions::Desired::false_(
                status::READY,
                "Suspended",
                "spec.suspend is true: nothing is rendered or rolled",
            )],
            env.metadata.generation,
            &ctx.clock.now_time(),
        );
        let new = AiEnvironmentStatus {
            conditions: conds,
            observed_generation: env.metadata.generation,
            ..old.clone()
        };
        let api: Api<AiEnvironment> = Api::namespaced(client, ns);
        status_writer(&env_ref)
            .write(ctx, &api, name, &old, &new, false)
            .await?;
        return Ok(Action::await_change());
    }

    // Resolve every referenced profile.
    let profiles: Api<LlmProfile> = Api::namespaced(client.clone(), ns);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let mut found: BTreeMap<String, LlmProfile> = BTreeMap::new();
    for n in std::iter::once(&spec.llm.profile_ref).chain(&spec.llm.fallbacks) {
        if let Some(p) = profiles.get_opt(n).await? {
            found.insert(n.clone(), p);
        }
    }
    let profile_conds: BTreeMap<String, Vec<_>> = found
        .iter()
        .map(|(k, p)| {
            let c = p
                .status
                .as_ref()
                .map(|s| s.conditions.clone())
                .unwrap_or_default();
            (k.clone(), c)
        })
        .collect();
    let memo = state
        .memo
        .lock()
        .expect("memo lock")
        .get(&oref(env))
        .cloned()
        .unwrap_or_default();
    let current = memo.active_profile.clone().or(old.active_profile.clone());
    let selection = select::select(&spec.llm, current.as_deref(), &profile_conds, now);

    // Render and apply the Secret.
    let mut rendered = None;
    let secret_finding = match &selection {
        Ok(sel) => {
            let profile = &found[&sel.active];
            match api_key(profile, &secrets, ns).await? {
                Ok(key) => {
                    let r = render::render(&render::Input {
                        profile_name: &sel.active,
                        profile: &profile.spec,
                        key: key.as_deref(),
                        harnesses: &spec.llm.harnesses,
                    });
                    match apply_secret(&secrets, ns, &secret_name, &owner, &r).await? {
                        Ok(wrote) => {
                            if wrote {
                                ctx.metrics.child_writes_inc(CONTROLLER, 1);
                            }
                            let h = r.hash.clone();
                            rendered = Some(r);
                            Some(Ok(h))
                        }
                        // Nothing applied and nothing rolled; Ready (and its Event) says why.
                        Err(c) => Some(Err(Problem {
                            reason: "SecretConflict",
                            message: c.to_string(),
                        })),
                    }
                }
                Err(p) => Some(Err(p)),
            }
        }
        Err(_) => None,
    };

    // Memory store and NetworkPolicies.
    let (memory, memory_peer) = memory::observe(&client, ns, spec.memory.as_ref()).await?;
    // The agents' memory connection is part of their configuration: a new password (a CNPG
    // rotation), a new external URI or another store rolls them like a profile change.
    if let (
        Some(r),
        status::MemoryState::Ready {
            secret_name: Some(conn),
        },
    ) = (&mut rendered, &memory)
        && let Some(secret) = secrets.get_opt(conn).await?
    {
        r.hash = render::with_connection(&r.hash, &secret);
    }
    let memory_label = spec.memory.as_ref().map(|m| m.store_ref.as_str());
    let np_summary = sync_network_policies(env, ns, &owner, memory_peer.as_ref(), ctx).await?;

    // Workloads and the rollout.
    let mut requeue: Vec<Duration> = Vec::new();
    if let Ok(Selection {
        switch_back_in: Some(d),
        ..
    }) = &selection
    {
        requeue.push(*d);
    }
    let mut last_rollout = match (&old.last_rollout_time, memo.last_rollout) {
        (Some(t), Some(m)) if m > t.0 => Some(Time(m)),
        (None, Some(m)) => Some(Time(m)),
        (t, _) => t.clone(),
    };
    let mut ws = Vec::new();
    let rollout_state = match selector(&spec.agents.selector) {
        Err(p) => RolloutState::Failed(p),
        Ok(sel) => {
            ws = workloads::list(&state.workloads, ns, &sel);
            if ws.is_empty() {
                RolloutState::Failed(Problem {
                    reason: "NoWorkloadsSelected",
                    message: format!(
                        "agents.selector ({sel}) matches no Deployment or StatefulSet in namespace {ns:?}: label the agent workloads or fix agents.selector"
                    ),
                })
            } else if let Some(r) = &rendered {
                let last = old
                    .last_rollout_time
                    .as_ref()
                    .map(|t| t.0)
                    .max(memo.last_rollout);
                match rollout::plan(&ws, &r.hash, &spec.agents.rollout, last, now) {
                    Plan::Done => RolloutState::Done {
                        workloads: ws.len(),
                    },
                    Plan::Patch { targets, canary } => {
                        let list: Vec<_> = targets
                            .iter()
                            .map(|i| (ws[*i].kind, ws[*i].name.clone()))
                            .collect();
                        let results =
                            workloads::patch_all(&client, ns, &list, &r.hash, memory_label).await;
                        let mut rolled = Vec::new();
                        let mut failure = None;
                        for (i, result) in targets.iter().zip(results) {
                            match result {
                                workloads::Patched::Rolled => {
                                    ws[*i].hash = Some(r.hash.clone());
                                    rolled.push(*i);
                                }
                                workloads::Patched::AlreadyCurrent => {
                                    ws[*i].hash = Some(r.hash.clone());
                                }
                                workloads::Patched::Gone => {}
                                workloads::Patched::Failed(e) => {
                                    failure.get_or_insert(e);
                                }
                            }
                        }
                        ctx.metrics
                            .child_writes_inc(CONTROLLER, rolled.len() as u64);
                        // Nothing rolled here (another replica was first, or every patch failed):
                        // no rollout to record or announce.
                        if rolled.is_empty() {
                            if let Some(e) = failure {
                                return Err(Error::Kube(e));
                            }
                            return Ok(Action::requeue(Duration::from_secs(1)));
                        }
                        // Whole seconds, as metav1.Time is stored: the memo must compare equal
                        // to what the API server returns, or every reconcile would write status.
                        let t = Time(
                            jiff::Timestamp::from_second(now.as_second())
                                .expect("a clock reading is in range"),
                        );
                        state
                            .memo
                            .lock()
                            .expect("memo lock")
                            .entry(oref(env))
                            .or_default()
                            .last_rollout = Some(t.0);
                        last_rollout = Some(t);
                        let profile = selection.as_ref().map(|s| s.active.as_str()).unwrap_or("");
                        let (reason, what) = if canary {
                            ("CanaryStarted", "canary")
                        } else {
                            ("RolledOut", "workload(s)")
                        };
                        ctx.event(
                            &env_ref,
                            EventType::Normal,
                            reason,
                            "Rollout",
                            format!(
                                "config hash {} (profile {profile:?}) applied to {} {what}: {}",
                                &r.hash[..12],
                                rolled.len(),
                                names(&ws, &rolled)
                            ),
                        )
                        .await;
                        // The rollout of those that were patched is recorded (above) and
                        // announced; the rest are retried with the error's backoff.
                        if let Some(e) = failure {
                            return Err(Error::Kube(e));
                        }
                        if canary {
                            requeue.push(Duration::from_secs(
                                spec.agents.rollout.canary_timeout_seconds.into(),
                            ));
                            RolloutState::Progressing {
                                reason: "CanaryProgressing",
                                message: format!(
                                    "waiting for canary {} to report every replica updated and available",
                                    names(&ws, &targets[..1])
                                ),
                            }
                        } else {
                            RolloutState::Done {
                                workloads: ws.len(),
                            }
                        }
                    }
                    Plan::Throttled(wait) => {
                        requeue.push(wait);
                        RolloutState::Progressing {
                            reason: "RolloutPending",
                            message: format!(
                                "coalescing changes: the last rollout was less than agents.rollout.minIntervalSeconds={} ago; the next starts in {}s",
                                spec.agents.rollout.min_interval_seconds,
                                wait.as_secs().max(1)
                            ),
                        }
                    }
                    Plan::CanaryWaiting { canary, timeout_in } => {
                        requeue.push(timeout_in);
                        RolloutState::Progressing {
                            reason: "CanaryProgressing",
                            message: format!(
                                "waiting for canary {} to report every replica updated and available (gives up in {}s)",
                                names(&ws, &[canary]),
                                timeout_in.as_secs()
                            ),
                        }
                    }
                    Plan::CanaryTimedOut { canary } => RolloutState::Failed(Problem {
                        reason: "CanaryTimedOut",
                        message: format!(
                            "canary {} did not report every replica updated and available within agents.rollout.canaryTimeoutSeconds={}: check its pods; the other workloads were not rolled",
                            names(&ws, &[canary]),
                            spec.agents.rollout.canary_timeout_seconds
                        ),
                    }),
                }
            } else {
                RolloutState::Blocked
            }
        }
    };

    if let Ok(sel) = &selection {
        state
            .memo
            .lock()
            .expect("memo lock")
            .entry(oref(env))
            .or_default()
            .active_profile = Some(sel.active.clone());
    }

    // Failover Events.
    if let Ok(Selection {
        transition: Some(t),
        active,
        failed_over,
        ..
    }) = &selection
    {
        let (type_, reason, note) = match t {
            Transition::FailedOver { from, to } => (
                EventType::Warning,
                "FailedOver",
                format!(
                    "switched from LlmProfile {from:?} to fallback {to:?}: {}",
                    failed_over
                        .as_ref()
                        .map(|f| f.message.as_str())
                        .unwrap_or("")
                ),
            ),
            Transition::SwitchedBack { from, early: false } => (
                EventType::Normal,
                "SwitchedBack",
                format!(
                    "switched back from fallback {from:?} to LlmProfile {active:?}: it has been Ready for llm.switchBackAfterSeconds={}",
                    spec.llm.switch_back_after_seconds
                ),
            ),
            Transition::SwitchedBack { from, early: true } => (
                EventType::Normal,
                "SwitchedBack",
                format!(
                    "switched back from fallback {from:?} to LlmProfile {active:?} before llm.switchBackAfterSeconds={}: the fallback failed and the primary is Ready",
                    spec.llm.switch_back_after_seconds
                ),
            ),
        };
        ctx.event(&env_ref, type_, reason, "Failover", note).await;
    }

    // Status.
    let findings = Findings {
        profile: selection.clone(),
        secret: secret_finding,
        rollout: rollout_state,
        memory,
        network_policy: np_summary,
        secret_name,
    };
    let (desired, removed) = status::conditions(&findings);
    let mut conds = old.conditions.clone();
    conditions::remove(&mut conds, &removed);
    let conds = conditions::merge(
        &conds,
        desired,
        env.metadata.generation,
        &ctx.clock.now_time(),
    );
    let new = AiEnvironmentStatus {
        observed_generation: env.metadata.generation,
        conditions: conds,
        active_profile: selection
            .as_ref()
            .ok()
            .map(|s| s.active.clone())
            .or(old.active_profile.clone()),
        rendered_hash: rendered
            .as_ref()
            .map(|r| r.hash.clone())
            .or(old.rendered_hash.clone()),
        targets: ws
            .iter()
            .map(|w| RolloutTarget {
                kind: w.kind.as_str().to_string(),
                name: w.name.clone(),
                observed_hash: w.hash.clone(),
                updated_replicas: w.updated_replicas,
                ready_replicas: w.ready_replicas,
            })
            .collect(),
        last_rollout_time: last_rollout,
    };
    let api: Api<AiEnvironment> = Api::namespaced(client, ns);
    status_writer(&env_ref)
        .write(ctx, &api, name, &old, &new, false)
        .await?;
    Ok(requeue
        .into_iter()
        .min()
        .map(|d| Action::requeue(d.max(Duration::from_millis(200))))
        .unwrap_or_else(|| Action::requeue(RESYNC)))
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
