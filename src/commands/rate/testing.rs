//! Hidden commands for the tests and `scripts/bench-rate`: serve the request
//! channel to an unsandboxed command, and time acquisitions.
//!
//! Neither grants anything a sandboxed app could use: both need the vault's
//! rate-limit state, which Landlock keeps out of the app's reach.

use std::sync::Arc;
use std::time::Instant;

use serde_json::json;

use super::{cli_run_id, open_limiter};
use crate::audit::AuditLog;
use crate::channel::client::Client;
use crate::channel::{PeerCheck, Server, ServerConfig, ServerLimits};
use crate::cli::{TestChannelServerArgs, TestRateBenchArgs};
use crate::commands::{Failure, Outcome};
use crate::context::Context;
use crate::exit::Code;
use crate::ratelimit::Acquired;

/// Serves the request channel to a command started without a sandbox; used
/// by the channel tests and `scripts/bench-rate`, hidden from `--help`.
pub fn test_channel_server(context: &Context, args: TestChannelServerArgs) -> Outcome {
    let policy = crate::policy::load(&context.policy_dir, &args.app, &context.resolve_options())?;
    let audit = Arc::new(AuditLog::open(context, &args.app, &args.run_id)?);
    let mut limits = ServerLimits::default();
    if let Some(rate) = args.requests_per_second {
        limits.requests_per_second = rate;
        limits.request_burst = rate * 4.0;
    }
    let own_pid = i32::try_from(std::process::id()).unwrap_or(i32::MAX);
    let server = Server::start(ServerConfig {
        context: context.clone(),
        policy,
        run_id: args.run_id,
        audit,
        socket_path: args.socket.clone(),
        peer: PeerCheck::DescendantOf(own_pid),
        limits,
    })?;

    let Some((program, rest)) = args.command.split_first() else {
        return Err(Failure::new(Code::Usage, "name a command after --"));
    };
    let status = std::process::Command::new(program)
        .args(rest)
        .env(crate::channel::client::SOCKET_ENV, &args.socket)
        .status()
        .map_err(|err| {
            Failure::new(
                Code::NotFound,
                format!("failed to start {}: {err}", program.to_string_lossy()),
            )
        });
    server.stop();
    let status = status?;
    Ok(status.code().unwrap_or_else(|| {
        use std::os::unix::process::ExitStatusExt;
        crate::exit::for_signal(status.signal().unwrap_or(0))
    }))
}

/// Takes one token `iterations` times, directly from the state files or
/// through the channel, and prints each latency in nanoseconds as JSON.
pub fn test_rate_bench(context: &Context, args: TestRateBenchArgs) -> Outcome {
    let mut latencies: Vec<u64> = Vec::with_capacity(args.iterations);
    let mut denied = 0u64;
    if args.channel {
        let mut client = Client::from_env()?;
        let request = json!({ "op": "acquire", "bucket": args.bucket });
        for _ in 0..args.iterations {
            let started = Instant::now();
            let result = client.call(request.clone())?;
            latencies.push(nanos(started));
            if result.get("granted").and_then(serde_json::Value::as_bool) != Some(true) {
                denied += 1;
            }
        }
    } else {
        let app = args
            .app
            .as_deref()
            .ok_or_else(|| Failure::new(Code::Usage, "--app is required without --channel"))?;
        let policy = crate::policy::load(&context.policy_dir, app, &context.resolve_options())?;
        let limiter = open_limiter(context)?;
        for _ in 0..args.iterations {
            let started = Instant::now();
            let result = limiter.acquire(app, &policy.rate_limits, &args.bucket, 1)?;
            latencies.push(nanos(started));
            if matches!(result, Acquired::Denied { .. }) {
                denied += 1;
            }
        }
    }
    println!(
        "{}",
        json!({ "run_id": cli_run_id(), "denied": denied, "latencies_ns": latencies })
    );
    Ok(0)
}

fn nanos(started: Instant) -> u64 {
    u64::try_from(started.elapsed().as_nanos()).unwrap_or(u64::MAX)
}
