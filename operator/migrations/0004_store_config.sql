-- What the per-store DDL was built from, so a later model or dimension change is detected
-- (ReindexRequired) instead of breaking the table. One row.
CREATE TABLE IF NOT EXISTS aienv_store_config (
    singleton       boolean     PRIMARY KEY DEFAULT true CHECK (singleton),
    dimensions      integer     NOT NULL,
    embedding_model text        NOT NULL,
    metric          text        NOT NULL,
    index_kind      text        NOT NULL,
    index_params    jsonb       NOT NULL DEFAULT '{}'::jsonb,
    updated_at      timestamptz NOT NULL DEFAULT now()
);
