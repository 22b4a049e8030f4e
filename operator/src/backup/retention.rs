//! Which backups a retention policy keeps: the newest `keepLast`, and the newest of each of the
//! last `keepDaily` days, `keepWeekly` ISO weeks and `keepMonthly` months, read in the schedule's
//! time zone; never the newest verified backup. Pure.

use std::collections::{BTreeMap, BTreeSet};

use futures::TryStreamExt;
use jiff::{Timestamp, tz::TimeZone};
use object_store::ObjectStoreExt;

use super::{
    Error,
    manifest::{MANIFEST, VERIFIED},
    storage::Destination,
};
use crate::api::backup_schedule::Retention;

/// The retention flags of `aienv backup` (the BackupSchedule's `retention` and `timeZone`).
#[derive(Clone, Debug, clap::Args)]
pub struct RetentionArgs {
    /// Apply retention after a successful backup.
    #[arg(long, default_value_t = false)]
    pub retention: bool,
    #[arg(long, default_value_t = 7)]
    pub keep_last: u32,
    #[arg(long, default_value_t = 7)]
    pub keep_daily: u32,
    #[arg(long, default_value_t = 4)]
    pub keep_weekly: u32,
    #[arg(long, default_value_t = 6)]
    pub keep_monthly: u32,
    /// IANA time zone the days, weeks and months are read in.
    #[arg(long, default_value = "UTC")]
    pub time_zone: String,
}

/// What retention did.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Applied {
    pub kept: usize,
    /// Backup folders deleted by the policy.
    pub deleted: Vec<String>,
    /// Folders without a manifest older than a day (failed uploads) removed.
    pub incomplete: Vec<String>,
    /// Keys of multipart uploads initiated more than a day ago and never completed (a killed
    /// backup's parts: billed, but no object lists them), aborted.
    pub aborted_uploads: Vec<String>,
}

/// [`apply`], then abort the store's multipart uploads initiated more than a day before `now`:
/// what a backup Job runs after a successful backup. A day, because a running backup's upload is
/// never that old, and one backup of a store runs at a time.
pub async fn apply_with_uploads(
    args: &super::storage::DestinationArgs,
    namespace: &str,
    store: &str,
    policy: &RetentionArgs,
    now: Timestamp,
) -> Result<Applied, Error> {
    let dest = Destination::open(args).await?;
    let mut applied = apply(&dest, namespace, store, policy, now).await?;
    // The folder with its trailing slash: `mem/` must not match `memory/`.
    let prefix = format!("{}/", dest.store_folder(namespace, store));
    if let Some(uploads) = super::s3_uploads::Uploads::open(args)? {
        applied.aborted_uploads = uploads
            .abort_initiated_before(&prefix, now - jiff::SignedDuration::from_hours(24))
            .await?;
    }
    Ok(applied)
}

/// Apply the policy to the store's folder: delete the backups it does not keep (manifest first,
/// so a half-deleted backup is never listed), and manifest-less folders older than a day.
pub async fn apply(
    dest: &Destination,
    namespace: &str,
    store: &str,
    args: &RetentionArgs,
    now: Timestamp,
) -> Result<Applied, Error> {
    let tz = TimeZone::get(&args.time_zone).map_err(|_| {
        Error::Refused(format!(
            "unknown time zone {:?}: use an IANA name such as Europe/Berlin",
            args.time_zone
        ))
    })?;
    let folder = dest.store_folder(namespace, store);
    let objects: Vec<_> = dest
        .store
        .list(Some(&folder))
        .try_collect()
        .await
        .map_err(|e| Error::Storage(e.to_string()))?;
    // Backup folder → its objects.
    let mut folders: BTreeMap<String, Vec<object_store::ObjectMeta>> = BTreeMap::new();
    for o in objects {
        let name = o.location.as_ref().to_string();
        if let Some((dir, _)) = name.rsplit_once('/') {
            folders.entry(dir.to_string()).or_default().push(o);
        }
    }
    let stamp = |dir: &str| {
        let s = dir.rsplit('/').next().unwrap_or_default();
        jiff::civil::DateTime::strptime("%Y%m%dT%H%M%SZ", s)
            .ok()
            .and_then(|d| d.to_zoned(TimeZone::UTC).ok())
            .map(|z| z.timestamp())
    };
    let has = |objs: &[object_store::ObjectMeta], file: &str| {
        objs.iter().any(|o| o.location.filename() == Some(file))
    };
    let complete: Vec<(String, Timestamp)> = folders
        .iter()
        .filter(|(_, objs)| has(objs, MANIFEST))
        .filter_map(|(dir, _)| Some((dir.clone(), stamp(dir)?)))
        .collect();
    let newest_verified = complete
        .iter()
        .filter(|(dir, _)| has(&folders[dir], VERIFIED))
        .max_by_key(|(_, t)| *t)
        .map(|(dir, _)| dir.clone());
    let policy = Retention {
        keep_last: args.keep_last,
        keep_daily: args.keep_daily,
        keep_weekly: args.keep_weekly,
        keep_monthly: args.keep_monthly,
    };
    let kept = keep(&complete, &policy, &tz, newest_verified.as_deref());
    let mut applied = Applied {
        kept: kept.len(),
        ..Default::default()
    };
    let day_ago = now - jiff::SignedDuration::from_hours(24);
    for (dir, objs) in &folders {
        let is_complete = has(objs, MANIFEST);
        let drop = if is_complete {
            !kept.contains(dir)
        } else {
            objs.iter()
                .all(|o| o.last_modified.timestamp() < day_ago.as_second())
        };
        if !drop {
            continue;
        }
        // The manifest first: from then on the folder is not a backup.
        let mut order: Vec<&object_store::ObjectMeta> = objs.iter().collect();
        order.sort_by_key(|o| o.location.filename() != Some(MANIFEST));
        for o in order {
            dest.store
                .delete(&o.location)
                .await
                .map_err(|e| Error::Storage(e.to_string()))?;
        }
        if is_complete {
            applied.deleted.push(dir.clone());
        } else {
            applied.incomplete.push(dir.clone());
        }
    }
    Ok(applied)
}

/// The backups to keep, by key, of `backups` (key and time, any order).
pub fn keep(
    backups: &[(String, Timestamp)],
    policy: &Retention,
    tz: &TimeZone,
    newest_verified: Option<&str>,
) -> BTreeSet<String> {
    let mut newest_first: Vec<&(String, Timestamp)> = backups.iter().collect();
    newest_first.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| b.0.cmp(&a.0)));
    let mut kept: BTreeSet<String> = newest_first
        .iter()
        .take(policy.keep_last as usize)
        .map(|(k, _)| k.clone())
        .collect();
    let mut by_period = |n: u32, period: &dyn Fn(&Timestamp) -> (i32, i32)| {
        let mut seen = BTreeSet::new();
        for (key, t) in &newest_first {
            if seen.len() >= n as usize {
                break;
            }
            // The first (newest) backup of each period seen is that period's.
            if seen.insert(period(t)) {
                kept.insert(key.clone());
            }
        }
    };
    let local = |t: &Timestamp| t.to_zoned(tz.clone());
    by_period(policy.keep_daily, &|t| {
        let z = local(t);
        (i32::from(z.year()), i32::from(z.day_of_year()))
    });
    by_period(policy.keep_weekly, &|t| {
        let w = local(t).date().iso_week_date();
        (i32::from(w.year()), i32::from(w.week()))
    });
    by_period(policy.keep_monthly, &|t| {
        let z = local(t);
        (i32::from(z.year()), i32::from(z.month()))
    });
    if let Some(v) = newest_verified
        && backups.iter().any(|(k, _)| k == v)
    {
        kept.insert(v.to_string());
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(last: u32, daily: u32, weekly: u32, monthly: u32) -> Retention {
        Retention {
            keep_last: last,
            keep_daily: daily,
            keep_weekly: weekly,
            keep_monthly: monthly,
        }
    }

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn sixty_days_every_six_hours_keep_exactly_the_policys_set() {
        // 2026-10-03T00:00Z … 2026-12-01T18:00Z, every 6 h: 240 backups.
        let start = ts("2026-10-03T00:00:00Z");
        let backups: Vec<(String, Timestamp)> = (0..240)
            .map(|i| {
                let t = start + jiff::SignedDuration::from_hours(6 * i);
                (t.strftime("%Y%m%dT%H%M%SZ").to_string(), t)
            })
            .collect();
        assert_eq!(backups.last().unwrap().0, "20261201T180000Z");
        let kept = keep(
            &backups,
            &policy(3, 7, 4, 2),
            &TimeZone::UTC,
            Some("20261020T120000Z"),
        );
        let want: BTreeSet<String> = [
            // keepLast 3
            "20261201T180000Z",
            "20261201T120000Z",
            "20261201T060000Z",
            // keepDaily 7: the newest of 12-01 (above) and of 11-30 … 11-25
            "20261130T180000Z",
            "20261129T180000Z",
            "20261128T180000Z",
            "20261127T180000Z",
            "20261126T180000Z",
            "20261125T180000Z",
            // keepWeekly 4 (ISO weeks from Monday): 11-30..12-06 has 12-01; then the Sundays
            "20261122T180000Z",
            "20261115T180000Z",
            // keepMonthly 2: December (12-01) and November (11-30), both above
            // the newest verified backup, whatever the policy says
            "20261020T120000Z",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        assert_eq!(kept, want);
    }

    #[test]
    fn days_are_the_schedules_days() {
        // UTC days 11-30 {a} and 12-01 {b, c}; Tokyo (UTC+9) days 12-01 {a, b} and 12-02 {c}.
        let backups = vec![
            ("a".to_string(), ts("2026-11-30T20:00:00Z")),
            ("b".to_string(), ts("2026-12-01T10:00:00Z")),
            ("c".to_string(), ts("2026-12-01T16:00:00Z")),
        ];
        let daily = policy(0, 2, 0, 0);
        let utc = keep(&backups, &daily, &TimeZone::UTC, None);
        assert_eq!(utc, BTreeSet::from(["a".to_string(), "c".to_string()]));
        let tokyo = keep(
            &backups,
            &daily,
            &TimeZone::get("Asia/Tokyo").unwrap(),
            None,
        );
        assert_eq!(tokyo, BTreeSet::from(["b".to_string(), "c".to_string()]));
    }

    #[test]
    fn a_verified_backup_that_is_gone_keeps_nothing_else() {
        let backups = vec![("a".to_string(), ts("2026-12-01T00:00:00Z"))];
        let kept = keep(&backups, &policy(1, 0, 0, 0), &TimeZone::UTC, Some("gone"));
        assert_eq!(kept, BTreeSet::from(["a".to_string()]));
    }
}
