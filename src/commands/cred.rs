//! Placeholder until the command group is written.

use super::{Failure, Outcome};
use crate::cli::{CredCommand, InitArgs, ValidateArgs};
use crate::context::Context;
use crate::exit::Code;

/// Runs `init`.
pub fn init(_context: &Context, args: InitArgs) -> Outcome {
    Err(Failure::new(
        Code::Usage,
        format!("{args:?} is not available yet"),
    ))
}

/// Runs a `cred` subcommand.
pub fn cred(_context: &Context, command: CredCommand) -> Outcome {
    Err(Failure::new(
        Code::Usage,
        format!("{command:?} is not available yet"),
    ))
}

/// Runs `validate`.
pub fn validate(_context: &Context, args: ValidateArgs) -> Outcome {
    Err(Failure::new(
        Code::Usage,
        format!("{args:?} is not available yet"),
    ))
}
