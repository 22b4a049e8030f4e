//! `aienv backup` / `aienv restore` when things break, against the harness PostgreSQL and the S3
//! server, with a loopback TCP proxy in front of the S3 server that counts bytes and freezes or
//! cuts every connection at a byte count (so "mid-upload" is a fact, not a sleep):
//! the server going away mid-upload, the backup process SIGKILLed mid-upload, pg_dump dying
//! mid-dump (the backup aborts its own upload), a restore cut mid-stream (refused without
//! `--force` afterwards, complete with it), and retention aborting the multipart uploads a killed
//! backup leaves. (A corrupt object failing on its checksum is in `backup.rs`.)

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU64, Ordering},
};
use std::time::Duration;

use aienv::backup::{
    BackupArgs, RestoreArgs, dump::backup, restore::restore, retention, s3_uploads::Uploads,
    storage::Destination, storage::DestinationArgs,
};
use aienv::memory::ddl::StoreLayout;
use aienv_tests::backups::{content, s3_destination, store_args};
use aienv_tests::testenv::{self, TEST_SCHEMA, TestDatabase, TestEnv, wait_for};
use anyhow::{Context, bail};
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, path::Path as ObjectPath};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, tcp::OwnedReadHalf, tcp::OwnedWriteHalf};
use tokio::sync::watch;

const DIMS: usize = 768;
const MIB: u64 = 1024 * 1024;
/// Upper bound for anything that waits in these tests (object_store retries a vanished server
/// for about a minute before it gives up).
const BOUND: Duration = Duration::from_secs(300);

// ---------------------------------------------------------------------------------------------
// A loopback TCP proxy in front of the S3 server.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flow {
    Open,
    /// Nothing is forwarded; connections stay open (a stalled network).
    Frozen,
    /// Every connection closed, the port closed (the server is gone).
    Cut,
}

#[derive(Clone, Copy, Debug)]
enum Trigger {
    FreezeAfterUp(u64),
    CutAfterUp(u64),
    CutAfterDown(u64),
}

struct Proxy {
    endpoint: String,
    ctx: Arc<Ctx>,
}

struct Ctx {
    upstream: SocketAddr,
    /// Bytes client → server, server → client.
    up: AtomicU64,
    down: AtomicU64,
    flow: watch::Sender<Flow>,
    trigger: Trigger,
    fired: AtomicBool,
}

impl Ctx {
    /// Count `n` bytes in one direction; pull the trigger when its count is reached.
    fn count(&self, up: bool, n: usize) {
        let counter = if up { &self.up } else { &self.down };
        let total = counter.fetch_add(n as u64, Ordering::SeqCst) + n as u64;
        let fire = match self.trigger {
            Trigger::FreezeAfterUp(at) if up && total >= at => Some(Flow::Frozen),
            Trigger::CutAfterUp(at) if up && total >= at => Some(Flow::Cut),
            Trigger::CutAfterDown(at) if !up && total >= at => Some(Flow::Cut),
            _ => None,
        };
        // Once: reopening a frozen proxy must not freeze it again.
        if let Some(f) = fire
            && !self.fired.swap(true, Ordering::SeqCst)
        {
            self.flow.send_replace(f);
        }
    }
}

impl Proxy {
    async fn start(s3_endpoint: &str, trigger: Trigger) -> anyhow::Result<Self> {
        let upstream: SocketAddr = s3_endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .parse()
            .context("the S3 endpoint is http://IP:PORT")?;
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let ctx = Arc::new(Ctx {
            upstream,
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
            flow: watch::channel(Flow::Open).0,
            trigger,
            fired: AtomicBool::new(false),
        });
        let c = ctx.clone();
        tokio::spawn(async move {
            let mut flow = c.flow.subscribe();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((client, _)) = accepted else { return };
                        tokio::spawn(connection(client, c.clone()));
                    }
                    // Dropping the listener: connections are refused from now on.
                    _ = flow.wait_for(|f| *f == Flow::Cut) => return,
                }
            }
        });
        Ok(Self { endpoint, ctx })
    }

    fn up(&self) -> u64 {
        self.ctx.up.load(Ordering::SeqCst)
    }

    fn down(&self) -> u64 {
        self.ctx.down.load(Ordering::SeqCst)
    }

    fn flow(&self) -> Flow {
        *self.ctx.flow.borrow()
    }

    /// Let a frozen proxy forward again (the trigger does not fire twice).
    fn open(&self) {
        self.ctx.flow.send_replace(Flow::Open);
    }
}

async fn connection(client: TcpStream, ctx: Arc<Ctx>) {
    let Ok(server) = TcpStream::connect(ctx.upstream).await else {
        return;
    };
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    tokio::join!(pump(cr, sw, true, &ctx), pump(sr, cw, false, &ctx));
}

async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, up: bool, ctx: &Ctx) {
    let mut flow = ctx.flow.subscribe();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let open = matches!(
            flow.wait_for(|f| *f != Flow::Frozen).await.map(|f| *f),
            Ok(Flow::Open)
        );
        if !open {
            return;
        }
        let n = tokio::select! {
            r = from.read(&mut buf) => match r {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = flow.wait_for(|f| *f == Flow::Cut) => return,
        };
        ctx.count(up, n);
        if *ctx.flow.borrow() == Flow::Cut {
            return;
        }
        tokio::select! {
            r = to.write_all(&buf[..n]) => if r.is_err() { return },
            _ = flow.wait_for(|f| *f == Flow::Cut) => return,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A store with data that does not compress to nothing, and the commands' arguments.

fn layout() -> StoreLayout {
    let spec: aienv::api::memory_store::MemoryStoreSpec = serde_saphyr::from_str(&format!(
        "mode: external\nembedding: {{dimensions: {DIMS}}}\n"
    ))
    .unwrap();
    StoreLayout::from_spec(&spec).unwrap()
}

/// A store of `rows` memories with random 768-d vectors (about 8 KiB of dump and 3.5 KiB of
/// zstd per row), without its HNSW index (irrelevant here, and slow to build).
async fn source(env: &TestEnv, prefix: &str, rows: usize) -> anyhow::Result<TestDatabase> {
    let db = env.test_database(prefix).await?;
    let layout = layout();
    db.prepare(&layout).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP INDEX {}",
        layout.index_name()
    )))
    .execute(&db.pool)
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO memories (content, embedding, agent_id, content_sha256, metadata)
         SELECT 'memory ' || i,
                (SELECT array_agg(random()::real) FROM generate_series(1, {DIMS}) WHERE i > 0)::vector,
                'agent-' || (i % 7), md5(i::text), jsonb_build_object('i', i)
         FROM generate_series(1, {rows}) i"
    )))
    .execute(&db.pool)
    .await?;
    sqlx::query(
        "INSERT INTO agent_conversations (agent_id, session_id, role, content)
         SELECT 'agent-' || (i % 7), 's' || (i % 50), 'user', 'turn ' || i FROM generate_series(1, 500) i",
    )
    .execute(&db.pool)
    .await?;
    Ok(db)
}

fn retention_off() -> retention::RetentionArgs {
    retention::RetentionArgs {
        retention: false,
        keep_last: 100,
        keep_daily: 0,
        keep_weekly: 0,
        keep_monthly: 0,
        time_zone: "UTC".into(),
    }
}

fn backup_args(env: &TestEnv, url: &str, dest: DestinationArgs) -> BackupArgs {
    BackupArgs {
        store: store_args(env, url),
        destination: dest,
        retention: retention_off(),
        zstd_level: 1,
        zstd_threads: 2,
        termination_log: std::env::temp_dir().join("aienv-backup-failures.log"),
    }
}

fn restore_args(env: &TestEnv, url: &str, dest: DestinationArgs, force: bool) -> RestoreArgs {
    RestoreArgs {
        store: store_args(env, url),
        destination: dest,
        backup: None,
        force,
        termination_log: std::env::temp_dir().join("aienv-restore-failures.log"),
    }
}

/// The store's folder, with its slash.
const FOLDER: &str = "backups/team/mem/";

/// Every object of the bucket under the store's folder.
async fn objects(env: &TestEnv, bucket: &str) -> anyhow::Result<Vec<String>> {
    let mut keys: Vec<String> = env
        .s3_store(bucket)?
        .list(Some(&ObjectPath::from(FOLDER)))
        .map_ok(|o| o.location.to_string())
        .try_collect()
        .await?;
    keys.sort();
    Ok(keys)
}

/// Leave the shared S3 server as found: incomplete uploads aborted, objects deleted.
async fn empty_bucket(env: &TestEnv, bucket: &str) -> anyhow::Result<()> {
    let uploads =
        Uploads::open(&s3_destination(env, bucket, &env.s3_endpoint))?.expect("an S3 destination");
    for u in uploads.list("").await? {
        uploads.abort(&u).await?;
    }
    let s3 = env.s3_store(bucket)?;
    let all: Vec<_> = s3.list(None).try_collect().await?;
    for o in all {
        s3.delete(&o.location).await?;
    }
    Ok(())
}

async fn bounded<T>(what: &str, f: impl Future<Output = T>) -> anyhow::Result<T> {
    tokio::time::timeout(BOUND, f)
        .await
        .with_context(|| format!("{what} did not end within {BOUND:?}"))
}

/// The next UTC second: backups are named by their second, and two in one are refused.
async fn next_second() {
    let now = jiff::Timestamp::now().as_second();
    while jiff::Timestamp::now().as_second() == now {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn the_s3_server_going_away_mid_upload_leaves_no_backup() -> anyhow::Result<()> {
    let Some(env) = testenv::require_env() else {
        return Ok(());
    };
    // Far more than the pipeline holds after the cut (~100 MiB: parts in flight, the channel,
    // the compressor), so the upload fails while pg_dump is still writing: with less, all of it
    // fits in flight, the failure only surfaces when completing, and a pipeline that does not
    // stop on a failed upload (it hung forever) passes unnoticed.
    let src = source(&env, "bkf_gone", 48_000).await?;
    let bucket = env.s3_bucket("aienv-bkf-gone").await?;
    let direct = s3_destination(&env, &bucket, &env.s3_endpoint);

    // A complete backup first: restore must fall back to it.
    let good = bounded(
        "a backup",
        backup(&backup_args(&env, &src.url, direct.clone())),
    )
    .await??;
    assert!(
        good.size_bytes > 30 * MIB,
        "too small for several parts: {good:?}"
    );
    next_second().await;

    // The server goes away after 9 MiB (the first 8 MiB part and a bit) of the next one.
    let proxy = Proxy::start(&env.s3_endpoint, Trigger::CutAfterUp(9 * MIB)).await?;
    let via_proxy = s3_destination(&env, &bucket, &proxy.endpoint);
    let e = bounded(
        "the cut backup",
        backup(&backup_args(&env, &src.url, via_proxy)),
    )
    .await?
    .unwrap_err();
    assert_eq!(
        proxy.flow(),
        Flow::Cut,
        "the upload ended before the cut: {e}"
    );
    assert_eq!(e.label(), "StorageError", "{e}");
    assert!(!e.to_string().contains(&env.aws_secret_access_key), "{e}");

    // Only the complete backup exists: its two objects, one manifest, listed and restored.
    let good_dir = good.key.trim_end_matches("dump.zst");
    assert_eq!(
        objects(&env, &bucket).await?,
        [
            format!("{good_dir}dump.zst"),
            format!("{good_dir}manifest.json")
        ]
    );
    let dest = Destination::open(&direct).await?;
    let listed: Vec<String> = dest
        .list("team", "mem")
        .await?
        .into_iter()
        .map(|m| m.key)
        .collect();
    assert_eq!(listed, std::slice::from_ref(&good.key));
    let dst = env.test_database("bkf_gone_dst").await?;
    let restored = bounded(
        "restore",
        restore(&restore_args(&env, &dst.url, direct, false)),
    )
    .await??;
    assert_eq!(restored.key, good.key);
    assert_eq!(content(&dst.pool).await?, content(&src.pool).await?);

    empty_bucket(&env, &bucket).await?;
    src.cleanup().await?;
    dst.cleanup().await
}

#[tokio::test]
async fn a_backup_killed_mid_upload_is_invisible_and_retention_aborts_its_upload()
-> anyhow::Result<()> {
    let Some(env) = testenv::require_env() else {
        return Ok(());
    };
    let bin = std::env::var("AIENV_BIN")
        .map(PathBuf::from)
        .context("AIENV_BIN: the aienv binary to run")?;
    let src = source(&env, "bkf_kill", 12_000).await?;
    let bucket = env.s3_bucket("aienv-bkf-kill").await?;
    let direct = s3_destination(&env, &bucket, &env.s3_endpoint);
    let uploads = Uploads::open(&direct)?.expect("an S3 destination");
    // Another store's upload, whose folder shares the prefix `mem`: never this store's business.
    let other = env
        .s3_store(&bucket)?
        .put_multipart(&ObjectPath::from(
            "backups/team/memory/20261201T000000Z/dump.zst",
        ))
        .await?;

    // The real command, as a Job runs it; the network stalls after 20 MiB so it cannot finish.
    let proxy = Proxy::start(&env.s3_endpoint, Trigger::FreezeAfterUp(20 * MIB)).await?;
    let mut child = tokio::process::Command::new(&bin)
        .args([
            "backup",
            "--namespace",
            "team",
            "--store",
            "mem",
            "--schema",
            TEST_SCHEMA,
        ])
        .args([
            "--bucket",
            &bucket,
            "--prefix",
            "backups",
            "--s3-path-style",
        ])
        .args([
            "--s3-endpoint",
            &proxy.endpoint,
            "--s3-region",
            &env.s3_region,
        ])
        .args(["--zstd-level", "1"])
        .arg("--termination-log")
        .arg(std::env::temp_dir().join(format!("aienv-bkf-kill-{}.log", std::process::id())))
        .env("AIENV_DATABASE_URL", &src.url)
        .env("AIENV_PG_BIN", &env.pg_bin)
        .env("AWS_ACCESS_KEY_ID", &env.aws_access_key_id)
        .env("AWS_SECRET_ACCESS_KEY", &env.aws_secret_access_key)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()?;
    wait_for(BOUND, "20 MiB of the backup uploaded", || {
        let frozen = proxy.flow() == Flow::Frozen;
        let exited = child.try_wait();
        async move {
            match exited? {
                Some(status) => bail!("aienv backup ended before it was killed: {status}"),
                None => Ok(frozen.then_some(())),
            }
        }
    })
    .await?;
    // The server sees the upload in progress (its parts are stored, no object lists them).
    let in_progress = uploads.list(FOLDER).await?;
    assert_eq!(in_progress.len(), 1, "{in_progress:?}");
    child.start_kill()?;
    let out = bounded("the killed backup", child.wait_with_output()).await??;
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(out.status.signal(), Some(9), "{:?}", out.status);
    assert!(out.stdout.is_empty(), "no result line from a killed backup");
    proxy.open();

    // No manifest, nothing listed, nothing to restore.
    assert_eq!(objects(&env, &bucket).await?, Vec::<String>::new());
    let dest = Destination::open(&direct).await?;
    assert!(dest.list("team", "mem").await?.is_empty());
    let dst = env.test_database("bkf_kill_dst").await?;
    let e = bounded(
        "restore",
        restore(&restore_args(&env, &dst.url, direct.clone(), false)),
    )
    .await?
    .unwrap_err();
    assert_eq!(e.label(), "BackupNotFound", "{e}");

    // Retention aborts the upload once it is more than a day old (the clock is the caller's:
    // the S3 server's `Initiated` is what counts; moto reports a fixed date in 2010).
    let left = &in_progress[0];
    assert!(
        left.key.starts_with(FOLDER) && left.key.ends_with("/dump.zst"),
        "{left:?}"
    );
    let policy = retention_off();
    let young = left.initiated + jiff::SignedDuration::from_hours(23);
    let applied = retention::apply_with_uploads(&direct, "team", "mem", &policy, young).await?;
    assert!(applied.aborted_uploads.is_empty(), "{applied:?}");
    assert_eq!(uploads.list(FOLDER).await?, in_progress);
    let old = left.initiated + jiff::SignedDuration::from_hours(25);
    let applied = retention::apply_with_uploads(&direct, "team", "mem", &policy, old).await?;
    assert_eq!(applied.aborted_uploads, std::slice::from_ref(&left.key));
    assert!(uploads.list(FOLDER).await?.is_empty());
    // The other store's upload is still there.
    assert_eq!(uploads.list("backups/team/memory/").await?.len(), 1);
    drop(other);

    empty_bucket(&env, &bucket).await?;
    src.cleanup().await?;
    dst.cleanup().await
}

#[tokio::test]
async fn a_backup_whose_pg_dump_dies_mid_dump_aborts_its_own_upload() -> anyhow::Result<()> {
    let Some(env) = testenv::require_env() else {
        return Ok(());
    };
    // More than the pipeline holds (4 parts in flight, 4 in the channel, one being filled and
    // one compressing: ~80 MiB of zstd), so pg_dump is still dumping when the network stalls.
    let src = source(&env, "bkf_pgdump", 36_000).await?;
    let bucket = env.s3_bucket("aienv-bkf-pgdump").await?;
    let uploads = Uploads::open(&s3_destination(&env, &bucket, &env.s3_endpoint))?
        .expect("an S3 destination");
    let proxy = Proxy::start(&env.s3_endpoint, Trigger::FreezeAfterUp(MIB)).await?;
    let args = backup_args(
        &env,
        &src.url,
        s3_destination(&env, &bucket, &proxy.endpoint),
    );
    let running = tokio::spawn(async move { backup(&args).await });

    wait_for(BOUND, "the upload to stall", || {
        let frozen = proxy.flow() == Flow::Frozen;
        async move { Ok(frozen.then_some(())) }
    })
    .await?;
    assert_eq!(uploads.list(FOLDER).await?.len(), 1);
    // pg_dump is blocked on its full pipe; its server session goes away.
    let db = src.name.clone();
    let pool = src.pool.clone();
    wait_for(BOUND, "pg_dump's session terminated", || {
        let (db, pool) = (db.clone(), pool.clone());
        async move {
            let (terminated,): (i64,) = sqlx::query_as(
                "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity
                 WHERE datname = $1 AND application_name = 'pg_dump'",
            )
            .bind(&db)
            .fetch_one(&pool)
            .await?;
            Ok((terminated > 0).then_some(()))
        }
    })
    .await?;
    proxy.open();
    let e = bounded("the failed backup", running).await??.unwrap_err();
    assert_eq!(e.label(), "ToolFailed", "{e}");
    assert!(e.to_string().contains("pg_dump"), "{e}");
    assert!(proxy.up() > MIB && proxy.down() > 0);

    // Its upload aborted (nothing billed, nothing for retention), no object, no backup.
    assert_eq!(uploads.list(FOLDER).await?, []);
    assert_eq!(objects(&env, &bucket).await?, Vec::<String>::new());

    empty_bucket(&env, &bucket).await?;
    src.cleanup().await
}

#[tokio::test]
async fn a_restore_cut_mid_stream_is_refused_again_until_forced() -> anyhow::Result<()> {
    let Some(env) = testenv::require_env() else {
        return Ok(());
    };
    let src = source(&env, "bkf_restore", 12_000).await?;
    let bucket = env.s3_bucket("aienv-bkf-restore").await?;
    let direct = s3_destination(&env, &bucket, &env.s3_endpoint);
    let good = bounded(
        "a backup",
        backup(&backup_args(&env, &src.url, direct.clone())),
    )
    .await??;
    assert!(good.size_bytes > 30 * MIB, "{good:?}");

    // The server goes away after 20 MiB of the download.
    let dst = env.test_database("bkf_restore_dst").await?;
    let proxy = Proxy::start(&env.s3_endpoint, Trigger::CutAfterDown(20 * MIB)).await?;
    let via_proxy = s3_destination(&env, &bucket, &proxy.endpoint);
    let e = bounded(
        "the cut restore",
        restore(&restore_args(&env, &dst.url, via_proxy, false)),
    )
    .await?
    .unwrap_err();
    assert_eq!(
        proxy.flow(),
        Flow::Cut,
        "the download ended before the cut: {e}"
    );
    assert_eq!(e.label(), "StorageError", "{e}");
    assert!(e.to_string().contains("--force"), "says what to do: {e}");

    // Half restored: a rerun without --force is refused, with it every table equals the source.
    let e = restore(&restore_args(&env, &dst.url, direct.clone(), false))
        .await
        .unwrap_err();
    assert_eq!(e.label(), "TargetNotEmpty", "{e}");
    let restored = bounded(
        "restore --force",
        restore(&restore_args(&env, &dst.url, direct, true)),
    )
    .await??;
    assert_eq!(restored.key, good.key);
    assert_eq!(content(&dst.pool).await?, content(&src.pool).await?);

    empty_bucket(&env, &bucket).await?;
    src.cleanup().await?;
    dst.cleanup().await
}

#[tokio::test]
async fn a_schema_without_the_store_config_table_still_backs_up() -> anyhow::Result<()> {
    let Some(env) = testenv::require_env() else {
        return Ok(());
    };
    // A failing query for the embedding config used to abort the snapshot's transaction, and
    // pg_dump then failed with "could not import the requested snapshot".
    let db = env.test_database("bkf_noconfig").await?;
    for q in [
        format!("CREATE SCHEMA IF NOT EXISTS {TEST_SCHEMA}"),
        format!("CREATE TABLE {TEST_SCHEMA}.notes (n int)"),
        format!("INSERT INTO {TEST_SCHEMA}.notes SELECT generate_series(1, 3)"),
    ] {
        sqlx::query(sqlx::AssertSqlSafe(q))
            .execute(&db.pool)
            .await?;
    }
    let bucket = env.s3_bucket("aienv-bkf-noconfig").await?;
    let direct = s3_destination(&env, &bucket, &env.s3_endpoint);
    let m = bounded("a backup", backup(&backup_args(&env, &db.url, direct))).await??;
    assert_eq!(m.row_counts.get("notes"), Some(&3));
    assert_eq!((m.embedding_dimensions, m.embedding_model), (None, None));
    empty_bucket(&env, &bucket).await?;
    db.cleanup().await
}
