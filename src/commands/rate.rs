//! `safe-exec rate`, `safe-exec guard` and `safe-exec client`: the rate
//! limits and the e-mail guard from the command line, outside and inside a run.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

pub mod testing;

pub use testing::{test_channel_server, test_rate_bench};

use super::{Failure, Outcome};
use crate::audit::{Actor, AuditLog, Level};
use crate::cli::{
    ClientCommand, GuardCommand, RateAcquireArgs, RateCommand, RateResetArgs, RateStatusArgs,
};
use crate::context::Context;
use crate::exit::Code;
use crate::policy::units::RateSpec;
use crate::ratelimit::{Acquired, BucketStatus, Limiter, RateError, clock};

/// Runs a `rate` subcommand.
pub fn rate(context: &Context, command: RateCommand) -> Outcome {
    match command {
        RateCommand::Status(args) => status(context, args),
        RateCommand::Acquire(args) => acquire(context, args),
        RateCommand::Reset(args) => reset(context, args),
    }
}

/// Runs a `guard` subcommand.
pub fn guard(context: &Context, command: GuardCommand) -> Outcome {
    match command {
        GuardCommand::Email(args) => crate::guard::command::email(context, args),
    }
}

/// Runs a `client` subcommand inside a sandboxed run.
pub fn client(command: ClientCommand) -> Outcome {
    crate::channel::client::run_command(command)
}

/// Returns the run id stamped on audit records written by a command outside a run.
pub fn cli_run_id() -> String {
    format!("cli-{}", std::process::id())
}

/// Opens the limiter on the vault's rate-limit state with this process's clock.
pub fn open_limiter(context: &Context) -> Result<Limiter, Failure> {
    let clock = clock::from_env().map_err(RateError::from)?;
    Ok(Limiter::open(&context.ratelimit_dir(), Arc::from(clock))?)
}

fn load_limits(context: &Context, app: &str) -> Result<BTreeMap<String, RateSpec>, Failure> {
    let policy = crate::policy::load(&context.policy_dir, app, &context.resolve_options())?;
    Ok(policy.rate_limits)
}

fn status(context: &Context, args: RateStatusArgs) -> Outcome {
    let apps = match args.app {
        Some(app) => vec![app],
        None => crate::policy::list_apps(&context.policy_dir)?,
    };
    let limiter = open_limiter(context)?;
    let mut rows: Vec<BucketStatus> = Vec::new();
    for app in &apps {
        let limits = load_limits(context, app)?;
        rows.extend(limiter.status(app, &limits)?);
    }

    if args.json {
        println!("{}", json!({ "buckets": rows }));
        return Ok(0);
    }
    if rows.is_empty() {
        println!("no rate-limit buckets defined");
        return Ok(0);
    }
    println!(
        "{:<28} {:<20} {:>10} {:>9}  {:<14} {:>10}",
        "APP", "BUCKET", "TOKENS", "CAPACITY", "RATE", "NEXT"
    );
    for row in rows {
        let next = if row.next_token.is_zero() {
            "now".to_owned()
        } else {
            format_wait(row.next_token)
        };
        println!(
            "{:<28} {:<20} {:>10.2} {:>9}  {:<14} {:>10}",
            row.app, row.bucket, row.tokens, row.capacity, row.rate, next
        );
    }
    Ok(0)
}

fn acquire(context: &Context, args: RateAcquireArgs) -> Outcome {
    let wait = match &args.wait {
        Some(text) => Some(parse_wait(text)?),
        None => None,
    };
    let limits = load_limits(context, &args.app)?;
    let limiter = open_limiter(context)?;
    let deadline = wait.map(|wait| Instant::now() + wait);

    loop {
        match limiter.acquire(&args.app, &limits, &args.bucket, args.cost)? {
            Acquired::Granted { tokens } => {
                println!(
                    "granted {} from {}/{}; {tokens:.2} left",
                    plural(args.cost),
                    args.app,
                    args.bucket
                );
                return Ok(0);
            }
            Acquired::Denied {
                tokens,
                retry_after,
            } => {
                let remaining =
                    deadline.map(|deadline| deadline.saturating_duration_since(Instant::now()));
                if let Some(remaining) = remaining.filter(|remaining| *remaining >= retry_after) {
                    tracing::debug!(app = %args.app, bucket = %args.bucket, ?retry_after, ?remaining, "waiting for tokens");
                    std::thread::sleep(retry_after.max(Duration::from_millis(1)));
                    continue;
                }
                record_denial(
                    context,
                    &args.app,
                    &args.bucket,
                    args.cost,
                    tokens,
                    retry_after,
                    "cli",
                );
                return Err(Failure::new(
                    Code::TempFail,
                    format!(
                        "rate limited: {}/{} has {tokens:.2} tokens; {} available in {}",
                        args.app,
                        args.bucket,
                        plural(args.cost),
                        format_wait(retry_after)
                    ),
                ));
            }
        }
    }
}

/// Writes the API_RATE_LIMIT record of a denial. A failure to write it is
/// logged and not returned, because the request is denied either way.
pub fn record_denial(
    context: &Context,
    app: &str,
    bucket: &str,
    cost: u32,
    tokens: f64,
    retry_after: Duration,
    source: &str,
) {
    let details = json!({
        "bucket": bucket,
        "cost": cost,
        "tokens": tokens,
        "retry_after_seconds": retry_after.as_secs_f64(),
        "source": source,
    });
    let written = AuditLog::open(context, app, &cli_run_id())
        .and_then(|log| log.append("API_RATE_LIMIT", Level::Warning, Actor::Supervisor, details));
    if let Err(err) = written {
        tracing::error!(app, bucket, error = %err, "failed to audit a rate-limit denial");
    }
}

fn reset(context: &Context, args: RateResetArgs) -> Outcome {
    if std::env::var_os("SAFE_EXEC_SOCKET").is_some() {
        return Err(Failure::new(
            Code::NoPerm,
            "rate reset is not allowed inside a sandboxed run; run it from a shell outside safe-exec",
        ));
    }
    let limits = load_limits(context, &args.app)?;
    let target = match &args.bucket {
        Some(bucket) => format!("bucket {bucket:?} of app {:?}", args.app),
        None => format!("every bucket of app {:?}", args.app),
    };
    if !args.yes && !confirm(&format!("Refill {target}?"))? {
        eprintln!("nothing reset");
        return Ok(1);
    }

    let limiter = open_limiter(context)?;
    let names = limiter.reset(&args.app, &limits, args.bucket.as_deref())?;
    let level = if args.emergency {
        Level::Critical
    } else {
        Level::Warning
    };
    AuditLog::open(context, &args.app, &cli_run_id())?.append(
        "RATE_LIMIT_RESET",
        level,
        Actor::Supervisor,
        json!({ "buckets": names, "emergency": args.emergency }),
    )?;
    println!("refilled {}: {}", args.app, names.join(", "));
    Ok(0)
}

fn confirm(question: &str) -> Result<bool, Failure> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        return Err(Failure::new(
            Code::Usage,
            "rate reset asks for confirmation; pass --yes when stdin is not a terminal",
        ));
    }
    eprint!("{question} [y/N] ");
    let _ = std::io::stderr().flush();
    let mut answer = String::new();
    stdin.lock().read_line(&mut answer).map_err(|err| {
        Failure::new(
            Code::Usage,
            format!("failed to read the confirmation: {err}"),
        )
    })?;
    Ok(matches!(answer.trim(), "y" | "Y" | "yes" | "YES" | "Yes"))
}

/// Parses a `--wait` duration such as `30s`.
pub fn parse_wait(text: &str) -> Result<Duration, Failure> {
    humantime::parse_duration(text.trim()).map_err(|err| {
        Failure::new(
            Code::Usage,
            format!("invalid --wait {text:?}: {err}; write a duration such as 30s or 2m"),
        )
    })
}

/// Formats a wait for people: `6s`, `1m 30s`, `250ms`.
pub fn format_wait(wait: Duration) -> String {
    let rounded = if wait >= Duration::from_secs(1) {
        Duration::from_secs(wait.as_secs() + u64::from(wait.subsec_nanos() > 0))
    } else {
        Duration::from_millis(u64::try_from(wait.as_millis()).unwrap_or(u64::MAX).max(1))
    };
    humantime::format_duration(rounded).to_string()
}

fn plural(cost: u32) -> String {
    if cost == 1 {
        "1 token".to_owned()
    } else {
        format!("{cost} tokens")
    }
}
