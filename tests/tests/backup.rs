//! `aienv backup` / `aienv restore` against the harness PostgreSQL, the S3 server and the GCS
//! emulator (the same test for both): a round trip of 20k memories (vectors included) and
//! conversations that restores every table equal, backups without a manifest that do not exist, a
//! corrupt object caught by its checksum, a non-empty target refused unless `--force`, retention.
//! And the GCS upload's per-chunk retries, through a loopback proxy that injects failures.

use std::path::PathBuf;

use aienv::backup::{
    BackupArgs, Error, RestoreArgs, StoreArgs, dump::backup, restore::restore,
    storage::DestinationArgs,
};
use aienv::memory::ddl::StoreLayout;
use aienv_tests::backups::{content, s3_destination, store_args};
use aienv_tests::testenv::{self, TEST_SCHEMA, TestEnv};
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload, path::Path as ObjectPath};
use std::sync::Arc;

const DIMS: usize = 8;

fn layout() -> StoreLayout {
    let spec: aienv::api::memory_store::MemoryStoreSpec = serde_saphyr::from_str(&format!(
        "mode: external\nembedding: {{dimensions: {DIMS}}}\n"
    ))
    .unwrap();
    StoreLayout::from_spec(&spec).unwrap()
}

/// Where the backups go: the same tests run against both.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    S3,
    Gcs,
}

/// A bucket of `kind` with its destination flags, as a CronJob would set them.
struct Target {
    kind: Kind,
    bucket: String,
    destination: DestinationArgs,
}

impl Target {
    async fn new(env: &TestEnv, kind: Kind) -> anyhow::Result<Self> {
        let (bucket, destination) = match kind {
            Kind::S3 => {
                let bucket = env.s3_bucket("aienv-backups").await?;
                let d = s3_destination(env, &bucket, &env.s3_endpoint);
                (bucket, d)
            }
            Kind::Gcs => {
                let bucket = env.gcs_bucket("aienv-backups").await?;
                let d = DestinationArgs {
                    gcs_bucket: Some(bucket.clone()),
                    prefix: "backups".into(),
                    gcs_endpoint: Some(env.gcs_endpoint.clone()),
                    gcs_anonymous: true,
                    ..Default::default()
                };
                (bucket, d)
            }
        };
        Ok(Self {
            kind,
            bucket,
            destination,
        })
    }

    /// The destination flags on a command line (and the environment they need).
    fn command(&self, env: &TestEnv, cmd: &mut std::process::Command) {
        match self.kind {
            Kind::S3 => {
                cmd.args(["--bucket", &self.bucket, "--s3-path-style"])
                    .args(["--s3-endpoint", &env.s3_endpoint])
                    .args(["--s3-region", &env.s3_region])
                    .env("AWS_ACCESS_KEY_ID", &env.aws_access_key_id)
                    .env("AWS_SECRET_ACCESS_KEY", &env.aws_secret_access_key);
            }
            Kind::Gcs => {
                cmd.args(["--gcs-bucket", &self.bucket, "--gcs-anonymous"])
                    .args(["--gcs-endpoint", &env.gcs_endpoint]);
            }
        }
        cmd.args(["--prefix", "backups"]);
    }

    /// A client of the bucket besides the commands', to plant crashed uploads, corrupt objects
    /// and history: object_store's S3 client, or the GCS store (anonymous, straight to the
    /// emulator).
    async fn raw(&self, env: &TestEnv) -> anyhow::Result<Arc<dyn ObjectStore>> {
        Ok(match self.kind {
            Kind::S3 => Arc::new(env.s3_store(&self.bucket)?),
            Kind::Gcs => {
                aienv::backup::storage::Destination::open(&self.destination)
                    .await?
                    .store
            }
        })
    }
}

#[tokio::test]
async fn s3_a_backup_restores_every_table_equal_and_bad_backups_never_pass() -> anyhow::Result<()> {
    round_trip(Kind::S3).await
}

#[tokio::test]
async fn gcs_a_backup_restores_every_table_equal_and_bad_backups_never_pass() -> anyhow::Result<()>
{
    round_trip(Kind::Gcs).await
}

/// Backup (the command, as a Job runs it) → listing → restore into a fresh database → every table
/// equal; then a corrupt object, retention, and an empty schema, on `kind`.
async fn round_trip(kind: Kind) -> anyhow::Result<()> {
    let Some(env) = testenv::require_env() else {
        return Ok(());
    };
    let tag = format!("{kind:?}").to_lowercase();
    let src = env.test_database("bk_src").await?;
    src.prepare(&layout()).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO memories (content, embedding, agent_id, content_sha256, metadata)
         SELECT 'memory ' || i, ('[' || array_to_string(ARRAY(SELECT (i * {DIMS} + d) % 97 / 97.0
                 FROM generate_series(1, {DIMS}) d), ',') || ']')::vector,
                'agent-' || (i % 7), md5(i::text), jsonb_build_object('i', i)
         FROM generate_series(1, 20000) i"
    )))
    .execute(&src.pool)
    .await?;
    sqlx::query(
        "INSERT INTO agent_conversations (agent_id, session_id, role, content)
         SELECT 'agent-' || (i % 7), 's' || (i % 50), 'user', 'turn ' || i FROM generate_series(1, 3000) i",
    )
    .execute(&src.pool)
    .await?;
    let before = content(&src.pool).await?;
    assert!(
        before
            .iter()
            .any(|(t, n, _)| t == "memories" && *n == 20000),
        "{before:?}"
    );

    let target = Target::new(&env, kind).await?;
    let store = store_args(&env, &src.url);
    let destination = target.destination.clone();
    // The command, as a Job runs it: flags from the same Args, a JSON line as the result.
    let log = std::env::temp_dir().join(format!("aienv-backup-{tag}-{}.log", std::process::id()));
    let mut cmd = std::process::Command::new(std::env::var("AIENV_BIN").map(PathBuf::from)?);
    cmd.args([
        "backup",
        "--namespace",
        "team",
        "--store",
        "mem",
        "--schema",
        TEST_SCHEMA,
    ])
    .arg("--termination-log")
    .arg(&log)
    .env("AIENV_DATABASE_URL", &src.url)
    .env("AIENV_PG_BIN", &env.pg_bin);
    target.command(&env, &mut cmd);
    let out = cmd.output()?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let result: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&log)?)?;
    assert_eq!(result["result"], "succeeded", "{result}");
    assert_eq!(result["rowCounts"]["memories"], 20000);
    assert!(
        !stdout.contains(&src.url) && !String::from_utf8_lossy(&out.stderr).contains("password")
    );
    let key = result["key"].as_str().unwrap().to_string();
    assert!(
        key.starts_with("backups/team/mem/") && key.ends_with("/dump.zst"),
        "{key}"
    );

    // A prefix without a manifest (a crashed upload) is not a backup.
    let raw = target.raw(&env).await?;
    raw.put(
        &ObjectPath::from("backups/team/mem/29991231T000000Z/dump.zst"),
        PutPayload::from_static(b"partial"),
    )
    .await?;
    let dest = aienv::backup::storage::Destination::open(&destination).await?;
    let listed = dest.list("team", "mem").await?;
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(listed[0].key, key);
    assert_eq!(listed[0].vector_count, 20000);
    assert_eq!(listed[0].embedding_dimensions, Some(DIMS as i32));

    // Restore into a fresh database: every table equal.
    let dst = env.test_database("bk_dst").await?;
    let restore_args = |url: &str, force: bool| RestoreArgs {
        store: StoreArgs {
            database_url: url.into(),
            database_password: None,
            ..store.clone()
        },
        destination: destination.clone(),
        backup: None,
        force,
        termination_log: std::env::temp_dir().join(format!("aienv-restore-{tag}.log")),
    };
    let m = restore(&restore_args(&dst.url, false)).await?;
    assert_eq!(m.key, key);
    assert_eq!(content(&dst.pool).await?, before, "restored data differs");

    // Restoring again over it is refused without --force, and replaces it with.
    let e = restore(&restore_args(&dst.url, false)).await.unwrap_err();
    assert!(matches!(e, Error::Refused(_)), "{e}");
    assert!(e.to_string().contains("--force"), "{e}");
    restore(&restore_args(&dst.url, true)).await?;
    assert_eq!(content(&dst.pool).await?, before);

    // A corrupt object is caught by its checksum, never restored as good.
    let path = ObjectPath::from(key.as_str());
    let mut bytes = raw.get(&path).await?.bytes().await?.to_vec();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    raw.put(&path, PutPayload::from(bytes)).await?;
    let e = restore(&restore_args(&dst.url, true)).await.unwrap_err();
    assert_eq!(e.label(), "ChecksumMismatch", "{e}");

    // Retention over a synthetic history (folders copied from the real backup): keepLast 2, the
    // verified one kept whatever the policy says, manifest-less folders older than a day gone.
    let manifest_of = |dir: &str| ObjectPath::from(format!("{dir}/manifest.json"));
    let real_dir = key.trim_end_matches("/dump.zst").to_string();
    let body = raw.get(&manifest_of(&real_dir)).await?.bytes().await?;
    for stamp in ["20261001T000000Z", "20261101T000000Z", "20261102T000000Z"] {
        let dir = format!("backups/team/mem/{stamp}");
        raw.put(
            &ObjectPath::from(format!("{dir}/dump.zst")),
            PutPayload::from_static(b"x"),
        )
        .await?;
        raw.put(&manifest_of(&dir), PutPayload::from(body.clone()))
            .await?;
    }
    raw.put(
        &ObjectPath::from("backups/team/mem/20261001T000000Z/verified.json"),
        PutPayload::from_static(b"{}"),
    )
    .await?;
    let policy = aienv::backup::retention::RetentionArgs {
        retention: true,
        keep_last: 2,
        keep_daily: 0,
        keep_weekly: 0,
        keep_monthly: 0,
        time_zone: "UTC".into(),
    };
    // Two days on: the partial upload above is more than a day old.
    let later = jiff::Timestamp::now() + jiff::SignedDuration::from_hours(48);
    let applied = aienv::backup::retention::apply(&dest, "team", "mem", &policy, later).await?;
    assert_eq!(applied.deleted, ["backups/team/mem/20261101T000000Z"]);
    assert_eq!(applied.incomplete, ["backups/team/mem/29991231T000000Z"]);
    let mut left: Vec<String> = raw
        .list(Some(&ObjectPath::from("backups/team/mem")))
        .map_ok(|o| o.location.to_string())
        .try_collect()
        .await?;
    left.sort();
    let mut want = vec![
        format!("{real_dir}/dump.zst"),
        format!("{real_dir}/manifest.json"),
        "backups/team/mem/20261001T000000Z/dump.zst".to_string(),
        "backups/team/mem/20261001T000000Z/manifest.json".to_string(),
        "backups/team/mem/20261001T000000Z/verified.json".to_string(),
        "backups/team/mem/20261102T000000Z/dump.zst".to_string(),
        "backups/team/mem/20261102T000000Z/manifest.json".to_string(),
    ];
    want.sort();
    assert_eq!(left, want);
    let bad_zone = aienv::backup::retention::RetentionArgs {
        time_zone: "Mars/Olympus".into(),
        ..policy
    };
    let e = aienv::backup::retention::apply(&dest, "team", "mem", &bad_zone, later)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("IANA"), "{e}");

    // A backup of a schema that holds nothing is refused, and leaves no manifest behind.
    let empty = env.test_database("bk_empty").await?;
    let e = backup(&BackupArgs {
        store: StoreArgs {
            database_url: empty.url.clone(),
            database_password: None,
            store: "other".into(),
            ..store.clone()
        },
        destination: destination.clone(),
        retention: policy_off(),
        zstd_level: 1,
        zstd_threads: 2,
        termination_log: std::env::temp_dir().join(format!("aienv-backup-empty-{tag}.log")),
    })
    .await
    .unwrap_err();
    assert!(matches!(e, Error::Refused(_)), "{e}");
    assert!(dest.list("team", "other").await?.is_empty());

    for db in [src, dst, empty] {
        db.cleanup().await?;
    }
    let _ = std::fs::remove_file(log);
    Ok(())
}

fn policy_off() -> aienv::backup::retention::RetentionArgs {
    aienv::backup::retention::RetentionArgs {
        retention: false,
        keep_last: 1,
        keep_daily: 0,
        keep_weekly: 0,
        keep_monthly: 0,
        time_zone: "UTC".into(),
    }
}

/// What the proxy does to one chunk PUT of a resumable upload.
#[derive(Clone, Copy, Debug)]
enum Fault {
    /// Answer 503 without forwarding (the server never saw it).
    Refuse,
    /// Forward, then answer 503 (the server took it; its answer was lost).
    LoseAnswer,
}

/// A loopback proxy to the GCS emulator that injects faults into chunk uploads (PUTs to a
/// resumable session), by their number (1-based, in arrival order). Session URLs in `Location`
/// are rewritten to the proxy, so every chunk passes through it.
#[derive(Clone)]
struct FaultProxy {
    upstream: String,
    own: String,
    faults: Arc<std::sync::Mutex<std::collections::BTreeMap<usize, Fault>>>,
    chunk_puts: Arc<std::sync::atomic::AtomicUsize>,
    injected: Arc<std::sync::atomic::AtomicUsize>,
    /// The `Authorization` header of each JSON API request (not chunk PUTs), "" when absent.
    authorizations: Arc<std::sync::Mutex<Vec<String>>>,
    /// Media downloads (by number, 1-based) whose body is cut off half-way.
    cut_downloads: Arc<std::sync::Mutex<std::collections::BTreeSet<usize>>>,
    downloads: Arc<std::sync::atomic::AtomicUsize>,
    http: reqwest::Client,
}

impl FaultProxy {
    async fn start(upstream: &str, faults: &[(usize, Fault)]) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let proxy = FaultProxy {
            upstream: upstream.trim_end_matches('/').to_string(),
            own: format!("http://{}", listener.local_addr()?),
            faults: Arc::new(std::sync::Mutex::new(faults.iter().copied().collect())),
            chunk_puts: Default::default(),
            injected: Default::default(),
            authorizations: Default::default(),
            cut_downloads: Default::default(),
            downloads: Default::default(),
            http: reqwest::Client::new(),
        };
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(proxy.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(proxy)
    }

    fn counts(&self) -> (usize, usize) {
        use std::sync::atomic::Ordering::SeqCst;
        (self.chunk_puts.load(SeqCst), self.injected.load(SeqCst))
    }
}

async fn forward(
    axum::extract::State(p): axum::extract::State<FaultProxy>,
    req: axum::extract::Request,
) -> axum::response::Response {
    use axum::http::{StatusCode, header};
    use axum::response::IntoResponse;
    use std::sync::atomic::Ordering::SeqCst;
    let unavailable = || {
        p.injected.fetch_add(1, SeqCst);
        (
            StatusCode::SERVICE_UNAVAILABLE,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"error":{"code":503,"message":"injected by the test proxy","errors":[]}}"#,
        )
            .into_response()
    };
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 64 << 20).await.unwrap();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_default();
    let fault = if parts.method == axum::http::Method::PUT && path.contains("upload_id=") {
        let n = p.chunk_puts.fetch_add(1, SeqCst) + 1;
        p.faults.lock().unwrap().remove(&n)
    } else {
        let auth = parts.headers.get(header::AUTHORIZATION);
        p.authorizations.lock().unwrap().push(
            auth.and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_string(),
        );
        None
    };
    if let Some(Fault::Refuse) = fault {
        return unavailable();
    }
    let mut upstream = p
        .http
        .request(parts.method.clone(), format!("{}{path}", p.upstream));
    for (k, v) in &parts.headers {
        if k != header::HOST && k != header::CONTENT_LENGTH {
            upstream = upstream.header(k, v);
        }
    }
    let resp = match upstream.body(body).send().await {
        Ok(r) => r,
        Err(e) => return (StatusCode::BAD_GATEWAY, e.to_string()).into_response(),
    };
    if let Some(Fault::LoseAnswer) = fault {
        return unavailable();
    }
    let cut = parts.method == axum::http::Method::GET && path.contains("alt=media") && {
        let n = p.downloads.fetch_add(1, SeqCst) + 1;
        p.cut_downloads.lock().unwrap().remove(&n)
    };
    let mut out = axum::http::Response::builder().status(resp.status());
    for (k, v) in resp.headers() {
        if k == header::LOCATION {
            let rewritten = v.to_str().unwrap_or_default().replace(&p.upstream, &p.own);
            out = out.header(k, rewritten);
        } else if k != header::CONTENT_LENGTH && k != header::TRANSFER_ENCODING {
            out = out.header(k, v);
        }
    }
    let bytes = resp.bytes().await.unwrap_or_default();
    if cut {
        // Half the body, then the connection breaks.
        p.injected.fetch_add(1, SeqCst);
        let half = bytes.slice(..bytes.len() / 2);
        let body = futures::stream::iter([
            Ok(half),
            Err(std::io::Error::other("cut by the test proxy")),
        ]);
        return out.body(axum::body::Body::from_stream(body)).unwrap();
    }
    out.body(axum::body::Body::from(bytes)).unwrap()
}

/// A GCS store on the emulator through `proxy`, with fast retries.
async fn gcs_through(
    proxy: &FaultProxy,
    bucket: &str,
    max_attempts: u32,
) -> anyhow::Result<aienv::backup::gcs::GcsStore> {
    use aienv::backup::gcs::{Auth, GcsConfig, GcsStore, Retry};
    GcsStore::open(GcsConfig {
        bucket: bucket.into(),
        endpoint: Some(proxy.own.clone()),
        auth: Auth::Anonymous,
        retry: Retry {
            max_attempts,
            base_delay: std::time::Duration::from_millis(20),
            max_delay: std::time::Duration::from_millis(100),
        },
    })
    .await
    .map_err(anyhow::Error::msg)
}

/// Stream `data` into `path` the way `aienv backup` does: a multipart upload in 8 MiB parts.
async fn upload(
    store: &dyn ObjectStore,
    path: &ObjectPath,
    data: &[u8],
) -> object_store::Result<object_store::PutResult> {
    let mut w = object_store::WriteMultipart::new_with_chunk_size(
        store.put_multipart(path).await?,
        8 * 1024 * 1024,
    );
    for piece in data.chunks(1024 * 1024) {
        w.wait_for_capacity(4).await?;
        w.write(piece);
    }
    w.finish().await
}

#[tokio::test]
async fn gcs_upload_retries_each_failed_chunk_and_never_passes_a_bad_object() -> anyhow::Result<()>
{
    use rand::RngCore;
    use sha2::{Digest, Sha256};
    let Some(env) = testenv::require_env() else {
        return Ok(());
    };
    let bucket = env.gcs_bucket("aienv-retry").await?;
    let direct = {
        let d = DestinationArgs {
            gcs_bucket: Some(bucket.clone()),
            gcs_endpoint: Some(env.gcs_endpoint.clone()),
            gcs_anonymous: true,
            ..Default::default()
        };
        aienv::backup::storage::Destination::open(&d).await?.store
    };
    // 3 full chunks and a short last one.
    let mut data = vec![0u8; 3 * 8 * 1024 * 1024 + 1_234_567];
    rand::rng().fill_bytes(&mut data);

    // Chunk 2 fails twice, chunk 3 once, the last chunk once: 4 chunks + 4 retries = 8 PUTs.
    let proxy = FaultProxy::start(
        &env.gcs_endpoint,
        &[
            (2, Fault::Refuse),
            (3, Fault::Refuse),
            (5, Fault::Refuse),
            (7, Fault::Refuse),
        ],
    )
    .await?;
    let store = gcs_through(&proxy, &bucket, 4).await?;
    let path = ObjectPath::from("r/retried.bin");
    upload(&store, &path, &data).await?;
    assert_eq!(proxy.counts(), (8, 4), "(chunk PUTs, injected failures)");
    let stored = direct.get(&path).await?.bytes().await?;
    assert_eq!(stored.len(), data.len());
    assert_eq!(
        Sha256::digest(&stored),
        Sha256::digest(&data),
        "retried upload differs"
    );

    // A chunk that fails more often than the bound fails the upload, and leaves no object.
    let proxy = FaultProxy::start(
        &env.gcs_endpoint,
        &[
            (2, Fault::Refuse),
            (3, Fault::Refuse),
            (4, Fault::Refuse),
            (5, Fault::Refuse),
        ],
    )
    .await?;
    let store = gcs_through(&proxy, &bucket, 4).await?;
    let path = ObjectPath::from("r/exhausted.bin");
    let e = upload(&store, &path, &data).await.unwrap_err();
    assert!(e.to_string().contains("failed 4 times"), "{e}");
    assert_eq!(proxy.counts(), (5, 4));
    let gone = direct.head(&path).await.unwrap_err();
    assert!(
        matches!(gone, object_store::Error::NotFound { .. }),
        "{gone}"
    );

    // A chunk the emulator took but whose answer was lost is sent again, and the emulator (which
    // appends instead of honouring the range) stores it twice: the size check fails the upload
    // instead of passing a corrupt object as a backup.
    let proxy = FaultProxy::start(&env.gcs_endpoint, &[(2, Fault::LoseAnswer)]).await?;
    let store = gcs_through(&proxy, &bucket, 4).await?;
    let e = upload(&store, &ObjectPath::from("r/doubled.bin"), &data)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("GCS stored"), "{e}");

    // Downloads, listing and deletes go through the proxy too.
    let listed: Vec<_> = store
        .list(Some(&ObjectPath::from("r")))
        .map_ok(|o| (o.location.to_string(), o.size))
        .try_collect()
        .await?;
    assert!(
        listed.contains(&("r/retried.bin".to_string(), data.len() as u64)),
        "{listed:?}"
    );
    let range = store
        .get_range(&ObjectPath::from("r/retried.bin"), 10..20)
        .await?;
    assert_eq!(&range[..], &data[10..20]);
    // A download whose connection breaks resumes where it was, twice.
    let downloads_before = proxy.downloads.load(std::sync::atomic::Ordering::SeqCst);
    let injected_before = proxy.counts().1;
    proxy
        .cut_downloads
        .lock()
        .unwrap()
        .extend([downloads_before + 1, downloads_before + 2]);
    let resumed = store
        .get(&ObjectPath::from("r/retried.bin"))
        .await?
        .bytes()
        .await?;
    assert_eq!(proxy.counts().1, injected_before + 2, "two downloads cut");
    assert_eq!(
        proxy.downloads.load(std::sync::atomic::Ordering::SeqCst),
        downloads_before + 3
    );
    assert_eq!(resumed.len(), data.len());
    assert_eq!(
        Sha256::digest(&resumed),
        Sha256::digest(&data),
        "resumed download differs"
    );
    store.delete(&ObjectPath::from("r/retried.bin")).await?;
    // Deleting what is gone is not an error (a retried delete).
    store.delete(&ObjectPath::from("r/retried.bin")).await?;
    assert!(
        direct
            .head(&ObjectPath::from("r/retried.bin"))
            .await
            .is_err()
    );
    Ok(())
}

/// A throwaway RSA key (PKCS#8 PEM) and its public half, made by openssl (which scripts/testenv
/// requires anyway).
fn throwaway_key(dir: &std::path::Path) -> anyhow::Result<(String, PathBuf)> {
    let key = dir.join("key.pem");
    let public = dir.join("public.pem");
    let run = |args: &[&std::ffi::OsStr]| -> anyhow::Result<()> {
        let out = std::process::Command::new("openssl").args(args).output()?;
        anyhow::ensure!(
            out.status.success(),
            "openssl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    run(&[
        "genpkey".as_ref(),
        "-algorithm".as_ref(),
        "RSA".as_ref(),
        "-pkeyopt".as_ref(),
        "rsa_keygen_bits:2048".as_ref(),
        "-out".as_ref(),
        key.as_os_str(),
    ])?;
    run(&[
        "pkey".as_ref(),
        "-in".as_ref(),
        key.as_os_str(),
        "-pubout".as_ref(),
        "-out".as_ref(),
        public.as_os_str(),
    ])?;
    Ok((std::fs::read_to_string(&key)?, public))
}

#[tokio::test]
async fn gcs_with_a_key_file_signs_a_jwt_and_sends_the_token_it_gets() -> anyhow::Result<()> {
    use base64::Engine;
    let Some(env) = testenv::require_env() else {
        return Ok(());
    };
    let dir = std::env::temp_dir().join(testenv::unique_name("aienv-gcs-key", '-', 40));
    std::fs::create_dir_all(&dir)?;
    let (pem, public) = throwaway_key(&dir)?;

    // A fake OAuth token endpoint on loopback: records the assertion, hands out a token.
    let assertions: Arc<std::sync::Mutex<Vec<String>>> = Default::default();
    let token = format!("tok-{}", rand::random::<u64>());
    let app = {
        let (assertions, token) = (assertions.clone(), token.clone());
        axum::Router::new().route(
            "/token",
            axum::routing::post(move |body: String| async move {
                let form: std::collections::HashMap<String, String> =
                    url::form_urlencoded::parse(body.as_bytes())
                        .into_owned()
                        .collect();
                assert_eq!(
                    form.get("grant_type").map(String::as_str),
                    Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
                );
                assertions
                    .lock()
                    .unwrap()
                    .push(form.get("assertion").cloned().unwrap_or_default());
                (
                    [(axum::http::header::CONTENT_TYPE, "application/json")],
                    serde_json::json!({
                        "access_token": token, "token_type": "Bearer", "expires_in": 3600
                    })
                    .to_string(),
                )
            }),
        )
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let token_uri = format!("http://{}/token", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    let key_file = dir.join("service-account.json");
    std::fs::write(
        &key_file,
        serde_json::to_vec(&serde_json::json!({
            "type": "service_account",
            "project_id": "aienv-test",
            "private_key_id": "k1",
            "private_key": pem,
            "client_email": "backup@aienv-test.iam.gserviceaccount.com",
            "client_id": "1",
            "token_uri": token_uri,
        }))?,
    )?;

    let bucket = env.gcs_bucket("aienv-key").await?;
    let proxy = FaultProxy::start(&env.gcs_endpoint, &[]).await?;
    let dest = aienv::backup::storage::Destination::open(&DestinationArgs {
        gcs_bucket: Some(bucket),
        gcs_endpoint: Some(proxy.own.clone()),
        gcs_credentials_file: Some(key_file),
        ..Default::default()
    })
    .await?;
    let path = ObjectPath::from("k/manifest.json");
    dest.store
        .put(&path, PutPayload::from_static(b"{}"))
        .await?;
    assert_eq!(&dest.store.get(&path).await?.bytes().await?[..], b"{}");
    let seen = proxy.authorizations.lock().unwrap().clone();
    assert!(seen.len() >= 2, "{seen:?}");
    assert!(
        seen.iter().all(|a| *a == format!("Bearer {token}")),
        "{seen:?}"
    );

    // The assertion is an RS256 JWT of the service account, for GCS's scope, that the key's
    // public half verifies.
    let jwt = assertions
        .lock()
        .unwrap()
        .first()
        .cloned()
        .unwrap_or_default();
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "{jwt}");
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let claims: serde_json::Value = serde_json::from_slice(&b64.decode(parts[1])?)?;
    assert_eq!(claims["iss"], "backup@aienv-test.iam.gserviceaccount.com");
    assert!(
        claims["scope"]
            .as_str()
            .unwrap_or_default()
            .contains("devstorage"),
        "{claims}"
    );
    let signed = dir.join("signed");
    let signature = dir.join("signature");
    std::fs::write(&signed, format!("{}.{}", parts[0], parts[1]))?;
    std::fs::write(&signature, b64.decode(parts[2])?)?;
    let out = std::process::Command::new("openssl")
        .args(["dgst", "-sha256", "-verify"])
        .arg(&public)
        .arg("-signature")
        .arg(&signature)
        .arg(&signed)
        .output()?;
    assert!(
        out.status.success(),
        "the JWT's signature does not verify: {}",
        String::from_utf8_lossy(&out.stdout)
    );
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
