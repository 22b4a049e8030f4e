//! A managed MemoryStore whose PostgreSQL really runs: StatefulSet → pod on the test node (our
//! PostgreSQL 17 + pgvector image) → the operator connects through the Service's ClusterIP,
//! migrates and reports Ready; the credentials and the data survive the pod's deletion.

use std::time::Duration;

use aienv::{
    api::memory_store::MemoryStore,
    memory::{Memories, MemoryType, NewMemory},
};
use aienv_tests::{
    agents::{pod_ready, ready_pod_with_hash},
    conditions::{condition, wait_condition},
    operator::{PodScenario, Which, pod_scenario},
    pod_stores::{agent_pool, login_pool, secret_text},
    testenv::wait_for,
};
use k8s_openapi::api::{
    batch::v1::Job,
    core::v1::{Pod, Secret, Service},
};
use kube::{
    Api,
    api::{DeleteParams, ListParams, LogParams, Patch, PatchParams, PostParams},
};

/// Pods start in seconds here; the margin is for a loaded machine.
const WAIT: Duration = Duration::from_secs(180);

async fn init_log(pods: &Api<Pod>, pod: &str) -> anyhow::Result<String> {
    let lp = LogParams {
        container: Some("init-data".into()),
        ..Default::default()
    };
    Ok(pods.logs(pod, &lp).await?)
}

/// Runs `pg_dump` of store `mem` in a Job from the aienv image; returns the pod's log.
async fn dump_job(ns: &aienv_tests::testenv::TestNamespace, image: &str) -> anyhow::Result<String> {
    let job = serde_json::json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "dump"},
        "spec": {"backoffLimit": 0, "template": {"spec": {
            "restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
            "automountServiceAccountToken": false,
            "securityContext": {"runAsNonRoot": true, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [{
                "name": "dump", "image": image, "imagePullPolicy": "IfNotPresent",
                // As the owner (a backup is the owner's job; the agents' role may not read the
                // operator's bookkeeping tables), of the store's schema only.
                "command": ["sh", "-c", "pg_dump --version && pg_dump -Fc -Z0 -n \"$SCHEMA\" -f /tmp/dump && pg_restore -l /tmp/dump | grep 'TABLE DATA'"],
                "env": [
                    {"name": "PGHOST", "valueFrom": {"secretKeyRef": {"name": "mem-app", "key": "host"}}},
                    {"name": "PGDATABASE", "valueFrom": {"secretKeyRef": {"name": "mem-app", "key": "database"}}},
                    {"name": "SCHEMA", "valueFrom": {"secretKeyRef": {"name": "mem-app", "key": "schema"}}},
                    {"name": "PGUSER", "valueFrom": {"secretKeyRef": {"name": "mem-credentials", "key": "username"}}},
                    {"name": "PGPASSWORD", "valueFrom": {"secretKeyRef": {"name": "mem-credentials", "key": "password"}}},
                ],
                "securityContext": {"allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                                    "capabilities": {"drop": ["ALL"]}},
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}],
            }],
            "volumes": [{"name": "tmp", "emptyDir": {}}],
        }}},
    });
    let jobs: Api<Job> = ns.api();
    jobs.create(&PostParams::default(), &serde_json::from_value(job)?)
        .await?;
    let done = wait_for(
        WAIT,
        "Job dump finished (is the aienv image loaded? scripts/testenv image BINARY)",
        || async {
            let s = jobs.get("dump").await?.status.unwrap_or_default();
            Ok((s.succeeded.unwrap_or(0) + s.failed.unwrap_or(0) > 0).then_some(s))
        },
    )
    .await?;
    let pods: Api<Pod> = ns.api();
    let pod = pods
        .list(&ListParams::default().labels("job-name=dump"))
        .await?
        .items
        .remove(0);
    let log = pods
        .logs(&pod.metadata.name.unwrap(), &LogParams::default())
        .await?;
    anyhow::ensure!(done.succeeded == Some(1), "the dump Job failed:\n{log}");
    Ok(log)
}

#[tokio::test]
async fn managed_store_runs_migrates_and_keeps_its_data() -> anyhow::Result<()> {
    let Some(PodScenario { node, ns, ops, .. }) =
        pod_scenario("memstore-pods", &[Which::MemoryStore]).await?
    else {
        return Ok(());
    };
    let api: Api<MemoryStore> = ns.api();
    let store = serde_json::json!({
        "apiVersion": "aienv.orchestr8.io/v1alpha1", "kind": "MemoryStore",
        "metadata": {"name": "mem"},
        "spec": {"mode": "managed", "deletionPolicy": "Delete",
            "embedding": {"dimensions": 4},
            "managed": {"image": node.pg_image, "storage": {"size": "1Gi"}}},
    });
    api.patch(
        "mem",
        &PatchParams::apply("aienv-tests").force(),
        &Patch::Apply(&store),
    )
    .await?;

    // The StatefulSet's pod starts from our image, the operator reaches it and migrates.
    let s = wait_condition(&api, WAIT, "mem", "Ready", "True", "StoreReady").await?;
    let st = s.status.clone().unwrap();
    assert!(st.schema_version.unwrap_or_default() >= 4, "{st:?}");
    assert!(
        st.pgvector_version
            .as_deref()
            .unwrap_or("")
            .starts_with("0.8"),
        "{st:?}"
    );
    assert_eq!(condition(&s, "SchemaReady").unwrap().0, "True");
    let pods: Api<Pod> = ns.api();
    let first = pods.get("mem-0").await?;
    assert!(pod_ready(&first));
    assert!(
        init_log(&pods, "mem-0").await?.contains("initialised"),
        "the init step made the data directory"
    );

    // An agent's connection works and its memory is stored.
    let secrets: Api<Secret> = ns.api();
    let services: Api<Service> = ns.api();
    let password = secret_text(&secrets.get("mem-credentials").await?, "password");
    let pool = agent_pool(&secrets, &services, "mem").await?;
    let mem = Memories::open(pool.clone()).await?;
    let mut m = NewMemory::new("survives pod deletion", MemoryType::Agent);
    m.embedding = Some(vec![0.0, 1.0, 0.0, 0.0]);
    mem.store(&m).await?;
    pool.close().await;

    // The aienv image dumps the store from a pod: restricted, read-only root, by the Service's
    // DNS name from the connection Secret (cluster DNS and kube-proxy at work).
    let dump = dump_job(&ns, &node.aienv_image).await?;
    assert!(dump.contains("pg_dump (PostgreSQL) 17"), "{dump}");
    assert!(dump.contains("TABLE DATA"), "{dump}");
    assert!(dump.contains("memories"), "{dump}");

    // The pod goes; the StatefulSet brings a new one on the same volume.
    pods.delete("mem-0", &DeleteParams::default()).await?;
    let first_uid = first.metadata.uid.clone();
    wait_for(WAIT, "a new Ready mem-0", || async {
        Ok(pods
            .get_opt("mem-0")
            .await?
            .filter(|p| p.metadata.uid != first_uid && pod_ready(p))
            .map(|_| ()))
    })
    .await?;
    assert!(
        init_log(&pods, "mem-0").await?.contains("exists"),
        "the second pod found the data directory"
    );
    assert_eq!(
        secret_text(&secrets.get("mem-credentials").await?, "password"),
        password,
        "credentials are never regenerated"
    );
    let count = wait_for(WAIT, "the stored memory after the restart", || async {
        let pool = match agent_pool(&secrets, &services, "mem").await {
            Ok(p) => p,
            Err(_) => return Ok(None),
        };
        let n: i64 = sqlx::query_scalar("SELECT count(*) FROM memories WHERE content = $1")
            .bind("survives pod deletion")
            .fetch_one(&pool)
            .await?;
        pool.close().await;
        Ok(Some(n))
    })
    .await?;
    assert_eq!(count, 1, "the data outlived the pod");
    wait_condition(&api, WAIT, "mem", "Ready", "True", "StoreReady").await?;

    ops.stop().await;
    ns.cleanup().await
}

/// Counts the stored memories with `content`, connecting as the `<store>-app` Secret says.
async fn count_memories(
    secrets: &Api<Secret>,
    services: &Api<Service>,
    store: &str,
    content: &str,
) -> anyhow::Result<Option<i64>> {
    let Ok(pool) = agent_pool(secrets, services, store).await else {
        return Ok(None);
    };
    let n = sqlx::query_scalar("SELECT count(*) FROM memories WHERE content = $1")
        .bind(content)
        .fetch_one(&pool)
        .await;
    pool.close().await;
    Ok(n.ok())
}

#[tokio::test]
async fn retained_store_comes_back_with_its_password_and_a_rotated_password_heals()
-> anyhow::Result<()> {
    let Some(PodScenario { node, ns, ops, .. }) =
        pod_scenario("memstore-retain", &[Which::MemoryStore]).await?
    else {
        return Ok(());
    };
    let api: Api<MemoryStore> = ns.api();
    let store = serde_json::json!({
        "apiVersion": "aienv.orchestr8.io/v1alpha1", "kind": "MemoryStore",
        "metadata": {"name": "kept"},
        "spec": {"mode": "managed", "deletionPolicy": "Retain", "embedding": {"dimensions": 4},
            "managed": {"image": node.pg_image, "storage": {"size": "1Gi"}}},
    });
    let pp = PatchParams::apply("aienv-tests").force();
    api.patch("kept", &pp, &Patch::Apply(&store)).await?;
    wait_condition(&api, WAIT, "kept", "Ready", "True", "StoreReady").await?;
    let secrets: Api<Secret> = ns.api();
    let services: Api<Service> = ns.api();
    let creds = secrets.get("kept-credentials").await?;
    assert!(
        creds.metadata.owner_references.is_none(),
        "Retain: the credentials must not be garbage-collected with the store"
    );
    let password = secret_text(&creds, "password");
    let pool = agent_pool(&secrets, &services, "kept").await?;
    Memories::open(pool.clone())
        .await?
        .store(&NewMemory::new("kept across stores", MemoryType::Agent))
        .await?;
    pool.close().await;

    // The store goes; its credentials and its volume stay; a new store of that name logs in.
    api.delete("kept", &DeleteParams::default()).await?;
    let sts: Api<k8s_openapi::api::apps::v1::StatefulSet> = ns.api();
    wait_for(WAIT, "store and StatefulSet gone", || async {
        Ok(
            (api.get_opt("kept").await?.is_none() && sts.get_opt("kept").await?.is_none())
                .then_some(()),
        )
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await; // the garbage collector's turn
    assert_eq!(
        secret_text(&secrets.get("kept-credentials").await?, "password"),
        password
    );
    api.patch("kept", &pp, &Patch::Apply(&store)).await?;
    wait_condition(&api, WAIT, "kept", "Ready", "True", "StoreReady").await?;
    let n = wait_for(WAIT, "the old data through the new store", || async {
        count_memories(&secrets, &services, "kept", "kept across stores").await
    })
    .await?;
    assert_eq!(n, 1);

    // A rotated owner password restarts the pod, whose init step makes it the database's.
    let rotated = serde_json::json!({"stringData": {"password": "Rotated-password-42"}});
    secrets
        .patch(
            "kept-credentials",
            &PatchParams::default(),
            &Patch::Merge(&rotated),
        )
        .await?;
    let n = wait_for(WAIT, "owner login with the rotated password", || async {
        let Ok(pool) = login_pool(
            &secrets,
            &services,
            "kept",
            Some(("aienv", "Rotated-password-42")),
        )
        .await
        else {
            return Ok(None);
        };
        let n = sqlx::query_scalar::<_, i64>("SELECT count(*) FROM aienv_kept.memories")
            .fetch_one(&pool)
            .await;
        pool.close().await;
        Ok(n.ok())
    })
    .await?;
    assert_eq!(n, 1);
    let pods: Api<Pod> = ns.api();
    assert!(init_log(&pods, "kept-0").await?.contains("password of"));
    wait_condition(&api, WAIT, "kept", "Ready", "True", "StoreReady").await?;
    // A rotated agents' password is made the role's, and `kept-app` follows.
    secrets
        .patch(
            "kept-agent",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"stringData": {"password": "Agent-password-43"}})),
        )
        .await?;
    let n = wait_for(WAIT, "agent login with the rotated password", || async {
        if secret_text(&secrets.get("kept-app").await?, "password") != "Agent-password-43" {
            return Ok(None);
        }
        count_memories(&secrets, &services, "kept", "kept across stores").await
    })
    .await?;
    assert_eq!(n, 1);

    ops.stop().await;
    ns.cleanup().await
}

#[tokio::test]
async fn agents_of_a_bound_environment_pass_the_store_policy_and_roll_on_a_new_password()
-> anyhow::Result<()> {
    use aienv_tests::agents::{apply_env, apply_profile, create_deployment_with_pod, put_key};
    let Some(PodScenario { node, ns, ops, .. }) = pod_scenario(
        "memstore-bound",
        &[Which::MemoryStore, Which::AiEnvironment],
    )
    .await?
    else {
        return Ok(());
    };
    let api: Api<MemoryStore> = ns.api();
    let store = serde_json::json!({
        "apiVersion": "aienv.orchestr8.io/v1alpha1", "kind": "MemoryStore",
        "metadata": {"name": "mem"},
        "spec": {"mode": "managed", "deletionPolicy": "Delete", "embedding": {"dimensions": 4},
            "managed": {"image": node.pg_image, "storage": {"size": "1Gi"}}},
    });
    api.patch(
        "mem",
        &PatchParams::apply("aienv-tests").force(),
        &Patch::Apply(&store),
    )
    .await?;
    put_key(&ns, "k", "apiKey", "sk-bound-SECRET").await?;
    apply_profile(
        &ns,
        "p",
        serde_json::json!({"provider": "openai", "baseUrl": "https://llm.example.com/v1", "model": "m",
            "auth": {"secretRef": {"name": "k", "key": "apiKey"}}}),
    )
    .await?;
    let pod = serde_json::json!({
        "terminationGracePeriodSeconds": 1,
        "containers": [{"name": "agent", "image": node.pg_image, "imagePullPolicy": "IfNotPresent",
            "command": ["sleep", "3600"]}],
    });
    create_deployment_with_pod(&ns, "agent", &[("app", "agent")], 1, pod).await?;
    apply_env(
        &ns,
        "dev",
        serde_json::json!({
            "llm": {"profileRef": "p", "harnesses": ["generic"]},
            "agents": {"selector": {"matchLabels": {"app": "agent"}}, "rollout": {"minIntervalSeconds": 0}},
            "memory": {"storeRef": "mem"},
        }),
    )
    .await?;
    wait_condition(&api, WAIT, "mem", "Ready", "True", "StoreReady").await?;
    let envs: Api<aienv::api::ai_environment::AiEnvironment> = ns.api();
    let rolled = |hash: Option<String>| {
        let envs = envs.clone();
        async move {
            wait_for(WAIT, "dev rolled out with memory Ready", || async {
                let e = envs.get("dev").await?;
                let h = e.status.as_ref().and_then(|s| s.rendered_hash.clone());
                let ok = condition(&e, "RolledOut").is_some_and(|c| c.0 == "True")
                    && condition(&e, "MemoryReady").is_some_and(|c| c.0 == "True")
                    && h.is_some()
                    && h != hash;
                Ok(ok.then_some(h.unwrap()))
            })
            .await
        }
    };
    let first = rolled(None).await?;
    let agent = ready_pod_with_hash(&ns, "agent", &first, WAIT).await?;

    // The store's NetworkPolicy admits what the environment stamps on its agents.
    let np = ns
        .api::<k8s_openapi::api::networking::v1::NetworkPolicy>()
        .get("mem-db")
        .await?;
    let from = np.spec.unwrap().ingress.unwrap()[0].from.clone().unwrap();
    let labels = agent.metadata.labels.clone().unwrap_or_default();
    assert!(
        from.iter().any(|peer| peer.namespace_selector.is_none()
            && peer
                .pod_selector
                .as_ref()
                .and_then(|s| s.match_labels.as_ref())
                .is_some_and(|m| m.iter().all(|(k, v)| labels.get(k) == Some(v)))),
        "no ingress peer of mem-db selects the agent pod (labels {labels:?}, peers {from:?})"
    );

    // A new agents' password reaches the agents: their config hash changes and they roll.
    let secrets: Api<Secret> = ns.api();
    secrets
        .patch(
            "mem-agent",
            &PatchParams::default(),
            &Patch::Merge(serde_json::json!({"stringData": {"password": "Another-password-7"}})),
        )
        .await?;
    let second = rolled(Some(first.clone())).await?;
    assert_ne!(first, second);
    ready_pod_with_hash(&ns, "agent", &second, WAIT).await?;
    assert_eq!(
        secret_text(&secrets.get("mem-app").await?, "password"),
        "Another-password-7"
    );

    ops.stop().await;
    ns.cleanup().await
}
