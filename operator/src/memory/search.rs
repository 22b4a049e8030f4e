//! Search: vector KNN with filters, full-text, and hybrid (RRF of both). Filters are bound
//! parameters; only fixed clause text is assembled. Filtered vector queries turn on pgvector 0.8's
//! iterative index scans so a selective filter still yields k rows.

use std::collections::HashMap;

use pgvector::Vector;
use sqlx::{AssertSqlSafe, Postgres, Row, postgres::PgRow, query::Query};

use super::{
    error::MemoryError,
    fusion::{RRF_K, rrf},
    handle::Memories,
    model::{Filter, Hit},
};

const COLUMNS: &str = "id, content, memory_type, agent_id, session_id, metadata";

/// `AND …` clauses for the filter, numbering placeholders from `first`.
fn filter_clauses(filter: &Filter, first: usize) -> (String, usize) {
    let mut sql = String::new();
    let mut n = first;
    for (present, column) in [
        (filter.agent_id.is_some(), "agent_id"),
        (filter.session_id.is_some(), "session_id"),
        (filter.memory_type.is_some(), "memory_type"),
    ] {
        if present {
            sql.push_str(&format!(" AND {column} = ${n}"));
            n += 1;
        }
    }
    (sql, n)
}

fn bind_filter<'q>(
    mut q: Query<'q, Postgres, sqlx::postgres::PgArguments>,
    filter: &'q Filter,
) -> Query<'q, Postgres, sqlx::postgres::PgArguments> {
    if let Some(a) = &filter.agent_id {
        q = q.bind(a.as_str());
    }
    if let Some(s) = &filter.session_id {
        q = q.bind(s.as_str());
    }
    if let Some(t) = filter.memory_type {
        q = q.bind(t.as_str());
    }
    q
}

/// Hits scored by their `distance` column.
fn distance_hits(rows: &[PgRow]) -> Result<Vec<Hit>, MemoryError> {
    rows.iter()
        .map(|r| hit(r, r.try_get("distance")?))
        .collect::<Result<_, _>>()
        .map_err(Into::into)
}

fn hit(r: &PgRow, score: f64) -> Result<Hit, sqlx::Error> {
    Ok(Hit {
        id: r.try_get("id")?,
        content: r.try_get("content")?,
        memory_type: r.try_get("memory_type")?,
        agent_id: r.try_get("agent_id")?,
        session_id: r.try_get("session_id")?,
        metadata: r.try_get("metadata")?,
        score,
    })
}

fn check_k(k: u32) -> Result<i64, MemoryError> {
    if k == 0 || k > 1000 {
        return Err(MemoryError::InvalidArgument(format!(
            "k = {k}: ask for 1..=1000 results"
        )));
    }
    Ok(i64::from(k))
}

impl Memories {
    /// The k nearest embedded memories to `query` under the store's metric, closest first.
    pub async fn search_vector(
        &self,
        query: &[f32],
        k: u32,
        filter: &Filter,
    ) -> Result<Vec<Hit>, MemoryError> {
        self.check_dimensions(query)?;
        let limit = check_k(k)?;
        let distance = self.indexed_distance(1);
        let (clauses, _) = filter_clauses(filter, 3);
        let sql = format!(
            "WITH nearest AS MATERIALIZED (SELECT {COLUMNS}, {distance} AS distance FROM memories \
             WHERE true{clauses} ORDER BY {distance} LIMIT $2) \
             SELECT * FROM nearest WHERE distance IS NOT NULL ORDER BY distance, id"
        );
        let q = sqlx::query(AssertSqlSafe(sql))
            .bind(Vector::from(query.to_vec()))
            .bind(limit);
        // The pool's connections already search like this: one statement.
        if filter.is_empty() && self.session_breadth == Some(self.search_breadth) {
            return distance_hits(&q.fetch_all(&self.pool).await?);
        }
        let mut tx = self.pool.begin().await?;
        self.session_settings(&mut tx, !filter.is_empty()).await?;
        let rows = bind_filter(q, filter).fetch_all(&mut *tx).await?;
        tx.commit().await?;
        distance_hits(&rows)
    }

    /// Exact (index-free) k nearest neighbours: the ground truth for recall measurements.
    pub async fn search_vector_exact(
        &self,
        query: &[f32],
        k: u32,
        filter: &Filter,
    ) -> Result<Vec<Hit>, MemoryError> {
        self.check_dimensions(query)?;
        let limit = check_k(k)?;
        let op = self.distance_operator();
        let (clauses, _) = filter_clauses(filter, 3);
        let sql = format!(
            "SELECT {COLUMNS}, embedding {op} $1 AS distance FROM memories \
             WHERE embedding IS NOT NULL{clauses} ORDER BY embedding {op} $1, id LIMIT $2"
        );
        let mut tx = self.pool.begin().await?;
        sqlx::query("SELECT set_config('enable_indexscan', 'off', true)")
            .execute(&mut *tx)
            .await?;
        let q = sqlx::query(AssertSqlSafe(sql))
            .bind(Vector::from(query.to_vec()))
            .bind(limit);
        let rows = bind_filter(q, filter).fetch_all(&mut *tx).await?;
        tx.commit().await?;
        distance_hits(&rows)
    }

    /// Full-text search (websearch syntax, English stemming), best rank first.
    pub async fn search_text(
        &self,
        text: &str,
        k: u32,
        filter: &Filter,
    ) -> Result<Vec<Hit>, MemoryError> {
        let limit = check_k(k)?;
        let (clauses, _) = filter_clauses(filter, 3);
        let sql = format!(
            "SELECT {COLUMNS}, ts_rank_cd(content_tsv, q)::float8 AS rank \
             FROM memories, websearch_to_tsquery('english', $1) AS q \
             WHERE content_tsv @@ q{clauses} ORDER BY rank DESC, id LIMIT $2"
        );
        let q = sqlx::query(AssertSqlSafe(sql)).bind(text).bind(limit);
        let rows = bind_filter(q, filter).fetch_all(&self.pool).await?;
        rows.iter()
            .map(|r| {
                let rank: f64 = r.try_get("rank")?;
                hit(r, rank)
            })
            .collect::<Result<_, _>>()
            .map_err(Into::into)
    }

    /// Hybrid search: reciprocal-rank fusion of vector and full-text candidates.
    pub async fn search_hybrid(
        &self,
        text: &str,
        query: &[f32],
        k: u32,
        filter: &Filter,
    ) -> Result<Vec<Hit>, MemoryError> {
        check_k(k)?;
        let candidates = (k * 4).clamp(40, 1000);
        let by_vector = self.search_vector(query, candidates, filter).await?;
        let by_text = self.search_text(text, candidates, filter).await?;
        let v_ids: Vec<i64> = by_vector.iter().map(|h| h.id).collect();
        let t_ids: Vec<i64> = by_text.iter().map(|h| h.id).collect();
        let mut rows: HashMap<i64, Hit> = by_vector
            .into_iter()
            .chain(by_text)
            .map(|h| (h.id, h))
            .collect();
        Ok(rrf(&[&v_ids, &t_ids], RRF_K, k as usize)
            .into_iter()
            .filter_map(|(id, score)| {
                rows.remove(&id).map(|mut h| {
                    h.score = score;
                    h
                })
            })
            .collect())
    }

    /// Per-transaction index settings: search breadth always; iterative scans for filtered queries.
    async fn session_settings(
        &self,
        tx: &mut sqlx::Transaction<'_, Postgres>,
        filtered: bool,
    ) -> Result<(), MemoryError> {
        let breadth = self.search_breadth.to_string();
        let iterative = if filtered { "relaxed_order" } else { "off" };
        let max_scan = self.max_scan_tuples.to_string();
        let sql = if self.index_kind == "ivfflat" {
            "SELECT set_config('ivfflat.probes', $1, true), set_config('ivfflat.iterative_scan', $2, true), set_config('ivfflat.max_probes', $3, true)"
        } else {
            "SELECT set_config('hnsw.ef_search', $1, true), set_config('hnsw.iterative_scan', $2, true), set_config('hnsw.max_scan_tuples', $3, true)"
        };
        let max = if self.index_kind == "ivfflat" {
            "32768".to_string()
        } else {
            max_scan
        };
        sqlx::query(sql)
            .bind(breadth)
            .bind(iterative)
            .bind(max)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::memory::model::MemoryType;

    #[test]
    fn filter_clauses_number_placeholders_and_splice_no_values() {
        let f = Filter {
            agent_id: Some("robert'); drop table memories; --".into()),
            session_id: None,
            memory_type: Some(MemoryType::Rag),
        };
        let (sql, next) = filter_clauses(&f, 3);
        assert_eq!(sql, " AND agent_id = $3 AND memory_type = $4");
        assert_eq!(next, 5);
        assert_eq!(filter_clauses(&Filter::default(), 3).0, "");
    }

    #[test]
    fn k_is_bounded() {
        assert!(check_k(0).is_err());
        assert!(check_k(1001).is_err());
        assert_eq!(check_k(20).unwrap(), 20);
    }
}
