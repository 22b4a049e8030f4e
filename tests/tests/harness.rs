//! Checks of the local test environment itself (`scripts/testenv up`): the
//! control plane and its controllers, PostgreSQL + pgvector, S3 and GCS.
//! Each test skips when the environment is not running, unless
//! `AIENV_REQUIRE_SERVICES=1`.

use std::time::Duration;

use aienv_tests::testenv::{self, wait_for};
use anyhow::{Context, Result, ensure};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::batch::v1::{CronJob, Job};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::runtime::watcher;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde_json::json;
use sqlx::Row;

const K8S_VERSION: &str = "v1.36.3";

#[tokio::test]
async fn control_plane_is_ready_and_reports_its_version() -> Result<()> {
    let Some(env) = testenv::require_env() else {
        return Ok(());
    };

    let http = env.apiserver_http()?;
    let resp = http
        .get(format!("{}/readyz", env.kube_apiserver))
        .send()
        .await?;
    ensure!(resp.status().is_success(), "/readyz: {}", resp.status());
    assert_eq!(resp.text().await?, "ok");

    let client = env.kube_client().await?;
    let version = client.apiserver_version().await?;
    assert_eq!(version.git_version, K8S_VERSION);
    assert_eq!(
        (version.major.as_str(), version.minor.as_str()),
        ("1", "36")
    );

    let out = std::process::Command::new(env.k8s_bin.join("kubectl"))
        .arg("--kubeconfig")
        .arg(&env.kubeconfig)
        .args(["version", "-o", "json"])
        .output()
        .context("running kubectl")?;
    ensure!(
        out.status.success(),
        "kubectl version: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    assert_eq!(v["clientVersion"]["gitVersion"], K8S_VERSION);
    assert_eq!(v["serverVersion"]["gitVersion"], K8S_VERSION);
    Ok(())
}

fn widget_crd() -> Result<CustomResourceDefinition> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": "widgets.harness.aienv.test" },
        "spec": {
            "group": "harness.aienv.test",
            "scope": "Namespaced",
            "names": { "plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList" },
            "versions": [{
                "name": "v1",
                "served": true,
                "storage": true,
                "subresources": { "status": {} },
                "schema": { "openAPIV3Schema": {
                    "type": "object",
                    "properties": {
                        "spec": { "type": "object", "properties": { "size": { "type": "integer" } } },
                        "status": { "type": "object", "properties": { "phase": { "type": "string" } } }
                    }
                }}
            }]
        }
    }))?)
}

#[tokio::test]
async fn crd_apply_status_and_watch() -> Result<()> {
    let Some(env) = testenv::require_env() else {
        return Ok(());
    };
    let client = env.kube_client().await?;

    // Cluster-scoped and shared by all runs: server-side apply is idempotent.
    let crds = Api::<CustomResourceDefinition>::all(client.clone());
    let crd = widget_crd()?;
    let crd_name = "widgets.harness.aienv.test";
    crds.patch(
        crd_name,
        &PatchParams::apply("aienv-harness").force(),
        &Patch::Apply(&crd),
    )
    .await?;
    wait_for(Duration::from_secs(30), "CRD Established", || {
        let crds = crds.clone();
        async move {
            let crd = crds.get(crd_name).await?;
            let established = crd
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True");
            Ok(established.then_some(()))
        }
    })
    .await?;

    let ns = env.test_namespace(&client, "harness-crd").await?;
    let gvk = GroupVersionKind::gvk("harness.aienv.test", "v1", "Widget");
    let ar = ApiResource::from_gvk_with_plural(&gvk, "widgets");
    let widgets: Api<DynamicObject> = Api::namespaced_with(client.clone(), ns.name(), &ar);

    // The CRD is served once discovery has it; until then the watch's list fails.
    wait_for(Duration::from_secs(30), "widgets to be served", || {
        let widgets = widgets.clone();
        async move { Ok(Some(widgets.list(&Default::default()).await?)) }
    })
    .await?;

    let mut events = watcher(
        widgets.clone(),
        watcher::Config::default().fields("metadata.name=w1"),
    )
    .boxed();
    tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(ev) = events.try_next().await? {
            if matches!(ev, watcher::Event::InitDone) {
                return Ok(());
            }
        }
        anyhow::bail!("watch ended before its initial list")
    })
    .await
    .context("waiting for the watch to start")??;

    let applied = widgets
        .patch(
            "w1",
            &PatchParams::apply("aienv-harness"),
            &Patch::Apply(json!({
                "apiVersion": "harness.aienv.test/v1",
                "kind": "Widget",
                "metadata": { "name": "w1" },
                "spec": { "size": 3 }
            })),
        )
        .await?;
    assert_eq!(applied.data["spec"]["size"], 3);
    let managers: Vec<_> = applied
        .metadata
        .managed_fields
        .iter()
        .flatten()
        .filter_map(|m| m.manager.as_deref())
        .collect();
    assert!(
        managers.contains(&"aienv-harness"),
        "managers: {managers:?}"
    );

    let patched = widgets
        .patch_status(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({ "status": { "phase": "Ready" } })),
        )
        .await?;
    assert_eq!(patched.data["status"]["phase"], "Ready");
    assert_eq!(
        patched.data["spec"]["size"], 3,
        "status patch must not touch spec"
    );

    let seen = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(ev) = events.try_next().await? {
            if let watcher::Event::Apply(obj) = ev
                && obj.data["status"]["phase"] == "Ready"
            {
                return Ok(obj);
            }
        }
        anyhow::bail!("watch ended")
    })
    .await
    .context("waiting for the watch to show status.phase=Ready")??;
    assert_eq!(seen.metadata.name.as_deref(), Some("w1"));

    ns.cleanup().await
}

#[tokio::test]
async fn garbage_collector_deletes_dependents() -> Result<()> {
    let Some(env) = testenv::require_env() else {
        return Ok(());
    };
    let client = env.kube_client().await?;
    let ns = env.test_namespace(&client, "harness-gc").await?;
    let cms: Api<ConfigMap> = ns.api();

    let owner: ConfigMap =
        serde_json::from_value(json!({ "metadata": { "name": "owner" }, "data": { "k": "v" } }))?;
    let owner = cms.create(&PostParams::default(), &owner).await?;
    let uid = owner.metadata.uid.clone().context("owner has no uid")?;
    let child: ConfigMap = serde_json::from_value(json!({
        "metadata": {
            "name": "child",
            "ownerReferences": [{ "apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": uid }]
        }
    }))?;
    cms.create(&PostParams::default(), &child).await?;

    cms.delete("owner", &DeleteParams::background()).await?;
    wait_for(
        Duration::from_secs(60),
        "the garbage collector to delete the child",
        || {
            let cms = cms.clone();
            async move { Ok(cms.get_opt("child").await?.is_none().then_some(())) }
        },
    )
    .await?;

    ns.cleanup().await
}

#[tokio::test]
async fn cronjob_controller_creates_jobs() -> Result<()> {
    let Some(env) = testenv::require_env() else {
        return Ok(());
    };
    let client = env.kube_client().await?;
    let ns = env.test_namespace(&client, "harness-cron").await?;

    let cronjob: CronJob = serde_json::from_value(json!({
        "metadata": { "name": "tick" },
        "spec": {
            "schedule": "* * * * *",
            "concurrencyPolicy": "Forbid",
            "jobTemplate": { "spec": { "template": { "spec": {
                "restartPolicy": "Never",
                "containers": [{ "name": "tick", "image": "busybox:1.36", "command": ["true"] }]
            }}}}
        }
    }))?;
    let cronjob = ns
        .api::<CronJob>()
        .create(&PostParams::default(), &cronjob)
        .await?;
    let cron_uid = cronjob.metadata.uid.clone().context("cronjob has no uid")?;

    // Pods never run (there is no kubelet): only the Job object is checked.
    let jobs: Api<Job> = ns.api();
    let job = wait_for(
        Duration::from_secs(100),
        "the cronjob controller to create a Job",
        || {
            let jobs = jobs.clone();
            async move {
                Ok(jobs
                    .list(&Default::default())
                    .await?
                    .items
                    .into_iter()
                    .next())
            }
        },
    )
    .await?;
    let owner = job
        .metadata
        .owner_references
        .unwrap_or_default()
        .into_iter()
        .find(|o| o.controller == Some(true))
        .context("job has no controller owner")?;
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("CronJob", "tick")
    );
    assert_eq!(owner.uid, cron_uid);

    ns.cleanup().await
}

#[tokio::test]
async fn postgres_has_pgvector_with_hnsw() -> Result<()> {
    let Some(env) = testenv::require_env() else {
        return Ok(());
    };
    let db = env.test_database("harness_pg").await?;

    let version: String =
        sqlx::query("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            .fetch_one(&db.pool)
            .await?
            .try_get(0)?;
    assert!(version.starts_with("0.8"), "pgvector {version}");
    let server: String = sqlx::query("SHOW server_version")
        .fetch_one(&db.pool)
        .await?
        .try_get(0)?;
    assert!(server.starts_with("18"), "PostgreSQL {server}");

    sqlx::query(
        "CREATE TABLE items (id int PRIMARY KEY, name text NOT NULL, embedding vector(3) NOT NULL)",
    )
    .execute(&db.pool)
    .await?;
    sqlx::query("CREATE INDEX items_embedding_hnsw ON items USING hnsw (embedding vector_l2_ops)")
        .execute(&db.pool)
        .await?;
    let rows = [
        (1, "origin", "[0,0,0]"),
        (2, "x", "[1,0,0]"),
        (3, "y", "[0,1,0]"),
        (4, "z", "[0,0,1]"),
        (5, "far", "[10,10,10]"),
    ];
    for (id, name, embedding) in rows {
        sqlx::query("INSERT INTO items (id, name, embedding) VALUES ($1, $2, $3::text::vector)")
            .bind(id)
            .bind(name)
            .bind(embedding)
            .execute(&db.pool)
            .await?;
    }

    let mut conn = db.pool.acquire().await?;
    sqlx::query("SET enable_seqscan = off")
        .execute(&mut *conn)
        .await?;
    let knn =
        "SELECT name, embedding::text FROM items ORDER BY embedding <-> $1::text::vector LIMIT 1";
    let plan: Vec<String> = sqlx::query(sqlx::AssertSqlSafe(format!(
        "EXPLAIN {}",
        knn.replace("$1::text", "'[0.1,0.9,0.2]'")
    )))
    .fetch_all(&mut *conn)
    .await?
    .iter()
    .map(|r| r.try_get(0))
    .collect::<Result<_, _>>()?;
    assert!(
        plan.iter().any(|l| l.contains("items_embedding_hnsw")),
        "plan does not use the HNSW index: {plan:#?}"
    );

    let nearest = sqlx::query(knn)
        .bind("[0.1,0.9,0.2]")
        .fetch_one(&mut *conn)
        .await?;
    assert_eq!(nearest.try_get::<String, _>(0)?, "y");
    assert_eq!(nearest.try_get::<String, _>(1)?, "[0,1,0]");
    let nearest = sqlx::query(knn)
        .bind("[9,9,9.5]")
        .fetch_one(&mut *conn)
        .await?;
    assert_eq!(nearest.try_get::<String, _>(0)?, "far");
    drop(conn);

    db.cleanup().await
}

#[tokio::test]
async fn s3_object_round_trip() -> Result<()> {
    let Some(env) = testenv::require_env() else {
        return Ok(());
    };
    let bucket = env.s3_bucket("harness-s3").await?;
    let store = env.s3_store(&bucket)?;

    let small = ObjectPath::from("dir/small.txt");
    store
        .put(&small, PutPayload::from_static(b"hello s3"))
        .await?;

    // Two full 5 MiB parts (the S3 minimum) and a short last one.
    const PART: usize = 5 * 1024 * 1024;
    let big = ObjectPath::from("dir/big.bin");
    let parts = [vec![1u8; PART], vec![2u8; PART], vec![3u8; 1000]];
    let mut upload = store.put_multipart(&big).await?;
    for part in &parts {
        upload.put_part(PutPayload::from(part.clone())).await?;
    }
    upload.complete().await?;

    let mut listed: Vec<(String, u64)> = store
        .list(Some(&ObjectPath::from("dir")))
        .map_ok(|m| (m.location.to_string(), m.size))
        .try_collect()
        .await?;
    listed.sort();
    assert_eq!(
        listed,
        vec![
            ("dir/big.bin".to_string(), (2 * PART + 1000) as u64),
            ("dir/small.txt".to_string(), 8)
        ]
    );

    assert_eq!(
        store.get(&small).await?.bytes().await?.as_ref(),
        b"hello s3"
    );
    let got = store.get(&big).await?.bytes().await?;
    assert_eq!(got.len(), 2 * PART + 1000);
    assert_eq!(got.as_ref(), parts.concat().as_slice());

    store.delete(&small).await?;
    store.delete(&big).await?;
    let left: Vec<_> = store.list(None).try_collect().await?;
    assert!(left.is_empty(), "objects left: {left:?}");
    Ok(())
}

#[tokio::test]
async fn gcs_emulator_round_trip() -> Result<()> {
    let Some(env) = testenv::require_env() else {
        return Ok(());
    };
    let bucket = env.gcs_bucket("harness-gcs").await?;
    let base = env.gcs_endpoint.trim_end_matches('/');
    let http = reqwest::Client::new();

    let body = b"hello gcs".to_vec();
    let resp = http
        .post(format!(
            "{base}/upload/storage/v1/b/{bucket}/o?uploadType=media&name=hello.txt"
        ))
        .header("content-type", "text/plain")
        .body(body.clone())
        .send()
        .await?;
    ensure!(
        resp.status().is_success(),
        "upload: {} {}",
        resp.status(),
        resp.text().await?
    );
    let meta: serde_json::Value = resp.json().await?;
    assert_eq!(meta["name"], "hello.txt");
    assert_eq!(meta["bucket"], bucket.as_str());

    let got = http
        .get(format!(
            "{base}/storage/v1/b/{bucket}/o/hello.txt?alt=media"
        ))
        .send()
        .await?;
    ensure!(got.status().is_success(), "download: {}", got.status());
    assert_eq!(got.bytes().await?.as_ref(), body.as_slice());

    let list: serde_json::Value = http
        .get(format!("{base}/storage/v1/b/{bucket}/o"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let names: Vec<_> = list["items"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|o| o["name"].as_str())
        .collect();
    assert_eq!(names, ["hello.txt"]);
    Ok(())
}

/// Run by `ci_without_an_environment_fails_instead_of_skipping` in a child process only.
#[test]
#[ignore = "helper: run in a child process with CI set and no environment"]
fn require_env_probe() {
    let _ = testenv::require_env();
}

#[test]
fn ci_without_an_environment_fails_instead_of_skipping() -> Result<()> {
    let run = |ci: Option<&str>| -> Result<bool> {
        let mut cmd = std::process::Command::new(std::env::current_exe()?);
        cmd.args(["--exact", "require_env_probe", "--ignored", "--nocapture"])
            .env("AIENV_TESTENV_ENV", "/nonexistent/aienv-testenv/env")
            .env_remove("AIENV_REQUIRE_SERVICES")
            .env_remove("CI");
        if let Some(v) = ci {
            cmd.env("CI", v);
        }
        Ok(cmd.output()?.status.success())
    };
    assert!(run(None)?, "without CI a missing environment skips");
    assert!(
        !run(Some("true"))?,
        "with CI set a missing environment fails"
    );
    Ok(())
}
