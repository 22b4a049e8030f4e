//! State shared by every reconcile of every controller.

use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::{
    Client,
    runtime::events::{Event, EventType, Recorder, Reporter},
};

use super::{clock::Clock, metrics::Metrics};

pub struct Context {
    pub client: Client,
    pub recorder: Recorder,
    pub metrics: Metrics,
    pub clock: Arc<dyn Clock>,
}

impl Context {
    pub fn new(client: Client, metrics: Metrics, clock: Arc<dyn Clock>) -> Self {
        let reporter = Reporter {
            controller: "aienv-operator".into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            metrics,
            clock,
        }
    }

    /// Publish an Event; a failure to publish is logged, never fails the reconcile.
    pub async fn event(
        &self,
        reference: &ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: action.to_string(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&event, reference).await {
            tracing::warn!(error = %e, reason, "failed to publish event");
        }
    }
}
