//! Preflight checks: named checks run before a run starts, each passing,
//! warning or failing with a message that names the fix.
//!
//! `run` refuses to start when any check fails; `run --dry-run` and `check`
//! print the same report without running anything.

pub mod checks;
pub mod import;
pub mod render;

use serde::Serialize;

/// The result of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

impl Status {
    /// Returns the label printed in reports.
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// One named check and its result.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: String,
    pub status: Status,
    pub message: String,
}

impl Check {
    /// Builds a check with any status.
    pub fn new(name: &str, status: Status, message: impl Into<String>) -> Self {
        Self {
            name: name.to_owned(),
            status,
            message: message.into(),
        }
    }

    /// Builds a passing check.
    pub fn pass(name: &str, message: impl Into<String>) -> Self {
        Self {
            name: name.to_owned(),
            status: Status::Pass,
            message: message.into(),
        }
    }

    /// Builds a warning.
    pub fn warn(name: &str, message: impl Into<String>) -> Self {
        Self {
            name: name.to_owned(),
            status: Status::Warn,
            message: message.into(),
        }
    }

    /// Builds a failure.
    pub fn fail(name: &str, message: impl Into<String>) -> Self {
        Self {
            name: name.to_owned(),
            status: Status::Fail,
            message: message.into(),
        }
    }
}

/// All checks for one app.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub app: String,
    pub checks: Vec<Check>,
}

impl Report {
    /// Returns the worst status of all checks.
    pub fn status(&self) -> Status {
        self.checks
            .iter()
            .map(|check| check.status)
            .max()
            .unwrap_or(Status::Pass)
    }

    /// Returns the failed checks.
    pub fn failures(&self) -> impl Iterator<Item = &Check> {
        self.checks
            .iter()
            .filter(|check| check.status == Status::Fail)
    }
}
