//! Versioned migrations and the per-store DDL, applied under an advisory lock so operators racing
//! on one database serialise instead of corrupting it.

use std::{borrow::Cow, time::Duration};

use sqlx::{
    AssertSqlSafe, Connection, PgConnection, PgPool, Row, SqlSafeStr,
    migrate::{Migration, MigrationType, Migrator},
};

use super::{
    ddl::{self, INDEX_PREFIX, StoreLayout},
    error::MemoryError,
};

/// Table recording applied migrations (not sqlx's default, so it is recognisably ours).
pub const MIGRATIONS_TABLE: &str = "aienv_schema_migrations";

/// Advisory lock key held while migrating and building the per-store DDL ("aienvmem").
pub const SCHEMA_LOCK_KEY: i64 = 0x6169_656e_766d_656d;

/// How long to wait for another operator's schema work.
pub const LOCK_WAIT: Duration = Duration::from_secs(600);

/// Every table the operator creates; what `deletionPolicy: Delete` drops.
pub const OWNED_TABLES: [&str; 4] = [
    "memories",
    "agent_conversations",
    "aienv_store_config",
    MIGRATIONS_TABLE,
];

const MIGRATIONS: [(i64, &str, &str); 4] = [
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
}

/// What [`prepare`] did and found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prepared {
    /// Migrations applied by this call: (version, description).
    pub applied: Vec<(i64, String)>,
    pub schema_version: i64,
    pub pgvector_version: Option<String>,
    pub reindex: Option<ReindexNeeded>,
    pub index: IndexState,
    /// Indexes of an earlier layout dropped by this call.
    pub dropped_indexes: Vec<String>,
}

/// Migrate, type the embedding column and build the index, under the schema advisory lock.
pub async fn prepare(pool: &PgPool, layout: &StoreLayout) -> Result<Prepared, MemoryError> {
    let mut conn = pool.acquire().await?;
    lock(&mut conn, LOCK_WAIT).await?;
    let result = prepare_locked(&mut conn, layout).await;
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
    layout: &StoreLayout,
) -> Result<Prepared, MemoryError> {
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
    let (index, dropped_indexes) = if reindex.is_some() {
        (IndexState::Blocked, Vec::new())
    } else {
        build_index(conn, layout).await?
    };
    let pgvector_version: Option<String> =
        sqlx::query_scalar("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            .fetch_optional(&mut *conn)
            .await?;
    Ok(Prepared {
        applied,
        schema_version,
        pgvector_version,
        reindex,
        index,
        dropped_indexes,
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
    v
}

/// Build the wanted index concurrently (dropping an invalid leftover of a failed build first),
/// then drop the operator's indexes of earlier layouts.
async fn build_index(
    conn: &mut PgConnection,
    layout: &StoreLayout,
) -> Result<(IndexState, Vec<String>), MemoryError> {
    let wanted = layout.index_name();
    let ours = our_indexes(conn).await?;
    if let Some((_, false)) = ours.iter().find(|(n, _)| *n == wanted)
        && let Some(sql) = ddl::drop_index(&wanted)
    {
        sqlx::query(AssertSqlSafe(sql)).execute(&mut *conn).await?;
    }
    if !ours.iter().any(|(n, valid)| *n == wanted && *valid) {
        sqlx::query(AssertSqlSafe(layout.create_index()))
            .execute(&mut *conn)
            .await?;
    }
    let mut dropped = Vec::new();
    for (name, _) in ours.into_iter().filter(|(n, _)| *n != wanted) {
        if let Some(sql) = ddl::drop_index(&name) {
            sqlx::query(AssertSqlSafe(sql)).execute(&mut *conn).await?;
            dropped.push(name);
        }
    }
    Ok((IndexState::Ready(wanted), dropped))
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

/// Row counts for the status.
pub async fn counts(pool: &PgPool) -> Result<(i64, i64), MemoryError> {
    let row = sqlx::query(
        "SELECT count(*) AS total, count(*) FILTER (WHERE embedding IS NULL) AS pending FROM memories",
    )
    .fetch_one(pool)
    .await?;
    Ok((row.try_get("total")?, row.try_get("pending")?))
}

/// Drop every table the operator created (deletionPolicy: Delete). The extension and the database
/// itself stay: they may be shared with others in external mode.
pub async fn drop_owned(pool: &PgPool) -> Result<(), MemoryError> {
    let mut conn = pool.acquire().await?;
    lock(&mut conn, LOCK_WAIT).await?;
    let sql = format!("DROP TABLE IF EXISTS {} CASCADE", OWNED_TABLES.join(", "));
    let res = sqlx::query(AssertSqlSafe(sql)).execute(&mut *conn).await;
    let _ = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(SCHEMA_LOCK_KEY)
        .execute(&mut *conn)
        .await;
    res?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_ordered_and_complete() {
        let m = migrator();
        let versions: Vec<i64> = m.iter().map(|m| m.version).collect();
        assert_eq!(versions, [1, 2, 3, 4]);
        assert_eq!(latest_version(), 4);
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
