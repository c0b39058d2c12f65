//! The run's private directory: `{tmp}` for the app and the supervisor's
//! socket, under `$XDG_RUNTIME_DIR/safe-exec` or `/tmp/safe-exec-UID`.
//!
//! Directories are created 0700 and the base is checked to be ours and not a
//! symlink. Each run directory records its supervisor's pid and start time,
//! so directories left by a supervisor that was killed are removed by the
//! next run.

use std::fs::DirBuilder;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::unistd::Uid;
use thiserror::Error;

const PID_FILE: &str = "supervisor.pid";

/// A run directory that could not be prepared.
#[derive(Debug, Error)]
pub enum RunDirError {
    #[error("failed to create run directory {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "run directory base {path} is not a private directory of this user (owner uid {owner}, mode {mode:o}); remove it or set XDG_RUNTIME_DIR"
    )]
    Unsafe {
        path: PathBuf,
        owner: u32,
        mode: u32,
    },
}

/// The private directory of one run; removed by `remove`.
#[derive(Debug)]
pub struct RunDir {
    pub path: PathBuf,
}

impl RunDir {
    /// Creates the run directory for `run_id` with its `tmp` subdirectory.
    pub fn create(run_id: &str) -> Result<Self, RunDirError> {
        let base = base_dir();
        ensure_private_base(&base)?;
        let path = base.join(run_id);
        make_dir(&path)?;
        make_dir(&path.join("tmp"))?;
        let marker = format!(
            "{} {}",
            std::process::id(),
            start_time(std::process::id()).unwrap_or(0)
        );
        write_private(&path.join(PID_FILE), marker.as_bytes()).map_err(|source| {
            RunDirError::Create {
                path: path.clone(),
                source,
            }
        })?;
        Ok(Self { path })
    }

    /// Returns the app's private temporary directory, the target of `{tmp}`.
    pub fn tmp(&self) -> PathBuf {
        self.path.join("tmp")
    }

    /// Returns the path of the supervisor's request socket.
    pub fn socket(&self) -> PathBuf {
        self.path.join("supervisor.sock")
    }

    /// Removes the directory and everything the run left in it; returns the number of entries removed.
    pub fn remove(&self) -> std::io::Result<usize> {
        let count = count_entries(&self.path);
        std::fs::remove_dir_all(&self.path)?;
        Ok(count)
    }
}

/// Removes run directories whose supervisor is gone; returns the paths removed.
pub fn remove_stale() -> Vec<PathBuf> {
    let base = base_dir();
    let Ok(entries) = std::fs::read_dir(&base) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        let Ok(marker) = std::fs::read_to_string(path.join(PID_FILE)) else {
            continue;
        };
        let mut parts = marker
            .split_whitespace()
            .map(|part| part.parse::<u64>().ok());
        let (Some(Some(pid)), Some(Some(started))) = (parts.next(), parts.next()) else {
            continue;
        };
        let Ok(pid) = u32::try_from(pid) else {
            continue;
        };
        if start_time(pid) == Some(started) {
            continue;
        }
        if std::fs::remove_dir_all(&path).is_ok() {
            removed.push(path);
        }
    }
    removed
}

fn base_dir() -> PathBuf {
    if let Some(runtime) = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from)
        && runtime.is_absolute()
        && runtime.is_dir()
    {
        return runtime.join("safe-exec");
    }
    PathBuf::from(format!("/tmp/safe-exec-{}", Uid::current().as_raw()))
}

fn ensure_private_base(base: &Path) -> Result<(), RunDirError> {
    match DirBuilder::new().mode(0o700).create(base) {
        Ok(()) => return Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(source) => {
            return Err(RunDirError::Create {
                path: base.to_owned(),
                source,
            });
        }
    }
    let meta = std::fs::symlink_metadata(base).map_err(|source| RunDirError::Create {
        path: base.to_owned(),
        source,
    })?;
    let mode = meta.permissions().mode() & 0o7777;
    if !meta.is_dir() || meta.uid() != Uid::current().as_raw() || mode & 0o077 != 0 {
        return Err(RunDirError::Unsafe {
            path: base.to_owned(),
            owner: meta.uid(),
            mode,
        });
    }
    Ok(())
}

fn write_private(path: &Path, content: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)?;
    file.write_all(content)
}

fn make_dir(path: &Path) -> Result<(), RunDirError> {
    DirBuilder::new()
        .mode(0o700)
        .create(path)
        .map_err(|source| RunDirError::Create {
            path: path.to_owned(),
            source,
        })
}

fn count_entries(path: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(path) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| {
            let child = entry.path();
            let nested = if entry.file_type().is_ok_and(|t| t.is_dir()) {
                count_entries(&child)
            } else {
                0
            };
            1 + nested
        })
        .sum()
}

/// Returns the start time of `pid` in clock ticks since boot (field 22 of /proc/PID/stat).
fn start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}
