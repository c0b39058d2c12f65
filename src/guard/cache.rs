//! The guard's cache of classifications: `<vault>/guard/<app>.json`, under an
//! flock on `<app>.lock`, with the same private modes as the rate-limit state.
//!
//! Only the content checks are cached (off-limits, threshold, patterns). The
//! `email_send` bucket is consulted afresh for every message, so a cached
//! classification never lets a message past the rate limit.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::{GuardError, Reason};

/// Maximum number of entries kept per app. The ones closest to expiry are dropped first.
const MAX_ENTRIES: usize = 1000;

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    reasons: Vec<Reason>,
    expires_unix_ms: u64,
}

/// The on-disk cache of one vault.
#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    /// Uses `dir`, creating it with mode 0700.
    pub fn open(dir: &Path) -> Result<Self, GuardError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| GuardError::Cache {
                path: dir.to_owned(),
                source,
            })?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    /// Returns the cached reasons for `key` when an entry has not expired.
    pub fn get(&self, app: &str, key: &str) -> Result<Option<Vec<Reason>>, GuardError> {
        let _lock = self.lock(app)?;
        let entries = self.read(app)?;
        let now = now_ms();
        Ok(entries
            .get(key)
            .filter(|entry| entry.expires_unix_ms > now)
            .map(|entry| entry.reasons.clone()))
    }

    /// Stores `reasons` under `key` for `ttl`, dropping expired entries.
    pub fn put(
        &self,
        app: &str,
        key: &str,
        reasons: &[Reason],
        ttl: Duration,
    ) -> Result<(), GuardError> {
        let _lock = self.lock(app)?;
        let mut entries = self.read(app)?;
        let now = now_ms();
        entries.retain(|_, entry| entry.expires_unix_ms > now);
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        entries.insert(
            key.to_owned(),
            Entry {
                reasons: reasons.to_vec(),
                expires_unix_ms: now.saturating_add(ttl_ms),
            },
        );
        while entries.len() > MAX_ENTRIES {
            let oldest = entries
                .iter()
                .min_by_key(|(_, entry)| entry.expires_unix_ms)
                .map(|(key, _)| key.clone());
            match oldest {
                Some(key) => entries.remove(&key),
                None => break,
            };
        }
        self.write(app, &entries)
    }

    fn lock(&self, app: &str) -> Result<Flock<File>, GuardError> {
        let path = self.dir.join(format!("{app}.lock"));
        crate::lockfile::lock(&path, FlockArg::LockExclusive).map_err(|err| {
            let source = match err {
                crate::lockfile::LockError::Open(source) => source,
                crate::lockfile::LockError::Lock(errno) => errno.into(),
            };
            GuardError::Cache { path, source }
        })
    }

    fn read(&self, app: &str) -> Result<BTreeMap<String, Entry>, GuardError> {
        let path = self.dir.join(format!("{app}.json"));
        match std::fs::read(&path) {
            // An unreadable cache only costs a fresh classification, so it is dropped.
            Ok(bytes) => Ok(serde_json::from_slice(&bytes).unwrap_or_else(|err| {
                tracing::warn!(path = %path.display(), error = %err, "dropping an unreadable guard cache");
                BTreeMap::new()
            })),
            Err(err) if err.kind() == ErrorKind::NotFound => Ok(BTreeMap::new()),
            Err(source) => Err(GuardError::Cache { path, source }),
        }
    }

    fn write(&self, app: &str, entries: &BTreeMap<String, Entry>) -> Result<(), GuardError> {
        let path = self.dir.join(format!("{app}.json"));
        let temp = self.dir.join(format!(".{app}.json.tmp"));
        let bytes = serde_json::to_vec(entries).map_err(|err| GuardError::Cache {
            path: temp.clone(),
            source: err.into(),
        })?;
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&temp)
            .map_err(|source| GuardError::Cache {
                path: temp.clone(),
                source,
            })?;
        file.write_all(&bytes).map_err(|source| GuardError::Cache {
            path: temp.clone(),
            source,
        })?;
        std::fs::rename(&temp, &path).map_err(|source| GuardError::Cache { path, source })
    }
}

fn now_ms() -> u64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(since_epoch.as_millis()).unwrap_or(u64::MAX)
}
