//! Errors of the memory layer (schema and memory API). Messages never contain connection strings
//! or passwords: sqlx errors are reduced to their kind and the server's message.

/// Errors of the memory layer.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The database refused or failed a statement.
    #[error("database error: {0}")]
    Database(String),
    /// Applying the versioned migrations failed.
    #[error("migration failed: {0}")]
    Migration(String),
    /// Another process holds the schema lock for longer than we wait.
    #[error("another operator is migrating this database (advisory lock busy for {0:?})")]
    LockBusy(std::time::Duration),
    /// A vector's length is not the store's dimension.
    #[error(
        "embedding has {got} dimensions but this store's embedding column is vector({expected}): embed with the store's model ({model}) or change the MemoryStore's embedding.dimensions and re-embed"
    )]
    DimensionMismatch {
        expected: u32,
        got: usize,
        model: String,
    },
    /// The schema has not been prepared by the operator yet.
    #[error(
        "the memory schema is not initialised (no aienv_store_config row): is the MemoryStore Ready?"
    )]
    NotInitialised,
    /// The store's schema belongs to another store, or holds tables the operator did not make.
    #[error("{0}")]
    SchemaNotOwned(String),
    /// The agents' role cannot be created, updated or found.
    #[error("{0}")]
    AgentRole(String),
    /// A caller-supplied value is out of range.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

impl MemoryError {
    /// Short, stable label.
    pub fn label(&self) -> &'static str {
        match self {
            MemoryError::Database(_) => "DatabaseError",
            MemoryError::Migration(_) => "MigrationFailed",
            MemoryError::LockBusy(_) => "SchemaLockBusy",
            MemoryError::DimensionMismatch { .. } => "DimensionMismatch",
            MemoryError::NotInitialised => "SchemaNotInitialised",
            MemoryError::InvalidArgument(_) => "InvalidArgument",
            MemoryError::SchemaNotOwned(_) => "SchemaNotOwned",
            MemoryError::AgentRole(_) => "AgentRoleFailed",
        }
    }
}

/// Reduce a sqlx error to text that cannot carry credentials: sqlx's configuration and TLS errors
/// may echo connection options, so only database-reported messages and error kinds are kept.
pub fn describe(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Database(db) => match db.code() {
            Some(code) => format!("{} (SQLSTATE {code})", db.message()),
            None => db.message().to_string(),
        },
        sqlx::Error::Io(io) => describe_io(io),
        sqlx::Error::Tls(_) => "TLS handshake failed".to_string(),
        sqlx::Error::Configuration(_) => "invalid connection settings".to_string(),
        sqlx::Error::PoolTimedOut => "timed out connecting to the database".to_string(),
        sqlx::Error::PoolClosed => "connection pool closed".to_string(),
        sqlx::Error::Protocol(_) => "PostgreSQL protocol error".to_string(),
        sqlx::Error::RowNotFound => "row not found".to_string(),
        sqlx::Error::ColumnDecode { index, .. } => format!("cannot decode column {index}"),
        sqlx::Error::ColumnNotFound(c) => format!("column {c} not found"),
        other => error_kind(other).to_string(),
    }
}

/// The OS's own words (errno messages, the resolver's) name the cause without echoing options;
/// anything else is reduced to its kind.
fn describe_io(io: &std::io::Error) -> String {
    let text = io.to_string();
    if io.raw_os_error().is_some() {
        format!("I/O error: {text}")
    } else if text.starts_with("failed to lookup address information") {
        format!("cannot resolve the host name: {text}")
    } else {
        format!("I/O error: {}", io.kind())
    }
}

fn error_kind(e: &sqlx::Error) -> &'static str {
    match e {
        sqlx::Error::Decode(_) => "decode error",
        sqlx::Error::Encode(_) => "encode error",
        sqlx::Error::TypeNotFound { .. } => "type not found",
        sqlx::Error::WorkerCrashed => "database worker crashed",
        _ => "database client error",
    }
}

impl From<sqlx::Error> for MemoryError {
    fn from(e: sqlx::Error) -> Self {
        MemoryError::Database(describe(&e))
    }
}

impl From<sqlx::migrate::MigrateError> for MemoryError {
    fn from(e: sqlx::migrate::MigrateError) -> Self {
        use sqlx::migrate::MigrateError as M;
        let text = match &e {
            M::Execute(inner) | M::ExecuteMigration(inner, _) => describe(inner),
            M::VersionMismatch(v) => format!("migration {v} was changed after it was applied"),
            M::Dirty(v) => format!("migration {v} is partially applied (dirty): fix it by hand"),
            M::VersionMissing(v) => {
                format!("migration {v} is applied but unknown to this operator (newer operator?)")
            }
            other => other.to_string(),
        };
        MemoryError::Migration(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_errors_do_not_echo_the_url() {
        let url = "postgres://u:hunter2@db:5432/x?sslmode=bogus";
        let err = url.parse::<sqlx::postgres::PgConnectOptions>().unwrap_err();
        let text = MemoryError::from(err).to_string();
        assert!(!text.contains("hunter2"), "{text}");
    }

    #[test]
    fn io_errors_name_their_cause() {
        let io = |e| describe(&sqlx::Error::Io(e));
        let refused = io(std::io::Error::from_raw_os_error(111));
        assert!(refused.contains("Connection refused"), "{refused}");
        let dns = io(std::io::Error::other(
            "failed to lookup address information: Name or service not known",
        ));
        assert!(dns.starts_with("cannot resolve the host name"), "{dns}");
        let custom = io(std::io::Error::other("postgres://u:hunter2@db"));
        assert_eq!(custom, "I/O error: other error");
    }

    #[test]
    fn dimension_mismatch_says_what_to_do() {
        let e = MemoryError::DimensionMismatch {
            expected: 768,
            got: 3,
            model: "nomic-embed-text".into(),
        };
        let s = e.to_string();
        assert!(
            s.contains("3 dimensions") && s.contains("vector(768)"),
            "{s}"
        );
    }
}
