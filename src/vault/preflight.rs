//! The credential part of preflight: required keys present and decryptable,
//! rotation due dates, and plaintext secrets within the app's filesystem grants.
//!
//! Findings name paths and keys, never values.

use std::path::{Path, PathBuf};

use chrono::Utc;

use super::{VaultError, dotenv, store};
use crate::context::Context;
use crate::policy::{Policy, Severity};

pub use crate::preflight::{Check as Finding, Status};
use serde::Serialize;

/// Most directory entries the plaintext-secret scan visits per run.
const SCAN_ENTRY_LIMIT: usize = 20_000;

/// Deepest directory level below a grant that the scan enters.
const SCAN_DEPTH: usize = 6;

/// Runs the credential checks for `policy`.
pub fn preflight(context: &Context, policy: &Policy) -> Vec<Finding> {
    let mut findings = Vec::new();
    if let Some(creds) = &policy.credentials {
        findings.extend(check_credentials(context, policy, creds));
    }
    findings.push(check_plaintext(policy));
    findings
}

fn check_credentials(
    context: &Context,
    policy: &Policy,
    creds: &crate::policy::CredentialsPolicy,
) -> Vec<Finding> {
    let (file, keys) = match store::open_read_only(&context.vault_dir) {
        Ok(opened) => opened,
        Err(err) => {
            return vec![Finding::new(
                "credentials",
                Status::Fail,
                format!("cannot open the vault: {err}"),
            )];
        }
    };
    let mut findings = Vec::new();

    let missing: Vec<&str> = creds
        .keys
        .iter()
        .filter(|key| file.find(&creds.service, key).is_none())
        .map(String::as_str)
        .collect();
    let mut damaged = Vec::new();
    for key in creds.keys.iter().chain(&creds.optional) {
        if file.find(&creds.service, key).is_some()
            && let Err(err) = store::decrypt_check(&file, &keys, &creds.service, key)
        {
            damaged.push(err.to_string());
        }
    }
    let status = if missing.is_empty() && damaged.is_empty() {
        Status::Pass
    } else {
        Status::Fail
    };
    let mut message = if missing.is_empty() {
        format!(
            "{} required key(s) of service {} present",
            creds.keys.len(),
            creds.service
        )
    } else {
        format!(
            "service {} is missing required key(s): {}; add them with `safe-exec cred store`",
            creds.service,
            missing.join(", ")
        )
    };
    if !damaged.is_empty() {
        message.push_str("; ");
        message.push_str(&damaged.join("; "));
    }
    findings.push(Finding::new("credentials", status, message));

    let now = Utc::now();
    let overdue: Vec<String> = creds
        .keys
        .iter()
        .chain(&creds.optional)
        .filter_map(|key| file.find(&creds.service, key))
        .filter(|entry| entry.rotation_due().is_some_and(|due| due < now))
        .map(|entry| entry.key.clone())
        .collect();
    let rotation = if overdue.is_empty() {
        Finding::new(
            "credential_rotation",
            Status::Pass,
            "no credential of this app is past its rotation date",
        )
    } else {
        let status = match policy.preflight.rotation_overdue {
            Severity::Warn => Status::Warn,
            Severity::Fail => Status::Fail,
        };
        Finding::new(
            "credential_rotation",
            status,
            format!(
                "past the rotation date: {}; run `safe-exec cred rotate --service {}`",
                overdue.join(", "),
                creds.service
            ),
        )
    };
    findings.push(rotation);
    findings
}

/// A plaintext secret found on disk: where, and under which name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlaintextSecret {
    pub path: PathBuf,
    /// The key, or `server/ENV_NAME` for an MCP server config.
    pub name: String,
}

fn check_plaintext(policy: &Policy) -> Finding {
    let roots: Vec<&Path> = policy
        .filesystem
        .rules
        .iter()
        .filter_map(|rule| rule.path())
        .chain([policy.workdir.as_path()])
        .collect();
    let (found, truncated) = scan_plaintext(&roots);
    let status = match (found.is_empty(), policy.preflight.plaintext_secrets) {
        (true, _) => Status::Pass,
        (false, Severity::Warn) => Status::Warn,
        (false, Severity::Fail) => Status::Fail,
    };
    let mut message = if found.is_empty() {
        "no .env file or inline MCP server secret within the app's grants".to_owned()
    } else {
        let listed: Vec<String> = found
            .iter()
            .map(|secret| format!("{} ({})", secret.path.display(), secret.name))
            .collect();
        format!(
            "plaintext secrets within the app's grants: {}; move them into the vault with `safe-exec cred migrate`",
            listed.join(", ")
        )
    };
    if truncated {
        message.push_str(&format!(" (scan stopped after {SCAN_ENTRY_LIMIT} entries)"));
    }
    Finding::new("plaintext_secrets", status, message)
}

/// Walks the given paths for `.env` files and MCP server configs holding
/// inline secrets. Returns the findings and whether the entry limit was hit.
pub fn scan_plaintext(roots: &[&Path]) -> (Vec<PlaintextSecret>, bool) {
    let mut found = Vec::new();
    let mut visited = 0usize;
    let mut seen_files = std::collections::BTreeSet::new();
    let mut stack: Vec<(PathBuf, usize)> =
        roots.iter().map(|root| (root.to_path_buf(), 0)).collect();

    while let Some((path, depth)) = stack.pop() {
        visited += 1;
        if visited > SCAN_ENTRY_LIMIT {
            return (found, true);
        }
        let Ok(metadata) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        if metadata.is_dir() {
            if depth >= SCAN_DEPTH {
                continue;
            }
            let Ok(entries) = std::fs::read_dir(&path) else {
                continue;
            };
            for entry in entries.flatten() {
                let name = entry.file_name();
                // Dependency and VCS trees hold no user secrets and are large.
                if matches!(
                    name.to_str(),
                    Some("node_modules" | ".git" | "target" | "__pycache__" | ".venv" | "venv")
                ) {
                    continue;
                }
                stack.push((entry.path(), depth + 1));
            }
        } else if metadata.is_file() && seen_files.insert(path.clone()) {
            found.extend(inspect_file(&path));
        }
    }
    found.sort_by(|a, b| (&a.path, &a.name).cmp(&(&b.path, &b.name)));
    (found, false)
}

/// Returns whether a file name is a `.env` file that may hold real values.
pub fn is_env_file(name: &str) -> bool {
    let template = [".example", ".sample", ".template", ".dist", ".defaults"]
        .iter()
        .any(|suffix| name.ends_with(suffix));
    (name == ".env" || name.starts_with(".env.") || name.ends_with(".env")) && !template
}

fn inspect_file(path: &Path) -> Vec<PlaintextSecret> {
    let Some(name) = path.file_name().and_then(|name| name.to_str()) else {
        return Vec::new();
    };
    let secret = |name: String| PlaintextSecret {
        path: path.to_owned(),
        name,
    };
    if is_env_file(name) {
        let Ok(bytes) = std::fs::read(path) else {
            return Vec::new();
        };
        return dotenv::parse(&bytes)
            .entries
            .into_iter()
            .filter(|entry| !entry.value.is_empty())
            .map(|entry| secret(entry.key))
            .collect();
    }
    if matches!(
        name,
        ".mcp.json"
            | "mcp.json"
            | "claude_desktop_config.json"
            | ".claude.json"
            | "mcp_settings.json"
    ) {
        let Ok(bytes) = std::fs::read(path) else {
            return Vec::new();
        };
        return mcp_inline_secrets(&bytes).into_iter().map(secret).collect();
    }
    Vec::new()
}

/// Lists `server/NAME` for every literal value in an MCP server's `env` or
/// `headers`, skipping references such as `${VAR}` and empty strings.
pub fn mcp_inline_secrets(bytes: &[u8]) -> Vec<String> {
    let Ok(config) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return Vec::new();
    };
    let mut names = Vec::new();
    let mut servers = Vec::new();
    for field in ["mcpServers", "servers"] {
        if let Some(map) = config.get(field).and_then(|value| value.as_object()) {
            servers.extend(map.iter());
        }
    }
    if let Some(projects) = config.get("projects").and_then(|value| value.as_object()) {
        for project in projects.values() {
            if let Some(map) = project
                .get("mcpServers")
                .and_then(|value| value.as_object())
            {
                servers.extend(map.iter());
            }
        }
    }
    for (server, settings) in servers {
        for section in ["env", "headers"] {
            let Some(values) = settings.get(section).and_then(|value| value.as_object()) else {
                continue;
            };
            for (name, value) in values {
                let literal = value.as_str().is_some_and(|text| {
                    !text.is_empty() && (!text.starts_with("${") || !text.ends_with('}'))
                });
                if literal {
                    names.push(format!("{server}/{name}"));
                }
            }
        }
    }
    names
}

impl From<&VaultError> for Finding {
    fn from(err: &VaultError) -> Self {
        Finding::new("credentials", Status::Fail, err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mcp_config_inline_tokens() {
        let config = br#"{"mcpServers":{"gh":{"command":"x","env":{"GITHUB_TOKEN":"ghp_x","EMPTY":"","REF":"${GH}"}}}}"#;
        assert_eq!(
            mcp_inline_secrets(config),
            vec!["gh/GITHUB_TOKEN".to_owned()]
        );
    }

    #[test]
    fn env_file_names() {
        assert!(is_env_file(".env"));
        assert!(is_env_file(".env.local"));
        assert!(is_env_file("prod.env"));
        assert!(!is_env_file(".env.example"));
        assert!(!is_env_file("environment.py"));
    }
}
