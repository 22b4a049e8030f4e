//! `aienv restore`: the newest or a named backup into the store's database. The object's sha256
//! is checked while it streams through zstd into pg_restore; the restored row counts must equal
//! the manifest's. A schema that already holds tables is refused unless `--force`.

use std::{io::Write, process::Stdio};

use futures::StreamExt;
use object_store::{ObjectStoreExt, path::Path};
use sha2::{Digest, Sha256};
use sqlx::Connection;

use super::{
    Error, RestoreArgs, manifest::Manifest, pg_command, row_counts, spawn_tool,
    storage::Destination,
};

/// Restore; returns the manifest of the backup restored.
pub async fn restore(args: &RestoreArgs) -> Result<Manifest, Error> {
    let dest = Destination::open(&args.destination).await?;
    let s = &args.store;
    let all = dest.list(&s.namespace, &s.store).await?;
    let manifest = match &args.backup {
        None => all.last().cloned(),
        Some(name) => all
            .iter()
            .find(|m| m.key.split('/').rev().nth(1) == Some(name.as_str()))
            .cloned(),
    }
    .ok_or_else(|| {
        Error::NotFound(format!(
            "{}/{}{}",
            s.namespace,
            s.store,
            args.backup
                .as_deref()
                .map(|b| format!(" named {b}"))
                .unwrap_or_default()
        ))
    })?;
    manifest.check().map_err(Error::Refused)?;

    let mut conn = s.connect().await?;
    let (tables,): (i64,) = sqlx::query_as("SELECT count(*) FROM pg_tables WHERE schemaname = $1")
        .bind(&manifest.schema)
        .fetch_one(&mut conn)
        .await?;
    if tables > 0 {
        if !args.force {
            return Err(Error::Refused(format!(
                "schema {:?} already holds {tables} table(s): restoring would mix two stores' data; pass --force to replace it",
                manifest.schema
            )));
        }
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP SCHEMA {} CASCADE",
            super::ident(&manifest.schema)
        )))
        .execute(&mut conn)
        .await?;
    }

    let mut cmd = pg_command(s, "pg_restore")?;
    cmd.args(["--no-owner", "--no-privileges", "--exit-on-error"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null());
    let (mut child, stderr_task) = spawn_tool(cmd, "pg_restore")?;
    let stdin = child.stdin.take().expect("piped");
    // The decompressor writes into pg_restore's stdin on a thread of its own.
    let stdin = stdin.into_owned_fd().map_err(|e| Error::Tool {
        tool: "pg_restore",
        message: e.to_string(),
    })?;
    let (tx, rx) = std::sync::mpsc::sync_channel::<bytes::Bytes>(4);
    let decompressor = std::thread::spawn(move || -> Result<(), String> {
        let file = std::fs::File::from(stdin);
        let mut dec = zstd::stream::write::Decoder::new(file).map_err(|e| e.to_string())?;
        for chunk in rx {
            dec.write_all(&chunk).map_err(|e| e.to_string())?;
        }
        dec.flush().map_err(|e| e.to_string())
    });
    let object = dest
        .store
        .get(&Path::from(manifest.key.as_str()))
        .await
        .map_err(|e| Error::Storage(e.to_string()))?;
    let mut stream = object.into_stream();
    let mut hash = Sha256::new();
    let mut size = 0u64;
    let mut fed = Ok(());
    while let Some(chunk) = stream.next().await {
        // pg_restore (killed on drop) has committed what it read so far.
        let chunk = chunk.map_err(|e| {
            Error::Storage(format!(
                "reading {}: {e}; the schema may be half restored: rerun with --force",
                manifest.key
            ))
        })?;
        hash.update(&chunk);
        size += chunk.len() as u64;
        if fed.is_ok() {
            let tx = tx.clone();
            fed = tokio::task::spawn_blocking(move || tx.send(chunk))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|_| "the decompressor stopped".to_string()));
        }
    }
    drop(tx);
    let decompressed = decompressor
        .join()
        .unwrap_or_else(|_| Err("the decompressor panicked".into()));
    let status = child.wait().await.map_err(|e| Error::Tool {
        tool: "pg_restore",
        message: e.to_string(),
    })?;
    let pg_stderr = stderr_task.await.unwrap_or_default();
    let sha256 = hex::encode(hash.finalize());
    // The checksum first: a corrupt object explains a failed decompression or restore.
    if sha256 != manifest.sha256 || size != manifest.size_bytes {
        return Err(Error::Corrupt(format!(
            "{} has sha256 {sha256} and {size} bytes, its manifest says {} and {} bytes; restore another backup (--backup), then rerun with --force",
            manifest.key, manifest.sha256, manifest.size_bytes
        )));
    }
    if let Err(e) = decompressed.and(fed) {
        return Err(Error::Corrupt(format!("zstd: {e}")));
    }
    if !status.success() {
        return Err(Error::Tool {
            tool: "pg_restore",
            message: format!(
                "{status}: {}; the schema may be half restored: rerun with --force",
                pg_stderr.trim()
            ),
        });
    }

    let mut tx = conn.begin().await?;
    let (counts, vectors) = row_counts(&mut tx, &manifest.schema).await?;
    tx.commit().await?;
    if counts != manifest.row_counts || vectors != manifest.vector_count {
        return Err(Error::Mismatch(format!(
            "restored {counts:?} ({vectors} vectors), the manifest says {:?} ({} vectors)",
            manifest.row_counts, manifest.vector_count
        )));
    }
    Ok(manifest)
}
