//! Static checks on a resolved policy that the YAML schema cannot express.
//!
//! Landlock rules only add rights, so a narrower rule inside a wider grant
//! cannot take rights away: such a policy is rejected here instead of being
//! silently widened. Grants must also keep away from the vault, the policy
//! directory and the supervisor's own files.

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::{Policy, Position, RuleTarget};

/// Paths no policy may grant, and the supervisor's own executable.
#[derive(Debug, Clone)]
pub struct Protected {
    /// Directories no grant may cover or reach into, each with a label for messages.
    pub dirs: Vec<(String, PathBuf)>,
    /// The safe-exec executable: no write grant may cover it.
    pub executable: Option<PathBuf>,
}

/// One problem found by `lint`.
#[derive(Debug, Clone, Serialize)]
pub struct Finding {
    pub file: PathBuf,
    pub position: Option<Position>,
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.position {
            Some(position) => write!(f, "{}:{}: {}", self.file.display(), position, self.message),
            None => write!(f, "{}: {}", self.file.display(), self.message),
        }
    }
}

/// Returns every problem in `policy`; an empty list means it passes.
pub fn lint(policy: &Policy, protected: &Protected) -> Vec<Finding> {
    let mut findings = Vec::new();
    check_narrowing(policy, &mut findings);
    check_protected(policy, protected, &mut findings);
    findings
}

fn check_narrowing(policy: &Policy, findings: &mut Vec<Finding>) {
    for inner in &policy.filesystem.rules {
        let Some(inner_path) = inner.path() else {
            continue;
        };
        for outer in &policy.filesystem.rules {
            let Some(outer_path) = outer.path() else {
                continue;
            };
            if inner_path == outer_path || !inner_path.starts_with(outer_path) {
                continue;
            }
            if outer.access.exceeds(inner.access) {
                findings.push(Finding {
                    file: policy.file.clone(),
                    position: Some(inner.position),
                    message: format!(
                        "{} grant on {} lies inside the {} grant on {} (line {}); Landlock rules only add \
                         rights, so it would get {} anyway. Remove the inner rule or narrow the outer one",
                        inner.access.label(),
                        inner_path.display(),
                        outer.access.label(),
                        outer_path.display(),
                        outer.position.line,
                        outer.access.label(),
                    ),
                });
            }
        }
    }
}

fn check_protected(policy: &Policy, protected: &Protected, findings: &mut Vec<Finding>) {
    for rule in &policy.filesystem.rules {
        let RuleTarget::Path { path, .. } = &rule.target else {
            continue;
        };
        for (label, dir) in &protected.dirs {
            let relation = if dir.starts_with(path) {
                "covers"
            } else if path.starts_with(dir) {
                "lies inside"
            } else {
                continue;
            };
            findings.push(Finding {
                file: policy.file.clone(),
                position: Some(rule.position),
                message: format!(
                    "{} grant on {} {relation} the {label} {}; the app must never reach it. Grant a path outside it",
                    rule.access.label(),
                    path.display(),
                    dir.display()
                ),
            });
        }
        if let Some(exe) = &protected.executable
            && rule.access.write
            && exe.starts_with(path)
        {
            findings.push(Finding {
                file: policy.file.clone(),
                position: Some(rule.position),
                message: format!(
                    "write grant on {} covers the safe-exec executable {}; the app could replace its own \
                     supervisor. Grant a narrower path",
                    path.display(),
                    exe.display()
                ),
            });
        }
    }
    let workdir_protected = protected
        .dirs
        .iter()
        .find(|(_, dir)| policy.workdir.starts_with(dir));
    if let Some((label, dir)) = workdir_protected {
        findings.push(Finding {
            file: policy.file.clone(),
            position: None,
            message: format!(
                "workdir {} lies inside the {label} {}; choose another workdir",
                policy.workdir.display(),
                dir.display()
            ),
        });
    }
}

/// Returns true when `path` is `dir` or lies below it.
pub fn is_within(path: &Path, dir: &Path) -> bool {
    path.starts_with(dir)
}
