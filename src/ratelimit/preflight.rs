//! The preflight check of the rate-limit state: readable, private, and which
//! buckets are empty before the run starts.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::Arc;

use super::{Limiter, clock};
use crate::context::Context;
use crate::policy::Policy;
use crate::preflight::Check;

const NAME: &str = "rate_limits";

/// Checks the rate-limit state of `policy`'s app without changing it.
///
/// Fails when the state cannot be read (the run could not take tokens), warns
/// when the directory or a file is open to other users or a bucket is empty,
/// and passes otherwise.
pub fn check_state(context: &Context, policy: &Policy) -> Check {
    if policy.rate_limits.is_empty() {
        return Check::pass(NAME, "the policy defines no rate limits");
    }
    let dir = context.ratelimit_dir();
    if !dir.exists() {
        return Check::pass(
            NAME,
            format!(
                "{} buckets, all full (no state yet)",
                policy.rate_limits.len()
            ),
        );
    }
    let loose: Vec<String> = [
        dir.clone(),
        dir.join(format!("{}.json", policy.app)),
        dir.join(format!("{}.lock", policy.app)),
    ]
    .iter()
    .filter(|path| is_open_to_others(path))
    .map(|path| path.display().to_string())
    .collect();

    let clock = match clock::from_env() {
        Ok(clock) => clock,
        Err(err) => return Check::fail(NAME, err.to_string()),
    };
    let statuses = Limiter::open(&dir, Arc::from(clock))
        .and_then(|limiter| limiter.status(&policy.app, &policy.rate_limits));
    let statuses = match statuses {
        Ok(statuses) => statuses,
        Err(err) => return Check::fail(NAME, err.to_string()),
    };

    if !loose.is_empty() {
        return Check::warn(
            NAME,
            format!(
                "readable or writable by other users: {}; run `safe-exec validate --fix`",
                loose.join(", ")
            ),
        );
    }
    let empty: Vec<String> = statuses
        .iter()
        .filter(|status| status.tokens < 1.0)
        .map(|status| {
            format!(
                "{} (next token in {:.0}s)",
                status.bucket,
                status.next_token.as_secs_f64().ceil()
            )
        })
        .collect();
    if !empty.is_empty() {
        return Check::warn(NAME, format!("empty buckets: {}", empty.join(", ")));
    }
    let summary: Vec<String> = statuses
        .iter()
        .map(|status| {
            format!(
                "{} {:.0}/{}",
                status.bucket,
                status.tokens.floor(),
                status.capacity
            )
        })
        .collect();
    Check::pass(NAME, summary.join(", "))
}

fn is_open_to_others(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|meta| meta.permissions().mode() & 0o077 != 0)
}
