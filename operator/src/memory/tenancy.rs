//! Where one store's tables live and who may use them: a schema of its own (so two stores on one
//! database never share or adopt each other's tables) recorded with the owning MemoryStore, and a
//! login role for its agents with DML rights only. Pure: names and SQL text from validated
//! identifiers.

use sha2::{Digest, Sha256};

/// Table in the store's schema naming the MemoryStore that owns it.
pub const OWNER_TABLE: &str = "aienv_store_owner";

/// Longest identifier PostgreSQL keeps (NAMEDATALEN - 1).
const MAX_IDENTIFIER: usize = 63;

/// The MemoryStore a schema belongs to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreIdentity {
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

impl StoreIdentity {
    pub fn display(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
}

/// How the agents' role gets its password.
#[derive(Clone, PartialEq, Eq)]
pub enum AgentLogin {
    /// The operator creates the role and keeps its password equal to this one.
    Password(String),
    /// Someone else (CloudNativePG's managed roles) creates the role and sets its password; the
    /// operator only grants.
    ProvidedRole,
}

impl std::fmt::Debug for AgentLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AgentLogin::Password(_) => f.write_str("Password(<redacted>)"),
            AgentLogin::ProvidedRole => f.write_str("ProvidedRole"),
        }
    }
}

/// One store's place in its database.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoreTarget {
    pub owner: StoreIdentity,
    /// Schema holding the store's tables (a validated identifier).
    pub schema: String,
    /// Login role of the agents (a validated identifier).
    pub agent_role: String,
    /// None: no agent role (the memory API used directly, as in benchmarks).
    pub agent: Option<AgentLogin>,
}

impl StoreTarget {
    /// The target for a store on `database`, schema `schema` (None: [`default_schema`]).
    pub fn new(
        owner: StoreIdentity,
        database: &str,
        schema: Option<&str>,
        agent: Option<AgentLogin>,
    ) -> Result<Self, String> {
        let schema = match schema {
            Some(s) => check_schema_name(s)?.to_string(),
            None => default_schema(&owner.name),
        };
        Ok(Self {
            agent_role: agent_role_name(database, &schema),
            owner,
            schema,
            agent,
        })
    }

    /// `search_path` of every connection to this store: its schema, then `public` for pgvector's
    /// type and operators.
    pub fn search_path(&self) -> String {
        search_path(&self.schema)
    }
}

pub fn search_path(schema: &str) -> String {
    format!("{schema},public")
}

/// `aienv_<store>` with `-` and `.` as `_`; names too long for an identifier keep a hash suffix.
pub fn default_schema(store: &str) -> String {
    let base = format!("aienv_{}", store.replace(['-', '.'], "_"));
    fit(&base, store)
}

/// `<schema>_agent_<hash of database and schema>`: roles are global to a PostgreSQL server, so
/// two stores of one name in different databases must not share (and reset) one role.
pub fn agent_role_name(database: &str, schema: &str) -> String {
    let h = short_hash(&format!("{database}/{schema}"));
    let keep = MAX_IDENTIFIER - "_agent_".len() - h.len();
    let head: String = schema.chars().take(keep).collect();
    format!("{head}_agent_{h}")
}

fn short_hash(s: &str) -> String {
    hex::encode(&Sha256::digest(s.as_bytes())[..4])
}

fn fit(base: &str, seed: &str) -> String {
    if base.len() <= MAX_IDENTIFIER {
        return base.to_string();
    }
    let h = short_hash(seed);
    format!("{}_{h}", &base[..MAX_IDENTIFIER - 1 - h.len()])
}

/// A schema name a user may choose: a plain lower-case identifier, not a system schema and not
/// `public` (which `deletionPolicy: Delete` must never empty).
pub fn check_schema_name(s: &str) -> Result<&str, String> {
    let plain = !s.is_empty()
        && s.len() <= MAX_IDENTIFIER
        && s.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_');
    if !plain {
        return Err(format!(
            "schema {s:?} is not a plain identifier: use 1-63 of a-z, 0-9 and _, starting with a letter or _"
        ));
    }
    if s == "public" || s == "information_schema" || s.starts_with("pg_") {
        return Err(format!(
            "schema {s:?} is reserved: choose a schema of the store's own"
        ));
    }
    Ok(s)
}

/// Statements granting the agent role what the memory API needs and nothing else: no DDL (it
/// owns nothing and may not create in the schema), no superuser, no `COPY … PROGRAM`.
pub fn agent_grants(schema: &str, role: &str) -> Vec<String> {
    vec![
        format!("GRANT USAGE ON SCHEMA {schema} TO {role}"),
        format!(
            "GRANT SELECT, INSERT, UPDATE, DELETE ON {schema}.memories, {schema}.agent_conversations TO {role}"
        ),
        format!("GRANT SELECT ON {schema}.aienv_store_config TO {role}"),
        // The embedding workers connect as the agents' role and report here.
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON {schema}.aienv_embed_workers TO {role}"),
        format!(
            "GRANT USAGE, SELECT ON SEQUENCE {schema}.memories_id_seq, {schema}.agent_conversations_id_seq TO {role}"
        ),
    ]
}

/// `CREATE ROLE` of the agents' role, with a SCRAM verifier instead of the password.
pub fn create_agent_role(role: &str, verifier: &str) -> String {
    format!(
        "CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION NOBYPASSRLS NOINHERIT PASSWORD {}",
        literal(verifier)
    )
}

pub fn set_agent_password(role: &str, verifier: &str) -> String {
    format!("ALTER ROLE {role} PASSWORD {}", literal(verifier))
}

pub fn set_agent_search_path(role: &str, schema: &str) -> String {
    format!("ALTER ROLE {role} SET search_path = {schema}, public")
}

/// A SQL string literal. Only for text the operator made (verifiers: base64 and `$:-`).
fn literal(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(name: &str) -> StoreIdentity {
        StoreIdentity {
            namespace: "team".into(),
            name: name.into(),
            uid: "u1".into(),
        }
    }

    #[test]
    fn default_names_are_readable_identifiers() {
        let t = StoreTarget::new(id("team-memory"), "memory", None, None).unwrap();
        assert_eq!(t.schema, "aienv_team_memory");
        assert!(
            t.agent_role.starts_with("aienv_team_memory_agent_"),
            "{}",
            t.agent_role
        );
        assert_eq!(t.search_path(), "aienv_team_memory,public");
        assert!(check_schema_name(&t.agent_role).is_ok());
    }

    #[test]
    fn long_store_names_fit_an_identifier_and_stay_distinct() {
        let a = default_schema(&"a".repeat(100));
        let b = default_schema(&format!("{}b", "a".repeat(99)));
        assert!(a.len() <= 63 && b.len() <= 63);
        assert_ne!(a, b);
        assert!(check_schema_name(&a).is_ok());
        let role = agent_role_name("db", &a);
        assert!(role.len() <= 63, "{role}");
    }

    #[test]
    fn one_store_name_in_two_databases_gets_two_roles() {
        assert_ne!(
            agent_role_name("db1", "aienv_mem"),
            agent_role_name("db2", "aienv_mem")
        );
    }

    #[test]
    fn reserved_and_unquoted_schema_names_are_refused() {
        for bad in [
            "public",
            "pg_catalog",
            "information_schema",
            "Mixed",
            "a-b",
            "x; drop",
            "",
        ] {
            assert!(check_schema_name(bad).is_err(), "{bad}");
        }
        assert!(check_schema_name("agents_v2").is_ok());
    }

    #[test]
    fn role_statements_carry_a_verifier_and_no_ddl_rights() {
        let sql = create_agent_role("r", "SCRAM-SHA-256$4096:c2FsdA==$a:b");
        assert!(sql.contains("NOSUPERUSER") && sql.contains("PASSWORD 'SCRAM-SHA-256$4096"));
        let grants = agent_grants("s", "r").join(";");
        assert!(
            !grants.contains("CREATE") && !grants.contains("ALL"),
            "{grants}"
        );
        assert!(format!("{:?}", AgentLogin::Password("hunter2".into())).contains("redacted"));
    }
}
