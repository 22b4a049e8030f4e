-- What each embedding worker last found (docs/embedding.md): one row per worker, written by the
-- worker when its state changes and as a heartbeat, read by the operator for WorkersReady. A
-- worker that stopped cleanly deletes its row; the operator ignores rows not refreshed lately.
CREATE TABLE IF NOT EXISTS aienv_embed_workers (
    worker     text        PRIMARY KEY,
    provider   text        NOT NULL,
    model      text        NOT NULL,
    -- true: the provider answered with vectors the store can take (a batch or the idle probe).
    ok         boolean     NOT NULL,
    -- The stable label of the last error (DimensionMismatch, ProviderUnreachable, ...), and its
    -- message: never a text, a key or a connection string.
    reason     text        NULL,
    message    text        NULL,
    -- When this ok/reason began, and when the worker last said it still holds.
    since      timestamptz NOT NULL DEFAULT now(),
    seen_at    timestamptz NOT NULL DEFAULT now()
);
