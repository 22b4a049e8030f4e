//! The schedule's retention, as the flags `aienv backup` applies it with after each successful
//! backup (in the schedule's time zone). Pure.

use crate::api::backup_schedule::Retention;

pub fn flags(r: &Retention, time_zone: &str) -> Vec<String> {
    vec![
        "--retention".into(),
        format!("--keep-last={}", r.keep_last),
        format!("--keep-daily={}", r.keep_daily),
        format!("--keep-weekly={}", r.keep_weekly),
        format!("--keep-monthly={}", r.keep_monthly),
        format!("--time-zone={time_zone}"),
    ]
}
