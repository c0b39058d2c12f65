//! The e-mail guard through `safe-exec guard email`: a table of messages with
//! the reasons each must produce, the `email_send` limit, the cache and the
//! audit records.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is the failure report.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

mod rate_support;

const BIN: &str = env!("CARGO_BIN_EXE_safe-exec");

const POLICY: &str = r#"version: 1
command: [/bin/true]
rate_limits:
  email_send: 1000/hour
email:
  thresholds: { 1: 0.95, 2: 0.80 }
  off_limits: ["sensitive@example.com", "*@lawfirm.example"]
  suspicious_patterns: ["project\\s+falcon"]
  cache_ttl: 1h
audit:
  log_all_sends: true
  store_drafts: true
"#;

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(policy: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("policies")).unwrap();
        std::fs::write(dir.path().join("policies/mail.yaml"), policy).unwrap();
        rate_support::init_vault(
            BIN,
            &dir.path().join("vault"),
            &dir.path().join("master.key"),
        );
        Self { dir }
    }

    fn vault(&self) -> PathBuf {
        self.dir.path().join("vault")
    }

    /// Runs `guard email --json` with `extra` arguments and `body` in a file.
    fn guard(&self, extra: &[&str], body: &str) -> (Output, serde_json::Value) {
        let body_file = self.dir.path().join("body.txt");
        std::fs::write(&body_file, body).unwrap();
        let output = Command::new(BIN)
            .args(["guard", "email", "--app", "mail", "--json", "--body-file"])
            .arg(&body_file)
            .args(extra)
            .arg("--vault")
            .arg(self.vault())
            .arg("--policy-dir")
            .arg(self.dir.path().join("policies"))
            .env_remove("SAFE_EXEC_TEST_CLOCK")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let decision = serde_json::from_slice(&output.stdout).unwrap_or(serde_json::Value::Null);
        (output, decision)
    }

    fn audit_records(&self) -> Vec<serde_json::Value> {
        rate_support::audit_records(&self.vault(), "mail")
    }
}

fn codes(decision: &serde_json::Value) -> Vec<String> {
    let mut codes: Vec<String> = decision["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .map(|reason| reason["code"].as_str().unwrap().to_owned())
        .collect();
    codes.sort();
    codes.dedup();
    codes
}

struct Case {
    name: &'static str,
    args: &'static [&'static str],
    subject: &'static str,
    body: &'static str,
    tier: &'static str,
    confidence: &'static str,
    expected: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        name: "clean message",
        args: &["--to", "alice@example.org"],
        subject: "Weekly report",
        body: "Hi Alice,\nthe weekly report is attached. See https://example.org/reports for older ones.\nBest, Sam",
        tier: "1",
        confidence: "0.99",
        expected: &[],
    },
    Case {
        name: "off-limits exact address",
        args: &["--to", "sensitive@example.com"],
        subject: "Hello",
        body: "Just checking in.",
        tier: "1",
        confidence: "0.99",
        expected: &["off_limits"],
    },
    Case {
        name: "off-limits domain in cc",
        args: &[
            "--to",
            "alice@example.org",
            "--cc",
            "counsel@lawfirm.example",
        ],
        subject: "Hello",
        body: "Just checking in.",
        tier: "1",
        confidence: "0.99",
        expected: &["off_limits"],
    },
    Case {
        name: "off-limits in uppercase with a display name",
        args: &["--to", "Sensitive Person <SENSITIVE@Example.COM>"],
        subject: "Hello",
        body: "Just checking in.",
        tier: "1",
        confidence: "0.99",
        expected: &["off_limits"],
    },
    Case {
        name: "off-limits in bcc",
        args: &[
            "--to",
            "alice@example.org",
            "--bcc",
            "partner@LawFirm.Example",
        ],
        subject: "Hello",
        body: "Just checking in.",
        tier: "1",
        confidence: "0.99",
        expected: &["off_limits"],
    },
    Case {
        name: "tier below threshold",
        args: &["--to", "alice@example.org"],
        subject: "Hello",
        body: "Just checking in.",
        tier: "1",
        confidence: "0.90",
        expected: &["below_threshold"],
    },
    Case {
        name: "tier two passes at its own threshold",
        args: &["--to", "alice@example.org"],
        subject: "Hello",
        body: "Just checking in.",
        tier: "2",
        confidence: "0.85",
        expected: &[],
    },
    Case {
        name: "tier without threshold",
        args: &["--to", "alice@example.org"],
        subject: "Hello",
        body: "Just checking in.",
        tier: "7",
        confidence: "0.99",
        expected: &["unknown_tier"],
    },
    Case {
        name: "password request",
        args: &["--to", "alice@example.org"],
        subject: "Account check",
        body: "Please reply with your password so I can finish the migration.",
        tier: "1",
        confidence: "0.99",
        expected: &["credential_request"],
    },
    Case {
        name: "one-time code request",
        args: &["--to", "alice@example.org"],
        subject: "Quick one",
        body: "Can you tell me the verification code you just got by SMS?",
        tier: "1",
        confidence: "0.99",
        expected: &["credential_request"],
    },
    Case {
        name: "gift card request",
        args: &["--to", "alice@example.org"],
        subject: "Favour",
        body: "I need you to buy five gift cards for the client event and send me the numbers.",
        tier: "1",
        confidence: "0.99",
        expected: &["gift_card_request"],
    },
    Case {
        name: "wire transfer request",
        args: &["--to", "alice@example.org"],
        subject: "Vendor change",
        body: "Wire $4,500 to the new bank account below by Friday.",
        tier: "1",
        confidence: "0.99",
        expected: &["wire_transfer_request"],
    },
    Case {
        name: "payment request",
        args: &["--to", "alice@example.org"],
        subject: "Invoice 2291",
        body: "Could you pay invoice 2291 this week?",
        tier: "1",
        confidence: "0.99",
        expected: &["payment_request"],
    },
    Case {
        name: "urgency with payment",
        args: &["--to", "alice@example.org"],
        subject: "URGENT",
        body: "The invoice is overdue and must be cleared immediately.",
        tier: "1",
        confidence: "0.99",
        expected: &["urgent_payment"],
    },
    Case {
        name: "urgency without payment",
        args: &["--to", "alice@example.org"],
        subject: "Urgent: meeting moved",
        body: "The meeting moved to 3 pm.",
        tier: "1",
        confidence: "0.99",
        expected: &[],
    },
    Case {
        name: "link to an IP literal",
        args: &["--to", "alice@example.org"],
        subject: "Shared folder",
        body: "The files are at http://203.0.113.7/share/q3 now.",
        tier: "1",
        confidence: "0.99",
        expected: &["ip_literal_link"],
    },
    Case {
        name: "punycode link",
        args: &["--to", "alice@example.org"],
        subject: "Offer",
        body: "See https://xn--pple-43d.com/offer for details.",
        tier: "1",
        confidence: "0.99",
        expected: &["punycode_domain"],
    },
    Case {
        name: "look-alike of the recipient's domain",
        args: &["--to", "alice@example.org"],
        subject: "Account",
        body: "Review your settings at https://examp1e.org/settings today.",
        tier: "1",
        confidence: "0.99",
        expected: &["lookalike_domain"],
    },
    Case {
        name: "policy pattern",
        args: &["--to", "alice@example.org"],
        subject: "Notes on Project   Falcon",
        body: "Draft attached.",
        tier: "1",
        confidence: "0.99",
        expected: &["policy_pattern"],
    },
    Case {
        name: "every reason at once",
        args: &["--to", "alice@example.org", "--bcc", "x@lawfirm.example"],
        subject: "Urgent payment",
        body: "Please reply with your password. Details at http://198.51.100.2/pay.",
        tier: "1",
        confidence: "0.5",
        expected: &[
            "below_threshold",
            "credential_request",
            "ip_literal_link",
            "off_limits",
            "urgent_payment",
        ],
    },
];

#[test]
fn guard_case_table() {
    let setup = Setup::new(POLICY);
    for case in CASES {
        let mut args: Vec<&str> = case.args.to_vec();
        args.extend([
            "--subject",
            case.subject,
            "--tier",
            case.tier,
            "--confidence",
            case.confidence,
        ]);
        let (output, decision) = setup.guard(&args, case.body);
        let expected: Vec<String> = case
            .expected
            .iter()
            .map(|code| (*code).to_owned())
            .collect();
        assert_eq!(
            codes(&decision),
            expected,
            "case {:?}: {decision}",
            case.name
        );
        let expected_exit = if case.expected.is_empty() { 0 } else { 77 };
        assert_eq!(
            output.status.code(),
            Some(expected_exit),
            "case {:?} exit code",
            case.name
        );
        assert_eq!(
            decision["allowed"],
            case.expected.is_empty(),
            "case {:?}",
            case.name
        );
    }
}

#[test]
fn rate_limit_applies_only_after_other_checks() {
    let setup = Setup::new(&POLICY.replace("email_send: 1000/hour", "email_send: 2/hour"));
    let clean = [
        "--to",
        "alice@example.org",
        "--subject",
        "Hi",
        "--tier",
        "1",
        "--confidence",
        "0.99",
    ];
    let blocked = [
        "--to",
        "sensitive@example.com",
        "--subject",
        "Hi",
        "--tier",
        "1",
        "--confidence",
        "0.99",
    ];

    let (output, _) = setup.guard(&blocked, "one");
    assert_eq!(output.status.code(), Some(77));
    for body in ["one", "two"] {
        let (output, decision) = setup.guard(&clean, body);
        assert_eq!(output.status.code(), Some(0), "{decision}");
    }
    let (output, decision) = setup.guard(&clean, "three");
    assert_eq!(output.status.code(), Some(75));
    assert_eq!(codes(&decision), ["rate_limited"]);
    assert!(decision["retry_after_seconds"].as_f64().unwrap() > 0.0);

    let records = setup.audit_records();
    assert!(
        records
            .iter()
            .any(|record| record["event"] == "API_RATE_LIMIT"
                && record["details"]["bucket"] == "email_send")
    );
}

#[test]
fn identical_request_served_from_cache() {
    let setup = Setup::new(POLICY);
    let args = [
        "--to",
        "alice@example.org",
        "--subject",
        "Hi",
        "--tier",
        "1",
        "--confidence",
        "0.99",
    ];
    let (_, first) = setup.guard(&args, "same body");
    let (_, second) = setup.guard(&args, "same body");
    let (_, other) = setup.guard(&args, "another body");
    assert_eq!(first["cached"], false);
    assert_eq!(second["cached"], true);
    assert_eq!(other["cached"], false);
    assert_eq!(second["allowed"], true);

    let output = Command::new(BIN)
        .args([
            "guard",
            "email",
            "--app",
            "mail",
            "--to",
            "alice@example.org",
            "--subject",
            "Hi",
            "--tier",
            "1",
        ])
        .args(["--confidence", "0.99", "--body-file"])
        .arg(setup.dir.path().join("body.txt"))
        .arg("--vault")
        .arg(setup.vault())
        .arg("--policy-dir")
        .arg(setup.dir.path().join("policies"))
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&output.stdout).contains("answered from the cache"));
}

#[test]
fn decisions_are_audited_with_drafts() {
    let setup = Setup::new(POLICY);
    setup.guard(
        &[
            "--to",
            "alice@example.org",
            "--subject",
            "Report",
            "--tier",
            "1",
            "--confidence",
            "0.99",
        ],
        "body A",
    );
    setup.guard(
        &[
            "--to",
            "sensitive@example.com",
            "--subject",
            "Secret",
            "--tier",
            "1",
            "--confidence",
            "0.99",
        ],
        "body B",
    );
    let records = setup.audit_records();
    let sent = records
        .iter()
        .find(|record| record["event"] == "EMAIL_SENT")
        .unwrap();
    assert_eq!(sent["level"], "INFO");
    assert_eq!(sent["details"]["draft"]["body"], "body A");
    let blocked = records
        .iter()
        .find(|record| record["event"] == "EMAIL_BLOCKED")
        .unwrap();
    assert_eq!(blocked["level"], "WARNING");
    assert_eq!(blocked["details"]["reasons"][0]["code"], "off_limits");
    assert_eq!(blocked["details"]["draft"]["subject"], "Secret");
}

#[test]
fn drafts_left_out_when_disabled() {
    let setup = Setup::new(&POLICY.replace("store_drafts: true", "store_drafts: false"));
    setup.guard(
        &[
            "--to",
            "alice@example.org",
            "--subject",
            "Report",
            "--tier",
            "1",
            "--confidence",
            "0.99",
        ],
        "body A",
    );
    let records = setup.audit_records();
    let sent = records
        .iter()
        .find(|record| record["event"] == "EMAIL_SENT")
        .unwrap();
    assert!(sent["details"].get("draft").is_none());
}

#[test]
fn invalid_input_is_data_error() {
    let setup = Setup::new(POLICY);
    let (output, _) = setup.guard(
        &[
            "--to",
            "alice@example.org",
            "--subject",
            "x",
            "--tier",
            "1",
            "--confidence",
            "1.5",
        ],
        "",
    );
    assert_eq!(output.status.code(), Some(65));
    let (output, _) = setup.guard(
        &[
            "--to",
            "not-an-address",
            "--subject",
            "x",
            "--tier",
            "1",
            "--confidence",
            "0.9",
        ],
        "",
    );
    assert_eq!(output.status.code(), Some(65));
}

#[test]
fn invalid_policy_pattern_is_rejected() {
    let setup = Setup::new(&POLICY.replace(r#"["project\\s+falcon"]"#, r#"["(unclosed"]"#));
    let (output, _) = setup.guard(
        &[
            "--to",
            "alice@example.org",
            "--subject",
            "x",
            "--tier",
            "1",
            "--confidence",
            "0.99",
        ],
        "",
    );
    assert_eq!(output.status.code(), Some(65));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("suspicious_patterns"), "{stderr}");
    assert!(stderr.contains("(unclosed"), "{stderr}");

    let lint = Command::new(BIN)
        .args(["policy", "lint"])
        .arg(setup.dir.path().join("policies/mail.yaml"))
        .output()
        .unwrap();
    assert_eq!(lint.status.code(), Some(65));
    let stdout = String::from_utf8_lossy(&lint.stdout);
    assert!(
        stdout.contains("invalid regular expression \"(unclosed\" in email.suspicious_patterns"),
        "{stdout}"
    );
}

#[test]
fn policy_without_email_section() {
    let setup = Setup::new("version: 1\ncommand: [/bin/true]\n");
    let (output, _) = setup.guard(
        &[
            "--to",
            "alice@example.org",
            "--subject",
            "x",
            "--tier",
            "1",
            "--confidence",
            "0.99",
        ],
        "",
    );
    assert_eq!(output.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&output.stderr).contains("no `email` section"));
}

/// Copies the shipped policy and example into a temporary directory with the
/// same layout, so the policy's relative paths resolve there.
fn example_copy() -> tempfile::TempDir {
    let source = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let dir = tempfile::tempdir().unwrap();
    let example = dir.path().join("examples/autonomous-email-assistant");
    std::fs::create_dir_all(example.join("outbox")).unwrap();
    std::fs::create_dir_all(dir.path().join("policies")).unwrap();
    for file in ["assistant.py", "drafts.json"] {
        std::fs::copy(
            source
                .join("examples/autonomous-email-assistant")
                .join(file),
            example.join(file),
        )
        .unwrap();
    }
    std::fs::copy(
        source.join("policies/autonomous-email-assistant.yaml"),
        dir.path().join("policies/autonomous-email-assistant.yaml"),
    )
    .unwrap();
    rate_support::init_vault(
        BIN,
        &dir.path().join("vault"),
        &dir.path().join("master.key"),
    );
    dir
}

#[test]
fn email_assistant_twice_hits_hourly_limit() {
    if !std::path::Path::new("/usr/bin/python3").exists() {
        eprintln!("skipped: /usr/bin/python3 is not installed");
        return;
    }
    let dir = example_copy();
    let run = || {
        Command::new(BIN)
            .args(["run", "autonomous-email-assistant", "--vault"])
            .arg(dir.path().join("vault"))
            .arg("--policy-dir")
            .arg(dir.path().join("policies"))
            .current_dir(dir.path())
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };

    let first = run();
    let stderr = String::from_utf8_lossy(&first.stderr);
    if rate_support::sandbox_unavailable(&first) {
        assert!(
            std::env::var_os("SAFE_EXEC_REQUIRE_SANDBOX").is_none(),
            "{stderr}"
        );
        eprintln!("skipped: this kernel cannot enforce the sandbox: {stderr}");
        return;
    }
    let first_out = String::from_utf8_lossy(&first.stdout).into_owned();
    assert_eq!(first.status.code(), Some(0), "{first_out}\n{stderr}");
    assert!(
        first_out.contains("sent 6, held back by the rate limit 0, blocked 3"),
        "{first_out}"
    );
    assert!(
        first_out.contains("bcc recipient partner@lawfirm.example matches the off-limits entry"),
        "{first_out}"
    );
    assert!(first_out.contains("SMS escalation sent"), "{first_out}");

    let second = run();
    let second_out = String::from_utf8_lossy(&second.stdout).into_owned();
    assert_eq!(second.status.code(), Some(0), "{second_out}");
    assert!(
        second_out.contains("sent 4, held back by the rate limit 2, blocked 3"),
        "{second_out}"
    );
    assert!(second_out.contains("blocked (cached)"), "{second_out}");
    assert!(
        second_out.contains("SMS escalation rate limited"),
        "{second_out}"
    );

    let outbox: Vec<String> = std::fs::read_dir(
        dir.path()
            .join("examples/autonomous-email-assistant/outbox"),
    )
    .unwrap()
    .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
    .collect();
    assert_eq!(
        outbox.iter().filter(|name| name.ends_with(".eml")).count(),
        10
    );
    assert_eq!(
        outbox
            .iter()
            .filter(|name| name.ends_with("-sms.txt"))
            .count(),
        1
    );

    let records =
        rate_support::audit_records(&dir.path().join("vault"), "autonomous-email-assistant");
    let count = |event: &str| {
        records
            .iter()
            .filter(|record| record["event"] == event)
            .count()
    };
    assert_eq!(count("EMAIL_SENT"), 10);
    assert_eq!(count("EMAIL_BLOCKED"), 8);
    assert_eq!(count("SMS_ESCALATION"), 1);
}
