//! Versioned migrations and the per-store DDL, applied under an advisory lock so operators racing
//! on one database serialise instead of corrupting it.

use std::{borrow::Cow, time::Duration};

use sqlx::{
    AssertSqlSafe, Connection, PgConnection, PgPool, Row, SqlSafeStr,
    migrate::{Migration, MigrationType, Migrator},
};

use super::{
    agent_role::{self, AgentRoleChanges},
    claim::{self, Claim},
    ddl::{self, INDEX_PREFIX, StoreLayout},
    error::MemoryError,
    tenancy::{OWNER_TABLE, StoreTarget},
};

/// Table recording applied migrations (not sqlx's default, so it is recognisably ours).
pub const MIGRATIONS_TABLE: &str = "aienv_schema_migrations";

/// Advisory lock key held while migrating and building the per-store DDL ("aienvmem").
pub const SCHEMA_LOCK_KEY: i64 = 0x6169_656e_766d_656d;

/// Advisory lock key held by the session building a vector index ("aienvidx"), for as long as it
/// builds: an INVALID index nobody holds this for is a dead build's leftover.
pub const INDEX_BUILD_LOCK_KEY: i64 = 0x6169_656e_7669_6478;

/// How long to wait for another operator's schema work.
pub const LOCK_WAIT: Duration = Duration::from_secs(600);

/// Every table the migrations create; with the owner record, what `deletionPolicy: Delete` drops.
pub const OWNED_TABLES: [&str; 5] = [
    "memories",
    "agent_conversations",
    "aienv_store_config",
    WORKERS_TABLE,
    MIGRATIONS_TABLE,
];

/// Where embedding workers report what they last found (migration 6).
pub const WORKERS_TABLE: &str = "aienv_embed_workers";

const MIGRATIONS: [(i64, &str, &str); 6] = [
    (
        1,
        "vector extension",
        include_str!("../../migrations/0001_vector_extension.sql"),
    ),
    (
        2,
        "memories",
        include_str!("../../migrations/0002_memories.sql"),
    ),
    (
        3,
        "agent conversations",
        include_str!("../../migrations/0003_agent_conversations.sql"),
    ),
    (
        4,
        "store config",
        include_str!("../../migrations/0004_store_config.sql"),
    ),
    (
        5,
        "embedding queue",
        include_str!("../../migrations/0005_embedding_queue.sql"),
    ),
    (
        6,
        "embedding workers",
        include_str!("../../migrations/0006_embed_workers.sql"),
    ),
];

/// Highest migration version this operator knows.
pub fn latest_version() -> i64 {
    MIGRATIONS.iter().map(|m| m.0).max().unwrap_or(0)
}

/// The embedded migrations, recorded in [`MIGRATIONS_TABLE`].
pub fn migrator() -> Migrator {
    let migrations = MIGRATIONS
        .iter()
        .map(|(v, d, sql)| {
            Migration::new(
                *v,
                Cow::Borrowed(*d),
                MigrationType::Simple,
                sql.into_sql_str(),
                false,
            )
        })
        .collect();
    let mut m = Migrator::with_migrations(migrations);
    m.dangerous_set_table_name(MIGRATIONS_TABLE);
    m
}

/// What is wrong with the stored vectors compared with the spec.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReindexNeeded {
    pub stored_dimensions: i32,
    pub stored_model: String,
    pub wanted_dimensions: u32,
    pub wanted_model: String,
}

impl ReindexNeeded {
    pub fn describe(&self) -> String {
        let mut changes = Vec::new();
        if self.stored_dimensions != self.wanted_dimensions as i32 {
            changes.push(format!(
                "dimensions {} -> {}",
                self.stored_dimensions, self.wanted_dimensions
            ));
        }
        if self.stored_model != self.wanted_model {
            changes.push(format!(
                "model {:?} -> {:?}",
                self.stored_model, self.wanted_model
            ));
        }
        format!(
            "embedding {} changed; existing vectors were kept as they are (vector({}), {:?}). Re-embed: see docs/memory-store.md#re-embedding, or revert spec.embedding",
            changes.join(", "),
            self.stored_dimensions,
            self.stored_model
        )
    }
}

/// The index on `memories.embedding`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IndexState {
    /// The wanted index exists and is valid.
    Ready(String),
    /// Not built because the column does not have the wanted dimensions (reindex required).
    Blocked,
    /// Not there yet (or a dead build's INVALID leftover was dropped): build it (see
    /// [`super::index_build`]).
    Missing(String),
    /// A session (this operator's or another's) is building it now.
    Building(String),
}

/// What [`prepare`] did and found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prepared {
    /// The store's schema.
    pub schema: String,
    /// How the store's schema came to be its own.
    pub claim: Claim,
    /// What was done to the agents' role.
    pub agent: AgentRoleChanges,
    /// Migrations applied by this call: (version, description).
    pub applied: Vec<(i64, String)>,
    pub schema_version: i64,
    pub pgvector_version: Option<String>,
    pub reindex: Option<ReindexNeeded>,
    pub index: IndexState,
    /// Indexes of an earlier layout dropped by this call (only once the wanted one is valid).
    pub dropped_indexes: Vec<String>,
    /// A dead build's INVALID index dropped by this call.
    pub dropped_invalid: Option<String>,
}

/// Claim the store's schema, migrate, type the embedding column, look at the index and keep the
/// agents' role, under the schema advisory lock. The index itself is built by
/// [`super::index_build::build`], outside the lock: it can take hours.
pub async fn prepare(
    pool: &PgPool,
    target: &StoreTarget,
    layout: &StoreLayout,
) -> Result<Prepared, MemoryError> {
    let mut conn = pool.acquire().await?;
    lock(&mut conn, LOCK_WAIT).await?;
    let result = prepare_locked(&mut conn, target, layout).await;
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(SCHEMA_LOCK_KEY)
        .execute(&mut *conn)
        .await;
    if unlocked.is_err() {
        // A session we cannot unlock must not go back to the pool holding the lock.
        let _ = conn.detach().close().await;
    }
    result
}

/// Take the schema lock by polling `pg_try_advisory_lock`: a session blocked inside
/// `pg_advisory_lock` holds a snapshot, which `CREATE INDEX CONCURRENTLY` in the lock holder
/// would wait for (a deadlock). Polling leaves no snapshot behind between attempts.
async fn lock(conn: &mut PgConnection, wait: Duration) -> Result<(), MemoryError> {
    let start = std::time::Instant::now();
    loop {
        let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
            .bind(SCHEMA_LOCK_KEY)
            .fetch_one(&mut *conn)
            .await?;
        if got {
            return Ok(());
        }
        if start.elapsed() > wait {
            return Err(MemoryError::LockBusy(wait));
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn prepare_locked(
    conn: &mut PgConnection,
    target: &StoreTarget,
    layout: &StoreLayout,
) -> Result<Prepared, MemoryError> {
    claim::ensure_vector_extension(conn).await?;
    let database: String = sqlx::query_scalar("SELECT current_database()::text")
        .fetch_one(&mut *conn)
        .await?;
    let claim = claim::claim_schema(conn, target, &database).await?;
    let current: Option<String> = sqlx::query_scalar("SELECT current_schema()::text")
        .fetch_one(&mut *conn)
        .await?;
    if current.as_deref() != Some(target.schema.as_str()) {
        return Err(MemoryError::Database(format!(
            "this connection's search_path does not start with the store's schema {} (it resolves to {current:?}): open it with memory::store_connect_options",
            target.schema
        )));
    }
    let before = applied_versions(conn).await?;
    migrator().run_direct(None, &mut *conn, false).await?;
    let after = applied_versions(conn).await?;
    let applied = MIGRATIONS
        .iter()
        .filter(|(v, _, _)| after.contains(v) && !before.contains(v))
        .map(|(v, d, _)| (*v, d.to_string()))
        .collect();
    let schema_version = after.iter().copied().max().unwrap_or(0);

    let reindex = configure_column(conn, layout).await?;
    if reindex.is_none() {
        set_storage(conn, layout).await?;
    }
    let (index, dropped_indexes, dropped_invalid) = if reindex.is_some() {
        (IndexState::Blocked, Vec::new(), None)
    } else {
        inspect_index(conn, layout).await?
    };
    let agent = agent_role::ensure(conn, target).await?;
    let pgvector_version: Option<String> =
        sqlx::query_scalar("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            .fetch_optional(&mut *conn)
            .await?;
    Ok(Prepared {
        schema: target.schema.clone(),
        claim,
        agent,
        applied,
        schema_version,
        pgvector_version,
        reindex,
        index,
        dropped_indexes,
        dropped_invalid,
    })
}

async fn applied_versions(conn: &mut PgConnection) -> Result<Vec<i64>, MemoryError> {
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(MIGRATIONS_TABLE)
        .fetch_one(&mut *conn)
        .await?;
    if !exists {
        return Ok(Vec::new());
    }
    let sql = format!("SELECT version FROM {MIGRATIONS_TABLE} WHERE success ORDER BY version");
    Ok(sqlx::query_scalar(AssertSqlSafe(sql))
        .fetch_all(&mut *conn)
        .await?)
}

/// Type the embedding column on first use and record the layout; afterwards compare the recorded
/// dimensions and model with the spec and report a change instead of altering anything.
async fn configure_column(
    conn: &mut PgConnection,
    layout: &StoreLayout,
) -> Result<Option<ReindexNeeded>, MemoryError> {
    let stored = sqlx::query("SELECT dimensions, embedding_model FROM aienv_store_config")
        .fetch_optional(&mut *conn)
        .await?;
    let params = index_params(layout);
    match stored {
        None => {
            let mut tx = conn.begin().await?;
            sqlx::query(AssertSqlSafe(layout.type_column()))
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO aienv_store_config (dimensions, embedding_model, metric, index_kind, index_params) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(layout.dimensions as i32)
            .bind(&layout.model)
            .bind(ddl::metric_tag(layout.metric))
            .bind(layout.index_kind_name())
            .bind(&params)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(None)
        }
        Some(row) => {
            let dims: i32 = row.try_get("dimensions")?;
            let model: String = row.try_get("embedding_model")?;
            if dims != layout.dimensions as i32 || model != layout.model {
                return Ok(Some(ReindexNeeded {
                    stored_dimensions: dims,
                    stored_model: model,
                    wanted_dimensions: layout.dimensions,
                    wanted_model: layout.model.clone(),
                }));
            }
            // Same vectors: the metric and index parameters may change freely.
            sqlx::query(
                "UPDATE aienv_store_config SET metric = $1, index_kind = $2, index_params = $3, updated_at = now() WHERE (metric, index_kind, index_params) IS DISTINCT FROM ($1, $2, $3)",
            )
            .bind(ddl::metric_tag(layout.metric))
            .bind(layout.index_kind_name())
            .bind(&params)
            .execute(&mut *conn)
            .await?;
            Ok(None)
        }
    }
}

/// Set the embedding column's storage when it differs (a catalog-only change).
async fn set_storage(conn: &mut PgConnection, layout: &StoreLayout) -> Result<(), MemoryError> {
    let current: String = sqlx::query_scalar(
        "SELECT attstorage::text FROM pg_attribute WHERE attrelid = 'memories'::regclass AND attname = 'embedding'",
    )
    .fetch_one(&mut *conn)
    .await?;
    if !current.starts_with(layout.column_storage()) {
        sqlx::query(AssertSqlSafe(layout.set_column_storage()))
            .execute(&mut *conn)
            .await?;
    }
    Ok(())
}

fn index_params(layout: &StoreLayout) -> serde_json::Value {
    let mut v = match layout.index {
        ddl::IndexKind::Hnsw { m, ef_construction } => {
            serde_json::json!({"m": m, "efConstruction": ef_construction, "efSearch": layout.search_breadth})
        }
        ddl::IndexKind::IvfFlat { lists } => {
            serde_json::json!({"lists": lists, "probes": layout.search_breadth})
        }
    };
    v["indexName"] = layout.index_name().into();
    if layout.precision == crate::api::memory_store::Precision::Half {
        v["precision"] = "half".into();
    }
    v
}

/// Where the wanted index stands. A valid one retires the indexes of earlier layouts; an INVALID
/// one nobody is building (no holder of [`INDEX_BUILD_LOCK_KEY`]) is a dead build's and is dropped
/// so it can be built again.
async fn inspect_index(
    conn: &mut PgConnection,
    layout: &StoreLayout,
) -> Result<(IndexState, Vec<String>, Option<String>), MemoryError> {
    let wanted = layout.index_name();
    let ours = our_indexes(conn).await?;
    match ours.iter().find(|(n, _)| *n == wanted) {
        Some((_, true)) => {
            let mut dropped = Vec::new();
            for (name, _) in ours.into_iter().filter(|(n, _)| *n != wanted) {
                if let Some(sql) = ddl::drop_index(&name) {
                    sqlx::query(AssertSqlSafe(sql)).execute(&mut *conn).await?;
                    dropped.push(name);
                }
            }
            Ok((IndexState::Ready(wanted), dropped, None))
        }
        Some((_, false)) => {
            if build_in_progress(conn).await? {
                return Ok((IndexState::Building(wanted), Vec::new(), None));
            }
            if let Some(sql) = ddl::drop_index(&wanted) {
                sqlx::query(AssertSqlSafe(sql)).execute(&mut *conn).await?;
            }
            Ok((
                IndexState::Missing(wanted.clone()),
                Vec::new(),
                Some(wanted),
            ))
        }
        None if build_in_progress(conn).await? => {
            Ok((IndexState::Building(wanted), Vec::new(), None))
        }
        None => Ok((IndexState::Missing(wanted), Vec::new(), None)),
    }
}

/// Whether some session holds the index-build lock of this database.
async fn build_in_progress(conn: &mut PgConnection) -> Result<bool, MemoryError> {
    let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(INDEX_BUILD_LOCK_KEY)
        .fetch_one(&mut *conn)
        .await?;
    if got {
        sqlx::query("SELECT pg_advisory_unlock($1)")
            .bind(INDEX_BUILD_LOCK_KEY)
            .execute(&mut *conn)
            .await?;
    }
    Ok(!got)
}

/// The operator's vector indexes on memories, with whether each is valid.
async fn our_indexes(conn: &mut PgConnection) -> Result<Vec<(String, bool)>, MemoryError> {
    let rows = sqlx::query(
        "SELECT c.relname::text AS name, i.indisvalid AS valid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE i.indrelid = to_regclass('memories') AND starts_with(c.relname::text, $1)",
    )
    .bind(INDEX_PREFIX)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get("name")?, r.try_get("valid")?)))
        .collect()
}

/// Tables the planner estimates below this are counted exactly (a few milliseconds); above it the
/// estimate stands.
pub const EXACT_COUNT_BELOW: f32 = 100_000.0;

/// Row counts for the status: pending rows exactly, through the partial index on rows without a
/// vector (its size is the backlog, not the table); the total from the planner's estimate
/// (`reltuples`, kept by autovacuum and index builds) once the table is large, so a large table
/// is never scanned for a status line.
pub async fn counts(pool: &PgPool) -> Result<RowCounts, MemoryError> {
    // Waiting for a worker, and given up on (the worker marked them failed after its attempts).
    let (pending, failed): (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE embed_failed_at IS NULL), \
                count(*) FILTER (WHERE embed_failed_at IS NOT NULL) \
         FROM memories WHERE embedding IS NULL",
    )
    .fetch_one(pool)
    .await?;
    let estimate: f32 =
        sqlx::query_scalar("SELECT reltuples FROM pg_class WHERE oid = 'memories'::regclass")
            .fetch_one(pool)
            .await?;
    let total = if estimate < EXACT_COUNT_BELOW {
        sqlx::query_scalar("SELECT count(*) FROM memories")
            .fetch_one(pool)
            .await?
    } else {
        (estimate.round() as i64).max(pending + failed)
    };
    Ok(RowCounts {
        memories: total,
        pending_embeddings: pending,
        failed_embeddings: failed,
    })
}

/// What [`counts`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RowCounts {
    pub memories: i64,
    /// Without a vector, waiting for a worker.
    pub pending_embeddings: i64,
    /// Without a vector, given up on: the provider rejected the text on every attempt.
    pub failed_embeddings: i64,
}

/// Drop the store's tables, its agents' role and its schema (deletionPolicy: Delete), if the
/// schema is recorded as this store's; otherwise drop nothing and say why. The extension and the
/// database stay: they may be shared with others in external mode.
pub async fn drop_owned(pool: &PgPool, target: &StoreTarget) -> Result<Dropped, MemoryError> {
    let mut conn = pool.acquire().await?;
    lock(&mut conn, LOCK_WAIT).await?;
    let res = drop_locked(&mut conn, target).await;
    let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(SCHEMA_LOCK_KEY)
        .execute(&mut *conn)
        .await;
    res
}

/// What [`drop_owned`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Dropped {
    All,
    /// Tables and role dropped; the schema kept because someone else's objects are in it.
    KeptSchema(String),
    /// Nothing dropped: the schema is not this store's.
    Refused(String),
}

async fn drop_locked(
    conn: &mut PgConnection,
    target: &StoreTarget,
) -> Result<Dropped, MemoryError> {
    if let Some(refusal) = claim::foreign_owner(conn, target).await? {
        return Ok(Dropped::Refused(refusal));
    }
    let s = &target.schema;
    let tables: Vec<String> = OWNED_TABLES
        .iter()
        .chain(std::iter::once(&OWNER_TABLE))
        .map(|t| format!("{s}.{t}"))
        .collect();
    sqlx::query(AssertSqlSafe(format!(
        "DROP TABLE IF EXISTS {} CASCADE",
        tables.join(", ")
    )))
    .execute(&mut *conn)
    .await?;
    agent_role::drop(conn, target).await?;
    // RESTRICT: whatever else someone put in the schema stays, and so does the schema.
    if let Err(e) = sqlx::query(AssertSqlSafe(format!("DROP SCHEMA IF EXISTS {s} RESTRICT")))
        .execute(&mut *conn)
        .await
    {
        return Ok(Dropped::KeptSchema(super::error::describe(&e)));
    }
    Ok(Dropped::All)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_ordered_and_complete() {
        let m = migrator();
        let versions: Vec<i64> = m.iter().map(|m| m.version).collect();
        assert_eq!(versions, [1, 2, 3, 4, 5, 6]);
        assert_eq!(latest_version(), 6);
        assert_eq!(m.table_name, MIGRATIONS_TABLE);
    }

    #[test]
    fn reindex_message_names_what_changed_and_where_to_read() {
        let r = ReindexNeeded {
            stored_dimensions: 768,
            stored_model: "nomic-embed-text".into(),
            wanted_dimensions: 1024,
            wanted_model: "nomic-embed-text".into(),
        };
        let s = r.describe();
        assert!(s.contains("dimensions 768 -> 1024"), "{s}");
        assert!(!s.contains("model \""), "{s}");
        assert!(s.contains("docs/memory-store.md"), "{s}");
    }
}
