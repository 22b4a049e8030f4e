//! The Events a store's preparation publishes: each schema change the operator made, once.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::EventType;
use tracing::info;

use crate::{
    controller::Context,
    memory::{claim::Claim, schema::Prepared, tenancy::StoreTarget},
};

pub async fn prepared(
    ctx: &Context,
    oref: &ObjectReference,
    prepared: &Prepared,
    target: &StoreTarget,
    shown: &str,
) {
    let schema = &target.schema;
    match &prepared.claim {
        Claim::Owned => {}
        Claim::Created => {
            ctx.event(
                oref,
                EventType::Normal,
                "SchemaCreated",
                "Migrate",
                format!("created schema {schema} on {shown} for this store"),
            )
            .await;
        }
        Claim::Readopted { previous_uid } => {
            ctx.event(
                oref,
                EventType::Normal,
                "SchemaReadopted",
                "Migrate",
                format!("took back schema {schema} on {shown} with its data: it was this store's name's under uid {previous_uid} (deleted with deletionPolicy Retain)"),
            )
            .await;
        }
        Claim::MovedFromPublic(tables) => {
            ctx.event(
                oref,
                EventType::Normal,
                "SchemaMoved",
                "Migrate",
                format!(
                    "moved tables {} from schema public into {schema} (stores now have schemas of their own)",
                    tables.join(", ")
                ),
            )
            .await;
        }
    }
    for (version, description) in &prepared.applied {
        info!(version, %description, "applied schema migration");
        // One action per version: the event recorder folds Events with equal (reason, action)
        // into one series, and each migration deserves its own Event.
        ctx.event(
            oref,
            EventType::Normal,
            "MigrationApplied",
            &format!("MigrateToVersion{version}"),
            format!("applied schema migration {version} ({description}) on {shown}"),
        )
        .await;
    }
    if prepared.agent.created {
        ctx.event(
            oref,
            EventType::Normal,
            "AgentRoleCreated",
            "Migrate",
            format!(
                "created role {} for the agents (DML on {schema} only)",
                target.agent_role
            ),
        )
        .await;
    } else if prepared.agent.password_set {
        ctx.event(
            oref,
            EventType::Normal,
            "AgentPasswordSet",
            "Migrate",
            format!(
                "set the password of role {} to the one in its Secret",
                target.agent_role
            ),
        )
        .await;
    }
    for dropped in &prepared.dropped_indexes {
        ctx.event(
            oref,
            EventType::Normal,
            "IndexReplaced",
            "Migrate",
            format!("dropped index {dropped} of an earlier index layout"),
        )
        .await;
    }
    if let Some(invalid) = &prepared.dropped_invalid {
        ctx.event(
            oref,
            EventType::Warning,
            "IndexRebuilding",
            "BuildIndex",
            format!(
                "dropped INVALID index {invalid} left by an interrupted build; building it again"
            ),
        )
        .await;
    }
}

/// A change of `WorkersReady` (status or reason) is an Event: a worker reporting a failure (wrong
/// dimensions, provider unreachable) or a name conflict is a Warning; pods on their way and a
/// scale to zero are Normal, like workers back at work.
pub async fn workers_changed(
    ctx: &Context,
    oref: &ObjectReference,
    old: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
    new: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition],
) {
    let get = |c| crate::conditions::get(c, super::status::WORKERS_READY);
    let Some(now) = get(new) else { return };
    if get(old).map(|c| (&c.status, &c.reason)) == Some((&now.status, &now.reason)) {
        return;
    }
    let type_ = if now.status == "True"
        || ["WorkersUnavailable", "ScaledToZero"].contains(&now.reason.as_str())
    {
        EventType::Normal
    } else {
        EventType::Warning
    };
    ctx.event(oref, type_, &now.reason, "Embed", now.message.clone())
        .await;
}
