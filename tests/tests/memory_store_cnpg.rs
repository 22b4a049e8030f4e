//! The MemoryStore controller's cloudnativepg mode on the real control plane: a missing CRD is
//! reported, then the Cluster is created and its app Secret used.
//!
//! A binary of its own because it creates (and on a re-run first deletes) the CNPG CRD. A CRD
//! change makes kube-controller-manager's garbage collector reset its REST mapping and resync its
//! monitors, and owners it cannot map meanwhile are retried with backoff; the one CI run where a
//! StatefulSet's PVC outlived a 60 s wait had this test creating the CRD beside it.

use aienv::{
    api::memory_store::MemoryStore, controllers::memory_store::CONTROLLER, memory::Memories,
};
use aienv_tests::{
    conditions::condition,
    operator::{self, CNPG_CRD, Which, install_cnpg_crd, install_crds},
    stores::{WAIT, apply_store, put_secret, touch, wait_condition},
    testenv::{require_env, wait_for},
};
use k8s_openapi::{
    api::core::v1::{Secret, Service},
    apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
};
use kube::{
    Api,
    api::{ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams},
};

#[tokio::test]
async fn cloudnativepg_mode_reports_a_missing_crd_then_uses_the_cluster() -> anyhow::Result<()> {
    let Some(env) = require_env() else {
        return Ok(());
    };
    let client = env.kube_client().await?;
    install_crds(&client).await?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let crd_name = CNPG_CRD;
    if crds.get_opt(crd_name).await?.is_some() {
        crds.delete(crd_name, &DeleteParams::default()).await?;
        wait_for(WAIT, "CNPG CRD gone", || async {
            Ok(crds.get_opt(crd_name).await?.is_none().then_some(()))
        })
        .await?;
    }
    let ns = env.test_namespace(&client, "memstore-cnpg").await?;
    let db = env.test_database("memstore_cnpg").await?;
    // Roles are server-wide and this one's name is fixed (the Cluster's database is always
    // "memory"): one left by an interrupted run goes first.
    let role = aienv::memory::tenancy::agent_role_name("memory", "aienv_mem");
    sqlx::query(sqlx::AssertSqlSafe(format!("DROP ROLE IF EXISTS {role}")))
        .execute(&db.pool)
        .await?;
    let ops = operator::start(&client, ns.name(), &[Which::MemoryStore]);
    let api: Api<MemoryStore> = ns.api();
    apply_store(
        &api,
        "mem",
        serde_json::json!({"mode": "cloudnativepg", "cloudnativepg": {"instances": 3, "storage": {"size": "20Gi"}},
            "embedding": {"dimensions": 4}}),
    )
    .await?;
    let s = wait_condition(
        &api,
        "mem",
        "DatabaseReady",
        "False",
        "CloudNativePGNotInstalled",
    )
    .await?;
    assert!(condition(&s, "Ready").unwrap().2.contains("install"));

    install_cnpg_crd(&client).await?;
    let ar = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("postgresql.cnpg.io", "v1", "Cluster"),
        "clusters",
    );
    let clusters: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns.name(), &ar);
    let cluster = wait_for(WAIT, "Cluster mem-pg", || async {
        Ok(clusters.get_opt("mem-pg").await.ok().flatten())
    })
    .await?;
    assert_eq!(cluster.data["spec"]["instances"], 3);
    assert_eq!(cluster.data["spec"]["storage"]["size"], "20Gi");
    assert!(
        cluster.data["spec"]["imageName"]
            .as_str()
            .unwrap()
            .contains("postgresql")
    );
    // deletionPolicy defaults to Retain: the Cluster (the database) must outlive the store, so
    // the garbage collector is given no ownerReference to follow.
    assert!(
        cluster.metadata.owner_references.is_none(),
        "Retain: Cluster must not be owned"
    );
    wait_condition(&api, "mem", "DatabaseReady", "False", "WaitingForDatabase").await?;

    // What CloudNativePG would create for the app user; here it points at the harness database.
    let u = url::Url::parse(&db.url)?;
    put_secret(
        &ns,
        "mem-pg-app",
        &[
            ("uri", &db.url),
            ("host", u.host_str().unwrap()),
            ("port", &u.port().unwrap().to_string()),
            ("dbname", &db.name),
            ("user", u.username()),
            ("password", u.password().unwrap()),
        ],
    )
    .await?;
    // CloudNativePG creates the agents' role from `mem-agent` (Cluster spec.managed.roles); until
    // it has, the store says what it waits for. Here the test does CloudNativePG's part.
    let s = wait_condition(&api, "mem", "SchemaReady", "False", "AgentRoleFailed").await?;
    assert!(
        condition(&s, "SchemaReady")
            .unwrap()
            .2
            .contains("waiting for CloudNativePG")
    );
    let agent = ns.api::<Secret>().get("mem-agent").await?;
    let field = |k: &str| String::from_utf8(agent.data.clone().unwrap()[k].0.clone()).unwrap();
    assert_eq!(field("username"), role);
    assert_eq!(
        cluster.data["spec"]["managed"]["roles"][0]["name"],
        serde_json::Value::from(role.clone())
    );
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "CREATE ROLE {role} LOGIN PASSWORD '{}'",
        field("password")
    )))
    .execute(&db.pool)
    .await?;
    touch(&api, "mem", "role").await?;
    wait_condition(&api, "mem", "Ready", "True", "StoreReady").await?;
    let app = ns.api::<Secret>().get("mem-app").await?;
    let app_field = |k: &str| String::from_utf8(app.data.clone().unwrap()[k].0.clone()).unwrap();
    assert_eq!(app_field("database"), db.name);
    assert_eq!(app_field("user"), role);
    let as_agent = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&app_field("uri"))
        .await?;
    Memories::open(as_agent.clone()).await?;
    as_agent.close().await;

    // CloudNativePG's own Services (which a label copied by inheritedMetadata, or a user, may give
    // the store label) are not the store's: reconciles never delete them.
    assert!(
        cluster.data["spec"].get("inheritedMetadata").is_none(),
        "our labels must not be copied onto CloudNativePG's objects"
    );
    let services = ns.api::<Service>();
    for svc in ["mem-pg-rw", "mem-pg-ro"] {
        let obj = serde_json::json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": svc, "labels": {"aienv.orchestr8.io/store": "mem", "cnpg.io/cluster": "mem-pg"},
                "ownerReferences": [{"apiVersion": "postgresql.cnpg.io/v1", "kind": "Cluster", "name": "mem-pg",
                    "uid": cluster.metadata.uid.clone().unwrap(), "controller": true}]},
            "spec": {"ports": [{"port": 5432}], "selector": {"cnpg.io/cluster": "mem-pg"}},
        });
        services
            .patch(
                svc,
                &PatchParams::apply("aienv-tests").force(),
                &Patch::Apply(&obj),
            )
            .await?;
    }
    for round in ["a", "b"] {
        let before = ops.ctx.metrics.reconciles(CONTROLLER);
        touch(&api, "mem", round).await?;
        wait_for(WAIT, "a reconcile", || async {
            Ok((ops.ctx.metrics.reconciles(CONTROLLER) > before).then_some(()))
        })
        .await?;
    }
    for svc in ["mem-pg-rw", "mem-pg-ro"] {
        let s = services.get_opt(svc).await?;
        assert!(
            s.is_some_and(|s| s.metadata.deletion_timestamp.is_none()),
            "{svc} of CloudNativePG was deleted by the MemoryStore controller"
        );
    }

    // Switching to Delete hands the Cluster to the store (and so to the garbage collector).
    let mut spec = api.get("mem").await?.spec;
    spec.deletion_policy = aienv::api::memory_store::DeletionPolicy::Delete;
    apply_store(&api, "mem", serde_json::to_value(&spec)?).await?;
    wait_for(WAIT, "Cluster owned by the store", || async {
        let c = clusters.get("mem-pg").await?;
        Ok(c.metadata
            .owner_references
            .filter(|o| o.iter().any(|o| o.kind == "MemoryStore"))
            .map(|_| ()))
    })
    .await?;
    ops.stop().await;
    ns.cleanup().await?;
    // Only once the operator is stopped: a reconcile still connecting as the role could own
    // something again between DROP OWNED and DROP ROLE.
    for sql in [format!("DROP OWNED BY {role}"), format!("DROP ROLE {role}")] {
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&db.pool)
            .await?;
    }
    db.cleanup().await
}
