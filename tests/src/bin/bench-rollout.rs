//! Rollout benchmark: 100 Deployments (one replica each, so their status churns while they roll)
//! selected by one AiEnvironment; change the profile and measure the time until all 100 carry the
//! new config hash (as seen by a watch), and the API writes it took. Baseline, interleaved in the
//! same run with the operator stopped (so it neither competes for the API server nor reacts to the
//! baseline's changes): a plain client applying the same 100 annotation patches, with the same
//! concurrency, as fast as it can. The pods are pinned to a node that does not exist, so the
//! controller-manager churns Deployment and ReplicaSet status without the node running 100 pods.
//!
//! `cargo run --release -p aienv-tests --bin bench-rollout [-- ROUNDS [DEPLOYMENTS]]`
//! (needs the test environment: `scripts/testenv up`). p99 is printed with 100 rounds or more;
//! below that the slowest round is called max.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use aienv::controllers::ai_environment::{
    CONTROLLER,
    rollout::HASH_ANNOTATION,
    workloads::{PATCH_CONCURRENCY, hash_patch},
};
use aienv_tests::{
    agents::{apply_env, apply_profile, create_deployment_with_pod, put_key},
    operator::{self, Which, install_crds},
    testenv::TestEnv,
};
use anyhow::Context as _;
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::apps::v1::Deployment;
use kube::{
    Api, ResourceExt,
    api::{ListParams, Patch, PatchParams},
    runtime::{WatchStreamExt, watcher},
};
use tokio::sync::Notify;

const BASELINE_ANNOTATION: &str = "bench.aienv.orchestr8.io/baseline";

/// A Deployment's (operator hash, baseline value).
type Marks = (Option<String>, Option<String>);

/// Each Deployment's marks, kept current by a watch.
#[derive(Default)]
struct Seen {
    by_name: Mutex<HashMap<String, Marks>>,
    changed: Notify,
}

impl Seen {
    fn all(&self, n: usize, f: impl Fn(&Marks) -> bool) -> bool {
        let m = self.by_name.lock().unwrap();
        m.len() >= n && m.values().filter(|v| f(v)).count() >= n
    }

    /// Wait until `n` Deployments satisfy `f`; the time it took from `start`.
    async fn wait(
        &self,
        n: usize,
        start: Instant,
        f: impl Fn(&Marks) -> bool,
    ) -> anyhow::Result<Duration> {
        let deadline = start + Duration::from_secs(120);
        loop {
            let notified = self.changed.notified();
            if self.all(n, &f) {
                return Ok(start.elapsed());
            }
            anyhow::ensure!(Instant::now() < deadline, "timed out");
            let _ = tokio::time::timeout(Duration::from_millis(200), notified).await;
        }
    }
}

fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut s = samples.to_vec();
    s.sort();
    let idx = ((s.len() as f64 - 1.0) * p).round() as usize;
    s[idx]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let mut args = std::env::args().skip(1);
    let rounds: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(20);
    let count: usize = args.next().map(|a| a.parse()).transpose()?.unwrap_or(100);
    let env = TestEnv::load().context("no test environment: run scripts/testenv up")?;
    let client = env.kube_client().await?;
    install_crds(&client).await?;
    let ns = env.test_namespace(&client, "aienv-bench").await?;
    let deployments: Api<Deployment> = ns.api();

    // Watch every Deployment of the namespace.
    let seen = Arc::new(Seen::default());
    let watch = {
        let seen = seen.clone();
        let api = deployments.clone();
        tokio::spawn(async move {
            let mut s = watcher(api, watcher::Config::default())
                .applied_objects()
                .boxed();
            while let Ok(Some(d)) = s.try_next().await {
                let ann = d
                    .spec
                    .as_ref()
                    .and_then(|s| s.template.metadata.as_ref())
                    .and_then(|m| m.annotations.clone())
                    .unwrap_or_default();
                seen.by_name.lock().unwrap().insert(
                    d.name_any(),
                    (
                        ann.get(HASH_ANNOTATION).cloned(),
                        ann.get(BASELINE_ANNOTATION).cloned(),
                    ),
                );
                seen.changed.notify_waiters();
            }
        })
    };

    println!("creating {count} Deployments in {}", ns.name());
    let names: Vec<String> = (0..count).map(|i| format!("agent-{i:03}")).collect();
    stream::iter(names.clone())
        .map(|n| {
            let ns = &ns;
            let pod = serde_json::json!({
                "nodeSelector": {"bench.aienv.orchestr8.io/no-such-node": "true"},
                "containers": [{"name": "agent", "image": "registry.invalid/agent:1"}],
            });
            async move { create_deployment_with_pod(ns, &n, &[("app", "bench-agent")], 1, pod).await }
        })
        .buffer_unordered(PATCH_CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;
    put_key(&ns, "key", "apiKey", "sk-bench-SECRET").await?;
    let profile = |model: &str| {
        serde_json::json!({
            "provider": "openaiCompatible", "model": model,
            "endpoints": {"anthropic": {"baseUrl": "https://llm.example.com"},
                          "openai": {"baseUrl": "https://llm.example.com/v1", "responses": true}},
            "auth": {"secretRef": {"name": "key", "key": "apiKey"}},
        })
    };
    apply_profile(&ns, "p", profile("model-0")).await?;
    let mut ctrl = operator::start(&client, ns.name(), &[Which::AiEnvironment]);
    apply_env(
        &ns,
        "bench",
        serde_json::json!({
            "llm": {"profileRef": "p", "harnesses": ["claudeCode", "codex"]},
            "agents": {"selector": {"matchLabels": {"app": "bench-agent"}},
                       "rollout": {"minIntervalSeconds": 0}},
            "networkPolicy": {"enabled": false},
        }),
    )
    .await?;
    let first = Instant::now();
    seen.wait(count, first, |(h, _)| h.is_some()).await?;

    println!(
        "initial rollout to {count} Deployments: {:.0} ms",
        ms(first.elapsed())
    );
    tokio::time::sleep(Duration::from_secs(2)).await;

    let generations = || async {
        let list = deployments.list(&ListParams::default()).await?;
        anyhow::Ok(
            list.items
                .iter()
                .map(|d| d.metadata.generation.unwrap_or(0))
                .sum::<i64>(),
        )
    };

    let mut operator_times = Vec::new();
    let mut baseline_times = Vec::new();
    let mut writes_per_change = Vec::new();
    let mut failed_reconciles = 0;
    let mut previous = seen
        .by_name
        .lock()
        .unwrap()
        .values()
        .next()
        .and_then(|v| v.0.clone());
    for round in 1..=rounds {
        // Operator: one profile edit.
        let writes0 = ctrl.ctx.metrics.child_writes(CONTROLLER);
        let gen0 = generations().await?;
        let start = Instant::now();
        apply_profile(&ns, "p", profile(&format!("model-{round}"))).await?;
        let prev = previous.clone();
        let took = seen
            .wait(count, start, |(h, _)| h.is_some() && *h != prev)
            .await?;
        operator_times.push(took);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let writes = ctrl.ctx.metrics.child_writes(CONTROLLER) - writes0;
        let gens = generations().await? - gen0;
        writes_per_change.push((writes, gens));
        previous = seen
            .by_name
            .lock()
            .unwrap()
            .values()
            .next()
            .and_then(|v| v.0.clone());

        // Baseline: the operator stopped, the same 100 patches from a plain client, same
        // concurrency.
        failed_reconciles += ctrl.ctx.metrics.failures(CONTROLLER, "KubeError");
        ctrl.stop().await;
        let value = format!("round-{round}");
        let start = Instant::now();
        let params = PatchParams::apply("bench-baseline").force();
        stream::iter(names.iter())
            .map(|n| {
                let api = deployments.clone();
                let params = params.clone();
                let mut patch = hash_patch(
                    aienv::controllers::ai_environment::rollout::Kind::Deployment,
                    n,
                    &value,
                    None,
                );
                let ann = &mut patch["spec"]["template"]["metadata"]["annotations"];
                *ann = serde_json::json!({ BASELINE_ANNOTATION: value });
                async move { api.patch(n, &params, &Patch::Apply(&patch)).await }
            })
            .buffer_unordered(PATCH_CONCURRENCY)
            .try_collect::<Vec<_>>()
            .await?;
        let v = value.clone();
        let took = seen
            .wait(count, start, move |(_, b)| b.as_deref() == Some(v.as_str()))
            .await?;
        baseline_times.push(took);
        ctrl = operator::start(&client, ns.name(), &[Which::AiEnvironment]);
        // Its first reconcile finds every hash in place and writes nothing.
        let started = Instant::now();
        while ctrl.ctx.metrics.reconciles(CONTROLLER) == 0 {
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(60),
                "operator did not start"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
        println!(
            "round {round:2}: operator {:7.1} ms ({} writes, {} template changes)   baseline {:7.1} ms",
            ms(operator_times[round - 1]),
            writes_per_change[round - 1].0,
            writes_per_change[round - 1].1,
            ms(took)
        );
    }

    let tail = if rounds >= 100 { 0.99 } else { 1.0 };
    let tail_name = if rounds >= 100 { "p99" } else { "max" };
    let (op50, op99) = (
        percentile(&operator_times, 0.5),
        percentile(&operator_times, tail),
    );
    let (bl50, bl99) = (
        percentile(&baseline_times, 0.5),
        percentile(&baseline_times, tail),
    );
    println!();
    println!(
        "{count} Deployments x 1 replica, {rounds} changes each, concurrency {PATCH_CONCURRENCY}; baseline with the operator stopped"
    );
    println!(
        "operator  p50 {:7.1} ms   {tail_name} {:7.1} ms",
        ms(op50),
        ms(op99)
    );
    println!(
        "baseline  p50 {:7.1} ms   {tail_name} {:7.1} ms",
        ms(bl50),
        ms(bl99)
    );
    println!(
        "ratio     p50 {:.2}x       {tail_name} {:.2}x   (goal <= 1.5x, operator {tail_name} <= 1000 ms)",
        op50.as_secs_f64() / bl50.as_secs_f64(),
        op99.as_secs_f64() / bl99.as_secs_f64()
    );
    let exact = writes_per_change.iter().all(|(_, g)| *g == count as i64);
    // Writes are counted in this process; an operator running elsewhere against the same cluster
    // (leader or not) would do some of them. Template changes count every writer.
    println!(
        "writes per change by this process: {:?} (expected {} = 1 per target + 1 Secret)",
        writes_per_change.iter().map(|w| w.0).collect::<Vec<_>>(),
        count + 1
    );
    println!(
        "pod-template changes per change: {:?}; exactly one per target every time: {exact}",
        writes_per_change.iter().map(|w| w.1).collect::<Vec<_>>()
    );
    println!(
        "failed reconciles (KubeError): {}",
        failed_reconciles + ctrl.ctx.metrics.failures(CONTROLLER, "KubeError")
    );
    ctrl.stop().await;
    watch.abort();
    ns.cleanup().await?;
    Ok(())
}
