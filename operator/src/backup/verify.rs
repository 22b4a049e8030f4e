//! `aienv verify`: restore the newest (or a named) backup into a throwaway database on the store's
//! server, which `restore` checks against the manifest (sha256 while streaming, every table's row
//! count, the vector count); run one vector query there; drop the throwaway whatever happened;
//! and on success write `verified.json` next to the manifest (retention never deletes the newest
//! backup that has one).

use std::time::Instant;

use object_store::{ObjectStoreExt, PutPayload, path::Path};
use serde::{Deserialize, Serialize};

use super::{
    Error, RestoreArgs, StoreArgs,
    manifest::{MANIFEST, Manifest, VERIFIED},
    restore::restore,
    storage::{Destination, DestinationArgs},
};

#[derive(Clone, Debug, clap::Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub store: StoreArgs,
    #[command(flatten)]
    pub destination: DestinationArgs,
    /// The backup to verify (its timestamp folder); the newest when unset.
    #[arg(long)]
    pub backup: Option<String>,
    #[arg(long, env = super::env::TERMINATION_LOG, default_value = "/dev/termination-log")]
    pub termination_log: std::path::PathBuf,
}

/// What `verified.json` records.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Verified {
    /// The dump verified.
    pub key: String,
    pub sha256: String,
    /// RFC 3339, UTC.
    pub verified_at: String,
    pub row_counts: std::collections::BTreeMap<String, i64>,
    pub vector_count: i64,
    /// Rows the vector query returned.
    pub nearest: i64,
    pub duration_seconds: f64,
}

/// Verify one backup; returns its manifest and what was recorded.
pub async fn verify(args: &VerifyArgs) -> Result<(Manifest, Verified), Error> {
    let started = Instant::now();
    let s = &args.store;
    let mut admin = s.connect().await?;
    let throwaway = format!(
        "aienv_verify_{}_{:08x}",
        jiff::Timestamp::now().strftime("%Y%m%d%H%M%S"),
        rand::random::<u32>()
    );
    // Where the source keeps pgvector: the dump's columns name its type in that schema.
    let (vector_schema,): (String,) = sqlx::query_as(
        "SELECT n.nspname::text FROM pg_extension e JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'vector'",
    )
    .fetch_optional(&mut admin)
    .await?
    .unwrap_or(("public".into(),));
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE DATABASE {}",
        super::ident(&throwaway)
    )))
    .execute(&mut admin)
    .await
    .map_err(|e| {
        Error::Database(format!(
            "cannot create the throwaway database {throwaway}: {} (the store's owner needs CREATEDB to verify)",
            crate::memory::error::describe(&e)
        ))
    })?;
    let outcome = restore_and_query(args, &throwaway, &vector_schema).await;
    // Always dropped: a failed verification leaves nothing behind but its report.
    let dropped = sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        super::ident(&throwaway)
    )))
    .execute(&mut admin)
    .await;
    let (manifest, nearest) = outcome?;
    dropped.map_err(|e| {
        Error::Database(format!(
            "verified, but dropping {throwaway} failed: {}",
            crate::memory::error::describe(&e)
        ))
    })?;

    let verified = Verified {
        key: manifest.key.clone(),
        sha256: manifest.sha256.clone(),
        verified_at: jiff::Timestamp::now().to_string(),
        row_counts: manifest.row_counts.clone(),
        vector_count: manifest.vector_count,
        nearest,
        duration_seconds: started.elapsed().as_secs_f64(),
    };
    let dest = Destination::open(&args.destination).await?;
    let folder = manifest
        .key
        .strip_suffix(super::manifest::DUMP)
        .unwrap_or(&manifest.key);
    let path = Path::from(format!("{folder}{VERIFIED}"));
    debug_assert!(!path.as_ref().ends_with(MANIFEST));
    dest.store
        .put(
            &path,
            PutPayload::from(serde_json::to_vec_pretty(&verified).expect("serializes")),
        )
        .await
        .map_err(|e| Error::Storage(e.to_string()))?;
    Ok((manifest, verified))
}

/// Restore into `database` (pgvector created first, in the schema the source has it in), then
/// ask for the nearest neighbours of one stored vector.
async fn restore_and_query(
    args: &VerifyArgs,
    database: &str,
    vector_schema: &str,
) -> Result<(Manifest, i64), Error> {
    let mut url = url::Url::parse(&args.store.database_url)
        .map_err(|e| Error::Database(format!("not a URI: {e}")))?;
    url.set_path(&format!("/{database}"));
    let store = StoreArgs {
        database_url: url.to_string(),
        ..args.store.clone()
    };
    let mut conn = store.connect().await?;
    for statement in [
        "CREATE SCHEMA IF NOT EXISTS {}",
        "CREATE EXTENSION IF NOT EXISTS vector SCHEMA {}",
    ] {
        let q = statement.replace("{}", &super::ident(vector_schema));
        sqlx::query(sqlx::AssertSqlSafe(q))
            .execute(&mut conn)
            .await?;
    }
    let manifest = restore(&RestoreArgs {
        store: store.clone(),
        destination: args.destination.clone(),
        backup: args.backup.clone(),
        force: false,
        termination_log: args.termination_log.clone(),
    })
    .await?;
    let nearest = if manifest.vector_count > 0 {
        let memories = format!("{}.memories", super::ident(&manifest.schema));
        // The operator `<->` lives in pgvector's schema.
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SET search_path = {}",
            super::ident(vector_schema)
        )))
        .execute(&mut conn)
        .await?;
        let q = format!(
            "SELECT count(*) FROM (SELECT 1 FROM {memories} WHERE embedding IS NOT NULL \
             ORDER BY embedding <-> (SELECT embedding FROM {memories} WHERE embedding IS NOT NULL LIMIT 1) LIMIT 5) n"
        );
        let (n,): (i64,) = sqlx::query_as(sqlx::AssertSqlSafe(q))
            .fetch_one(&mut conn)
            .await?;
        let expected = manifest.vector_count.min(5);
        if n != expected {
            return Err(Error::Mismatch(format!(
                "a nearest-neighbour query returned {n} rows, {expected} expected"
            )));
        }
        n
    } else {
        0
    };
    Ok((manifest, nearest))
}
