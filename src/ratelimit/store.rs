//! Bucket state on disk: `<vault>/ratelimits/<app>.json`, replaced atomically,
//! under an flock on `<app>.lock`.
//!
//! The lock lives in its own file because the state file is replaced by a
//! rename on every update, and a lock on a file that gets replaced would no
//! longer exclude a process that opened the new one. The directory is created
//! 0700 and every file 0600 from its first instant.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::{Deserialize, Serialize};

use super::RateError;
use super::bucket::BucketState;

const FORMAT_VERSION: u32 = 1;

/// The buckets of one app as stored.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AppState {
    pub version: u32,
    pub buckets: BTreeMap<String, BucketState>,
}

/// The directory of rate-limit state.
#[derive(Debug, Clone)]
pub struct Store {
    dir: PathBuf,
}

impl Store {
    /// Uses `dir`, creating it (and missing parents) with mode 0700.
    pub fn open(dir: &Path) -> Result<Self, RateError> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|source| RateError::Io {
                path: dir.to_owned(),
                source,
            })?;
        Ok(Self {
            dir: dir.to_owned(),
        })
    }

    /// Returns the state file of `app`.
    pub fn state_file(&self, app: &str) -> PathBuf {
        self.dir.join(format!("{app}.json"))
    }

    fn lock_file(&self, app: &str) -> PathBuf {
        self.dir.join(format!("{app}.lock"))
    }

    /// Runs `change` on the state of `app` under the exclusive lock and writes
    /// the result back.
    pub fn update<T>(
        &self,
        app: &str,
        change: impl FnOnce(&mut AppState) -> T,
    ) -> Result<T, RateError> {
        let _lock = self.lock(app, FlockArg::LockExclusive)?;
        let mut state = self.read_unlocked(app)?;
        let result = change(&mut state);
        self.write_unlocked(app, &state)?;
        Ok(result)
    }

    /// Reads the state of `app` under the shared lock.
    pub fn read(&self, app: &str) -> Result<AppState, RateError> {
        let _lock = self.lock(app, FlockArg::LockShared)?;
        self.read_unlocked(app)
    }

    fn lock(&self, app: &str, mode: FlockArg) -> Result<Flock<File>, RateError> {
        let path = self.lock_file(app);
        crate::lockfile::lock(&path, mode).map_err(|err| match err {
            crate::lockfile::LockError::Open(source) => RateError::Io { path, source },
            crate::lockfile::LockError::Lock(source) => RateError::Lock { path, source },
        })
    }

    fn read_unlocked(&self, app: &str) -> Result<AppState, RateError> {
        let path = self.state_file(app);
        let text = match std::fs::read(&path) {
            Ok(text) => text,
            Err(err) if err.kind() == ErrorKind::NotFound => {
                return Ok(AppState {
                    version: FORMAT_VERSION,
                    buckets: BTreeMap::new(),
                });
            }
            Err(source) => return Err(RateError::Io { path, source }),
        };
        let state: AppState = serde_json::from_slice(&text).map_err(|err| RateError::Corrupt {
            path: path.clone(),
            app: app.to_owned(),
            message: err.to_string(),
        })?;
        if state.version != FORMAT_VERSION {
            return Err(RateError::Corrupt {
                path,
                app: app.to_owned(),
                message: format!("unsupported format version {}", state.version),
            });
        }
        Ok(state)
    }

    /// Writes the state to a temporary file, syncs it and renames it over the
    /// old one, so a crash leaves the old or the new state, never a torn one.
    fn write_unlocked(&self, app: &str, state: &AppState) -> Result<(), RateError> {
        let path = self.state_file(app);
        let temp = self.dir.join(format!(".{app}.json.tmp"));
        let io = |path: &Path| {
            let path = path.to_owned();
            move |source| RateError::Io { path, source }
        };
        let mut bytes = serde_json::to_vec(state).map_err(|err| io(&temp)(err.into()))?;
        bytes.push(b'\n');
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .custom_flags(libc::O_CLOEXEC)
            .open(&temp)
            .map_err(io(&temp))?;
        file.write_all(&bytes).map_err(io(&temp))?;
        file.sync_data().map_err(io(&temp))?;
        std::fs::rename(&temp, &path).map_err(io(&path))?;
        Ok(())
    }
}
