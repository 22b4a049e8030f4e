//! One module per kind: resolve → validate → build → apply → status.

pub mod ai_environment;
pub mod backup_schedule;
pub mod llm_profile;
pub mod memory_store;

use std::sync::Arc;

use crate::controller::{Context, shared::Caches};

/// The operator's controllers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Which {
    LlmProfile,
    AiEnvironment,
    MemoryStore,
    BackupSchedule,
}

impl Which {
    pub const ALL: [Which; 4] = [
        Which::LlmProfile,
        Which::AiEnvironment,
        Which::MemoryStore,
        Which::BackupSchedule,
    ];
}

/// Run `which` controllers and the watches they share until `shutdown` resolves: the one list of
/// controllers, used by the operator and by the tests.
pub async fn run_all(
    ctx: Arc<Context>,
    which: Vec<Which>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let shutdown = futures::FutureExt::shared(Box::pin(shutdown));
    let caches = Caches::new();
    let mut tasks = Vec::new();
    for w in &which {
        let (ctx, stop) = (ctx.clone(), shutdown.clone());
        tasks.push(match w {
            Which::LlmProfile => tokio::spawn(llm_profile::run(ctx, caches.secrets_only(), stop)),
            Which::AiEnvironment => {
                tokio::spawn(ai_environment::run(ctx, caches.with_workloads(), stop))
            }
            Which::MemoryStore => tokio::spawn(memory_store::run(ctx, caches.secrets_only(), stop)),
            Which::BackupSchedule => {
                tokio::spawn(backup_schedule::run(ctx, caches.secrets_only(), stop))
            }
        });
    }
    let watches = caches.run(&ctx, which.contains(&Which::AiEnvironment));
    tokio::select! {
        _ = watches => {}
        _ = shutdown.clone() => {}
    }
    for t in tasks {
        let _ = t.await;
    }
}
