//! Helpers shared by the rate-limit, guard and channel tests: vault set-up
//! and reading the audit records, whatever the log's file layout.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is the failure report.
#![allow(dead_code, reason = "each test file uses a different subset")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

/// Creates the vault with a key file next to it, so the audit log has its key.
pub fn init_vault(bin: &str, vault: &Path, key_file: &Path) {
    let output = Command::new(bin)
        .args(["init", "--key-backend", "file", "--key-file"])
        .arg(key_file)
        .arg("--vault")
        .arg(vault)
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|err| panic!("failed to run safe-exec init: {err}"));
    assert!(
        output.status.success(),
        "safe-exec init failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Returns every `.jsonl` file under `<vault>/audit`, sorted by path.
pub fn audit_files(vault: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut pending = vec![vault.join("audit")];
    while let Some(dir) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "jsonl") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
}

/// Returns the text of every audit file of `app` (files whose path names it).
pub fn audit_text(vault: &Path, app: &str) -> String {
    audit_files(vault)
        .iter()
        .filter(|path| path.to_string_lossy().contains(app))
        .map(|path| std::fs::read_to_string(path).unwrap_or_default())
        .collect()
}

/// Returns the audit records of `app`, one JSON value per line.
pub fn audit_records(vault: &Path, app: &str) -> Vec<serde_json::Value> {
    audit_text(vault, app)
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str(line)
                .unwrap_or_else(|err| panic!("invalid audit line {line:?}: {err}"))
        })
        .collect()
}

/// Returns true when `safe-exec run` refused because this kernel cannot
/// enforce Landlock or seccomp: the preflight check fails (exit 77) or the
/// prepared sandbox reports a missing layer (exit 125).
pub fn sandbox_unavailable(output: &Output) -> bool {
    let stderr = String::from_utf8_lossy(&output.stderr);
    match output.status.code() {
        Some(77) => stderr.contains("kernel.landlock") || stderr.contains("kernel.seccomp"),
        Some(125) => stderr.contains("cannot enforce"),
        _ => false,
    }
}
