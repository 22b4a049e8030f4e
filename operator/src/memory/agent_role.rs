//! The agents' login role of a store: created by the operator (or by CloudNativePG), its password
//! kept equal to the one in the agents' Secret, and granted DML on the memory tables only. Runs
//! under the schema advisory lock, after the migrations.

use sha2::{Digest, Sha256};
use sqlx::{AssertSqlSafe, PgConnection};

use super::{
    error::MemoryError,
    scram,
    tenancy::{self, AgentLogin, OWNER_TABLE, StoreTarget},
};

/// What [`ensure`] changed.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AgentRoleChanges {
    pub created: bool,
    pub password_set: bool,
    pub granted: bool,
}

/// Privileges the memory API needs, as `has_*_privilege` checks: (function, object, privilege).
fn wanted_privileges(schema: &str) -> Vec<(&'static str, String, &'static str)> {
    let mut v = vec![("has_schema_privilege", schema.to_string(), "USAGE")];
    for t in ["memories", "agent_conversations"] {
        for p in ["SELECT", "INSERT", "UPDATE", "DELETE"] {
            v.push(("has_table_privilege", format!("{schema}.{t}"), p));
        }
    }
    v.push((
        "has_table_privilege",
        format!("{schema}.aienv_store_config"),
        "SELECT",
    ));
    for p in ["SELECT", "INSERT", "UPDATE", "DELETE"] {
        v.push((
            "has_table_privilege",
            format!("{schema}.aienv_embed_workers"),
            p,
        ));
    }
    for seq in ["memories_id_seq", "agent_conversations_id_seq"] {
        v.push(("has_sequence_privilege", format!("{schema}.{seq}"), "USAGE"));
    }
    v
}

pub async fn ensure(
    conn: &mut PgConnection,
    target: &StoreTarget,
) -> Result<AgentRoleChanges, MemoryError> {
    let Some(login) = &target.agent else {
        return Ok(AgentRoleChanges::default());
    };
    let role = &target.agent_role;
    let s = &target.schema;
    let mut changes = AgentRoleChanges::default();
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(role)
            .fetch_one(&mut *conn)
            .await?;
    match login {
        AgentLogin::ProvidedRole if !exists => {
            return Err(MemoryError::AgentRole(format!(
                "waiting for CloudNativePG to create the agents' role {role} (Cluster spec.managed.roles)"
            )));
        }
        AgentLogin::ProvidedRole => {}
        AgentLogin::Password(password) => {
            let digest = hex::encode(Sha256::digest(password.as_bytes()));
            let recorded: Option<String> = sqlx::query_scalar(AssertSqlSafe(format!(
                "SELECT agent_password_sha256 FROM {s}.{OWNER_TABLE}"
            )))
            .fetch_one(&mut *conn)
            .await?;
            let verifier = scram::new_verifier(password);
            if !exists {
                run(conn, &tenancy::create_agent_role(role, &verifier), role).await?;
                changes.created = true;
            } else if recorded.as_deref() != Some(digest.as_str()) {
                run(conn, &tenancy::set_agent_password(role, &verifier), role).await?;
                changes.password_set = true;
            }
            if changes.created || changes.password_set {
                run(conn, &tenancy::set_agent_search_path(role, s), role).await?;
                sqlx::query(AssertSqlSafe(format!(
                    "UPDATE {s}.{OWNER_TABLE} SET agent_password_sha256 = $1"
                )))
                .bind(&digest)
                .execute(&mut *conn)
                .await?;
            }
        }
    }
    if !has_all_privileges(conn, role, s).await? {
        for sql in tenancy::agent_grants(s, role) {
            run(conn, &sql, role).await?;
        }
        changes.granted = true;
    }
    Ok(changes)
}

/// A GRANT rewrites the catalog row even when nothing changes; check first so a steady store
/// writes nothing.
async fn has_all_privileges(
    conn: &mut PgConnection,
    role: &str,
    schema: &str,
) -> Result<bool, MemoryError> {
    for (function, object, privilege) in wanted_privileges(schema) {
        let held: bool = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT {function}($1::name, $2, $3)"
        )))
        .bind(role)
        .bind(&object)
        .bind(privilege)
        .fetch_one(&mut *conn)
        .await?;
        if !held {
            return Ok(false);
        }
    }
    Ok(true)
}

async fn run(conn: &mut PgConnection, sql: &str, role: &str) -> Result<(), MemoryError> {
    match sqlx::query(AssertSqlSafe(sql.to_string()))
        .execute(&mut *conn)
        .await
    {
        Ok(_) => Ok(()),
        Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42501") => {
            Err(MemoryError::AgentRole(format!(
                "the operator's database user may not manage the agents' role {role}: {} (SQLSTATE 42501). Grant it CREATEROLE (ALTER ROLE <user> CREATEROLE), or connect the store as a user that has it",
                db.message()
            )))
        }
        Err(e) => Err(e.into()),
    }
}

/// Drop the agents' role (deletionPolicy: Delete; only a role the operator created).
pub async fn drop(conn: &mut PgConnection, target: &StoreTarget) -> Result<(), MemoryError> {
    if !matches!(target.agent, Some(AgentLogin::Password(_))) {
        return Ok(());
    }
    let role = &target.agent_role;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = $1)")
            .bind(role)
            .fetch_one(&mut *conn)
            .await?;
    if exists {
        // Revokes its grants in this database (it owns nothing), so DROP ROLE can go through.
        run(conn, &format!("DROP OWNED BY {role}"), role).await?;
        run(conn, &format!("DROP ROLE IF EXISTS {role}"), role).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checked_privileges_match_the_grants() {
        let grants = tenancy::agent_grants("s", "r").join("\n");
        for (_, object, privilege) in wanted_privileges("s") {
            let short = object.trim_start_matches("s.");
            assert!(
                grants.contains(short) && grants.contains(privilege),
                "{object} {privilege} is checked but not granted:\n{grants}"
            );
        }
    }
}
