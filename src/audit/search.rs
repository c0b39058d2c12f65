//! Finding records by app, event type, level, run id and time.
//!
//! Searching reads the records as stored and does not check MACs; `audit
//! verify` (and the integrity section of a report) does that.

use std::path::Path;

use chrono::{DateTime, Duration, NaiveDate, Utc};

use super::files::{self, AppPaths};
use super::record::{LINK_EVENT, Level, Record};
use super::{AuditError, validate_app};

/// A time window named by `--period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Period {
    Daily,
    Weekly,
    Monthly,
}

impl Period {
    /// Returns the length of the window: 1, 7 or 30 days.
    pub fn length(self) -> Duration {
        match self {
            Self::Daily => Duration::days(1),
            Self::Weekly => Duration::days(7),
            Self::Monthly => Duration::days(30),
        }
    }

    /// Returns the name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Self::Daily => "daily",
            Self::Weekly => "weekly",
            Self::Monthly => "monthly",
        }
    }
}

impl std::str::FromStr for Period {
    type Err = AuditError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text {
            "daily" | "day" => Ok(Self::Daily),
            "weekly" | "week" => Ok(Self::Weekly),
            "monthly" | "month" => Ok(Self::Monthly),
            _ => Err(AuditError::InvalidArgument {
                what: "period",
                value: text.to_owned(),
                reason: "expected daily, weekly or monthly".to_owned(),
            }),
        }
    }
}

/// The end of a day that a `YYYYMMDD` bound means.
#[derive(Debug, Clone, Copy)]
pub enum Bound {
    Start,
    End,
}

/// Parses an RFC 3339 time or a `YYYYMMDD` day (its first or last instant).
pub fn parse_time(text: &str, bound: Bound) -> Result<DateTime<Utc>, AuditError> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Ok(time.with_timezone(&Utc));
    }
    let invalid = || AuditError::InvalidArgument {
        what: "time",
        value: text.to_owned(),
        reason: "expected an RFC 3339 time such as 2026-12-04T10:00:00Z or a day such as 20261204"
            .to_owned(),
    };
    let date = NaiveDate::parse_from_str(text, "%Y%m%d").map_err(|_| invalid())?;
    let time = match bound {
        Bound::Start => date.and_hms_opt(0, 0, 0),
        Bound::End => date.and_hms_micro_opt(23, 59, 59, 999_999),
    };
    time.map(|time| time.and_utc()).ok_or_else(invalid)
}

/// The filters of a search; `None` matches everything.
#[derive(Debug, Clone, Default)]
pub struct Query {
    pub app: Option<String>,
    pub event: Option<String>,
    pub level: Option<Level>,
    pub run_id: Option<String>,
    pub since: Option<DateTime<Utc>>,
    pub until: Option<DateTime<Utc>>,
    /// Most records returned, newest first.
    pub limit: Option<usize>,
}

impl Query {
    fn matches(&self, record: &Record) -> bool {
        let event_matches = match &self.event {
            Some(event) => record.event.eq_ignore_ascii_case(event),
            None => record.event != LINK_EVENT,
        };
        event_matches
            && self.level.is_none_or(|level| record.level == level)
            && self
                .run_id
                .as_deref()
                .is_none_or(|run_id| record.run_id == run_id)
            && self.since.is_none_or(|since| record.ts >= since)
            && self.until.is_none_or(|until| record.ts <= until)
    }
}

/// Returns the records matching `query`, newest first.
pub fn search(audit_dir: &Path, query: &Query) -> Result<Vec<Record>, AuditError> {
    let apps = match &query.app {
        Some(app) if app != "all" => {
            validate_app(app)?;
            vec![app.clone()]
        }
        _ => files::list_apps(audit_dir).map_err(|source| AuditError::Read {
            file: audit_dir.to_owned(),
            source,
        })?,
    };

    let mut records = Vec::new();
    for app in &apps {
        load_app(audit_dir, app, query, &mut records)?;
    }
    records.sort_by(|a, b| b.ts.cmp(&a.ts).then(b.seq.cmp(&a.seq)));
    if let Some(limit) = query.limit {
        records.truncate(limit);
    }
    Ok(records)
}

fn load_app(
    audit_dir: &Path,
    app: &str,
    query: &Query,
    out: &mut Vec<Record>,
) -> Result<(), AuditError> {
    let paths = AppPaths::new(audit_dir, app);
    let days = files::list_days(&paths.dir).map_err(|source| AuditError::Read {
        file: paths.dir.clone(),
        source,
    })?;
    let first_day = query.since.map(super::clock::day_of);
    let last_day = query.until.map(super::clock::day_of);

    for file in &days {
        let before = first_day
            .as_deref()
            .is_some_and(|first| file.day.as_str() < first);
        let after = last_day
            .as_deref()
            .is_some_and(|last| file.day.as_str() > last);
        if before || after {
            continue;
        }
        let content = match files::read_day(file) {
            Ok(content) => content,
            Err(err) => {
                tracing::warn!(app, file = %file.path.display(), error = %err, "skipping unreadable audit file");
                continue;
            }
        };
        for line in content.split(|&b| b == b'\n') {
            // Torn or damaged lines are skipped here; `audit verify` reports them.
            let Ok(record) = serde_json::from_slice::<Record>(line) else {
                continue;
            };
            if query.matches(&record) {
                out.push(record);
            }
        }
    }
    Ok(())
}

/// Formats a record as one line of text for a terminal.
pub fn format_line(record: &Record) -> String {
    let ts = record
        .ts
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let details = match &record.details {
        serde_json::Value::Object(map) if map.is_empty() => String::new(),
        serde_json::Value::Null => String::new(),
        details => format!(" {details}"),
    };
    format!(
        "{ts} {:<8} {} #{} run={} {}{details}",
        record.level.as_str(),
        record.app,
        record.seq,
        record.run_id,
        record.event
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn day_bounds_cover_whole_day() {
        let start = parse_time("20261204", Bound::Start).unwrap();
        let end = parse_time("20261204", Bound::End).unwrap();
        assert_eq!(start.to_rfc3339(), "2026-12-04T00:00:00+00:00");
        assert_eq!(
            end.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "2026-12-04T23:59:59.999999Z"
        );
    }

    #[test]
    fn rfc3339_time_is_converted_to_utc() {
        let time = parse_time("2026-12-04T10:00:00+02:00", Bound::Start).unwrap();
        assert_eq!(time.to_rfc3339(), "2026-12-04T08:00:00+00:00");
    }

    #[test]
    fn invalid_time_is_rejected() {
        assert!(parse_time("yesterday", Bound::Start).is_err());
        assert!(parse_time("20261332", Bound::Start).is_err());
    }

    #[test]
    fn period_names_parse() {
        assert_eq!(
            "weekly".parse::<Period>().unwrap().length(),
            Duration::days(7)
        );
        assert!("hourly".parse::<Period>().is_err());
    }
}
