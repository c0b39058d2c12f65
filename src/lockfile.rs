//! Lock files: one stable, private file per piece of shared state, locked
//! with flock(2). The state itself is replaced by rename, so the lock cannot
//! live on it. Used by the vault, the audit log, the rate limiter and the
//! e-mail guard's cache.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use nix::errno::Errno;
use nix::fcntl::{Flock, FlockArg};

/// A lock file that could not be opened or locked.
#[derive(Debug)]
pub enum LockError {
    /// Opening (or creating) the file failed.
    Open(std::io::Error),
    /// flock(2) failed.
    Lock(Errno),
}

/// Opens `path` (created 0600, symlinks not followed) and takes a `mode`
/// lock on it, retrying when a signal interrupts the wait. The lock is
/// released when the returned guard drops.
pub fn lock(path: &Path, mode: FlockArg) -> Result<Flock<File>, LockError> {
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW)
        .open(path)
        .map_err(LockError::Open)?;
    loop {
        match Flock::lock(file, mode) {
            Ok(lock) => return Ok(lock),
            Err((returned, Errno::EINTR)) => file = returned,
            Err((_, errno)) => return Err(LockError::Lock(errno)),
        }
    }
}
