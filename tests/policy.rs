//! `policy lint`, `policy show` and `policy schema` driven through the real
//! binary, with the vault, the policy directory and HOME in a temporary directory.

#![allow(
    clippy::unwrap_used,
    reason = "a test stops at the first unexpected error"
)]

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

/// Exit code for an invalid policy (EX_DATAERR).
const INVALID_POLICY: i32 = 65;

/// A temporary home with a vault, a policy directory and room for app files.
struct Fixture {
    _temp: tempfile::TempDir,
    root: PathBuf,
    home: PathBuf,
    vault: PathBuf,
    policies: PathBuf,
}

impl Fixture {
    fn new() -> Self {
        let temp = tempfile::tempdir().unwrap();
        // Canonical, so paths printed by safe-exec compare equal to ours.
        let root = fs::canonicalize(temp.path()).unwrap();
        let home = root.join("home");
        // The vault sits one level down so that a grant on `private` covers it
        // without covering the policy directory.
        let vault = root.join("private/vault");
        let policies = root.join("policies");
        for dir in [&home, &vault, &policies] {
            fs::create_dir_all(dir).unwrap();
        }
        Self {
            _temp: temp,
            root,
            home,
            vault,
            policies,
        }
    }

    fn write_policy(&self, app: &str, text: &str) -> PathBuf {
        let file = self.policies.join(format!("{app}.yaml"));
        fs::write(&file, text).unwrap();
        file
    }

    /// Runs safe-exec with this fixture's vault, policy directory and HOME.
    fn run(&self, args: &[&str]) -> Output {
        self.run_with_policy_dir(&self.policies, args)
    }

    fn run_with_policy_dir(&self, policy_dir: &Path, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_safe-exec"))
            .arg("--vault")
            .arg(&self.vault)
            .arg("--policy-dir")
            .arg(policy_dir)
            .args(args)
            .current_dir(&self.root)
            .env("HOME", &self.home)
            .env_remove("SAFE_EXEC_VAULT")
            .env_remove("SAFE_EXEC_POLICY_DIR")
            .env_remove("RUST_LOG")
            .output()
            .unwrap()
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// One policy that lint must reject, with where and what it reports.
struct BadPolicy {
    name: &'static str,
    text: &'static str,
    message: &'static str,
    /// Line and column of the finding; `None` when the error concerns the whole file.
    line: Option<u64>,
    column: Option<u64>,
}

const fn bad(
    name: &'static str,
    text: &'static str,
    message: &'static str,
    line: u64,
    column: u64,
) -> BadPolicy {
    BadPolicy {
        name,
        text,
        message,
        line: Some(line),
        column: Some(column),
    }
}

const BAD_POLICIES: &[BadPolicy] = &[
    bad(
        "unknown-top-key",
        "version: 1\ncommand: [/bin/true]\ncolour: red\n",
        "unknown field `colour`",
        3,
        1,
    ),
    bad(
        "unknown-nested-key",
        "version: 1\ncommand: [/bin/true]\nlimits:\n  timeout: 1m\n  memroy: 1GiB\n",
        "unknown field `memroy`",
        5,
        3,
    ),
    bad(
        "wrong-type",
        "version: 1\ncommand: [/bin/true]\nlimits:\n  processes: many\n",
        "invalid value \"many\": expected a whole number",
        4,
        14,
    ),
    bad(
        "wrong-type-bool",
        "version: 1\ncommand: [/bin/true]\nlimits:\n  core_dumps: maybe\n",
        "invalid value \"maybe\": expected true or false",
        4,
        15,
    ),
    bad(
        "command-not-a-list",
        "version: 1\ncommand: /bin/true\n",
        "invalid value \"/bin/true\": expected a list",
        2,
        10,
    ),
    bad(
        "bad-duration",
        "version: 1\ncommand: [/bin/true]\nlimits:\n  timeout: 30 parsecs\n",
        "invalid duration \"30 parsecs\"",
        4,
        12,
    ),
    bad(
        "duration-without-unit",
        "version: 1\ncommand: [/bin/true]\nlimits:\n  cpu: 30\n",
        "invalid duration \"30\"",
        4,
        8,
    ),
    bad(
        "bad-size",
        "version: 1\ncommand: [/bin/true]\nlimits:\n  memory: 2 gallons\n",
        "invalid size \"2 gallons\"",
        4,
        11,
    ),
    bad(
        "bad-rate",
        "version: 1\ncommand: [/bin/true]\nrate_limits:\n  api: 10/fortnight\n",
        "invalid rate \"10/fortnight\": unknown period",
        4,
        8,
    ),
    bad(
        "zero-rate",
        "version: 1\ncommand: [/bin/true]\nrate_limits:\n  api: 0/hour\n",
        "the count must be at least 1",
        4,
        8,
    ),
    bad(
        "unknown-network-mode",
        "version: 1\ncommand: [/bin/true]\nnetwork:\n  mode: wide\n",
        "unknown variant `wide`, expected one of none, proxy, open",
        4,
        9,
    ),
    bad(
        "empty-command",
        "version: 1\ncommand: []\n",
        "command must name a program",
        2,
        10,
    ),
    bad(
        "missing-command",
        "version: 1\n",
        "missing field `command`",
        1,
        1,
    ),
    bad(
        "reserved-env-name",
        "version: 1\ncommand: [/bin/true]\nenv:\n  set:\n    SAFE_EXEC_CREDENTIALS_FD: \"9\"\n",
        "env must not name SAFE_EXEC_CREDENTIALS_FD",
        5,
        31,
    ),
    bad(
        "invalid-env-name",
        "version: 1\ncommand: [/bin/true]\nenv:\n  inherit: [PATH, 1BAD]\n",
        "invalid environment variable name \"1BAD\"",
        4,
        19,
    ),
    bad(
        "tcp-connect-with-mode-none",
        "version: 1\ncommand: [/bin/true]\nnetwork:\n  mode: none\n  tcp_connect: [443]\n",
        "network.tcp_connect only applies to `mode: open`",
        5,
        17,
    ),
    bad(
        "allow-without-proxy",
        "version: 1\ncommand: [/bin/true]\nnetwork:\n  mode: open\n  allow: [api.example.com:443]\n",
        "network.allow only applies to `mode: proxy`",
        5,
        11,
    ),
    bad(
        "credential-fd-1",
        "version: 1\ncommand: [/bin/true]\ncredentials:\n  service: budget\n  keys: [API_KEY]\n  fd: 1\n",
        "credentials.fd is 1; use a descriptor from 3 to 255",
        6,
        7,
    ),
    bad(
        "credential-key-twice",
        "version: 1\ncommand: [/bin/true]\ncredentials:\n  service: budget\n  keys: [API_KEY]\n  optional: [API_KEY]\n",
        "credential key API_KEY is listed in both keys and optional",
        6,
        14,
    ),
    bad(
        "email-threshold-above-1",
        "version: 1\ncommand: [/bin/true]\nemail:\n  thresholds: {1: 1.5}\n",
        "email.thresholds tier 1 is 1.5",
        4,
        19,
    ),
    bad(
        "read-only-inside-write",
        "version: 1\ncommand: [/bin/true]\nfilesystem:\n  write: [../data]\n  read:\n    - ../data/reports\n",
        "read grant on {root}/data/reports lies inside the read+write grant on {root}/data (line 4)",
        6,
        7,
    ),
    bad(
        "grant-covers-vault",
        "version: 1\ncommand: [/bin/true]\nfilesystem:\n  read: [../private]\n",
        "read grant on {root}/private covers the vault {root}/private/vault",
        4,
        10,
    ),
    bad(
        "grant-inside-vault",
        "version: 1\ncommand: [/bin/true]\nfilesystem:\n  write: [../private/vault/audit]\n",
        "read+write grant on {root}/private/vault/audit lies inside the vault",
        4,
        11,
    ),
    bad(
        "grant-covers-policy-dir",
        "version: 1\ncommand: [/bin/true]\nfilesystem:\n  read: [.]\n",
        "read grant on {root}/policies covers the policy directory {root}/policies",
        4,
        10,
    ),
    bad(
        "grant-covers-config-dir",
        "version: 1\ncommand: [/bin/true]\nfilesystem:\n  read: [~/.config]\n",
        "covers the safe-exec configuration directory {root}/home/.config/safe-exec",
        4,
        10,
    ),
    bad(
        "unknown-placeholder",
        "version: 1\ncommand: [/bin/true]\nfilesystem:\n  write: [\"{home}/x\"]\n",
        "unknown placeholder in \"{home}/x\"",
        4,
        11,
    ),
    bad(
        "other-users-home",
        "version: 1\ncommand: [/bin/true]\nfilesystem:\n  read: [~bob/notes]\n",
        "cannot expand \"~bob/notes\"",
        4,
        10,
    ),
    bad(
        "duplicate-key",
        "version: 1\ncommand: [/bin/true]\ncommand: [/bin/false]\n",
        "duplicate key \"command\"",
        3,
        1,
    ),
    bad(
        "broken-yaml",
        "version: 1\ncommand: [/bin/true\nlimits:\n  timeout: 1m\n",
        "illegal placement of ':' indicator",
        3,
        7,
    ),
    BadPolicy {
        name: "empty-file",
        text: "",
        message: "the file is empty or only comments",
        line: None,
        column: None,
    },
    BadPolicy {
        name: "comments-only",
        text: "# nothing here yet\n---\n",
        message: "the file is empty or only comments",
        line: None,
        column: None,
    },
    bad(
        "version-2",
        "version: 2\ncommand: [/bin/true]\n",
        "unsupported version 2; this safe-exec reads version 1",
        1,
        10,
    ),
];

/// Lints `case` in `fixture` and returns what differs from the expectation, if anything.
fn check_bad_policy(fixture: &Fixture, case: &BadPolicy) -> Option<String> {
    let file = fixture.write_policy(case.name, case.text);
    let output = fixture.run(&["policy", "lint", "--json", file.to_str().unwrap()]);
    let expected_message = case
        .message
        .replace("{root}", fixture.root.to_str().unwrap());

    if output.status.code() != Some(INVALID_POLICY) {
        return Some(format!(
            "{}: exit code {:?}, expected {INVALID_POLICY}; stdout: {} stderr: {}",
            case.name,
            output.status.code(),
            stdout(&output),
            stderr(&output)
        ));
    }
    let report: Value = match serde_json::from_str(stdout(&output).trim()) {
        Ok(report) => report,
        Err(err) => {
            return Some(format!(
                "{}: lint --json printed no JSON ({err}): {}",
                case.name,
                stdout(&output)
            ));
        }
    };
    let findings = report["findings"].as_array().cloned().unwrap_or_default();
    let Some(finding) = findings.first() else {
        return Some(format!("{}: no finding in {report}", case.name));
    };

    let mut problems = Vec::new();
    let message = finding["message"].as_str().unwrap_or_default();
    if !message.contains(&expected_message) {
        problems.push(format!("message {message:?} lacks {expected_message:?}"));
    }
    if report["ok"] != Value::Bool(false) {
        problems.push(format!("ok is {}", report["ok"]));
    }
    if finding["file"].as_str() != file.to_str() {
        problems.push(format!(
            "file is {}, expected {}",
            finding["file"],
            file.display()
        ));
    }
    let line = finding["position"]["line"].as_u64();
    let column = finding["position"]["column"].as_u64();
    if line != case.line {
        problems.push(format!("line {line:?}, expected {:?}", case.line));
    }
    if column != case.column {
        problems.push(format!("column {column:?}, expected {:?}", case.column));
    }
    if problems.is_empty() {
        None
    } else {
        Some(format!("{}: {}", case.name, problems.join("; ")))
    }
}

#[test]
fn bad_policies_report_message_and_position() {
    let fixture = Fixture::new();
    let failures: Vec<String> = BAD_POLICIES
        .iter()
        .filter_map(|case| check_bad_policy(&fixture, case))
        .collect();
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        BAD_POLICIES.len(),
        failures.join("\n")
    );
}

#[test]
fn unknown_syscall_name_reports_position() {
    let fixture = Fixture::new();
    let case = bad(
        "unknown-syscall",
        "version: 1\ncommand: [/bin/true]\nsyscalls:\n  deny: [ptrace, not_a_syscall]\n",
        "unknown syscall name \"not_a_syscall\"",
        4,
        18,
    );
    let failure = check_bad_policy(&fixture, &case);
    assert!(failure.is_none(), "{}", failure.unwrap_or_default());
}

#[test]
fn write_grant_over_executable_fails() {
    let fixture = Fixture::new();
    let executable = fs::canonicalize(env!("CARGO_BIN_EXE_safe-exec")).unwrap();
    let bin_dir = executable.parent().unwrap();
    let text = format!(
        "version: 1\ncommand: [/bin/true]\nfilesystem:\n  write: [{}]\n",
        bin_dir.display()
    );
    let file = fixture.write_policy("replace-supervisor", &text);

    let output = fixture.run(&["policy", "lint", file.to_str().unwrap()]);

    assert_eq!(output.status.code(), Some(INVALID_POLICY));
    let expected = format!(
        "{}:4:11: write grant on {} covers the safe-exec executable {}",
        file.display(),
        bin_dir.display(),
        executable.display()
    );
    assert!(
        stdout(&output).contains(&expected),
        "stdout: {}",
        stdout(&output)
    );
}

#[test]
fn lint_text_output_names_file_line_column() {
    let fixture = Fixture::new();
    let file = fixture.write_policy(
        "typo",
        "version: 1\ncommand: [/bin/true]\nlimits:\n  timout: 1m\n",
    );

    let output = fixture.run(&["policy", "lint", file.to_str().unwrap()]);

    assert_eq!(output.status.code(), Some(INVALID_POLICY));
    let expected = format!("error {}:4:3: unknown field `timout`", file.display());
    assert!(
        stdout(&output).contains(&expected),
        "stdout: {}",
        stdout(&output)
    );
    assert!(
        stderr(&output).contains("1 of 1 policy files failed lint"),
        "stderr: {}",
        stderr(&output)
    );
}

#[test]
fn lint_directory_checks_every_policy() {
    let fixture = Fixture::new();
    fixture.write_policy("good", "version: 1\ncommand: [/bin/true]\n");
    fixture.write_policy(
        "bad",
        "version: 1\ncommand: [/bin/true]\nnetwork:\n  mode: wide\n",
    );

    let output = fixture.run(&["policy", "lint"]);

    assert_eq!(output.status.code(), Some(INVALID_POLICY));
    let text = stdout(&output);
    assert!(
        text.contains(&format!(
            "ok    {}",
            fixture.policies.join("good.yaml").display()
        )),
        "stdout: {text}"
    );
    assert!(
        text.contains(&format!(
            "error {}:4:9:",
            fixture.policies.join("bad.yaml").display()
        )),
        "stdout: {text}"
    );
    assert!(
        stderr(&output).contains("1 of 2 policy files failed lint"),
        "stderr: {}",
        stderr(&output)
    );
}

#[test]
fn lint_empty_directory_fails() {
    let fixture = Fixture::new();

    let output = fixture.run(&["policy", "lint"]);

    assert_eq!(output.status.code(), Some(INVALID_POLICY));
    assert!(
        stderr(&output).contains("no policy files in"),
        "stderr: {}",
        stderr(&output)
    );
}

#[test]
fn good_policy_passes_lint() {
    let fixture = Fixture::new();
    fs::create_dir_all(fixture.root.join("app/out")).unwrap();
    let file = fixture.write_policy(
        "app",
        "version: 1\ncommand: [/bin/true]\nworkdir: ../app\nfilesystem:\n  read: [../app]\n  write: [../app/out, \"{tmp}\"]\n",
    );

    let output = fixture.run(&["policy", "lint", file.to_str().unwrap()]);

    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout: {} stderr: {}",
        stdout(&output),
        stderr(&output)
    );
    assert!(
        stdout(&output).starts_with("ok "),
        "stdout: {}",
        stdout(&output)
    );
}

fn shipped_policy_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("policies")
}

#[test]
fn shipped_policies_pass_lint() {
    let fixture = Fixture::new();
    let policy_dir = shipped_policy_dir();
    let mut shipped: Vec<String> = fs::read_dir(&policy_dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .map(|path| path.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    shipped.sort();
    for app in ["claude-code", "love-tracker", "weekly-budget-report"] {
        assert!(
            shipped.iter().any(|name| name == app),
            "policies/{app}.yaml is not shipped"
        );
    }

    let output = fixture.run_with_policy_dir(&policy_dir, &["policy", "lint", "--json"]);

    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout: {} stderr: {}",
        stdout(&output),
        stderr(&output)
    );
    let reports: Vec<Value> = stdout(&output)
        .lines()
        .map(|line| serde_json::from_str(line).unwrap())
        .collect();
    assert_eq!(
        reports.len(),
        shipped.len(),
        "one report per policy: {reports:?}"
    );
    for report in &reports {
        assert_eq!(report["ok"], Value::Bool(true), "{report}");
    }
}

#[test]
fn shipped_budget_policy_is_confined() {
    let fixture = Fixture::new();
    let output = fixture.run_with_policy_dir(
        &shipped_policy_dir(),
        &["policy", "show", "weekly-budget-report", "--json"],
    );
    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    let policy: Value = serde_json::from_str(&stdout(&output)).unwrap();

    let app_dir = fs::canonicalize(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/weekly-budget-report"),
    )
    .unwrap();
    assert_eq!(
        policy["command"],
        serde_json::json!(["/usr/bin/python3", "report.py"])
    );
    assert_eq!(policy["workdir"].as_str(), app_dir.to_str());
    assert_eq!(policy["network"]["mode"], "none");
    assert_eq!(
        policy["credentials"]["optional"],
        serde_json::json!(["YNAB_API_KEY"])
    );
    assert_eq!(policy["rate_limits"]["ynab_api"]["count"], 200);
    assert_eq!(policy["rate_limits"]["ynab_api"]["period_seconds"], 3600.0);
    assert_eq!(
        policy["rate_limits"]["report_generation"]["period_seconds"],
        86400.0
    );

    let rules = policy["filesystem"]["rules"].as_array().unwrap();
    let writable: Vec<&Value> = rules
        .iter()
        .filter(|rule| rule["access"]["write"] == true)
        .collect();
    let executable: Vec<&Value> = rules
        .iter()
        .filter(|rule| rule["access"]["exec"] == true)
        .collect();
    assert_eq!(
        rules.len(),
        3,
        "read app dir, write out/ and {{tmp}}: {rules:?}"
    );
    assert_eq!(writable.len(), 2, "{rules:?}");
    assert!(executable.is_empty(), "{rules:?}");
    let out_dir = app_dir.join("out");
    assert!(
        writable
            .iter()
            .any(|rule| rule["target"]["path"]["path"].as_str() == out_dir.to_str()),
        "{rules:?}"
    );
    assert!(
        out_dir.join(".gitkeep").exists(),
        "out/.gitkeep keeps the output directory in a fresh clone"
    );
}

#[test]
fn show_prints_symlink_target() {
    let fixture = Fixture::new();
    let real = fixture.root.join("data-real");
    let link = fixture.root.join("data-link");
    fs::create_dir_all(&real).unwrap();
    std::os::unix::fs::symlink(&real, &link).unwrap();
    fixture.write_policy(
        "linked",
        "version: 1\ncommand: [/bin/true]\nfilesystem:\n  read: [../data-link]\n",
    );

    let text_output = fixture.run(&["policy", "show", "linked"]);
    let json_output = fixture.run(&["policy", "show", "linked", "--json"]);

    assert_eq!(
        text_output.status.code(),
        Some(0),
        "stderr: {}",
        stderr(&text_output)
    );
    let expected = format!("(symlink {} -> {})", link.display(), real.display());
    assert!(
        stdout(&text_output).contains(&expected),
        "stdout: {}",
        stdout(&text_output)
    );

    let policy: Value = serde_json::from_str(&stdout(&json_output)).unwrap();
    let target = &policy["filesystem"]["rules"][0]["target"]["path"];
    assert_eq!(
        target["path"].as_str(),
        real.to_str(),
        "the resolved target is granted: {target}"
    );
    assert_eq!(target["symlink_from"].as_str(), link.to_str(), "{target}");
}

#[test]
fn show_marks_missing_paths() {
    let fixture = Fixture::new();
    fixture.write_policy(
        "absent",
        "version: 1\ncommand: [/bin/true]\nfilesystem:\n  read: [/opt/not-here]\n",
    );

    let output = fixture.run(&["policy", "show", "absent"]);

    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    assert!(
        stdout(&output).contains("/opt/not-here (missing)"),
        "stdout: {}",
        stdout(&output)
    );
}

#[test]
fn show_unknown_app_fails() {
    let fixture = Fixture::new();

    let output = fixture.run(&["policy", "show", "nothing-here"]);

    assert_eq!(output.status.code(), Some(INVALID_POLICY));
    assert!(
        stderr(&output).contains("no policy for app \"nothing-here\""),
        "stderr: {}",
        stderr(&output)
    );
}

#[test]
fn schema_rejects_unknown_top_keys() {
    let fixture = Fixture::new();

    let output = fixture.run(&["policy", "schema"]);

    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    let schema: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(schema["additionalProperties"], Value::Bool(false));
    assert_eq!(schema["type"], "object");
    let required = schema["required"].as_array().unwrap();
    assert!(required.contains(&Value::from("version")), "{required:?}");
    assert!(required.contains(&Value::from("command")), "{required:?}");
    let properties = schema["properties"].as_object().unwrap();
    for key in [
        "version",
        "description",
        "command",
        "workdir",
        "env",
        "filesystem",
        "network",
        "syscalls",
        "limits",
        "credentials",
        "rate_limits",
        "email",
        "audit",
        "preflight",
        "enforcement",
    ] {
        assert!(properties.contains_key(key), "schema lacks {key}");
    }
}

/// Writes a policy file back from the JSON of `policy show --json`, so that
/// resolving it again shows whether the JSON kept every setting.
fn policy_from_json(policy: &Value) -> String {
    let list = |value: &Value| serde_json::to_string(value).unwrap();
    let seconds = |value: &Value| format!("{}s", value.as_f64().unwrap());
    let mut yaml = String::from("version: 1\n");
    yaml += &format!("description: {}\n", policy["description"]);
    yaml += &format!("command: {}\n", list(&policy["command"]));
    yaml += &format!("workdir: {}\n", policy["workdir"]);
    yaml += &format!(
        "env:\n  inherit: {}\n  set: {}\n",
        list(&policy["env"]["inherit"]),
        list(&policy["env"]["set"])
    );

    let mut grants: [(&str, Vec<String>); 3] = [
        ("read", Vec::new()),
        ("write", Vec::new()),
        ("exec", Vec::new()),
    ];
    for rule in policy["filesystem"]["rules"].as_array().unwrap() {
        let path = match &rule["target"] {
            Value::String(tmp) if tmp == "run_tmp" => "{tmp}".to_owned(),
            target => target["path"]["path"].as_str().unwrap().to_owned(),
        };
        let access = &rule["access"];
        let write = access["write"] == true;
        let exec = access["exec"] == true;
        if write {
            grants[1].1.push(path.clone());
        }
        if exec {
            grants[2].1.push(path.clone());
        }
        if !write && !exec {
            grants[0].1.push(path);
        }
    }
    yaml += &format!(
        "filesystem:\n  system: {}\n  missing: {}\n",
        policy["filesystem"]["system"], policy["filesystem"]["missing"]
    );
    for (name, paths) in &grants {
        yaml += &format!("  {name}: {}\n", serde_json::to_string(paths).unwrap());
    }

    let network = &policy["network"];
    yaml += &format!(
        "network:\n  mode: {}\n  allow: {}\n  tcp_connect: {}\n",
        network["mode"],
        list(&network["allow"]),
        list(&network["tcp_connect"])
    );
    let syscalls = &policy["syscalls"];
    yaml += &format!(
        "syscalls:\n  profile: {}\n  deny: {}\n  allow: {}\n  on_violation: {}\n",
        syscalls["profile"],
        list(&syscalls["deny"]),
        list(&syscalls["allow"]),
        syscalls["on_violation"]
    );
    let limits = &policy["limits"];
    yaml += &format!(
        "limits:\n  timeout: {}\n  memory: {}\n  processes: {}\n  open_files: {}\n  cpu: {}\n  core_dumps: {}\n",
        seconds(&limits["timeout"]),
        limits["memory"],
        limits["processes"],
        limits["open_files"],
        seconds(&limits["cpu"]),
        limits["core_dumps"]
    );
    let credentials = &policy["credentials"];
    yaml += &format!(
        "credentials:\n  service: {}\n  keys: {}\n  optional: {}\n  format: {}\n  fd: {}\n",
        credentials["service"],
        list(&credentials["keys"]),
        list(&credentials["optional"]),
        credentials["format"],
        credentials["fd"]
    );
    yaml += "rate_limits:\n";
    for (bucket, rate) in policy["rate_limits"].as_object().unwrap() {
        yaml += &format!(
            "  {bucket}: {{rate: \"{}/{}\", burst: {}}}\n",
            rate["count"],
            seconds(&rate["period_seconds"]),
            rate["burst"]
        );
    }
    let email = &policy["email"];
    yaml += "email:\n  thresholds:\n";
    for (tier, threshold) in email["thresholds"].as_object().unwrap() {
        yaml += &format!("    {tier}: {threshold}\n");
    }
    yaml += &format!(
        "  off_limits: {}\n  suspicious_patterns: {}\n  cache_ttl: {}\n",
        list(&email["off_limits"]),
        list(&email["suspicious_patterns"]),
        seconds(&email["cache_ttl"])
    );
    yaml += &format!(
        "audit:\n  log_all_sends: {}\n  store_drafts: {}\n",
        policy["audit"]["log_all_sends"], policy["audit"]["store_drafts"]
    );
    yaml += &format!(
        "preflight:\n  rotation_overdue: {}\n  plaintext_secrets: {}\n",
        policy["preflight"]["rotation_overdue"], policy["preflight"]["plaintext_secrets"]
    );
    yaml += &format!("enforcement: {}\n", policy["enforcement"]);
    yaml
}

/// Removes what depends on the file rather than on the settings: its name and
/// where each path was written.
fn settings_only(mut policy: Value) -> Value {
    let object = policy.as_object_mut().unwrap();
    object.remove("app");
    object.remove("file");
    for rule in policy["filesystem"]["rules"].as_array_mut().unwrap() {
        let rule = rule.as_object_mut().unwrap();
        rule.remove("declared");
        rule.remove("position");
    }
    policy
}

#[test]
fn show_json_round_trips() {
    let fixture = Fixture::new();
    fs::create_dir_all(fixture.root.join("app/out")).unwrap();
    fs::create_dir_all(fixture.root.join("app/bin")).unwrap();
    fixture.write_policy(
        "full",
        "version: 1\n\
         description: every block set\n\
         command: [/usr/bin/python3, report.py]\n\
         workdir: ../app\n\
         env:\n  inherit: [LANG]\n  set: {PYTHONUNBUFFERED: \"1\"}\n\
         filesystem:\n  read: [../app]\n  write: [../app/out, \"{tmp}\"]\n  exec: [../app/bin]\n  missing: skip\n\
         network:\n  mode: open\n  tcp_connect: [443, 8443]\n\
         syscalls:\n  deny: []\n  on_violation: kill\n\
         limits:\n  timeout: 90s\n  memory: 512MiB\n  processes: 32\n  open_files: 256\n  cpu: 1m\n\
         credentials:\n  service: budget\n  keys: [API_KEY]\n  optional: [EXTRA]\n  format: json\n  fd: 5\n\
         rate_limits:\n  api: 200/hour\n  burst: {rate: 10/minute, burst: 3}\n\
         email:\n  thresholds: {1: 0.95, 2: 0.9}\n  off_limits: [\"*@lawfirm.example\"]\n  cache_ttl: 2h\n\
         audit:\n  store_drafts: false\n\
         preflight:\n  rotation_overdue: fail\n\
         enforcement: best_effort\n",
    );

    let output = fixture.run(&["policy", "show", "full", "--json"]);

    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    let policy: Value = serde_json::from_str(&stdout(&output)).unwrap();
    assert_eq!(policy["app"], "full");
    assert_eq!(policy["limits"]["timeout"], 90.0);
    assert_eq!(policy["limits"]["memory"], 512 * 1024 * 1024);
    assert_eq!(policy["limits"]["cpu"], 60.0);
    assert_eq!(
        policy["network"]["tcp_connect"],
        serde_json::json!([443, 8443])
    );
    assert_eq!(policy["credentials"]["fd"], 5);
    assert_eq!(policy["credentials"]["format"], "json");
    assert_eq!(policy["rate_limits"]["burst"]["burst"], 3);
    assert_eq!(policy["email"]["cache_ttl"], 7200.0);
    assert_eq!(policy["audit"]["store_drafts"], false);
    assert_eq!(policy["enforcement"], "best_effort");
    assert_eq!(policy["filesystem"]["missing"], "skip");

    fixture.write_policy("rebuilt", &policy_from_json(&policy));
    let rebuilt_output = fixture.run(&["policy", "show", "rebuilt", "--json"]);

    assert_eq!(
        rebuilt_output.status.code(),
        Some(0),
        "stderr: {}",
        stderr(&rebuilt_output)
    );
    let rebuilt: Value = serde_json::from_str(&stdout(&rebuilt_output)).unwrap();
    assert_eq!(settings_only(rebuilt), settings_only(policy));
}
