//! `kubectl aienv memory search STORE TEXT`: what an agent would find. The query is embedded by
//! the store's own provider (the workers' code) and searched like the memory API does (hybrid:
//! vectors and full text, rank-fused), connected as the agents' role from `<store>-app`.

use anyhow::{Context as _, Result, bail};
use k8s_openapi::api::core::v1::Secret;
use kube::{Api, Client};
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};

use super::table::{Row, render};
use crate::{
    api::MemoryStore,
    controllers::memory_store::children::app_secret_name,
    embed::{ApiKey, query},
    memory::{Filter, Hit, Memories, store_connect_options},
};

/// How to reach the store's database and provider from where the plugin runs.
#[derive(Clone, Debug, Default)]
pub struct SearchOptions {
    pub k: u32,
    pub filter: Filter,
    /// Instead of the `<store>-app` Secret's URI (e.g. through `kubectl port-forward`); the
    /// Secret's user and password are used when it has none.
    pub database_url: Option<String>,
    pub reach: query::Reach,
}

pub async fn search(
    client: &Client,
    ns: &str,
    store: &str,
    text: &str,
    opts: SearchOptions,
) -> Result<String> {
    let stores: Api<MemoryStore> = Api::namespaced(client.clone(), ns);
    let Some(s) = stores.get_opt(store).await? else {
        bail!("MemoryStore {store} not found in namespace {ns}");
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let app = app_secret_name(store);
    let secret = secrets.get_opt(&app).await?.with_context(|| {
        format!("Secret {app} not found: the store has not given its agents a login yet (kubectl get memorystore {store} says why)")
    })?;
    let schema = key_of(&secret, "schema")?;
    let options = connect_options(&key_of(&secret, "uri")?, opts.database_url.as_deref())?;
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(store_connect_options(options, &schema))
        .await
        .map_err(|e| {
            anyhow::anyhow!(
                "cannot connect to the store's database: {} (from outside the cluster, port-forward it and pass --database-url)",
                crate::memory::error::describe(&e)
            )
        })?;
    let memories = Memories::open(pool.clone()).await?;
    let hits = match &s.spec.embedding.provider {
        None => {
            let hits = memories.search_text(text, opts.k, &opts.filter).await?;
            pool.close().await;
            return Ok(format!(
                "full text only: the store names no embedding.provider, so its memories have no vectors\n{}",
                table(&hits)
            ));
        }
        Some(spec) => {
            let mut reach = opts.reach;
            if reach.api_key.is_none()
                && let Some(r) = &spec.secret_ref
            {
                let key = secrets
                    .get(&r.name)
                    .await
                    .with_context(|| format!("the provider's key Secret {}", r.name))?;
                reach.api_key = Some(ApiKey::new(key_of(&key, &r.key)?));
            }
            let provider = query::store_provider(spec, &memories.model, reach)?;
            query::search(&memories, provider.as_ref(), text, opts.k, &opts.filter).await?
        }
    };
    pool.close().await;
    Ok(table(&hits))
}

/// The text at `key` of `secret`.
fn key_of(secret: &Secret, key: &str) -> Result<String> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .with_context(|| {
            format!(
                "Secret {} has no key {key}",
                secret.metadata.name.as_deref().unwrap_or("?")
            )
        })?;
    Ok(String::from_utf8(bytes.0.clone())?)
}

/// The Secret's URI, or `--database-url` with the Secret's login and database where it names
/// none (its host and port replace the Secret's).
fn connect_options(secret_uri: &str, given: Option<&str>) -> Result<PgConnectOptions> {
    let Some(given) = given else {
        return secret_uri
            .parse()
            .context("the store's Secret holds no valid URI");
    };
    let given = url::Url::parse(given).context("--database-url is not a URI")?;
    let mut merged =
        url::Url::parse(secret_uri).context("the store's Secret holds no valid URI")?;
    let bad = |_| anyhow::anyhow!("--database-url cannot be combined with the Secret's URI");
    merged.set_host(given.host_str()).map_err(bad)?;
    merged
        .set_port(given.port())
        .map_err(|()| anyhow::anyhow!("--database-url has no usable port"))?;
    if !given.username().is_empty() {
        merged
            .set_username(given.username())
            .map_err(|()| anyhow::anyhow!("--database-url: bad user"))?;
        merged
            .set_password(given.password())
            .map_err(|()| anyhow::anyhow!("--database-url: bad password"))?;
    }
    if !given.path().trim_matches('/').is_empty() {
        merged.set_path(given.path());
    }
    merged.as_str().parse().context("--database-url")
}

fn table(hits: &[Hit]) -> String {
    if hits.is_empty() {
        return "No memories found.\n".into();
    }
    let rows: Vec<Row> = hits
        .iter()
        .enumerate()
        .map(|(i, h)| {
            vec![
                (i + 1).to_string(),
                format!("{:.4}", h.score),
                h.id.to_string(),
                h.memory_type.clone(),
                h.agent_id.clone().unwrap_or_else(|| "-".into()),
                one_line(&h.content, 100),
            ]
        })
        .collect();
    render(&["RANK", "SCORE", "ID", "TYPE", "AGENT", "CONTENT"], &rows)
}

fn one_line(text: &str, max: usize) -> String {
    let flat: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > max {
        flat.chars().take(max - 1).collect::<String>() + "…"
    } else {
        flat
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_url_keeps_the_secrets_login_and_database() {
        let o = connect_options(
            "postgres://agent:s%40cret@mem-rw.team.svc:5432/memory",
            Some("postgres://127.0.0.1:15432"),
        )
        .unwrap();
        assert_eq!(o.get_host(), "127.0.0.1");
        assert_eq!(o.get_port(), 15432);
        assert_eq!(o.get_username(), "agent");
        assert_eq!(o.get_database(), Some("memory"));
    }

    #[test]
    fn content_is_one_short_line() {
        assert_eq!(one_line("a\n  b\tc", 10), "a b c");
        assert_eq!(one_line(&"x".repeat(20), 5).chars().count(), 5);
    }
}
