//! Agent memory in PostgreSQL + pgvector: the schema the operator maintains ([`schema`], [`ddl`])
//! and the memory API the plugin, the embedding workers and the benchmarks use ([`Memories`]).

pub mod ddl;
pub mod error;
pub mod fusion;
pub mod handle;
pub mod model;
pub mod schema;
pub mod search;
pub mod write;

pub use error::MemoryError;
pub use handle::Memories;
pub use model::{Filter, Hit, MemoryType, NewMemory, NewTurn, Role, Turn};
