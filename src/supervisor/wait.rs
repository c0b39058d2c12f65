//! The supervisor's event loop while the app runs: signals, the pty relay,
//! the timeout, the start of the request channel, and reaping.

use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signalfd::SignalFd;

use super::init::{self, FORWARDED};
use super::pty::{self, RawModeGuard};
use crate::channel::Server;
use crate::sandbox::sys;

/// The pty relay between the caller's terminal and the run's pty master.
pub struct Relay<'a> {
    master: Option<BorrowedFd<'a>>,
}

impl<'a> Relay<'a> {
    /// Builds a relay; `master` is `None` when the run has no pty.
    pub fn new(master: Option<BorrowedFd<'a>>) -> Self {
        Self { master }
    }
}

/// The result of the wait.
pub struct Waited {
    /// Raw wait status of init.
    pub init_status: i32,
    /// The timeout fired.
    pub timed_out: bool,
}

/// The stop state of the loop, which decides the action at the next deadline.
enum Stop {
    Running,
    /// SIGTERM was sent to the tree at this instant.
    Terminating(Instant),
    /// SIGKILL was sent to the tree.
    Killing,
}

/// Serves the run until init exits. `channel` starts serving when its
/// socket first has a client waiting.
pub fn serve(
    init_pid: libc::pid_t,
    signals: &SignalFd,
    relay: Relay<'_>,
    mut channel: Option<&mut Server>,
    timeout: Option<Duration>,
    grace: Duration,
) -> Waited {
    let stdin = std::io::stdin();
    let raw_guard = relay
        .master
        .and_then(|_| RawModeGuard::enter(stdin.as_fd()).ok());
    let mut stdin_open = relay.master.is_some();
    let mut master_open = relay.master.is_some();
    let deadline = timeout.map(|t| Instant::now() + t);
    let mut stop = Stop::Running;
    let mut timed_out = false;
    let mut buffer = [0u8; 8192];

    let init_status = loop {
        if let Some(status) = reap_init(init_pid) {
            break status;
        }

        let now = Instant::now();
        let next = match stop {
            Stop::Running => deadline,
            Stop::Terminating(since) => Some(since + grace),
            Stop::Killing => Some(now + Duration::from_millis(100)),
        };
        if let Some(at) = next
            && now >= at
        {
            match stop {
                Stop::Running => {
                    timed_out = true;
                    tracing::info!(
                        init_pid,
                        "timeout reached; sending SIGTERM to the app's process tree"
                    );
                    sys::kill(init_pid, init::tree_term_signal());
                    stop = Stop::Terminating(now);
                }
                Stop::Terminating(_) | Stop::Killing => {
                    tracing::info!(
                        init_pid,
                        "grace period over; killing the app's process tree"
                    );
                    sys::kill(init_pid, init::tree_kill_signal());
                    stop = Stop::Killing;
                }
            }
            continue;
        }
        let wait_ms = next.map_or(-1, |at| {
            at.saturating_duration_since(now).as_millis().min(60_000) as i32 + 1
        });

        let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        let master_index = match (relay.master, master_open) {
            (Some(master), true) => {
                fds.push(PollFd::new(master, PollFlags::POLLIN));
                Some(fds.len() - 1)
            }
            _ => None,
        };
        let stdin_index = if stdin_open && relay.master.is_some() {
            fds.push(PollFd::new(stdin.as_fd(), PollFlags::POLLIN));
            Some(fds.len() - 1)
        } else {
            None
        };
        let channel_index = match channel.as_deref().and_then(Server::waiting_socket) {
            Some(socket) => {
                fds.push(PollFd::new(socket, PollFlags::POLLIN));
                Some(fds.len() - 1)
            }
            None => None,
        };
        let timeout = PollTimeout::try_from(wait_ms).unwrap_or(PollTimeout::MAX);
        if poll(&mut fds, timeout).is_err() {
            continue;
        }
        let ready = |index: Option<usize>| {
            index
                .and_then(|i| fds.get(i))
                .and_then(PollFd::revents)
                .is_some_and(|r| !r.is_empty())
        };
        let signal_ready = ready(Some(0));
        let master_ready = ready(master_index);
        let stdin_ready = ready(stdin_index);
        let channel_ready = ready(channel_index);
        drop(fds);

        if channel_ready
            && let Some(server) = channel.as_deref_mut()
            && let Err(err) = server.serve()
        {
            eprintln!("safe-exec: warning: the request channel could not start: {err}");
        }

        if signal_ready {
            while let Ok(Some(info)) = signals.read_signal() {
                let signal = info.ssi_signo as i32;
                if signal == libc::SIGCHLD {
                    continue;
                }
                if signal == libc::SIGWINCH
                    && let (Some(master), Some(size)) =
                        (relay.master, pty::window_size(stdin.as_fd()))
                {
                    pty::set_window_size(master, &size);
                    continue;
                }
                if FORWARDED.contains(&signal) {
                    tracing::info!(signal, init_pid, "forwarding signal to the app");
                    sys::kill(init_pid, signal);
                }
                if matches!(signal, libc::SIGTERM | libc::SIGHUP) && matches!(stop, Stop::Running) {
                    // The supervisor is being stopped: the app gets the grace period, then the tree is killed.
                    stop = Stop::Terminating(Instant::now());
                }
            }
        }
        if master_ready && let Some(master) = relay.master {
            master_open = copy(master, &mut std::io::stdout(), &mut buffer);
        }
        if stdin_ready && let Some(master) = relay.master {
            stdin_open = copy_to_fd(&mut stdin.lock(), master, &mut buffer);
        }
    };

    // Drain what the app wrote last.
    if let (Some(master), true) = (relay.master, master_open) {
        let flags = PollFlags::POLLIN;
        loop {
            let mut fds = [PollFd::new(master, flags)];
            match poll(&mut fds, PollTimeout::ZERO) {
                Ok(n) if n > 0 => {
                    if !copy(master, &mut std::io::stdout(), &mut buffer) {
                        break;
                    }
                }
                _ => break,
            }
        }
    }
    drop(raw_guard);
    Waited {
        init_status,
        timed_out,
    }
}

/// Copies one read from `from` to `to`; returns false at EOF or error.
fn copy(from: BorrowedFd<'_>, to: &mut impl Write, buffer: &mut [u8]) -> bool {
    match nix::unistd::read(from, buffer) {
        Ok(0) | Err(_) => false,
        Ok(n) => {
            let _ = to.write_all(&buffer[..n]);
            let _ = to.flush();
            true
        }
    }
}

fn copy_to_fd(from: &mut impl Read, to: BorrowedFd<'_>, buffer: &mut [u8]) -> bool {
    match from.read(buffer) {
        Ok(0) | Err(_) => false,
        Ok(n) => sys::write_all(to.as_raw_fd(), &buffer[..n]).is_ok(),
    }
}

/// Reaps init if it has exited; also reaps orphans re-parented to the supervisor.
fn reap_init(init_pid: libc::pid_t) -> Option<i32> {
    let mut init_status = None;
    while let Some((pid, status)) = sys::reap_any() {
        if pid == init_pid {
            init_status = Some(status);
        }
    }
    init_status
}

/// Waits for `pid` to exit, blocking.
pub fn reap(pid: libc::pid_t) {
    let mut status = 0;
    // SAFETY: the status pointer refers to a live local.
    unsafe { libc::waitpid(pid, &mut status, 0) };
}

/// Kills and reaps every remaining child of the supervisor (orphans of the
/// run re-parented here because the supervisor is a subreaper).
pub fn kill_orphans() {
    for _round in 0..50 {
        let children = current_children();
        if children.is_empty() {
            while sys::reap_any().is_some() {}
            return;
        }
        for pid in &children {
            tracing::info!(pid, "killing a process left over from the run");
            sys::kill(*pid, libc::SIGKILL);
        }
        std::thread::sleep(Duration::from_millis(5));
        while sys::reap_any().is_some() {}
    }
}

fn current_children() -> Vec<libc::pid_t> {
    let mut children = Vec::new();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return children;
    };
    for task in tasks.flatten() {
        if let Ok(text) = std::fs::read_to_string(task.path().join("children")) {
            children.extend(
                text.split_whitespace()
                    .filter_map(|pid| pid.parse::<libc::pid_t>().ok()),
            );
        }
    }
    children
}
