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

    #[error("vault file {path} is damaged: {reason}")]
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
        "wrong master key: the key from the {backend} backend does not match the vault's key check value"
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
            Self::NotInitialised { .. }
            | Self::AlreadyInitialised { .. }
            | Self::NoKeyring { .. }
            | Self::Usage(_) => Code::Usage,
            Self::Key(KeyError::NoPassphrase(_) | KeyError::KeyFileExists { .. }) => Code::Usage,
            Self::CorruptHeader { .. }
            | Self::CorruptEntry { .. }
            | Self::NotFound { .. }
            | Self::InvalidName { .. }
            | Self::InvalidInput(_) => Code::DataErr,
            Self::WrongKey { .. } | Self::KeyMissing { .. } | Self::MissingRequired { .. } => {
                Code::NoPerm
            }
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
/// audit log asks for it on every record and a keyring round trip is slow.
pub fn audit_mac_key(context: &Context) -> Result<Zeroizing<[u8; 32]>, VaultError> {
    static CACHE: std::sync::Mutex<Option<(String, crypto::SecretKey)>> =
        std::sync::Mutex::new(None);

    let header = store::read_file(&context.vault_dir)?.header;
    let mut cache = CACHE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((vault_id, key)) = cache.as_ref()
        && *vault_id == header.vault_id
    {
        return Ok(key.clone());
    }

    let (file, keys) = store::open_read_only(&context.vault_dir)?;
    let key = crypto::hkdf_sha256(
        keys.audit_root(),
        file.header.vault_id.as_bytes(),
        AUDIT_MAC_INFO,
    );
    *cache = Some((file.header.vault_id.clone(), key.clone()));
    Ok(key)
}

/// Opens the vault for writing. A wrong or missing key is audited as AUTH_FAILURE.
pub fn open_audited(context: &Context, app: &str, run_id: &str) -> Result<Vault, VaultError> {
    match Vault::open(&context.vault_dir) {
        Err(err @ (VaultError::WrongKey { .. } | VaultError::KeyMissing { .. })) => {
            audit_auth_failure(context, app, run_id, &err);
            Err(err)
        }
        other => other,
    }
}

fn audit_auth_failure(context: &Context, app: &str, run_id: &str, err: &VaultError) {
    let details = serde_json::json!({ "target": "vault master key", "reason": err.to_string() });
    let written = AuditLog::open(context, app, run_id)
        .and_then(|log| log.append("AUTH_FAILURE", Level::Warning, Actor::Supervisor, details));
    if let Err(audit_err) = written {
        tracing::error!(app, run_id, error = %audit_err, "failed to audit a vault authentication failure");
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
