//! Watches shared by the controllers: one watch per kind for the whole process, its objects slimmed
//! before they are cached, each controller subscribing to the same stream. Secrets are cached as
//! metadata without annotations (`last-applied-configuration` can hold a Secret's data) or managed
//! fields; Deployments and StatefulSets without their pod spec, which the operator never reads.

use std::future::Future;

use futures::StreamExt;
use k8s_openapi::{
    NamespaceResourceScope,
    api::{
        apps::v1::{Deployment, StatefulSet},
        core::v1::{PodSpec, Secret},
    },
};
use kube::{
    Resource,
    core::PartialObjectMeta,
    runtime::{
        WatchStreamExt,
        reflector::{self, ReflectHandle, Store, store::Writer},
        watcher,
    },
};
use tracing::warn;

use super::{Context, policy};

/// Events a slow subscriber may fall behind before the watch waits for it.
const BUFFER: usize = 1024;

/// One kind's shared watch: its cache and the stream controllers subscribe to. Subscribe before
/// [`Shared::run`] starts it.
pub struct Shared<K>
where
    K: Resource + Clone + 'static,
    K::DynamicType: std::hash::Hash + Eq + Clone,
{
    pub store: Store<K>,
    writer: Writer<K>,
}

impl<K> Shared<K>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + 'static,
    K: serde::de::DeserializeOwned,
{
    pub fn new() -> Self {
        let (store, writer) = reflector::store_shared(BUFFER);
        Self { store, writer }
    }

    pub fn subscribe(&self) -> ReflectHandle<K> {
        self.writer
            .subscribe()
            .expect("a shared store's writer hands out subscribers")
    }

    /// Drive the watch (until the process or the controllers stop), slimming each object with
    /// `slim` before it is cached and passed on.
    pub fn run(
        self,
        ctx: &Context,
        slim: impl FnMut(&mut K) + Send + 'static,
    ) -> impl Future<Output = ()> + Send + 'static
    where
        K: Resource<Scope = NamespaceResourceScope>,
    {
        let api = ctx.watched::<K>();
        let metrics = ctx.metrics.clone();
        let kind = K::kind(&()).to_string();
        async move {
            let events = watcher(api, watcher::Config::default().any_semantic())
                .default_backoff()
                .modify(slim)
                .reflect_shared(self.writer);
            let mut events = std::pin::pin!(events);
            while let Some(event) = events.next().await {
                if let Err(e) = event {
                    let label = policy::watch_error_label(&e);
                    metrics.watch_error("shared", label);
                    warn!(kind = %kind, error = %e, "shared watch failed; retrying");
                }
            }
        }
    }
}

impl<K> Default for Shared<K>
where
    K: Resource<DynamicType = ()> + Clone + std::fmt::Debug + Send + Sync + 'static,
    K: serde::de::DeserializeOwned,
{
    fn default() -> Self {
        Self::new()
    }
}

/// Secret metadata as cached: no annotations, no managed fields.
pub fn slim_secret(s: &mut PartialObjectMeta<Secret>) {
    s.metadata.annotations = None;
    s.metadata.managed_fields = None;
}

/// A workload as cached: labels, the pod template's metadata, replicas, update strategy, status.
pub fn slim_deployment(d: &mut Deployment) {
    d.metadata.annotations = None;
    d.metadata.managed_fields = None;
    if let Some(spec) = d.spec.as_mut() {
        spec.template.spec = Some(PodSpec::default());
    }
}

pub fn slim_statefulset(s: &mut StatefulSet) {
    s.metadata.annotations = None;
    s.metadata.managed_fields = None;
    if let Some(spec) = s.spec.as_mut() {
        spec.template.spec = Some(PodSpec::default());
        spec.volume_claim_templates = None;
    }
}

async fn optional(f: Option<impl Future<Output = ()>>) {
    if let Some(f) = f {
        f.await
    }
}

/// The shared watches of a set of controllers.
pub struct Caches {
    pub secrets: Shared<PartialObjectMeta<Secret>>,
    pub deployments: Shared<Deployment>,
    pub statefulsets: Shared<StatefulSet>,
}

impl Caches {
    pub fn new() -> Self {
        Self {
            secrets: Shared::new(),
            deployments: Shared::new(),
            statefulsets: Shared::new(),
        }
    }

    /// What the controllers read from the caches (the stores).
    pub fn readers(&self) -> Readers {
        Readers {
            deployments: self.deployments.store.clone(),
            statefulsets: self.statefulsets.store.clone(),
        }
    }

    /// Drive the shared watches: Secrets always, workloads when `workloads` (some controller
    /// subscribed to them).
    pub fn run(self, ctx: &Context, workloads: bool) -> impl Future<Output = ()> + Send + 'static {
        let secrets = self.secrets.run(ctx, slim_secret);
        let deployments = workloads.then(|| self.deployments.run(ctx, slim_deployment));
        let statefulsets = workloads.then(|| self.statefulsets.run(ctx, slim_statefulset));
        async move {
            tokio::join!(secrets, optional(deployments), optional(statefulsets));
        }
    }
}

impl Default for Caches {
    fn default() -> Self {
        Self::new()
    }
}

/// Read side of the caches, cloned into controllers.
#[derive(Clone)]
pub struct Readers {
    pub deployments: Store<Deployment>,
    pub statefulsets: Store<StatefulSet>,
}

impl Readers {
    /// Wait until every cache has its first list (reading earlier would see nothing).
    pub async fn ready(&self) {
        let _ = self.deployments.wait_until_ready().await;
        let _ = self.statefulsets.wait_until_ready().await;
    }
}

/// Subscriptions for one controller, taken before the caches run.
pub struct Subscriptions {
    pub secrets: ReflectHandle<PartialObjectMeta<Secret>>,
    pub deployments: Option<ReflectHandle<Deployment>>,
    pub statefulsets: Option<ReflectHandle<StatefulSet>>,
    pub readers: Readers,
}

impl Caches {
    /// Subscriptions for a controller that maps Secrets only.
    pub fn secrets_only(&self) -> Subscriptions {
        Subscriptions {
            secrets: self.secrets.subscribe(),
            deployments: None,
            statefulsets: None,
            readers: self.readers(),
        }
    }

    /// Subscriptions for a controller that also maps workloads.
    pub fn with_workloads(&self) -> Subscriptions {
        Subscriptions {
            secrets: self.secrets.subscribe(),
            deployments: Some(self.deployments.subscribe()),
            statefulsets: Some(self.statefulsets.subscribe()),
            readers: self.readers(),
        }
    }
}
