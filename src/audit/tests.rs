//! Writer and verifier together: every kind of damage on a real log in a
//! temporary vault, with keys made here.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, TimeZone, Utc};
use flate2::Compression;
use flate2::write::GzEncoder;
use std::io::Write;

use super::clock::FixedClock;
use super::record::{body_hash, split_line};
use super::verify::{Damage, DayRange, verify_app};
use super::*;
use crate::context::Context;

fn key() -> MacKey {
    MacKey::from_bytes([42; 32])
}

fn context(dir: &Path) -> Context {
    Context {
        vault_dir: dir.join("vault"),
        policy_dir: dir.join("policies"),
        home: dir.to_owned(),
    }
}

fn at(day: u32, hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 12, day, hour, 0, 0)
        .single()
        .unwrap()
}

fn open(context: &Context, app: &str, time: DateTime<Utc>) -> AuditLog {
    AuditLog::open_with_key(context, app, "run-1", key())
        .unwrap()
        .with_clock(Arc::new(FixedClock(time)))
        .with_fsync(false)
}

fn append_n(context: &Context, app: &str, time: DateTime<Utc>, count: u64) {
    let log = open(context, app, time);
    for index in 0..count {
        log.append(
            "API_CALL",
            Level::Info,
            Actor::App,
            serde_json::json!({ "n": index, "endpoint": "/v1/items" }),
        )
        .unwrap();
    }
}

fn day_file(context: &Context, app: &str, day: &str) -> PathBuf {
    context.audit_dir().join(app).join(format!("{day}.jsonl"))
}

fn lines(path: &Path) -> Vec<Vec<u8>> {
    let content = std::fs::read(path).unwrap();
    content
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn write_lines(path: &Path, lines: &[Vec<u8>]) {
    let mut content = Vec::new();
    for line in lines {
        content.extend_from_slice(line);
        content.push(b'\n');
    }
    std::fs::write(path, content).unwrap();
}

/// Verifies `app` and returns the first damage kind, or `None` when intact.
fn first_damage(context: &Context, app: &str) -> Option<(Damage, Option<usize>)> {
    let result = verify_app(&context.audit_dir(), app, &key(), &DayRange::default()).unwrap();
    let damage = result
        .findings
        .iter()
        .find(|finding| finding.kind.is_damage())
        .map(|finding| (finding.kind, finding.line));
    assert_eq!(
        result.intact,
        damage.is_none(),
        "intact flag disagrees with findings: {:?}",
        result.findings
    );
    damage
}

/// Rebuilds a line with `body`, re-linking nothing, and a MAC made without the key.
fn forge_line(body: &[u8]) -> Vec<u8> {
    let mut line = body.to_vec();
    line.extend_from_slice(format!(",\"mac\":\"{}\"}}", hex::encode(body_hash(body))).as_bytes());
    line
}

/// Replaces the `prev_hash` at the end of `body` with `prev`.
fn relink(body: &[u8], prev: &[u8; 32]) -> Vec<u8> {
    let mut body = body.to_vec();
    let start = body.len() - 65;
    body.splice(start..start + 64, hex::encode(prev).bytes());
    body
}

#[test]
fn untouched_log_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let context = context(dir.path());
    append_n(&context, "mail", at(4, 10), 5);
    assert_eq!(first_damage(&context, "mail"), None);
}

#[test]
fn record_with_null_field_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let context = context(dir.path());
    let log = open(&context, "mail", at(4, 10));
    log.append(
        "EMAIL_SENT",
        Level::Info,
        Actor::App,
        serde_json::json!({ "cc": null, "to": "a@example.com" }),
    )
    .unwrap();
    assert_eq!(first_damage(&context, "mail"), None);
}

#[test]
fn tamper_table_names_damage() {
    type Tamper = fn(&Context);
    let cases: Vec<(&str, Tamper, Damage)> = vec![
        (
            "one byte changed in a detail",
            |context| {
                let path = day_file(context, "mail", "20261204");
                let mut content = std::fs::read(&path).unwrap();
                let position = content
                    .windows(6)
                    .position(|window| window == b"/v1/it")
                    .unwrap();
                content[position + 1] = b'v';
                content[position + 2] = b'2';
                std::fs::write(&path, content).unwrap();
            },
            Damage::Changed,
        ),
        (
            "record removed in the middle",
            |context| {
                let path = day_file(context, "mail", "20261204");
                let mut all = lines(&path);
                all.remove(3);
                write_lines(&path, &all);
            },
            Damage::Deleted,
        ),
        (
            "two records swapped",
            |context| {
                let path = day_file(context, "mail", "20261204");
                let mut all = lines(&path);
                all.swap(2, 3);
                write_lines(&path, &all);
            },
            Damage::Reordered,
        ),
        (
            "record copied from another app",
            |context| {
                append_n(context, "budget", at(4, 10), 3);
                let path = day_file(context, "mail", "20261204");
                let other = lines(&day_file(context, "budget", "20261204"));
                let mut all = lines(&path);
                all.insert(3, other[2].clone());
                write_lines(&path, &all);
            },
            Damage::Inserted,
        ),
        (
            "forged record appended with plain hash",
            |context| {
                let path = day_file(context, "mail", "20261204");
                let mut all = lines(&path);
                let last = split_line(all.last().unwrap()).unwrap();
                let prev = body_hash(last.body);
                let body = format!(
                    "{{\"seq\":7,\"ts\":\"2026-12-04T11:00:00.000000Z\",\"app\":\"mail\",\"run_id\":\"x\",\"event\":\"API_CALL\",\"level\":\"INFO\",\"actor\":\"app\",\"details\":{{}},\"prev_hash\":\"{}\"",
                    hex::encode(prev)
                );
                all.push(forge_line(body.as_bytes()));
                write_lines(&path, &all);
            },
            Damage::Inserted,
        ),
        (
            "whole chain recomputed without the key",
            |context| {
                let path = day_file(context, "mail", "20261204");
                let mut prev = [0u8; 32];
                let mut rewritten = Vec::new();
                for line in lines(&path) {
                    let body = split_line(&line).unwrap().body.to_vec();
                    let body = String::from_utf8(body)
                        .unwrap()
                        .replace("/v1/items", "/v9/items");
                    let body = relink(body.as_bytes(), &prev);
                    prev = body_hash(&body);
                    rewritten.push(forge_line(&body));
                }
                write_lines(&path, &rewritten);
            },
            Damage::Forged,
        ),
    ];

    for (name, tamper, expected) in cases {
        let dir = tempfile::tempdir().unwrap();
        let context = context(dir.path());
        append_n(&context, "mail", at(4, 10), 6);
        assert_eq!(
            first_damage(&context, "mail"),
            None,
            "{name}: log should verify before tampering"
        );
        tamper(&context);
        let damage = first_damage(&context, "mail").map(|(kind, _)| kind);
        assert_eq!(damage, Some(expected), "{name}");
    }
}

#[test]
fn truncated_tail_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let context = context(dir.path());
    append_n(&context, "mail", at(4, 10), 5);
    let path = day_file(&context, "mail", "20261204");
    let all = lines(&path);
    write_lines(&path, &all[..all.len() - 2]);
    assert_eq!(
        first_damage(&context, "mail").map(|(kind, _)| kind),
        Some(Damage::Truncated)
    );
}

#[test]
fn emptied_file_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let context = context(dir.path());
    append_n(&context, "mail", at(4, 10), 5);
    std::fs::write(day_file(&context, "mail", "20261204"), b"").unwrap();
    assert_eq!(
        first_damage(&context, "mail").map(|(kind, _)| kind),
        Some(Damage::Truncated)
    );
}

#[test]
fn deleted_file_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let context = context(dir.path());
    append_n(&context, "mail", at(4, 10), 5);
    std::fs::remove_file(day_file(&context, "mail", "20261204")).unwrap();
    assert_eq!(
        first_damage(&context, "mail").map(|(kind, _)| kind),
        Some(Damage::DeletedFile)
    );
}

#[test]
fn missing_anchor_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let context = context(dir.path());
    append_n(&context, "mail", at(4, 10), 2);
    std::fs::remove_file(context.audit_dir().join("mail.head")).unwrap();
    assert_eq!(
        first_damage(&context, "mail").map(|(kind, _)| kind),
        Some(Damage::MissingAnchor)
    );
}

#[test]
fn torn_tail_is_not_tampering() {
    let dir = tempfile::tempdir().unwrap();
    let context = context(dir.path());
    append_n(&context, "mail", at(4, 10), 3);
    let path = day_file(&context, "mail", "20261204");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    file.write_all(b"{\"seq\":5,\"ts\":\"2026-12-04T10:")
        .unwrap();
    drop(file);

    let result = verify_app(&context.audit_dir(), "mail", &key(), &DayRange::default()).unwrap();
    assert!(result.intact, "{:?}", result.findings);
    assert_eq!(result.findings[0].kind, Damage::Torn);
    assert_eq!(result.findings[0].line, Some(5));

    append_n(&context, "mail", at(4, 11), 1);
    let content = std::fs::read(&path).unwrap();
    assert!(content.ends_with(b"}\n"));
    let all = lines(&path);
    assert_eq!(
        all.len(),
        6,
        "the record after the torn line starts a new line"
    );
    let result = verify_app(&context.audit_dir(), "mail", &key(), &DayRange::default()).unwrap();
    assert!(result.intact, "{:?}", result.findings);
    assert_eq!(result.findings.len(), 1);
    assert_eq!(result.findings[0].kind, Damage::Torn);
    assert_eq!(result.findings[0].line, Some(5));
    assert_eq!(result.last_seq, Some(5));
}

#[test]
fn rotation_across_days_verifies() {
    let dir = tempfile::tempdir().unwrap();
    let context = context(dir.path());
    append_n(&context, "mail", at(1, 23), 3);
    append_n(&context, "mail", at(2, 1), 3);
    append_n(&context, "mail", at(3, 1), 3);

    let app_dir = context.audit_dir().join("mail");
    assert!(app_dir.join("20261201.jsonl.gz").exists());
    assert!(app_dir.join("20261202.jsonl.gz").exists());
    assert!(app_dir.join("20261203.jsonl").exists());
    assert!(!app_dir.join("20261201.jsonl").exists());

    let result = verify_app(&context.audit_dir(), "mail", &key(), &DayRange::default()).unwrap();
    assert!(result.intact, "{:?}", result.findings);
    assert_eq!(result.files, 3);
    assert_eq!(
        result.last_seq,
        Some(12),
        "three records and one link record per day"
    );
}

#[test]
fn middle_day_file_deleted_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let context = context(dir.path());
    for day in 1..=3 {
        append_n(&context, "mail", at(day, 1), 2);
    }
    std::fs::remove_file(context.audit_dir().join("mail/20261202.jsonl.gz")).unwrap();
    assert_eq!(
        first_damage(&context, "mail").map(|(kind, _)| kind),
        Some(Damage::DeletedFile)
    );
}

#[test]
fn replaced_compressed_file_is_detected() {
    let dir = tempfile::tempdir().unwrap();
    let context = context(dir.path());
    for day in 1..=3 {
        append_n(&context, "mail", at(day, 1), 2);
    }
    let path = context.audit_dir().join("mail/20261202.jsonl.gz");
    let original = super::files::read_day(&super::files::DayFile {
        day: "20261202".to_owned(),
        path: path.clone(),
        compressed: true,
    })
    .unwrap();
    let changed = String::from_utf8(original)
        .unwrap()
        .replace("/v1/items", "/v1/other");
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(changed.as_bytes()).unwrap();
    std::fs::write(&path, encoder.finish().unwrap()).unwrap();
    assert_eq!(
        first_damage(&context, "mail").map(|(kind, _)| kind),
        Some(Damage::Changed)
    );
}

#[test]
fn verify_with_start_trusts_first_link() {
    let dir = tempfile::tempdir().unwrap();
    let context = context(dir.path());
    for day in 1..=3 {
        append_n(&context, "mail", at(day, 1), 2);
    }
    let range = DayRange {
        start: Some("20261202".to_owned()),
        end: None,
    };
    let result = verify_app(&context.audit_dir(), "mail", &key(), &range).unwrap();
    assert!(result.intact, "{:?}", result.findings);
    assert_eq!(result.files, 2);
}

#[test]
fn wrong_key_fails_verification() {
    let dir = tempfile::tempdir().unwrap();
    let context = context(dir.path());
    append_n(&context, "mail", at(4, 10), 2);
    let other = MacKey::from_bytes([1; 32]);
    let result = verify_app(&context.audit_dir(), "mail", &other, &DayRange::default()).unwrap();
    assert!(!result.intact);
}

#[test]
fn critical_record_reaches_critical_log_and_alert() {
    let dir = tempfile::tempdir().unwrap();
    let context = context(dir.path());
    std::fs::create_dir_all(&context.vault_dir).unwrap();
    let alert_out = dir.path().join("alert.out");
    let config = format!(
        "audit:\n  alert_command: \"cat > {}\"\n",
        alert_out.display()
    );
    std::fs::write(context.vault_dir.join("config.yaml"), config).unwrap();

    let log = open(&context, "mail", at(4, 10));
    log.append(
        "SECURITY_VIOLATION",
        Level::Critical,
        Actor::Supervisor,
        serde_json::json!({"syscall": "ptrace"}),
    )
    .unwrap();
    log.wait_for_alerts();

    let critical =
        std::fs::read_to_string(context.audit_dir().join("critical_events.log")).unwrap();
    assert!(critical.contains("SECURITY_VIOLATION"));
    let alert = std::fs::read_to_string(&alert_out).unwrap();
    assert!(alert.contains("\"syscall\":\"ptrace\""));
}

#[test]
fn failing_alert_command_is_logged() {
    let dir = tempfile::tempdir().unwrap();
    let context = context(dir.path());
    std::fs::create_dir_all(&context.vault_dir).unwrap();
    std::fs::write(
        context.vault_dir.join("config.yaml"),
        "audit:\n  alert_command: \"exit 9\"\n",
    )
    .unwrap();

    let log = open(&context, "mail", at(4, 10));
    log.append(
        "SECURITY_VIOLATION",
        Level::Critical,
        Actor::Supervisor,
        serde_json::json!({}),
    )
    .unwrap();
    log.wait_for_alerts();

    let content = std::fs::read_to_string(day_file(&context, "mail", "20261204")).unwrap();
    assert!(content.contains("\"event\":\"ALERT_FAILED\""));
    assert!(content.contains("exit status: 9"));
    assert_eq!(first_damage(&context, "mail"), None);
}

#[test]
fn torn_first_day_write_is_torn() {
    let dir = tempfile::tempdir().unwrap();
    let context = context(dir.path());
    append_n(&context, "mail", at(3, 10), 2);

    // A crash cut the first write of the next day's file short.
    let path = day_file(&context, "mail", "20261204");
    std::fs::write(&path, b"{\"seq\":4,\"ts\":\"2026-12-04T0").unwrap();
    append_n(&context, "mail", at(4, 10), 1);

    let all = lines(&path);
    assert_eq!(all.len(), 3, "torn fragment, link record, record");
    assert!(String::from_utf8_lossy(&all[1]).contains("\"previous_day\":\"20261203\""));
    let result = verify_app(&context.audit_dir(), "mail", &key(), &DayRange::default()).unwrap();
    assert!(result.intact, "{:?}", result.findings);
    assert_eq!(result.findings.len(), 1);
    assert_eq!(result.findings[0].kind, Damage::Torn);
    assert_eq!(result.findings[0].line, Some(1));
}

#[test]
fn append_after_emptied_file_still_shows_loss() {
    let dir = tempfile::tempdir().unwrap();
    let context = context(dir.path());
    append_n(&context, "mail", at(3, 10), 2);
    append_n(&context, "mail", at(4, 10), 3);
    std::fs::write(day_file(&context, "mail", "20261204"), b"").unwrap();
    append_n(&context, "mail", at(4, 11), 1);
    assert_eq!(
        first_damage(&context, "mail").map(|(kind, _)| kind),
        Some(Damage::Deleted)
    );
}

#[test]
fn concurrent_writers_never_interleave() {
    let dir = tempfile::tempdir().unwrap();
    let context = context(dir.path());
    let threads: Vec<_> = (0..4)
        .map(|writer| {
            let context = context.clone();
            std::thread::spawn(move || {
                // Each writer opens its own log, so each takes the lock through its own file.
                let log = open(&context, "load", at(4, 10));
                let padding = "z".repeat(8 * 1024);
                for n in 0..300 {
                    let details = serde_json::json!({ "writer": writer, "n": n, "pad": padding });
                    log.append("API_CALL", Level::Info, Actor::App, details)
                        .unwrap();
                }
            })
        })
        .collect();
    for thread in threads {
        thread.join().unwrap();
    }

    let all = lines(&day_file(&context, "load", "20261204"));
    assert_eq!(all.len(), 1201, "one link record and 1,200 records");
    for line in &all {
        assert!(
            serde_json::from_slice::<Record>(line).is_ok(),
            "a line is not a whole record"
        );
    }
    assert_eq!(first_damage(&context, "load"), None);
}

#[test]
fn append_all_chains_records() {
    let dir = tempfile::tempdir().unwrap();
    let context = context(dir.path());
    append_n(&context, "batch", at(4, 9), 2);
    let log = open(&context, "batch", at(4, 10));
    let seqs = log
        .append_all(&[
            (
                "RUN_END",
                Level::Info,
                Actor::Supervisor,
                serde_json::json!({ "exit_code": 0 }),
            ),
            (
                "CLEANUP",
                Level::Info,
                Actor::Supervisor,
                serde_json::json!({ "result": "removed" }),
            ),
        ])
        .unwrap();
    // The day file starts with its LOG_LINK record, so the two API_CALLs are 2 and 3.
    assert_eq!(seqs, vec![4, 5]);
    let written = lines(&day_file(&context, "batch", "20261204"));
    assert_eq!(written.len(), 5);
    assert!(String::from_utf8_lossy(&written[4]).contains("\"event\":\"CLEANUP\""));
    assert_eq!(first_damage(&context, "batch"), None);
}

#[test]
fn append_all_writes_nothing_for_bad_event() {
    let dir = tempfile::tempdir().unwrap();
    let context = context(dir.path());
    append_n(&context, "batch", at(4, 9), 1);
    let log = open(&context, "batch", at(4, 10));
    let result = log.append_all(&[
        (
            "RUN_END",
            Level::Info,
            Actor::Supervisor,
            serde_json::json!({}),
        ),
        (
            "not valid",
            Level::Info,
            Actor::Supervisor,
            serde_json::json!({}),
        ),
    ]);
    assert!(result.is_err());
    assert_eq!(lines(&day_file(&context, "batch", "20261204")).len(), 2);
    assert_eq!(first_damage(&context, "batch"), None);
}
