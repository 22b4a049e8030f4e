//! What the backup tests share: the flags of a store on the harness PostgreSQL and of an S3
//! destination on the harness S3 server, and an ordered content hash of a store's tables.

use aienv::backup::{StoreArgs, storage::DestinationArgs};
use sqlx::PgPool;

use crate::testenv::{TEST_SCHEMA, TestEnv};

/// Store `team/mem`, schema [`TEST_SCHEMA`], in the database of `url`.
pub fn store_args(env: &TestEnv, url: &str) -> StoreArgs {
    StoreArgs {
        namespace: "team".into(),
        store: "mem".into(),
        schema: TEST_SCHEMA.into(),
        database_url: url.into(),
        database_password: None,
        pg_bin: Some(env.pg_bin.clone()),
    }
}

/// `bucket` on the S3 server at `endpoint` (the harness's, or a proxy in front of it).
pub fn s3_destination(env: &TestEnv, bucket: &str, endpoint: &str) -> DestinationArgs {
    DestinationArgs {
        bucket: Some(bucket.into()),
        prefix: "backups".into(),
        s3_endpoint: Some(endpoint.into()),
        s3_region: env.s3_region.clone(),
        s3_path_style: true,
        s3_access_key_id: Some(env.aws_access_key_id.clone()),
        s3_secret_access_key: Some(env.aws_secret_access_key.clone()),
        ..Default::default()
    }
}

/// An ordered content hash of every table of [`TEST_SCHEMA`]: equal hashes, equal data (vectors
/// included).
pub async fn content(pool: &PgPool) -> anyhow::Result<Vec<(String, i64, String)>> {
    let tables: Vec<(String,)> =
        sqlx::query_as("SELECT tablename::text FROM pg_tables WHERE schemaname = $1 ORDER BY 1")
            .bind(TEST_SCHEMA)
            .fetch_all(pool)
            .await?;
    let mut out = Vec::new();
    for (t,) in tables {
        let (n, h): (i64, Option<String>) = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT count(*), md5(string_agg(x::text, '|' ORDER BY x::text)) FROM {TEST_SCHEMA}.\"{t}\" x"
        )))
        .fetch_one(pool)
        .await?;
        out.push((t, n, h.unwrap_or_default()));
    }
    Ok(out)
}
