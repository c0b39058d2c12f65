//! `validate`: checks that the vault, the key file, the audit logs and the
//! policies are private to their owner (directories 0700, files 0600) and,
//! with `--fix`, sets those modes.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::format::BackendRecord;
use super::store;
use crate::context::Context;

/// A path whose mode or owner is wrong.
#[derive(Debug, Clone, Serialize)]
pub struct PermissionIssue {
    pub path: PathBuf,
    /// `vault`, `key file`, `audit log` or `policy`.
    pub area: &'static str,
    pub problem: String,
    /// Set when `--fix` changed the mode.
    pub fixed: bool,
}

/// Checks every path and, when `fix` is set, repairs modes. Owners are only reported.
pub fn validate(context: &Context, fix: bool) -> (Vec<PermissionIssue>, usize) {
    let mut issues = Vec::new();
    let mut checked = 0usize;
    let audit_dir = context.audit_dir();

    walk(&context.vault_dir, &mut |path, metadata| {
        checked += 1;
        let area = if path.starts_with(&audit_dir) {
            "audit log"
        } else {
            "vault"
        };
        check(path, metadata, area, fix, &mut issues);
    });

    if let Ok(file) = store::read_file(&context.vault_dir)
        && let BackendRecord::File { path } = &file.header.backend
        && let Ok(metadata) = std::fs::symlink_metadata(path)
    {
        checked += 1;
        check(path, &metadata, "key file", fix, &mut issues);
    }

    if context.policy_dir.is_dir() {
        walk(&context.policy_dir, &mut |path, metadata| {
            checked += 1;
            check(path, metadata, "policy", fix, &mut issues);
        });
    }
    (issues, checked)
}

fn walk(root: &Path, visit: &mut dyn FnMut(&Path, &std::fs::Metadata)) {
    let Ok(metadata) = std::fs::symlink_metadata(root) else {
        return;
    };
    visit(root, &metadata);
    if !metadata.is_dir() {
        return;
    }
    let Ok(entries) = std::fs::read_dir(root) else {
        return;
    };
    for entry in entries.flatten() {
        walk(&entry.path(), visit);
    }
}

fn check(
    path: &Path,
    metadata: &std::fs::Metadata,
    area: &'static str,
    fix: bool,
    issues: &mut Vec<PermissionIssue>,
) {
    if metadata.file_type().is_symlink() {
        issues.push(PermissionIssue {
            path: path.to_owned(),
            area,
            problem: "is a symbolic link; replace it with the file itself".into(),
            fixed: false,
        });
        return;
    }
    let euid = nix::unistd::geteuid().as_raw();
    if metadata.uid() != euid {
        issues.push(PermissionIssue {
            path: path.to_owned(),
            area,
            problem: format!(
                "owned by uid {}, not by you (uid {euid}); change the owner with chown",
                metadata.uid()
            ),
            fixed: false,
        });
    }
    let mode = metadata.mode() & 0o7777;
    let (expected, kind) = if metadata.is_dir() {
        (0o700, "directory")
    } else {
        (0o600, "file")
    };
    if mode & 0o077 == 0 {
        return;
    }
    let fixed =
        fix && std::fs::set_permissions(path, std::fs::Permissions::from_mode(expected)).is_ok();
    issues.push(PermissionIssue {
        path: path.to_owned(),
        area,
        problem: format!(
            "{kind} mode is {mode:04o}; expected {expected:04o} (no access for group and others)"
        ),
        fixed,
    });
}
