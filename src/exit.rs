//! The one table of exit codes that `safe-exec` itself uses.
//!
//! The app's own exit code is passed through unchanged and death by signal N
//! becomes 128 + N, as a shell reports it. The codes below are reserved for
//! failures of `safe-exec` itself. They follow sysexits(3) where one fits, and
//! the shell's 126/127 convention for commands that cannot be run.

use std::process::ExitCode;

/// A failure class of `safe-exec` with its fixed exit code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// A check or a listing found something wrong (for example an overdue
    /// credential in `cred check-rotation`, or a failed check in `check`).
    CheckFailed = 1,
    /// Wrong command-line usage (EX_USAGE).
    Usage = 64,
    /// Invalid policy or input data: malformed YAML, unknown keys, a broken
    /// `.env` line, a corrupt vault entry, an impossible rate-limit cost (EX_DATAERR).
    DataErr = 65,
    /// Rate limited; trying again later may succeed (EX_TEMPFAIL).
    TempFail = 75,
    /// Refused by a preflight check, by the e-mail guard, or because a key or
    /// passphrase is wrong (EX_NOPERM).
    NoPerm = 77,
    /// The supervisor or a sandbox set-up step failed.
    Supervisor = 125,
    /// The command exists but cannot be executed.
    NotExecutable = 126,
    /// The command was not found.
    NotFound = 127,
}

impl Code {
    /// Returns the numeric exit code.
    pub fn as_i32(self) -> i32 {
        self as i32
    }
}

impl From<Code> for ExitCode {
    fn from(code: Code) -> Self {
        ExitCode::from(code as u8)
    }
}

/// Returns the exit code a shell would report for a child that died by `signal`.
pub fn for_signal(signal: i32) -> i32 {
    128 + signal
}

/// Errors that know which exit code they map to.
pub trait HasExitCode {
    /// Returns the exit code class of this error.
    fn exit_code(&self) -> Code;
}
