//! One reconcile of an environment: resolve → select → render → apply the children → roll →
//! status. The decisions are pure (`select`, `render`, `netpol`, `rollout`); this file calls them
//! in order and does the IO between.

use std::{collections::BTreeMap, time::Duration};

use k8s_openapi::{
    api::{core::v1::Secret, networking::v1::NetworkPolicy},
    apimachinery::pkg::apis::meta::v1::Time,
};
use kube::{
    Api, Resource,
    runtime::{controller::Action, events::EventType},
};

use super::{
    CONTROLLER, Memo, RESYNC, State, memory, netpol, oref, render, resolve,
    rollout::{self, Decision, PatchOutcome, Plan, Retry},
    select::{self, Selection, Transition},
    selector,
    status::{self, Findings, RolloutState},
    status_writer, workloads,
};
use crate::{
    api::ai_environment::{AiEnvironment, AiEnvironmentStatus, RolloutTarget},
    conditions,
    controller::{
        Error, Problem, Result, apply,
        children::{ChildSet, Lifetime},
    },
    controllers::llm_profile::endpoints,
};

pub async fn sync(env: &AiEnvironment, ns: &str, name: &str, state: &State) -> Result<Action> {
    let ctx = &state.ctx;
    let client = ctx.client.clone();
    let now = ctx.clock.now();
    let spec = &env.spec;
    let old = env.status.clone().unwrap_or_default();
    let env_ref = env.object_ref(&());
    let secret_name = format!("{name}-llm");
    let api: Api<AiEnvironment> = Api::namespaced(client.clone(), ns);
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
        status_writer(&env_ref)
            .write(ctx, &api, name, &old, &new, false)
            .await?;
        return Ok(Action::await_change());
    }

    // Resolve and select.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let found = resolve::profiles(env, ns, &state.profiles);
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
    let memo: Memo = state
        .memo
        .lock()
        .expect("memo lock")
        .get(&oref(env))
        .cloned()
        .unwrap_or_default();
    let current = memo.active_profile.clone().or(old.active_profile.clone());
    // Failover only ever picks a fallback that can serve every requested harness.
    let mut llm = spec.llm.clone();
    let mut unfit = Vec::new();
    llm.fallbacks.retain(|f| {
        let fit = found.get(f).map_or(Ok(()), |p| {
            render::check_harnesses(&spec.llm.harnesses, &endpoints::resolve(&p.spec))
        });
        fit.map_err(|e| unfit.push(format!("{f:?} ({})", e.message)))
            .is_ok()
    });
    let selection = select::select(&llm, current.as_deref(), &profile_conds, now);

    // Render and apply the Secret.
    let mut children = ChildSet::new(
        client.clone(),
        ns,
        owner.clone(),
        netpol::ENV_LABEL,
        apply::manager::AI_ENVIRONMENT,
        CONTROLLER,
        &ctx.metrics,
    );
    let mut rendered = None;
    let secret_finding = match &selection {
        Ok(sel) => {
            let profile = &found[&sel.active];
            match resolve::api_key(profile, &secrets, ns).await? {
                Ok(key) => match render::render(&render::Input {
                    profile_name: &sel.active,
                    profile: &profile.spec,
                    key: key.as_deref(),
                    harnesses: &spec.llm.harnesses,
                }) {
                    Ok(r) => {
                        let secret = render::secret(&secret_name, &r);
                        match children.add(secret, Lifetime::Owned).await? {
                            Ok(_) => {
                                let h = r.hash.clone();
                                rendered = Some(r);
                                Some(Ok(h))
                            }
                            // Nothing applied and nothing rolled; Ready (and its Event) says why.
                            Err(c) => Some(Err(Problem::new("SecretConflict", c.to_string()))),
                        }
                    }
                    // A harness this profile cannot serve: the Secret keeps what it held, and
                    // nothing is rolled.
                    Err(p) => Some(Err(Problem::new(
                        p.reason,
                        format!("LlmProfile {:?}: {}", sel.active, p.message),
                    ))),
                },
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
    let np_summary = if spec.network_policy.enabled {
        let built = netpol::build(
            name,
            &owner,
            &spec.agents.selector,
            &spec.network_policy,
            memory_peer.as_ref(),
        );
        let mut applied = Ok(built.summary);
        for p in built.policies {
            if let Err(c) = children.add(p, Lifetime::Owned).await? {
                applied = Err(Problem::new("NetworkPolicyConflict", c.to_string()));
                break;
            }
        }
        Some(applied)
    } else {
        // Switched off: the policies this environment applied before go.
        children.expect::<NetworkPolicy>().await?;
        None
    };
    // A conflict stopped the policies half-way: the ones not reached are still wanted.
    if !matches!(np_summary, Some(Err(_))) {
        children.finish().await?;
    }

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
    let profile = selection.as_ref().map(|s| s.active.as_str()).unwrap_or("");
    let rollout_state = match selector(&spec.agents.selector) {
        Err(p) => RolloutState::Failed(p),
        Ok(sel) => {
            ws = workloads::list(&state.workloads, ns, &sel);
            match &rendered {
                _ if ws.is_empty() => RolloutState::Failed(Problem::new(
                    "NoWorkloadsSelected",
                    format!(
                        "agents.selector ({sel}) matches no Deployment or StatefulSet in namespace {ns:?}: label the agent workloads or fix agents.selector"
                    ),
                )),
                None => RolloutState::Blocked,
                Some(r) => {
                    let last = old
                        .last_rollout_time
                        .as_ref()
                        .map(|t| t.0)
                        .max(memo.last_rollout);
                    let plan = rollout::plan(&ws, &r.hash, &spec.agents.rollout, last, now);
                    let (outcomes, failure) = patch(state, ns, &ws, &plan, &r.hash, env).await;
                    let d: Decision = rollout::decide(
                        &plan,
                        &mut ws,
                        &outcomes,
                        &r.hash,
                        profile,
                        &spec.agents.rollout,
                    );
                    if let Some(a) = &d.announce {
                        // Whole seconds, as metav1.Time is stored: the memo must compare equal
                        // to what the API server returns, or every reconcile would write status.
                        let t = Time(
                            jiff::Timestamp::from_second(now.as_second())
                                .expect("a clock reading is in range"),
                        );
                        state.remember(env, |m| m.last_rollout = Some(t.0));
                        last_rollout = Some(t);
                        ctx.event(
                            &env_ref,
                            EventType::Normal,
                            a.reason,
                            "Rollout",
                            a.note.clone(),
                        )
                        .await;
                    }
                    match (d.retry, failure) {
                        (Some(Retry::Error), Some(e)) => return Err(Error::Kube(e)),
                        (Some(_), _) => return Ok(Action::requeue(Duration::from_secs(1))),
                        (None, _) => {}
                    }
                    requeue.extend(d.requeue);
                    d.state
                }
            }
        }
    };

    if let Ok(sel) = &selection {
        state.remember(env, |m| m.active_profile = Some(sel.active.clone()));
    }
    announce_failover(state, env, &selection).await;

    // Status.
    let findings = Findings {
        profile: selection.clone(),
        secret: secret_finding,
        rollout: rollout_state,
        memory,
        network_policy: np_summary,
        secret_name,
        unfit_fallbacks: unfit,
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
    status_writer(&env_ref)
        .write(ctx, &api, name, &old, &new, false)
        .await?;
    Ok(requeue
        .into_iter()
        .min()
        .map(|d| Action::requeue(d.max(Duration::from_millis(200))))
        .unwrap_or_else(|| Action::requeue(RESYNC)))
}

/// Patch the plan's targets; one outcome per target, and the first error.
async fn patch(
    state: &State,
    ns: &str,
    ws: &[rollout::Workload],
    plan: &Plan,
    hash: &str,
    env: &AiEnvironment,
) -> (Vec<PatchOutcome>, Option<kube::Error>) {
    let Plan::Patch { targets, .. } = plan else {
        return (Vec::new(), None);
    };
    let list: Vec<_> = targets
        .iter()
        .map(|i| (ws[*i].kind, ws[*i].name.clone()))
        .collect();
    let memory_label = env.spec.memory.as_ref().map(|m| m.store_ref.as_str());
    let results = workloads::patch_all(&state.ctx.client, ns, &list, hash, memory_label).await;
    let mut failure = None;
    let outcomes = results
        .into_iter()
        .map(|r| match r {
            workloads::Patched::Rolled => PatchOutcome::Rolled,
            workloads::Patched::AlreadyCurrent => PatchOutcome::AlreadyCurrent,
            workloads::Patched::Gone => PatchOutcome::Gone,
            workloads::Patched::Failed(e) => {
                failure.get_or_insert(e);
                PatchOutcome::Failed
            }
        })
        .collect::<Vec<_>>();
    let rolled = outcomes
        .iter()
        .filter(|o| **o == PatchOutcome::Rolled)
        .count();
    state
        .ctx
        .metrics
        .child_writes_inc(CONTROLLER, rolled as u64);
    (outcomes, failure)
}

/// The Event of a failover or a switch back this selection made.
async fn announce_failover(
    state: &State,
    env: &AiEnvironment,
    selection: &Result<Selection, Problem>,
) {
    let Ok(Selection {
        transition: Some(t),
        active,
        failed_over,
        ..
    }) = selection
    else {
        return;
    };
    let after = env.spec.llm.switch_back_after_seconds;
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
                "switched back from fallback {from:?} to LlmProfile {active:?}: it has been Ready for llm.switchBackAfterSeconds={after}"
            ),
        ),
        Transition::SwitchedBack { from, early: true } => (
            EventType::Normal,
            "SwitchedBack",
            format!(
                "switched back from fallback {from:?} to LlmProfile {active:?} before llm.switchBackAfterSeconds={after}: the fallback failed and the primary is Ready"
            ),
        ),
    };
    state
        .ctx
        .event(&env.object_ref(&()), type_, reason, "Failover", note)
        .await;
}
