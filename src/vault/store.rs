//! The vault on disk: locking, reading, unlocking and atomic writes.
//!
//! Writers hold an exclusive `flock` on `credentials.lock` (a separate, stable
//! file, because the vault file itself is replaced by rename) from reading to
//! writing. A write goes to a temporary file created 0600 in the vault
//! directory, is fsynced, renamed over `credentials.vault`, and the directory
//! is fsynced, so a crash leaves the old vault or the new one, never a torn one.
//! Readers that change nothing read without the lock: a rename is atomic.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use chrono::Utc;
use nix::fcntl::{Flock, FlockArg};
use zeroize::Zeroizing;

use super::VaultError;
use super::crypto::{self, KEY_LEN, SecretKey};
use super::format::{
    self, BackendRecord, Entry, FORMAT_NAME, FORMAT_VERSION, Header, Line, Previous, SealedText,
    VaultFile,
};
use super::keys::{self, Slot};

/// Name of the vault file inside the vault directory.
pub const VAULT_FILE: &str = "credentials.vault";

/// Name of the lock file inside the vault directory.
pub const LOCK_FILE: &str = "credentials.lock";

const TEMP_PREFIX: &str = ".credentials.vault.tmp-";

/// The keys of an unlocked vault.
pub struct Keys {
    master: SecretKey,
    data: SecretKey,
    /// Root of the audit log's MAC key, kept unchanged by `rotate-master-key`
    /// so earlier audit records still verify.
    audit_root: SecretKey,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Keys { .. }")
    }
}

impl Keys {
    /// Returns the audit root key.
    pub fn audit_root(&self) -> &[u8; KEY_LEN] {
        &self.audit_root
    }
}

/// An unlocked vault, held under the exclusive lock until dropped.
#[derive(Debug)]
pub struct Vault {
    dir: PathBuf,
    file: VaultFile,
    keys: Keys,
    _lock: Flock<File>,
}

/// Returns the path of the vault file.
pub fn vault_path(dir: &Path) -> PathBuf {
    dir.join(VAULT_FILE)
}

/// Creates the vault directory with mode 0700 if it is missing.
pub fn create_dir(dir: &Path) -> Result<(), VaultError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| VaultError::Io {
            action: "create directory",
            path: dir.to_owned(),
            source,
        })
}

/// Takes the exclusive lock of the vault directory, waiting for other writers.
pub fn lock(dir: &Path) -> Result<Flock<File>, VaultError> {
    create_dir(dir)?;
    let path = dir.join(LOCK_FILE);
    crate::lockfile::lock(&path, FlockArg::LockExclusive).map_err(|err| match err {
        crate::lockfile::LockError::Open(source) => VaultError::Io {
            action: "open",
            path,
            source,
        },
        crate::lockfile::LockError::Lock(source) => VaultError::Lock { path, source },
    })
}

/// Reads and parses the vault file without unlocking it.
pub fn read_file(dir: &Path) -> Result<VaultFile, VaultError> {
    let path = vault_path(dir);
    let mut file = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_CLOEXEC)
        .open(&path)
    {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            return Err(VaultError::NotInitialised {
                dir: dir.to_owned(),
            });
        }
        Err(source) => {
            return Err(VaultError::Io {
                action: "open",
                path,
                source,
            });
        }
    };
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|source| VaultError::Io {
            action: "read",
            path: path.clone(),
            source,
        })?;
    VaultFile::parse(&bytes).map_err(|err| VaultError::CorruptHeader {
        path,
        reason: err.to_string(),
    })
}

/// Finds the master key of `file` in its backend and opens the sealed keys.
///
/// Tries the current slot, then the pending one (left by an interrupted
/// `rotate-master-key`). Returns the keys and the slot that matched.
pub fn unlock(dir: &Path, file: &VaultFile) -> Result<(Keys, Slot), VaultError> {
    let header = &file.header;
    let expected = hex::decode(&header.key_check).map_err(|_| VaultError::CorruptHeader {
        path: vault_path(dir),
        reason: "the key check value is not hex".into(),
    })?;

    let mut found_any = false;
    for slot in [Slot::Current, Slot::Pending] {
        let Some(master) = keys::load(&header.backend, &header.vault_id, slot)? else {
            continue;
        };
        found_any = true;
        if crypto::key_check_matches(&master, &header.vault_id, &expected) {
            return Ok((open_keys(dir, header, master)?, slot));
        }
    }

    if !found_any {
        return Err(VaultError::KeyMissing {
            backend: header.backend.name(),
            hint: missing_key_hint(&header.backend),
        });
    }
    Err(VaultError::WrongKey {
        backend: header.backend.name(),
    })
}

fn missing_key_hint(backend: &BackendRecord) -> String {
    match backend {
        BackendRecord::File { path } => format!("key file {} does not exist", path.display()),
        BackendRecord::Keyutils => "keyutils keys are lost at reboot; the vault cannot be opened without a backup of its key".into(),
        BackendRecord::SecretService => "no item with this vault's id in the default collection".into(),
        BackendRecord::Passphrase { .. } => "no passphrase given".into(),
    }
}

fn open_keys(dir: &Path, header: &Header, master: SecretKey) -> Result<Keys, VaultError> {
    let corrupt = |reason: &str| VaultError::CorruptHeader {
        path: vault_path(dir),
        reason: reason.to_owned(),
    };
    let sealed = header
        .keys
        .decode()
        .ok_or_else(|| corrupt("the sealed keys are not hex"))?;
    let plain =
        crypto::open(&master, &format::keys_aad(&header.vault_id), &sealed).map_err(|_| {
            corrupt("the key check value matches but the sealed data key does not open")
        })?;
    if plain.len() != 2 * KEY_LEN {
        return Err(corrupt("the sealed keys have the wrong length"));
    }
    let mut data = Zeroizing::new([0u8; KEY_LEN]);
    let mut audit_root = Zeroizing::new([0u8; KEY_LEN]);
    data.copy_from_slice(&plain[..KEY_LEN]);
    audit_root.copy_from_slice(&plain[KEY_LEN..]);
    Ok(Keys {
        master,
        data,
        audit_root,
    })
}

fn seal_keys(
    vault_id: &str,
    master: &[u8; KEY_LEN],
    data: &[u8; KEY_LEN],
    audit_root: &[u8; KEY_LEN],
) -> Result<SealedText, VaultError> {
    let mut plain = Zeroizing::new(Vec::with_capacity(2 * KEY_LEN));
    plain.extend_from_slice(data);
    plain.extend_from_slice(audit_root);
    Ok(SealedText::encode(&crypto::seal(
        master,
        &format::keys_aad(vault_id),
        &plain,
    )?))
}

/// Reads and unlocks the vault without the lock and without changing anything.
pub fn open_read_only(dir: &Path) -> Result<(VaultFile, Keys), VaultError> {
    let file = read_file(dir)?;
    let (keys, _) = unlock(dir, &file)?;
    Ok((file, keys))
}

impl Vault {
    /// Writes a new, empty vault whose master key is already in its backend.
    pub fn create(
        dir: &Path,
        backend: BackendRecord,
        vault_id: String,
        master: SecretKey,
    ) -> Result<Self, VaultError> {
        let lock = lock(dir)?;
        if vault_path(dir).exists() {
            return Err(VaultError::AlreadyInitialised {
                dir: dir.to_owned(),
            });
        }
        let data = crypto::random_key()?;
        let audit_root = crypto::random_key()?;
        let header = Header {
            format: FORMAT_NAME.to_owned(),
            version: FORMAT_VERSION,
            key_check: hex::encode(crypto::key_check_value(&master, &vault_id)),
            keys: seal_keys(&vault_id, &master, &data, &audit_root)?,
            vault_id,
            backend,
            entries: 0,
            updated: Utc::now(),
        };
        let mut vault = Self {
            dir: dir.to_owned(),
            file: VaultFile {
                header,
                lines: Vec::new(),
                missing_entries: 0,
            },
            keys: Keys {
                master,
                data,
                audit_root,
            },
            _lock: lock,
        };
        vault.save()?;
        Ok(vault)
    }

    /// Locks, reads and unlocks the vault. Finishes an interrupted master-key
    /// rotation and removes temporary files left by a crash.
    pub fn open(dir: &Path) -> Result<Self, VaultError> {
        // Checked before locking, because taking the lock creates the directory.
        if !vault_path(dir).exists() {
            return Err(VaultError::NotInitialised {
                dir: dir.to_owned(),
            });
        }
        let lock = lock(dir)?;
        remove_stale_temporaries(dir);
        let file = read_file(dir)?;
        let (keys, slot) = unlock(dir, &file)?;

        let backend = &file.header.backend;
        let vault_id = &file.header.vault_id;
        match slot {
            // The vault file was rewritten under the pending key, but the key was not promoted yet.
            Slot::Pending => keys::promote_pending(backend, vault_id)?,
            // A rotation stopped before it rewrote the vault file: its new key is useless.
            Slot::Current => {
                if !matches!(backend, BackendRecord::Passphrase { .. })
                    && keys::load(backend, vault_id, Slot::Pending)?.is_some()
                {
                    keys::delete(backend, vault_id, Slot::Pending)?;
                }
            }
        }
        Ok(Self {
            dir: dir.to_owned(),
            file,
            keys,
            _lock: lock,
        })
    }

    /// Returns the parsed vault file.
    pub fn file(&self) -> &VaultFile {
        &self.file
    }

    /// Returns the unlocked keys.
    pub fn keys(&self) -> &Keys {
        &self.keys
    }

    /// Decrypts the current value of an entry.
    pub fn get(&self, service: &str, key: &str) -> Result<Zeroizing<String>, VaultError> {
        let entry = self.entry(service, key)?;
        self.decrypt(entry, false)
    }

    /// Decrypts the value kept from before the last rotation, if any.
    pub fn get_previous(
        &self,
        service: &str,
        key: &str,
    ) -> Result<Option<Zeroizing<String>>, VaultError> {
        let entry = self.entry(service, key)?;
        match &entry.previous {
            Some(_) => self.decrypt(entry, true).map(Some),
            None => Ok(None),
        }
    }

    fn entry(&self, service: &str, key: &str) -> Result<&Entry, VaultError> {
        if let Some(entry) = self.file.find(service, key) {
            return Ok(entry);
        }
        let name = format!("{service}/{key}");
        if let Some(damaged) = self
            .file
            .damaged()
            .find(|damaged| damaged.name.as_deref() == Some(name.as_str()))
        {
            return Err(VaultError::CorruptEntry {
                service: service.to_owned(),
                key: key.to_owned(),
                reason: format!("line {}: {}", damaged.number, damaged.reason),
            });
        }
        Err(VaultError::NotFound {
            service: service.to_owned(),
            key: key.to_owned(),
        })
    }

    fn decrypt(&self, entry: &Entry, previous: bool) -> Result<Zeroizing<String>, VaultError> {
        let corrupt = |reason: &str| VaultError::CorruptEntry {
            service: entry.service.clone(),
            key: entry.key.clone(),
            reason: reason.to_owned(),
        };
        let text = match (&entry.previous, previous) {
            (Some(old), true) => &old.value,
            _ => &entry.value,
        };
        let sealed = text
            .decode()
            .ok_or_else(|| corrupt("the nonce or ciphertext is not valid hex"))?;
        let plain = crypto::open(
            &self.keys.data,
            &format::entry_aad(&entry.service, &entry.key, previous),
            &sealed,
        )
        .map_err(|_| {
            corrupt("authentication failed: the ciphertext was changed or belongs to another entry")
        })?;
        let text = std::str::from_utf8(&plain).map_err(|_| corrupt("the value is not UTF-8"))?;
        Ok(Zeroizing::new(text.to_owned()))
    }

    fn seal(
        &self,
        service: &str,
        key: &str,
        value: &str,
        previous: bool,
    ) -> Result<SealedText, VaultError> {
        let sealed = crypto::seal(
            &self.keys.data,
            &format::entry_aad(service, key, previous),
            value.as_bytes(),
        )?;
        Ok(SealedText::encode(&sealed))
    }

    /// Stores a value, replacing the current one without keeping it.
    /// `rotate_days` replaces the rotation period when given.
    pub fn put(
        &mut self,
        service: &str,
        key: &str,
        value: &str,
        rotate_days: Option<u32>,
    ) -> Result<(), VaultError> {
        let sealed = self.seal(service, key, value, false)?;
        let now = Utc::now();
        match self.file.find_mut(service, key) {
            Some(entry) => {
                entry.value = sealed;
                entry.updated = now;
                entry.previous = None;
                if rotate_days.is_some() {
                    entry.rotate_days = rotate_days;
                }
            }
            None => {
                let name = format!("{service}/{key}");
                // A new value replaces a damaged line of the same name.
                self.file.lines.retain(|line| !matches!(line, Line::Damaged(damaged) if damaged.name.as_deref() == Some(name.as_str())));
                self.file.lines.push(Line::Entry(Entry {
                    service: service.to_owned(),
                    key: key.to_owned(),
                    value: sealed,
                    created: now,
                    updated: now,
                    rotate_days,
                    last_access: None,
                    previous: None,
                }));
            }
        }
        Ok(())
    }

    /// Replaces a value and keeps the old one as `previous` until confirmed.
    pub fn rotate(&mut self, service: &str, key: &str, value: &str) -> Result<(), VaultError> {
        let old = self.get(service, key)?;
        let sealed_old = self.seal(service, key, &old, true)?;
        let sealed_new = self.seal(service, key, value, false)?;
        let entry = self
            .file
            .find_mut(service, key)
            .ok_or_else(|| VaultError::NotFound {
                service: service.to_owned(),
                key: key.to_owned(),
            })?;
        entry.previous = Some(Previous {
            value: sealed_old,
            updated: entry.updated,
        });
        entry.value = sealed_new;
        entry.updated = Utc::now();
        Ok(())
    }

    /// Drops the previous value of a rotated entry and returns whether there was one.
    pub fn confirm_rotation(&mut self, service: &str, key: &str) -> Result<bool, VaultError> {
        let entry = self
            .file
            .find_mut(service, key)
            .ok_or_else(|| VaultError::NotFound {
                service: service.to_owned(),
                key: key.to_owned(),
            })?;
        Ok(entry.previous.take().is_some())
    }

    /// Restores the previous value of a rotated entry and returns whether there was one.
    pub fn roll_back_rotation(&mut self, service: &str, key: &str) -> Result<bool, VaultError> {
        let Some(old) = self.get_previous(service, key)? else {
            return Ok(false);
        };
        let sealed = self.seal(service, key, &old, false)?;
        let entry = self
            .file
            .find_mut(service, key)
            .ok_or_else(|| VaultError::NotFound {
                service: service.to_owned(),
                key: key.to_owned(),
            })?;
        let previous = entry.previous.take();
        entry.value = sealed;
        entry.updated = previous.map_or_else(Utc::now, |previous| previous.updated);
        Ok(true)
    }

    /// Removes an entry, or a damaged line of that name.
    pub fn remove(&mut self, service: &str, key: &str) -> Result<(), VaultError> {
        let name = format!("{service}/{key}");
        let before = self.file.lines.len();
        self.file.lines.retain(|line| match line {
            Line::Entry(entry) => !(entry.service == service && entry.key == key),
            Line::Damaged(damaged) => damaged.name.as_deref() != Some(name.as_str()),
        });
        if self.file.lines.len() == before {
            return Err(VaultError::NotFound {
                service: service.to_owned(),
                key: key.to_owned(),
            });
        }
        Ok(())
    }

    /// Records that a value was read now.
    pub fn mark_access(&mut self, service: &str, key: &str) {
        if let Some(entry) = self.file.find_mut(service, key) {
            entry.last_access = Some(Utc::now());
        }
    }

    /// Re-encrypts every entry under a new data key sealed with `master`, and
    /// records `backend`. The audit root key is kept. Damaged lines are kept
    /// unchanged, because they could not be opened with the old key either.
    pub fn rekey(&mut self, backend: BackendRecord, master: SecretKey) -> Result<(), VaultError> {
        let mut plain = Vec::new();
        for entry in self.file.entries() {
            let current = self.decrypt(entry, false)?;
            let previous = match entry.previous {
                Some(_) => Some(self.decrypt(entry, true)?),
                None => None,
            };
            plain.push((entry.service.clone(), entry.key.clone(), current, previous));
        }

        self.keys = Keys {
            master,
            data: crypto::random_key()?,
            audit_root: self.keys.audit_root.clone(),
        };
        for (service, key, current, previous) in plain {
            let sealed = self.seal(&service, &key, &current, false)?;
            let sealed_previous = match &previous {
                Some(old) => Some(self.seal(&service, &key, old, true)?),
                None => None,
            };
            if let Some(entry) = self.file.find_mut(&service, &key) {
                entry.value = sealed;
                if let (Some(kept), Some(sealed_previous)) =
                    (entry.previous.as_mut(), sealed_previous)
                {
                    kept.value = sealed_previous;
                }
            }
        }

        let header = &mut self.file.header;
        header.backend = backend;
        header.key_check =
            hex::encode(crypto::key_check_value(&self.keys.master, &header.vault_id));
        header.keys = seal_keys(
            &header.vault_id,
            &self.keys.master,
            &self.keys.data,
            &self.keys.audit_root,
        )?;
        Ok(())
    }

    /// Writes the vault atomically: temporary file (0600 from creation),
    /// fsync, rename, fsync of the directory.
    pub fn save(&mut self) -> Result<(), VaultError> {
        let bytes = self.file.to_bytes().map_err(|err| VaultError::Io {
            action: "serialise",
            path: vault_path(&self.dir),
            source: err.into(),
        })?;
        let suffix = hex::encode(crypto::random_bytes::<8>()?);
        let temporary = self
            .dir
            .join(format!("{TEMP_PREFIX}{}-{suffix}", std::process::id()));
        let io_error = |action, source| VaultError::Io {
            action,
            path: temporary.clone(),
            source,
        };

        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
            .open(&temporary)
            .map_err(|source| io_error("create", source))?;
        if let Err(source) = file.write_all(&bytes).and_then(|()| file.sync_all()) {
            let _ = std::fs::remove_file(&temporary);
            return Err(io_error("write", source));
        }
        drop(file);

        let target = vault_path(&self.dir);
        if let Err(source) = std::fs::rename(&temporary, &target) {
            let _ = std::fs::remove_file(&temporary);
            return Err(VaultError::Io {
                action: "replace",
                path: target,
                source,
            });
        }
        File::open(&self.dir)
            .and_then(|dir| dir.sync_all())
            .map_err(|source| VaultError::Io {
                action: "sync",
                path: self.dir.clone(),
                source,
            })
    }
}

/// Removes temporary vault files of writers that died. It runs under the lock,
/// so no live writer owns one.
fn remove_stale_temporaries(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(TEMP_PREFIX) {
            tracing::info!(path = %entry.path().display(), "removing a temporary vault file left by an interrupted write");
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Decrypts one entry of a file opened with `open_read_only` and drops the
/// value, to check that it opens.
pub fn decrypt_check(
    file: &VaultFile,
    keys: &Keys,
    service: &str,
    key: &str,
) -> Result<(), VaultError> {
    decrypt_value(file, keys, service, key).map(drop)
}

/// Decrypts one entry of a file opened with `open_read_only`.
pub fn decrypt_value(
    file: &VaultFile,
    keys: &Keys,
    service: &str,
    key: &str,
) -> Result<Zeroizing<String>, VaultError> {
    let corrupt = |reason: &str| VaultError::CorruptEntry {
        service: service.to_owned(),
        key: key.to_owned(),
        reason: reason.to_owned(),
    };
    let entry = file
        .find(service, key)
        .ok_or_else(|| VaultError::NotFound {
            service: service.to_owned(),
            key: key.to_owned(),
        })?;
    let sealed = entry
        .value
        .decode()
        .ok_or_else(|| corrupt("the nonce or ciphertext is not valid hex"))?;
    let plain = crypto::open(&keys.data, &format::entry_aad(service, key, false), &sealed)
        .map_err(|_| {
            corrupt("authentication failed: the ciphertext was changed or belongs to another entry")
        })?;
    let text = std::str::from_utf8(&plain).map_err(|_| corrupt("the value is not UTF-8"))?;
    Ok(Zeroizing::new(text.to_owned()))
}
