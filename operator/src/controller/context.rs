//! State shared by every reconcile of every controller.

use std::sync::Arc;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::{Api, Client, Resource, runtime::events::EventType};

use super::{clock::Clock, events::EventRecorder, metrics::Metrics};

pub struct Context {
    pub client: Client,
    /// Watch only this namespace (`--watch-namespace`); all namespaces when None.
    pub namespace: Option<String>,
    pub recorder: EventRecorder,
    pub metrics: Metrics,
    pub clock: Arc<dyn Clock>,
    /// The image backup and verify Jobs run (`aienv backup|verify`): the operator's own.
    pub job_image: String,
}

/// The Jobs' image when `--job-image` is not given: this build's, by tag.
pub const DEFAULT_JOB_IMAGE: &str = concat!("aienv:", env!("CARGO_PKG_VERSION"));

impl Context {
    pub fn new(
        client: Client,
        namespace: Option<String>,
        metrics: Metrics,
        clock: Arc<dyn Clock>,
    ) -> Self {
        // Every request of every controller (and of the Event recorder) is counted.
        let client = super::requests::counted(client, metrics.clone());
        Self {
            recorder: EventRecorder::new(
                client.clone(),
                "aienv-operator",
                std::env::var("POD_NAME").ok(),
            ),
            client,
            namespace,
            metrics,
            clock,
            job_image: DEFAULT_JOB_IMAGE.into(),
        }
    }

    /// Jobs run `image` (the operator's own, as deployed).
    pub fn with_job_image(mut self, image: impl Into<String>) -> Self {
        self.job_image = image.into();
        self
    }

    /// An Api over the watched scope: one namespace, or the whole cluster.
    pub fn watched<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope>,
        K::DynamicType: Default,
    {
        match &self.namespace {
            Some(ns) => Api::namespaced(self.client.clone(), ns),
            None => Api::all(self.client.clone()),
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
        if let Err(e) = self
            .recorder
            .publish(reference, type_, reason, action, &note)
            .await
        {
            tracing::warn!(error = %e, reason, "failed to publish event");
        }
    }
}
