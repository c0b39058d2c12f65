//! Rate limits through the real binary: burst and refill, impossible costs,
//! concurrent processes, clock jumps and reboots, reset and its audit records.
//!
//! The clock is fixed with the test-only `SAFE_EXEC_TEST_CLOCK` variable
//! (`BOOT_ID:BOOT_SECONDS:WALL_SECONDS`), so no test depends on real time.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is the failure report.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

mod rate_support;

const BIN: &str = env!("CARGO_BIN_EXE_safe-exec");
const WALL: u64 = 1_800_000_000;

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(policy: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("policies")).unwrap();
        std::fs::write(dir.path().join("policies/demo.yaml"), policy).unwrap();
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

    fn command(&self, clock: Option<&str>, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .arg("--vault")
            .arg(self.vault())
            .arg("--policy-dir")
            .arg(self.dir.path().join("policies"))
            .env_remove("SAFE_EXEC_SOCKET")
            .env_remove("SAFE_EXEC_TEST_CLOCK")
            .stdin(Stdio::null());
        if let Some(clock) = clock {
            command.env("SAFE_EXEC_TEST_CLOCK", clock);
        }
        command
    }

    fn run(&self, clock: Option<&str>, args: &[&str]) -> Output {
        run_bounded(self.command(clock, args))
    }

    fn tokens(&self, clock: &str, bucket: &str) -> f64 {
        let output = self.run(Some(clock), &["rate", "status", "--app", "demo", "--json"]);
        assert_eq!(
            output.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let status: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
        let row = status["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .find(|row| row["bucket"] == bucket)
            .unwrap()
            .clone();
        row["tokens"].as_f64().unwrap()
    }

    fn audit_records(&self) -> Vec<serde_json::Value> {
        rate_support::audit_records(&self.vault(), "demo")
    }
}

/// Runs a command and kills it if it has not finished within two minutes, so
/// a wait without end fails the test instead of hanging it.
fn run_bounded(mut command: Command) -> Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(120) {
            child.kill().unwrap();
            panic!("command did not finish within two minutes: {command:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn clock(boot_id: &str, boot: u64, wall: u64) -> String {
    format!("{boot_id}:{boot}:{wall}")
}

fn acquire(setup: &Setup, clock: &str, bucket: &str, cost: u32) -> Option<i32> {
    let cost = cost.to_string();
    setup
        .run(
            Some(clock),
            &[
                "rate", "acquire", "--app", "demo", "--bucket", bucket, "--cost", &cost,
            ],
        )
        .status
        .code()
}

const POLICY: &str =
    "version: 1\ncommand: [/bin/true]\nrate_limits:\n  api: 10/minute\n  hundred: 100/hour\n";

#[test]
fn burst_then_one_every_six_seconds() {
    let setup = Setup::new(POLICY);
    let start = clock("boot-a", 1000, WALL);
    for attempt in 0..10 {
        assert_eq!(
            acquire(&setup, &start, "api", 1),
            Some(0),
            "attempt {attempt} of the burst"
        );
    }
    assert_eq!(acquire(&setup, &start, "api", 1), Some(75));
    assert_eq!(
        acquire(&setup, &clock("boot-a", 1005, WALL + 5), "api", 1),
        Some(75)
    );
    assert_eq!(
        acquire(&setup, &clock("boot-a", 1006, WALL + 6), "api", 1),
        Some(0)
    );
    assert_eq!(
        acquire(&setup, &clock("boot-a", 1006, WALL + 6), "api", 1),
        Some(75)
    );
    assert_eq!(
        acquire(&setup, &clock("boot-a", 1012, WALL + 12), "api", 1),
        Some(0)
    );
}

#[test]
fn cost_above_burst_fails_at_once() {
    let setup = Setup::new(POLICY);
    let now = clock("boot-a", 1000, WALL);
    let output = setup.run(
        Some(&now),
        &[
            "rate", "acquire", "--app", "demo", "--bucket", "api", "--cost", "11", "--wait", "1h",
        ],
    );
    assert_eq!(output.status.code(), Some(65));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("can never be granted"), "{stderr}");
    assert!(stderr.contains("at most 10 tokens"), "{stderr}");
    assert_eq!(setup.tokens(&now, "api"), 10.0);
}

#[test]
fn wait_sleeps_until_granted() {
    let setup = Setup::new("version: 1\ncommand: [/bin/true]\nrate_limits:\n  fast: 20/second\n");
    for _ in 0..20 {
        let output = setup.run(
            None,
            &["rate", "acquire", "--app", "demo", "--bucket", "fast"],
        );
        assert_eq!(output.status.code(), Some(0));
    }
    let output = setup.run(
        None,
        &[
            "rate", "acquire", "--app", "demo", "--bucket", "fast", "--cost", "5", "--wait", "30s",
        ],
    );
    assert_eq!(
        output.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn unknown_bucket_is_data_error() {
    let setup = Setup::new(POLICY);
    let output = setup.run(
        None,
        &["rate", "acquire", "--app", "demo", "--bucket", "nope"],
    );
    assert_eq!(output.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&output.stderr).contains("api, hundred"));
}

#[test]
fn eight_processes_grant_exactly_100() {
    let setup = Setup::new(POLICY);
    let now = clock("boot-a", 1000, WALL);
    let workers: Vec<_> = (0..8)
        .map(|_| {
            let commands: Vec<Command> = (0..20)
                .map(|_| {
                    setup.command(
                        Some(&now),
                        &["rate", "acquire", "--app", "demo", "--bucket", "hundred"],
                    )
                })
                .collect();
            std::thread::spawn(move || {
                let mut granted = 0;
                let mut denied = 0;
                for command in commands {
                    match run_bounded(command).status.code() {
                        Some(0) => granted += 1,
                        Some(75) => denied += 1,
                        other => panic!("unexpected exit code {other:?}"),
                    }
                }
                (granted, denied)
            })
        })
        .collect();
    let (mut granted, mut denied) = (0, 0);
    for worker in workers {
        let (g, d) = worker.join().unwrap();
        granted += g;
        denied += d;
    }
    assert_eq!(granted, 100);
    assert_eq!(denied, 60);
    assert_eq!(setup.tokens(&now, "hundred"), 0.0);
    let denials = setup
        .audit_records()
        .iter()
        .filter(|record| record["event"] == "API_RATE_LIMIT")
        .count();
    assert_eq!(denials, 60);
}

#[test]
fn wall_clock_jump_forward_refills_nothing() {
    let setup = Setup::new(POLICY);
    let start = clock("boot-a", 1000, WALL);
    assert_eq!(acquire(&setup, &start, "api", 10), Some(0));
    let jumped = clock("boot-a", 1000, WALL + 3600);
    assert_eq!(setup.tokens(&jumped, "api"), 0.0);
    assert_eq!(acquire(&setup, &jumped, "api", 1), Some(75));
}

#[test]
fn wall_clock_jump_backward_locks_nothing_out() {
    let setup = Setup::new(POLICY);
    assert_eq!(
        acquire(&setup, &clock("boot-a", 1000, WALL), "api", 10),
        Some(0)
    );
    let jumped = clock("boot-a", 1012, WALL - 3600);
    assert_eq!(setup.tokens(&jumped, "api"), 2.0);
    assert_eq!(acquire(&setup, &jumped, "api", 2), Some(0));
}

#[test]
fn reboot_refills_by_wall_clock() {
    let setup = Setup::new(POLICY);
    assert_eq!(
        acquire(&setup, &clock("boot-a", 50_000, WALL), "api", 10),
        Some(0)
    );
    // Rebooted 30 seconds later; 6 seconds of uptime since.
    assert_eq!(setup.tokens(&clock("boot-b", 6, WALL + 30), "api"), 5.0);
}

#[test]
fn reboot_with_wall_clock_behind_counts_uptime() {
    let setup = Setup::new(POLICY);
    assert_eq!(
        acquire(&setup, &clock("boot-a", 50_000, WALL), "api", 10),
        Some(0)
    );
    // The new boot's wall clock is an hour behind; 18 seconds of uptime still count.
    assert_eq!(setup.tokens(&clock("boot-b", 18, WALL - 3600), "api"), 3.0);
}

#[test]
fn state_files_are_private() {
    let setup = Setup::new(POLICY);
    assert_eq!(
        acquire(&setup, &clock("boot-a", 1000, WALL), "api", 1),
        Some(0)
    );
    let dir = setup.vault().join("ratelimits");
    assert_eq!(mode(&dir), 0o700);
    assert_eq!(mode(&dir.join("demo.json")), 0o600);
    assert_eq!(mode(&dir.join("demo.lock")), 0o600);
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn reset_needs_confirmation_and_refills() {
    let setup = Setup::new(POLICY);
    let now = clock("boot-a", 1000, WALL);
    assert_eq!(acquire(&setup, &now, "api", 10), Some(0));

    let output = setup.run(Some(&now), &["rate", "reset", "--app", "demo"]);
    assert_eq!(
        output.status.code(),
        Some(64),
        "reset without --yes and without a terminal"
    );
    assert_eq!(setup.tokens(&now, "api"), 0.0);

    let output = setup.run(
        Some(&now),
        &["rate", "reset", "--app", "demo", "--bucket", "api", "--yes"],
    );
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(setup.tokens(&now, "api"), 10.0);
    let records = setup.audit_records();
    let reset = records
        .iter()
        .find(|record| record["event"] == "RATE_LIMIT_RESET")
        .unwrap();
    assert_eq!(reset["level"], "WARNING");
}

#[test]
fn emergency_reset_is_critical() {
    let setup = Setup::new(POLICY);
    let now = clock("boot-a", 1000, WALL);
    assert_eq!(acquire(&setup, &now, "api", 10), Some(0));
    assert_eq!(acquire(&setup, &now, "hundred", 100), Some(0));
    let output = setup.run(
        Some(&now),
        &["rate", "reset", "--app", "demo", "--emergency", "--yes"],
    );
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(setup.tokens(&now, "api"), 10.0);
    assert_eq!(setup.tokens(&now, "hundred"), 100.0);
    let records = setup.audit_records();
    let reset = records
        .iter()
        .find(|record| record["event"] == "RATE_LIMIT_RESET")
        .unwrap();
    assert_eq!(reset["level"], "CRITICAL");
    assert_eq!(reset["details"]["emergency"], true);
}

#[test]
fn reset_refused_inside_a_run() {
    let setup = Setup::new(POLICY);
    let mut command = setup.command(None, &["rate", "reset", "--app", "demo", "--yes"]);
    command.env("SAFE_EXEC_SOCKET", "/nonexistent/socket");
    let output = run_bounded(command);
    assert_eq!(output.status.code(), Some(77));
}

#[test]
fn denial_is_audited() {
    let setup = Setup::new(POLICY);
    let now = clock("boot-a", 1000, WALL);
    assert_eq!(acquire(&setup, &now, "api", 10), Some(0));
    assert_eq!(acquire(&setup, &now, "api", 3), Some(75));
    let records = setup.audit_records();
    let denial = records
        .iter()
        .find(|record| record["event"] == "API_RATE_LIMIT")
        .unwrap();
    assert_eq!(denial["level"], "WARNING");
    assert_eq!(denial["details"]["bucket"], "api");
    assert_eq!(denial["details"]["cost"], 3);
    assert_eq!(denial["details"]["retry_after_seconds"], 18.0);
}

#[test]
fn corrupt_state_names_the_fix() {
    let setup = Setup::new(POLICY);
    let now = clock("boot-a", 1000, WALL);
    assert_eq!(acquire(&setup, &now, "api", 1), Some(0));
    std::fs::write(setup.vault().join("ratelimits/demo.json"), "{torn").unwrap();
    let output = setup.run(
        Some(&now),
        &["rate", "acquire", "--app", "demo", "--bucket", "api"],
    );
    assert_eq!(output.status.code(), Some(65));
    assert!(String::from_utf8_lossy(&output.stderr).contains("rate reset --app demo"));
    let output = setup.run(Some(&now), &["rate", "reset", "--app", "demo", "--yes"]);
    assert_eq!(output.status.code(), Some(0));
    assert_eq!(setup.tokens(&now, "api"), 10.0);
}

#[test]
fn status_lists_every_policy() {
    let setup = Setup::new(POLICY);
    std::fs::write(
        setup.dir.path().join("policies/other.yaml"),
        "version: 1\ncommand: [/bin/true]\nrate_limits:\n  sms: 1/5m\n",
    )
    .unwrap();
    let output = setup.run(None, &["rate", "status"]);
    assert_eq!(output.status.code(), Some(0));
    let text = String::from_utf8_lossy(&output.stdout);
    for expected in ["demo", "api", "hundred", "other", "sms"] {
        assert!(text.contains(expected), "{expected} missing from:\n{text}");
    }
}

#[test]
fn preflight_reports_state() {
    let setup = Setup::new(POLICY);
    let now = clock("boot-a", 1000, WALL);
    let line = |output: &Output| {
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        text.lines()
            .find(|line| line.contains("rate_limits"))
            .map(str::to_owned)
            .unwrap_or_else(|| panic!("no rate_limits check in:\n{text}"))
    };

    let fresh = line(&setup.run(Some(&now), &["check", "demo"]));
    assert!(fresh.contains("PASS"), "{fresh}");

    assert_eq!(acquire(&setup, &now, "api", 10), Some(0));
    let empty = line(&setup.run(Some(&now), &["check", "demo"]));
    assert!(empty.contains("WARN"), "{empty}");
    assert!(empty.contains("api (next token in 6s)"), "{empty}");

    std::fs::write(setup.vault().join("ratelimits/demo.json"), "{torn").unwrap();
    let corrupt = line(&setup.run(Some(&now), &["check", "demo"]));
    assert!(corrupt.contains("FAIL"), "{corrupt}");
    assert!(corrupt.contains("rate reset --app demo"), "{corrupt}");
}
