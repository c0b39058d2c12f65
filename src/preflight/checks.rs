//! The individual preflight checks.

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use nix::unistd::Uid;

use super::{Check, Report};
use crate::context::Context;
use crate::policy::{Enforcement, NetworkMode, Policy, RuleTarget, lint};
use crate::sandbox::kernel;
use crate::supervisor::plan;

/// Runs every check for `policy`.
pub fn run_checks(context: &Context, policy: &Policy) -> Report {
    let mut checks = Vec::new();
    checks.push(check_lint(context, policy));
    checks.extend(check_kernel(policy));
    checks.push(check_network(policy));
    checks.push(check_file_permissions(
        "permissions.policy",
        &policy.file,
        "policy file",
    ));
    checks.push(check_vault_permissions(context));
    checks.push(check_workdir(policy));
    checks.push(check_command(policy));
    checks.extend(check_paths(policy));
    checks.push(crate::ratelimit::preflight::check_state(context, policy));
    checks.extend(crate::vault::preflight(context, policy));
    Report {
        app: policy.app.clone(),
        checks,
    }
}

fn check_lint(context: &Context, policy: &Policy) -> Check {
    let findings = lint::lint(policy, &context.protected());
    if findings.is_empty() {
        return Check::pass("policy", format!("{} is valid", policy.file.display()));
    }
    let text: Vec<String> = findings.iter().map(ToString::to_string).collect();
    Check::fail("policy", text.join("; "))
}

fn check_kernel(policy: &Policy) -> Vec<Check> {
    let severity = |message: String| match policy.enforcement {
        Enforcement::Strict => Check::fail(
            "kernel.landlock",
            format!("{message}; set `enforcement: best_effort` to run without it"),
        ),
        Enforcement::BestEffort => Check::warn(
            "kernel.landlock",
            format!("{message}; running without it (best_effort)"),
        ),
    };
    let abi = kernel::landlock_abi();
    let mut needed = vec![(1, "filesystem rules")];
    if policy.filesystem.rules.iter().any(|rule| rule.access.write) {
        needed.push((2, "renaming across directories (REFER)"));
        needed.push((3, "truncate (TRUNCATE)"));
    }
    if policy.network.mode == NetworkMode::Open && !policy.network.tcp_connect.is_empty() {
        needed.push((4, "TCP connect port rules"));
    }
    needed.push((6, "abstract Unix socket and signal scopes"));
    let missing: Vec<String> = needed
        .iter()
        .filter(|(required, _)| abi < *required)
        .map(|(required, what)| format!("{what} (ABI {required})"))
        .collect();

    let landlock = if abi == 0 {
        severity("Landlock is not available in this kernel (needs Linux 5.13 or newer with lsm=landlock)".into())
    } else if missing.is_empty() {
        Check::pass("kernel.landlock", format!("Landlock ABI {abi}"))
    } else {
        severity(format!("Landlock ABI {abi} lacks {}", missing.join(", ")))
    };

    let seccomp = if kernel::seccomp_available() {
        Check::pass("kernel.seccomp", "seccomp filters available")
    } else {
        match policy.enforcement {
            Enforcement::Strict => Check::fail(
                "kernel.seccomp",
                "seccomp is not available in this kernel; set `enforcement: best_effort` to run without it",
            ),
            Enforcement::BestEffort => Check::warn(
                "kernel.seccomp",
                "seccomp is not available; running without a syscall filter (best_effort)",
            ),
        }
    };
    vec![landlock, seccomp]
}

fn check_network(policy: &Policy) -> Check {
    match policy.network.mode {
        NetworkMode::None => Check::pass(
            "network",
            "no network (empty network namespace, or no internet sockets)",
        ),
        NetworkMode::Open if policy.network.tcp_connect.is_empty() => Check::warn(
            "network",
            "open network with any TCP port; list ports in network.tcp_connect to narrow it",
        ),
        NetworkMode::Open => Check::pass(
            "network",
            format!(
                "open network, TCP connect to ports {:?}",
                policy.network.tcp_connect
            ),
        ),
        NetworkMode::Proxy => Check::fail(
            "network",
            "network.mode proxy is not supported by this version; use `mode: none`, or `mode: open` with `tcp_connect` ports",
        ),
    }
}

/// Fails when `path` is writable by group or others, or owned by another user than the caller or root.
pub fn check_file_permissions(name: &str, path: &Path, what: &str) -> Check {
    let meta = match std::fs::metadata(path) {
        Ok(meta) => meta,
        Err(err) => {
            return Check::fail(
                name,
                format!("cannot read {what} {}: {err}", path.display()),
            );
        }
    };
    let mode = meta.permissions().mode() & 0o777;
    let me = Uid::current().as_raw();
    if meta.uid() != me && meta.uid() != 0 {
        return Check::fail(
            name,
            format!(
                "{what} {} is owned by uid {}, not by you or root; chown it",
                path.display(),
                meta.uid()
            ),
        );
    }
    if mode & 0o022 != 0 {
        return Check::fail(
            name,
            format!(
                "{what} {} is writable by group or others (mode {mode:o}); run `chmod go-w {}` or `safe-exec validate --fix`",
                path.display(),
                path.display()
            ),
        );
    }
    Check::pass(name, format!("{what} {} mode {mode:o}", path.display()))
}

fn check_vault_permissions(context: &Context) -> Check {
    let vault = &context.vault_dir;
    if !vault.exists() {
        return Check::warn(
            "permissions.vault",
            format!(
                "vault {} does not exist yet; run `safe-exec init`",
                vault.display()
            ),
        );
    }
    let check = check_file_permissions("permissions.vault", vault, "vault directory");
    if check.status != super::Status::Pass {
        return check;
    }
    let mode = std::fs::metadata(vault)
        .map(|m| m.permissions().mode() & 0o777)
        .unwrap_or(0);
    if mode & 0o077 != 0 {
        return Check::warn(
            "permissions.vault",
            format!(
                "vault directory {} is readable by others (mode {mode:o}); run `safe-exec validate --fix`",
                vault.display()
            ),
        );
    }
    check
}

fn check_workdir(policy: &Policy) -> Check {
    let workdir = &policy.workdir;
    if !workdir.is_dir() {
        return Check::fail(
            "workdir",
            format!(
                "workdir {} does not exist or is not a directory; create it or fix `workdir`",
                workdir.display()
            ),
        );
    }
    let covered = policy
        .filesystem
        .rules
        .iter()
        .any(|rule| rule.path().is_some_and(|path| workdir.starts_with(path)));
    if !covered {
        return Check::warn(
            "workdir",
            format!(
                "workdir {} is not inside any filesystem grant, so the app cannot read it; add it to filesystem.read",
                workdir.display()
            ),
        );
    }
    Check::pass("workdir", workdir.display().to_string())
}

fn check_command(policy: &Policy) -> Check {
    let env = plan::build_env(policy, &[]);
    let path = match plan::resolve_command(policy, &env) {
        Ok(path) => path,
        Err(err) => return Check::fail("command", err.to_string()),
    };
    let canonical = std::fs::canonicalize(&path).unwrap_or_else(|_| path.clone());
    let in_system = policy.filesystem.system
        && kernel::SYSTEM_EXEC_DIRS
            .iter()
            .any(|dir| canonical.starts_with(dir));
    let in_exec =
        policy.filesystem.rules.iter().any(|rule| {
            rule.access.exec && rule.path().is_some_and(|dir| canonical.starts_with(dir))
        });
    if !in_system && !in_exec {
        let dir = canonical.parent().unwrap_or(Path::new("/"));
        return Check::fail(
            "command",
            format!(
                "{} is outside every exec grant, so Landlock would refuse to run it; add {} to filesystem.exec",
                canonical.display(),
                dir.display()
            ),
        );
    }
    if canonical != path {
        return Check::pass(
            "command",
            format!("{} -> {}", path.display(), canonical.display()),
        );
    }
    Check::pass("command", path.display().to_string())
}

fn check_paths(policy: &Policy) -> Vec<Check> {
    let mut checks = Vec::new();
    for rule in &policy.filesystem.rules {
        let name = format!("path {}", rule.declared);
        let access = rule.access.label();
        let check = match &rule.target {
            RuleTarget::RunTmp => {
                Check::pass(&name, format!("{access}: private per-run directory"))
            }
            RuleTarget::Path {
                path,
                exists: false,
                ..
            } => {
                let fix = if rule.access.write {
                    "create it (mkdir -p) or grant its parent"
                } else {
                    "create it or remove it from the policy"
                };
                match policy.filesystem.missing {
                    crate::policy::MissingPaths::Error => Check::fail(
                        &name,
                        format!(
                            "{access} path {} does not exist (line {}); {fix}, or set `filesystem.missing: skip`",
                            path.display(),
                            rule.position.line
                        ),
                    ),
                    crate::policy::MissingPaths::Skip => Check::warn(
                        &name,
                        format!(
                            "{access} path {} does not exist; this rule is skipped (missing: skip)",
                            path.display()
                        ),
                    ),
                }
            }
            RuleTarget::Path {
                path,
                symlink_from: Some(link),
                ..
            } => Check::pass(
                &name,
                format!(
                    "{access}: {} (symlink {} -> {})",
                    path.display(),
                    link.display(),
                    path.display()
                ),
            ),
            RuleTarget::Path { path, .. } => {
                Check::pass(&name, format!("{access}: {}", path.display()))
            }
        };
        checks.push(check);
    }
    checks
}
