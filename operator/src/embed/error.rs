//! Errors of the embedding worker. None carries a text, a key or a connection string.

use crate::memory::MemoryError;

use super::provider::ProviderError;

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("database error: {0}")]
    Database(String),
    #[error(transparent)]
    Memory(#[from] MemoryError),
    #[error("embedding provider: {0}")]
    Provider(#[from] ProviderError),
    /// The provider's vectors do not fit the store's column; nothing of the batch is written.
    #[error(
        "the provider returned {got}-dimensional vectors but this store's embedding column is vector({expected}) (model {model}): point the worker at the store's model, or change the MemoryStore's embedding.dimensions and re-embed"
    )]
    DimensionMismatch {
        expected: u32,
        got: usize,
        model: String,
    },
    /// The worker was told to embed with another model than the store records.
    #[error(
        "the store's vectors are from model {store:?} but the worker was given --model {given:?}: vectors of two models in one column make search meaningless"
    )]
    ModelMismatch { store: String, given: String },
    #[error("invalid configuration: {0}")]
    Config(String),
}

impl EmbedError {
    /// Short, stable label (logs, metrics).
    pub fn label(&self) -> &'static str {
        match self {
            EmbedError::Database(_) => "DatabaseError",
            EmbedError::Memory(e) => e.label(),
            EmbedError::Provider(e) => e.label(),
            EmbedError::DimensionMismatch { .. } => "DimensionMismatch",
            EmbedError::ModelMismatch { .. } => "ModelMismatch",
            EmbedError::Config(_) => "InvalidConfiguration",
        }
    }
}

impl From<sqlx::Error> for EmbedError {
    fn from(e: sqlx::Error) -> Self {
        EmbedError::Database(crate::memory::error::describe(&e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dimension_mismatch_names_both_sizes() {
        let e = EmbedError::DimensionMismatch {
            expected: 768,
            got: 1024,
            model: "nomic-embed-text".into(),
        };
        let s = e.to_string();
        assert!(
            s.contains("1024-dimensional") && s.contains("vector(768)"),
            "{s}"
        );
        assert_eq!(e.label(), "DimensionMismatch");
    }
}
