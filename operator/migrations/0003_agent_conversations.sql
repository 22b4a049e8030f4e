-- Conversation turns, read back as "recent history of this agent's session".
CREATE TABLE IF NOT EXISTS agent_conversations (
    id         bigserial PRIMARY KEY,
    agent_id   text        NOT NULL,
    session_id text        NOT NULL,
    role       text        NOT NULL
        CONSTRAINT agent_conversations_role_check CHECK (role IN ('user', 'assistant', 'system')),
    content    text        NOT NULL,
    metadata   jsonb       NOT NULL DEFAULT '{}'::jsonb,
    created_at timestamptz NOT NULL DEFAULT now()
);

CREATE INDEX IF NOT EXISTS agent_conversations_session_idx
    ON agent_conversations (agent_id, session_id, created_at DESC, id DESC);
