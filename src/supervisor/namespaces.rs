//! Namespaces for a run: a user namespace (so an unprivileged supervisor may
//! create the others), a PID namespace (so nothing outlives the run) and an
//! empty network namespace for `network.mode: none`.
//!
//! When the kernel refuses a user namespace (sysctl, AppArmor, containers),
//! the run falls back: root still gets the PID and network namespaces, an
//! unprivileged caller gets none, and the run uses a subreaper init and
//! seccomp's socket-family filter instead. The fallback is reported.

use std::path::PathBuf;

use nix::errno::Errno;
use nix::unistd::{Gid, Uid};
use serde::Serialize;

/// The uid and gid of an app started by root, inside its user namespace.
pub const ROOT_MAPPED_ID: u32 = 65534;

/// The namespaces a run requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Namespaces {
    pub user: bool,
    pub pid: bool,
    pub net: bool,
}

impl Namespaces {
    /// Returns the preferred set: all three (network only for `mode: none`),
    /// or none when `SAFE_EXEC_NAMESPACES=off` selects the fallback mechanisms
    /// (for hosts where namespaces misbehave, and to test the fallback).
    pub fn preferred(network_none: bool) -> Self {
        if std::env::var_os("SAFE_EXEC_NAMESPACES").is_some_and(|value| value == "off") {
            return Self {
                user: false,
                pid: false,
                net: false,
            };
        }
        Self {
            user: true,
            pid: true,
            net: network_none,
        }
    }

    /// Returns the set to try after the kernel refused a user namespace.
    pub fn without_user(self) -> Self {
        let root = Uid::effective().is_root();
        Self {
            user: false,
            pid: self.pid && root,
            net: self.net && root,
        }
    }

    /// Returns the clone flags for this set.
    pub fn clone_flags(self) -> libc::c_int {
        let mut flags = 0;
        if self.user {
            flags |= libc::CLONE_NEWUSER;
        }
        if self.pid {
            flags |= libc::CLONE_NEWPID;
        }
        if self.net {
            flags |= libc::CLONE_NEWNET;
        }
        flags
    }
}

/// Returns true when `errno` from clone means namespaces are not available
/// to this caller, as opposed to a resource failure.
pub fn is_refusal(errno: Errno) -> bool {
    matches!(
        errno,
        Errno::EPERM | Errno::EINVAL | Errno::ENOSPC | Errno::EACCES | Errno::EUSERS
    )
}

/// Writes the uid and gid maps of `pid`'s new user namespace: the caller's
/// own ids map to themselves, except root, which maps to 65534 ("nobody")
/// so the app never runs as uid 0 even when the supervisor does.
pub fn write_id_maps(pid: libc::pid_t) -> Result<(), MapError> {
    let uid = Uid::current().as_raw();
    let gid = Gid::current().as_raw();
    let inner_uid = if uid == 0 { ROOT_MAPPED_ID } else { uid };
    let inner_gid = if uid == 0 { ROOT_MAPPED_ID } else { gid };
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));

    write(proc_dir.join("setgroups"), "deny")?;
    write(proc_dir.join("uid_map"), &format!("{inner_uid} {uid} 1\n"))?;
    write(proc_dir.join("gid_map"), &format!("{inner_gid} {gid} 1\n"))?;
    Ok(())
}

fn write(path: PathBuf, content: &str) -> Result<(), MapError> {
    std::fs::write(&path, content).map_err(|source| MapError { path, source })
}

/// A uid or gid map that could not be written.
#[derive(Debug, thiserror::Error)]
#[error("failed to write {path}: {source}")]
pub struct MapError {
    pub path: PathBuf,
    pub source: std::io::Error,
}
