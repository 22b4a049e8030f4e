//! The four aienv kinds, group `aienv.orchestr8.io`, version `v1alpha1`.

// kube's printcolumn(...) attributes repeat `type_ = "string"`, which clippy mistakes for
// duplicated attributes.
#![allow(clippy::duplicated_attributes)]

pub mod ai_environment;
pub mod backup_schedule;
pub mod common;
pub mod llm_profile;
pub mod memory_store;

pub use ai_environment::AiEnvironment;
pub use backup_schedule::BackupSchedule;
pub use llm_profile::LlmProfile;
pub use memory_store::MemoryStore;
