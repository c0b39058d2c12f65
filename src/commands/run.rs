//! `safe-exec run` (and the `safe-exec APP` shorthand) and `safe-exec check`.
//!
//! A run reads top-down: load the policy, run the preflight checks, open the
//! audit log, prepare the sandbox, check what the kernel can enforce, start
//! the app, and record how it ended and what was cleaned up.

use std::fmt::Write as _;

use serde_json::json;

use super::{Failure, Outcome};
use crate::audit::{Actor, AuditLog, Level, PendingSync};
use crate::channel;
use crate::cli::{CheckArgs, RunArgs};
use crate::context::Context;
use crate::exit::{Code, HasExitCode};
use crate::policy::{self, Enforcement, Policy};
use crate::preflight::{self, Report, Status, checks};
use crate::supervisor::{self, Prepared, RunOutcome, RunRequest};

/// Runs an app under its policy.
pub fn run(context: &Context, args: RunArgs) -> Outcome {
    let policy = policy::load(&context.policy_dir, &args.app, &context.resolve_options())?;
    let report = checks::run_checks(context, &policy);

    if args.dry_run {
        return dry_run(&policy, report, args);
    }

    let run_id = new_run_id();
    // The run's records reach the disk together at two points: before the app
    // starts and after cleanup (or when the run is refused), not one by one.
    let audit = AuditLog::open(context, &policy.app, &run_id)?.deferring_sync();
    let outcome = run_audited(context, &args, &policy, &report, &audit, &run_id);
    // The anchor was synced before the app started. After a crash it may miss
    // only this run's closing records, which verification accepts.
    if let Err(err) = audit.sync_records() {
        eprintln!("safe-exec: warning: {err}");
    }
    outcome
}

/// Runs the app with its audit log open: preflight decision, sandbox set-up, execution, records.
fn run_audited(
    context: &Context,
    args: &RunArgs,
    policy: &Policy,
    report: &Report,
    audit: &AuditLog,
    run_id: &str,
) -> Outcome {
    // The opening records go to the log together, in one append.
    let mut opening: Vec<Record> = vec![(
        "RUN_START",
        Level::Info,
        Actor::Supervisor,
        json!({
            "policy": policy.file,
            "command": policy.command,
            "extra_args": args.args.iter().map(|a| a.to_string_lossy()).collect::<Vec<_>>(),
            "workdir": policy.workdir,
            "enforcement": policy.enforcement,
            "skip_preflight": args.skip_preflight,
        }),
    )];

    if args.skip_preflight {
        eprintln!(
            "safe-exec: warning: preflight checks skipped (--skip-preflight); this run is audited as a warning"
        );
        opening.push((
            "PREFLIGHT",
            Level::Warning,
            Actor::Supervisor,
            json!({ "result": "skipped" }),
        ));
    } else {
        let level = match report.status() {
            Status::Pass => Level::Info,
            Status::Warn | Status::Fail => Level::Warning,
        };
        opening.push((
            "PREFLIGHT",
            level,
            Actor::Supervisor,
            json!({ "result": report.status(), "checks": report.checks }),
        ));
        print_warnings(report);
        if report.status() == Status::Fail {
            let failures: Vec<String> = report
                .failures()
                .map(|c| format!("{}: {}", c.name, c.message))
                .collect();
            let code = command_failure_code(context, policy).unwrap_or(Code::NoPerm);
            opening.push((
                "RUN_END",
                Level::Warning,
                Actor::Supervisor,
                json!({ "result": "refused by preflight", "exit_code": code.as_i32() }),
            ));
            records(audit, opening);
            return Err(Failure::new(
                code,
                format!(
                    "refused to run {}: preflight failed:\n  {}",
                    policy.app,
                    failures.join("\n  ")
                ),
            ));
        }
    }
    // Missing paths are preflight failures, so with preflight they never get
    // here; with --skip-preflight they still stop the run, never widen it.
    let (rules, skipped) = match policy.filesystem.check_paths(&policy.file) {
        Ok(checked) => checked,
        Err(err) => {
            opening.push((
                "RUN_END",
                Level::Warning,
                Actor::Supervisor,
                json!({ "result": "refused: missing policy path", "error": err.to_string(), "exit_code": Code::NoPerm.as_i32() }),
            ));
            records(audit, opening);
            return Err(Failure::new(
                Code::NoPerm,
                format!("refused to run {}: {err}", policy.app),
            ));
        }
    };
    for skip in &skipped {
        eprintln!(
            "safe-exec: warning: {}:{}: path {} does not exist; its rule is skipped (missing: skip)",
            policy.file.display(),
            skip.position,
            skip.path.display()
        );
        opening.push((
            "PREFLIGHT",
            Level::Warning,
            Actor::Supervisor,
            json!({ "skipped_path": skip.path, "declared": skip.declared, "line": skip.position.line }),
        ));
    }
    records(audit, opening);

    // Another thread flushes the records so far while the sandbox is prepared
    // and the child cloned, and the app is executed only after that flush. The
    // thread then flushes the anchor while the app starts. The descriptor table
    // grows first, because growing it with two threads waits for an RCU grace period.
    supervisor::reserve_descriptors();
    let mut syncing = Some(audit.sync_in_background());

    let prepared = match supervisor::prepare(RunRequest {
        policy,
        rules,
        extra_args: args.args.clone(),
        run_id: run_id.to_owned(),
        extra_env: Vec::new(),
    }) {
        Ok(prepared) => prepared,
        Err(err) => {
            record(
                audit,
                "RUN_END",
                Level::Warning,
                json!({ "result": "set-up failed", "error": err.to_string(), "exit_code": err.exit_code().as_i32() }),
            );
            return Err(err.into());
        }
    };

    if !prepared.missing().is_empty() {
        // The record of what is not enforced must be on disk before the app starts too.
        if let Some(Err(err)) = syncing.take().map(PendingSync::wait) {
            eprintln!("safe-exec: warning: {err}");
        }
        let checked = check_enforcement(audit, policy, &prepared);
        syncing = Some(audit.sync_in_background());
        if let Err(failure) = checked {
            let _ = prepared.run_dir.remove();
            return Err(failure);
        }
    }

    let mut channel = match bind_channel(context, policy, audit, prepared.run_dir.socket()) {
        Ok(channel) => channel,
        Err(err) => {
            record(
                audit,
                "RUN_END",
                Level::Warning,
                json!({ "result": "set-up failed", "error": err.to_string(), "exit_code": err.exit_code().as_i32() }),
            );
            let _ = prepared.run_dir.remove();
            return Err(err.into());
        }
    };

    let run_dir = prepared.run_dir.path.clone();
    // Decrypted only once the app has started, so no copy of the values
    // exists in the child's memory before exec.
    let credentials: Option<supervisor::CredentialSource<'_>> =
        policy.credentials.as_ref().map(|creds| {
            let source: supervisor::CredentialSource<'_> = Box::new(|| {
                crate::vault::deliver(context, creds, &policy.app, run_id)
                    .map_err(|err| err.to_string())
            });
            source
        });
    let mut wait_for_records = || {
        if let Some(Err(err)) = syncing.as_mut().map(PendingSync::wait_records) {
            eprintln!("safe-exec: warning: {err}");
        }
    };
    let result = supervisor::execute(
        prepared,
        policy,
        &mut wait_for_records,
        credentials,
        Some(&mut channel),
    );
    channel.stop();
    // The anchor's flush ran while the app started, and it ends before the closing records.
    if let Some(Err(err)) = syncing.take().map(PendingSync::wait) {
        eprintln!("safe-exec: warning: {err}");
    }
    finish(audit, policy, result, &run_dir)
}

/// Binds the request channel on `socket` in the run directory, for the
/// supervisor's process tree: the app, its init and everything they start.
/// It starts serving when the app first connects.
fn bind_channel(
    context: &Context,
    policy: &Policy,
    audit: &AuditLog,
    socket: std::path::PathBuf,
) -> Result<channel::Server, channel::ChannelError> {
    let supervisor_pid = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
    channel::Server::bind(channel::ServerConfig {
        context: context.clone(),
        policy: policy.clone(),
        run_id: audit.run_id().to_owned(),
        audit: std::sync::Arc::new(audit.handle()),
        socket_path: socket,
        peer: channel::PeerCheck::DescendantOf(supervisor_pid),
        limits: channel::ServerLimits::default(),
    })
}

/// Refuses the run under `enforcement: strict` when a layer is not fully
/// enforced; under `best_effort` prints and audits what is missing.
fn check_enforcement(
    audit: &AuditLog,
    policy: &Policy,
    prepared: &Prepared,
) -> Result<(), Failure> {
    let missing = prepared.missing();
    if missing.is_empty() {
        return Ok(());
    }
    match policy.enforcement {
        Enforcement::Strict => {
            record(
                audit,
                "RUN_END",
                Level::Warning,
                json!({ "result": "refused: restrictions not enforceable", "missing": missing }),
            );
            Err(Failure::new(
                Code::Supervisor,
                format!(
                    "refused to run {}: this kernel cannot enforce:\n  {}\nset `enforcement: best_effort` in {} to run without them",
                    policy.app,
                    missing.join("\n  "),
                    policy.file.display()
                ),
            ))
        }
        Enforcement::BestEffort => {
            for item in &missing {
                eprintln!("safe-exec: warning: not enforced (best_effort): {item}");
            }
            record(
                audit,
                "PREFLIGHT",
                Level::Warning,
                json!({ "not_enforced": missing, "enforcement": "best_effort" }),
            );
            Ok(())
        }
    }
}

/// Records how the run ended and what was cleaned up; returns the exit code.
fn finish(
    audit: &AuditLog,
    policy: &Policy,
    result: Result<RunOutcome, supervisor::SupervisorError>,
    run_dir: &std::path::Path,
) -> Outcome {
    let cleanup = std::fs::read_dir(run_dir).map(|_| ()).and_then(|()| {
        let dir = supervisor::RunDir {
            path: run_dir.to_owned(),
        };
        dir.remove()
    });
    let cleanup_details = match &cleanup {
        Ok(entries) => {
            json!({ "run_dir": run_dir, "removed_entries": entries, "result": "removed" })
        }
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            json!({ "run_dir": run_dir, "result": "already gone" })
        }
        Err(err) => json!({ "run_dir": run_dir, "result": "failed", "error": err.to_string() }),
    };

    let mut closing: Vec<Record> = Vec::with_capacity(2);
    let exit = match result {
        Ok(outcome) => {
            let level = if outcome.timed_out {
                Level::Warning
            } else {
                Level::Info
            };
            let details = serde_json::to_value(&outcome).unwrap_or_default();
            closing.push(("RUN_END", level, Actor::Supervisor, details));
            if outcome.timed_out {
                eprintln!(
                    "safe-exec: {} timed out after {:?} and was stopped",
                    policy.app,
                    policy.limits.timeout.unwrap_or_default()
                );
            }
            Ok(outcome.exit_code)
        }
        Err(err) => {
            closing.push((
                "RUN_END",
                Level::Warning,
                Actor::Supervisor,
                json!({ "result": "failed", "error": err.to_string(), "exit_code": err.exit_code().as_i32() }),
            ));
            Err(Failure::from(err))
        }
    };
    let cleanup_level = if cleanup
        .as_ref()
        .is_err_and(|e| e.kind() != std::io::ErrorKind::NotFound)
    {
        Level::Warning
    } else {
        Level::Info
    };
    closing.push(("CLEANUP", cleanup_level, Actor::Supervisor, cleanup_details));
    records(audit, closing);
    exit
}

/// Returns 127 or 126 when the preflight failure is the command itself.
fn command_failure_code(_context: &Context, policy: &Policy) -> Option<Code> {
    let env = supervisor::plan::build_env(policy, &[]);
    match supervisor::plan::resolve_command(policy, &env) {
        Err(supervisor::CommandError::NotFound { .. }) => Some(Code::NotFound),
        Err(supervisor::CommandError::NotExecutable { .. }) => Some(Code::NotExecutable),
        _ => None,
    }
}

/// Appends an audit record; a failed append is logged, since the run's own
/// outcome must still be reported.
/// One record of the supervisor's: event type, level, actor and details.
type Record = (&'static str, Level, Actor, serde_json::Value);

/// Appends `batch` in one go; when that fails, record by record, so one bad
/// record does not take the others with it.
fn records(audit: &AuditLog, batch: Vec<Record>) {
    if audit.append_all(&batch).is_ok() {
        return;
    }
    for (event, level, _, details) in batch {
        record(audit, event, level, details);
    }
}

fn record(audit: &AuditLog, event: &str, level: Level, details: serde_json::Value) {
    if let Err(err) = audit.append(event, level, Actor::Supervisor, details) {
        tracing::error!(error = %err, event, run_id = audit.run_id(), "failed to write audit record");
        eprintln!("safe-exec: warning: {err}");
    }
}

fn print_warnings(report: &Report) {
    for check in report.checks.iter().filter(|c| c.status == Status::Warn) {
        eprintln!("safe-exec: warning: {}: {}", check.name, check.message);
    }
}

/// Prints the checks and the resolved plan without running anything.
fn dry_run(policy: &Policy, report: Report, args: RunArgs) -> Outcome {
    let plan = plan_summary(policy, &args);
    let ok = report.status() != Status::Fail;
    if args.json {
        let document = json!({ "app": policy.app, "ok": ok, "status": report.status(), "checks": report.checks, "plan": plan });
        println!("{document}");
    } else {
        print!("{}", render_report(&report));
        println!("\nplan:");
        print!("{}", preflight::render::policy_text(policy));
        if let Some(command) = plan.get("command_path").and_then(|v| v.as_str()) {
            println!("command path: {command}");
        }
    }
    Ok(if ok { 0 } else { Code::NoPerm.as_i32() })
}

fn plan_summary(policy: &Policy, args: &RunArgs) -> serde_json::Value {
    let env = supervisor::plan::build_env(policy, &[]);
    let command_path = supervisor::plan::resolve_command(policy, &env).ok();
    json!({
        "command_path": command_path,
        "argv": policy.command.iter().cloned().chain(args.args.iter().map(|a| a.to_string_lossy().into_owned())).collect::<Vec<_>>(),
        "env_names": env.keys().map(|k| k.to_string_lossy().into_owned()).collect::<Vec<_>>(),
        "policy": policy,
    })
}

/// Renders a report as aligned text lines.
pub fn render_report(report: &Report) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "preflight for {}:", report.app);
    for check in &report.checks {
        let _ = writeln!(
            out,
            "  {} {:<22} {}",
            check.status.label(),
            check.name,
            check.message
        );
    }
    let _ = writeln!(out, "result: {}", report.status().label());
    out
}

/// Runs the preflight checks of the named apps, or of every policy.
pub fn check(context: &Context, args: CheckArgs) -> Outcome {
    let apps = if args.apps.is_empty() {
        policy::list_apps(&context.policy_dir)?
    } else {
        args.apps.clone()
    };
    if apps.is_empty() {
        return Err(Failure::new(
            Code::DataErr,
            format!(
                "no policies in {}; pass --policy-dir",
                context.policy_dir.display()
            ),
        ));
    }
    let mut failed = 0;
    for app in &apps {
        let report = match policy::load(&context.policy_dir, app, &context.resolve_options()) {
            Ok(policy) => checks::run_checks(context, &policy),
            Err(err) => Report {
                app: app.clone(),
                checks: vec![preflight::Check::fail("policy", err.to_string())],
            },
        };
        if report.status() == Status::Fail {
            failed += 1;
        }
        if args.json {
            println!(
                "{}",
                json!({ "app": app, "ok": report.status() != Status::Fail, "status": report.status(), "checks": report.checks })
            );
        } else {
            print!("{}", render_report(&report));
        }
    }
    if failed > 0 {
        if !args.json {
            eprintln!(
                "safe-exec: {failed} of {} apps failed their checks",
                apps.len()
            );
        }
        return Ok(Code::NoPerm.as_i32());
    }
    Ok(0)
}

/// Returns a new random run id (16 hex digits).
fn new_run_id() -> String {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into the live buffer.
    let filled = unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), 0) };
    if filled != bytes.len() as isize {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        bytes = ((nanos as u64) ^ u64::from(std::process::id())).to_le_bytes();
    }
    hex::encode(bytes)
}
