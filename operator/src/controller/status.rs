//! The one status writer: a status is written only when something but condition timestamps
//! changed, the write is counted, and a change of Ready (status or reason) is an Event.

use k8s_openapi::{api::core::v1::ObjectReference, apimachinery::pkg::apis::meta::v1::Condition};
use kube::{Api, Resource, runtime::events::EventType};
use serde::{Serialize, de::DeserializeOwned};

use super::{Context, Result, apply};

/// A status with conditions.
pub trait WithConditions: Clone + PartialEq + Serialize {
    fn conditions(&self) -> &[Condition];
    fn conditions_mut(&mut self) -> &mut Vec<Condition>;
}

/// Whether `new` says anything `old` does not; conditions are compared without timestamps.
pub fn differs<S: WithConditions>(old: &S, new: &S) -> bool {
    let without = |s: &S| {
        let mut s = s.clone();
        s.conditions_mut().clear();
        s
    };
    without(old) != without(new)
        || !crate::conditions::equal_ignoring_time(new.conditions(), old.conditions())
}

/// How a write is announced.
pub struct Writer<'a> {
    pub controller: &'static str,
    pub manager: &'static str,
    pub reference: &'a ObjectReference,
    /// Ready reasons that are on the way, not problems: their Event is Normal although Ready is
    /// False.
    pub progressing: &'a [&'a str],
}

impl Writer<'_> {
    /// Write `new` if it [`differs`] from `old` (or `force`); returns whether it wrote.
    pub async fn write<K, S>(
        &self,
        ctx: &Context,
        api: &Api<K>,
        name: &str,
        old: &S,
        new: &S,
        force: bool,
    ) -> Result<bool>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + std::fmt::Debug,
        S: WithConditions,
    {
        if !force && !differs(old, new) {
            return Ok(false);
        }
        apply::apply_status(api, self.manager, name, new).await?;
        ctx.metrics.status_write(self.controller);
        self.ready_event(ctx, old.conditions(), new.conditions())
            .await;
        Ok(true)
    }

    async fn ready_event(&self, ctx: &Context, old: &[Condition], new: &[Condition]) {
        let old_ready = crate::conditions::get(old, "Ready");
        let Some(nr) = crate::conditions::get(new, "Ready") else {
            return;
        };
        if old_ready.map(|c| (&c.status, &c.reason)) == Some((&nr.status, &nr.reason)) {
            return;
        }
        let type_ = if nr.status == "True" || self.progressing.contains(&nr.reason.as_str()) {
            EventType::Normal
        } else {
            EventType::Warning
        };
        ctx.event(
            self.reference,
            type_,
            &nr.reason,
            "Reconcile",
            nr.message.clone(),
        )
        .await;
    }
}

macro_rules! with_conditions {
    ($($t:ty),*) => {$(
        impl WithConditions for $t {
            fn conditions(&self) -> &[Condition] {
                &self.conditions
            }
            fn conditions_mut(&mut self) -> &mut Vec<Condition> {
                &mut self.conditions
            }
        }
    )*};
}

with_conditions!(
    crate::api::llm_profile::LlmProfileStatus,
    crate::api::ai_environment::AiEnvironmentStatus,
    crate::api::memory_store::MemoryStoreStatus,
    crate::api::backup_schedule::BackupScheduleStatus
);

#[cfg(test)]
mod tests {
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use super::*;
    use crate::api::memory_store::{Counts, MemoryStoreStatus};

    fn ready_at(second: i64) -> Condition {
        Condition {
            type_: "Ready".into(),
            status: "True".into(),
            reason: "StoreReady".into(),
            message: "ok".into(),
            observed_generation: Some(1),
            last_transition_time: Time(jiff::Timestamp::from_second(second).unwrap()),
        }
    }

    #[test]
    fn only_what_a_user_reads_is_a_difference() {
        let old = MemoryStoreStatus {
            conditions: vec![ready_at(1)],
            ..Default::default()
        };
        let retimed = MemoryStoreStatus {
            conditions: vec![ready_at(99)],
            ..old.clone()
        };
        assert!(!differs(&old, &retimed), "a timestamp alone is no change");
        let counted = MemoryStoreStatus {
            counts: Some(Counts {
                memories: 1,
                pending_embeddings: 0,
                failed_embeddings: 0,
            }),
            ..old.clone()
        };
        assert!(differs(&old, &counted));
    }
}
