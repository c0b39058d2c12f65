//! The audit log's writing side: one hash-chained JSON Lines file per app.
//!
//! Every record carries a sequence number and the hash of the previous
//! record, and each line is written whole by one `write` call while the file
//! is locked, so concurrent runs of one app never interleave records.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::Serialize;
use sha2::{Digest, Sha256};
use thiserror::Error;

use crate::context::Context;
use crate::exit::{Code, HasExitCode};

/// Severity of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "UPPERCASE")]
pub enum Level {
    Info,
    Warning,
    Critical,
}

/// Who caused a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Actor {
    Supervisor,
    App,
}

/// An audit log that could not be opened or written.
#[derive(Debug, Error)]
pub enum AuditError {
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
    #[error("failed to write audit log {file}: {source}")]
    Write {
        file: PathBuf,
        source: std::io::Error,
    },
}

impl HasExitCode for AuditError {
    fn exit_code(&self) -> Code {
        Code::Supervisor
    }
}

#[derive(Serialize)]
struct Record<'a> {
    seq: u64,
    ts: String,
    app: &'a str,
    run_id: &'a str,
    event: &'a str,
    level: Level,
    actor: Actor,
    details: &'a serde_json::Value,
    prev_hash: String,
}

/// The log of one app, for the records of one run.
#[derive(Debug)]
pub struct AuditLog {
    file: PathBuf,
    app: String,
    run_id: String,
}

impl AuditLog {
    /// Opens (creating if needed) the log of `app` in the vault's audit directory.
    pub fn open(context: &Context, app: &str, run_id: &str) -> Result<Self, AuditError> {
        let dir = context.audit_dir();
        create_private_dir(&context.vault_dir)?;
        create_private_dir(&dir)?;
        Ok(Self {
            file: dir.join(format!("{app}.jsonl")),
            app: app.to_owned(),
            run_id: run_id.to_owned(),
        })
    }

    /// Returns the run id stamped on every record.
    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// Appends one record and returns its sequence number.
    pub fn append(
        &self,
        event: &str,
        level: Level,
        actor: Actor,
        details: serde_json::Value,
    ) -> Result<u64, AuditError> {
        let file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&self.file)
            .map_err(|source| AuditError::Open {
                file: self.file.clone(),
                source,
            })?;
        let mut file =
            Flock::lock(file, FlockArg::LockExclusive).map_err(|(_, source)| AuditError::Lock {
                file: self.file.clone(),
                source,
            })?;

        let (last_seq, prev_hash, torn) =
            last_record(&mut file).map_err(|source| AuditError::Write {
                file: self.file.clone(),
                source,
            })?;
        let record = Record {
            seq: last_seq + 1,
            ts: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            app: &self.app,
            run_id: &self.run_id,
            event,
            level,
            actor,
            details: &details,
            prev_hash,
        };
        let mut line = Vec::new();
        if torn {
            line.push(b'\n');
        }
        serde_json::to_writer(&mut line, &record).map_err(|err| AuditError::Write {
            file: self.file.clone(),
            source: err.into(),
        })?;
        line.push(b'\n');
        file.write_all(&line).map_err(|source| AuditError::Write {
            file: self.file.clone(),
            source,
        })?;
        tracing::debug!(app = %self.app, run_id = %self.run_id, event, seq = record.seq, "audit record written");
        Ok(record.seq)
    }
}

/// Returns the sequence number and hash of the last whole line, and whether the file ends in a torn line.
fn last_record(file: &mut File) -> std::io::Result<(u64, String, bool)> {
    let mut content = Vec::new();
    file.seek(SeekFrom::Start(0))?;
    file.read_to_end(&mut content)?;
    let torn = !content.is_empty() && !content.ends_with(b"\n");
    let whole = match content.iter().rposition(|&b| b == b'\n') {
        Some(end) => &content[..end],
        None => return Ok((0, "0".repeat(64), torn)),
    };
    let start = whole.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    let last = &whole[start..];
    let seq = serde_json::from_slice::<serde_json::Value>(last)
        .ok()
        .and_then(|value| value.get("seq").and_then(serde_json::Value::as_u64))
        .unwrap_or(0);
    Ok((seq, hex::encode(Sha256::digest(last)), torn))
}

fn create_private_dir(dir: &Path) -> Result<(), AuditError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| AuditError::CreateDir {
            dir: dir.to_owned(),
            source,
        })
}
