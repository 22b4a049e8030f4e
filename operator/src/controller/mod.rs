//! What every controller shares: context, errors, server-side apply, metrics, clock.

pub mod apply;
pub mod backup_metrics;
pub mod children;
pub mod clock;
pub mod context;
pub mod digest;
pub mod error;
pub mod events;
pub mod finalizer;
pub mod labels;
pub mod mapping;
pub mod metrics;
pub mod pods;
pub mod policy;
pub mod problem;
pub mod requests;
pub mod shared;
pub mod status;

pub use context::Context;
pub use error::{Error, Result};
pub use problem::Problem;
