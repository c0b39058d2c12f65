//! `policy import`: a policy from an app directory's `security-config.json`.

use std::path::Path;

use crate::commands::{Failure, Outcome};
use crate::context::Context;
use crate::exit::Code;

/// Writes (or prints) a policy generated from `app_dir/security-config.json`.
pub fn import(_context: &Context, app_dir: &Path, _stdout: bool) -> Outcome {
    Err(Failure::new(
        Code::Usage,
        format!(
            "policy import of {} is not available yet",
            app_dir.display()
        ),
    ))
}
