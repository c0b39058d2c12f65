//! Landlock rules, prepared in the supervisor and enforced in the child.

use std::path::Path;

use nix::errno::Errno;
use thiserror::Error;

use super::Enforced;
use crate::policy::{NetworkPolicy, PathRule};

/// A ruleset that could not be prepared.
#[derive(Debug, Error)]
pub enum LandlockError {
    #[error("failed to prepare the Landlock ruleset: {0}")]
    Prepare(String),
}

/// What the ruleset is built from.
#[derive(Debug)]
pub struct LandlockRequest<'a> {
    /// Resolved rules whose paths exist (missing ones are already skipped or rejected).
    pub rules: &'a [PathRule],
    /// Grant the system preset.
    pub system: bool,
    /// The run's private temporary directory, the target of `{tmp}` rules.
    pub run_tmp: &'a Path,
    pub network: &'a NetworkPolicy,
}

/// A ruleset ready to be enforced in the child, with what it covers.
#[derive(Debug)]
pub struct PreparedRuleset {
    pub enforced: Enforced,
}

/// Opens every path and builds the ruleset for `request`.
pub fn prepare(request: &LandlockRequest<'_>) -> Result<PreparedRuleset, LandlockError> {
    let _ = request;
    todo!("landlock")
}

impl PreparedRuleset {
    /// Enforces the ruleset on the calling thread. Async-signal-safe.
    pub fn restrict_self(&mut self) -> Result<(), Errno> {
        todo!("restrict")
    }
}
