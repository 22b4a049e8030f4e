//! Leader election on a real Lease: exactly one replica runs the controllers, a stopped leader
//! hands over, and a leader whose lease is taken stops reconciling promptly.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use aienv::runtime::{OperatorArgs, leader::run_while_leader};
use aienv_tests::testenv::{require_env, wait_for};
use k8s_openapi::{api::coordination::v1::Lease, apimachinery::pkg::apis::meta::v1::MicroTime};
use kube::{
    Api,
    api::{Patch, PatchParams},
};
use tokio::sync::watch;

struct Replica {
    running: Arc<AtomicBool>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
}

fn args(ns: &str, lease: &str, identity: &str) -> OperatorArgs {
    OperatorArgs {
        http_addr: "127.0.0.1:0".parse().unwrap(),
        leader_elect: true,
        leader_election_namespace: Some(ns.into()),
        leader_election_identity: Some(identity.into()),
        leader_election_lease: lease.into(),
        lease_duration_seconds: 4,
        watch_namespace: None,
        crd_wait_seconds: 10,
        job_image: aienv::controller::context::DEFAULT_JOB_IMAGE.into(),
    }
}

/// A replica whose "controllers" just mark themselves running until leadership is lost.
fn replica(
    client: kube::Client,
    args: OperatorArgs,
    concurrent: Arc<AtomicUsize>,
    max_seen: Arc<AtomicUsize>,
) -> Replica {
    let running = Arc::new(AtomicBool::new(false));
    let (stop, stop_rx) = watch::channel(false);
    let flag = running.clone();
    let task = tokio::spawn(async move {
        run_while_leader(client, &args, stop_rx, move |lost| {
            let flag = flag.clone();
            let concurrent = concurrent.clone();
            let max_seen = max_seen.clone();
            async move {
                let now = concurrent.fetch_add(1, Ordering::SeqCst) + 1;
                max_seen.fetch_max(now, Ordering::SeqCst);
                flag.store(true, Ordering::SeqCst);
                lost.await;
                flag.store(false, Ordering::SeqCst);
                concurrent.fetch_sub(1, Ordering::SeqCst);
            }
        })
        .await
    });
    Replica {
        running,
        stop,
        task,
    }
}

#[tokio::test]
async fn one_leader_at_a_time_with_handover_and_prompt_stop_on_loss() -> anyhow::Result<()> {
    let Some(env) = require_env() else {
        return Ok(());
    };
    let client = env.kube_client().await?;
    let ns = env.test_namespace(&client, "leader").await?;
    let concurrent = Arc::new(AtomicUsize::new(0));
    let max_seen = Arc::new(AtomicUsize::new(0));
    let a = replica(
        client.clone(),
        args(ns.name(), "aienv-test", "replica-a"),
        concurrent.clone(),
        max_seen.clone(),
    );
    let b = replica(
        client.clone(),
        args(ns.name(), "aienv-test", "replica-b"),
        concurrent.clone(),
        max_seen.clone(),
    );

    wait_for(Duration::from_secs(30), "a leader", || async {
        Ok((a.running.load(Ordering::SeqCst) || b.running.load(Ordering::SeqCst)).then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        max_seen.load(Ordering::SeqCst),
        1,
        "two replicas ran controllers at once"
    );
    let (leader, follower) = if a.running.load(Ordering::SeqCst) {
        (a, b)
    } else {
        (b, a)
    };
    assert!(!follower.running.load(Ordering::SeqCst));

    // Someone else takes the lease: the leader must stop its controllers within about one lease
    // duration, without waiting for the process to end.
    let leases: Api<Lease> = ns.api();
    let now = serde_json::to_value(MicroTime(jiff::Timestamp::now()))?;
    let steal = serde_json::json!({
        "apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
        "metadata": {"name": "aienv-test"},
        "spec": {"holderIdentity": "intruder", "leaseDurationSeconds": 4,
                 "acquireTime": now, "renewTime": now},
    });
    leases
        .patch(
            "aienv-test",
            &PatchParams::apply("intruder").force(),
            &Patch::Apply(&steal),
        )
        .await?;
    wait_for(
        Duration::from_secs(15),
        "the old leader to stop",
        || async { Ok((!leader.running.load(Ordering::SeqCst)).then_some(())) },
    )
    .await?;

    // The intruder never renews; a replica takes over again. Then the current leader shuts down
    // and the other one takes over.
    wait_for(
        Duration::from_secs(30),
        "a new leader after the intruder",
        || async {
            Ok(
                (leader.running.load(Ordering::SeqCst) || follower.running.load(Ordering::SeqCst))
                    .then_some(()),
            )
        },
    )
    .await?;
    let (current, other) = if leader.running.load(Ordering::SeqCst) {
        (leader, follower)
    } else {
        (follower, leader)
    };
    current.stop.send(true)?;
    current.task.await??;
    wait_for(
        Duration::from_secs(30),
        "handover after the leader stopped",
        || async { Ok(other.running.load(Ordering::SeqCst).then_some(())) },
    )
    .await?;
    assert_eq!(
        max_seen.load(Ordering::SeqCst),
        1,
        "two replicas ran controllers at once"
    );
    other.stop.send(true)?;
    other.task.await??;
    ns.cleanup().await
}
