//! Text rendering of resolved policies and preflight reports.

use std::fmt::Write;

use crate::policy::{Policy, RuleTarget};

/// Renders a resolved policy for `policy show`.
pub fn policy_text(policy: &Policy) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "app: {}", policy.app);
    let _ = writeln!(out, "file: {}", policy.file.display());
    if let Some(description) = &policy.description {
        let _ = writeln!(out, "description: {description}");
    }
    let _ = writeln!(out, "command: {:?}", policy.command);
    let _ = writeln!(out, "workdir: {}", policy.workdir.display());

    let _ = writeln!(out, "env.inherit: {:?}", policy.env.inherit);
    let _ = writeln!(out, "env.set: {:?}", policy.env.set);

    let _ = writeln!(out, "filesystem.system: {}", policy.filesystem.system);
    let _ = writeln!(
        out,
        "filesystem.missing: {}",
        name(&policy.filesystem.missing)
    );
    let _ = writeln!(out, "filesystem rules:");
    for rule in &policy.filesystem.rules {
        let target = match &rule.target {
            RuleTarget::RunTmp => "{tmp} (private per-run directory)".to_owned(),
            RuleTarget::Path {
                path,
                symlink_from,
                exists,
                ..
            } => {
                let mut text = path.display().to_string();
                if let Some(link) = symlink_from {
                    let _ = write!(text, " (symlink {} -> {})", link.display(), path.display());
                }
                if !exists {
                    text.push_str(" (missing)");
                }
                text
            }
        };
        let _ = writeln!(
            out,
            "  {:<16} {target}   [line {}]",
            rule.access.label(),
            rule.position.line
        );
    }

    let _ = writeln!(
        out,
        "network: {} allow={:?} tcp_connect={:?}",
        name(&policy.network.mode),
        policy.network.allow,
        policy.network.tcp_connect
    );
    let _ = writeln!(
        out,
        "syscalls: profile={} deny={:?} allow={:?} on_violation={}",
        name(&policy.syscalls.profile),
        policy.syscalls.deny,
        policy.syscalls.allow,
        name(&policy.syscalls.on_violation)
    );

    let limits = &policy.limits;
    let _ = writeln!(
        out,
        "limits: timeout={} memory={} processes={} open_files={} cpu={} core_dumps={}",
        limits
            .timeout
            .map_or("none".into(), |d| humantime::format_duration(d).to_string()),
        limits
            .memory
            .map_or("none".into(), |m| bytesize::ByteSize(m)
                .display()
                .iec()
                .to_string()),
        limits.processes.map_or("none".into(), |n| n.to_string()),
        limits.open_files.map_or("none".into(), |n| n.to_string()),
        limits
            .cpu
            .map_or("none".into(), |d| humantime::format_duration(d).to_string()),
        limits.core_dumps
    );

    if let Some(creds) = &policy.credentials {
        let _ = writeln!(
            out,
            "credentials: service={} keys={:?} optional={:?} format={} fd={}",
            creds.service,
            creds.keys,
            creds.optional,
            name(&creds.format),
            creds.fd
        );
    }

    for (bucket, rate) in &policy.rate_limits {
        let _ = writeln!(out, "rate_limits.{bucket}: {rate}");
    }

    if policy.email.enabled {
        let _ = writeln!(
            out,
            "email: thresholds={:?} off_limits={:?} patterns={} cache_ttl={}",
            policy.email.thresholds,
            policy.email.off_limits,
            policy.email.suspicious_patterns.len(),
            humantime::format_duration(policy.email.cache_ttl)
        );
    }

    let _ = writeln!(
        out,
        "preflight: rotation_overdue={} plaintext_secrets={}",
        name(&policy.preflight.rotation_overdue),
        name(&policy.preflight.plaintext_secrets)
    );
    let _ = writeln!(out, "enforcement: {}", name(&policy.enforcement));
    out
}

/// Returns the policy-file spelling of a setting (its serde name), such as `best_effort`.
fn name<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(text)) => text,
        Ok(other) => other.to_string(),
        Err(_) => String::from("?"),
    }
}
