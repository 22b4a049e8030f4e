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
}

impl Context {
    pub fn new(
        client: Client,
        namespace: Option<String>,
        metrics: Metrics,
        clock: Arc<dyn Clock>,
    ) -> Self {
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
        }
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
