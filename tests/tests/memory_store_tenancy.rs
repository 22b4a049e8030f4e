//! Stores sharing one database (external mode, the harness PostgreSQL): each keeps its tables in a
//! schema of its own, a schema holding someone else's tables is refused and left alone, deleting
//! one store never touches another's data; and the vector index builds in the background: a build
//! another session holds is waited for, a dead build's INVALID index is rebuilt, and the store's
//! maintenance_work_mem reaches the building session.

use aienv::memory::{Memories, MemoryType, NewMemory, schema::INDEX_BUILD_LOCK_KEY};
use aienv_tests::{
    conditions::condition,
    stores::{
        ExternalScenario, WAIT, apply_store, delete_and_wait, events_text, external_scenario,
        table_exists, touch, wait_condition,
    },
    testenv::wait_for,
};

fn external(extra: serde_json::Value) -> serde_json::Value {
    let mut spec = serde_json::json!({
        "mode": "external",
        "external": {"connectionSecretRef": {"name": "pg", "key": "uri"}},
        "embedding": {"dimensions": 4},
        "deletionPolicy": "Delete",
    });
    for (k, v) in extra.as_object().unwrap() {
        spec[k] = v.clone();
    }
    spec
}

async fn count(pool: &sqlx::PgPool, table: &str) -> anyhow::Result<i64> {
    Ok(
        sqlx::query_scalar(sqlx::AssertSqlSafe(format!("SELECT count(*) FROM {table}")))
            .fetch_one(pool)
            .await?,
    )
}

#[tokio::test]
async fn stores_on_one_database_never_share_or_take_tables() -> anyhow::Result<()> {
    let Some(ExternalScenario {
        ns, db, ops, api, ..
    }) = external_scenario("memstore-ten").await?
    else {
        return Ok(());
    };
    // Someone else's `memories` in the default schema, and a schema with an unrelated table.
    for sql in [
        "CREATE TABLE public.memories (id int, note text)",
        "INSERT INTO public.memories VALUES (1, 'not the operator''s')",
        "CREATE SCHEMA aienv_squatted",
        "CREATE TABLE aienv_squatted.memories (x int)",
    ] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&db.pool)
            .await?;
    }

    apply_store(&api, "alpha", external(serde_json::json!({}))).await?;
    apply_store(&api, "beta", external(serde_json::json!({}))).await?;
    for store in ["alpha", "beta"] {
        wait_condition(&api, store, "IndexReady", "True", "IndexBuilt").await?;
    }
    let alpha = db.pool_on("aienv_alpha", 1).await?;
    let beta = db.pool_on("aienv_beta", 1).await?;
    Memories::open(alpha.clone())
        .await?
        .store(&NewMemory::new("alpha's memory", MemoryType::Agent))
        .await?;
    assert_eq!(count(&alpha, "memories").await?, 1);
    assert_eq!(
        count(&beta, "memories").await?,
        0,
        "beta has tables of its own"
    );
    assert_eq!(
        count(&db.pool, "public.memories").await?,
        1,
        "the unrelated table is untouched"
    );

    // A schema with tables the operator did not make is refused, and nothing is created in it.
    apply_store(
        &api,
        "squatter",
        external(serde_json::json!({"schema": "aienv_squatted"})),
    )
    .await?;
    let s = wait_condition(&api, "squatter", "SchemaReady", "False", "SchemaNotOwned").await?;
    let msg = condition(&s, "SchemaReady").unwrap().2;
    assert!(
        msg.contains("aienv_squatted") && msg.contains("memories") && msg.contains("spec.schema"),
        "{msg}"
    );
    assert!(!table_exists(&db.pool, "aienv_squatted.aienv_schema_migrations").await?);
    // Another store's schema is refused, naming its owner.
    apply_store(
        &api,
        "intruder",
        external(serde_json::json!({"schema": "aienv_beta"})),
    )
    .await?;
    let s = wait_condition(&api, "intruder", "SchemaReady", "False", "SchemaNotOwned").await?;
    let msg = condition(&s, "SchemaReady").unwrap().2;
    assert!(
        msg.contains(&format!("MemoryStore {}/beta", ns.name())),
        "{msg}"
    );
    // Deleting the refused stores (deletionPolicy Delete) drops nothing of anyone's.
    delete_and_wait(&api, "intruder").await?;
    delete_and_wait(&api, "squatter").await?;
    let ev = events_text(&ns, "intruder").await?;
    assert!(
        ev.iter()
            .any(|(r, n)| r == "DataNotDeleted" && n.contains("beta")),
        "{ev:?}"
    );
    assert!(table_exists(&db.pool, "aienv_beta.memories").await?);
    assert!(table_exists(&db.pool, "aienv_squatted.memories").await?);

    // Deleting alpha drops alpha's schema only.
    delete_and_wait(&api, "alpha").await?;
    alpha.close().await;
    assert!(!table_exists(&db.pool, "aienv_alpha.memories").await?);
    assert!(table_exists(&db.pool, "aienv_beta.memories").await?);
    assert_eq!(count(&db.pool, "public.memories").await?, 1);
    beta.close().await;
    delete_and_wait(&api, "beta").await?;

    ops.stop().await;
    ns.cleanup().await?;
    db.cleanup().await
}

#[tokio::test]
async fn the_index_builds_in_the_background_and_dead_builds_are_redone() -> anyhow::Result<()> {
    let Some(ExternalScenario {
        ns, db, ops, api, ..
    }) = external_scenario("memstore-idx").await?
    else {
        return Ok(());
    };

    // Another session holds the build lock (another operator building): the store is usable
    // and says the index is building; nothing is built beside it.
    let mut holder = db.pool.acquire().await?;
    sqlx::query("SELECT pg_advisory_lock($1)")
        .bind(INDEX_BUILD_LOCK_KEY)
        .execute(&mut *holder)
        .await?;
    apply_store(&api, "mem", external(serde_json::json!({}))).await?;
    let s = wait_condition(&api, "mem", "IndexReady", "False", "IndexBuilding").await?;
    assert_eq!(
        condition(&s, "Ready").unwrap().0,
        "True",
        "usable meanwhile"
    );
    let pool = db.pool_on("aienv_mem", 1).await?;
    Memories::open(pool.clone())
        .await?
        .store(&NewMemory::new(
            "written while the index builds",
            MemoryType::Rag,
        ))
        .await?;
    let indexes = |pool: sqlx::PgPool| async move {
        let names: Vec<String> = sqlx::query_scalar(
            "SELECT indexrelid::regclass::text FROM pg_index WHERE indrelid = 'memories'::regclass AND indexrelid::regclass::text LIKE 'memories_embedding_%'",
        )
        .fetch_all(&pool)
        .await?;
        anyhow::Ok(names)
    };
    assert!(indexes(pool.clone()).await?.is_empty());
    // The holder goes: the operator builds it.
    sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(INDEX_BUILD_LOCK_KEY)
        .execute(&mut *holder)
        .await?;
    drop(holder);
    let s = wait_condition(&api, "mem", "IndexReady", "True", "IndexBuilt").await?;
    assert!(
        condition(&s, "IndexReady")
            .unwrap()
            .2
            .contains("hnsw (m=16, ef_construction=64")
    );
    let ev = events_text(&ns, "mem").await?;
    assert!(
        ev.iter()
            .any(|(r, n)| r == "IndexBuildStarted" && n.contains("maintenance_work_mem 256MB")),
        "{ev:?}"
    );

    // A build that died (operator restarted mid-build) leaves an INVALID index; nobody holds the
    // lock for it, so it is dropped and built again.
    sqlx::query(
        "UPDATE pg_index SET indisvalid = false WHERE indexrelid = 'memories_embedding_hnsw_cosine_m16_efc64'::regclass",
    )
    .execute(&pool)
    .await?;
    touch(&api, "mem", "invalid").await?;
    wait_for(WAIT, "an IndexRebuilding Event", || async {
        let ev = events_text(&ns, "mem").await?;
        Ok(ev
            .iter()
            .any(|(r, n)| r == "IndexRebuilding" && n.contains("INVALID"))
            .then_some(()))
    })
    .await?;
    wait_condition(&api, "mem", "IndexReady", "True", "IndexBuilt").await?;
    let valid: bool = sqlx::query_scalar(
        "SELECT indisvalid FROM pg_index WHERE indexrelid = 'memories_embedding_hnsw_cosine_m16_efc64'::regclass",
    )
    .fetch_one(&pool)
    .await?;
    assert!(valid);

    // The store's maintenance_work_mem is the building session's: PostgreSQL's refusal of a
    // too-small one comes back as the build's failure, and the old index keeps serving.
    apply_store(
        &api,
        "mem",
        external(serde_json::json!({"index": {"hnsw": {"m": 8, "efConstruction": 32}, "maintenanceWorkMem": "63kB"}})),
    )
    .await?;
    let s = wait_condition(&api, "mem", "IndexReady", "False", "IndexBuildFailed").await?;
    let msg = condition(&s, "IndexReady").unwrap().2;
    assert!(msg.contains("maintenance_work_mem"), "{msg}");
    assert_eq!(
        indexes(pool.clone()).await?,
        ["memories_embedding_hnsw_cosine_m16_efc64"]
    );
    apply_store(
        &api,
        "mem",
        external(serde_json::json!({"index": {"hnsw": {"m": 8, "efConstruction": 32}, "maintenanceWorkMem": "128MB"}})),
    )
    .await?;
    wait_for(WAIT, "the m=8 index replacing the m=16 one", || async {
        let names = indexes(pool.clone()).await?;
        Ok((names == ["memories_embedding_hnsw_cosine_m8_efc32"]).then_some(()))
    })
    .await?;

    pool.close().await;
    delete_and_wait(&api, "mem").await?;
    ops.stop().await;
    ns.cleanup().await?;
    db.cleanup().await
}
