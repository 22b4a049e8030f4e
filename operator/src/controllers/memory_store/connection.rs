//! Connection details of a store's database: parsed from a URI (external mode), from the generated
//! credentials (managed) or from CloudNativePG's app Secret. Pure. `Debug` never prints the
//! password.

use std::{collections::BTreeMap, fmt};

use k8s_openapi::{ByteString, api::core::v1::Secret};

use crate::{
    api::common::SecretKeyRef,
    controller::{Problem, labels::POSTGRES_PORT},
};

/// Where and as whom to connect.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnInfo {
    pub host: String,
    pub port: u16,
    pub database: String,
    pub user: String,
    pub password: String,
    /// Query string of the original URI (sslmode and friends), without the leading '?'.
    pub params: Option<String>,
    /// Where the operator itself connects when that differs from `host`: a managed store's
    /// ClusterIP, which routes without cluster DNS (also for an operator run outside the cluster
    /// on a node, as in the tests). Agents get `host`.
    pub dial_host: Option<String>,
    /// The store's schema: URIs search it first (`options=-c search_path=…`), for clients that
    /// log in as a role without a `search_path` of its own.
    pub schema: Option<String>,
}

impl fmt::Debug for ConnInfo {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnInfo")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("database", &self.database)
            .field("user", &self.user)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl ConnInfo {
    /// A host as it goes into a URI: IPv6 literals in brackets (`[::1]`), names as they are.
    fn uri_host(host: &str) -> String {
        match host.parse::<std::net::Ipv6Addr>() {
            Ok(_) => format!("[{host}]"),
            Err(_) => host.to_string(),
        }
    }

    /// `postgres://user:password@host:port/database?params`, percent-encoded.
    pub fn uri(&self) -> String {
        self.uri_for(&self.host)
    }

    /// The URI the operator connects with (see `dial_host`).
    pub fn dial_uri(&self) -> String {
        self.uri_for(self.dial_host.as_deref().unwrap_or(&self.host))
    }

    /// The same database, as the agents' role of the store's schema.
    pub fn as_agent(&self, role: &str, password: &str, schema: &str) -> Self {
        ConnInfo {
            user: role.to_string(),
            password: password.to_string(),
            schema: Some(schema.to_string()),
            ..self.clone()
        }
    }

    /// Connect to `host` instead of the published host (`None` keeps the published one).
    pub fn dialing(self, host: Option<String>) -> Self {
        ConnInfo {
            dial_host: host,
            ..self
        }
    }

    fn uri_for(&self, host: &str) -> String {
        let mut u = url::Url::parse("postgres://placeholder").expect("static URL");
        // Without brackets an IPv6 literal is refused and the placeholder host would stay.
        let _ = u.set_host(Some(&Self::uri_host(host)));
        let _ = u.set_port(Some(self.port));
        let _ = u.set_username(&self.user);
        let _ = u.set_password(Some(&self.password));
        u.set_path(&format!("/{}", self.database));
        u.set_query(self.params.as_deref());
        if let Some(schema) = &self.schema {
            u.query_pairs_mut().append_pair(
                "options",
                &format!(
                    "-c search_path={}",
                    crate::memory::tenancy::search_path(schema)
                ),
            );
        }
        u.to_string()
    }

    /// `host:port/database`, safe to show anywhere.
    pub fn display(&self) -> String {
        format!(
            "{}:{}/{}",
            Self::uri_host(&self.host),
            self.port,
            self.database
        )
    }

    /// The keys of the `<store>-app` connection Secret.
    pub fn secret_data(&self) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("host".into(), self.host.clone()),
            ("port".into(), self.port.to_string()),
            ("database".into(), self.database.clone()),
            ("user".into(), self.user.clone()),
            ("password".into(), self.password.clone()),
            ("uri".into(), self.uri()),
        ])
        .into_iter()
        .chain(self.schema.clone().map(|s| ("schema".to_string(), s)))
        .collect()
    }
}

/// Parse a postgres:// URI. Errors describe the shape, never the value.
pub fn parse_uri(uri: &str, origin: &str) -> Result<ConnInfo, Problem> {
    let bad = |what: &str| Problem {
        reason: "InvalidConnectionSecret",
        message: format!("{origin}: {what}; expected postgres://user:password@host:5432/database"),
    };
    let u = url::Url::parse(uri.trim()).map_err(|_| bad("not a URI"))?;
    if u.scheme() != "postgres" && u.scheme() != "postgresql" {
        return Err(bad("the scheme is not postgres:// or postgresql://"));
    }
    let host = u
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad("no host"))?;
    let decode = |s: &str| {
        url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default()
    };
    let database = decode(u.path().trim_start_matches('/'));
    if database.is_empty() {
        return Err(bad("no database name in the path"));
    }
    if u.username().is_empty() {
        return Err(bad("no user name"));
    }
    Ok(ConnInfo {
        host: host
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string(),
        port: u.port().unwrap_or(POSTGRES_PORT),
        database,
        user: decode(u.username()),
        password: u.password().map(decode).unwrap_or_default(),
        params: u.query().filter(|q| !q.is_empty()).map(str::to_string),
        dial_host: None,
        schema: None,
    })
}

/// A key of a Secret as trimmed, non-empty UTF-8 text.
pub fn secret_text(secret: &Secret, key: &str) -> Option<String> {
    text(secret.data.as_ref()?, key)
}

fn text(data: &BTreeMap<String, ByteString>, key: &str) -> Option<String> {
    data.get(key)
        .and_then(|b| String::from_utf8(b.0.clone()).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
}

/// External mode: the URI in the referenced Secret key.
pub fn from_external_secret(
    r: &SecretKeyRef,
    secret: Option<&Secret>,
    ns: &str,
) -> Result<ConnInfo, Problem> {
    let Some(secret) = secret else {
        return Err(Problem {
            reason: "ConnectionSecretMissing",
            message: format!(
                "Secret {ns}/{} (external.connectionSecretRef) does not exist: create it with key {:?} holding a postgres:// URI",
                r.name, r.key
            ),
        });
    };
    let data = secret.data.clone().unwrap_or_default();
    let Some(uri) = text(&data, &r.key) else {
        return Err(Problem {
            reason: "ConnectionSecretMissing",
            message: format!(
                "Secret {ns}/{} has no non-empty key {:?} (external.connectionSecretRef.key)",
                r.name, r.key
            ),
        });
    };
    parse_uri(
        &uri,
        &format!("the URI in Secret {ns}/{} key {:?}", r.name, r.key),
    )
}

/// Managed mode: the generated credentials, reached through the client Service.
pub fn from_credentials(secret: &Secret, host: String, port: u16) -> Result<ConnInfo, Problem> {
    let data = secret.data.clone().unwrap_or_default();
    let get = |k: &str| {
        text(&data, k).ok_or_else(|| Problem {
            reason: "CredentialsInvalid",
            message: format!(
                "the generated credentials Secret {} lacks key {k:?}: delete it to have a new one generated (the database must be re-initialised to use it)",
                secret.metadata.name.as_deref().unwrap_or_default()
            ),
        })
    };
    Ok(ConnInfo {
        host,
        port,
        database: get("database")?,
        user: get("username")?,
        password: get("password")?,
        params: None,
        dial_host: None,
        schema: None,
    })
}

/// CloudNativePG mode: its app Secret (keys uri, host, port, dbname, user, password).
pub fn from_cnpg_secret(secret: &Secret) -> Result<ConnInfo, Problem> {
    let data = secret.data.clone().unwrap_or_default();
    let name = secret.metadata.name.as_deref().unwrap_or_default();
    if let Some(uri) = text(&data, "uri") {
        return parse_uri(&uri, &format!("key \"uri\" of CloudNativePG Secret {name}"));
    }
    let missing = |k: &str| Problem {
        reason: "WaitingForDatabase",
        message: format!("CloudNativePG Secret {name} lacks key {k:?} (yet)"),
    };
    Ok(ConnInfo {
        host: text(&data, "host").ok_or_else(|| missing("host"))?,
        port: text(&data, "port")
            .and_then(|p| p.parse().ok())
            .unwrap_or(POSTGRES_PORT),
        database: text(&data, "dbname").ok_or_else(|| missing("dbname"))?,
        user: text(&data, "user").ok_or_else(|| missing("user"))?,
        password: text(&data, "password").ok_or_else(|| missing("password"))?,
        params: None,
        dial_host: None,
        schema: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(pairs: &[(&str, &str)]) -> Secret {
        let mut s = crate::controller::digest::test_secret(pairs);
        s.metadata.name = Some("s".into());
        s
    }

    #[test]
    fn parses_and_rebuilds_a_uri_with_special_characters() {
        let c = parse_uri(
            "postgres://app:p%40ss%2Fw0rd@db.example:6432/mem?sslmode=require",
            "x",
        )
        .unwrap();
        assert_eq!(c.host, "db.example");
        assert_eq!(c.port, 6432);
        assert_eq!(c.database, "mem");
        assert_eq!(c.user, "app");
        assert_eq!(c.password, "p@ss/w0rd");
        assert_eq!(c.params.as_deref(), Some("sslmode=require"));
        let again = parse_uri(&c.uri(), "x").unwrap();
        assert_eq!(again, c);
        assert_eq!(c.display(), "db.example:6432/mem");
    }

    #[test]
    fn ipv6_literal_hosts_keep_their_brackets() {
        let c = parse_uri("postgres://app:pw@[fd00::5]:6432/mem?sslmode=require", "x").unwrap();
        assert_eq!(c.host, "fd00::5");
        assert_eq!(
            c.uri(),
            "postgres://app:pw@[fd00::5]:6432/mem?sslmode=require"
        );
        assert_eq!(c.display(), "[fd00::5]:6432/mem");
        assert_eq!(parse_uri(&c.uri(), "x").unwrap(), c);
        // What the operator's pool connects to (sqlx strips the brackets when it connects).
        let opts: sqlx::postgres::PgConnectOptions = c.uri().parse().unwrap();
        assert_eq!(opts.get_host(), "[fd00::5]");
        let cnpg = from_cnpg_secret(&secret(&[
            ("host", "::1"),
            ("dbname", "memory"),
            ("user", "aienv"),
            ("password", "pw"),
        ]))
        .unwrap();
        assert_eq!(cnpg.uri(), "postgres://aienv:pw@[::1]:5432/memory");
    }

    #[test]
    fn errors_and_debug_never_show_the_password() {
        for uri in [
            "mysql://u:hunter2@h/db",
            "postgres://u:hunter2@h",
            "hunter2",
            "postgres://:hunter2@h/db",
        ] {
            let e = parse_uri(uri, "the URI in Secret ns/s key \"uri\"").unwrap_err();
            assert!(!e.message.contains("hunter2"), "{}", e.message);
            assert_eq!(e.reason, "InvalidConnectionSecret");
        }
        let c = parse_uri("postgres://u:hunter2@h/db", "x").unwrap();
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn external_secret_missing_or_without_key() {
        let r = SecretKeyRef {
            name: "pg".into(),
            key: "uri".into(),
        };
        assert_eq!(
            from_external_secret(&r, None, "ns").unwrap_err().reason,
            "ConnectionSecretMissing"
        );
        let s = secret(&[("other", "x")]);
        assert_eq!(
            from_external_secret(&r, Some(&s), "ns").unwrap_err().reason,
            "ConnectionSecretMissing"
        );
        let s = secret(&[("uri", "postgres://u:p@h:5432/d")]);
        assert_eq!(
            from_external_secret(&r, Some(&s), "ns").unwrap().database,
            "d"
        );
    }

    #[test]
    fn connection_secret_has_the_six_keys() {
        let c = from_credentials(
            &secret(&[
                ("username", "aienv"),
                ("password", "pw"),
                ("database", "memory"),
            ]),
            "m.ns.svc".into(),
            5432,
        )
        .unwrap();
        let d = c.secret_data();
        assert_eq!(
            d.keys().map(String::as_str).collect::<Vec<_>>(),
            ["database", "host", "password", "port", "uri", "user"]
        );
        assert_eq!(d["uri"], "postgres://aienv:pw@m.ns.svc:5432/memory");
    }

    #[test]
    fn cnpg_secret_fields() {
        let c = from_cnpg_secret(&secret(&[
            ("host", "m-pg-rw"),
            ("port", "5432"),
            ("dbname", "memory"),
            ("user", "aienv"),
            ("password", "pw"),
        ]))
        .unwrap();
        assert_eq!(c.host, "m-pg-rw");
        assert_eq!(c.database, "memory");
    }
}
