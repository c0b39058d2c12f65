//! Placeholder until the command group is written.

use super::{Failure, Outcome};
use crate::cli::{ClientCommand, GuardCommand, RateCommand};
use crate::context::Context;
use crate::exit::Code;

/// Runs a `rate` subcommand.
pub fn rate(_context: &Context, command: RateCommand) -> Outcome {
    Err(Failure::new(
        Code::Usage,
        format!("{command:?} is not available yet"),
    ))
}

/// Runs a `guard` subcommand.
pub fn guard(_context: &Context, command: GuardCommand) -> Outcome {
    Err(Failure::new(
        Code::Usage,
        format!("{command:?} is not available yet"),
    ))
}

/// Runs a `client` subcommand.
pub fn client(command: ClientCommand) -> Outcome {
    Err(Failure::new(
        Code::Usage,
        format!("{command:?} is not available yet"),
    ))
}
