//! Building the vector index outside the reconcile: one long `CREATE INDEX CONCURRENTLY` on a
//! session of its own, holding the index-build advisory lock for its whole life (so a restarted
//! operator can tell a live build from a dead one's INVALID leftover), with the store's
//! `maintenance_work_mem` and no statement timeout. Progress comes from
//! `pg_stat_progress_create_index`.

use sqlx::{AssertSqlSafe, PgPool, Row};

use super::{ddl::StoreLayout, error::MemoryError, schema::INDEX_BUILD_LOCK_KEY};

/// What a build in progress has done so far.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuildProgress {
    pub phase: String,
    pub tuples_done: i64,
    pub tuples_total: i64,
    pub blocks_done: i64,
    pub blocks_total: i64,
}

impl BuildProgress {
    /// `phase, 45% (450/1000 tuples)` — tuples where the access method reports them (hnsw loads
    /// tuples), blocks otherwise.
    pub fn describe(&self) -> String {
        let (done, total, unit) = if self.tuples_total > 0 {
            (self.tuples_done, self.tuples_total, "tuples")
        } else {
            (self.blocks_done, self.blocks_total, "blocks")
        };
        if total > 0 {
            format!(
                "{}, {}% ({done}/{total} {unit})",
                self.phase,
                done.saturating_mul(100) / total
            )
        } else {
            self.phase.clone()
        }
    }
}

/// How a build ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BuildOutcome {
    Built,
    /// Another session holds the build lock: it builds, this one did nothing.
    Busy,
}

/// `maintenance_work_mem` as PostgreSQL takes it: a number with kB, MB or GB.
pub fn check_memory_setting(value: &str) -> Result<&str, String> {
    let digits = value.trim_end_matches(|c: char| c.is_ascii_alphabetic());
    let unit = &value[digits.len()..];
    let ok = !digits.is_empty()
        && digits.len() <= 7
        && digits.bytes().all(|b| b.is_ascii_digit())
        && matches!(unit, "kB" | "MB" | "GB");
    if ok {
        Ok(value)
    } else {
        Err(format!(
            "maintenanceWorkMem {value:?} is not a size like 256MB (a number with kB, MB or GB)"
        ))
    }
}

/// Build the layout's index. Blocks until it is built, fails, or is found busy.
pub async fn build(
    pool: &PgPool,
    layout: &StoreLayout,
    maintenance_work_mem: &str,
) -> Result<BuildOutcome, MemoryError> {
    let mem = check_memory_setting(maintenance_work_mem).map_err(MemoryError::InvalidArgument)?;
    let mut conn = pool.acquire().await?;
    let got: bool = sqlx::query_scalar("SELECT pg_try_advisory_lock($1)")
        .bind(INDEX_BUILD_LOCK_KEY)
        .fetch_one(&mut *conn)
        .await?;
    if !got {
        return Ok(BuildOutcome::Busy);
    }
    let result = async {
        for sql in [
            format!("SET maintenance_work_mem = '{mem}'"),
            "SET statement_timeout = 0".to_string(),
            layout.create_index(),
            "RESET maintenance_work_mem".to_string(),
            "RESET statement_timeout".to_string(),
        ] {
            sqlx::query(AssertSqlSafe(sql)).execute(&mut *conn).await?;
        }
        Ok::<_, MemoryError>(())
    }
    .await;
    let unlocked = sqlx::query("SELECT pg_advisory_unlock($1)")
        .bind(INDEX_BUILD_LOCK_KEY)
        .execute(&mut *conn)
        .await;
    if unlocked.is_err() || result.is_err() {
        let _ = sqlx::Connection::close(conn.detach()).await;
    }
    result.map(|()| BuildOutcome::Built)
}

/// [`super::schema::prepare`], then build the index in place when it is missing, and look again:
/// for callers without a controller (the memory API's tests, benchmarks, tools).
pub async fn prepare_and_build(
    pool: &PgPool,
    target: &super::tenancy::StoreTarget,
    layout: &StoreLayout,
    maintenance_work_mem: &str,
) -> Result<super::schema::Prepared, MemoryError> {
    use super::schema::{IndexState, prepare};
    let first = prepare(pool, target, layout).await?;
    let mut last = first.clone();
    let deadline = std::time::Instant::now() + super::schema::LOCK_WAIT;
    loop {
        match &last.index {
            IndexState::Missing(_) => {
                build(pool, layout, maintenance_work_mem).await?;
            }
            // Someone else's build: wait for it.
            IndexState::Building(_) if std::time::Instant::now() < deadline => {
                tokio::time::sleep(std::time::Duration::from_millis(200)).await;
            }
            _ => break,
        }
        last = prepare(pool, target, layout).await?;
    }
    // What the first call did is what the caller asked about.
    Ok(super::schema::Prepared {
        index: last.index,
        dropped_indexes: last.dropped_indexes,
        ..first
    })
}

/// The progress of an index build on `memories`, if one runs.
pub async fn progress(pool: &PgPool) -> Result<Option<BuildProgress>, MemoryError> {
    let row = sqlx::query(
        "SELECT phase, tuples_done, tuples_total, blocks_done, blocks_total FROM pg_stat_progress_create_index WHERE relid = to_regclass('memories') LIMIT 1",
    )
    .fetch_optional(pool)
    .await?;
    row.map(|r| {
        Ok(BuildProgress {
            phase: r.try_get("phase")?,
            tuples_done: r.try_get("tuples_done")?,
            tuples_total: r.try_get("tuples_total")?,
            blocks_done: r.try_get("blocks_done")?,
            blocks_total: r.try_get("blocks_total")?,
        })
    })
    .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_reads_as_a_percentage() {
        let p = BuildProgress {
            phase: "building index: loading tuples".into(),
            tuples_done: 450,
            tuples_total: 1000,
            blocks_done: 0,
            blocks_total: 0,
        };
        assert_eq!(
            p.describe(),
            "building index: loading tuples, 45% (450/1000 tuples)"
        );
        let early = BuildProgress {
            phase: "initializing".into(),
            tuples_total: 0,
            ..p
        };
        assert_eq!(early.describe(), "initializing");
    }

    #[test]
    fn memory_settings_are_sizes_only() {
        for ok in ["256MB", "2GB", "65536kB"] {
            assert!(check_memory_setting(ok).is_ok(), "{ok}");
        }
        for bad in ["", "MB", "1TB", "64", "1GB'; DROP", "9999999999MB"] {
            assert!(check_memory_setting(bad).is_err(), "{bad}");
        }
    }
}
