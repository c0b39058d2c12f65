//! `safe-exec run` and `safe-exec check`.

use super::{Failure, Outcome};
use crate::cli::{CheckArgs, RunArgs};
use crate::context::Context;
use crate::exit::Code;

/// Runs an app under its policy.
pub fn run(_context: &Context, args: RunArgs) -> Outcome {
    Err(Failure::new(Code::Usage, format!("{args:?} is not available yet")))
}

/// Runs the preflight checks of several apps.
pub fn check(_context: &Context, args: CheckArgs) -> Outcome {
    Err(Failure::new(Code::Usage, format!("{args:?} is not available yet")))
}
