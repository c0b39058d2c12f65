//! `cred migrate`: imports `.env` files into the vault.
//!
//! Every value is stored, the vault is written, and then every stored value is
//! read back from disk in a fresh unlock and compared with the file before the
//! original is touched. `--remove-original` overwrites the file with zeros and
//! removes it only after that check, and only when every line was imported.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use zeroize::Zeroizing;

use super::dotenv::{self, Note};
use super::{VaultError, check_service_name, open_audited, store};
use crate::context::Context;

/// A key written to the vault, or already there with the same value.
#[derive(Debug, Clone, Serialize)]
pub struct Imported {
    pub key: String,
    pub line: usize,
    /// False when the vault already held the same value.
    pub written: bool,
}

/// A key left out, with the reason.
#[derive(Debug, Clone, Serialize)]
pub struct Skipped {
    pub key: String,
    pub line: usize,
    pub reason: String,
}

/// What `migrate_file` did with one file.
#[derive(Debug, Clone, Serialize)]
pub struct MigrationReport {
    pub file: PathBuf,
    pub service: String,
    pub imported: Vec<Imported>,
    pub skipped: Vec<Skipped>,
    /// Lines trimmed, ambiguous or rejected.
    pub notes: Vec<Note>,
    /// Every imported value read back from disk equal to the file's.
    pub verified: bool,
    pub original_removed: bool,
    /// Why the original was kept although removal was requested.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kept_because: Option<String>,
}

impl MigrationReport {
    /// Returns whether any line was rejected or any key skipped.
    pub fn incomplete(&self) -> bool {
        !self.skipped.is_empty()
            || self
                .notes
                .iter()
                .any(|note| note.kind == dotenv::NoteKind::Rejected)
    }
}

/// Imports `path` into `service` in the order of steps the module documentation gives.
pub fn migrate_file(
    context: &Context,
    path: &Path,
    service: &str,
    remove_original: bool,
    run_id: &str,
) -> Result<MigrationReport, VaultError> {
    check_service_name(service)?;
    let bytes = Zeroizing::new(std::fs::read(path).map_err(|source| VaultError::Io {
        action: "read",
        path: path.to_owned(),
        source,
    })?);
    let parsed = dotenv::parse(&bytes);
    let mut report = MigrationReport {
        file: path.to_owned(),
        service: service.to_owned(),
        imported: Vec::new(),
        skipped: Vec::new(),
        notes: parsed.notes.clone(),
        verified: false,
        original_removed: false,
        kept_because: None,
    };

    let mut vault = open_audited(context, "vault", run_id)?;
    let mut to_verify = Vec::new();
    for entry in &parsed.entries {
        let existing = match vault.file().find(service, &entry.key) {
            Some(_) => Some(vault.get(service, &entry.key)?),
            None => None,
        };
        match existing {
            Some(value) if value == entry.value => {
                report.imported.push(Imported { key: entry.key.clone(), line: entry.line, written: false });
                to_verify.push(entry);
            }
            Some(_) => report.skipped.push(Skipped {
                key: entry.key.clone(),
                line: entry.line,
                reason: "the vault already holds a different value; kept the vault's value (replace it with `cred store`)".into(),
            }),
            None => {
                vault.put(service, &entry.key, &entry.value, None)?;
                report.imported.push(Imported { key: entry.key.clone(), line: entry.line, written: true });
                to_verify.push(entry);
            }
        }
    }
    vault.save()?;
    drop(vault);

    let (file, keys) = store::open_read_only(&context.vault_dir)?;
    for entry in &to_verify {
        let stored = store::decrypt_value(&file, &keys, service, &entry.key)?;
        if stored != entry.value {
            return Err(VaultError::InvalidInput(format!(
                "verification failed: {service}/{} read back from the vault differs from line {} of {}; the original was not touched",
                entry.key,
                entry.line,
                path.display()
            )));
        }
    }
    report.verified = true;

    if remove_original {
        if report.incomplete() {
            report.kept_because =
                Some("some lines were not imported; fix them and run the migration again".into());
        } else {
            wipe_and_remove(path)?;
            report.original_removed = true;
        }
    }
    Ok(report)
}

/// Overwrites a file with zeros, syncs it and removes it.
fn wipe_and_remove(path: &Path) -> Result<(), VaultError> {
    let io_error = |action, source| VaultError::Io {
        action,
        path: path.to_owned(),
        source,
    };
    let length = std::fs::symlink_metadata(path)
        .map_err(|source| io_error("inspect", source))?
        .len();
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|source| io_error("open", source))?;
    let zeros = vec![0u8; 64 * 1024];
    let mut left = length;
    while left > 0 {
        let chunk = usize::try_from(left.min(zeros.len() as u64)).unwrap_or(zeros.len());
        file.write_all(&zeros[..chunk])
            .map_err(|source| io_error("overwrite", source))?;
        left -= chunk as u64;
    }
    file.sync_all().map_err(|source| io_error("sync", source))?;
    drop(file);
    std::fs::remove_file(path).map_err(|source| io_error("remove", source))?;
    if let Some(parent) = path.parent() {
        std::fs::File::open(parent)
            .and_then(|dir| dir.sync_all())
            .map_err(|source| io_error("sync the directory of", source))?;
    }
    Ok(())
}

/// Lists the `.env` files under `dir`, at most three levels deep.
pub fn find_env_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), 0usize)];
    while let Some((path, depth)) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&path) else {
            continue;
        };
        for entry in entries.flatten() {
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            let name = entry.file_name();
            let name = name.to_string_lossy();
            if kind.is_dir()
                && depth < 3
                && !matches!(
                    name.as_ref(),
                    "node_modules" | ".git" | "target" | ".venv" | "venv"
                )
            {
                stack.push((entry.path(), depth + 1));
            } else if kind.is_file() && super::preflight::is_env_file(&name) {
                found.push(entry.path());
            }
        }
    }
    found.sort();
    found
}
