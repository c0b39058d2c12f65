//! `safe-exec doctor`: what this kernel and host support.

use super::{Failure, Outcome};
use crate::context::Context;
use crate::exit::Code;

/// Prints the host report.
pub fn doctor(_context: &Context, json: bool) -> Outcome {
    Err(Failure::new(
        Code::Usage,
        format!("doctor --json={json} is not available yet"),
    ))
}
