//! One PgPool per MemoryStore, kept between reconciles and replaced only when the connection
//! details change.

use std::{collections::HashMap, sync::Mutex, time::Duration};

use sha2::{Digest, Sha256};
use sqlx::{
    PgPool,
    postgres::{PgConnectOptions, PgPoolOptions},
};

use super::connection::ConnInfo;
use crate::memory::error::describe;

/// Short: an unreachable database must not hold a reconcile for long.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// (namespace, name) of a store.
type Key = (String, String);
/// sha256 of the connection URI the pool was built from.
type Fingerprint = [u8; 32];

#[derive(Default)]
pub struct Pools {
    pools: Mutex<HashMap<Key, (Fingerprint, PgPool)>>,
}

impl Pools {
    /// The pool for `ns/name`, its connections searching `schema` first, created lazily (no
    /// connection is opened here).
    pub fn get(
        &self,
        ns: &str,
        name: &str,
        conn: &ConnInfo,
        schema: &str,
    ) -> Result<PgPool, String> {
        let uri = conn.dial_uri();
        let fp: [u8; 32] = Sha256::new()
            .chain_update(uri.as_bytes())
            .chain_update([0])
            .chain_update(schema.as_bytes())
            .finalize()
            .into();
        let key = (ns.to_string(), name.to_string());
        let mut pools = self.pools.lock().expect("pools lock");
        if let Some((old, pool)) = pools.get(&key)
            && *old == fp
        {
            return Ok(pool.clone());
        }
        let opts: PgConnectOptions = uri.parse().map_err(|e: sqlx::Error| describe(&e))?;
        let opts =
            crate::memory::store_connect_options(opts, schema).application_name("aienv-operator");
        let pool = PgPoolOptions::new()
            .max_connections(3)
            .min_connections(0)
            .acquire_timeout(CONNECT_TIMEOUT)
            .idle_timeout(Duration::from_secs(300))
            .connect_lazy_with(opts);
        if let Some((_, old)) = pools.insert(key, (fp, pool.clone())) {
            tokio::spawn(async move { old.close().await });
        }
        Ok(pool)
    }

    /// Forget (and close) the pools of stores `keep` does not name: a store deleted under Retain
    /// has no finalizer, so its deletion is never reconciled.
    pub fn retain(&self, keep: impl Fn(&str, &str) -> bool) {
        let mut pools = self.pools.lock().expect("pools lock");
        let gone: Vec<Key> = pools
            .keys()
            .filter(|(ns, name)| !keep(ns, name))
            .cloned()
            .collect();
        for key in gone {
            if let Some((_, pool)) = pools.remove(&key) {
                tokio::spawn(async move { pool.close().await });
            }
        }
    }

    /// Forget (and close) the pool of a deleted store.
    pub fn forget(&self, ns: &str, name: &str) {
        let removed = self
            .pools
            .lock()
            .expect("pools lock")
            .remove(&(ns.to_string(), name.to_string()));
        if let Some((_, pool)) = removed {
            tokio::spawn(async move { pool.close().await });
        }
    }
}
