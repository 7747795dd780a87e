//! When `periodic` and `nightly` schedulers fire: every N seconds, or at the
//! times of a cron pattern in a time zone. Nightly's Buildbot-style fields
//! (`minute`, `hour`, `day_of_month`, `month`, `day_of_week`) are turned
//! into a cron pattern here, so both forms are computed the same way, by
//! the croner crate (day of month and day of week restricted together match
//! either, as in cron), in the zone's own calendar (chrono-tz).

use crate::lua::{Fields, RawKey, RawValue};
use chrono::{DateTime, TimeZone, Utc};
use std::str::FromStr;

/// A timed scheduler's schedule.
#[derive(Debug, Clone, PartialEq)]
pub enum Timing {
    /// `periodic { period }`: every this many seconds.
    Every(u64),
    /// `nightly`: the times a cron pattern (with an optional seconds field)
    /// names, in `timezone` (an IANA name; default UTC).
    Cron { pattern: String, timezone: String },
}

impl Timing {
    /// The first time strictly after `after` (seconds since 1970) this
    /// schedule fires; `None` when it never does again.
    pub fn next_after(&self, after: f64) -> Option<f64> {
        match self {
            Timing::Every(seconds) => Some(after + *seconds as f64),
            Timing::Cron { pattern, timezone } => {
                let cron = parse_cron(pattern).ok()?;
                let zone = parse_timezone(timezone).ok()?;
                let start: DateTime<Utc> = Utc.timestamp_opt(after.floor() as i64, 0).single()?;
                let next = cron
                    .find_next_occurrence(&start.with_timezone(&zone), false)
                    .ok()?;
                Some(next.timestamp() as f64)
            }
        }
    }

    /// Buildbot's class name for the API and the default reason.
    pub fn class_name(&self) -> &'static str {
        match self {
            Timing::Every(_) => "Periodic",
            Timing::Cron { .. } => "Nightly",
        }
    }
}

fn parse_cron(pattern: &str) -> Result<croner::Cron, String> {
    croner::Cron::from_str(pattern).map_err(|e| format!("'{pattern}' is not a cron pattern: {e}"))
}

fn parse_timezone(name: &str) -> Result<chrono_tz::Tz, String> {
    chrono_tz::Tz::from_str(name)
        .map_err(|_| format!("'{name}' is not a time zone (an IANA name such as \"Europe/Paris\")"))
}

/// The `nightly` fields: `cron = "…"`, or Buildbot's `minute` (default 0),
/// `hour`, `day_of_month`, `month` and `day_of_week` (Monday = 0, as in
/// Buildbot), each a number or a list; plus `timezone`.
pub(super) fn compile_nightly(f: &mut Fields<'_>) -> Option<Timing> {
    let timezone = f.string("timezone").unwrap_or_else(|| "UTC".into());
    if let Err(e) = parse_timezone(&timezone) {
        f.error(format!("nightly: 'timezone': {e}"));
    }
    let fields = [
        ("minute", 0, 59),
        ("hour", 0, 23),
        ("day_of_month", 1, 31),
        ("month", 1, 12),
        ("day_of_week", 0, 6),
    ];
    let pattern = match f.string("cron") {
        Some(pattern) => {
            for (name, ..) in fields {
                if f.get(name).is_some() {
                    f.error(format!("nightly: give 'cron' or '{name}', not both"));
                }
            }
            pattern
        }
        None => {
            let mut parts = Vec::new();
            for (name, min, max) in fields {
                let values = match f.get(name) {
                    None => None,
                    Some(raw) => match numbers(raw, min, max) {
                        Ok(values) => Some(values),
                        Err(()) => {
                            f.error(format!(
                                "nightly: '{name}' must be a number from {min} to {max} or a list of them"
                            ));
                            return None;
                        }
                    },
                };
                let part = match (name, values) {
                    ("minute", None) => "0".to_string(),
                    (_, None) => "*".to_string(),
                    // Buildbot counts days of the week from Monday = 0; cron from Sunday = 0.
                    ("day_of_week", Some(days)) => join(days.iter().map(|d| (d + 1) % 7)),
                    (_, Some(values)) => join(values.into_iter()),
                };
                parts.push(part);
            }
            parts.join(" ")
        }
    };
    if let Err(e) = parse_cron(&pattern) {
        f.error(format!("nightly: {e}"));
        return None;
    }
    Some(Timing::Cron { pattern, timezone })
}

fn numbers(raw: &RawValue, min: i64, max: i64) -> Result<Vec<i64>, ()> {
    let in_range = |v: &RawValue| match v {
        RawValue::Int(i) if (min..=max).contains(i) => Ok(*i),
        _ => Err(()),
    };
    match raw {
        RawValue::Table(entries) if !entries.is_empty() => entries
            .iter()
            .enumerate()
            .map(|(i, (k, v))| match k {
                RawKey::Int(n) if *n == i as i64 + 1 => in_range(v),
                _ => Err(()),
            })
            .collect(),
        other => in_range(other).map(|v| vec![v]),
    }
}

fn join(values: impl Iterator<Item = i64>) -> String {
    values.map(|v| v.to_string()).collect::<Vec<_>>().join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> f64 {
        DateTime::parse_from_rfc3339(text).unwrap().timestamp() as f64
    }

    fn next(pattern: &str, timezone: &str, after: &str) -> String {
        let timing = Timing::Cron {
            pattern: pattern.into(),
            timezone: timezone.into(),
        };
        let t = timing.next_after(at(after)).unwrap();
        Utc.timestamp_opt(t as i64, 0).unwrap().to_rfc3339()
    }

    /// Next fire times worked out by hand with a calendar.
    #[test]
    fn cron_next_fire_times() {
        // Every day at 03:00: strictly after, so at 03:00 itself, the next day.
        assert_eq!(
            next("0 3 * * *", "UTC", "2026-12-05T03:00:00Z"),
            "2026-12-06T03:00:00+00:00"
        );
        assert_eq!(
            next("0 3 * * *", "UTC", "2026-12-05T02:59:59Z"),
            "2026-12-05T03:00:00+00:00"
        );
        // The 31st skips the months without one: after 31 Jan comes 31 Mar.
        assert_eq!(
            next("0 0 31 * *", "UTC", "2027-01-31T00:00:00Z"),
            "2027-03-31T00:00:00+00:00"
        );
        // The last day of February: the 29th only in a leap year.
        assert_eq!(
            next("0 0 29 2 *", "UTC", "2026-03-01T00:00:00Z"),
            "2028-02-29T00:00:00+00:00"
        );
        // A year's end rolls into the next.
        assert_eq!(
            next("30 23 31 12 *", "UTC", "2026-12-31T23:30:00Z"),
            "2027-12-31T23:30:00+00:00"
        );
        // Day of month and day of week both given: either matches (cron's
        // rule). 5 Dec 2026 is a Saturday: the next 13th or Friday is
        // Friday 11 Dec.
        assert_eq!(
            next("0 12 13 * 5", "UTC", "2026-12-05T00:00:00Z"),
            "2026-12-11T12:00:00+00:00"
        );
        // Steps and ranges: every 15 minutes of 9 to 17 on weekdays; Sat 5 Dec
        // 18:00 → Monday 7 Dec 09:00.
        assert_eq!(
            next("*/15 9-17 * * 1-5", "UTC", "2026-12-05T18:00:00Z"),
            "2026-12-07T09:00:00+00:00"
        );
        // A time zone: 02:00 in Paris is 01:00 UTC in winter, 00:00 in summer.
        assert_eq!(
            next("0 2 * * *", "Europe/Paris", "2026-12-05T12:00:00Z"),
            "2026-12-06T01:00:00+00:00"
        );
        assert_eq!(
            next("0 2 * * *", "Europe/Paris", "2026-07-05T12:00:00Z"),
            "2026-07-06T00:00:00+00:00"
        );
        // Seconds, for tests and fine schedules: every 2 s.
        assert_eq!(
            next("*/2 * * * * *", "UTC", "2026-12-05T00:00:01Z"),
            "2026-12-05T00:00:02+00:00"
        );
        // Periodic: plainly after.
        assert_eq!(Timing::Every(600).next_after(1000.0), Some(1600.0));
    }

    fn nightly(fields: &str) -> Result<Timing, Vec<String>> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("master.lua"),
            format!("return {{ {fields} }}"),
        )
        .unwrap();
        let (_lua, raw) = crate::lua::LuaGeneration::load(dir.path()).unwrap();
        let RawValue::Table(entries) = &raw else {
            panic!()
        };
        let mut f = Fields::new("scheduler", "master.lua:1".into(), entries);
        let timing = compile_nightly(&mut f);
        let mut errors = Vec::new();
        f.finish(&mut errors);
        match timing {
            Some(t) if errors.is_empty() => Ok(t),
            _ => Err(errors.iter().map(|e| e.to_string()).collect()),
        }
    }

    #[test]
    fn buildbot_fields_become_a_cron_pattern() {
        // Monday = 0 and Saturday = 5 in Buildbot are 1 and 6 in cron.
        let t = nightly("hour = { 1, 13 }, day_of_week = { 0, 5 }").unwrap();
        assert_eq!(
            t,
            Timing::Cron {
                pattern: "0 1,13 * * 1,6".into(),
                timezone: "UTC".into()
            }
        );
        assert_eq!(
            nightly("minute = 30, hour = 2, timezone = \"Europe/Paris\"").unwrap(),
            Timing::Cron {
                pattern: "30 2 * * *".into(),
                timezone: "Europe/Paris".into()
            }
        );
        let errors = nightly("hour = 24").unwrap_err().join("\n");
        assert!(
            errors.contains("'hour' must be a number from 0 to 23"),
            "{errors}"
        );
        let errors = nightly("cron = \"0 3 * *\"").unwrap_err().join("\n");
        assert!(errors.contains("is not a cron pattern"), "{errors}");
        let errors = nightly("cron = \"0 3 * * *\", hour = 3")
            .unwrap_err()
            .join("\n");
        assert!(
            errors.contains("give 'cron' or 'hour', not both"),
            "{errors}"
        );
        let errors = nightly("timezone = \"Mars/Olympus\"")
            .unwrap_err()
            .join("\n");
        assert!(errors.contains("is not a time zone"), "{errors}");
    }
}
