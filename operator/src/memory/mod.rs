//! Agent memory in PostgreSQL + pgvector: the schema the operator maintains ([`schema`], [`ddl`])
//! and the memory API the plugin, the embedding workers and the benchmarks use ([`Memories`]).

pub mod agent_role;
pub mod claim;
pub mod ddl;
pub mod error;
pub mod fusion;
pub mod handle;
pub mod index_build;
pub mod model;
pub mod schema;
pub mod scram;
pub mod search;
pub mod tenancy;
pub mod write;

pub use error::MemoryError;
pub use handle::Memories;
pub use model::{Filter, Hit, MemoryType, NewMemory, NewTurn, Role, Turn};

/// Connection options of a store's pool: every connection searches the store's schema first.
pub fn store_connect_options(
    opts: sqlx::postgres::PgConnectOptions,
    schema: &str,
) -> sqlx::postgres::PgConnectOptions {
    opts.options([("search_path", tenancy::search_path(schema))])
}
