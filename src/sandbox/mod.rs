//! The sandbox layers applied to the child between fork and exec.
//!
//! Each layer is prepared in the supervisor (where allocation and logging are
//! allowed) and applied in the child by one async-signal-safe call. Each
//! layer reports how much of what the policy asked it can enforce on this
//! kernel, and the policy's `enforcement` setting decides whether a partial
//! result may run.

pub mod child;
pub mod kernel;
pub mod landlock;
pub mod seccomp;
pub mod sys;

use serde::Serialize;

/// How much of a layer the kernel enforces.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "status", content = "missing")]
pub enum Enforced {
    /// Everything the policy asked.
    Full,
    /// Some parts are missing; each entry names one.
    Partial(Vec<String>),
    /// Nothing; the entry contains the reason.
    None(String),
}

impl Enforced {
    /// Returns the missing pieces, empty when fully enforced.
    pub fn missing(&self) -> Vec<String> {
        match self {
            Enforced::Full => Vec::new(),
            Enforced::Partial(missing) => missing.clone(),
            Enforced::None(reason) => vec![reason.clone()],
        }
    }
}
