//! Backup benchmark on the harness PostgreSQL 18 + pgvector and two loopback S3 servers: moto (the
//! test environment's, Python) and s3s-fs (Rust, on files, started by this bench only): a store of
//! N memories with random 768-d vectors (they do not compress to nothing), at N/4 and N.
//! Measured in the same run, on the same data, for each size:
//! - `pg_dump -Fc -Z0` to a local file: the logical dump size (what MB/s are counted in) and
//!   pg_dump's own speed;
//! - baselines `pg_dump -Fc` (default gzip) and `pg_dump -Fc -Z0 | zstd -1 -T2` to local files;
//! - per S3 server: its own ingest, the zstd file uploaded in 8 MiB parts, 4 in flight (what
//!   `aienv backup` does), by this process: the ceiling that server sets; `aienv backup` (the real
//!   binary; at its default zstd-1, and at zstd-3) to it, its peak RSS (VmHWM, polled), and
//!   `aienv restore` into a fresh database.
//!
//! The goals are read on s3s-fs: moto spends more CPU per byte than the dump itself on these 2
//! cores, and a production object store does not share the backup's cores. s3s-fs is built once
//! into `$AIENV_CACHE/s3s-fs-<version>` (`~/.cache/aienv`) with `cargo install`, or
//! `$AIENV_S3S_FS` names it.
//!
//! `cargo build --release -p aienv --bin aienv && cargo run --release -p aienv-tests --bin
//! bench-backup -- [--rows 100000] [--bin PATH] [--servers moto,s3s-fs] [--quarter true]`
//! (needs `scripts/testenv up`; the binary is `--bin`, else `$AIENV_BIN`, else
//! `$CARGO_TARGET_DIR/release/aienv`, else `debug/aienv`).
//! MB are 10^6 bytes. The HNSW index is dropped before loading (a restore rebuilds it;
//! `bench-memory` measures that build), so restore MB/s are data and b-tree indexes.

use std::{
    path::{Path, PathBuf},
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use aienv::memory::ddl::StoreLayout;
use aienv_tests::testenv::{TEST_SCHEMA, TestDatabase, TestEnv};
use anyhow::{Context as _, bail};
use futures::TryStreamExt;
use object_store::{ObjectStore, ObjectStoreExt, WriteMultipart, path::Path as ObjectPath};

const DIMS: usize = 768;
const MB: f64 = 1e6;
const PART: usize = 8 * 1024 * 1024;

struct Args {
    rows: usize,
    bin: PathBuf,
    /// S3 servers to measure, of `moto` and `s3s-fs`.
    servers: Vec<String>,
    /// Also measure at rows/4 (for the peak-RSS comparison).
    quarter: bool,
}

fn args() -> Args {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| aienv_tests::testenv::workspace_root().join("target"));
    let default_bin = std::env::var_os("AIENV_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            let release = target.join("release/aienv");
            if release.exists() {
                release
            } else {
                target.join("debug/aienv")
            }
        });
    let mut a = Args {
        rows: 100_000,
        bin: default_bin,
        servers: vec!["moto".into(), "s3s-fs".into()],
        quarter: true,
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i + 1 < argv.len() {
        match argv[i].as_str() {
            "--rows" => a.rows = argv[i + 1].parse().expect("a number"),
            "--bin" => a.bin = PathBuf::from(&argv[i + 1]),
            "--servers" => a.servers = argv[i + 1].split(',').map(String::from).collect(),
            "--quarter" => a.quarter = argv[i + 1].parse().expect("true or false"),
            other => panic!("unknown flag {other}"),
        }
        i += 2;
    }
    a
}

/// What one size measured.
struct Size {
    rows: usize,
    /// Bytes of `pg_dump -Fc -Z0`.
    logical: u64,
    raw_s: f64,
    gzip_s: f64,
    gzip_bytes: u64,
    pipe_s: f64,
    pipe_bytes: u64,
    /// CPU of the zstd CLI in the pipe.
    pipe_cpu_s: f64,
    /// The machine's cores busy during the pipe (all processes), 0..1.
    pipe_busy: f64,
    /// pg_restore of the -Z0 file into a fresh database.
    pg_restore_s: f64,
    /// One per S3 server, in `S3Server` order.
    servers: Vec<ServerRun>,
}

/// What one size measured against one S3 server.
struct ServerRun {
    server: &'static str,
    ingest: Ingest,
    backup_s: f64,
    /// CPU of the aienv process (compression, sha256, upload), not pg_dump's.
    backup_cpu_s: f64,
    /// The machine's cores busy during the backup, 0..1.
    backup_busy: f64,
    /// CPU of the S3 server during the backup (s3s-fs only: moto is not ours to watch).
    backup_server_cpu_s: Option<f64>,
    backup_bytes: u64,
    backup_rss_kib: u64,
    backup3_s: f64,
    backup3_cpu_s: f64,
    backup3_bytes: u64,
    restore_s: f64,
    restore_rss_kib: u64,
}

/// A server's ingest of the zstd pipe's file.
#[derive(Clone, Copy)]
struct Ingest {
    secs: f64,
    /// Of `secs`, what followed the last full part: the short last part and
    /// CompleteMultipartUpload, the serial tail every backup to this server ends with.
    finish_s: f64,
}

/// An S3 server the bench writes to, with a bucket made for it.
struct S3Server {
    name: &'static str,
    endpoint: String,
    bucket: String,
    /// s3s-fs: the process (killed on drop) and its data directory.
    own: Option<(std::process::Child, PathBuf)>,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some((child, dir)) = &mut self.own {
            child.kill().ok();
            child.wait().ok();
            std::fs::remove_dir_all(dir).ok();
        }
    }
}

const S3S_FS_VERSION: &str = "0.14.1";

/// The s3s-fs binary: `$AIENV_S3S_FS`, else built once into the cache (the newest release this
/// toolchain builds).
fn s3s_fs_binary() -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("AIENV_S3S_FS") {
        return Ok(bin.into());
    }
    let root = aienv_tests::testenv::cache_dir().join(format!("s3s-fs-{S3S_FS_VERSION}"));
    let bin = root.join("bin/s3s-fs");
    if !bin.exists() {
        println!(
            "building s3s-fs {S3S_FS_VERSION} once into {}",
            root.display()
        );
        timed(
            Command::new("cargo")
                .args(["install", "--locked", "--features", "binary", "--root"])
                .arg(&root)
                .arg(format!("s3s-fs@{S3S_FS_VERSION}"))
                .env_remove("CARGO_TARGET_DIR"),
            "cargo install s3s-fs",
        )?;
    }
    Ok(bin)
}

/// Starts s3s-fs on a free loopback port with the environment's keys and one bucket.
async fn start_s3s_fs(env: &TestEnv) -> anyhow::Result<S3Server> {
    let bin = s3s_fs_binary()?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let dir = std::env::temp_dir().join(format!("bench-backup-s3s-{}", std::process::id()));
    let bucket = "bench-backup".to_string();
    // A bucket is a directory to s3s-fs.
    std::fs::create_dir_all(dir.join(&bucket))?;
    let child = Command::new(&bin)
        .args(["--host", "127.0.0.1", "--port", &port.to_string()])
        .args(["--access-key", &env.aws_access_key_id])
        .args(["--secret-key", &env.aws_secret_access_key])
        .arg(&dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let server = S3Server {
        name: "s3s-fs",
        endpoint: format!("http://127.0.0.1:{port}"),
        bucket,
        own: Some((child, dir)),
    };
    let started = Instant::now();
    while tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .is_err()
    {
        if started.elapsed() > Duration::from_secs(20) {
            bail!("s3s-fs did not listen on {port} within 20 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(server)
}

fn pg_dump(env: &TestEnv, db: &TestDatabase, extra: &[&str]) -> Command {
    let mut c = Command::new(env.pg_bin.join("pg_dump"));
    c.arg(format!("--dbname={}", db.url))
        .args(["--format=custom", "--no-owner", "--no-privileges"])
        .arg(format!("--schema={TEST_SCHEMA}"))
        .args(extra)
        .stdin(Stdio::null());
    c
}

/// Run to completion; seconds.
fn timed(cmd: &mut Command, what: &str) -> anyhow::Result<f64> {
    let t = Instant::now();
    let out = cmd
        .stderr(Stdio::piped())
        .output()
        .with_context(|| what.to_string())?;
    if !out.status.success() {
        bail!(
            "{what}: {}: {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(t.elapsed().as_secs_f64())
}

/// A child watched until it exits: seconds, peak RSS (VmHWM, KiB) and CPU seconds (user +
/// system) of that process alone. Both are polled from /proc every 20 ms: the last reading
/// misses at most the final 20 ms.
struct Watched {
    secs: f64,
    hwm_kib: u64,
    cpu_s: f64,
    output: std::process::Output,
}

fn watch(mut child: std::process::Child, started: Instant) -> anyhow::Result<Watched> {
    let status = format!("/proc/{}/status", child.id());
    let (mut hwm, mut cpu_s) = (0u64, 0f64);
    loop {
        if let Ok(s) = std::fs::read_to_string(&status)
            && let Some(kib) = s
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            hwm = hwm.max(kib);
        }
        if let Some(c) = process_cpu_s(child.id()) {
            cpu_s = cpu_s.max(c);
        }
        if child.try_wait()?.is_some() {
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let secs = started.elapsed().as_secs_f64();
    Ok(Watched {
        secs,
        hwm_kib: hwm,
        cpu_s,
        output: child.wait_with_output()?,
    })
}

/// Jiffies of the whole machine from /proc/stat: (busy, total).
fn machine_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let f: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = f.iter().sum();
    // idle and iowait are fields 4 and 5.
    let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// The share of the machine's cores busy since `from` (a `machine_jiffies` reading), 0..1.
fn busy_since(from: (u64, u64)) -> f64 {
    let now = machine_jiffies();
    (now.0 - from.0) as f64 / (now.1 - from.1).max(1) as f64
}

/// CPU seconds (user + system) a process has used so far: fields 14 and 15 of its stat,
/// counted after the `(comm)` that may hold spaces, in ticks of USER_HZ (100 on Linux).
fn process_cpu_s(pid: u32) -> Option<f64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = s.rsplit_once(')')?;
    let f: Vec<u64> = rest
        .split_whitespace()
        .skip(11)
        .take(2)
        .filter_map(|v| v.parse().ok())
        .collect();
    (f.len() == 2).then(|| (f[0] + f[1]) as f64 / 100.0)
}

/// Run the aienv binary to completion; what `watch` saw and its JSON result line.
fn aienv(
    bin: &Path,
    args: &[&str],
    envs: &[(&str, &str)],
) -> anyhow::Result<(Watched, serde_json::Value)> {
    let t = Instant::now();
    let child = Command::new(bin)
        .args(args)
        .args(["--termination-log", "/dev/null"])
        .envs(envs.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let w = watch(child, t)?;
    let line: serde_json::Value = serde_json::from_slice(&w.output.stdout).unwrap_or_default();
    if !w.output.status.success() || line["result"] != "succeeded" {
        bail!(
            "aienv {}: {}: {line} {}",
            args[0],
            w.output.status,
            String::from_utf8_lossy(&w.output.stderr)
        );
    }
    Ok((w, line))
}

async fn load(env: &TestEnv, rows: usize) -> anyhow::Result<TestDatabase> {
    let db = env.test_database("bench_bk").await?;
    let spec: aienv::api::memory_store::MemoryStoreSpec = serde_saphyr::from_str(&format!(
        "mode: external\nembedding: {{dimensions: {DIMS}}}\n"
    ))?;
    let layout = StoreLayout::from_spec(&spec).expect("layout");
    db.prepare(&layout).await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "DROP INDEX {}",
        layout.index_name()
    )))
    .execute(&db.pool)
    .await?;
    // Server-side generation in batches of 10k (one statement per batch keeps memory bounded).
    let mut done = 0;
    while done < rows {
        let n = (rows - done).min(10_000);
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO memories (content, embedding, agent_id, session_id, content_sha256, metadata)
             SELECT 'synthetic memory ' || i || ' ' || md5(random()::text),
                    (SELECT array_agg(random()::real) FROM generate_series(1, {DIMS}) WHERE i > 0)::vector,
                    'a' || (i % 37), 's' || (i % 13), md5(i::text), jsonb_build_object('i', i)
             FROM generate_series({}, {}) i",
            done + 1,
            done + n
        )))
        .execute(&db.pool)
        .await?;
        done += n;
    }
    sqlx::query("VACUUM ANALYZE memories")
        .execute(&db.pool)
        .await?;
    Ok(db)
}

/// The S3 server's ceiling: `file` uploaded the way `aienv backup` uploads (8 MiB parts, 4 in
/// flight); seconds.
async fn s3_ingest(env: &TestEnv, server: &S3Server, file: &Path) -> anyhow::Result<Ingest> {
    use std::io::Read;
    let s3 = env.s3_store_at(&server.endpoint, &server.bucket)?;
    let key = ObjectPath::from("ingest/probe.zst");
    let mut f = std::fs::File::open(file)?;
    let t = Instant::now();
    let mut w = WriteMultipart::new_with_chunk_size(s3.put_multipart(&key).await?, PART);
    let mut buf = vec![0u8; PART];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        w.wait_for_capacity(4).await?;
        w.write(&buf[..n]);
    }
    // Every full part acknowledged; what is left is the server's completion.
    w.wait_for_capacity(1).await?;
    let finishing = Instant::now();
    w.finish().await?;
    let ingest = Ingest {
        secs: t.elapsed().as_secs_f64(),
        finish_s: finishing.elapsed().as_secs_f64(),
    };
    s3.delete(&key).await?;
    Ok(ingest)
}

async fn measure(
    env: &TestEnv,
    a: &Args,
    rows: usize,
    servers: &[S3Server],
) -> anyhow::Result<Size> {
    let t = Instant::now();
    let db = load(env, rows).await?;
    println!("  loaded {rows} rows in {:.1}s", t.elapsed().as_secs_f64());
    let dir = std::env::temp_dir().join(format!("bench-backup-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let raw = dir.join("raw.dump");
    let gz = dir.join("gzip.dump");
    let zst = dir.join("pipe.dump.zst");

    let raw_s = timed(
        pg_dump(env, &db, &["--compress=0"]).stdout(std::fs::File::create(&raw)?),
        "pg_dump -Z0",
    )?;
    let logical = std::fs::metadata(&raw)?.len();
    let plain = env.test_database("bench_bk_plain").await?;
    let pg_restore_s = timed(
        Command::new(env.pg_bin.join("pg_restore"))
            .arg(format!("--dbname={}", plain.url))
            .args(["--no-owner", "--no-privileges", "--exit-on-error"])
            .arg(&raw)
            .stdout(Stdio::null()),
        "pg_restore",
    )?;
    plain.cleanup().await?;
    std::fs::remove_file(&raw)?;
    let gzip_s = timed(
        pg_dump(env, &db, &[]).stdout(std::fs::File::create(&gz)?),
        "pg_dump (gzip)",
    )?;
    let gzip_bytes = std::fs::metadata(&gz)?.len();
    std::fs::remove_file(&gz)?;
    let t = Instant::now();
    let jiffies = machine_jiffies();
    let mut dump = pg_dump(env, &db, &["--compress=0"])
        .stdout(Stdio::piped())
        .spawn()?;
    let zstd = Command::new("zstd")
        .args(["-1", "-T2", "-q", "-c"])
        .stdin(dump.stdout.take().expect("piped"))
        .stdout(std::fs::File::create(&zst)?)
        .spawn()
        .context("zstd CLI (apt-get install zstd)")?;
    let zstd = watch(zstd, t)?;
    let dumped = dump.wait()?;
    if !(zstd.output.status.success() && dumped.success()) {
        bail!("pg_dump | zstd: {dumped} / {}", zstd.output.status);
    }
    let pipe_s = t.elapsed().as_secs_f64();
    let pipe_busy = busy_since(jiffies);
    let pipe_cpu_s = zstd.cpu_s;
    let pipe_bytes = std::fs::metadata(&zst)?.len();

    // Every server's ingest first, so the file is gone before the backups fill the disk.
    let mut ingests = Vec::new();
    for server in servers {
        ingests.push(s3_ingest(env, server, &zst).await?);
    }
    std::fs::remove_file(&zst)?;
    let mut runs = Vec::new();
    for (server, ingest) in servers.iter().zip(ingests) {
        runs.push(measure_server(env, a, rows, &db, server, ingest).await?);
    }
    db.cleanup().await?;
    let _ = std::fs::remove_dir(&dir);
    Ok(Size {
        rows,
        logical,
        raw_s,
        gzip_s,
        gzip_bytes,
        pipe_s,
        pipe_bytes,
        pipe_cpu_s,
        pipe_busy,
        pg_restore_s,
        servers: runs,
    })
}

/// `aienv backup` at the default level (1) and at 3, and `aienv restore` of the default-level backup
/// into a fresh database (`ingest`: the server's ingest of the pipe's file, measured before).
async fn measure_server(
    env: &TestEnv,
    a: &Args,
    rows: usize,
    db: &TestDatabase,
    server: &S3Server,
    ingest: Ingest,
) -> anyhow::Result<ServerRun> {
    let envs = [
        ("AIENV_DATABASE_URL", db.url.as_str()),
        ("AIENV_PG_BIN", env.pg_bin.to_str().unwrap_or_default()),
        ("AWS_ACCESS_KEY_ID", env.aws_access_key_id.as_str()),
        ("AWS_SECRET_ACCESS_KEY", env.aws_secret_access_key.as_str()),
    ];
    let store = format!("s{rows}");
    let common = [
        "--namespace",
        "bench",
        "--store",
        &store,
        "--schema",
        TEST_SCHEMA,
        "--bucket",
        &server.bucket,
        "--prefix",
        "bench",
        "--s3-path-style",
        "--s3-endpoint",
        &server.endpoint,
        "--s3-region",
        &env.s3_region,
    ];
    let mut backup_args = vec!["backup"];
    backup_args.extend_from_slice(&common);
    let server_pid = server.own.as_ref().map(|(child, _)| child.id());
    let server_cpu = || server_pid.and_then(process_cpu_s);
    let (jiffies, server_before) = (machine_jiffies(), server_cpu());
    let (w, line) = aienv(&a.bin, &backup_args, &envs)?;
    let backup_busy = busy_since(jiffies);
    let backup_server_cpu_s = server_cpu()
        .zip(server_before)
        .map(|(after, before)| after - before);
    let (backup_s, backup_rss_kib, backup_cpu_s) = (w.secs, w.hwm_kib, w.cpu_s);
    let backup_bytes = line["sizeBytes"].as_u64().unwrap_or_default();
    // Two backups of a store in one second are refused: the next second.
    std::thread::sleep(Duration::from_millis(1100));
    backup_args.extend_from_slice(&["--zstd-level", "3"]);
    let (w, line3) = aienv(&a.bin, &backup_args, &envs)?;
    let (backup3_s, backup3_cpu_s) = (w.secs, w.cpu_s);
    let backup3_bytes = line3["sizeBytes"].as_u64().unwrap_or_default();
    // Only its timing is wanted: its objects go now, for the disk's sake (1M rows).
    let s3 = env.s3_store_at(&server.endpoint, &server.bucket)?;
    if let Some(key) = line3["key"].as_str() {
        let folder = key.rsplit_once('/').map_or(key, |(f, _)| f);
        let objects: Vec<_> = s3
            .list(Some(&ObjectPath::from(folder)))
            .try_collect()
            .await?;
        for o in objects {
            s3.delete(&o.location).await?;
        }
    }

    let fresh = env.test_database("bench_bk_dst").await?;
    let restore_envs = [
        ("AIENV_DATABASE_URL", fresh.url.as_str()),
        envs[1],
        envs[2],
        envs[3],
    ];
    // The default-level backup, not the newest (zstd-3) one.
    let stamp = line["key"]
        .as_str()
        .and_then(|k| k.rsplit('/').nth(1))
        .context("the backup's key")?
        .to_string();
    let mut restore_args = vec!["restore"];
    restore_args.extend_from_slice(&common);
    restore_args.extend_from_slice(&["--backup", &stamp]);
    let (w, _) = aienv(&a.bin, &restore_args, &restore_envs)?;
    let (restore_s, restore_rss_kib) = (w.secs, w.hwm_kib);

    let objects: Vec<_> = s3.list(None).try_collect().await?;
    for o in objects {
        s3.delete(&o.location).await?;
    }
    fresh.cleanup().await?;
    Ok(ServerRun {
        server: server.name,
        ingest,
        backup_s,
        backup_cpu_s,
        backup_busy,
        backup_server_cpu_s,
        backup_bytes,
        backup_rss_kib,
        backup3_s,
        backup3_cpu_s,
        backup3_bytes,
        restore_s,
        restore_rss_kib,
    })
}

fn mbps(bytes: u64, s: f64) -> f64 {
    bytes as f64 / MB / s
}

/// A backup's time, rate and size with its ratios to the two compressed baselines.
fn against_baselines(s: &Size, secs: f64, bytes: u64) -> String {
    format!(
        "{secs:4.1}s {:6.0} MB/s logical, {:.0} MB = {:.1}x gzip, {:.2}x zstd pipe",
        mbps(s.logical, secs),
        bytes as f64 / MB,
        s.gzip_s / secs,
        s.pipe_s / secs
    )
}

fn report(s: &Size) {
    let l = s.logical;
    println!(
        "rows={} logical dump (pg_dump -Fc -Z0) {:.0} MB; pg_dump alone to a file {:.1}s = {:.0} MB/s",
        s.rows,
        l as f64 / MB,
        s.raw_s,
        mbps(l, s.raw_s)
    );
    println!(
        "  baseline pg_dump -Fc (gzip) to a file:      {:6.1}s {:6.0} MB/s logical, {:.0} MB",
        s.gzip_s,
        mbps(l, s.gzip_s),
        s.gzip_bytes as f64 / MB
    );
    println!(
        "  baseline pg_dump -Z0 | zstd -1 -T2 to a file: {:4.1}s {:6.0} MB/s logical, {:.0} MB; zstd CPU {:.1}s; cores busy {:.0}%",
        s.pipe_s,
        mbps(l, s.pipe_s),
        s.pipe_bytes as f64 / MB,
        s.pipe_cpu_s,
        100.0 * s.pipe_busy
    );
    println!(
        "  baseline pg_restore of the -Z0 file into a fresh database: {:.1}s {:.0} MB/s logical",
        s.pg_restore_s,
        mbps(l, s.pg_restore_s)
    );
    for r in &s.servers {
        println!("  to {}:", r.server);
        println!(
            "    server ingest (that file, 8 MiB parts x4): {:4.1}s {:6.0} MB/s stored = {:.0} MB/s logical (the ceiling it sets); of which {:.1}s after the last full part (last part + CompleteMultipartUpload)",
            r.ingest.secs,
            mbps(s.pipe_bytes, r.ingest.secs),
            mbps(l, r.ingest.secs),
            r.ingest.finish_s
        );
        println!(
            "    aienv backup (default, zstd-1): {}; peak RSS {:.0} MiB; aienv CPU {:.1}s{}; cores busy {:.0}%",
            against_baselines(s, r.backup_s, r.backup_bytes),
            r.backup_rss_kib as f64 / 1024.0,
            r.backup_cpu_s,
            r.backup_server_cpu_s
                .map(|c| format!(", server CPU {c:.1}s"))
                .unwrap_or_default(),
            100.0 * r.backup_busy
        );
        println!(
            "    aienv backup --zstd-level 3:    {}; aienv CPU {:.1}s",
            against_baselines(s, r.backup3_s, r.backup3_bytes),
            r.backup3_cpu_s
        );
        println!(
            "    aienv restore (the default-level backup) into a fresh database: {:.1}s {:.0} MB/s logical = {:.2}x pg_restore from a local file; peak RSS {:.0} MiB",
            r.restore_s,
            mbps(l, r.restore_s),
            s.pg_restore_s / r.restore_s,
            r.restore_rss_kib as f64 / 1024.0
        );
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a = args();
    let env = TestEnv::load().context("test environment not running: scripts/testenv up")?;
    let path = a.bin.to_string_lossy();
    let build = if path.contains("release") {
        "release"
    } else if path.contains("debug") {
        "debug"
    } else {
        "unknown"
    };
    let mut servers = Vec::new();
    for name in &a.servers {
        servers.push(match name.as_str() {
            "moto" => S3Server {
                name: "moto",
                endpoint: env.s3_endpoint.clone(),
                bucket: env.s3_bucket("bench-backup").await?,
                own: None,
            },
            "s3s-fs" => start_s3s_fs(&env).await?,
            other => bail!("unknown S3 server {other}: moto or s3s-fs"),
        });
    }
    println!(
        "bench-backup: rows {}{} x {DIMS}-d random vectors; aienv binary {} ({build} build); {} cores; S3 servers on loopback: {} (moto is Python; s3s-fs {S3S_FS_VERSION} is Rust)",
        if a.quarter {
            format!("{} and ", a.rows / 4)
        } else {
            String::new()
        },
        a.rows,
        a.bin.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        a.servers.join(", ")
    );
    let mut sizes = Vec::new();
    let all = [a.rows / 4, a.rows];
    for &rows in &all[usize::from(!a.quarter)..] {
        println!("measuring rows={rows}");
        let s = measure(&env, &a, rows, &servers).await?;
        report(&s);
        sizes.push(s);
    }
    let (small, big) = (&sizes[0], &sizes[sizes.len() - 1]);
    println!();
    for (i, r) in big.servers.iter().enumerate() {
        let rs = &small.servers[i];
        println!(
            "goals (issue 11) to {}, at rows={}: logical dump >= 80 MB/s: {:.0} MB/s; >= 8x pg_dump gzip: {:.1}x; >= 0.9x local zstd pipe: {:.2}x; restore >= 50 MB/s: {:.0} MB/s",
            r.server,
            big.rows,
            mbps(big.logical, r.backup_s),
            big.gzip_s / r.backup_s,
            big.pipe_s / r.backup_s,
            mbps(big.logical, r.restore_s)
        );
        if sizes.len() > 1 {
            println!(
                "  peak RSS flat in the database size: backup {:.0} MiB at {} rows, {:.0} MiB at {} rows ({:.2}x for {:.1}x the data); restore {:.0} / {:.0} MiB",
                rs.backup_rss_kib as f64 / 1024.0,
                small.rows,
                r.backup_rss_kib as f64 / 1024.0,
                big.rows,
                r.backup_rss_kib as f64 / rs.backup_rss_kib.max(1) as f64,
                big.logical as f64 / small.logical.max(1) as f64,
                rs.restore_rss_kib as f64 / 1024.0,
                r.restore_rss_kib as f64 / 1024.0
            );
        }
        println!(
            "  the server's own ingest takes {:.0}% of aienv backup's time (near 100%: the server is the bottleneck)",
            100.0 * r.ingest.secs / r.backup_s
        );
        // The backup ends with the same completion; a server that assembles the object by
        // copying its parts (s3s-fs) makes that a serial tail the pipe to a file has not.
        println!(
            "  completing the object took the server {:.1}s in its ingest; backup less that = {:.2}x the zstd pipe",
            r.ingest.finish_s,
            big.pipe_s / (r.backup_s - r.ingest.finish_s).max(0.001)
        );
        // With every core busy nothing waits on the upload: the backup is as fast as the
        // machine's CPU allows, and what the server burns on the same cores is the gap.
        if let Some(server_cpu) = r.backup_server_cpu_s {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
            println!(
                "  cores busy {:.0}% during the backup ({:.0}% during the pipe); the server burnt {server_cpu:.1}s of CPU on those cores = {:.1}s of the backup's {:.1}s at {cores} cores; backup less that = {:.2}x the zstd pipe",
                100.0 * r.backup_busy,
                100.0 * big.pipe_busy,
                server_cpu / cores,
                r.backup_s,
                big.pipe_s / (r.backup_s - server_cpu / cores).max(0.001)
            );
        }
    }
    Ok(())
}
