//! What a BackupSchedule needs before anything is applied: a schedule and time zone Kubernetes
//! will accept, a Ready MemoryStore, and the destination's credentials. Pure: the objects come
//! from [`super::resolve`].

use jiff::{Timestamp, tz::TimeZone};

use super::resolve::{Resolved, StoreBinding};
use crate::{
    api::{
        backup_schedule::{BackupSchedule, BackupScheduleSpec},
        memory_store::{MemoryStore, StoreMode},
    },
    controller::Problem,
    controllers::memory_store::children as store_children,
};

/// Longest schedule name: the Job names derive from it (`<name>-verify-<timestamp>`, 63 at most).
pub const MAX_NAME: usize = 39;
/// Keys of an S3 credentials Secret.
pub const S3_KEYS: [&str; 2] = ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"];

/// A cron expression as Kubernetes' CronJob reads it: 5 fields or a macro, day-of-month OR
/// day-of-week when both are restricted.
pub fn parse_cron(expr: &str) -> Result<croner::Cron, String> {
    let expr = expr.trim();
    // Kubernetes knows @midnight; croner calls it @daily.
    let expr = if expr.eq_ignore_ascii_case("@midnight") {
        "@daily"
    } else {
        expr
    };
    if expr.split_whitespace().count() != 5 && !expr.starts_with('@') {
        return Err(
            "a 5-field expression 'minute hour day-of-month month day-of-week' is expected".into(),
        );
    }
    croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Disallowed)
        .build()
        .parse(expr)
        .map_err(|e| e.to_string())
}

/// The time zone the schedule is read in.
pub fn time_zone(spec: &BackupScheduleSpec) -> Result<TimeZone, Problem> {
    let name = spec.time_zone.as_deref().unwrap_or("UTC");
    TimeZone::get(name).map_err(|_| {
        Problem::new(
            "InvalidTimeZone",
            format!(
                "timeZone {name:?} is not a time zone of the IANA database: use a name such as Europe/Berlin, America/New_York or UTC"
            ),
        )
    })
}

/// The first slot of `expr` after `after`, in `tz`.
pub fn next_slot(cron: &croner::Cron, tz: &TimeZone, after: Timestamp) -> Option<Timestamp> {
    cron.find_next_occurrence(&after.to_zoned(tz.clone()), false)
        .ok()
        .map(|z| z.timestamp())
}

/// The plan every builder reads, or the first problem a user must fix.
pub fn validate(schedule: &BackupSchedule, resolved: &Resolved) -> Result<Plan, Problem> {
    let spec = &schedule.spec;
    let name = schedule.metadata.name.as_deref().unwrap_or_default();
    if name.len() > MAX_NAME {
        return Err(Problem::invalid_spec(format!(
            "the name {name:?} has {} characters: BackupSchedule names are limited to {MAX_NAME} (its CronJob and Job names derive from it)",
            name.len()
        )));
    }
    let backup_cron = parse_cron(&spec.schedule).map_err(|e| {
        Problem::new(
            "InvalidSchedule",
            format!("schedule {:?}: {e}", spec.schedule),
        )
    })?;
    let verify_cron = match spec.verify.as_ref().filter(|v| v.enabled) {
        Some(v) => match &v.schedule {
            Some(s) => Some(Some(parse_cron(s).map_err(|e| {
                Problem::new("InvalidSchedule", format!("verify.schedule {s:?}: {e}"))
            })?)),
            None => Some(None),
        },
        None => None,
    };
    let tz = time_zone(spec)?;
    let ns = schedule.metadata.namespace.as_deref().unwrap_or_default();
    let Some(store) = &resolved.store else {
        return Err(Problem::new(
            "StoreNotFound",
            format!(
                "MemoryStore {ns}/{} does not exist: create it or fix spec.memoryStoreRef (this schedule is checked again when it appears)",
                spec.memory_store_ref
            ),
        ));
    };
    let binding = store_binding(store, ns)?;
    check_credentials(spec, resolved, ns)?;
    Ok(Plan {
        backup_cron,
        verify_cron,
        tz,
        binding,
    })
}

/// What was validated, for the builders.
pub struct Plan {
    pub backup_cron: croner::Cron,
    /// None: verification off; Some(None): right after each successful backup.
    pub verify_cron: Option<Option<croner::Cron>>,
    pub tz: TimeZone,
    pub binding: StoreBinding,
}

/// How the Jobs reach the store's database as its owner, by mode; the store must be Ready.
fn store_binding(store: &MemoryStore, ns: &str) -> Result<StoreBinding, Problem> {
    let name = store.metadata.name.clone().unwrap_or_default();
    let status = store.status.as_ref();
    let ready = status.and_then(|s| crate::conditions::get(&s.conditions, "Ready"));
    let schema = status
        .and_then(|s| s.endpoint.as_ref())
        .and_then(|e| e.schema.clone());
    let (Some(ready), Some(schema)) = (ready.filter(|c| c.status == "True"), schema) else {
        let why = ready
            .map(|c| format!(" ({}: {})", c.reason, c.message))
            .unwrap_or_default();
        return Err(Problem::new(
            "StoreNotReady",
            format!(
                "MemoryStore {ns}/{name} is not Ready yet{why}; backups are scheduled once it is"
            ),
        ));
    };
    let _ = ready;
    let database = match store.spec.mode {
        StoreMode::External => {
            let r = &store
                .spec
                .external
                .as_ref()
                .ok_or_else(|| {
                    Problem::invalid_spec("the MemoryStore has mode external but no spec.external")
                })?
                .connection_secret_ref;
            super::resolve::Database::UriInSecret {
                name: r.name.clone(),
                key: r.key.clone(),
            }
        }
        StoreMode::Cloudnativepg => super::resolve::Database::UriInSecret {
            name: store_children::cnpg_app_secret_name(&name),
            key: "uri".into(),
        },
        StoreMode::Managed => super::resolve::Database::PasswordInSecret {
            uri: format!(
                "postgres://{}@{}:{}/{}",
                store_children::PG_USER,
                store_children::managed_host(&name, ns),
                store_children::PG_PORT,
                store_children::PG_DATABASE
            ),
            name: store_children::credentials_secret_name(&name),
            key: "password".into(),
        },
    };
    Ok(StoreBinding {
        store: name,
        schema,
        database,
    })
}

/// The destination's credentials Secret, when one is named, exists and has its keys.
fn check_credentials(
    spec: &BackupScheduleSpec,
    resolved: &Resolved,
    ns: &str,
) -> Result<(), Problem> {
    let (name, keys): (&str, Vec<&str>) = match (&spec.destination.s3, &spec.destination.gcs) {
        (Some(s3), _) => match &s3.credentials_secret_ref {
            Some(r) => (r.name.as_str(), S3_KEYS.to_vec()),
            None => return Ok(()),
        },
        (None, Some(gcs)) => match &gcs.credentials_secret_ref {
            Some(r) => (r.name.as_str(), vec![r.key.as_str()]),
            None => return Ok(()),
        },
        (None, None) => {
            return Err(Problem::invalid_spec(
                "set exactly one of destination.s3 or destination.gcs",
            ));
        }
    };
    let Some(secret) = resolved.secrets.get(name).and_then(|s| s.as_ref()) else {
        return Err(Problem::new(
            "CredentialsNotFound",
            format!(
                "Secret {ns}/{name} (the destination's credentials) does not exist: create it with key(s) {}, or remove credentialsSecretRef to use workload identity",
                keys.join(", ")
            ),
        ));
    };
    let has = |k: &str| {
        secret.data.as_ref().is_some_and(|d| d.contains_key(k))
            || secret
                .string_data
                .as_ref()
                .is_some_and(|d| d.contains_key(k))
    };
    let missing: Vec<&str> = keys.iter().copied().filter(|k| !has(k)).collect();
    if !missing.is_empty() {
        return Err(Problem::new(
            "CredentialsKeyMissing",
            format!(
                "Secret {ns}/{name} lacks key(s) {}: add them (the names are case-sensitive)",
                missing.join(", ")
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn macros_and_five_fields_parse_and_six_do_not() {
        for ok in [
            "@daily",
            "@midnight",
            "@hourly",
            "@weekly",
            "@monthly",
            "@yearly",
            "@annually",
            "*/15 2 * * 1-5",
        ] {
            assert!(parse_cron(ok).is_ok(), "{ok}");
        }
        for bad in ["0 0 3 * * *", "61 * * * *", "* * *", "@sometimes"] {
            assert!(parse_cron(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_next_slot_is_read_in_the_schedules_time_zone() {
        let cron = parse_cron("0 3 * * *").unwrap();
        let after = at("2026-12-02T12:00:00Z");
        let berlin = TimeZone::get("Europe/Berlin").unwrap();
        // 03:00 in Berlin (UTC+1 in December) is 02:00 UTC.
        assert_eq!(
            next_slot(&cron, &berlin, after),
            Some(at("2026-12-03T02:00:00Z"))
        );
        assert_eq!(
            next_slot(&cron, &TimeZone::UTC, after),
            Some(at("2026-12-03T03:00:00Z"))
        );
        // Summer time: UTC+2.
        assert_eq!(
            next_slot(&cron, &berlin, at("2026-07-01T12:00:00Z")),
            Some(at("2026-07-02T01:00:00Z"))
        );
    }

    #[test]
    fn day_of_month_or_day_of_week_as_kubernetes_reads_them() {
        // Both restricted: the 13th or any Friday (Vixie cron, as Kubernetes' CronJob).
        let cron = parse_cron("0 0 13 * 5").unwrap();
        // 2026-12-02 is a Wednesday; Friday the 4th comes before the 13th.
        assert_eq!(
            next_slot(&cron, &TimeZone::UTC, at("2026-12-02T00:00:00Z")),
            Some(at("2026-12-04T00:00:00Z"))
        );
    }

    #[test]
    fn an_unknown_time_zone_names_what_is_expected() {
        let spec: BackupScheduleSpec = serde_json::from_value(serde_json::json!({
            "memoryStoreRef": "mem", "schedule": "@daily", "timeZone": "Mars/Olympus",
            "destination": {"s3": {"bucket": "b"}}
        }))
        .unwrap();
        let p = time_zone(&spec).unwrap_err();
        assert_eq!(p.reason, "InvalidTimeZone");
        assert!(p.message.contains("Mars/Olympus") && p.message.contains("Europe/Berlin"));
    }
}
