//! Backup benchmark on the harness PostgreSQL 18 + pgvector and the loopback S3 server (moto): a
//! store of N memories with random 768-d vectors (they do not compress to nothing), at N/4 and N.
//! Measured in the same run, on the same data, for each size:
//! - `pg_dump -Fc -Z0` to a local file: the logical dump size (what MB/s are counted in) and
//!   pg_dump's own speed;
//! - baselines `pg_dump -Fc` (default gzip) and `pg_dump -Fc -Z0 | zstd -1 -T2` to local files;
//! - the S3 server's own ingest: the zstd file uploaded in 8 MiB parts, 4 in flight (what
//!   `aienv backup` does), by this process: the ceiling moto sets;
//! - `aienv backup` (the real binary; default zstd-3, and zstd-1) to the S3 server, its peak RSS
//!   (VmHWM, polled), and `aienv restore` into a fresh database.
//!
//! `cargo build --release -p aienv --bin aienv && cargo run --release -p aienv-tests --bin
//! bench-backup -- [--rows 100000] [--bin PATH]` (needs `scripts/testenv up`; the binary is
//! `--bin`, else `$AIENV_BIN`, else `$CARGO_TARGET_DIR/release/aienv`, else `debug/aienv`).
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
    };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i + 1 < argv.len() {
        match argv[i].as_str() {
            "--rows" => a.rows = argv[i + 1].parse().expect("a number"),
            "--bin" => a.bin = PathBuf::from(&argv[i + 1]),
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
    /// pg_restore of the -Z0 file into a fresh database.
    pg_restore_s: f64,
    s3_ingest_s: f64,
    backup_s: f64,
    /// CPU of the aienv process (compression, sha256, upload), not pg_dump's.
    backup_cpu_s: f64,
    backup1_cpu_s: f64,
    backup_bytes: u64,
    backup_rss_kib: u64,
    backup1_s: f64,
    backup1_bytes: u64,
    restore_s: f64,
    restore_rss_kib: u64,
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
    let (status, stat) = (
        format!("/proc/{}/status", child.id()),
        format!("/proc/{}/stat", child.id()),
    );
    let (mut hwm, mut ticks) = (0u64, 0u64);
    loop {
        if let Ok(s) = std::fs::read_to_string(&status)
            && let Some(kib) = s
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        {
            hwm = hwm.max(kib);
        }
        // Fields 14 and 15 (utime, stime), counted after the `(comm)` that may hold spaces.
        if let Ok(s) = std::fs::read_to_string(&stat)
            && let Some((_, rest)) = s.rsplit_once(')')
        {
            let f: Vec<u64> = rest
                .split_whitespace()
                .skip(11)
                .take(2)
                .filter_map(|v| v.parse().ok())
                .collect();
            if f.len() == 2 {
                ticks = ticks.max(f[0] + f[1]);
            }
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
        // USER_HZ is 100 on Linux.
        cpu_s: ticks as f64 / 100.0,
        output: child.wait_with_output()?,
    })
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
async fn s3_ingest(env: &TestEnv, bucket: &str, file: &Path) -> anyhow::Result<f64> {
    use std::io::Read;
    let s3 = env.s3_store(bucket)?;
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
    w.finish().await?;
    let secs = t.elapsed().as_secs_f64();
    s3.delete(&key).await?;
    Ok(secs)
}

async fn measure(env: &TestEnv, a: &Args, rows: usize, bucket: &str) -> anyhow::Result<Size> {
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
    let pipe_cpu_s = zstd.cpu_s;
    let pipe_bytes = std::fs::metadata(&zst)?.len();
    let s3_ingest_s = s3_ingest(env, bucket, &zst).await?;
    std::fs::remove_file(&zst)?;

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
        bucket,
        "--prefix",
        "bench",
        "--s3-path-style",
        "--s3-endpoint",
        &env.s3_endpoint,
        "--s3-region",
        &env.s3_region,
    ];
    let mut backup_args = vec!["backup"];
    backup_args.extend_from_slice(&common);
    let (w, line) = aienv(&a.bin, &backup_args, &envs)?;
    let (backup_s, backup_rss_kib, backup_cpu_s) = (w.secs, w.hwm_kib, w.cpu_s);
    let backup_bytes = line["sizeBytes"].as_u64().unwrap_or_default();
    // Two backups of a store in one second are refused: the next second.
    std::thread::sleep(Duration::from_millis(1100));
    backup_args.extend_from_slice(&["--zstd-level", "1"]);
    let (w, line1) = aienv(&a.bin, &backup_args, &envs)?;
    let (backup1_s, backup1_cpu_s) = (w.secs, w.cpu_s);
    let backup1_bytes = line1["sizeBytes"].as_u64().unwrap_or_default();

    let fresh = env.test_database("bench_bk_dst").await?;
    let restore_envs = [
        ("AIENV_DATABASE_URL", fresh.url.as_str()),
        envs[1],
        envs[2],
        envs[3],
    ];
    // The default-level backup, not the newest (zstd-1) one.
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

    let s3 = env.s3_store(bucket)?;
    let objects: Vec<_> = s3.list(None).try_collect().await?;
    for o in objects {
        s3.delete(&o.location).await?;
    }
    db.cleanup().await?;
    fresh.cleanup().await?;
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
        pg_restore_s,
        s3_ingest_s,
        backup_s,
        backup_cpu_s,
        backup1_cpu_s,
        backup_bytes,
        backup_rss_kib,
        backup1_s,
        backup1_bytes,
        restore_s,
        restore_rss_kib,
    })
}

fn mbps(bytes: u64, s: f64) -> f64 {
    bytes as f64 / MB / s
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
        "  baseline pg_dump -Z0 | zstd -1 -T2 to a file: {:4.1}s {:6.0} MB/s logical, {:.0} MB; zstd CPU {:.1}s",
        s.pipe_s,
        mbps(l, s.pipe_s),
        s.pipe_bytes as f64 / MB,
        s.pipe_cpu_s
    );
    println!(
        "  S3 server ingest (that file, 8 MiB parts x4): {:4.1}s {:6.0} MB/s stored = {:.0} MB/s logical (the ceiling moto sets)",
        s.s3_ingest_s,
        mbps(s.pipe_bytes, s.s3_ingest_s),
        mbps(l, s.s3_ingest_s)
    );
    println!(
        "  aienv backup (zstd-3, default) to S3:        {:4.1}s {:6.0} MB/s logical, {:.0} MB = {:.1}x gzip, {:.2}x zstd pipe; peak RSS {:.0} MiB; aienv CPU {:.1}s",
        s.backup_s,
        mbps(l, s.backup_s),
        s.backup_bytes as f64 / MB,
        s.gzip_s / s.backup_s,
        s.pipe_s / s.backup_s,
        s.backup_rss_kib as f64 / 1024.0,
        s.backup_cpu_s
    );
    println!(
        "  aienv backup --zstd-level 1 to S3:           {:4.1}s {:6.0} MB/s logical, {:.0} MB = {:.1}x gzip, {:.2}x zstd pipe; aienv CPU {:.1}s",
        s.backup1_s,
        mbps(l, s.backup1_s),
        s.backup1_bytes as f64 / MB,
        s.gzip_s / s.backup1_s,
        s.pipe_s / s.backup1_s,
        s.backup1_cpu_s
    );
    println!(
        "  baseline pg_restore of the -Z0 file into a fresh database: {:.1}s {:.0} MB/s logical",
        s.pg_restore_s,
        mbps(l, s.pg_restore_s)
    );
    println!(
        "  aienv restore (zstd-3 backup) from S3 into a fresh database: {:.1}s {:.0} MB/s logical = {:.2}x pg_restore from a local file; peak RSS {:.0} MiB",
        s.restore_s,
        mbps(l, s.restore_s),
        s.pg_restore_s / s.restore_s,
        s.restore_rss_kib as f64 / 1024.0
    );
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
    println!(
        "bench-backup: rows {} and {} x {DIMS}-d random vectors; aienv binary {} ({build} build); {} cores; S3 = moto (Python) on loopback",
        a.rows / 4,
        a.rows,
        a.bin.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    let bucket = env.s3_bucket("bench-backup").await?;
    let mut sizes = Vec::new();
    for rows in [a.rows / 4, a.rows] {
        println!("measuring rows={rows}");
        let s = measure(&env, &a, rows, &bucket).await?;
        report(&s);
        sizes.push(s);
    }
    let (small, big) = (&sizes[0], &sizes[1]);
    println!();
    println!(
        "goals (issue 11), at rows={}: logical dump >= 80 MB/s: {:.0} MB/s; >= 8x pg_dump gzip: {:.1}x; >= 0.9x local zstd pipe: {:.2}x; restore >= 50 MB/s: {:.0} MB/s",
        big.rows,
        mbps(big.logical, big.backup_s),
        big.gzip_s / big.backup_s,
        big.pipe_s / big.backup_s,
        mbps(big.logical, big.restore_s)
    );
    println!(
        "peak RSS flat in the database size: backup {:.0} MiB at {} rows, {:.0} MiB at {} rows ({:.2}x for {:.1}x the data); restore {:.0} / {:.0} MiB",
        small.backup_rss_kib as f64 / 1024.0,
        small.rows,
        big.backup_rss_kib as f64 / 1024.0,
        big.rows,
        big.backup_rss_kib as f64 / small.backup_rss_kib.max(1) as f64,
        big.logical as f64 / small.logical.max(1) as f64,
        small.restore_rss_kib as f64 / 1024.0,
        big.restore_rss_kib as f64 / 1024.0
    );
    println!(
        "S3 bound: the S3 server's own ingest takes {:.0}% of aienv backup's time (near 100%: moto is the bottleneck); but it runs on the same {} cores as the PostgreSQL backend, pg_dump and the compressor, which the local pipe does not pay for: aienv backup - ingest = {:.1}s = {:.2}x the zstd pipe",
        100.0 * big.s3_ingest_s / big.backup_s,
        std::thread::available_parallelism().map_or(0, |n| n.get()),
        big.backup1_s - big.s3_ingest_s,
        big.pipe_s / (big.backup1_s - big.s3_ingest_s).max(0.001)
    );
    Ok(())
}
