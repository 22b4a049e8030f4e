//! Claiming a store's schema before anything is created in it: a new schema is recorded with its
//! MemoryStore; a schema of another store, or one holding tables the operator did not make, is
//! refused with nothing changed. Runs under the schema advisory lock.

use sqlx::{AssertSqlSafe, Connection, PgConnection, Row};

use super::{
    error::MemoryError,
    schema::OWNED_TABLES,
    tenancy::{OWNER_TABLE, StoreTarget},
};

/// How the schema came to be this store's.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Claim {
    /// Already recorded as this store's.
    Owned,
    /// Created now (or an empty schema of that name taken).
    Created,
    /// Recorded for a MemoryStore of the same namespace and name with another UID: the store was
    /// deleted under `deletionPolicy: Retain` and created again, so it takes its data back.
    Readopted { previous_uid: String },
    /// Tables of a store made before stores had schemas of their own, moved from `public`.
    MovedFromPublic(Vec<String>),
}

/// Make sure pgvector is installed where every store's `search_path` finds it (`public`).
pub async fn ensure_vector_extension(conn: &mut PgConnection) -> Result<(), MemoryError> {
    let schema: Option<String> = sqlx::query_scalar(
        "SELECT n.nspname::text FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector'",
    )
    .fetch_optional(&mut *conn)
    .await?;
    match schema.as_deref() {
        Some("public") => Ok(()),
        None => {
            sqlx::query("CREATE EXTENSION IF NOT EXISTS vector SCHEMA public")
                .execute(&mut *conn)
                .await?;
            Ok(())
        }
        Some(other) => Err(MemoryError::SchemaNotOwned(format!(
            "the vector extension is installed in schema {other}, but store connections search only their own schema and public: move it (ALTER EXTENSION vector SET SCHEMA public)"
        ))),
    }
}

pub async fn claim_schema(
    conn: &mut PgConnection,
    target: &StoreTarget,
    database: &str,
) -> Result<Claim, MemoryError> {
    let s = &target.schema;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1)")
            .bind(s)
            .fetch_one(&mut *conn)
            .await?;
    if !exists {
        let legacy = legacy_tables(conn).await?;
        let mut tx = conn.begin().await?;
        create(&mut tx, target).await?;
        for t in &legacy {
            sqlx::query(AssertSqlSafe(format!(
                "ALTER TABLE public.{t} SET SCHEMA {s}"
            )))
            .execute(&mut *tx)
            .await?;
        }
        tx.commit().await?;
        return Ok(if legacy.is_empty() {
            Claim::Created
        } else {
            Claim::MovedFromPublic(legacy)
        });
    }
    let Some((ns, name, uid)) = recorded_owner(conn, s).await? else {
        let foreign: Vec<String> = sqlx::query_scalar(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 ORDER BY 1 LIMIT 6",
        )
        .bind(s)
        .fetch_all(&mut *conn)
        .await?;
        if !foreign.is_empty() {
            return Err(MemoryError::SchemaNotOwned(format!(
                "schema {s} in database {database} already holds objects this operator did not make ({}{}); nothing was changed. Set spec.schema to an unused schema name, or move those objects out of {s}",
                foreign
                    .iter()
                    .take(5)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", "),
                if foreign.len() > 5 { ", …" } else { "" }
            )));
        }
        let mut tx = conn.begin().await?;
        create(&mut tx, target).await?;
        tx.commit().await?;
        return Ok(Claim::Created);
    };
    let me = &target.owner;
    if uid == me.uid {
        return Ok(Claim::Owned);
    }
    if ns == me.namespace && name == me.name {
        sqlx::query(AssertSqlSafe(format!(
            "UPDATE {s}.{OWNER_TABLE} SET uid = $1, claimed_at = now()"
        )))
        .bind(&me.uid)
        .execute(&mut *conn)
        .await?;
        return Ok(Claim::Readopted { previous_uid: uid });
    }
    Err(MemoryError::SchemaNotOwned(format!(
        "schema {s} in database {database} belongs to MemoryStore {ns}/{name} (uid {uid}); nothing was changed. Give this store its own schema (spec.schema) or its own database"
    )))
}

async fn create(conn: &mut PgConnection, target: &StoreTarget) -> Result<(), MemoryError> {
    let s = &target.schema;
    for sql in [
        format!("CREATE SCHEMA IF NOT EXISTS {s}"),
        format!(
            "CREATE TABLE {s}.{OWNER_TABLE} (singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton), namespace text NOT NULL, name text NOT NULL, uid text NOT NULL, agent_password_sha256 text NULL, claimed_at timestamptz NOT NULL DEFAULT now())"
        ),
    ] {
        sqlx::query(AssertSqlSafe(sql)).execute(&mut *conn).await?;
    }
    sqlx::query(AssertSqlSafe(format!(
        "INSERT INTO {s}.{OWNER_TABLE} (namespace, name, uid) VALUES ($1, $2, $3)"
    )))
    .bind(&target.owner.namespace)
    .bind(&target.owner.name)
    .bind(&target.owner.uid)
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// The operator's tables in `public`, when a store made before per-store schemas lives there
/// (its migrations table marks it).
async fn legacy_tables(conn: &mut PgConnection) -> Result<Vec<String>, MemoryError> {
    let marked: bool =
        sqlx::query_scalar("SELECT to_regclass('public.aienv_schema_migrations') IS NOT NULL")
            .fetch_one(&mut *conn)
            .await?;
    if !marked {
        return Ok(Vec::new());
    }
    let mut found = Vec::new();
    for t in OWNED_TABLES {
        let there: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(format!("public.{t}"))
            .fetch_one(&mut *conn)
            .await?;
        if there {
            found.push(t.to_string());
        }
    }
    Ok(found)
}

/// The (namespace, name, uid) the schema is recorded for, if it has an owner record.
async fn recorded_owner(
    conn: &mut PgConnection,
    schema: &str,
) -> Result<Option<(String, String, String)>, MemoryError> {
    let recorded = sqlx::query_scalar::<_, bool>("SELECT to_regclass($1) IS NOT NULL")
        .bind(format!("{schema}.{OWNER_TABLE}"))
        .fetch_one(&mut *conn)
        .await?;
    if !recorded {
        return Ok(None);
    }
    let row = sqlx::query(AssertSqlSafe(format!(
        "SELECT namespace, name, uid FROM {schema}.{OWNER_TABLE}"
    )))
    .fetch_one(&mut *conn)
    .await?;
    Ok(Some((row.try_get(0)?, row.try_get(1)?, row.try_get(2)?)))
}

/// Why the schema is not this store's to drop (None: it is). Deletion drops nothing otherwise.
pub async fn foreign_owner(
    conn: &mut PgConnection,
    target: &StoreTarget,
) -> Result<Option<String>, MemoryError> {
    let s = &target.schema;
    let Some((ns, name, uid)) = recorded_owner(conn, s).await? else {
        return Ok(Some(format!("schema {s} is not recorded as any store's")));
    };
    Ok((uid != target.owner.uid).then(|| {
        format!("schema {s} belongs to MemoryStore {ns}/{name} (uid {uid}), not to this one")
    }))
}
