//! The bundled example app, `examples/weekly-budget-report/report.py`: first
//! run by Debian's Python on a copy of its directory (the summary it writes,
//! invalid data, the credential pipe), then through safe-exec under the
//! shipped policy with a vault in a temporary directory.

#![allow(
    clippy::unwrap_used,
    reason = "a test stops at the first unexpected error"
)]

use std::fs;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use serde_json::Value;

const PYTHON: &str = "/usr/bin/python3";
const SUMMARY: &str = "weekly-summary-2026-11-16";

/// A copy of the example app in a temporary directory.
struct AppCopy {
    _temp: tempfile::TempDir,
    dir: PathBuf,
}

impl AppCopy {
    fn new() -> Self {
        let temp = tempfile::tempdir().unwrap();
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/weekly-budget-report");
        let dir = temp.path().join("weekly-budget-report");
        fs::create_dir_all(dir.join("data")).unwrap();
        fs::create_dir_all(dir.join("out")).unwrap();
        fs::copy(source.join("report.py"), dir.join("report.py")).unwrap();
        for name in ["transactions.csv", "budget.json"] {
            fs::copy(source.join("data").join(name), dir.join("data").join(name)).unwrap();
        }
        Self { _temp: temp, dir }
    }

    /// Runs report.py through `sh -c SCRIPT`, where `$0` is the interpreter.
    fn run_shell(&self, script: &str, envs: &[(&str, &str)]) -> Output {
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(script)
            .arg(PYTHON)
            .current_dir(&self.dir)
            .env_remove("SAFE_EXEC_CREDENTIALS_FD");
        for (key, value) in envs {
            command.env(key, value);
        }
        command.output().unwrap()
    }

    fn run(&self) -> Output {
        self.run_shell("exec \"$0\" report.py", &[])
    }

    /// Runs with `credentials` readable at descriptor 3 and SAFE_EXEC_CREDENTIALS_FD=3.
    fn run_with_credentials(&self, credentials: &str) -> Output {
        let file = self.dir.join("credentials.txt");
        fs::write(&file, credentials).unwrap();
        let script = format!("exec \"$0\" report.py 3<'{}'", file.display());
        self.run_shell(&script, &[("SAFE_EXEC_CREDENTIALS_FD", "3")])
    }

    fn summary_json(&self) -> Value {
        let text =
            fs::read_to_string(self.dir.join("out").join(format!("{SUMMARY}.json"))).unwrap();
        serde_json::from_str(&text).unwrap()
    }
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn report_summarises_latest_week() {
    let app = AppCopy::new();

    let output = app.run();

    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    assert!(
        stdout(&output).contains("running offline from the bundled data"),
        "stdout: {}",
        stdout(&output)
    );
    let summary = app.summary_json();
    assert_eq!(summary["week_start"], "2026-11-16");
    assert_eq!(summary["week_end"], "2026-11-22");
    assert_eq!(summary["transactions"], 17);
    assert_eq!(summary["total_spent"], "651.68");
    assert_eq!(summary["total_budget"], "901.00");
    assert_eq!(summary["income"], "2450.00");
    assert_eq!(
        summary["over_budget"],
        serde_json::json!(["Groceries", "Household", "Utilities", "Entertainment"])
    );
    assert_eq!(summary["unbudgeted"], serde_json::json!(["Gifts"]));

    let categories = summary["categories"].as_array().unwrap();
    let groceries = categories
        .iter()
        .find(|c| c["category"] == "Groceries")
        .unwrap();
    assert_eq!(groceries["spent"], "234.14");
    assert_eq!(groceries["remaining"], "-34.14");
    // The returned lamp (an inflow in Household) reduces that week's spending.
    let household = categories
        .iter()
        .find(|c| c["category"] == "Household")
        .unwrap();
    assert_eq!(household["spent"], "60.79");

    let markdown = fs::read_to_string(app.dir.join("out").join(format!("{SUMMARY}.md"))).unwrap();
    assert!(
        markdown.starts_with("# Weekly budget summary: 2026-11-16 to 2026-11-22"),
        "{markdown}"
    );
    assert!(
        markdown.contains("| Groceries | 200.00 USD | 234.14 USD |"),
        "{markdown}"
    );
    assert!(
        markdown.contains("- Groceries: 34.14 USD over"),
        "{markdown}"
    );
}

#[test]
fn report_rejects_bad_amount_with_line() {
    let app = AppCopy::new();
    let csv = app.dir.join("data/transactions.csv");
    let text = fs::read_to_string(&csv).unwrap();
    let mut lines: Vec<String> = text.lines().map(str::to_owned).collect();
    lines[11] = "2026-11-01,Checking,Chipotle,Dining Out,,12.x5,".to_owned();
    fs::write(&csv, lines.join("\n") + "\n").unwrap();

    let output = app.run();

    assert_eq!(output.status.code(), Some(2));
    let expected = "data/transactions.csv:12: outflow is '12.x5', not an amount such as 12.50";
    assert!(
        stderr(&output).contains(expected),
        "stderr: {}",
        stderr(&output)
    );
    assert!(
        !app.dir.join("out").join(format!("{SUMMARY}.json")).exists(),
        "no summary from bad data"
    );
}

#[test]
fn report_rejects_bad_budget_json() {
    let app = AppCopy::new();
    let budget = app.dir.join("data/budget.json");
    fs::write(
        &budget,
        "{\n  \"currency\": \"USD\",\n  \"weekly\": {\"Groceries\": \"lots\"}\n}\n",
    )
    .unwrap();

    let output = app.run();

    assert_eq!(output.status.code(), Some(2));
    let expected = "data/budget.json:3: budget of 'Groceries' is 'lots'";
    assert!(
        stderr(&output).contains(expected),
        "stderr: {}",
        stderr(&output)
    );

    fs::write(&budget, "{\"weekly\": {\n").unwrap();
    let output = app.run();

    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).contains("data/budget.json:2: invalid JSON"),
        "stderr: {}",
        stderr(&output)
    );
}

#[test]
fn report_reads_dotenv_credentials() {
    let app = AppCopy::new();
    let token = "ynab-token-\\\"quoted\\\"-123";

    let output = app.run_with_credentials(&format!(
        "# from safe-exec\nexport YNAB_API_KEY=\"{token}\"\nOTHER=x\n"
    ));

    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    // The escaped quotes decode to one character each: 23 characters in all.
    assert!(
        stdout(&output).contains("would call the API with a token of 23 characters"),
        "stdout: {}",
        stdout(&output)
    );
    assert!(
        !stdout(&output).contains("ynab-token"),
        "the token is never printed"
    );
    assert!(
        !stderr(&output).contains("ynab-token"),
        "the token is never printed"
    );
    let summary = app.summary_json();
    assert_eq!(summary["source"], "Bundled data; the API was not called.");
}

#[test]
fn report_reads_single_quoted_multiline_value() {
    let app = AppCopy::new();

    // safe-exec writes values without a single quote in single quotes, even across lines.
    let output = app.run_with_credentials(
        "YNAB_API_KEY='-----BEGIN KEY-----\nabc\n-----END KEY-----'\nNEXT='x'\n",
    );

    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    assert!(
        stdout(&output).contains("a token of 41 characters"),
        "stdout: {}",
        stdout(&output)
    );
}

#[test]
fn report_reads_json_credentials() {
    let app = AppCopy::new();

    let output = app.run_with_credentials("{\"YNAB_API_KEY\": \"0123456789\"}");

    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    assert!(
        stdout(&output).contains("a token of 10 characters"),
        "stdout: {}",
        stdout(&output)
    );
}

#[test]
fn report_without_token_runs_offline() {
    let app = AppCopy::new();

    let output = app.run_with_credentials("OTHER_KEY=\"x\"\n");

    assert_eq!(output.status.code(), Some(0), "stderr: {}", stderr(&output));
    assert!(
        stdout(&output).contains("has no YNAB_API_KEY"),
        "stdout: {}",
        stdout(&output)
    );
}

#[test]
fn report_rejects_bad_credential_line() {
    let app = AppCopy::new();

    let output = app.run_with_credentials("YNAB_API_KEY=\"secret-value\nnot a line\n");

    assert_eq!(output.status.code(), Some(2));
    let message = stderr(&output);
    assert!(
        message.contains("credential pipe (SAFE_EXEC_CREDENTIALS_FD=3):1: unterminated"),
        "stderr: {message}"
    );
    assert!(
        !message.contains("secret-value"),
        "the value is never printed: {message}"
    );
}

/// A copy of the shipped policy and the app laid out as in the repository,
/// with an initialised vault, for runs through safe-exec.
struct Sandboxed {
    _temp: tempfile::TempDir,
    root: PathBuf,
}

impl Sandboxed {
    fn new() -> Self {
        let temp = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(temp.path()).unwrap();
        let repo = Path::new(env!("CARGO_MANIFEST_DIR"));
        let source = repo.join("examples/weekly-budget-report");
        let app = root.join("examples/weekly-budget-report");
        for dir in [
            app.join("data"),
            app.join("out"),
            root.join("policies"),
            root.join("home"),
        ] {
            fs::create_dir_all(dir).unwrap();
        }
        fs::copy(source.join("report.py"), app.join("report.py")).unwrap();
        for name in ["transactions.csv", "budget.json"] {
            fs::copy(source.join("data").join(name), app.join("data").join(name)).unwrap();
        }
        let policy = root.join("policies/weekly-budget-report.yaml");
        fs::copy(repo.join("policies/weekly-budget-report.yaml"), &policy).unwrap();
        fs::set_permissions(&policy, fs::Permissions::from_mode(0o600)).unwrap();
        fs::create_dir_all(root.join("key")).unwrap();
        fs::set_permissions(root.join("key"), fs::Permissions::from_mode(0o700)).unwrap();

        let sandboxed = Self { _temp: temp, root };
        let key_file = sandboxed.root.join("key/master.key");
        let init = sandboxed
            .safe_exec(&[
                "init",
                "--key-backend",
                "file",
                "--key-file",
                key_file.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert_eq!(
            init.status.code(),
            Some(0),
            "init failed: {}",
            stderr(&init)
        );
        sandboxed
    }

    /// Returns safe-exec with this copy's vault, policy directory and HOME, and stdin on /dev/null.
    fn safe_exec(&self, args: &[&str]) -> Command {
        let mut command = Command::new(env!("CARGO_BIN_EXE_safe-exec"));
        command
            .arg("--vault")
            .arg(self.root.join("vault"))
            .arg("--policy-dir")
            .arg(self.root.join("policies"))
            .args(args)
            .current_dir(&self.root)
            .env("HOME", self.root.join("home"))
            .env_remove("SAFE_EXEC_VAULT")
            .env_remove("SAFE_EXEC_POLICY_DIR")
            .stdin(Stdio::null());
        command
    }

    fn store_token(&self, token: &str) {
        let mut store = self
            .safe_exec(&[
                "cred",
                "store",
                "--service",
                "weekly-budget",
                "--key",
                "YNAB_API_KEY",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        store
            .stdin
            .take()
            .unwrap()
            .write_all(token.as_bytes())
            .unwrap();
        let output = store.wait_with_output().unwrap();
        assert_eq!(
            output.status.code(),
            Some(0),
            "cred store failed: {}",
            stderr(&output)
        );
    }

    fn app_dir(&self) -> PathBuf {
        self.root.join("examples/weekly-budget-report")
    }
}

#[test]
fn sandboxed_run_writes_summary() {
    let sandboxed = Sandboxed::new();

    let output = sandboxed
        .safe_exec(&["weekly-budget-report"])
        .output()
        .unwrap();

    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout: {} stderr: {}",
        stdout(&output),
        stderr(&output)
    );
    let out = sandboxed.app_dir().join("out");
    let text = fs::read_to_string(out.join(format!("{SUMMARY}.json"))).unwrap();
    let summary: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(summary["total_spent"], "651.68");
    assert!(out.join(format!("{SUMMARY}.md")).exists());
    // No token is stored, so the optional key is not delivered and the app runs offline.
    assert!(
        stdout(&output).contains("offline from the bundled data"),
        "stdout: {}",
        stdout(&output)
    );
    // The app directory is read-only: nothing but out/ was written.
    let mut entries: Vec<String> = fs::read_dir(sandboxed.app_dir())
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    entries.sort();
    assert_eq!(entries, ["data", "out", "report.py"]);
}

#[test]
fn sandboxed_run_receives_stored_token() {
    let sandboxed = Sandboxed::new();
    let token = "ynab-test-token-0123456789";
    sandboxed.store_token(token);

    let output = sandboxed
        .safe_exec(&["weekly-budget-report"])
        .output()
        .unwrap();

    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout: {} stderr: {}",
        stdout(&output),
        stderr(&output)
    );
    let expected = format!(
        "would call the API with a token of {} characters",
        token.len()
    );
    assert!(
        stdout(&output).contains(&expected),
        "stdout: {}",
        stdout(&output)
    );
    assert!(
        !stdout(&output).contains(token),
        "the token is never printed"
    );
    assert!(
        !stderr(&output).contains(token),
        "the token is never printed"
    );
    let summary = fs::read_to_string(
        sandboxed
            .app_dir()
            .join("out")
            .join(format!("{SUMMARY}.json")),
    )
    .unwrap();
    assert!(
        !summary.contains(token),
        "the token is never written to the summary"
    );
}

#[test]
fn sandboxed_run_passes_extra_arguments() {
    let sandboxed = Sandboxed::new();

    let output = sandboxed
        .safe_exec(&["weekly-budget-report", "--", "--week", "2026-11-11"])
        .output()
        .unwrap();

    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout: {} stderr: {}",
        stdout(&output),
        stderr(&output)
    );
    let file = sandboxed
        .app_dir()
        .join("out/weekly-summary-2026-11-09.json");
    let summary: Value = serde_json::from_str(&fs::read_to_string(file).unwrap()).unwrap();
    assert_eq!(summary["week_start"], "2026-11-09");
    assert_eq!(summary["week_end"], "2026-11-15");
}
