//! Support for aienv's integration tests: every test talks to real servers that
//! `scripts/testenv up` starts on loopback (control plane, PostgreSQL, S3, GCS).
#![forbid(unsafe_code)]

pub mod agents;
pub mod backups;
pub mod conditions;
pub mod embed_fixture;
pub mod embed_server;
pub mod helm;
pub mod jobs;
pub mod llm_server;
pub mod o8;
pub mod operator;
pub mod plugin;
pub mod pod_stores;
pub mod stores;
pub mod testenv;
