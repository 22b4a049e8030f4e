//! `manifest.json`, written after the dump object: a backup is the pair, and a prefix without a
//! manifest is an incomplete upload that never counts (not listed, not restored, not retained).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// The manifest format; a reader refuses a newer one.
pub const FORMAT_VERSION: u32 = 1;
pub const MANIFEST: &str = "manifest.json";
pub const DUMP: &str = "dump.zst";
/// Written next to the manifest by a successful verification; retention never deletes the newest
/// backup that has one.
pub const VERIFIED: &str = "verified.json";

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Manifest {
    pub format_version: u32,
    /// The object holding the dump, relative to the bucket.
    pub key: String,
    /// Of the object as stored (compressed).
    pub sha256: String,
    pub size_bytes: u64,
    pub compression: String,
    /// The store's schema the dump holds.
    pub schema: String,
    /// Rows per table of that schema, in the dump's snapshot.
    pub row_counts: BTreeMap<String, i64>,
    /// Memories with an embedding.
    pub vector_count: i64,
    pub postgres_version: String,
    pub pgvector_version: Option<String>,
    pub embedding_model: Option<String>,
    pub embedding_dimensions: Option<i32>,
    /// RFC 3339, UTC.
    pub started_at: String,
    pub duration_seconds: f64,
}

impl Manifest {
    /// Refuse what this reader cannot understand.
    pub fn check(&self) -> Result<(), String> {
        if self.format_version > FORMAT_VERSION {
            return Err(format!(
                "backup manifest format {} is newer than this aienv understands ({FORMAT_VERSION}): upgrade aienv to restore it",
                self.format_version
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_newer_format_is_refused_with_what_to_do() {
        let mut m: Manifest = serde_json::from_value(serde_json::json!({
            "formatVersion": 1, "key": "k", "sha256": "s", "sizeBytes": 1, "compression": "zstd",
            "schema": "aienv_m", "rowCounts": {"memories": 3}, "vectorCount": 2,
            "postgresVersion": "18", "pgvectorVersion": "0.8.0", "embeddingModel": null,
            "embeddingDimensions": 4, "startedAt": "2026-12-02T00:00:00Z", "durationSeconds": 1.5
        }))
        .unwrap();
        assert!(m.check().is_ok());
        m.format_version = FORMAT_VERSION + 1;
        assert!(m.check().unwrap_err().contains("upgrade aienv"));
    }
}
