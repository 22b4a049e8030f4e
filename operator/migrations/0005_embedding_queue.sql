-- The embedding workers' queue state (docs/embedding.md). A row is pending while it has no vector
-- and has not been given up on; a provider that keeps rejecting a row (a "poison row") counts
-- attempts here and, after the worker's --max-attempts, stamps embed_failed_at so claims skip it.
-- Editing the content (Memories::update_content) resets all three.
ALTER TABLE memories ADD COLUMN IF NOT EXISTS embed_attempts integer NOT NULL DEFAULT 0;
ALTER TABLE memories ADD COLUMN IF NOT EXISTS embed_error text NULL;
ALTER TABLE memories ADD COLUMN IF NOT EXISTS embed_failed_at timestamptz NULL;

-- What the workers claim from (ORDER BY id ... FOR UPDATE SKIP LOCKED): only claimable rows, so
-- failed rows cost a claim nothing. memories_pending_idx (0002) stays for the status counts.
CREATE INDEX IF NOT EXISTS memories_embed_queue_idx ON memories (id)
    WHERE embedding IS NULL AND embed_failed_at IS NULL;
