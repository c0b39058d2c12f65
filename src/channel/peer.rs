//! Which connecting processes the channel serves, decided by SO_PEERCRED.
//!
//! The socket is in the run's private 0700 directory, so only the user's own
//! processes can reach its path. The peer check further limits it to the
//! processes of the run's tree.

use std::os::unix::net::UnixStream;
use std::sync::Arc;

use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

/// The peers the server accepts.
#[derive(Clone)]
pub enum PeerCheck {
    /// Processes whose parent chain reaches this pid, and that pid itself.
    /// Give the supervisor's own pid when it is the subreaper of the run, so
    /// orphans re-parented to it still count.
    DescendantOf(i32),
    /// A caller's own rule on the peer's pid.
    Custom(Arc<dyn Fn(i32) -> bool + Send + Sync>),
}

impl std::fmt::Debug for PeerCheck {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerCheck::DescendantOf(pid) => f.debug_tuple("DescendantOf").field(pid).finish(),
            PeerCheck::Custom(_) => f.write_str("Custom(..)"),
        }
    }
}

impl PeerCheck {
    /// Returns the peer's pid when the peer is allowed, or `Err` with the pid
    /// (if known) and the reason.
    pub fn admit(&self, stream: &UnixStream) -> Result<i32, String> {
        let credentials = getsockopt(stream, PeerCredentials)
            .map_err(|err| format!("failed to read SO_PEERCRED: {err}"))?;
        let pid = credentials.pid();
        let allowed = match self {
            PeerCheck::DescendantOf(root) => is_descendant(pid, *root),
            PeerCheck::Custom(rule) => rule(pid),
        };
        if allowed {
            Ok(pid)
        } else {
            Err(format!("process {pid} is not part of this run"))
        }
    }
}

/// Returns true when `pid` is `root` or a descendant of it, by walking the
/// parent chain in `/proc`.
pub fn is_descendant(pid: i32, root: i32) -> bool {
    let mut current = pid;
    for _ in 0..4096 {
        if current == root {
            return true;
        }
        if current <= 1 {
            return false;
        }
        match parent_of(current) {
            Some(parent) => current = parent,
            None => return false,
        }
    }
    false
}

fn parent_of(pid: i32) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name in parentheses may contain spaces, so fields are
    // counted after the last ')': state, then the parent pid.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(1)?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn own_process_descends_from_parent() {
        let me = std::process::id() as i32;
        let parent = nix::unistd::getppid().as_raw();
        assert!(is_descendant(me, me));
        assert!(is_descendant(me, parent));
        assert!(!is_descendant(parent, me));
    }
}
