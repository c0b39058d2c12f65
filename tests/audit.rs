//! The audit log through the real binary: tamper cases, truncation, torn
//! lines, concurrent writers, rotation across a date change, search,
//! reports, tail and CRITICAL alerts. Each test uses its own vault in a
//! temporary directory, initialised with a key file.

// A panic in a test helper is a test failure with its location.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use flate2::Compression;
use flate2::read::MultiGzDecoder;
use flate2::write::GzEncoder;
use sha2::{Digest, Sha256};

const BIN: &str = env!("CARGO_BIN_EXE_safe-exec");

/// A temporary vault and policy directory.
struct Env {
    dir: tempfile::TempDir,
}

impl Env {
    /// Creates the directories and initialises the vault with a key file.
    fn new() -> Self {
        let env = Self::uninitialised();
        let key_file = env.dir.path().join("master.key");
        let output = env.run(&[
            "init",
            "--key-backend",
            "file",
            "--key-file",
            key_file.to_str().unwrap(),
        ]);
        assert!(
            output.status.success(),
            "init failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        env
    }

    fn uninitialised() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("policies")).unwrap();
        Self { dir }
    }

    fn vault(&self) -> PathBuf {
        self.dir.path().join("vault")
    }

    fn audit(&self) -> PathBuf {
        self.vault().join("audit")
    }

    fn day_file(&self, app: &str, day: &str) -> PathBuf {
        self.audit().join(app).join(format!("{day}.jsonl"))
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command
            .arg("--vault")
            .arg(self.vault())
            .arg("--policy-dir")
            .arg(self.dir.path().join("policies"))
            .args(args)
            .env("HOME", self.dir.path())
            .env_remove("SAFE_EXEC_ALERT_COMMAND")
            .env_remove("RUST_LOG");
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).stdin(Stdio::null()).output().unwrap()
    }

    /// Appends one record per event line through `audit log --stdin` and returns the sequence numbers printed.
    fn log_stdin(&self, app: &str, now: Option<&str>, events: &str) -> Vec<u64> {
        let mut args = vec!["audit", "log", "--app", app, "--stdin", "--no-fsync"];
        if let Some(now) = now {
            args.extend(["--now", now]);
        }
        let mut child = self
            .command(&args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(events.as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "audit log failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8(output.stdout)
            .unwrap()
            .lines()
            .map(|line| line.parse().unwrap())
            .collect()
    }

    /// Appends `count` API_CALL records to `app` at `now`.
    fn log_n(&self, app: &str, now: &str, count: usize) -> Vec<u64> {
        let events: String = (0..count).map(|n| format!("{{\"event\":\"API_CALL\",\"details\":{{\"n\":{n},\"endpoint\":\"/v1/items\"}}}}\n")).collect();
        self.log_stdin(app, Some(now), &events)
    }

    /// Runs `audit verify --json` and returns the exit code and the document.
    fn verify(&self, extra: &[&str]) -> (i32, serde_json::Value) {
        let mut args = vec!["audit", "verify", "--json"];
        args.extend_from_slice(extra);
        let output = self.run(&args);
        let document = serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
            panic!(
                "verify printed no JSON ({err}): {}",
                String::from_utf8_lossy(&output.stderr)
            )
        });
        (output.status.code().unwrap(), document)
    }

    /// Returns the kind of the first damage `verify` names for `app`, or `None` when intact.
    fn first_damage(&self, app: &str) -> Option<String> {
        let (code, document) = self.verify(&["--app", app]);
        let findings = document["apps"][0]["findings"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let damage = findings
            .iter()
            .find(|finding| finding["kind"] != "torn")
            .map(|finding| finding["kind"].as_str().unwrap().to_owned());
        assert_eq!(
            code == 0,
            damage.is_none(),
            "exit code {code} disagrees with findings {findings:?}"
        );
        damage
    }
}

const DAY: &str = "20261204";
const NOW: &str = "2026-12-04T10:00:00Z";

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

/// Returns the part of a line the hash covers: everything before `,"mac":"`.
fn body(line: &[u8]) -> &[u8] {
    &line[..line.len() - 74]
}

fn plain_hash(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// Builds a line from `body` with a made-up MAC, as someone without the key would.
fn forged(body: &[u8]) -> Vec<u8> {
    let mut line = body.to_vec();
    line.extend_from_slice(format!(",\"mac\":\"{}\"}}", plain_hash(body)).as_bytes());
    line
}

fn relink(body: &[u8], prev: &str) -> Vec<u8> {
    let mut body = body.to_vec();
    let start = body.len() - 65;
    body.splice(start..start + 64, prev.bytes());
    body
}

fn gzip(content: &[u8]) -> Vec<u8> {
    let mut encoder = GzEncoder::new(Vec::new(), Compression::default());
    encoder.write_all(content).unwrap();
    encoder.finish().unwrap()
}

fn gunzip(path: &Path) -> Vec<u8> {
    let mut content = Vec::new();
    MultiGzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut content)
        .unwrap();
    content
}

#[test]
fn verify_passes_on_untouched_log() {
    let env = Env::new();
    assert_eq!(
        env.log_n("mail", NOW, 5),
        vec![2, 3, 4, 5, 6],
        "the day file opens with a LOG_LINK record"
    );
    assert_eq!(env.first_damage("mail"), None);

    let output = env.run(&["audit", "verify", "--app", "mail"]);
    assert!(output.status.success());
    assert!(String::from_utf8_lossy(&output.stdout).contains("mail: intact, 6 records"));
}

#[test]
fn c15_truncated_log_is_detected() {
    type Damage = fn(&Path);
    let cases: [(&str, Damage, &str); 3] = [
        (
            "last two lines deleted",
            |path| {
                let all = lines(path);
                write_lines(path, &all[..all.len() - 2]);
            },
            "truncated",
        ),
        (
            "file emptied",
            |path| std::fs::write(path, b"").unwrap(),
            "truncated",
        ),
        (
            "file deleted",
            |path| std::fs::remove_file(path).unwrap(),
            "deleted_file",
        ),
    ];
    for (name, damage, expected) in cases {
        let env = Env::new();
        env.log_n("mail", NOW, 5);
        assert_eq!(env.first_damage("mail"), None, "{name}: untouched log");
        damage(&env.day_file("mail", DAY));
        assert_eq!(
            env.first_damage("mail").as_deref(),
            Some(expected),
            "{name}"
        );
    }
}

#[test]
fn c15_record_with_null_field_verifies() {
    let env = Env::new();
    let output = env.run(&[
        "audit",
        "log",
        "--app",
        "mail",
        "EMAIL_SENT",
        "--details-json",
        r#"{"to":"a@example.com","cc":null,"thread":null}"#,
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let content = std::fs::read_to_string(
        env.audit()
            .join("mail")
            .read_dir()
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path(),
    )
    .unwrap();
    assert!(content.contains("\"cc\":null"));
    assert_eq!(env.first_damage("mail"), None);
}

#[test]
fn c16_concurrent_writers_and_torn_line() {
    let env = Env::new();
    let padding = "x".repeat(8 * 1024);
    let events = |writer: usize| -> String {
        (0..2000).map(|n| format!("{{\"event\":\"API_CALL\",\"details\":{{\"writer\":{writer},\"n\":{n},\"pad\":\"{padding}\"}}}}\n")).collect()
    };

    let writers: Vec<std::thread::JoinHandle<Vec<u64>>> = (0..2)
        .map(|writer| {
            let input = events(writer);
            let mut child = env
                .command(&[
                    "audit",
                    "log",
                    "--app",
                    "load",
                    "--stdin",
                    "--no-fsync",
                    "--now",
                    NOW,
                ])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            let mut stdin = child.stdin.take().unwrap();
            std::thread::spawn(move || {
                stdin.write_all(input.as_bytes()).unwrap();
                drop(stdin);
                let output = child.wait_with_output().unwrap();
                assert!(output.status.success());
                String::from_utf8(output.stdout)
                    .unwrap()
                    .lines()
                    .map(|line| line.parse().unwrap())
                    .collect()
            })
        })
        .collect();
    let mut seqs: Vec<u64> = writers
        .into_iter()
        .flat_map(|writer| writer.join().unwrap())
        .collect();
    seqs.sort_unstable();
    assert_eq!(
        seqs,
        (2..=4001).collect::<Vec<u64>>(),
        "every record got its own sequence number"
    );

    let path = env.day_file("load", DAY);
    let all = lines(&path);
    assert_eq!(all.len(), 4001, "one LOG_LINK record and 4000 records");
    for (index, line) in all.iter().enumerate() {
        let record: serde_json::Value = serde_json::from_slice(line)
            .unwrap_or_else(|err| panic!("line {} is not a whole record: {err}", index + 1));
        if index > 0 {
            assert_eq!(
                record["details"]["pad"].as_str().unwrap().len(),
                padding.len(),
                "line {}",
                index + 1
            );
        }
    }
    assert_eq!(env.first_damage("load"), None);

    // A crash in the middle of a write leaves half a line at the end.
    let last = all.last().unwrap();
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    file.write_all(&last[..last.len() / 2]).unwrap();
    drop(file);
    let (code, document) = env.verify(&["--app", "load"]);
    assert_eq!(code, 0, "a torn tail is not tampering: {document}");
    assert_eq!(document["apps"][0]["findings"][0]["kind"], "torn");
    assert_eq!(document["apps"][0]["findings"][0]["line"], 4002);

    env.log_n("load", NOW, 1);
    let content = std::fs::read(&path).unwrap();
    let reread: Vec<&[u8]> = content.split(|&b| b == b'\n').collect();
    assert_eq!(
        reread.len(),
        4004,
        "the torn line, then the new record on its own line, then the final newline"
    );
    assert!(
        serde_json::from_slice::<serde_json::Value>(reread[4002]).is_ok(),
        "the next record starts on a new line"
    );

    let (code, document) = env.verify(&["--app", "load"]);
    assert_eq!(code, 0, "{document}");
    let findings = document["apps"][0]["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "{findings:?}");
    assert_eq!(findings[0]["kind"], "torn");
    assert_eq!(findings[0]["line"], 4002);
    assert_eq!(findings[0]["file"], format!("load/{DAY}.jsonl"));

    let output = env.run(&["audit", "verify", "--app", "load"]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.contains(&format!("torn line at load/{DAY}.jsonl:4002")),
        "{text}"
    );
    assert!(!text.contains("DAMAGED"), "{text}");
}

#[test]
fn tamper_table_names_each_damage() {
    type Tamper = fn(&Env);
    let cases: Vec<(&str, Tamper, &str)> = vec![
        (
            "one byte changed in a detail",
            |env| {
                let path = env.day_file("mail", DAY);
                let content =
                    std::fs::read_to_string(&path)
                        .unwrap()
                        .replacen("/v1/items", "/v2/items", 1);
                std::fs::write(&path, content).unwrap();
            },
            "changed",
        ),
        (
            "record removed in the middle",
            |env| {
                let path = env.day_file("mail", DAY);
                let mut all = lines(&path);
                all.remove(3);
                write_lines(&path, &all);
            },
            "deleted",
        ),
        (
            "two records swapped",
            |env| {
                let path = env.day_file("mail", DAY);
                let mut all = lines(&path);
                all.swap(2, 3);
                write_lines(&path, &all);
            },
            "reordered",
        ),
        (
            "record copied from another app's log",
            |env| {
                env.log_n("budget", NOW, 4);
                let copied = lines(&env.day_file("budget", DAY))[3].clone();
                let path = env.day_file("mail", DAY);
                let mut all = lines(&path);
                all.insert(3, copied);
                write_lines(&path, &all);
            },
            "inserted",
        ),
        (
            "forged record appended with a plain hash",
            |env| {
                let path = env.day_file("mail", DAY);
                let mut all = lines(&path);
                let prev = plain_hash(body(all.last().unwrap()));
                let forged_body = format!(
                    r#"{{"seq":8,"ts":"2026-12-04T11:00:00.000000Z","app":"mail","run_id":"x","event":"API_CALL","level":"INFO","actor":"app","details":{{}},"prev_hash":"{prev}""#
                );
                all.push(forged(forged_body.as_bytes()));
                write_lines(&path, &all);
            },
            "inserted",
        ),
        (
            "whole chain recomputed without the key",
            |env| {
                let path = env.day_file("mail", DAY);
                let mut prev = "0".repeat(64);
                let mut rewritten = Vec::new();
                for line in lines(&path) {
                    let text = String::from_utf8(body(&line).to_vec())
                        .unwrap()
                        .replace("/v1/items", "/v9/items");
                    let new_body = relink(text.as_bytes(), &prev);
                    prev = plain_hash(&new_body);
                    rewritten.push(forged(&new_body));
                }
                write_lines(&path, &rewritten);
            },
            "forged",
        ),
    ];

    for (name, tamper, expected) in cases {
        let env = Env::new();
        env.log_n("mail", NOW, 6);
        assert_eq!(env.first_damage("mail"), None, "{name}: before tampering");
        tamper(&env);
        assert_eq!(
            env.first_damage("mail").as_deref(),
            Some(expected),
            "{name}"
        );
    }
}

/// Writes two records on each of three days, so two compressed files and one plain file exist.
fn three_days(env: &Env) {
    for now in [
        "2026-12-01T12:00:00Z",
        "2026-12-02T12:00:00Z",
        "2026-12-03T12:00:00Z",
    ] {
        env.log_n("mail", now, 2);
    }
}

#[test]
fn tamper_table_day_files() {
    let env = Env::new();
    three_days(&env);
    std::fs::remove_file(env.audit().join("mail/20261202.jsonl.gz")).unwrap();
    assert_eq!(
        env.first_damage("mail").as_deref(),
        Some("deleted_file"),
        "middle day file deleted"
    );

    let env = Env::new();
    three_days(&env);
    let path = env.audit().join("mail/20261202.jsonl.gz");
    let changed = String::from_utf8(gunzip(&path))
        .unwrap()
        .replace("/v1/items", "/v1/other");
    std::fs::write(&path, gzip(changed.as_bytes())).unwrap();
    assert_eq!(
        env.first_damage("mail").as_deref(),
        Some("changed"),
        "compressed file replaced"
    );

    let env = Env::new();
    three_days(&env);
    std::fs::write(env.audit().join("mail/20261201.jsonl.gz"), b"not gzip").unwrap();
    assert_eq!(
        env.first_damage("mail").as_deref(),
        Some("unreadable"),
        "compressed file replaced by garbage"
    );
}

#[test]
fn missing_or_edited_anchor_is_detected() {
    let env = Env::new();
    env.log_n("mail", NOW, 2);
    let head = env.audit().join("mail.head");
    let anchor = std::fs::read_to_string(&head).unwrap();
    std::fs::write(&head, anchor.replace("\"seq\":3", "\"seq\":2")).unwrap();
    assert_eq!(env.first_damage("mail").as_deref(), Some("anchor_changed"));

    std::fs::remove_file(&head).unwrap();
    assert_eq!(env.first_damage("mail").as_deref(), Some("missing_anchor"));
}

#[test]
fn rotation_across_date_change_verifies() {
    let env = Env::new();
    env.log_n("mail", "2026-12-01T23:59:00Z", 3);
    env.log_n("mail", "2026-12-02T00:01:00Z", 3);

    let app_dir = env.audit().join("mail");
    assert!(
        app_dir.join("20261201.jsonl.gz").exists(),
        "the writer compresses the previous day"
    );
    assert!(!app_dir.join("20261201.jsonl").exists());
    let second = lines(&app_dir.join("20261202.jsonl"));
    let link: serde_json::Value = serde_json::from_slice(&second[0]).unwrap();
    assert_eq!(link["event"], "LOG_LINK");
    assert_eq!(link["details"]["previous_day"], "20261201");
    let first = gunzip(&app_dir.join("20261201.jsonl.gz"));
    let last_of_first = first
        .split(|&b| b == b'\n')
        .filter(|line| !line.is_empty())
        .last()
        .unwrap();
    assert_eq!(
        link["prev_hash"],
        plain_hash(body(last_of_first)),
        "the link record chains to the previous file's last record"
    );

    // A day with no appends: `audit rotate` compresses the last file on its own.
    let output = env.run(&["audit", "rotate", "--now", "2026-12-03T08:00:00Z"]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(app_dir.join("20261202.jsonl.gz").exists());
    env.log_n("mail", "2026-12-04T08:00:00Z", 1);

    let (code, document) = env.verify(&[]);
    assert_eq!(code, 0, "{document}");
    assert_eq!(document["apps"][0]["files"], 3);
    assert_eq!(document["apps"][0]["last_seq"], 10);

    let (code, document) = env.verify(&["--start", "20261202", "--end", "20261202"]);
    assert_eq!(code, 0, "{document}");
    assert_eq!(document["apps"][0]["files"], 1);

    let output = env.run(&[
        "audit", "search", "--app", "mail", "--json", "--limit", "100",
    ]);
    let records: Vec<serde_json::Value> = output
        .stdout
        .lines()
        .map(|line| serde_json::from_str(&line.unwrap()).unwrap())
        .collect();
    assert_eq!(
        records.len(),
        7,
        "search reads compressed and plain files and leaves out LOG_LINK records"
    );
}

#[test]
fn eight_writers_with_kill_survive() {
    let env = Env::new();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    println!("random seed {seed}");
    let mut state = seed | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };

    let padding = "y".repeat(300);
    let mut children: Vec<(usize, Child)> = Vec::new();
    for writer in 0..8 {
        let mut child = env
            .command(&[
                "audit",
                "log",
                "--app",
                "load",
                "--stdin",
                "--no-fsync",
                "--now",
                NOW,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let input: String = (0..2000).map(|n| format!("{{\"event\":\"API_CALL\",\"details\":{{\"writer\":{writer},\"n\":{n},\"pad\":\"{padding}\"}}}}\n")).collect();
        let mut stdin = child.stdin.take().unwrap();
        std::thread::spawn(move || {
            // A killed writer closes the pipe; the error is expected then.
            let _ = stdin.write_all(input.as_bytes());
        });
        children.push((writer, child));
    }

    // Read each writer's acknowledged sequence numbers; kill three chosen writers after a random number of records.
    let mut victims: Vec<usize> = Vec::new();
    while victims.len() < 3 {
        let writer = (next() % 8) as usize;
        if !victims.contains(&writer) {
            victims.push(writer);
        }
    }
    let (sender, receiver) = mpsc::channel();
    for (writer, child) in &mut children {
        let stdout = child.stdout.take().unwrap();
        let sender = sender.clone();
        let writer = *writer;
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let _ = sender.send((writer, line.parse::<u64>().unwrap()));
            }
        });
    }
    drop(sender);

    let kill_after: Vec<u64> = victims.iter().map(|_| 100 + next() % 1500).collect();
    println!("killing writers {victims:?} after {kill_after:?} records");
    let mut acknowledged: Vec<Vec<u64>> = vec![Vec::new(); 8];
    let mut killed = vec![false; 8];
    while let Ok((writer, seq)) = receiver.recv_timeout(Duration::from_secs(120)) {
        acknowledged[writer].push(seq);
        if let Some(position) = victims.iter().position(|victim| *victim == writer) {
            if !killed[writer] && acknowledged[writer].len() as u64 >= kill_after[position] {
                let pid = nix::unistd::Pid::from_raw(children[writer].1.id() as i32);
                nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL).unwrap();
                killed[writer] = true;
            }
        }
    }
    for (writer, child) in &mut children {
        let status = child.wait().unwrap();
        if !killed[*writer] {
            assert!(status.success(), "writer {writer} failed: {status}");
            assert_eq!(
                acknowledged[*writer].len(),
                2000,
                "writer {writer} wrote every record"
            );
        }
    }

    let (code, document) = env.verify(&["--app", "load"]);
    assert_eq!(code, 0, "only torn tails are allowed: {document}");
    for finding in document["apps"][0]["findings"].as_array().unwrap() {
        assert_eq!(finding["kind"], "torn", "{finding}");
    }

    // Every acknowledged record is in the log, as written by its writer.
    let content = std::fs::read(env.day_file("load", DAY)).unwrap();
    let mut found = std::collections::HashMap::new();
    for line in content.split(|&b| b == b'\n') {
        if let Ok(record) = serde_json::from_slice::<serde_json::Value>(line) {
            found.insert(
                record["seq"].as_u64().unwrap(),
                record["details"]["writer"].as_u64(),
            );
        }
    }
    for (writer, seqs) in acknowledged.iter().enumerate() {
        for seq in seqs {
            assert_eq!(
                found.get(seq),
                Some(&Some(writer as u64)),
                "record {seq} of writer {writer} is missing"
            );
        }
    }
}

#[test]
fn search_filters_and_orders_newest_first() {
    let env = Env::new();
    let events = [
        r#"{"event":"EMAIL_SENT","details":{"to":"a@example.com"}}"#,
        r#"{"event":"EMAIL_BLOCKED","level":"WARNING","details":{"to":"b@example.com"}}"#,
        r#"{"event":"API_CALL"}"#,
        r#"{"event":"EMAIL_BLOCKED","level":"WARNING","details":{"to":"c@example.com"}}"#,
    ]
    .join("\n");
    env.log_stdin("mail", Some("2026-12-03T09:00:00Z"), &format!("{events}\n"));
    env.log_n("budget", "2026-12-04T09:00:00Z", 2);

    let search = |args: &[&str]| -> Vec<serde_json::Value> {
        let mut all = vec!["audit", "search", "--json"];
        all.extend_from_slice(args);
        let output = env.run(&all);
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        output
            .stdout
            .lines()
            .map(|line| serde_json::from_str(&line.unwrap()).unwrap())
            .collect()
    };

    let blocked = search(&["--event", "EMAIL_BLOCKED"]);
    assert_eq!(blocked.len(), 2);
    assert_eq!(blocked[0]["details"]["to"], "c@example.com", "newest first");

    assert_eq!(search(&["--level", "WARNING"]).len(), 2);
    assert_eq!(search(&["--app", "budget"]).len(), 2);
    assert_eq!(search(&["--limit", "1"]).len(), 1);
    assert_eq!(search(&["--limit", "1"])[0]["app"], "budget");
    assert_eq!(search(&["--since", "20261204"]).len(), 2);
    assert_eq!(search(&["--until", "20261203"]).len(), 4);
    assert_eq!(
        search(&["--period", "daily", "--now", "2026-12-04T12:00:00Z"]).len(),
        2
    );
    assert_eq!(
        search(&["--period", "weekly", "--now", "2026-12-04T12:00:00Z"]).len(),
        6
    );

    let run_id = blocked[0]["run_id"].as_str().unwrap().to_owned();
    assert_eq!(search(&["--run-id", &run_id]).len(), 4);

    let output = env.run(&["audit", "search", "--level", "LOUD"]);
    assert_eq!(output.status.code(), Some(64));
}

#[test]
fn report_in_text_json_and_html() {
    let env = Env::new();
    let events = [
        r#"{"event":"RUN_START"}"#,
        r#"{"event":"CREDENTIAL_ACCESS","details":{"service":"weekly-budget","key":"YNAB_API_KEY","purpose":"injection"}}"#,
        r#"{"event":"API_RATE_LIMIT","level":"WARNING","details":{"bucket":"ynab_api"}}"#,
        r#"{"event":"EMAIL_BLOCKED","level":"WARNING"}"#,
        r#"{"event":"AUTH_FAILURE","level":"WARNING"}"#,
        r#"{"event":"SECURITY_VIOLATION","level":"CRITICAL","details":{"syscall":"ptrace"}}"#,
        r#"{"event":"RUN_END","details":{"exit_code":3}}"#,
    ]
    .join("\n");
    env.log_stdin(
        "budget",
        Some("2026-12-03T09:00:00Z"),
        &format!("{events}\n"),
    );

    let output = env.run(&[
        "audit",
        "report",
        "--app",
        "all",
        "--period",
        "weekly",
        "--json",
        "--now",
        "2026-12-04T12:00:00Z",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["runs"][0]["exit_status"], 3);
    assert_eq!(report["credential_accesses"][0]["key"], "YNAB_API_KEY");
    assert_eq!(report["rate_limit_denials"], 1);
    assert_eq!(report["emails_blocked"], 1);
    assert_eq!(report["security_violations"], 1);
    assert_eq!(report["events_by_level"]["CRITICAL"], 1);
    assert_eq!(report["metrics"]["integrity"], "intact");
    assert_eq!(report["metrics"]["credentials_needing_rotation"], 0);
    assert_eq!(
        report["metrics"]["failed_authentications_per_day"].as_f64(),
        Some(1.0 / 7.0)
    );

    let output = env.run(&[
        "audit",
        "report",
        "--period",
        "weekly",
        "--now",
        "2026-12-04T12:00:00Z",
    ]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(text.contains("Security metrics"), "{text}");
    assert!(
        text.contains("Audit log integrity                intact"),
        "{text}"
    );

    let output = env.run(&[
        "audit",
        "report",
        "--format",
        "html",
        "--period",
        "weekly",
        "--now",
        "2026-12-04T12:00:00Z",
    ]);
    let html = String::from_utf8_lossy(&output.stdout);
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert!(html.contains("<svg"), "the chart is inline SVG");
    assert!(
        !html.contains("http://")
            || !html
                .replace("http://www.w3.org/2000/svg", "")
                .contains("http://"),
        "no network references"
    );
    assert!(!html.contains("https://"));

    // After damage the report shows the log as damaged.
    std::fs::write(env.audit().join("budget.head"), b"{}").unwrap();
    let output = env.run(&["audit", "report", "--json", "--now", "2026-12-04T12:00:00Z"]);
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["metrics"]["integrity"], "damaged");
}

#[test]
fn tail_follows_across_rotation() {
    let env = Env::new();
    env.log_n("mail", "2026-12-01T23:00:00Z", 3);

    let mut child = env
        .command(&["audit", "tail", "-f", "--app", "mail", "-n", "2"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (sender, receiver) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if sender.send(line).is_err() {
                break;
            }
        }
    });
    let wait_line = || {
        receiver
            .recv_timeout(Duration::from_secs(30))
            .expect("tail printed no line in 30 s")
    };

    assert!(wait_line().contains("#3 "), "the last two records first");
    assert!(wait_line().contains("#4 "));

    env.log_stdin(
        "mail",
        Some("2026-12-01T23:30:00Z"),
        "{\"event\":\"EMAIL_SENT\"}\n",
    );
    assert!(wait_line().contains("EMAIL_SENT"));

    // The next day: the old file is compressed and a new one starts.
    env.log_stdin(
        "mail",
        Some("2026-12-02T00:30:00Z"),
        "{\"event\":\"SMS_SENT\"}\n",
    );
    assert!(env.audit().join("mail/20261201.jsonl.gz").exists());
    assert!(
        wait_line().contains("SMS_SENT"),
        "tail moved on to the new day file"
    );

    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn critical_record_reaches_log_and_alert_command() {
    let env = Env::new();
    let alert_out = env.dir.path().join("alert.out");
    let output = env
        .command(&[
            "audit",
            "log",
            "--app",
            "mail",
            "SECURITY_VIOLATION",
            "--level",
            "CRITICAL",
            "--detail",
            "syscall=ptrace",
        ])
        .env(
            "SAFE_EXEC_ALERT_COMMAND",
            format!("cat > {}", alert_out.display()),
        )
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let critical = std::fs::read_to_string(env.audit().join("critical_events.log")).unwrap();
    assert!(critical.contains("\"event\":\"SECURITY_VIOLATION\""));
    let alert = std::fs::read_to_string(&alert_out).unwrap();
    assert!(
        alert.contains("\"syscall\":\"ptrace\""),
        "the alert command gets the record on stdin"
    );
}

#[test]
fn failing_alert_command_is_logged_and_append_succeeds() {
    let env = Env::new();
    std::fs::write(
        env.vault().join("config.yaml"),
        "audit:\n  alert_command: \"exit 7\"\n",
    )
    .unwrap();
    let output = env.run(&[
        "audit",
        "log",
        "--app",
        "mail",
        "SECURITY_VIOLATION",
        "--level",
        "CRITICAL",
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    let output = env.run(&["audit", "search", "--event", "ALERT_FAILED", "--json"]);
    let record: serde_json::Value =
        serde_json::from_slice(output.stdout.lines().next().unwrap().unwrap().as_bytes()).unwrap();
    assert_eq!(record["level"], "WARNING");
    assert!(
        record["details"]["reason"]
            .as_str()
            .unwrap()
            .contains("exit status: 7")
    );
    assert_eq!(env.first_damage("mail"), None);
}

#[test]
fn audit_without_vault_asks_for_init() {
    let env = Env::uninitialised();
    let output = env.run(&["audit", "log", "--app", "mail", "API_CALL"]);
    assert_eq!(output.status.code(), Some(77));
    assert!(String::from_utf8_lossy(&output.stderr).contains("safe-exec init"));

    let output = env.run(&["audit", "verify"]);
    assert_eq!(output.status.code(), Some(77));
}

#[test]
fn invalid_arguments_are_usage_errors() {
    let env = Env::new();
    for args in [
        &["audit", "log", "--app", "../escape", "API_CALL"][..],
        &["audit", "log", "--app", "mail", "lower case"][..],
        &["audit", "log", "--app", "mail", "LOG_LINK"][..],
        &["audit", "verify", "--start", "2026-12-01"][..],
        &["audit", "report", "--period", "hourly"][..],
    ] {
        let output = env.run(args);
        assert_eq!(
            output.status.code(),
            Some(64),
            "{args:?}: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
}
