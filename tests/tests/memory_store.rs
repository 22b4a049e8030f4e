//! The MemoryStore controller on the real control plane and the harness PostgreSQL: external mode
//! end to end, managed children, stable credentials, ReindexRequired, deletion.

use std::time::Duration;

use aienv::{
    api::memory_store::{MemoryStore, StoreMode},
    controllers::memory_store::{CONTROLLER, FINALIZER},
    memory::{Memories, MemoryType, NewMemory},
};
use aienv_tests::{
    conditions::condition,
    operator::{self, Scenario, Which, scenario},
    stores::{
        ExternalScenario, WAIT, apply_store, delete_and_wait, events_text, external_scenario,
        put_secret, table_exists, touch, wait_condition,
    },
    testenv::wait_for,
};
use k8s_openapi::api::{
    apps::v1::StatefulSet,
    core::v1::{PersistentVolumeClaim, Secret, Service},
    networking::v1::NetworkPolicy,
};
use kube::Api;

/// A tracing writer keeping everything in memory.
#[derive(Clone, Default)]
struct LogCapture(std::sync::Arc<std::sync::Mutex<Vec<u8>>>);

impl LogCapture {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
}

impl std::io::Write for LogCapture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for LogCapture {
    type Writer = LogCapture;
    fn make_writer(&'a self) -> Self::Writer {
        self.clone()
    }
}

/// The process-wide log capture, installed on first use.
fn captured_logs() -> LogCapture {
    static LOGS: std::sync::OnceLock<LogCapture> = std::sync::OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = LogCapture::default();
        tracing::subscriber::set_global_default(
            tracing_subscriber::fmt()
                .with_env_filter("debug")
                .with_writer(logs.clone())
                .with_ansi(false)
                .finish(),
        )
        .expect("no other global subscriber in this test binary");
        logs
    })
    .clone()
}

#[tokio::test]
async fn external_mode_end_to_end() -> anyhow::Result<()> {
    // Every log line of this test binary: a process-wide subscriber, because tracing's per-callsite
    // interest cache makes a thread-local one miss events that other tests' threads reached first.
    let logs = captured_logs();
    let Some(ExternalScenario {
        ns, db, ops, api, ..
    }) = external_scenario("memstore-ext").await?
    else {
        return Ok(());
    };
    let password = url::Url::parse(&db.url)?.password().unwrap().to_string();

    apply_store(
        &api,
        "mem",
        serde_json::json!({"mode": "external", "external": {"connectionSecretRef": {"name": "pg", "key": "uri"}},
            "embedding": {"dimensions": 4}, "deletionPolicy": "Delete"}),
    )
    .await?;
    wait_condition(&api, "mem", "Ready", "True", "StoreReady").await?;
    // The index builds in the background; the store is usable meanwhile.
    let s = wait_condition(&api, "mem", "IndexReady", "True", "IndexBuilt").await?;
    for t in ["DatabaseReady", "SchemaReady", "IndexReady", "Ready"] {
        assert_eq!(condition(&s, t).unwrap().0, "True", "{t}");
    }
    assert_eq!(condition(&s, "ReindexRequired").unwrap().0, "False");
    let st = s.status.clone().unwrap();
    assert_eq!(st.schema_version, Some(6));
    assert!(st.pgvector_version.unwrap().starts_with("0.8"));
    let counts = st.counts.unwrap();
    assert_eq!((counts.memories, counts.pending_embeddings), (0, 0));
    let endpoint = st.endpoint.unwrap();
    assert_eq!(endpoint.secret_name, "mem-app");
    assert_eq!(endpoint.host, "127.0.0.1");
    assert!(
        s.metadata
            .finalizers
            .unwrap_or_default()
            .contains(&FINALIZER.to_string())
    );

    // The connection Secret agents get: their own role, never the owner's login.
    assert_eq!(endpoint.schema.as_deref(), Some("aienv_mem"));
    let app = ns.api::<Secret>().get("mem-app").await?;
    let data = app.data.unwrap();
    let field = |k: &str| String::from_utf8(data[k].0.clone()).unwrap();
    for k in [
        "host", "port", "database", "schema", "user", "password", "uri",
    ] {
        assert!(data.contains_key(k), "{k}");
    }
    assert_ne!(field("password"), password);
    assert!(
        field("user").starts_with("aienv_mem_agent_"),
        "{}",
        field("user")
    );
    assert_eq!(field("schema"), "aienv_mem");
    assert_eq!(app.metadata.owner_references.unwrap()[0].name, "mem");
    let agent = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&field("uri"))
        .await?;
    // The URI alone finds the store's tables (search_path rides in it), and DML works.
    let as_agent = Memories::open(agent.clone()).await?;
    let mut m = NewMemory::new("written by an agent", MemoryType::Agent);
    m.embedding = Some(vec![0.0, 1.0, 0.0, 0.0]);
    let id = as_agent.store(&m).await?;
    sqlx::query("DELETE FROM memories WHERE id = $1")
        .bind(id)
        .execute(&agent)
        .await?;
    // No DDL, no extensions, no server programs: each is refused for lack of privilege.
    for sql in [
        "DROP TABLE memories",
        "CREATE TABLE aienv_mem.sneaky (x int)",
        "CREATE EXTENSION IF NOT EXISTS pg_trgm",
        "COPY (SELECT 1) TO PROGRAM 'true'",
        "ALTER TABLE memories ADD COLUMN y int",
        "TRUNCATE memories",
    ] {
        let err = sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&agent)
            .await
            .expect_err(sql);
        let code = err
            .as_database_error()
            .and_then(|d| d.code())
            .map(|c| c.to_string());
        assert_eq!(code.as_deref(), Some("42501"), "{sql}: {err}");
    }
    agent.close().await;

    // One Event per migration (whichever operator replica applied it).
    let events = wait_for(WAIT, "an Event per migration", || async {
        let ev = events_text(&ns, "mem").await?;
        let mut versions: Vec<i64> = ev
            .iter()
            .filter(|(r, _)| r == "MigrationApplied")
            .filter_map(|(_, n)| n.strip_prefix("applied schema migration "))
            .filter_map(|n| n.split(' ').next()?.parse().ok())
            .collect();
        versions.sort();
        let every: Vec<i64> = (1..=aienv::memory::schema::latest_version()).collect();
        Ok((versions == every).then_some(ev.clone()))
    })
    .await?;
    let everything = format!("{events:?} {:?}", api.get("mem").await?.status);
    assert!(
        !everything.contains(&password),
        "a password leaked into status or events"
    );

    // Counts follow the data.
    let owner_pool = db.pool_on("aienv_mem", 2).await?;
    let mem = Memories::open(owner_pool.clone()).await?;
    let mut m = NewMemory::new("embedded", MemoryType::Agent);
    m.embedding = Some(vec![1.0, 0.0, 0.0, 0.0]);
    mem.store(&m).await?;
    mem.store(&NewMemory::new("pending", MemoryType::Rag))
        .await?;
    touch(&api, "mem", "1").await?;
    wait_for(WAIT, "counts 2/1", || async {
        let s = api.get("mem").await?;
        let c = s.status.and_then(|s| s.counts).unwrap_or_default();
        Ok((c.memories == 2 && c.pending_embeddings == 1).then_some(()))
    })
    .await?;
    // A row the workers gave up on counts as failed, not pending.
    sqlx::query("UPDATE memories SET embed_failed_at = now(), embed_error = 'rejected' WHERE embedding IS NULL")
        .execute(&owner_pool)
        .await?;
    touch(&api, "mem", "1b").await?;
    wait_for(WAIT, "counts 2/0, 1 failed", || async {
        let s = api.get("mem").await?;
        let c = s.status.and_then(|s| s.counts).unwrap_or_default();
        Ok(
            (c.memories == 2 && c.pending_embeddings == 0 && c.failed_embeddings == 1)
                .then_some(()),
        )
    })
    .await?;

    // Steady state: reconciles without status writes. First let reconciles already queued by the
    // counts update finish (one may still be working from a watch cache a write behind).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let writes = ops.ctx.metrics.status_writes(CONTROLLER);
    let reconciles = ops.ctx.metrics.reconciles(CONTROLLER);
    touch(&api, "mem", "2").await?;
    wait_for(WAIT, "another reconcile", || async {
        Ok((ops.ctx.metrics.reconciles(CONTROLLER) > reconciles).then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(ops.ctx.metrics.status_writes(CONTROLLER), writes);

    // A dimension change: ReindexRequired, nothing dropped.
    apply_store(
        &api,
        "mem",
        serde_json::json!({"mode": "external", "external": {"connectionSecretRef": {"name": "pg", "key": "uri"}},
            "embedding": {"dimensions": 8}, "deletionPolicy": "Delete"}),
    )
    .await?;
    let s = wait_condition(&api, "mem", "ReindexRequired", "True", "EmbeddingChanged").await?;
    assert!(
        condition(&s, "ReindexRequired")
            .unwrap()
            .2
            .contains("dimensions 4 -> 8")
    );
    assert_eq!(condition(&s, "Ready").unwrap().1, "ReindexRequired");
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM aienv_mem.memories")
        .fetch_one(&db.pool)
        .await?;
    assert_eq!(n, 2);

    // A wrong password: the failure is reported without the URI or either password.
    let wrong = db.url.replacen(&password, "not-the-password-x9", 1);
    put_secret(&ns, "pg-wrong", &[("uri", &wrong)]).await?;
    apply_store(
        &api,
        "wrong",
        serde_json::json!({"mode": "external", "external": {"connectionSecretRef": {"name": "pg-wrong", "key": "uri"}}}),
    )
    .await?;
    let s = wait_condition(
        &api,
        "wrong",
        "DatabaseReady",
        "False",
        "DatabaseUnreachable",
    )
    .await?;
    let msg = condition(&s, "DatabaseReady").unwrap().2;
    assert!(msg.contains("password authentication failed"), "{msg}");
    let text = logs.text();
    assert!(text.contains("reconcile"), "logs were captured");
    for secret in [password.as_str(), "not-the-password-x9"] {
        assert!(!text.contains(secret), "a password leaked into the logs");
        assert!(!format!("{s:?}").contains(secret));
        assert!(!format!("{:?}", events_text(&ns, "wrong").await?).contains(secret));
    }
    delete_and_wait(&api, "wrong").await?;

    // deletionPolicy: Delete drops the store's schema and role, never the database.
    let role = field("user");
    delete_and_wait(&api, "mem").await?;
    assert!(!table_exists(&db.pool, "aienv_mem.memories").await?);
    assert!(!table_exists(&db.pool, "aienv_mem.aienv_schema_migrations").await?);
    let left: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM pg_namespace WHERE nspname = 'aienv_mem') + (SELECT count(*) FROM pg_roles WHERE rolname = $1)",
    )
    .bind(&role)
    .fetch_one(&db.pool)
    .await?;
    assert_eq!(left, 0, "schema and agents' role are gone");
    let still: i64 = sqlx::query_scalar("SELECT 1::bigint")
        .fetch_one(&db.pool)
        .await?;
    assert_eq!(still, 1);

    ops.stop().await;
    ns.cleanup().await?;
    db.cleanup().await
}

#[tokio::test]
async fn external_retain_keeps_data_and_invalid_stores_still_delete() -> anyhow::Result<()> {
    let Some(ExternalScenario {
        ns, db, ops, api, ..
    }) = external_scenario("memstore-ret").await?
    else {
        return Ok(());
    };

    apply_store(
        &api,
        "kept",
        serde_json::json!({"mode": "external", "external": {"connectionSecretRef": {"name": "pg", "key": "uri"}},
            "embedding": {"dimensions": 4}}),
    )
    .await?;
    let s = wait_condition(&api, "kept", "Ready", "True", "StoreReady").await?;
    assert!(
        s.metadata.finalizers.unwrap_or_default().is_empty(),
        "Retain needs no finalizer"
    );
    let kept = db.pool_on("aienv_kept", 1).await?;
    Memories::open(kept.clone())
        .await?
        .store(&NewMemory::new("outlives the store", MemoryType::Insight))
        .await?;
    delete_and_wait(&api, "kept").await?;
    assert!(
        table_exists(&db.pool, "aienv_kept.memories").await?,
        "Retain keeps the tables"
    );
    // Created again (a new UID), the store takes its schema and data back.
    apply_store(
        &api,
        "kept",
        serde_json::json!({"mode": "external", "external": {"connectionSecretRef": {"name": "pg", "key": "uri"}},
            "embedding": {"dimensions": 4}}),
    )
    .await?;
    wait_condition(&api, "kept", "Ready", "True", "StoreReady").await?;
    wait_for(WAIT, "a SchemaReadopted Event", || async {
        let ev = events_text(&ns, "kept").await?;
        Ok(ev.iter().any(|(r, _)| r == "SchemaReadopted").then_some(()))
    })
    .await?;
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM memories")
        .fetch_one(&kept)
        .await?;
    assert_eq!(n, 1, "the recreated store has its data");
    kept.close().await;
    delete_and_wait(&api, "kept").await?;

    // A store that can never connect (its Secret is missing) is still deletable with Delete.
    apply_store(
        &api,
        "broken",
        serde_json::json!({"mode": "external", "external": {"connectionSecretRef": {"name": "absent", "key": "uri"}},
            "deletionPolicy": "Delete"}),
    )
    .await?;
    let s = wait_condition(
        &api,
        "broken",
        "DatabaseReady",
        "False",
        "ConnectionSecretMissing",
    )
    .await?;
    assert!(condition(&s, "Ready").unwrap().2.contains("absent"));
    wait_for(WAIT, "finalizer on broken", || async {
        let s = api.get("broken").await?;
        Ok(s.metadata
            .finalizers
            .unwrap_or_default()
            .contains(&FINALIZER.to_string())
            .then_some(()))
    })
    .await?;
    delete_and_wait(&api, "broken").await?;
    assert!(
        table_exists(&db.pool, "aienv_kept.memories").await?,
        "nothing else was touched"
    );

    ops.stop().await;
    ns.cleanup().await?;
    db.cleanup().await
}

#[tokio::test]
async fn managed_children_and_credentials_survive_restarts() -> anyhow::Result<()> {
    let Some(Scenario {
        client, ns, ops, ..
    }) = scenario("memstore-mgd", &[Which::MemoryStore]).await?
    else {
        return Ok(());
    };
    let api: Api<MemoryStore> = ns.api();
    let spec = serde_json::json!({"mode": "managed", "managed": {"storage": {"size": "2Gi", "storageClassName": "standard"},
        "resources": {"requests": {"cpu": "250m", "memory": "512Mi"}, "limits": {"memory": "1Gi"}}},
        "deletionPolicy": "Delete"});
    apply_store(&api, "mem", spec.clone()).await?;
    let s = wait_condition(&api, "mem", "DatabaseReady", "False", "WaitingForDatabase").await?;
    assert!(
        condition(&s, "DatabaseReady").unwrap().2.contains("mem."),
        "{s:?}"
    );

    let sts = ns.api::<StatefulSet>().get("mem").await?;
    let sspec = sts.spec.unwrap();
    assert_eq!(sspec.replicas, Some(1));
    let c = &sspec.template.spec.as_ref().unwrap().containers[0];
    assert_eq!(c.image.as_deref(), Some("pgvector/pgvector:0.8.1-pg18"));
    let sc = c.security_context.as_ref().unwrap();
    assert_eq!(sc.read_only_root_filesystem, Some(true));
    assert_eq!(sc.run_as_non_root, Some(true));
    assert_eq!(sc.allow_privilege_escalation, Some(false));
    assert_eq!(
        c.resources.as_ref().unwrap().limits.as_ref().unwrap()["memory"].0,
        "1Gi"
    );
    let pvc = &sspec.volume_claim_templates.unwrap()[0];
    assert_eq!(
        pvc.spec.as_ref().unwrap().storage_class_name.as_deref(),
        Some("standard")
    );
    let services = ns.api::<Service>();
    assert_eq!(
        services
            .get("mem-hl")
            .await?
            .spec
            .unwrap()
            .cluster_ip
            .as_deref(),
        Some("None")
    );
    assert!(services.get_opt("mem").await?.is_some());
    let np = ns.api::<NetworkPolicy>().get("mem-db").await?;
    assert_eq!(np.spec.unwrap().policy_types.unwrap(), ["Ingress"]);

    let secrets = ns.api::<Secret>();
    let password = |s: Secret| String::from_utf8(s.data.unwrap()["password"].0.clone()).unwrap();
    let first = password(secrets.get("mem-credentials").await?);
    assert_eq!(first.len(), 32);
    // The agents' login is generated apart from the owner's; `mem-app` (what agents mount) is
    // only written once the database has the agents' role, so it never holds the owner's login.
    let agent = secrets.get("mem-agent").await?;
    assert_eq!(agent.type_.as_deref(), Some("kubernetes.io/basic-auth"));
    let agent_password = password(agent.clone());
    assert_eq!(agent_password.len(), 32);
    assert_ne!(agent_password, first);
    assert!(secrets.get_opt("mem-app").await?.is_none());

    // A reconcile and an operator restart leave the password alone.
    touch(&api, "mem", "1").await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    ops.stop().await;
    let ops = operator::start(&client, ns.name(), &[Which::MemoryStore]);
    touch(&api, "mem", "2").await?;
    wait_for(WAIT, "reconcile after restart", || async {
        Ok((ops.ctx.metrics.reconciles(CONTROLLER) > 0).then_some(()))
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(password(secrets.get("mem-credentials").await?), first);
    let status = format!("{:?}", api.get("mem").await?.status);
    assert!(!status.contains(&first));

    // The StatefulSet controller makes the PVC; Delete removes it with the store.
    let pvcs = ns.api::<PersistentVolumeClaim>();
    // whenDeleted: Delete is carried out by the garbage collector, which deletes the PVC only
    // once it names the StatefulSet as owner (the StatefulSet controller's doing); a set deleted
    // before that keeps its PVC. Wait for it: on a loaded CI machine that took long enough to fail.
    wait_for(WAIT, "PVC data-mem-0 owned by its StatefulSet", || async {
        Ok(pvcs.get_opt("data-mem-0").await?.and_then(|p| {
            p.metadata
                .owner_references
                .unwrap_or_default()
                .iter()
                .any(|o| o.kind == "StatefulSet" && o.name == "mem")
                .then_some(())
        }))
    })
    .await?;
    delete_and_wait(&api, "mem").await?;
    // Two garbage-collector cascades (store → StatefulSet → PVC), retried with backoff when the
    // collector is resyncing after a CRD change: more time than a reconcile, and what is left
    // on timeout is named.
    let statefulsets = ns.api::<StatefulSet>();
    wait_for(3 * WAIT, "PVC deleted", || async {
        match pvcs.get_opt("data-mem-0").await? {
            Some(p) if p.metadata.deletion_timestamp.is_none() => Err(anyhow::anyhow!(
                "PVC data-mem-0 still there, owners {:?}; StatefulSet mem still there: {}",
                p.metadata
                    .owner_references
                    .unwrap_or_default()
                    .iter()
                    .map(|o| format!("{}/{}", o.kind, o.name))
                    .collect::<Vec<_>>(),
                statefulsets.get_opt("mem").await?.is_some()
            )),
            _ => Ok(Some(())),
        }
    })
    .await?;

    // Retain orphans the PVC.
    let mut retain = spec.clone();
    retain["deletionPolicy"] = "Retain".into();
    apply_store(&api, "kept", retain).await?;
    wait_for(WAIT, "PVC data-kept-0", || async {
        Ok(pvcs.get_opt("data-kept-0").await?.map(|_| ()))
    })
    .await?;
    delete_and_wait(&api, "kept").await?;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let kept = pvcs.get("data-kept-0").await?;
    assert!(
        kept.metadata.deletion_timestamp.is_none(),
        "Retain keeps the PVC"
    );

    ops.stop().await;
    ns.cleanup().await
}

#[tokio::test]
async fn changing_the_mode_is_rejected_and_the_database_stays() -> anyhow::Result<()> {
    let Some(Scenario { ns, ops, .. }) = scenario("memstore-mode", &[Which::MemoryStore]).await?
    else {
        return Ok(());
    };
    let api: Api<MemoryStore> = ns.api();
    apply_store(&api, "mem", serde_json::json!({"mode": "managed"})).await?;
    wait_condition(&api, "mem", "DatabaseReady", "False", "WaitingForDatabase").await?;
    let sts_uid = ns.api::<StatefulSet>().get("mem").await?.metadata.uid;

    let err = apply_store(
        &api,
        "mem",
        serde_json::json!({"mode": "external", "external": {"connectionSecretRef": {"name": "pg", "key": "uri"}}}),
    )
    .await
    .expect_err("a mode change must be rejected");
    let status = match err.downcast_ref::<kube::Error>() {
        Some(kube::Error::Api(s)) => s.clone(),
        _ => panic!("expected an API error, got {err:#}"),
    };
    assert_eq!(status.code, 422, "{}", status.message);
    assert!(
        status.message.contains("spec.mode cannot be changed")
            && status
                .message
                .contains("create a new MemoryStore with the new mode, restore"),
        "{}",
        status.message
    );

    // A later reconcile still finds the managed database where it was.
    touch(&api, "mem", "after-rejected-mode-change").await?;
    wait_condition(&api, "mem", "DatabaseReady", "False", "WaitingForDatabase").await?;
    assert_eq!(api.get("mem").await?.spec.mode, StoreMode::Managed);
    assert_eq!(
        ns.api::<StatefulSet>().get("mem").await?.metadata.uid,
        sts_uid,
        "the StatefulSet (and so its PVC) is the same object"
    );
    for svc in ["mem", "mem-hl"] {
        assert!(ns.api::<Service>().get_opt(svc).await?.is_some(), "{svc}");
    }
    assert!(ns.api::<NetworkPolicy>().get_opt("mem-db").await?.is_some());
    assert!(
        ns.api::<Secret>()
            .get_opt("mem-credentials")
            .await?
            .is_some()
    );
    ops.stop().await;
    ns.cleanup().await
}

#[tokio::test]
async fn a_users_app_secret_is_never_taken_over() -> anyhow::Result<()> {
    let Some(Scenario { ns, ops, .. }) =
        scenario("memstore-conflict", &[Which::MemoryStore]).await?
    else {
        return Ok(());
    };
    put_secret(&ns, "mem-app", &[("uri", "postgres://someone:else@db/app")]).await?;
    let api: Api<MemoryStore> = ns.api();
    apply_store(&api, "mem", serde_json::json!({"mode": "managed"})).await?;
    let s = wait_condition(&api, "mem", "Ready", "False", "SecretConflict").await?;
    let msg = condition(&s, "Ready").unwrap().2;
    assert!(
        msg.contains("Secret \"mem-app\" already exists")
            && msg.contains("kubectl delete secret mem-app"),
        "{msg}"
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let secret = ns.api::<Secret>().get("mem-app").await?;
    assert!(secret.metadata.owner_references.is_none(), "not adopted");
    assert_eq!(
        secret.data.unwrap_or_default().keys().collect::<Vec<_>>(),
        ["uri"]
    );
    assert!(
        ns.api::<StatefulSet>().get_opt("mem").await?.is_none(),
        "nothing applied"
    );
    assert!(
        events_text(&ns, "mem")
            .await?
            .iter()
            .any(|(reason, _)| reason == "SecretConflict")
    );
    ops.stop().await;
    ns.cleanup().await
}
