//! Placeholder until the command group is written.

use super::{Failure, Outcome};
use crate::cli::AuditCommand;
use crate::context::Context;
use crate::exit::Code;

/// Runs an `audit` subcommand.
pub fn audit(_context: &Context, command: AuditCommand) -> Outcome {
    Err(Failure::new(
        Code::Usage,
        format!("{command:?} is not available yet"),
    ))
}
