//! Writing memories and conversation turns. Every value is a bound parameter.

use pgvector::Vector;
use sha2::{Digest, Sha256};
use sqlx::{Row, types::Json};

use super::{
    error::MemoryError,
    handle::Memories,
    model::{NewMemory, NewTurn, Turn},
};

/// Hex sha256 of a memory's content (the `content_sha256` column; lets workers and callers dedupe).
pub fn content_sha256(content: &str) -> String {
    hex::encode(Sha256::digest(content.as_bytes()))
}

impl Memories {
    /// Store one memory; returns its id.
    pub async fn store(&self, m: &NewMemory) -> Result<i64, MemoryError> {
        let embedding = match &m.embedding {
            Some(v) => {
                self.check_dimensions(v)?;
                Some(Vector::from(v.clone()))
            }
            None => None,
        };
        let embedded = embedding.is_some();
        let id = sqlx::query_scalar(
            "INSERT INTO memories (content, memory_type, source_system, agent_id, session_id, repo_id, metadata, content_sha256, embedding, embedding_model, embedded_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, CASE WHEN $10 THEN $11 END, CASE WHEN $10 THEN now() END) RETURNING id",
        )
        .bind(&m.content)
        .bind(m.memory_type.as_str())
        .bind(&m.source_system)
        .bind(&m.agent_id)
        .bind(&m.session_id)
        .bind(&m.repo_id)
        .bind(Json(&m.metadata))
        .bind(content_sha256(&m.content))
        .bind(embedding)
        .bind(embedded)
        .bind(&self.model)
        .fetch_one(&self.pool)
        .await?;
        Ok(id)
    }

    /// Store many memories in one statement (a multi-row insert over UNNEST of bound arrays);
    /// returns their ids in input order.
    pub async fn store_batch(&self, batch: &[NewMemory]) -> Result<Vec<i64>, MemoryError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut content = Vec::with_capacity(batch.len());
        let mut kind = Vec::with_capacity(batch.len());
        let mut source = Vec::with_capacity(batch.len());
        let mut agent = Vec::with_capacity(batch.len());
        let mut session = Vec::with_capacity(batch.len());
        let mut repo = Vec::with_capacity(batch.len());
        let mut metadata = Vec::with_capacity(batch.len());
        let mut sha = Vec::with_capacity(batch.len());
        let mut embedding = Vec::with_capacity(batch.len());
        for m in batch {
            if let Some(v) = &m.embedding {
                self.check_dimensions(v)?;
            }
            content.push(m.content.as_str());
            kind.push(m.memory_type.as_str());
            source.push(m.source_system.as_deref());
            agent.push(m.agent_id.as_deref());
            session.push(m.session_id.as_deref());
            repo.push(m.repo_id.as_deref());
            metadata.push(Json(&m.metadata));
            sha.push(content_sha256(&m.content));
            embedding.push(m.embedding.clone().map(Vector::from));
        }
        let rows = sqlx::query(
            "INSERT INTO memories (content, memory_type, source_system, agent_id, session_id, repo_id, metadata, content_sha256, embedding, embedding_model, embedded_at) \
             SELECT u.content, u.memory_type, u.source_system, u.agent_id, u.session_id, u.repo_id, u.metadata, u.sha, u.embedding, \
                    CASE WHEN u.embedding IS NOT NULL THEN $10 END, CASE WHEN u.embedding IS NOT NULL THEN now() END \
             FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::jsonb[], $8::text[], $9::vector[]) WITH ORDINALITY \
                  AS u(content, memory_type, source_system, agent_id, session_id, repo_id, metadata, sha, embedding, ord) \
             ORDER BY u.ord RETURNING id",
        )
        .bind(&content)
        .bind(&kind)
        .bind(&source)
        .bind(&agent)
        .bind(&session)
        .bind(&repo)
        .bind(&metadata)
        .bind(&sha)
        .bind(&embedding)
        .bind(&self.model)
        .fetch_all(&self.pool)
        .await?;
        let mut ids: Vec<i64> = rows
            .iter()
            .map(|r| r.try_get::<i64, _>("id"))
            .collect::<Result<_, _>>()?;
        // bigserial follows the ORDER BY of the SELECT, so sorting restores input order.
        ids.sort_unstable();
        Ok(ids)
    }

    /// Replace a memory's content. The old vector no longer describes it, so the row becomes
    /// pending again (vector, model, timestamps and the workers' attempt state cleared) with the
    /// new text's checksum, which is what a worker's write is checked against. Returns whether
    /// the row exists. Anything else editing `content` must do the same.
    pub async fn update_content(&self, id: i64, content: &str) -> Result<bool, MemoryError> {
        let n = sqlx::query(
            "UPDATE memories SET content = $2, content_sha256 = $3, embedding = NULL, embedding_model = NULL, \
             embedded_at = NULL, embed_attempts = 0, embed_error = NULL, embed_failed_at = NULL, updated_at = now() \
             WHERE id = $1",
        )
        .bind(id)
        .bind(content)
        .bind(content_sha256(content))
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(n == 1)
    }

    /// Append conversation turns of one agent session, in order; returns their ids.
    pub async fn append_turns(
        &self,
        agent_id: &str,
        session_id: &str,
        turns: &[NewTurn],
    ) -> Result<Vec<i64>, MemoryError> {
        if turns.is_empty() {
            return Ok(Vec::new());
        }
        let roles: Vec<&str> = turns.iter().map(|t| t.role.as_str()).collect();
        let contents: Vec<&str> = turns.iter().map(|t| t.content.as_str()).collect();
        let metadata: Vec<Json<&serde_json::Value>> =
            turns.iter().map(|t| Json(&t.metadata)).collect();
        let mut ids: Vec<i64> = sqlx::query_scalar(
            "INSERT INTO agent_conversations (agent_id, session_id, role, content, metadata) \
             SELECT $1, $2, u.role, u.content, u.metadata \
             FROM unnest($3::text[], $4::text[], $5::jsonb[]) WITH ORDINALITY AS u(role, content, metadata, ord) \
             ORDER BY u.ord RETURNING id",
        )
        .bind(agent_id)
        .bind(session_id)
        .bind(&roles)
        .bind(&contents)
        .bind(&metadata)
        .fetch_all(&self.pool)
        .await?;
        ids.sort_unstable();
        Ok(ids)
    }

    /// The last `limit` turns of a session, oldest first.
    pub async fn recent_history(
        &self,
        agent_id: &str,
        session_id: &str,
        limit: u32,
    ) -> Result<Vec<Turn>, MemoryError> {
        let rows = sqlx::query(
            "SELECT id, role, content, metadata, (extract(epoch FROM created_at) * 1000000)::bigint AS micros FROM ( \
               SELECT * FROM agent_conversations WHERE agent_id = $1 AND session_id = $2 \
               ORDER BY created_at DESC, id DESC LIMIT $3) t ORDER BY created_at, id",
        )
        .bind(agent_id)
        .bind(session_id)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let micros: i64 = r.try_get("micros")?;
                Ok(Turn {
                    id: r.try_get("id")?,
                    role: r.try_get("role")?,
                    content: r.try_get("content")?,
                    metadata: r.try_get("metadata")?,
                    created_at: jiff::Timestamp::from_microsecond(micros)
                        .unwrap_or(jiff::Timestamp::UNIX_EPOCH),
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha_is_hex_of_content() {
        assert_eq!(
            content_sha256("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
