//! The encrypted credential vault.
//!
//! `store` keeps the vault file (`format`) under the vault directory, sealed
//! with keys from `crypto`. The master key comes from one backend in `keys`.
//! The supervisor calls [`deliver`] to get an app's credentials for its pipe,
//! preflight calls [`preflight`], and the audit log calls [`audit_mac_key`].
//! `dotenv` and `migrate` import `.env` files, and `permissions` checks modes.

pub mod crypto;
pub mod delivery;
pub mod dotenv;
pub mod format;
pub mod keys;
pub mod migrate;
pub mod permissions;
pub mod preflight;
pub mod store;

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;

use thiserror::Error;
use zeroize::Zeroizing;

use crate::audit::{Actor, AuditError, AuditLog, Level};
use crate::context::Context;
use crate::exit::{Code, HasExitCode};

pub use delivery::deliver;
pub use keys::{KeyError, PassphraseSource, set_passphrase_source};
pub use preflight::{Finding, Status, preflight};
pub use store::Vault;

/// A vault operation that failed.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum VaultError {
    #[error("no vault in {dir}; run `safe-exec init` first")]
    NotInitialised { dir: PathBuf },

    #[error(
        "a vault already exists in {dir}; run `safe-exec cred rotate-master-key` to change its key"
    )]
    AlreadyInitialised { dir: PathBuf },

    #[error("failed to {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },

    #[error("failed to lock {path}: {source}")]
    Lock { path: PathBuf, source: nix::Error },

    #[error(
        "vault file {path} is damaged: {reason}; restore it from a backup (its entries cannot be opened without a valid header)"
    )]
    CorruptHeader { path: PathBuf, reason: String },

    #[error(
        "credential {service}/{key} is damaged: {reason}; store it again with `safe-exec cred store`"
    )]
    CorruptEntry {
        service: String,
        key: String,
        reason: String,
    },

    #[error(
        "wrong master key: the key from the {backend} backend does not match the vault's key check value; \
         use the key (or passphrase) this vault was created with, or restore it from your backup"
    )]
    WrongKey { backend: &'static str },

    #[error("the vault's master key is missing from the {backend} backend: {hint}")]
    KeyMissing { backend: &'static str, hint: String },

    #[error("master key backend failed: {0}")]
    Key(#[from] KeyError),

    #[error(
        "no OS keyring answered ({reason}). Choose a backend explicitly: \
         `--key-backend keyutils` (kernel keyring, no daemon needed, lost at reboot so the vault becomes unreadable), \
         `--key-backend file --key-file FILE` (a 0600 key file; anyone who can read it as you can open the vault), \
         or `--key-backend passphrase` (argon2id; you type or pipe the passphrase for every unlock)"
    )]
    NoKeyring { reason: String },

    #[error(
        "no credential {service}/{key} in the vault; add it with `safe-exec cred store --service {service} --key {key}`"
    )]
    NotFound { service: String, key: String },

    #[error("service {service} is missing required credentials: {}; add them with `safe-exec cred store`", keys.join(", "))]
    MissingRequired { service: String, keys: Vec<String> },

    #[error("invalid {what} {name:?}: {rule}")]
    InvalidName {
        what: &'static str,
        name: String,
        rule: &'static str,
    },

    #[error("{0}")]
    InvalidInput(String),

    #[error("{0}")]
    Usage(String),

    #[error("failed to write the audit record: {0}")]
    Audit(#[from] AuditError),

    #[error(transparent)]
    Crypto(#[from] crypto::CryptoError),
}

impl HasExitCode for VaultError {
    fn exit_code(&self) -> Code {
        match self {
            Self::AlreadyInitialised { .. } | Self::NoKeyring { .. } | Self::Usage(_) => {
                Code::Usage
            }
            Self::Key(KeyError::NoPassphrase(_) | KeyError::KeyFileExists { .. }) => Code::Usage,
            Self::CorruptHeader { .. }
            | Self::CorruptEntry { .. }
            | Self::NotFound { .. }
            | Self::InvalidName { .. }
            | Self::InvalidInput(_) => Code::DataErr,
            Self::NotInitialised { .. }
            | Self::WrongKey { .. }
            | Self::Key(KeyError::KeyFileFormat { .. })
            | Self::KeyMissing { .. }
            | Self::MissingRequired { .. } => Code::NoPerm,
            Self::Io { .. }
            | Self::Lock { .. }
            | Self::Key(_)
            | Self::Audit(_)
            | Self::Crypto(_) => Code::Supervisor,
        }
    }
}

/// Info string of the HKDF that derives the audit log's MAC key.
const AUDIT_MAC_INFO: &[u8] = b"safe-exec audit log MAC key v1";

/// Derives the audit log's MAC key: HKDF-SHA256 of the vault's audit root key
/// (sealed under the master key beside the data key), salted with the vault id.
///
/// The audit root key survives `cred rotate-master-key`, so records written
/// before a rotation still verify. Reads without the vault lock, so it may be
/// called while this process holds it.
///
/// The key is cached per vault id for the life of the process, because the
/// audit log requests it for every record and a keyring round trip is slow.
pub fn audit_mac_key(context: &Context) -> Result<Zeroizing<[u8; 32]>, VaultError> {
    static CACHE: std::sync::Mutex<Option<(String, crypto::SecretKey)>> =
        std::sync::Mutex::new(None);

    let file = store::read_file(&context.vault_dir)?;
    let mut cache = CACHE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((vault_id, key)) = cache.as_ref()
        && *vault_id == file.header.vault_id
    {
        return Ok(key.clone());
    }

    let (keys, _) = store::unlock(&context.vault_dir, &file)?;
    let key = crypto::hkdf_sha256(
        keys.audit_root(),
        file.header.vault_id.as_bytes(),
        AUDIT_MAC_INFO,
    );
    *cache = Some((file.header.vault_id.clone(), key.clone()));
    Ok(key)
}

/// Opens the vault for writing. A wrong or missing key is audited as AUTH_FAILURE.
///
/// The audit log's MAC key comes from the vault, so a failed unlock cannot
/// write a record at once. The failure is kept in `auth-failures.pending`
/// (0600) in the vault directory and sent to syslog, and the next successful
/// unlock appends it to the log as AUTH_FAILURE with the original time.
pub fn open_audited(context: &Context, app: &str, run_id: &str) -> Result<Vault, VaultError> {
    match Vault::open(&context.vault_dir) {
        Err(err @ (VaultError::WrongKey { .. } | VaultError::KeyMissing { .. })) => {
            record_auth_failure(context, app, run_id, &err);
            Err(err)
        }
        Ok(vault) => {
            flush_auth_failures(context, run_id);
            Ok(vault)
        }
        Err(err) => Err(err),
    }
}

/// File in the vault directory holding AUTH_FAILURE records not yet in the audit log.
const PENDING_AUTH_FAILURES: &str = "auth-failures.pending";

fn record_auth_failure(context: &Context, app: &str, run_id: &str, err: &VaultError) {
    let line = serde_json::json!({
        "ts": chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "app": app,
        "run_id": run_id,
        "reason": err.to_string(),
    });
    crate::audit::alert::syslog(
        crate::audit::alert::Priority::Critical,
        &format!("safe-exec: vault authentication failure for {app}: {err}"),
    );

    let path = context.vault_dir.join(PENDING_AUTH_FAILURES);
    let written = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(&path)
        .and_then(|mut file| file.write_all(format!("{line}\n").as_bytes()));
    if let Err(io_err) = written {
        tracing::error!(app, run_id, path = %path.display(), error = %io_err, "failed to keep a vault authentication failure for the audit log");
    }
}

/// Moves kept authentication failures into the audit log. Runs while this
/// process holds the vault lock, so no other process flushes the same file.
fn flush_auth_failures(context: &Context, run_id: &str) {
    let path = context.vault_dir.join(PENDING_AUTH_FAILURES);
    let Ok(text) = std::fs::read_to_string(&path) else {
        return;
    };
    for line in text.lines().filter(|line| !line.trim().is_empty()) {
        let pending: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|_| serde_json::json!({ "unparsed": line }));
        let app = pending
            .get("app")
            .and_then(|value| value.as_str())
            .unwrap_or("vault")
            .to_owned();
        let details = serde_json::json!({
            "target": "vault master key",
            "reason": pending.get("reason"),
            "failed_at": pending.get("ts"),
            "failed_run_id": pending.get("run_id"),
            "recorded_late": true,
        });
        let appended = AuditLog::open(context, &app, run_id)
            .and_then(|log| log.append("AUTH_FAILURE", Level::Warning, Actor::Supervisor, details));
        if let Err(audit_err) = appended {
            tracing::error!(app, run_id, error = %audit_err, "failed to move a vault authentication failure into the audit log");
            return;
        }
    }
    if let Err(io_err) = std::fs::remove_file(&path) {
        tracing::error!(path = %path.display(), error = %io_err, "failed to remove the kept authentication failures");
    }
}

/// Appends CREDENTIAL_ACCESS for one value read, without the value.
pub fn audit_access(
    log: &AuditLog,
    service: &str,
    key: &str,
    purpose: &str,
) -> Result<(), VaultError> {
    let details = serde_json::json!({ "service": service, "key": key, "purpose": purpose });
    log.append("CREDENTIAL_ACCESS", Level::Info, Actor::Supervisor, details)?;
    Ok(())
}

/// Checks a service name: letters, digits, `.`, `_` and `-`.
pub fn check_service_name(name: &str) -> Result<(), VaultError> {
    let valid = !name.is_empty()
        && name.len() <= 128
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        return Ok(());
    }
    Err(VaultError::InvalidName {
        what: "service name",
        name: name.to_owned(),
        rule: "use 1 to 128 letters, digits, '.', '_' or '-'",
    })
}

/// Checks a key name: an environment variable name, so every delivery format can carry it.
pub fn check_key_name(name: &str) -> Result<(), VaultError> {
    if is_env_name(name) && name.len() <= 128 {
        return Ok(());
    }
    Err(VaultError::InvalidName {
        what: "key name",
        name: name.to_owned(),
        rule: "use letters, digits and '_', not starting with a digit (an environment variable name)",
    })
}

/// Returns whether `name` is a portable environment variable name.
pub fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}
