//! One module per kind: resolve → validate → build → apply → status.

pub mod ai_environment;
pub mod llm_profile;
pub mod memory_store;
