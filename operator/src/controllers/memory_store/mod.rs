//! MemoryStore controller: validate → provision (managed / external / cloudnativepg) → connect →
//! migrate and build the per-store DDL → status. A finalizer (deletionPolicy: Delete only) removes
//! the data that lives outside Kubernetes objects.

pub mod children;
pub mod connection;
pub mod deletion;
mod events;
pub mod index_builds;
pub mod pools;
pub mod server;
pub mod status;
pub mod workers;

use std::{sync::Arc, time::Duration};

use futures::FutureExt;
use k8s_openapi::api::{
    apps::v1::{Deployment, StatefulSet},
    core::v1::{Secret, Service},
    networking::v1::NetworkPolicy,
};
use kube::{
    Api, Resource, ResourceExt,
    core::{DeserializeGuard, PartialObjectMeta},
    runtime::{
        Controller,
        controller::Action,
        events::EventType,
        reflector::{ObjectRef, Store},
        watcher,
    },
};
use tracing::{Instrument, info_span, warn};

use self::{
    connection::{ConnInfo, secret_text},
    index_builds::{BUILD_POLL, BuildSeen, IndexBuilds},
    pools::Pools,
    status::{Finding, IndexReport},
    workers::WorkersState,
};
use crate::{
    api::memory_store::{
        Counts, DeletionPolicy, Endpoint, MemoryStore, MemoryStoreStatus, StoreMode,
    },
    conditions,
    controller::shared::Subscriptions,
    controller::{
        Context, Error, Problem, Result, apply,
        children::{ChildSet, Lifetime},
        finalizer, mapping,
        policy::{self, Backoffs},
    },
    memory::{
        ddl::StoreLayout,
        error::describe,
        index_build,
        schema::{self, IndexState},
        tenancy::{AgentLogin, StoreIdentity, StoreTarget},
    },
};

/// Label of this controller in metrics and logs.
pub const CONTROLLER: &str = "memorystore";
/// Finalizer guarding data outside Kubernetes objects (set only with deletionPolicy: Delete).
pub const FINALIZER: &str = "aienv.orchestr8.io/memorystore-data";

type Guarded = DeserializeGuard<MemoryStore>;

pub struct State {
    pub ctx: Arc<Context>,
    pools: Pools,
    backoffs: Backoffs,
    builds: IndexBuilds,
    stores: Store<Guarded>,
}

impl State {
    /// Forget the pools, backoffs and builds of stores that are gone (a store deleted under
    /// Retain has no finalizer, so no reconcile ever sees it go).
    fn sweep(&self) {
        let present =
            |ns: &str, name: &str| self.stores.get(&ObjectRef::new(name).within(ns)).is_some();
        self.pools.retain(present);
        self.backoffs.retain(present);
        self.builds.retain(present);
    }
}

/// Run the controller until `shutdown` resolves.
pub async fn run(
    ctx: Arc<Context>,
    subs: Subscriptions,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    let metrics = ctx.metrics.clone();
    let stores = ctx.watched::<Guarded>();
    let cfg = || watcher::Config::default().any_semantic();
    let controller = Controller::new(stores, cfg());
    let store = controller.store();
    let state = Arc::new(State {
        ctx: ctx.clone(),
        pools: Pools::default(),
        backoffs: Backoffs::default(),
        builds: IndexBuilds::default(),
        stores: store.clone(),
    });
    let owned_cfg = || cfg().labels(children::LABEL_STORE);
    policy::drain(
        controller
            .owns(ctx.watched::<StatefulSet>(), owned_cfg())
            .owns(ctx.watched::<Deployment>(), owned_cfg())
            .owns(ctx.watched::<Service>(), owned_cfg())
            .owns(ctx.watched::<NetworkPolicy>(), owned_cfg())
            .watches_shared_stream(subs.secrets, move |secret| stores_using(&store, &secret))
            .graceful_shutdown_on(shutdown)
            .run(reconcile, error_policy, state),
        CONTROLLER,
        &metrics,
    )
    .await;
}

/// Stores that read this Secret: their external connection Secret, CloudNativePG's app Secret,
/// or one of their own Secrets.
fn stores_using(
    store: &Store<Guarded>,
    secret: &PartialObjectMeta<Secret>,
) -> Vec<ObjectRef<Guarded>> {
    mapping::users_of(store, &secret.metadata, |s: &MemoryStore, name| {
        let n = s.name_any();
        let external = s
            .spec
            .external
            .as_ref()
            .map(|e| e.connection_secret_ref.name.as_str());
        external == Some(name)
            || name == children::cnpg_app_secret_name(&n)
            || name == children::credentials_secret_name(&n)
            || name == children::app_secret_name(&n)
            || name == children::agent_secret_name(&n)
    })
}

async fn reconcile(guarded: Arc<Guarded>, state: Arc<State>) -> Result<Action> {
    let ctx = &state.ctx;
    let _timer = ctx.metrics.reconcile(CONTROLLER);
    state.sweep();
    let store = match &guarded.0 {
        Ok(s) => s,
        Err(invalid) => {
            let name = invalid.metadata.name.clone().unwrap_or_default();
            let ns = invalid.metadata.namespace.clone().unwrap_or_default();
            if invalid.metadata.deletion_timestamp.is_some() {
                // Cleanup must work even when the spec cannot be decoded.
                return deletion::finalize_raw(&ns, &name, &state).boxed().await;
            }
            warn!(%name, error = %invalid.error, "undecodable MemoryStore");
            return Err(Error::Undecodable(format!(
                "MemoryStore {name}: {}",
                invalid.error
            )));
        }
    };
    let ns = store
        .namespace()
        .ok_or(Error::MissingField("metadata.namespace"))?;
    let name = store.name_any();
    let span = info_span!("reconcile", controller = CONTROLLER, namespace = %ns, name = %name);
    async {
        if store.metadata.deletion_timestamp.is_some() {
            return deletion::finalize(store, &ns, &state).boxed().await;
        }
        let api: Api<MemoryStore> = Api::namespaced(ctx.client.clone(), &ns);
        match store.spec.deletion_policy {
            DeletionPolicy::Delete => finalizer::add_finalizer(&api, store, FINALIZER).await?,
            DeletionPolicy::Retain => finalizer::remove_finalizer(&api, store, FINALIZER).await?,
        }
        let observed = observe(store, &ns, &name, &state).boxed().await?;
        let action = write_status(store, &ns, &name, observed, ctx).await?;
        state.backoffs.succeeded(store);
        Ok(action)
    }
    .instrument(span)
    .await
}

type Observed = (Finding, Option<Endpoint>, Option<Counts>, Embedders);

/// How far the store's embedding workers and its embedding server are.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Embedders {
    pub workers: WorkersState,
    pub server: WorkersState,
}

impl Embedders {
    fn not_observed() -> Self {
        Self {
            workers: WorkersState::NotObserved,
            server: WorkersState::NotObserved,
        }
    }
}

/// Provision what the mode needs, connect, claim the schema, migrate, build the index and the
/// agents' login, and report.
async fn observe(store: &MemoryStore, ns: &str, name: &str, state: &State) -> Result<Observed> {
    let ctx = &state.ctx;
    let invalid = |p: Problem| Ok((Finding::Invalid(p), None, None, Embedders::not_observed()));
    let not_connected = |p: Problem| {
        Ok((
            Finding::NotConnected(p),
            None,
            None,
            Embedders::not_observed(),
        ))
    };
    let layout = match StoreLayout::from_spec(&store.spec) {
        Ok(l) => l,
        Err(p) => return invalid(p),
    };
    if let Err(m) = index_build::check_memory_setting(&store.spec.index.maintenance_work_mem) {
        return invalid(Problem::invalid_spec(m));
    }
    let identity = StoreIdentity {
        namespace: ns.to_string(),
        name: name.to_string(),
        uid: store
            .metadata
            .uid
            .clone()
            .ok_or(Error::MissingField("metadata.uid"))?,
    };
    let owner = store
        .controller_owner_ref(&())
        .ok_or(Error::MissingField("metadata.uid"))?;
    let mut set = ChildSet::new(
        ctx.client.clone(),
        ns,
        owner,
        children::LABEL_STORE,
        apply::manager::MEMORY_STORE,
        CONTROLLER,
        &ctx.metrics,
    );
    // Refuse before anything is applied when `<store>-app` belongs to someone else.
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let app_name = children::app_secret_name(name);
    if let Some(c) = set.conflict::<Secret>(&app_name).await? {
        return not_connected(Problem::new("SecretConflict", c.to_string()));
    }
    let target_on = |database: &str| {
        StoreTarget::new(
            identity.clone(),
            database,
            store.spec.schema.as_deref(),
            None,
        )
    };
    let conn = match provision(store, ns, name, ctx, &mut set, &target_on)
        .boxed()
        .await?
    {
        Ok(c) => c,
        Err(p) => return not_connected(p),
    };
    // CloudNativePG's Cluster declares the role for its own database, whatever the app Secret says.
    let role_database = match store.spec.mode {
        StoreMode::Cloudnativepg => children::PG_DATABASE,
        _ => conn.database.as_str(),
    };
    let mut target = match target_on(role_database) {
        Ok(t) => t,
        Err(m) => return invalid(Problem::invalid_spec(m)),
    };
    let agent = ensure_agent_secret(&secrets, store, &target.agent_role).await?;
    let Some(agent_password) = secret_text(&agent, "password") else {
        return not_connected(Problem::new(
            "CredentialsInvalid",
            format!(
                "Secret {ns}/{} lacks key \"password\": delete it to have a new agent password generated",
                children::agent_secret_name(name)
            ),
        ));
    };
    target.agent = Some(match store.spec.mode {
        StoreMode::Cloudnativepg => AgentLogin::ProvidedRole,
        _ => AgentLogin::Password(agent_password.clone()),
    });
    let endpoint = Endpoint {
        host: conn.host.clone(),
        port: conn.port,
        secret_name: app_name,
        schema: Some(target.schema.clone()),
    };
    let shown = conn.display();
    let pool = match state.pools.get(ns, name, &conn, &target.schema) {
        Ok(p) => p,
        Err(e) => {
            return Ok((
                Finding::NotConnected(Problem::new(
                    "InvalidConnectionSecret",
                    format!("connection settings for {shown} are invalid: {e}"),
                )),
                Some(endpoint),
                None,
                Embedders::not_observed(),
            ));
        }
    };
    if let Err(e) = sqlx::query("SELECT 1").execute(&pool).boxed().await {
        let reason = match store.spec.mode {
            StoreMode::External => "DatabaseUnreachable",
            _ => "WaitingForDatabase",
        };
        return Ok((
            Finding::NotConnected(Problem::new(
                reason,
                format!("cannot connect to {shown}: {}", describe(&e)),
            )),
            Some(endpoint),
            None,
            Embedders::not_observed(),
        ));
    }
    let prepared = match schema::prepare(&pool, &target, &layout).boxed().await {
        Ok(p) => p,
        Err(e) => {
            return Ok((
                Finding::SchemaFailed {
                    endpoint: shown,
                    reason: e.label().into(),
                    message: e.to_string(),
                },
                Some(endpoint),
                None,
                Embedders::not_observed(),
            ));
        }
    };
    events::prepared(ctx, &store.object_ref(&()), &prepared, &target, &shown).await;
    // Agents get their own login only once the role and its grants exist; never the owner's.
    let agent_conn = conn.as_agent(&target.agent_role, &agent_password, &target.schema);
    let app = children::app_secret(store, agent_conn.secret_data());
    if let Err(c) = set.add(app, Lifetime::Owned).await? {
        return not_connected(Problem::new("SecretConflict", c.to_string()));
    }
    // The workers connect with that Secret, so they come after it. Without a provider there are
    // none; their Deployment is looked for (to delete it) only if this store reported workers,
    // so an operator without rights on Deployments still serves stores that have none.
    let reported = |type_: &str| {
        store
            .status
            .as_ref()
            .is_some_and(|s| conditions::get(&s.conditions, type_).is_some())
    };
    let had_workers = reported(status::WORKERS_READY);
    // The embedding server likewise (its Service is looked for only if it ran).
    let server = match server::server(store) {
        None => {
            if reported(status::SERVER_READY) {
                set.expect::<Deployment>().await?;
                set.expect::<Service>().await?;
            }
            WorkersState::NotConfigured
        }
        Some((d, svc)) => match set.add(d, Lifetime::Owned).await? {
            Ok(applied) => match set.add(svc, Lifetime::Owned).await? {
                Ok(_) => workers::state(&applied, vec![]),
                Err(c) => WorkersState::Conflict(c.to_string()),
            },
            Err(c) => WorkersState::Conflict(c.to_string()),
        },
    };
    let workers = match workers::deployment(store, &ctx.job_image) {
        None => {
            if had_workers {
                set.expect::<Deployment>().await?;
            }
            WorkersState::NotConfigured
        }
        Some(d) => match set.add(d, Lifetime::Owned).await? {
            Ok(applied) => {
                // Unreadable reports (an old schema, a lost connection) only leave them out.
                let reports = crate::embed::report::read_reports(&pool)
                    .boxed()
                    .await
                    .unwrap_or_default();
                workers::state(&applied, reports)
            }
            Err(c) => WorkersState::Conflict(c.to_string()),
        },
    };
    set.finish().await?;
    let index = index_report(store, ns, name, &pool, &layout, &prepared, state).await;
    let counts = schema::counts(&pool).boxed().await.ok().map(|c| Counts {
        memories: c.memories,
        pending_embeddings: c.pending_embeddings,
        failed_embeddings: c.failed_embeddings,
    });
    Ok((
        Finding::Prepared {
            endpoint: shown,
            prepared: Box::new(prepared),
            layout,
            index,
        },
        Some(endpoint),
        counts,
        Embedders { workers, server },
    ))
}

/// Start (or look at) the background build of a missing index.
async fn index_report(
    store: &MemoryStore,
    ns: &str,
    name: &str,
    pool: &sqlx::PgPool,
    layout: &StoreLayout,
    prepared: &schema::Prepared,
    state: &State,
) -> IndexReport {
    let progress = || async {
        match index_build::progress(pool).await {
            Ok(Some(p)) => p.describe(),
            _ => "starting".to_string(),
        }
    };
    match &prepared.index {
        IndexState::Ready(_) | IndexState::Blocked => IndexReport::Built,
        IndexState::Building(_) => IndexReport::Building(progress().await),
        IndexState::Missing(index) => {
            let seen = state.builds.ensure(
                ns,
                name,
                pool,
                layout,
                &store.spec.index.maintenance_work_mem,
            );
            match seen {
                BuildSeen::Failed(m) => IndexReport::Failed(m),
                BuildSeen::Started => {
                    state
                        .ctx
                        .event(
                            &store.object_ref(&()),
                            EventType::Normal,
                            "IndexBuildStarted",
                            "BuildIndex",
                            format!(
                                "building index {index} in the background (maintenance_work_mem {})",
                                store.spec.index.maintenance_work_mem
                            ),
                        )
                        .await;
                    IndexReport::Building("starting".into())
                }
                BuildSeen::Running => IndexReport::Building(progress().await),
            }
        }
    }
}

/// `<store>-agent`: generated once, kept like the credentials; its username follows the role.
async fn ensure_agent_secret(
    secrets: &Api<Secret>,
    store: &MemoryStore,
    role: &str,
) -> Result<Secret> {
    let m = apply::manager::MEMORY_STORE;
    let wanted = children::agent_secret(store, role, children::generate_password());
    let current = apply::create_if_absent(secrets, m, &wanted).await?;
    let current = own_credentials_per_policy(secrets, current, &wanted, store).await?;
    let ours = current
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(children::LABEL_STORE))
        == Some(&store.name_any());
    match secret_text(&current, "password") {
        Some(password) if ours && secret_text(&current, "username").as_deref() != Some(role) => {
            let fixed = children::agent_secret(store, role, password);
            apply::apply(secrets, m, &fixed).await
        }
        _ => Ok(current),
    }
}

/// Apply the mode's children and work out the owner's connection details. `target_on` names the
/// store's schema and agents' role for a database (CloudNativePG's Cluster declares the role).
async fn provision(
    store: &MemoryStore,
    ns: &str,
    name: &str,
    ctx: &Context,
    set: &mut ChildSet<'_>,
    target_on: &(dyn Fn(&str) -> std::result::Result<StoreTarget, String> + Sync),
) -> Result<Result<ConnInfo, Problem>> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let m = apply::manager::MEMORY_STORE;
    let conflict = |c: apply::Conflict| Problem::new("ChildConflict", c.to_string());
    match store.spec.mode {
        StoreMode::External => {
            let Some(ext) = &store.spec.external else {
                return Ok(Err(Problem::invalid_spec(
                    "mode: external needs spec.external.connectionSecretRef",
                )));
            };
            let r = &ext.connection_secret_ref;
            let secret = secrets.get_opt(&r.name).await?;
            Ok(connection::from_external_secret(r, secret.as_ref(), ns))
        }
        StoreMode::Managed => {
            let managed = store.spec.managed.clone().unwrap_or_else(|| {
                serde_json::from_value(serde_json::json!({})).expect("defaults")
            });
            let wanted = children::credentials_secret(store, children::generate_password());
            let creds = apply::create_if_absent(&secrets, m, &wanted).await?;
            let creds = own_credentials_per_policy(&secrets, creds, &wanted, store).await?;
            let hash = children::credentials_hash(&creds);
            let owned = Lifetime::Owned;
            if let Err(c) = set.add(children::headless_service(store), owned).await? {
                return Ok(Err(conflict(c)));
            }
            let client = match set.add(children::client_service(store), owned).await? {
                Ok(s) => s,
                Err(c) => return Ok(Err(conflict(c))),
            };
            let sts = children::statefulset(store, &managed, &hash);
            if let Err(c) = set.add(sts, owned).await? {
                return Ok(Err(conflict(c)));
            }
            if let Err(c) = set.add(children::network_policy(store), owned).await? {
                return Ok(Err(conflict(c)));
            }
            let cluster_ip = client
                .spec
                .and_then(|s| s.cluster_ip)
                .filter(|ip| !ip.is_empty() && ip != "None");
            Ok(connection::from_credentials(
                &creds,
                children::managed_host(name, ns),
                children::PG_PORT,
            )
            .map(|c| c.dialing(cluster_ip)))
        }
        StoreMode::Cloudnativepg => {
            let Some(spec) = &store.spec.cloudnativepg else {
                return Ok(Err(Problem::invalid_spec(
                    "mode: cloudnativepg needs spec.cloudnativepg",
                )));
            };
            let role = match target_on(children::PG_DATABASE) {
                Ok(t) => t.agent_role,
                Err(message) => return Ok(Err(Problem::invalid_spec(message))),
            };
            // CloudNativePG reads the role's password from this Secret: it must exist first.
            ensure_agent_secret(&secrets, store, &role).await?;
            let cluster = children::cnpg_cluster(store, spec, &role);
            let lifetime = children::data_lifetime(store);
            match set
                .add_dynamic(&children::cnpg_api_resource(), cluster, lifetime)
                .await
            {
                Ok(Ok(_)) => {}
                Ok(Err(c)) => return Ok(Err(conflict(c))),
                Err(Error::Kube(kube::Error::Api(s))) if s.code == 404 => {
                    return Ok(Err(Problem::new(
                        "CloudNativePGNotInstalled",
                        "the CloudNativePG operator is not installed (no clusters.postgresql.cnpg.io CRD): install it (https://cloudnative-pg.io/documentation/current/installation_upgrade/) or use mode: managed",
                    )));
                }
                Err(e) => return Err(e),
            }
            let app = children::cnpg_app_secret_name(name);
            match secrets.get_opt(&app).await? {
                Some(s) => Ok(connection::from_cnpg_secret(&s)),
                None => Ok(Err(Problem::new(
                    "WaitingForDatabase",
                    format!(
                        "waiting for CloudNativePG to create Cluster {} and its app Secret {app}",
                        children::cnpg_cluster_name(name)
                    ),
                ))),
            }
        }
    }
}

/// The credentials Secret follows the deletion policy: owned (collected with the store) under
/// Delete, unowned under Retain.
async fn own_credentials_per_policy(
    secrets: &Api<Secret>,
    current: Secret,
    wanted: &Secret,
    store: &MemoryStore,
) -> Result<Secret> {
    let uid = store.metadata.uid.as_deref().unwrap_or_default();
    let refs = current
        .metadata
        .owner_references
        .clone()
        .unwrap_or_default();
    let ours = crate::controller::children::controlled_by(&refs, uid);
    let want_owned = wanted.metadata.owner_references.is_some();
    // Someone else's Secret of that name (another controller's, or one without our store label)
    // is never adopted.
    let labelled = current
        .metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(children::LABEL_STORE))
        == Some(&store.name_any());
    let foreign = !labelled || (refs.iter().any(|r| r.controller == Some(true)) && !ours);
    if foreign || ours == want_owned {
        return Ok(current);
    }
    let patch =
        serde_json::json!({"metadata": {"ownerReferences": wanted.metadata.owner_references}});
    let name = current.metadata.name.clone().unwrap_or_default();
    Ok(secrets
        .patch(
            &name,
            &kube::api::PatchParams::default(),
            &kube::api::Patch::Merge(&patch),
        )
        .await?)
}

/// Fold the finding into the status; write only when something but timestamps changed; publish an
/// Event when Ready changes.
async fn write_status(
    store: &MemoryStore,
    ns: &str,
    name: &str,
    (finding, endpoint, counts, Embedders { workers, server }): Observed,
    ctx: &Context,
) -> Result<Action> {
    let requeue = match &finding {
        Finding::Prepared {
            index: IndexReport::Building(_),
            ..
        } => Action::requeue(BUILD_POLL),
        // Workers report a fixed provider only through the database: look again soon.
        Finding::Prepared { .. }
            if status::workers_condition(&workers)
                .into_iter()
                .chain(status::server_condition(&server))
                .any(|c| {
                    c.status != crate::conditions::Status::True && c.reason != "ScaledToZero"
                }) =>
        {
            Action::requeue(Duration::from_secs(15))
        }
        Finding::Prepared { .. } => Action::requeue(Duration::from_secs(60)),
        Finding::Invalid(_) => Action::await_change(),
        _ => Action::requeue(Duration::from_secs(15)),
    };
    let old = store.status.clone().unwrap_or_default();
    let now = ctx.clock.now_time();
    let mut conds = old.conditions.clone();
    if !matches!(finding, Finding::Prepared { .. }) {
        conditions::remove(&mut conds, &[status::REINDEX_REQUIRED]);
    }
    if workers == WorkersState::NotConfigured {
        conditions::remove(&mut conds, &[status::WORKERS_READY]);
    }
    if server == WorkersState::NotConfigured {
        conditions::remove(&mut conds, &[status::SERVER_READY]);
    }
    let mut desired = status::conditions(&finding);
    desired.extend(status::workers_condition(&workers));
    desired.extend(status::server_condition(&server));
    let conds = conditions::merge(&conds, desired, store.metadata.generation, &now);
    let mut new = MemoryStoreStatus {
        observed_generation: store.metadata.generation,
        conditions: conds,
        endpoint: endpoint.or(old.endpoint.clone()),
        pgvector_version: old.pgvector_version.clone(),
        schema_version: old.schema_version,
        counts: counts.or(old.counts.clone()),
    };
    if let Finding::Prepared { prepared, .. } = &finding {
        new.pgvector_version = prepared.pgvector_version.clone();
        new.schema_version = Some(prepared.schema_version);
    }
    let api: Api<MemoryStore> = Api::namespaced(ctx.client.clone(), ns);
    let writer = crate::controller::status::Writer {
        controller: CONTROLLER,
        manager: apply::manager::MEMORY_STORE,
        reference: &store.object_ref(&()),
        progressing: &[],
    };
    if writer.write(ctx, &api, name, &old, &new, false).await? {
        events::workers_changed(ctx, writer.reference, &old.conditions, &new.conditions).await;
    }
    Ok(requeue)
}

fn error_policy(guarded: Arc<Guarded>, error: &Error, state: Arc<State>) -> Action {
    policy::on_error(CONTROLLER, &guarded, error, &state.ctx, &state.backoffs)
}
