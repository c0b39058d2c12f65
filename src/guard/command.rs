//! `safe-exec guard email` outside a run, and the printing shared with
//! `safe-exec client guard email` inside one.

use std::io::Read;
use std::path::Path;

use crate::audit::AuditLog;
use crate::cli::{EmailMessageArgs, GuardEmailArgs};
use crate::commands::rate::{cli_run_id, open_limiter};
use crate::commands::{Failure, Outcome};
use crate::context::Context;
use crate::exit::Code;

use super::{Decision, EmailMessage, Guard, audit_decision};

/// The largest body file `--body-file` reads, in bytes.
pub const MAX_BODY_BYTES: u64 = 1024 * 1024;

/// Returns the directory of the guard's cache in the vault.
pub fn cache_dir(context: &Context) -> std::path::PathBuf {
    context.vault_dir.join("guard")
}

/// Runs `guard email`: decides, audits and prints the decision.
pub fn email(context: &Context, args: GuardEmailArgs) -> Outcome {
    let json = args.message.json;
    let message = message_from_args(args.message)?;
    let policy = crate::policy::load(&context.policy_dir, &args.app, &context.resolve_options())?;
    let limiter = open_limiter(context)?;
    let guard = Guard::new(&policy, limiter, &cache_dir(context))?;

    let decision = guard.decide(&message)?;
    let log = AuditLog::open(context, &args.app, &cli_run_id())?;
    audit_decision(&log, &policy.audit, &message, &decision)?;
    print_decision(&decision, json);
    Ok(exit_code(&decision))
}

/// Builds the message from the command line, reading the body file when given.
pub fn message_from_args(args: EmailMessageArgs) -> Result<EmailMessage, Failure> {
    let body = match &args.body_file {
        Some(path) => read_body(path)?,
        None => String::new(),
    };
    Ok(EmailMessage {
        to: args.to,
        cc: args.cc,
        bcc: args.bcc,
        subject: args.subject,
        body,
        tier: args.tier,
        confidence: args.confidence,
    })
}

fn read_body(path: &Path) -> Result<String, Failure> {
    let file = std::fs::File::open(path).map_err(|err| {
        Failure::new(
            Code::DataErr,
            format!("failed to open body file {}: {err}", path.display()),
        )
    })?;
    let mut body = String::new();
    file.take(MAX_BODY_BYTES + 1)
        .read_to_string(&mut body)
        .map_err(|err| {
            Failure::new(
                Code::DataErr,
                format!("failed to read body file {}: {err}", path.display()),
            )
        })?;
    if body.len() as u64 > MAX_BODY_BYTES {
        return Err(Failure::new(
            Code::DataErr,
            format!(
                "body file {} is larger than {MAX_BODY_BYTES} bytes",
                path.display()
            ),
        ));
    }
    Ok(body)
}

/// Prints a decision as text or as one JSON object.
pub fn print_decision(decision: &Decision, json: bool) {
    if json {
        println!("{}", serde_json::to_string(decision).unwrap_or_default());
        return;
    }
    let verdict = if decision.allowed {
        "allowed"
    } else {
        "blocked"
    };
    let cached = if decision.cached {
        " (content checks answered from the cache)"
    } else {
        ""
    };
    println!("{verdict}{cached}");
    for reason in &decision.reasons {
        println!("  {}: {}", reason.code, reason.detail);
    }
    if let Some(tokens) = decision.tokens_left {
        println!("  email_send tokens left: {tokens:.2}");
    }
}

/// Returns 0 for an allowed message, 75 when only the rate limit blocked it, 77 otherwise.
pub fn exit_code(decision: &Decision) -> i32 {
    if decision.allowed {
        0
    } else if decision.rate_limited_only() {
        Code::TempFail.as_i32()
    } else {
        Code::NoPerm.as_i32()
    }
}
