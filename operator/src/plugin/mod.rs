//! `kubectl aienv`: what a platform engineer reaches for. Table formatting is pure (unit-tested);
//! the commands are thin reads and one patch.

pub mod backup;
pub mod memory;
pub mod table;

use anyhow::{Context as _, Result, bail};
use k8s_openapi::{
    api::{core::v1::Secret, networking::v1::NetworkPolicy},
    apimachinery::pkg::apis::meta::v1::Condition,
};
use kube::{
    Api, Client, ResourceExt,
    api::{ListParams, Patch, PatchParams},
};

use crate::api::{AiEnvironment, BackupSchedule, LlmProfile, MemoryStore, common::HasConditions};
use table::{Row, render};

/// One row per aienv object in the namespace: kind, name, Ready, reason, message.
pub async fn status_all(client: &Client, ns: &str) -> Result<String> {
    let mut rows = Vec::new();
    rows.extend(rows_of::<LlmProfile>(client, ns).await?);
    rows.extend(rows_of::<AiEnvironment>(client, ns).await?);
    rows.extend(rows_of::<MemoryStore>(client, ns).await?);
    rows.extend(rows_of::<BackupSchedule>(client, ns).await?);
    if rows.is_empty() {
        return Ok(format!("No aienv objects in namespace {ns}.\n"));
    }
    Ok(render(
        &["KIND", "NAME", "READY", "REASON", "MESSAGE"],
        &rows,
    ))
}

async fn rows_of<K>(client: &Client, ns: &str) -> Result<Vec<Row>>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + HasConditions
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    let list = Api::<K>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?;
    let kind = K::kind(&()).to_string();
    Ok(list
        .iter()
        .map(|o| object_row(&kind, &o.name_any(), o.conditions()))
        .collect())
}

fn object_row(kind: &str, name: &str, conditions: &[Condition]) -> Row {
    let ready = crate::conditions::get(conditions, "Ready");
    vec![
        kind.to_string(),
        name.to_string(),
        ready
            .map(|c| c.status.clone())
            .unwrap_or_else(|| "-".into()),
        ready
            .map(|c| c.reason.clone())
            .unwrap_or_else(|| "-".into()),
        ready
            .map(|c| c.message.clone())
            .unwrap_or_else(|| "not reconciled yet".into()),
    ]
}

/// One environment: its binding, conditions, targets and children.
pub async fn status_environment(client: &Client, ns: &str, name: &str) -> Result<String> {
    let env = Api::<AiEnvironment>::namespaced(client.clone(), ns)
        .get_opt(name)
        .await?
        .with_context(|| format!("AiEnvironment {name:?} not found in namespace {ns:?}"))?;
    let status = env.status.clone().unwrap_or_default();
    let mut out = String::new();
    out.push_str(&format!("AiEnvironment {ns}/{name}\n"));
    out.push_str(&format!(
        "  profile:   {} (active: {})\n",
        env.spec.llm.profile_ref,
        status.active_profile.as_deref().unwrap_or("-")
    ));
    if !env.spec.llm.fallbacks.is_empty() {
        out.push_str(&format!(
            "  fallbacks: {}\n",
            env.spec.llm.fallbacks.join(", ")
        ));
    }
    out.push_str(&format!(
        "  hash:      {}\n",
        status.rendered_hash.as_deref().unwrap_or("-")
    ));
    out.push_str("\nConditions:\n");
    let rows: Vec<Row> = status
        .conditions
        .iter()
        .map(|c| {
            vec![
                c.type_.clone(),
                c.status.clone(),
                c.reason.clone(),
                c.message.clone(),
            ]
        })
        .collect();
    out.push_str(&indent(&render(
        &["TYPE", "STATUS", "REASON", "MESSAGE"],
        &rows,
    )));
    out.push_str("\nTargets:\n");
    let rows: Vec<Row> = status
        .targets
        .iter()
        .map(|t| {
            let current = t.observed_hash.is_some() && t.observed_hash == status.rendered_hash;
            vec![
                t.kind.clone(),
                t.name.clone(),
                if current { "current" } else { "pending" }.to_string(),
                t.updated_replicas.to_string(),
                t.ready_replicas.to_string(),
            ]
        })
        .collect();
    out.push_str(&indent(&render(
        &["KIND", "NAME", "HASH", "UPDATED", "READY"],
        &rows,
    )));
    out.push_str("\nChildren:\n");
    let mut rows: Vec<Row> = Vec::new();
    let uid = env.uid().unwrap_or_default();
    let owned = |refs: Option<
        &Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference>,
    >| { refs.is_some_and(|r| r.iter().any(|o| o.uid == uid)) };
    for s in Api::<Secret>::namespaced(client.clone(), ns)
        .list_metadata(&ListParams::default())
        .await?
    {
        if owned(s.metadata.owner_references.as_ref()) {
            rows.push(vec!["Secret".into(), s.name_any()]);
        }
    }
    for p in Api::<NetworkPolicy>::namespaced(client.clone(), ns)
        .list_metadata(&ListParams::default())
        .await?
    {
        if owned(p.metadata.owner_references.as_ref()) {
            rows.push(vec!["NetworkPolicy".into(), p.name_any()]);
        }
    }
    out.push_str(&indent(&render(&["KIND", "NAME"], &rows)));
    Ok(out)
}

/// The profiles in the namespace.
pub async fn llm_list(client: &Client, ns: &str) -> Result<String> {
    let list = Api::<LlmProfile>::namespaced(client.clone(), ns)
        .list(&ListParams::default())
        .await?;
    let rows: Vec<Row> = list
        .iter()
        .map(|p| {
            let conds = p.status.as_ref().map(|s| &s.conditions[..]).unwrap_or(&[]);
            let ready = crate::conditions::get(conds, "Ready");
            vec![
                p.name_any(),
                p.spec.provider.as_str().to_string(),
                p.spec.model.clone(),
                ready
                    .map(|c| c.status.clone())
                    .unwrap_or_else(|| "-".into()),
                ready
                    .map(|c| c.reason.clone())
                    .unwrap_or_else(|| "-".into()),
                p.status
                    .as_ref()
                    .and_then(|s| s.latency_ms)
                    .map(|l| format!("{l}ms"))
                    .unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    if rows.is_empty() {
        return Ok(format!("No LlmProfiles in namespace {ns}.\n"));
    }
    Ok(render(
        &["NAME", "PROVIDER", "MODEL", "READY", "REASON", "LATENCY"],
        &rows,
    ))
}

/// Point an environment at another profile. Refuses profiles that do not exist; under GitOps the
/// change belongs in Git instead (ArgoCD would revert it).
pub async fn llm_switch(client: &Client, ns: &str, env: &str, profile: &str) -> Result<String> {
    let profiles = Api::<LlmProfile>::namespaced(client.clone(), ns);
    let Some(p) = profiles.get_opt(profile).await? else {
        bail!(
            "LlmProfile {profile:?} not found in namespace {ns:?} (see `kubectl aienv llm list`)"
        );
    };
    let envs = Api::<AiEnvironment>::namespaced(client.clone(), ns);
    let Some(current) = envs.get_opt(env).await? else {
        bail!("AiEnvironment {env:?} not found in namespace {ns:?}");
    };
    if current.spec.llm.profile_ref == profile {
        return Ok(format!("aienvironment/{env} already uses {profile}\n"));
    }
    // Keep the fallback list valid (the API rejects a fallback equal to the active profile).
    let fallbacks: Vec<String> = current
        .spec
        .llm
        .fallbacks
        .iter()
        .filter(|f| *f != profile)
        .cloned()
        .collect();
    let patch =
        serde_json::json!({"spec": {"llm": {"profileRef": profile, "fallbacks": fallbacks}}});
    envs.patch(env, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    let ready = p
        .status
        .as_ref()
        .and_then(|s| crate::conditions::get(&s.conditions, "Ready").cloned())
        .map(|c| format!(" (profile Ready={}: {})", c.status, c.reason))
        .unwrap_or_default();
    Ok(format!(
        "aienvironment/{env} switched from {} to {profile}{ready}\n",
        current.spec.llm.profile_ref
    ))
}

fn indent(s: &str) -> String {
    s.lines().map(|l| format!("  {l}\n")).collect()
}
