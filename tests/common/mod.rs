//! Shared set-up for integration tests: a temporary home with a vault, a
//! policy directory and an app directory, and helpers that run the real
//! `safe-exec` binary against them.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is the failure report.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Path of the `safe-exec` binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_safe-exec")
}

/// A private test environment in a temporary directory.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub vault: PathBuf,
    pub policies: PathBuf,
    pub app: PathBuf,
    pub key_file: PathBuf,
}

impl TestEnv {
    /// Creates the directories and initialises the vault with the file key backend.
    pub fn new() -> Self {
        let env = Self::without_vault();
        let output = env
            .command(&["init", "--key-backend", "file", "--key-file"])
            .arg(&env.key_file)
            .output()
            .expect("run safe-exec init");
        assert!(
            output.status.success(),
            "safe-exec init failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        env
    }

    /// Creates the directories but no vault.
    pub fn without_vault() -> Self {
        let dir = tempfile::Builder::new()
            .prefix("safe-exec-test-")
            .tempdir()
            .expect("create temp dir");
        let root = dir.path().to_path_buf();
        let policies = root.join("policies");
        let app = root.join("app");
        std::fs::create_dir(&policies).expect("create policy dir");
        std::fs::create_dir(&app).expect("create app dir");
        Self {
            vault: root.join("vault"),
            policies,
            app,
            key_file: root.join("master.key"),
            dir,
        }
    }

    /// Returns the temporary root directory.
    pub fn root(&self) -> &Path {
        self.dir.path()
    }

    /// Writes `policies/<app>.yaml`.
    pub fn policy(&self, app: &str, yaml: &str) -> PathBuf {
        let path = self.policies.join(format!("{app}.yaml"));
        std::fs::write(&path, yaml).expect("write policy");
        path
    }

    /// Writes a policy running `/bin/sh -c SCRIPT` in the app directory with read access to it.
    pub fn shell_policy(&self, app: &str, script: &str, extra: &str) -> PathBuf {
        let yaml = format!(
            "version: 1\ncommand: [/bin/sh, -c, {script:?}]\nworkdir: {app_dir:?}\nfilesystem:\n  read: [{app_dir:?}]\n  write: [\"{{tmp}}\"]\n{extra}",
            app_dir = self.app.display().to_string(),
        );
        self.policy(app, &yaml)
    }

    /// Returns a `safe-exec` command with `--vault` and `--policy-dir` set and stdin closed.
    pub fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(binary());
        command
            .arg("--vault")
            .arg(&self.vault)
            .arg("--policy-dir")
            .arg(&self.policies)
            .args(args);
        command.stdin(Stdio::null());
        command
            .env_remove("SAFE_EXEC_VAULT")
            .env_remove("SAFE_EXEC_POLICY_DIR")
            .env_remove("SAFE_EXEC_NAMESPACES");
        command
    }

    /// Runs `safe-exec ARGS` and returns its output.
    pub fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run safe-exec")
    }

    /// Returns the parsed audit records of `app`, oldest first, from every audit file of the app.
    pub fn audit_records(&self, app: &str) -> Vec<serde_json::Value> {
        let output = self.run(&[
            "audit", "search", "--app", app, "--json", "--limit", "100000",
        ]);
        if output.status.success() {
            let mut records: Vec<serde_json::Value> = String::from_utf8_lossy(&output.stdout)
                .lines()
                .filter_map(|line| serde_json::from_str(line).ok())
                .collect();
            records.sort_by_key(|r| r["seq"].as_u64().unwrap_or(0));
            return records;
        }
        // Before `audit search` exists: read the single-file log directly.
        let file = self.vault.join("audit").join(format!("{app}.jsonl"));
        std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .filter_map(|line| serde_json::from_str(line).ok())
            .collect()
    }
}

/// Returns stdout as text.
pub fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// Returns stderr as text.
pub fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Returns the exit code, panicking with the output when the process died by a signal.
pub fn code(output: &Output) -> i32 {
    output
        .status
        .code()
        .unwrap_or_else(|| panic!("safe-exec died by a signal: {output:?}"))
}
