//! One module per kind: resolve → validate → build → apply → status.

pub mod llm_profile;
