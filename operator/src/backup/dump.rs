//! `aienv backup`: pg_dump of the store's schema in custom format without its own compression,
//! in the snapshot the row counts were taken in; compressed with zstd on a thread of its own;
//! streamed into a multipart upload (never a full copy on disk or in memory); the manifest
//! written last, so a failed or killed backup leaves no backup.

use std::{
    io::{Read, Write},
    process::Stdio,
    time::Instant,
};

use bytes::Bytes;
use object_store::{ObjectStoreExt, PutPayload, WriteMultipart, path::Path};
use sha2::{Digest, Sha256};

use super::{
    BackupArgs, Error,
    manifest::{DUMP, FORMAT_VERSION, MANIFEST, Manifest},
    pg_command, row_counts, spawn_tool,
    storage::Destination,
};

/// Upload part size: S3 wants at least 5 MiB per part but the last.
const PART: usize = 8 * 1024 * 1024;
/// Compressed chunks in flight between the compressor and the upload.
const IN_FLIGHT: usize = 4;

/// Run one backup; returns its manifest.
pub async fn backup(args: &BackupArgs) -> Result<Manifest, Error> {
    let started = Instant::now();
    let started_at = jiff::Timestamp::now();
    let dest = Destination::open(&args.destination).await?;
    let s = &args.store;
    let folder = dest.store_folder(&s.namespace, &s.store);
    let stamp = started_at.strftime("%Y%m%dT%H%M%SZ").to_string();
    let key = Path::from(format!("{folder}/{stamp}/{DUMP}"));

    let manifest_path = Path::from(format!("{folder}/{stamp}/{MANIFEST}"));
    if dest.store.head(&manifest_path).await.is_ok() {
        return Err(Error::Refused(format!(
            "a backup of {}/{} was taken in this second already ({stamp}): retry in a second",
            s.namespace, s.store
        )));
    }

    // One snapshot for the counts and the dump.
    let mut conn = s.connect().await?;
    sqlx::query("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut conn)
        .await?;
    let (snapshot,): (String,) = sqlx::query_as("SELECT pg_export_snapshot()")
        .fetch_one(&mut conn)
        .await?;
    let (row_counts, vector_count) = row_counts(&mut conn, &s.schema).await?;
    if row_counts.is_empty() {
        return Err(Error::Refused(format!(
            "schema {:?} holds no tables: is the MemoryStore Ready?",
            s.schema
        )));
    }
    let (postgres_version,): (String,) = sqlx::query_as("SHOW server_version")
        .fetch_one(&mut conn)
        .await?;
    let pgvector_version: Option<(String,)> =
        sqlx::query_as("SELECT extversion FROM pg_extension WHERE extname = 'vector'")
            .fetch_optional(&mut conn)
            .await?;
    // Only if the table exists: a failing query would abort the transaction, and with it the
    // snapshot pg_dump is about to import ("could not import the requested snapshot").
    let (has_config,): (bool,) =
        sqlx::query_as("SELECT to_regclass(format('%I.aienv_store_config', $1::text)) IS NOT NULL")
            .bind(&s.schema)
            .fetch_one(&mut conn)
            .await?;
    // As JSON, so no shape of the table can make the query fail (see above).
    let config: Option<(Option<i32>, Option<String>)> = if has_config {
        let row: Option<(serde_json::Value,)> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
            "SELECT to_jsonb(c) FROM {}.aienv_store_config c LIMIT 1",
            super::ident(&s.schema)
        )))
        .fetch_optional(&mut conn)
        .await?;
        row.map(|(v,)| {
            (
                v["dimensions"].as_i64().and_then(|d| i32::try_from(d).ok()),
                v["embedding_model"].as_str().map(String::from),
            )
        })
    } else {
        None
    };

    let mut cmd = pg_command(s, "pg_dump")?;
    cmd.args([
        "--format=custom",
        "--compress=0",
        "--no-owner",
        "--no-privileges",
    ])
    .arg(format!("--schema={}", s.schema))
    .arg(format!("--snapshot={snapshot}"))
    .stdin(Stdio::null())
    .stdout(Stdio::piped());
    let (mut child, stderr_task) = spawn_tool(cmd, "pg_dump")?;
    // The compressor thread reads pg_dump's pipe itself with blocking reads: handing each
    // pipe-sized read over from a task (a spawn_blocking per 64 KiB) spent a third of the
    // process's CPU switching threads (perf).
    let stdout = child
        .stdout
        .take()
        .expect("piped")
        .into_owned_fd()
        .map_err(|e| Error::Tool {
            tool: "pg_dump",
            message: e.to_string(),
        })?;

    // pg_dump → compressor thread → (channel) → upload.
    let (out_tx, out_rx) = tokio::sync::mpsc::channel::<Bytes>(IN_FLIGHT);
    let (level, threads) = (args.zstd_level, args.zstd_threads);
    let compressor =
        std::thread::spawn(move || compress(std::fs::File::from(stdout), out_tx, level, threads));
    let upload = dest
        .store
        .put_multipart(&key)
        .await
        .map_err(|e| Error::Storage(e.to_string()))?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, PART);
    let upload_side = async {
        // Owned here, so a failed upload drops the receiver: the compressor's send fails, it
        // closes the pipe and pg_dump stops (EPIPE), instead of all three waiting forever.
        let mut out_rx = out_rx;
        let mut hash = Sha256::new();
        let mut size = 0u64;
        while let Some(chunk) = out_rx.recv().await {
            hash.update(&chunk);
            size += chunk.len() as u64;
            writer
                .wait_for_capacity(IN_FLIGHT)
                .await
                .map_err(|e| Error::Storage(e.to_string()))?;
            writer.put(chunk);
        }
        Ok::<_, Error>((hex::encode(hash.finalize()), size))
    };
    let uploaded = upload_side.await;
    let status = child.wait().await.map_err(|e| Error::Tool {
        tool: "pg_dump",
        message: e.to_string(),
    })?;
    let pg_stderr = stderr_task.await.unwrap_or_default();
    let compressed = compressor
        .join()
        .unwrap_or_else(|_| Err("the compressor panicked".into()));
    // The first cause wins: a failed upload stops the compressor and pg_dump (broken pipe), so
    // their errors follow from it; a pg_dump that failed by itself ends its output early.
    let uploaded = match (uploaded, compressed) {
        (Err(e), _) => Err(e),
        _ if !status.success() => Err(Error::Tool {
            tool: "pg_dump",
            message: format!("{status}: {}", pg_stderr.trim()),
        }),
        (_, Err(e)) => Err(Error::Storage(format!("zstd: {e}"))),
        (Ok(done), Ok(())) => Ok(done),
    };
    let (sha256, size_bytes) = match uploaded {
        Ok(done) => done,
        Err(e) => {
            // The parts uploaded so far are billed until aborted; if the server cannot be
            // reached now, retention aborts the upload a day later.
            writer.abort().await.ok();
            return Err(e);
        }
    };
    // `finish` aborts the upload itself when completing fails.
    writer
        .finish()
        .await
        .map_err(|e| Error::Storage(e.to_string()))?;
    sqlx::query("COMMIT").execute(&mut conn).await?;

    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        key: key.to_string(),
        sha256,
        size_bytes,
        compression: format!("zstd-{}", args.zstd_level),
        schema: s.schema.clone(),
        row_counts,
        vector_count,
        postgres_version,
        pgvector_version: pgvector_version.map(|v| v.0),
        embedding_model: config.as_ref().and_then(|c| c.1.clone()),
        embedding_dimensions: config.and_then(|c| c.0),
        started_at: started_at.to_string(),
        duration_seconds: started.elapsed().as_secs_f64(),
    };
    let body = serde_json::to_vec_pretty(&manifest).expect("a manifest serializes");
    dest.store
        .put(&manifest_path, PutPayload::from(body))
        .await
        .map_err(|e| Error::Storage(e.to_string()))?;
    Ok(manifest)
}

/// The compressor thread: pg_dump's output in, compressed chunks of about a part out.
fn compress(
    mut input: std::fs::File,
    output: tokio::sync::mpsc::Sender<Bytes>,
    level: i32,
    threads: u32,
) -> Result<(), String> {
    struct Sink {
        buf: Vec<u8>,
        out: tokio::sync::mpsc::Sender<Bytes>,
    }
    impl Write for Sink {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            self.buf.extend_from_slice(data);
            if self.buf.len() >= PART {
                self.flush()?;
            }
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            if !self.buf.is_empty() {
                let chunk = Bytes::from(std::mem::take(&mut self.buf));
                self.out
                    .blocking_send(chunk)
                    .map_err(|_| std::io::Error::other("the upload stopped"))?;
            }
            Ok(())
        }
    }
    let sink = Sink {
        buf: Vec::with_capacity(PART),
        out: output,
    };
    let mut enc = zstd::stream::write::Encoder::new(sink, level).map_err(|e| e.to_string())?;
    if threads > 1 {
        enc.multithread(threads).map_err(|e| e.to_string())?;
    }
    let mut buf = vec![0u8; 1024 * 1024];
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(format!("reading pg_dump's output: {e}")),
        };
        enc.write_all(&buf[..n]).map_err(|e| e.to_string())?;
    }
    let mut sink = enc.finish().map_err(|e| e.to_string())?;
    sink.flush().map_err(|e| e.to_string())
}
