//! [`Memories`]: the memory API's handle on one store's database, carrying the store's layout.

use sqlx::{
    PgPool, Row,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use super::{
    ddl::{self, metric_from_tag},
    error::MemoryError,
};
use crate::api::memory_store::{Metric, Precision};

/// The memory API over one MemoryStore database.
#[derive(Clone, Debug)]
pub struct Memories {
    pub(super) pool: PgPool,
    pub dimensions: u32,
    pub model: String,
    pub metric: Metric,
    /// hnsw or ivfflat.
    pub index_kind: String,
    /// What the index holds; searches compare as the index does, so it is used.
    pub precision: Precision,
    /// hnsw.ef_search or ivfflat.probes used for queries; adjustable per handle.
    pub search_breadth: u32,
    /// Upper bound on tuples an iterative index scan visits for a filtered query.
    pub max_scan_tuples: u32,
    /// The breadth every connection of the pool starts with ([`Memories::connect`]): an
    /// unfiltered search at that breadth is one statement, no transaction.
    pub(super) session_breadth: Option<u32>,
}

/// Default for [`Memories::max_scan_tuples`]: high enough that a 0.1 %-selective filter over 100k
/// rows still finds k results (pgvector's default is 20,000).
pub const DEFAULT_MAX_SCAN_TUPLES: u32 = 200_000;

impl Memories {
    /// Open the API on a database the operator has prepared (reads `aienv_store_config`).
    pub async fn open(pool: PgPool) -> Result<Self, MemoryError> {
        let row = sqlx::query(
            "SELECT dimensions, embedding_model, metric, index_kind, index_params FROM aienv_store_config",
        )
        .fetch_optional(&pool)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.code().as_deref() == Some("42P01") => {
                MemoryError::NotInitialised
            }
            _ => e.into(),
        })?
        .ok_or(MemoryError::NotInitialised)?;
        let dims: i32 = row.try_get("dimensions")?;
        let metric: String = row.try_get("metric")?;
        let kind: String = row.try_get("index_kind")?;
        let params: serde_json::Value = row.try_get("index_params")?;
        let key = if kind == "ivfflat" {
            "probes"
        } else {
            "efSearch"
        };
        let breadth = params[key].as_u64().unwrap_or(100) as u32;
        Ok(Self {
            pool,
            dimensions: dims.max(0) as u32,
            model: row.try_get("embedding_model")?,
            metric: metric_from_tag(&metric).ok_or_else(|| {
                MemoryError::Database(format!("unknown metric {metric:?} in aienv_store_config"))
            })?,
            index_kind: kind,
            precision: if params["precision"] == "half" {
                Precision::Half
            } else {
                Precision::Float
            },
            search_breadth: breadth,
            max_scan_tuples: DEFAULT_MAX_SCAN_TUPLES,
            session_breadth: None,
        })
    }

    /// Open the API with a pool of its own whose connections start with the store's search
    /// settings (startup parameters: no statement of their own), so an unfiltered search is one
    /// round trip: no BEGIN, no `set_config`, no COMMIT, and no ping before each use. Filtered
    /// searches still set their iterative-scan settings in a transaction. `options` are the
    /// store's ([`super::store_connect_options`]). A connection the server dropped surfaces as
    /// one failed call and is then replaced.
    pub async fn connect(
        options: PgConnectOptions,
        max_connections: u32,
    ) -> Result<Self, MemoryError> {
        let first = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(options.clone())
            .await?;
        let layout = Self::open(first.clone()).await;
        first.close().await;
        let layout = layout?;
        let prefix = if layout.index_kind == "ivfflat" {
            "ivfflat"
        } else {
            "hnsw"
        };
        let breadth_setting = if prefix == "ivfflat" {
            "ivfflat.probes"
        } else {
            "hnsw.ef_search"
        };
        let options = options.options([
            (
                breadth_setting.to_string(),
                layout.search_breadth.to_string(),
            ),
            (format!("{prefix}.iterative_scan"), "off".to_string()),
        ]);
        let pool = PgPoolOptions::new()
            .max_connections(max_connections)
            .test_before_acquire(false)
            .connect_with(options)
            .await?;
        Ok(Self {
            pool,
            session_breadth: Some(layout.search_breadth),
            ..layout
        })
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// The distance operator for this store's metric.
    pub(super) fn distance_operator(&self) -> &'static str {
        ddl::distance_operator(self.metric)
    }

    /// `<column expression> <op> <query $n>` as the index compares them (halfvec for a
    /// half-precision index, so the planner can use it).
    pub(super) fn indexed_distance(&self, n: usize) -> String {
        format!(
            "{} {} {}",
            ddl::indexed_expression(self.precision, self.dimensions),
            self.distance_operator(),
            ddl::query_expression(self.precision, self.dimensions, n)
        )
    }

    /// A clear error when a vector is not this store's dimension.
    pub fn check_dimensions(&self, v: &[f32]) -> Result<(), MemoryError> {
        if v.len() != self.dimensions as usize {
            return Err(MemoryError::DimensionMismatch {
                expected: self.dimensions,
                got: v.len(),
                model: self.model.clone(),
            });
        }
        if v.iter().any(|x| !x.is_finite()) {
            return Err(MemoryError::InvalidArgument(
                "embedding contains NaN or infinity".into(),
            ));
        }
        Ok(())
    }
}
