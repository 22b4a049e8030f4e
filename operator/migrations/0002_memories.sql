-- Long-term memories. The embedding column starts untyped; the operator types it as vector(N)
-- from the MemoryStore's validated embedding.dimensions (per-store DDL), so N is never hard-coded here.
CREATE TABLE IF NOT EXISTS memories (
    id              bigserial PRIMARY KEY,
    content         text        NOT NULL,
    embedding       vector      NULL,
    memory_type     text        NOT NULL DEFAULT 'agent'
        CONSTRAINT memories_memory_type_check CHECK (memory_type IN ('agent', 'rag', 'workflow', 'insight')),
    source_system   text        NULL,
    agent_id        text        NULL,
    session_id      text        NULL,
    repo_id         text        NULL,
    metadata        jsonb       NOT NULL DEFAULT '{}'::jsonb,
    content_sha256  text        NOT NULL,
    embedding_model text        NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now(),
    embedded_at     timestamptz NULL,
    content_tsv     tsvector GENERATED ALWAYS AS (to_tsvector('english', content)) STORED
);

CREATE INDEX IF NOT EXISTS memories_content_tsv_idx ON memories USING gin (content_tsv);
CREATE INDEX IF NOT EXISTS memories_agent_id_idx ON memories (agent_id);
CREATE INDEX IF NOT EXISTS memories_session_id_idx ON memories (session_id);
CREATE INDEX IF NOT EXISTS memories_memory_type_idx ON memories (memory_type);
CREATE INDEX IF NOT EXISTS memories_content_sha256_idx ON memories (content_sha256);
-- The embedding workers claim rows without a vector, oldest first.
CREATE INDEX IF NOT EXISTS memories_pending_idx ON memories (id) WHERE embedding IS NULL;
