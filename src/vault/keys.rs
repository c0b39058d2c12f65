//! Master-key backends: the Secret Service over D-Bus, the kernel keyutils
//! user keyring, a key file, and a passphrase stretched with argon2id.
//!
//! Each stored backend has two slots. `Current` opens the vault, and `Pending`
//! holds a new key while `cred rotate-master-key` re-encrypts, so a crash at
//! any point leaves one slot whose key matches the vault file on disk.

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};
use std::time::Duration;

use thiserror::Error;
use zeroize::Zeroizing;

use super::crypto::{self, Argon2Cost, KEY_LEN, SecretKey};
use super::format::BackendRecord;

/// Which of a backend's two key slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Slot {
    Current,
    Pending,
}

impl Slot {
    fn name(self) -> &'static str {
        match self {
            Self::Current => "current",
            Self::Pending => "pending",
        }
    }
}

/// A backend that could not store or load the master key.
#[derive(Debug, Error)]
pub enum KeyError {
    #[error("the Secret Service is not available: {0}")]
    SecretService(String),
    #[error("the Secret Service did not answer within {0} seconds")]
    SecretServiceTimeout(u64),
    #[error("the kernel keyutils user keyring failed: {0}")]
    Keyutils(String),
    #[error("failed to {action} key file {path}: {source}")]
    KeyFile {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("key file {path} does not hold a 256-bit key in hex")]
    KeyFileFormat { path: PathBuf },
    #[error("key file {path} already exists; remove it or pass another --key-file")]
    KeyFileExists { path: PathBuf },
    #[error("no passphrase: {0}")]
    NoPassphrase(String),
    #[error("failed to read the passphrase: {0}")]
    ReadPassphrase(std::io::Error),
    #[error(transparent)]
    Crypto(#[from] crypto::CryptoError),
}

/// The source of the passphrase given by `--passphrase-fd` or `--passphrase-env`, or
/// a hidden prompt on the terminal when neither is set.
#[derive(Debug, Clone, Default)]
pub struct PassphraseSource {
    pub fd: Option<i32>,
    pub env: Option<String>,
}

static PASSPHRASE_SOURCE: OnceLock<PassphraseSource> = OnceLock::new();
static PASSPHRASE: Mutex<Option<Zeroizing<String>>> = Mutex::new(None);

/// Sets where this process reads the vault passphrase from. The command line
/// calls it once at start-up, and later calls are ignored.
pub fn set_passphrase_source(source: PassphraseSource) {
    let _ = PASSPHRASE_SOURCE.set(source);
}

/// Reads the passphrase once per process (a descriptor can be read only once)
/// and returns a copy.
pub fn passphrase(confirm: bool) -> Result<Zeroizing<String>, KeyError> {
    let mut cached = PASSPHRASE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some(passphrase) = cached.as_ref() {
        return Ok(passphrase.clone());
    }
    let source = PASSPHRASE_SOURCE.get().cloned().unwrap_or_default();
    let passphrase = read_passphrase(&source, "Vault passphrase: ", confirm)?;
    *cached = Some(passphrase.clone());
    Ok(passphrase)
}

/// Reads a passphrase from a descriptor, an environment variable or the terminal.
pub fn read_passphrase(
    source: &PassphraseSource,
    prompt: &str,
    confirm: bool,
) -> Result<Zeroizing<String>, KeyError> {
    let passphrase = if let Some(fd) = source.fd {
        read_fd(fd)?
    } else if let Some(var) = &source.env {
        match std::env::var(var) {
            Ok(value) => Zeroizing::new(value),
            Err(_) => {
                return Err(KeyError::NoPassphrase(format!(
                    "environment variable {var} is not set or not UTF-8"
                )));
            }
        }
    } else {
        prompt_hidden(prompt, confirm)?
    };
    if passphrase.is_empty() {
        return Err(KeyError::NoPassphrase("the passphrase is empty".into()));
    }
    Ok(passphrase)
}

fn read_fd(fd: i32) -> Result<Zeroizing<String>, KeyError> {
    let duplicate = nix::unistd::dup(
        // SAFETY: the descriptor number comes from the user; `dup` only checks
        // that it is open, and the borrow ends before this call returns.
        unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) },
    )
    .map_err(|err| KeyError::ReadPassphrase(err.into()))?;
    let mut file = std::fs::File::from(duplicate);
    let mut bytes = Zeroizing::new(Vec::new());
    file.read_to_end(&mut bytes)
        .map_err(KeyError::ReadPassphrase)?;
    let text = std::str::from_utf8(&bytes)
        .map_err(|_| KeyError::NoPassphrase(format!("descriptor {fd} does not hold UTF-8 text")))?;
    let first_line = text
        .split('\n')
        .next()
        .unwrap_or_default()
        .trim_end_matches('\r');
    Ok(Zeroizing::new(first_line.to_owned()))
}

fn prompt_hidden(prompt: &str, confirm: bool) -> Result<Zeroizing<String>, KeyError> {
    if !std::io::IsTerminal::is_terminal(&std::io::stdin())
        && std::fs::File::open("/dev/tty").is_err()
    {
        return Err(KeyError::NoPassphrase(
            "no terminal to prompt on; pass --passphrase-fd FD or --passphrase-env VAR".into(),
        ));
    }
    let first =
        Zeroizing::new(rpassword::prompt_password(prompt).map_err(KeyError::ReadPassphrase)?);
    if confirm {
        let second = Zeroizing::new(
            rpassword::prompt_password("Repeat it: ").map_err(KeyError::ReadPassphrase)?,
        );
        if first != second {
            return Err(KeyError::NoPassphrase("the two entries differ".into()));
        }
    }
    Ok(first)
}

/// Derives the master key of a passphrase vault, caching it per salt so
/// repeated audit records do not rerun argon2id.
pub fn derive_from_passphrase(salt_hex: &str, cost: Argon2Cost) -> Result<SecretKey, KeyError> {
    static DERIVED: Mutex<Option<(String, SecretKey)>> = Mutex::new(None);
    let mut cached = DERIVED
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    if let Some((salt, key)) = cached.as_ref()
        && salt == salt_hex
    {
        return Ok(key.clone());
    }
    let passphrase = passphrase(false)?;
    let salt = hex::decode(salt_hex)
        .map_err(|_| KeyError::NoPassphrase("the vault header's salt is not hex".into()))?;
    let key = crypto::argon2id(passphrase.as_bytes(), &salt, cost)?;
    *cached = Some((salt_hex.to_owned(), key.clone()));
    Ok(key)
}

/// Replaces the passphrase this process uses, after `rotate-master-key` changed it.
pub fn replace_passphrase(passphrase: Zeroizing<String>) {
    let mut cached = PASSPHRASE
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    *cached = Some(passphrase);
}

/// Stores `key` in `slot` of a stored backend. The passphrase backend stores nothing.
pub fn store(
    record: &BackendRecord,
    vault_id: &str,
    slot: Slot,
    key: &[u8; KEY_LEN],
) -> Result<(), KeyError> {
    match record {
        BackendRecord::SecretService => secret_service::store(vault_id, slot, key),
        BackendRecord::Keyutils => keyutils::store(vault_id, slot, key),
        BackendRecord::File { path } => {
            key_file::store(&slot_path(path, slot), key, slot == Slot::Current)
        }
        BackendRecord::Passphrase { .. } => Ok(()),
    }
}

/// Loads the key in `slot`, or returns `None` when the slot is empty.
pub fn load(
    record: &BackendRecord,
    vault_id: &str,
    slot: Slot,
) -> Result<Option<SecretKey>, KeyError> {
    match record {
        BackendRecord::SecretService => secret_service::load(vault_id, slot),
        BackendRecord::Keyutils => keyutils::load(vault_id, slot),
        BackendRecord::File { path } => key_file::load(&slot_path(path, slot)),
        BackendRecord::Passphrase { salt, cost } => match slot {
            Slot::Current => derive_from_passphrase(salt, *cost).map(Some),
            Slot::Pending => Ok(None),
        },
    }
}

/// Empties `slot`.
pub fn delete(record: &BackendRecord, vault_id: &str, slot: Slot) -> Result<(), KeyError> {
    match record {
        BackendRecord::SecretService => secret_service::delete(vault_id, slot),
        BackendRecord::Keyutils => keyutils::delete(vault_id, slot),
        BackendRecord::File { path } => key_file::delete(&slot_path(path, slot)),
        BackendRecord::Passphrase { .. } => Ok(()),
    }
}

/// Makes the pending key the current one and empties the pending slot.
pub fn promote_pending(record: &BackendRecord, vault_id: &str) -> Result<(), KeyError> {
    match record {
        BackendRecord::File { path } => key_file::promote(&slot_path(path, Slot::Pending), path),
        BackendRecord::Passphrase { .. } => Ok(()),
        _ => {
            let Some(pending) = load(record, vault_id, Slot::Pending)? else {
                return Ok(());
            };
            store(record, vault_id, Slot::Current, &pending)?;
            delete(record, vault_id, Slot::Pending)
        }
    }
}

fn slot_path(path: &Path, slot: Slot) -> PathBuf {
    match slot {
        Slot::Current => path.to_owned(),
        Slot::Pending => {
            let mut name = path.file_name().unwrap_or_default().to_owned();
            name.push(".pending");
            path.with_file_name(name)
        }
    }
}

/// Returns whether a Secret Service answers on the session bus, within a time limit.
pub fn secret_service_available() -> Result<(), KeyError> {
    secret_service::probe()
}

fn parse_hex_key(text: &[u8]) -> Option<SecretKey> {
    let text = std::str::from_utf8(text).ok()?.trim();
    let mut key = Zeroizing::new([0u8; KEY_LEN]);
    hex::decode_to_slice(text, key.as_mut_slice()).ok()?;
    Some(key)
}

mod key_file {
    //! The key file backend: the key in hex, in a file created 0600.

    use super::*;

    pub fn store(path: &Path, key: &[u8; KEY_LEN], create_new: bool) -> Result<(), KeyError> {
        let error = |action, source| KeyError::KeyFile {
            action,
            path: path.to_owned(),
            source,
        };
        if let Some(parent) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .map_err(|e| error("create the directory of", e))?;
        }
        if create_new && path.exists() {
            return Err(KeyError::KeyFileExists {
                path: path.to_owned(),
            });
        }

        // Write a temporary file and rename it, so the slot holds the old key or the new one.
        let temporary = path.with_extension(format!("tmp-{}", std::process::id()));
        let _ = std::fs::remove_file(&temporary);
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&temporary)
            .map_err(|e| error("create", e))?;
        let text = Zeroizing::new(format!("{}\n", hex::encode(key)));
        let written = file
            .write_all(text.as_bytes())
            .and_then(|()| file.sync_all());
        if let Err(source) = written {
            let _ = std::fs::remove_file(&temporary);
            return Err(error("write", source));
        }
        let renamed = if create_new {
            // Refuse to replace a key file that appeared meanwhile.
            std::fs::hard_link(&temporary, path).and_then(|()| std::fs::remove_file(&temporary))
        } else {
            std::fs::rename(&temporary, path)
        };
        if let Err(source) = renamed {
            let _ = std::fs::remove_file(&temporary);
            return Err(error("write", source));
        }
        sync_parent(path).map_err(|e| error("sync the directory of", e))
    }

    pub fn load(path: &Path) -> Result<Option<SecretKey>, KeyError> {
        let mut file = match OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(path)
        {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(KeyError::KeyFile {
                    action: "open",
                    path: path.to_owned(),
                    source,
                });
            }
        };
        let mut text = Zeroizing::new(Vec::new());
        file.read_to_end(&mut text)
            .map_err(|source| KeyError::KeyFile {
                action: "read",
                path: path.to_owned(),
                source,
            })?;
        parse_hex_key(&text)
            .map(Some)
            .ok_or_else(|| KeyError::KeyFileFormat {
                path: path.to_owned(),
            })
    }

    pub fn delete(path: &Path) -> Result<(), KeyError> {
        match std::fs::remove_file(path) {
            Ok(()) => sync_parent(path).map_err(|source| KeyError::KeyFile {
                action: "remove",
                path: path.to_owned(),
                source,
            }),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(KeyError::KeyFile {
                action: "remove",
                path: path.to_owned(),
                source,
            }),
        }
    }

    pub fn promote(pending: &Path, current: &Path) -> Result<(), KeyError> {
        match std::fs::rename(pending, current) {
            Ok(()) => sync_parent(current).map_err(|source| KeyError::KeyFile {
                action: "sync",
                path: current.to_owned(),
                source,
            }),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(source) => Err(KeyError::KeyFile {
                action: "replace",
                path: current.to_owned(),
                source,
            }),
        }
    }

    fn sync_parent(path: &Path) -> std::io::Result<()> {
        match path.parent() {
            Some(parent) => std::fs::File::open(parent)?.sync_all(),
            None => Ok(()),
        }
    }
}

mod keyutils {
    //! The kernel keyutils backend: a `user` key in the user keyring (`@u`).
    //! The kernel keeps it until reboot, and the vault cannot be opened after that.

    use linux_keyutils::{KeyPermissionsBuilder, KeyRing, KeyRingIdentifier, Permission};

    use super::*;

    fn description(vault_id: &str, slot: Slot) -> String {
        format!("safe-exec:vault:{vault_id}:{}", slot.name())
    }

    fn ring() -> Result<KeyRing, KeyError> {
        KeyRing::from_special_id(KeyRingIdentifier::User, true)
            .map_err(|err| KeyError::Keyutils(format!("{err:?}")))
    }

    pub fn store(vault_id: &str, slot: Slot, key: &[u8; KEY_LEN]) -> Result<(), KeyError> {
        let text = Zeroizing::new(hex::encode(key));
        let added = ring()?
            .add_key(&description(vault_id, slot), text.as_bytes())
            .map_err(|err| KeyError::Keyutils(format!("{err:?}")))?;
        // Let every process of this user read the key, not only those that
        // possess the user keyring through their session keyring.
        let perms = KeyPermissionsBuilder::builder()
            .posessor(Permission::ALL)
            .user(
                Permission::VIEW
                    | Permission::READ
                    | Permission::SEARCH
                    | Permission::WRITE
                    | Permission::SETATTR,
            )
            .build();
        added
            .set_perms(perms)
            .map_err(|err| KeyError::Keyutils(format!("{err:?}")))
    }

    pub fn load(vault_id: &str, slot: Slot) -> Result<Option<SecretKey>, KeyError> {
        let key = match ring()?.search(&description(vault_id, slot)) {
            Ok(key) => key,
            Err(linux_keyutils::KeyError::KeyDoesNotExist) => return Ok(None),
            Err(err) => return Err(KeyError::Keyutils(format!("{err:?}"))),
        };
        let text = Zeroizing::new(
            key.read_to_vec()
                .map_err(|err| KeyError::Keyutils(format!("{err:?}")))?,
        );
        parse_hex_key(&text)
            .map(Some)
            .ok_or_else(|| KeyError::Keyutils("the stored key is not 256 bits in hex".into()))
    }

    pub fn delete(vault_id: &str, slot: Slot) -> Result<(), KeyError> {
        match ring()?.search(&description(vault_id, slot)) {
            Ok(key) => key
                .invalidate()
                .map_err(|err| KeyError::Keyutils(format!("{err:?}"))),
            Err(linux_keyutils::KeyError::KeyDoesNotExist) => Ok(()),
            Err(err) => Err(KeyError::Keyutils(format!("{err:?}"))),
        }
    }
}

mod secret_service {
    //! The Secret Service backend: an item in the default collection with the
    //! attributes `application=safe-exec`, `vault=<id>` and `slot=<slot>`.

    use ::secret_service::EncryptionType;
    use ::secret_service::blocking::SecretService;

    use super::*;

    /// Time limit for one Secret Service operation, so a bus that accepts the
    /// connection but never answers cannot hang `safe-exec`.
    const TIMEOUT: Duration = Duration::from_secs(20);

    fn with_service<T: Send + 'static>(
        operation: impl FnOnce(&SecretService<'_>) -> Result<T, ::secret_service::Error>
        + Send
        + 'static,
    ) -> Result<T, KeyError> {
        if std::env::var_os("DBUS_SESSION_BUS_ADDRESS").is_none()
            && std::env::var_os("XDG_RUNTIME_DIR").is_none()
        {
            return Err(KeyError::SecretService(
                "no D-Bus session bus (DBUS_SESSION_BUS_ADDRESS is not set)".into(),
            ));
        }
        let (sender, receiver) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let result =
                SecretService::connect(EncryptionType::Dh).and_then(|service| operation(&service));
            let _ = sender.send(result);
        });
        match receiver.recv_timeout(TIMEOUT) {
            Ok(result) => result.map_err(|err| KeyError::SecretService(err.to_string())),
            Err(_) => Err(KeyError::SecretServiceTimeout(TIMEOUT.as_secs())),
        }
    }

    fn attributes(vault_id: &str, slot: Slot) -> HashMap<&'static str, String> {
        HashMap::from([
            ("application", "safe-exec".to_owned()),
            ("vault", vault_id.to_owned()),
            ("slot", slot.name().to_owned()),
        ])
    }

    pub fn probe() -> Result<(), KeyError> {
        with_service(|service| {
            let collection = service.get_default_collection()?;
            collection.ensure_unlocked()
        })
    }

    pub fn store(vault_id: &str, slot: Slot, key: &[u8; KEY_LEN]) -> Result<(), KeyError> {
        let attributes = attributes(vault_id, slot);
        let secret = Zeroizing::new(hex::encode(key));
        let label = format!("safe-exec vault master key ({vault_id}, {})", slot.name());
        with_service(move |service| {
            let collection = service.get_default_collection()?;
            collection.ensure_unlocked()?;
            let attributes = attributes
                .iter()
                .map(|(name, value)| (*name, value.as_str()))
                .collect();
            collection.create_item(&label, attributes, secret.as_bytes(), true, "text/plain")?;
            Ok(())
        })
    }

    pub fn load(vault_id: &str, slot: Slot) -> Result<Option<SecretKey>, KeyError> {
        let attributes = attributes(vault_id, slot);
        let secret = with_service(move |service| {
            let attributes = attributes
                .iter()
                .map(|(name, value)| (*name, value.as_str()))
                .collect();
            let found = service.search_items(attributes)?;
            let Some(item) = found.unlocked.into_iter().chain(found.locked).next() else {
                return Ok(None);
            };
            item.ensure_unlocked()?;
            Ok(Some(Zeroizing::new(item.get_secret()?)))
        })?;
        match secret {
            None => Ok(None),
            Some(text) => parse_hex_key(&text).map(Some).ok_or_else(|| {
                KeyError::SecretService("the stored key is not 256 bits in hex".into())
            }),
        }
    }

    pub fn delete(vault_id: &str, slot: Slot) -> Result<(), KeyError> {
        let attributes = attributes(vault_id, slot);
        with_service(move |service| {
            let attributes = attributes
                .iter()
                .map(|(name, value)| (*name, value.as_str()))
                .collect();
            let found = service.search_items(attributes)?;
            for item in found.unlocked.into_iter().chain(found.locked) {
                item.delete()?;
            }
            Ok(())
        })
    }
}
