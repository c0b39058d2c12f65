//! Summaries of the audit log over a period, as text, JSON or one
//! self-contained HTML page.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::record::{Level, Record};
use super::search::Period;
use super::verify::AppVerification;

/// One run, from its RUN_START and RUN_END records.
#[derive(Debug, Clone, Serialize)]
pub struct RunSummary {
    pub app: String,
    pub run_id: String,
    pub started: Option<DateTime<Utc>>,
    pub ended: Option<DateTime<Utc>>,
    /// `details.exit_code` of RUN_END, else `details.status`; `None` while running or when the run was cut off.
    pub exit_status: Option<serde_json::Value>,
}

/// Reads of one credential.
#[derive(Debug, Clone, Serialize)]
pub struct CredentialAccess {
    pub service: String,
    pub key: String,
    pub count: u64,
}

/// Events of one day, by level.
#[derive(Debug, Clone, Default, Serialize)]
pub struct DayCounts {
    pub day: String,
    pub info: u64,
    pub warning: u64,
    pub critical: u64,
}

/// Integrity of one app's chain.
#[derive(Debug, Clone, Serialize)]
pub struct Integrity {
    pub app: String,
    pub intact: bool,
    pub records: u64,
    /// The first damage found, as "kind at file:line: message".
    pub first_damage: Option<String>,
    pub torn_lines: usize,
}

/// The security metrics the user tracks.
#[derive(Debug, Clone, Serialize)]
pub struct Metrics {
    /// Credentials past their rotation date; `None` when the vault could not be read.
    pub credentials_needing_rotation: Option<u64>,
    pub failed_authentications_per_day: f64,
    pub rate_limit_violations_per_day: f64,
    pub security_violations: u64,
    /// "intact", "damaged" or "not checked".
    pub integrity: String,
}

/// A report over one period.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub app: String,
    pub period: String,
    pub since: DateTime<Utc>,
    pub until: DateTime<Utc>,
    pub records: u64,
    pub runs: Vec<RunSummary>,
    pub events_by_type: BTreeMap<String, u64>,
    pub events_by_level: BTreeMap<String, u64>,
    pub credential_accesses: Vec<CredentialAccess>,
    pub rate_limit_denials: u64,
    pub emails_sent: u64,
    pub emails_blocked: u64,
    pub security_violations: u64,
    pub authentication_failures: u64,
    pub daily: Vec<DayCounts>,
    pub integrity: Vec<Integrity>,
    pub metrics: Metrics,
}

/// Builds a report from the records of the period (any order) and the verification results.
pub fn build(
    app: &str,
    period: Period,
    until: DateTime<Utc>,
    records: &[Record],
    verification: Option<&[AppVerification]>,
    credentials_needing_rotation: Option<u64>,
) -> Report {
    let since = until - period.length();
    let mut sorted: Vec<&Record> = records.iter().collect();
    sorted.sort_by(|a, b| a.ts.cmp(&b.ts).then(a.seq.cmp(&b.seq)));

    let mut events_by_type = BTreeMap::new();
    let mut events_by_level: BTreeMap<String, u64> = ["INFO", "WARNING", "CRITICAL"]
        .iter()
        .map(|level| (level.to_string(), 0))
        .collect();
    let mut runs: BTreeMap<(String, String), RunSummary> = BTreeMap::new();
    let mut credentials: BTreeMap<(String, String), u64> = BTreeMap::new();
    let mut daily: BTreeMap<String, DayCounts> = BTreeMap::new();

    // Every day of the period gets a bar, so days without events show as gaps.
    let mut date = since.date_naive();
    while date <= until.date_naive() {
        let day = date.format("%Y-%m-%d").to_string();
        daily.insert(
            day.clone(),
            DayCounts {
                day,
                ..DayCounts::default()
            },
        );
        let Some(next) = date.succ_opt() else { break };
        date = next;
    }

    for record in &sorted {
        *events_by_type.entry(record.event.clone()).or_insert(0) += 1;
        *events_by_level
            .entry(record.level.as_str().to_owned())
            .or_insert(0) += 1;

        let day = record.ts.format("%Y-%m-%d").to_string();
        let counts = daily.entry(day.clone()).or_insert_with(|| DayCounts {
            day,
            ..DayCounts::default()
        });
        match record.level {
            Level::Info => counts.info += 1,
            Level::Warning => counts.warning += 1,
            Level::Critical => counts.critical += 1,
        }

        match record.event.as_str() {
            "RUN_START" | "RUN_END" => {
                let run = runs
                    .entry((record.app.clone(), record.run_id.clone()))
                    .or_insert_with(|| RunSummary {
                        app: record.app.clone(),
                        run_id: record.run_id.clone(),
                        started: None,
                        ended: None,
                        exit_status: None,
                    });
                if record.event == "RUN_START" {
                    run.started = Some(record.ts);
                } else {
                    run.ended = Some(record.ts);
                    run.exit_status = record
                        .details
                        .get("exit_code")
                        .or_else(|| record.details.get("status"))
                        .cloned();
                }
            }
            "CREDENTIAL_ACCESS" => {
                let text = |name: &str| {
                    record
                        .details
                        .get(name)
                        .and_then(serde_json::Value::as_str)
                        .unwrap_or("?")
                        .to_owned()
                };
                *credentials
                    .entry((text("service"), text("key")))
                    .or_insert(0) += 1;
            }
            _ => {}
        }
    }

    let count = |event: &str| events_by_type.get(event).copied().unwrap_or(0);
    let days = (period.length().num_days().max(1)) as f64;
    let integrity: Vec<Integrity> = verification
        .unwrap_or_default()
        .iter()
        .map(integrity_of)
        .collect();
    let integrity_status = match verification {
        None => "not checked",
        Some(_) if integrity.iter().all(|app| app.intact) => "intact",
        Some(_) => "damaged",
    };
    let metrics = Metrics {
        credentials_needing_rotation,
        failed_authentications_per_day: count("AUTH_FAILURE") as f64 / days,
        rate_limit_violations_per_day: count("API_RATE_LIMIT") as f64 / days,
        security_violations: count("SECURITY_VIOLATION"),
        integrity: integrity_status.to_owned(),
    };

    Report {
        app: app.to_owned(),
        period: period.name().to_owned(),
        since,
        until,
        records: sorted.len() as u64,
        runs: runs.into_values().collect(),
        rate_limit_denials: count("API_RATE_LIMIT"),
        emails_sent: count("EMAIL_SENT"),
        emails_blocked: count("EMAIL_BLOCKED"),
        security_violations: count("SECURITY_VIOLATION"),
        authentication_failures: count("AUTH_FAILURE"),
        events_by_type,
        events_by_level,
        credential_accesses: credentials
            .into_iter()
            .map(|((service, key), count)| CredentialAccess {
                service,
                key,
                count,
            })
            .collect(),
        daily: daily.into_values().collect(),
        integrity,
        metrics,
    }
}

fn integrity_of(app: &AppVerification) -> Integrity {
    let first_damage = app
        .findings
        .iter()
        .find(|finding| finding.kind.is_damage())
        .map(|finding| {
            let place = match (&finding.file, finding.line) {
                (Some(file), Some(line)) => format!(" at {file}:{line}"),
                (Some(file), None) => format!(" in {file}"),
                _ => String::new(),
            };
            format!("{}{place}: {}", finding.kind.label(), finding.message)
        });
    let torn_lines = app
        .findings
        .iter()
        .filter(|finding| !finding.kind.is_damage())
        .count();
    Integrity {
        app: app.app.clone(),
        intact: app.intact,
        records: app.records,
        first_damage,
        torn_lines,
    }
}

fn format_rate(value: f64) -> String {
    format!("{value:.2}")
}

/// Renders the report as text for a terminal.
pub fn render_text(report: &Report) -> String {
    let mut out = String::new();
    let time = |t: &DateTime<Utc>| t.format("%Y-%m-%d %H:%M UTC").to_string();
    let _ = writeln!(
        out,
        "Audit report: {} ({}), {} to {}",
        report.app,
        report.period,
        time(&report.since),
        time(&report.until)
    );
    let _ = writeln!(out, "{} records", report.records);

    let _ = writeln!(out, "\nSecurity metrics");
    for (name, value) in metric_rows(&report.metrics) {
        let _ = writeln!(out, "  {name:<34} {value}");
    }

    let _ = writeln!(out, "\nRuns ({})", report.runs.len());
    for run in &report.runs {
        let status = run.exit_status.as_ref().map_or_else(
            || "no RUN_END".to_owned(),
            |status| format!("exit {status}"),
        );
        let started = run.started.as_ref().map_or_else(|| "?".to_owned(), time);
        let _ = writeln!(
            out,
            "  {started}  {:<24} {:<20} {status}",
            run.app, run.run_id
        );
    }

    let _ = writeln!(out, "\nEvents by level");
    for (level, count) in &report.events_by_level {
        let _ = writeln!(out, "  {level:<34} {count}");
    }
    let _ = writeln!(out, "\nEvents by type");
    for (event, count) in &report.events_by_type {
        let _ = writeln!(out, "  {event:<34} {count}");
    }

    let _ = writeln!(out, "\nCredential accesses");
    if report.credential_accesses.is_empty() {
        let _ = writeln!(out, "  none");
    }
    for access in &report.credential_accesses {
        let _ = writeln!(
            out,
            "  {}/{:<28} {}",
            access.service, access.key, access.count
        );
    }
    let _ = writeln!(
        out,
        "\nRate-limit denials {}  E-mails sent {}  blocked {}",
        report.rate_limit_denials, report.emails_sent, report.emails_blocked
    );

    let _ = writeln!(out, "\nIntegrity");
    for app in &report.integrity {
        let status = match &app.first_damage {
            Some(damage) => format!("DAMAGED: {damage}"),
            None if app.torn_lines > 0 => {
                format!("intact ({} torn lines from crashes)", app.torn_lines)
            }
            None => "intact".to_owned(),
        };
        let _ = writeln!(
            out,
            "  {:<24} {:>8} records  {status}",
            app.app, app.records
        );
    }
    out
}

fn metric_rows(metrics: &Metrics) -> Vec<(&'static str, String)> {
    vec![
        (
            "Credentials needing rotation",
            metrics.credentials_needing_rotation.map_or_else(
                || "unknown (vault not readable)".to_owned(),
                |count| count.to_string(),
            ),
        ),
        (
            "Failed authentications per day",
            format_rate(metrics.failed_authentications_per_day),
        ),
        (
            "Rate-limit violations per day",
            format_rate(metrics.rate_limit_violations_per_day),
        ),
        (
            "Security violations",
            metrics.security_violations.to_string(),
        ),
        ("Audit log integrity", metrics.integrity.clone()),
    ]
}

fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// Renders the report as one HTML page with inline CSS and an inline SVG
/// chart, so it opens in a browser with no network.
pub fn render_html(report: &Report) -> String {
    let mut out = String::new();
    let title = escape(&format!(
        "safe-exec audit report: {} ({})",
        report.app, report.period
    ));
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{title}</title>\n<style>\
body{{font-family:system-ui,sans-serif;margin:2em;color:#222}}table{{border-collapse:collapse;margin:.5em 0 1.5em}}\
td,th{{border:1px solid #ccc;padding:.25em .6em;text-align:left}}th{{background:#f3f3f3}}\
.bad{{color:#b00020;font-weight:bold}}.ok{{color:#1b5e20}}.legend span{{margin-right:1em}}</style></head><body>\n<h1>{title}</h1>\n"
    );
    let _ = writeln!(
        out,
        "<p>{} to {}: {} records.</p>",
        report.since.format("%Y-%m-%d %H:%M UTC"),
        report.until.format("%Y-%m-%d %H:%M UTC"),
        report.records
    );

    let _ = writeln!(out, "<h2>Security metrics</h2><table>");
    for (name, value) in metric_rows(&report.metrics) {
        let class = if value == "damaged" {
            " class=\"bad\""
        } else {
            ""
        };
        let _ = writeln!(
            out,
            "<tr><th>{}</th><td{class}>{}</td></tr>",
            escape(name),
            escape(&value)
        );
    }
    let _ = writeln!(out, "</table>");

    let _ = writeln!(out, "<h2>Events per day by level</h2>");
    out.push_str(&chart_svg(&report.daily));

    let _ = writeln!(
        out,
        "<h2>Runs</h2><table><tr><th>Started</th><th>App</th><th>Run id</th><th>Exit status</th></tr>"
    );
    for run in &report.runs {
        let started = run.started.map_or_else(
            || "?".to_owned(),
            |t| t.format("%Y-%m-%d %H:%M:%S").to_string(),
        );
        let status = run
            .exit_status
            .as_ref()
            .map_or_else(|| "no RUN_END".to_owned(), ToString::to_string);
        let _ = writeln!(
            out,
            "<tr><td>{started}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&run.app),
            escape(&run.run_id),
            escape(&status)
        );
    }
    let _ = writeln!(out, "</table>");

    let _ = writeln!(
        out,
        "<h2>Events by type</h2><table><tr><th>Event</th><th>Count</th></tr>"
    );
    for (event, count) in &report.events_by_type {
        let _ = writeln!(out, "<tr><td>{}</td><td>{count}</td></tr>", escape(event));
    }
    let _ = writeln!(out, "</table>");

    let _ = writeln!(
        out,
        "<h2>Credential accesses</h2><table><tr><th>Service</th><th>Key</th><th>Reads</th></tr>"
    );
    for access in &report.credential_accesses {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&access.service),
            escape(&access.key),
            access.count
        );
    }
    let _ = writeln!(out, "</table>");

    let _ = writeln!(
        out,
        "<h2>Guards</h2><table><tr><th>Rate-limit denials</th><td>{}</td></tr><tr><th>E-mails sent</th><td>{}</td></tr>\
<tr><th>E-mails blocked</th><td>{}</td></tr><tr><th>Security violations</th><td>{}</td></tr></table>",
        report.rate_limit_denials,
        report.emails_sent,
        report.emails_blocked,
        report.security_violations
    );

    let _ = writeln!(
        out,
        "<h2>Integrity</h2><table><tr><th>App</th><th>Records</th><th>Status</th></tr>"
    );
    for app in &report.integrity {
        let (class, status) = match &app.first_damage {
            Some(damage) => ("bad", format!("damaged: {damage}")),
            None => ("ok", format!("intact, {} torn lines", app.torn_lines)),
        };
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td class=\"{class}\">{}</td></tr>",
            escape(&app.app),
            app.records,
            escape(&status)
        );
    }
    let _ = writeln!(out, "</table>\n</body></html>");
    out
}

/// Draws a stacked bar per day (INFO, WARNING, CRITICAL) as inline SVG.
fn chart_svg(daily: &[DayCounts]) -> String {
    const HEIGHT: f64 = 200.0;
    const BAR: f64 = 28.0;
    const GAP: f64 = 12.0;
    const LEFT: f64 = 40.0;
    let colours = [
        ("INFO", "#4f83cc"),
        ("WARNING", "#f2a900"),
        ("CRITICAL", "#c62828"),
    ];

    let max = daily
        .iter()
        .map(|day| day.info + day.warning + day.critical)
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let width = LEFT + daily.len().max(1) as f64 * (BAR + GAP) + GAP;
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{}\" role=\"img\" aria-label=\"Events per day by level\">\n",
        HEIGHT + 60.0
    );
    let _ = writeln!(
        svg,
        "<text x=\"4\" y=\"14\" font-size=\"11\">{}</text><text x=\"4\" y=\"{}\" font-size=\"11\">0</text>",
        max as u64,
        HEIGHT + 10.0
    );
    let _ = writeln!(
        svg,
        "<line x1=\"{LEFT}\" y1=\"{}\" x2=\"{width}\" y2=\"{}\" stroke=\"#999\"/>",
        HEIGHT + 10.0,
        HEIGHT + 10.0
    );

    for (index, day) in daily.iter().enumerate() {
        let x = LEFT + GAP + index as f64 * (BAR + GAP);
        let mut y = HEIGHT + 10.0;
        for (count, (name, colour)) in [day.info, day.warning, day.critical]
            .into_iter()
            .zip(colours)
        {
            if count == 0 {
                continue;
            }
            let height = count as f64 / max * HEIGHT;
            y -= height;
            let _ = writeln!(
                svg,
                "<rect x=\"{x}\" y=\"{y:.1}\" width=\"{BAR}\" height=\"{height:.1}\" fill=\"{colour}\"><title>{} {name}: {count}</title></rect>",
                day.day
            );
        }
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\" font-size=\"10\" transform=\"rotate(45 {} {})\">{}</text>",
            x,
            HEIGHT + 24.0,
            x,
            HEIGHT + 24.0,
            day.day.get(5..).unwrap_or(&day.day)
        );
    }
    svg.push_str("</svg>\n<p class=\"legend\">");
    for (name, colour) in colours {
        let _ = write!(
            svg,
            "<span><svg width=\"10\" height=\"10\"><rect width=\"10\" height=\"10\" fill=\"{colour}\"/></svg> {name}</span>"
        );
    }
    svg.push_str("</p>\n");
    svg
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::record::Actor;
    use chrono::TimeZone;

    fn record(seq: u64, event: &str, level: Level, details: serde_json::Value) -> Record {
        Record {
            seq,
            ts: Utc.with_ymd_and_hms(2026, 12, 3, 9, 0, 0).single().unwrap(),
            app: "budget".to_owned(),
            run_id: "run-1".to_owned(),
            event: event.to_owned(),
            level,
            actor: Actor::Supervisor,
            details,
            prev_hash: String::new(),
            mac: String::new(),
        }
    }

    #[test]
    fn report_counts_runs_and_events() {
        let records = vec![
            record(1, "RUN_START", Level::Info, serde_json::json!({})),
            record(2, "AUTH_FAILURE", Level::Warning, serde_json::json!({})),
            record(
                3,
                "RUN_END",
                Level::Info,
                serde_json::json!({"exit_code": 0}),
            ),
        ];
        let until = Utc.with_ymd_and_hms(2026, 12, 4, 0, 0, 0).single().unwrap();
        let report = build("all", Period::Daily, until, &records, None, None);
        assert_eq!(report.runs.len(), 1);
        assert_eq!(report.runs[0].exit_status, Some(serde_json::json!(0)));
        assert_eq!(report.authentication_failures, 1);
        assert_eq!(report.metrics.failed_authentications_per_day, 1.0);
        assert_eq!(report.metrics.integrity, "not checked");
        assert_eq!(report.daily.len(), 2, "the period's two calendar days");
        assert_eq!(report.daily[0].day, "2026-12-03");
        assert_eq!(report.daily[0].warning, 1);
        assert_eq!(report.daily[1].info, 0);
    }

    #[test]
    fn html_escapes_record_text() {
        let records = vec![record(
            1,
            "RUN_END",
            Level::Info,
            serde_json::json!({"exit_code": "<script>"}),
        )];
        let until = Utc.with_ymd_and_hms(2026, 12, 4, 0, 0, 0).single().unwrap();
        let html = render_html(&build("<all>", Period::Daily, until, &records, None, None));
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;"));
        assert!(html.contains("&lt;all&gt;"));
    }
}
