//! The `audit` command group: verify, search, report, tail, rotate and log.

use std::io::{BufRead, Write};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::Deserialize;

use super::{Failure, Outcome};
use crate::audit::clock::{Clock, FixedClock, SystemClock, day_of};
use crate::audit::files::{self, is_day};
use crate::audit::report;
use crate::audit::search::{self, Bound, Period, Query};
use crate::audit::verify::{self, AppVerification, DayRange};
use crate::audit::{self as log, Actor, AuditError, AuditLog, Level, key, rotate, tail};
use crate::cli::{
    AuditCommand, AuditLogArgs, AuditReportArgs, AuditRotateArgs, AuditSearchArgs, AuditTailArgs,
    AuditVerifyArgs,
};
use crate::context::Context;
use crate::exit::Code;

/// Runs an `audit` subcommand.
pub fn audit(context: &Context, command: AuditCommand) -> Outcome {
    match command {
        AuditCommand::Verify(args) => verify(context, args),
        AuditCommand::Search(args) => search(context, args),
        AuditCommand::Report(args) => report(context, args),
        AuditCommand::Tail(args) => tail(context, args),
        AuditCommand::Rotate(args) => rotate(context, args),
        AuditCommand::Log(args) => append(context, args),
    }
}

fn clock(now: Option<&str>) -> Result<Arc<dyn Clock>, Failure> {
    match now {
        None => Ok(Arc::new(SystemClock)),
        Some(text) => {
            let time = DateTime::parse_from_rfc3339(text).map_err(|err| {
                Failure::new(
                    Code::Usage,
                    format!("invalid --now {text:?}: {err}; use an RFC 3339 time"),
                )
            })?;
            Ok(Arc::new(FixedClock(time.with_timezone(&Utc))))
        }
    }
}

fn day_argument(name: &str, value: Option<String>) -> Result<Option<String>, Failure> {
    match value {
        Some(day) if !is_day(&day) => Err(Failure::new(
            Code::Usage,
            format!("invalid --{name} {day:?}: use YYYYMMDD, such as 20261204"),
        )),
        other => Ok(other),
    }
}

fn verify(context: &Context, args: AuditVerifyArgs) -> Outcome {
    let range = DayRange {
        start: day_argument("start", args.start)?,
        end: day_argument("end", args.end)?,
    };
    let key = key::mac_key(context)?;
    let audit_dir = context.audit_dir();
    let results = if args.app == "all" {
        verify::verify_all(&audit_dir, &key, &range)?
    } else {
        log::validate_app(&args.app)?;
        let has_log = audit_dir.join(&args.app).exists()
            || audit_dir.join(format!("{}.head", args.app)).exists();
        if !has_log {
            return Err(Failure::new(
                Code::CheckFailed,
                format!(
                    "no audit log for app {:?} in {}: neither its log directory nor its head anchor exists; \
                     check the app name (`safe-exec audit verify` checks every app)",
                    args.app,
                    audit_dir.display()
                ),
            ));
        }
        vec![verify::verify_app(&audit_dir, &args.app, &key, &range)?]
    };
    let intact = results.iter().all(|app| app.intact);

    if args.json {
        let document = serde_json::json!({ "intact": intact, "apps": results });
        println!("{document}");
    } else {
        print_verification(&results);
    }
    Ok(if intact {
        0
    } else {
        Code::CheckFailed.as_i32()
    })
}

fn print_verification(results: &[AppVerification]) {
    if results.is_empty() {
        println!("no audit logs found");
    }
    for app in results {
        for finding in &app.findings {
            let place = match (&finding.file, finding.line) {
                (Some(file), Some(line)) => format!(" at {file}:{line}"),
                (Some(file), None) => format!(" in {file}"),
                _ => String::new(),
            };
            let seq = finding
                .seq
                .map(|seq| format!(" (record {seq})"))
                .unwrap_or_default();
            let prefix = if finding.kind.is_damage() {
                "DAMAGED: "
            } else {
                ""
            };
            println!(
                "{}: {prefix}{}{place}{seq}: {}",
                app.app,
                finding.kind.label(),
                finding.message
            );
        }
        if app.intact {
            let files = if app.files == 1 { "file" } else { "files" };
            println!(
                "{}: intact, {} records in {} {files} ({} bytes)",
                app.app, app.records, app.files, app.bytes
            );
        }
    }
}

fn search(context: &Context, args: AuditSearchArgs) -> Outcome {
    let now = clock(args.now.as_deref())?.now();
    let level = match &args.level {
        Some(level) => Some(level.parse::<Level>().map_err(|reason| {
            Failure::new(Code::Usage, format!("invalid --level {level:?}: {reason}"))
        })?),
        None => None,
    };
    let since = match (&args.period, &args.since) {
        (Some(period), _) => Some(now - period.parse::<Period>()?.length()),
        (None, Some(since)) => Some(search::parse_time(since, Bound::Start)?),
        (None, None) => None,
    };
    let until = args
        .until
        .as_deref()
        .map(|until| search::parse_time(until, Bound::End))
        .transpose()?;
    let query = Query {
        app: args.app,
        event: args.event,
        level,
        run_id: args.run_id,
        since,
        until,
        limit: Some(args.limit),
    };

    let records = search::search(&context.audit_dir(), &query)?;
    let mut out = std::io::stdout().lock();
    for record in &records {
        let line = if args.json {
            serde_json::to_string(record).unwrap_or_default()
        } else {
            search::format_line(record)
        };
        if writeln!(out, "{line}").is_err() {
            break;
        }
    }
    Ok(0)
}

fn report(context: &Context, args: AuditReportArgs) -> Outcome {
    let now = clock(args.now.as_deref())?.now();
    let period: Period = args.period.parse()?;
    let format = if args.json {
        "json"
    } else {
        args.format.as_str()
    };
    if !matches!(format, "text" | "json" | "html") {
        return Err(Failure::new(
            Code::Usage,
            format!("invalid --format {format:?}: use text, json or html"),
        ));
    }
    let audit_dir = context.audit_dir();
    let app = if args.app == "all" {
        None
    } else {
        Some(args.app.clone())
    };
    if let Some(app) = &app {
        log::validate_app(app)?;
    }

    let query = Query {
        app: app.clone(),
        since: Some(now - period.length()),
        until: Some(now),
        ..Query::default()
    };
    let records = search::search(&audit_dir, &query)?;

    // Integrity needs the key; without it the report still shows the events.
    let verification = match key::mac_key(context) {
        Ok(key) => {
            let range = DayRange::default();
            let results = match &app {
                Some(app) => vec![verify::verify_app(&audit_dir, app, &key, &range)?],
                None => verify::verify_all(&audit_dir, &key, &range)?,
            };
            Some(results)
        }
        Err(err) => {
            tracing::warn!(error = %err, "audit report without an integrity check");
            None
        }
    };

    let overdue = credentials_needing_rotation(context, now);
    let report = report::build(
        &args.app,
        period,
        now,
        &records,
        verification.as_deref(),
        overdue,
    );
    let text = match format {
        "json" => serde_json::to_string_pretty(&report).unwrap_or_default(),
        "html" => report::render_html(&report),
        _ => report::render_text(&report),
    };
    println!("{text}");
    Ok(0)
}

/// Counts the credentials past their rotation date at `now`; `None` when
/// the vault cannot be read.
fn credentials_needing_rotation(context: &Context, now: DateTime<Utc>) -> Option<u64> {
    match crate::vault::store::read_file(&context.vault_dir) {
        Ok(file) => {
            let overdue = file
                .entries()
                .filter(|entry| entry.rotation_due().is_some_and(|due| due < now));
            Some(overdue.count() as u64)
        }
        Err(err) => {
            tracing::warn!(error = %err, "audit report without the credential rotation count");
            None
        }
    }
}

fn tail(context: &Context, args: AuditTailArgs) -> Outcome {
    let mut out = std::io::stdout().lock();
    let app = args.app.as_deref().filter(|app| *app != "all");
    tail::tail(
        &context.audit_dir(),
        app,
        args.lines,
        args.follow,
        &mut out,
        &|| false,
    )?;
    Ok(0)
}

fn rotate(context: &Context, args: AuditRotateArgs) -> Outcome {
    let today = day_of(clock(args.now.as_deref())?.now());
    let audit_dir = context.audit_dir();
    let apps = match args.app.filter(|app| app != "all") {
        Some(app) => {
            log::validate_app(&app)?;
            vec![app]
        }
        None => files::list_apps(&audit_dir).map_err(|source| AuditError::Read {
            file: audit_dir.clone(),
            source,
        })?,
    };
    for app in &apps {
        for file in rotate::rotate_app(&audit_dir, app, &today)? {
            println!("compressed {}", file.display());
        }
    }
    Ok(0)
}

/// One event read by `audit log --stdin`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct StdinEvent {
    event: String,
    #[serde(default)]
    level: Option<String>,
    #[serde(default)]
    details: Option<serde_json::Value>,
}

fn append(context: &Context, args: AuditLogArgs) -> Outcome {
    let run_id = args
        .run_id
        .clone()
        .unwrap_or_else(|| format!("cli-{}", std::process::id()));
    let log = AuditLog::open(context, &args.app, &run_id)?.with_clock(clock(args.now.as_deref())?);
    let log = if args.no_fsync {
        log.with_fsync(false)
    } else {
        log
    };
    let mut out = std::io::stdout().lock();

    if !args.stdin {
        let event = args.event.clone().unwrap_or_default();
        let level = parse_level(&args.level)?;
        let details = build_details(args.details_json.as_deref(), &args.details)?;
        let seq = log.append(&event, level, Actor::App, details)?;
        let _ = writeln!(out, "{seq}");
        log.wait_for_alerts();
        return Ok(0);
    }

    for (index, line) in std::io::stdin().lock().lines().enumerate() {
        let line = line
            .map_err(|err| Failure::new(Code::DataErr, format!("failed to read stdin: {err}")))?;
        if line.trim().is_empty() {
            continue;
        }
        let event: StdinEvent = serde_json::from_str(&line).map_err(|err| {
            Failure::new(
                Code::DataErr,
                format!("invalid event on stdin line {}: {err}", index + 1),
            )
        })?;
        let level = parse_level(event.level.as_deref().unwrap_or("INFO"))?;
        let details = event.details.unwrap_or_else(|| serde_json::json!({}));
        let seq = log.append(&event.event, level, Actor::App, details)?;
        // Print each number as soon as the record is written, so a caller knows what reached the log.
        if writeln!(out, "{seq}").and_then(|()| out.flush()).is_err() {
            break;
        }
    }
    log.wait_for_alerts();
    Ok(0)
}

fn parse_level(text: &str) -> Result<Level, Failure> {
    text.parse::<Level>()
        .map_err(|reason| Failure::new(Code::Usage, format!("invalid level {text:?}: {reason}")))
}

fn build_details(json: Option<&str>, pairs: &[String]) -> Result<serde_json::Value, Failure> {
    let mut details = match json {
        Some(text) => match serde_json::from_str::<serde_json::Value>(text) {
            Ok(serde_json::Value::Object(map)) => map,
            Ok(_) => {
                return Err(Failure::new(
                    Code::Usage,
                    "invalid --details-json: expected a JSON object",
                ));
            }
            Err(err) => {
                return Err(Failure::new(
                    Code::Usage,
                    format!("invalid --details-json: {err}"),
                ));
            }
        },
        None => serde_json::Map::new(),
    };
    for pair in pairs {
        let Some((name, value)) = pair.split_once('=') else {
            return Err(Failure::new(
                Code::Usage,
                format!("invalid --detail {pair:?}: use KEY=VALUE"),
            ));
        };
        details.insert(name.to_owned(), serde_json::Value::String(value.to_owned()));
    }
    Ok(serde_json::Value::Object(details))
}
