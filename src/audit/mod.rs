//! The tamper-evident audit log: one keyed hash chain per app, in daily
//! JSON Lines files under `<vault>/audit/<app>/`.
//!
//! The supervisor, the vault and the `audit log` command write through
//! [`AuditLog`]; the `audit` commands read through [`verify`], [`search`],
//! [`report`] and [`tail`]. Every record carries the hash of the record
//! before it and a MAC keyed from the vault. A MACed head anchor outside the
//! log files records the last sequence number and hash. Together they reveal
//! a changed, removed, reordered or inserted record, a cut tail and a
//! deleted file. The line format is described in `docs/audit-format.md`.

pub mod alert;
pub mod anchor;
pub mod clock;
pub mod config;
pub mod files;
pub mod key;
pub mod record;
pub mod report;
pub mod rotate;
pub mod search;
pub mod tail;
pub mod verify;
pub mod writer;

use std::path::PathBuf;

use thiserror::Error;

use crate::exit::{Code, HasExitCode};

pub use clock::{Clock, FixedClock, SystemClock};
pub use key::MacKey;
pub use record::{Actor, Level, Record};
pub use writer::{AuditLog, PendingSync};

/// An audit log that could not be opened, written or read.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum AuditError {
    #[error(
        "invalid app name {app:?}: use letters, digits, '.', '_' and '-', not starting with '.'"
    )]
    InvalidApp { app: String },
    #[error(
        "no vault in {vault}, so there is no key for the audit log; run `safe-exec init` first"
    )]
    VaultNotInitialised { vault: PathBuf },
    #[error("failed to obtain the audit log's key from the vault: {source}")]
    KeyUnavailable {
        source: Box<crate::vault::VaultError>,
    },
    #[error("failed to create audit directory {dir}: {source}")]
    CreateDir {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to open audit log {file}: {source}")]
    Open {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to lock audit log {file}: {source}")]
    Lock { file: PathBuf, source: nix::Error },
    #[error("failed to read audit log {file}: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to write audit log {file}: {source}")]
    Write {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("failed to encode audit record for {app}: {source}")]
    Encode {
        app: String,
        source: serde_json::Error,
    },
    #[error("invalid audit configuration in {file}: {reason}")]
    Config { file: PathBuf, reason: String },
    #[error("invalid {what} {value:?}: {reason}")]
    InvalidArgument {
        what: &'static str,
        value: String,
        reason: String,
    },
}

impl HasExitCode for AuditError {
    fn exit_code(&self) -> Code {
        match self {
            Self::InvalidApp { .. } | Self::InvalidArgument { .. } => Code::Usage,
            Self::Config { .. } => Code::DataErr,
            Self::VaultNotInitialised { .. } => Code::NoPerm,
            Self::KeyUnavailable { source } => source.exit_code(),
            _ => Code::Supervisor,
        }
    }
}

/// Checks that `app` can name files in the audit directory without escaping it.
pub fn validate_app(app: &str) -> Result<(), AuditError> {
    let valid = !app.is_empty()
        && app.len() <= 128
        && !app.starts_with('.')
        && app != "all"
        && app
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(AuditError::InvalidApp {
            app: app.to_owned(),
        })
    }
}

#[cfg(test)]
mod tests;
