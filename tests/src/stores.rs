//! MemoryStore test helpers: apply a store, put a Secret, read a store's Events, delete and wait.

use std::time::Duration;

use aienv::api::memory_store::MemoryStore;
use k8s_openapi::api::{core::v1::Secret, events::v1::Event};
use kube::{
    Api,
    api::{DeleteParams, ListParams, Patch, PatchParams},
};

use crate::{
    agents::apply_json,
    testenv::{TestNamespace, wait_for},
};

/// How long a store may take to reach a condition on the loopback servers.
pub const WAIT: Duration = Duration::from_secs(60);

pub async fn wait_condition(
    api: &Api<MemoryStore>,
    name: &str,
    type_: &str,
    status: &str,
    reason: &str,
) -> anyhow::Result<MemoryStore> {
    crate::conditions::wait_condition(api, WAIT, name, type_, status, reason).await
}

pub async fn apply_store(
    api: &Api<MemoryStore>,
    name: &str,
    spec: serde_json::Value,
) -> anyhow::Result<()> {
    let obj = serde_json::json!({
        "apiVersion": "aienv.orchestr8.io/v1alpha1", "kind": "MemoryStore",
        "metadata": {"name": name}, "spec": spec,
    });
    apply_json(api, obj).await?;
    Ok(())
}

pub async fn put_secret(
    ns: &TestNamespace,
    name: &str,
    data: &[(&str, &str)],
) -> anyhow::Result<()> {
    let obj = serde_json::json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": {"name": name},
        "stringData": data.iter().map(|(k, v)| (k.to_string(), serde_json::Value::from(*v))).collect::<serde_json::Map<_, _>>(),
    });
    apply_json(&ns.api::<Secret>(), obj).await?;
    Ok(())
}

pub async fn touch(api: &Api<MemoryStore>, name: &str, value: &str) -> anyhow::Result<()> {
    let patch = serde_json::json!({"metadata": {"annotations": {"aienv.test/touch": value}}});
    api.patch(name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

pub async fn events_text(ns: &TestNamespace, name: &str) -> anyhow::Result<Vec<(String, String)>> {
    let events: Api<Event> = ns.api();
    Ok(events
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(name))
        .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
        .collect())
}

pub async fn delete_and_wait(api: &Api<MemoryStore>, name: &str) -> anyhow::Result<()> {
    api.delete(name, &DeleteParams::default()).await?;
    wait_for(WAIT, &format!("{name} deleted"), || async {
        Ok(api.get_opt(name).await?.is_none().then_some(()))
    })
    .await
}

pub async fn table_exists(pool: &sqlx::PgPool, table: &str) -> anyhow::Result<bool> {
    Ok(sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(table)
        .fetch_one(pool)
        .await?)
}

/// An external-mode store test's set-up: the test environment, the CRDs, a fresh namespace, a
/// fresh database whose superuser URI is in Secret `pg` (key `uri`), and the MemoryStore
/// controller scoped to the namespace. End it with [`ExternalScenario::finish`].
pub struct ExternalScenario {
    pub client: kube::Client,
    pub ns: TestNamespace,
    pub db: crate::testenv::TestDatabase,
    pub ops: crate::operator::RunningControllers,
    pub api: Api<MemoryStore>,
}

/// `None` when the test is to be skipped (no environment; see `require_env`).
pub async fn external_scenario(prefix: &str) -> anyhow::Result<Option<ExternalScenario>> {
    external_scenario_with(prefix, &[crate::operator::Which::MemoryStore]).await
}

/// [`external_scenario`] with other controllers beside the MemoryStore's.
pub async fn external_scenario_with(
    prefix: &str,
    which: &[crate::operator::Which],
) -> anyhow::Result<Option<ExternalScenario>> {
    let Some(env) = crate::testenv::require_env() else {
        return Ok(None);
    };
    let db = env.test_database(&prefix.replace('-', "_")).await?;
    let crate::operator::Scenario {
        client, ns, ops, ..
    } = crate::operator::Scenario::on(env, prefix, which).await?;
    put_secret(&ns, "pg", &[("uri", &db.url)]).await?;
    let api = ns.api();
    Ok(Some(ExternalScenario {
        client,
        ns,
        db,
        ops,
        api,
    }))
}

impl ExternalScenario {
    /// Stop the controller, delete the namespace and drop the database.
    pub async fn finish(self) -> anyhow::Result<()> {
        self.ops.stop().await;
        self.ns.cleanup().await?;
        self.db.cleanup().await
    }
}

/// Wait until `name`'s condition `type_` has `status` and a message containing `needle`.
pub async fn wait_condition_message(
    api: &Api<MemoryStore>,
    name: &str,
    type_: &str,
    status: &str,
    needle: &str,
) -> anyhow::Result<String> {
    let found = wait_for(
        WAIT,
        &format!("{type_}={status} saying {needle:?}"),
        || async {
            let s = api.get(name).await?;
            Ok(crate::conditions::condition(&s, type_)
                .filter(|(st, _, msg)| st == status && msg.contains(needle))
                .map(|(_, _, msg)| msg))
        },
    )
    .await;
    if found.is_err() {
        let last = api
            .get(name)
            .await
            .ok()
            .and_then(|s| crate::conditions::condition(&s, type_));
        anyhow::bail!("{found:?}; last {type_}: {last:?}");
    }
    found
}
