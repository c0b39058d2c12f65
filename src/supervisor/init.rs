//! The run's init: the first process of the sandbox, parent of the app.
//!
//! With a PID namespace it is PID 1 there, so when it exits the kernel kills
//! everything left in the namespace. Without one it is a child subreaper:
//! every orphan of the app's tree is re-parented to it, and it kills them by
//! walking its children. Either way it forwards the supervisor's signals to
//! the app, reaps every process, reports the app's wait status through the
//! status pipe, and dies with the supervisor (parent-death signal).
//!
//! It runs between clone and exit without exec, so like the app's set-up
//! steps it only makes system calls.

use std::os::fd::RawFd;

use nix::errno::Errno;

use crate::sandbox::child::{self, ChildPlan, Step};
use crate::sandbox::sys;

/// Signals the supervisor forwards to the app.
pub const FORWARDED: [libc::c_int; 7] = [
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGWINCH,
    libc::SIGUSR1,
    libc::SIGUSR2,
];

/// Asks init to send SIGTERM to every process of the run.
pub fn tree_term_signal() -> libc::c_int {
    libc::SIGRTMIN() + 1
}

/// Asks init to SIGKILL every process of the run and exit.
pub fn tree_kill_signal() -> libc::c_int {
    libc::SIGRTMIN() + 2
}

/// Descriptors init uses.
#[derive(Debug, Clone, Copy)]
pub struct InitFds {
    /// Read end of the start pipe. Its first byte lets init start the app's
    /// set-up, and its second lets the app exec. EOF means the supervisor died.
    pub start: RawFd,
    /// Write end of the error pipe (close-on-exec), for set-up failures.
    pub error: RawFd,
    /// Write end of the status pipe, for the app's wait status.
    pub status: RawFd,
    /// Supervisor-side descriptors that init closes at once (-1 for none).
    /// Init never execs, so close-on-exec does not close them for it; the
    /// credential pipe's write end among them would keep the app from seeing EOF.
    pub close: [RawFd; 5],
}

/// Runs init. Never returns.
pub fn run(plan: &mut ChildPlan, fds: InitFds, pid_namespace: bool) -> ! {
    let fail = |step: Step, errno: Errno| child::fail(fds.error, step, errno, 125);

    // Die with the supervisor. In a PID namespace SIGKILL of init takes the whole
    // namespace with it; without one init must clean up first, so it gets a signal it handles.
    let death_signal = if pid_namespace {
        libc::SIGKILL
    } else {
        tree_kill_signal()
    };
    if let Err(errno) = sys::set_parent_death_signal(death_signal) {
        fail(Step::ParentDeathSignal, errno);
    }
    for fd in fds.close {
        if fd >= 0 {
            // SAFETY: closing a descriptor number this process owns a copy of.
            unsafe { libc::close(fd) };
        }
    }

    // Wait for the supervisor to finish the namespace set-up (uid and gid maps).
    // EOF means it died before that: exit without starting anything.
    let mut go = [0u8; 1];
    match sys::read_full(fds.start, &mut go) {
        Ok(1) => {}
        _ => sys::exit_now(125),
    }

    if let Err(errno) = nix::unistd::setsid() {
        fail(Step::Session, errno);
    }
    if !pid_namespace && let Err(errno) = sys::prctl(libc::PR_SET_CHILD_SUBREAPER, 1) {
        fail(Step::Namespaces, errno);
    }

    let all = sys::full_sigset();
    if let Err(errno) = sys::set_signal_mask(&all) {
        fail(Step::Signals, errno);
    }

    // The app shares init's memory until it execs, so starting it copies no
    // page tables: init's memory is a copy of the whole supervisor's.
    let mut start = AppStart {
        plan,
        error: fds.error,
        start: fds.start,
    };
    // SAFETY: `start` lives on this stack until the call returns, which is after the app's exec or exit.
    let app = match unsafe { sys::spawn_sharing_memory(app_entry, (&raw mut start).cast()) } {
        Ok(pid) => pid,
        Err(errno) => fail(Step::Fork, errno),
    };
    // SAFETY: closing init's own copies. The error pipe must close so that the
    // supervisor reads EOF at exec, and the start pipe's second byte is the app's.
    unsafe {
        libc::close(fds.error);
        libc::close(fds.start);
    }

    let mut app_status = None;
    let status = supervise(app, pid_namespace, &all, &mut app_status);
    kill_tree(libc::SIGKILL, pid_namespace, app, &mut app_status);
    reap_all();
    let _ = sys::write_all(fds.status, &status.to_le_bytes());
    sys::exit_now(0)
}

/// The plan and descriptors that the app's process sets itself up with.
struct AppStart<'a> {
    plan: &'a mut ChildPlan,
    error: RawFd,
    start: RawFd,
}

/// Runs in the app's process, on its own stack in init's memory.
extern "C" fn app_entry(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` points to init's `AppStart`, alive while init waits for this process to exec or exit.
    let start = unsafe { &mut *arg.cast::<AppStart<'_>>() };
    child::exec_app(start.plan, start.error, start.start)
}

/// Waits for signals until the app exits; returns its raw wait status.
/// `app_status` is set by whichever reap collects the app first.
fn supervise(
    app: libc::pid_t,
    pid_namespace: bool,
    set: &libc::sigset_t,
    app_status: &mut Option<libc::c_int>,
) -> libc::c_int {
    loop {
        if let Some(status) = *app_status {
            return status;
        }
        let Ok(signal) = sys::wait_signal(set) else {
            continue;
        };
        if signal == libc::SIGCHLD {
            reap_exited(app, app_status);
        } else if signal == tree_term_signal() {
            kill_tree(libc::SIGTERM, pid_namespace, app, app_status);
        } else if signal == tree_kill_signal() {
            kill_tree(libc::SIGKILL, pid_namespace, app, app_status);
        } else if FORWARDED.contains(&signal) {
            sys::kill(app, signal);
        }
    }
}

/// Reaps every exited child, keeping the app's status.
fn reap_exited(app: libc::pid_t, app_status: &mut Option<libc::c_int>) {
    while let Some((pid, status)) = sys::reap_any() {
        if pid == app {
            *app_status = Some(status);
        }
    }
}

fn reap_all() {
    loop {
        let mut status = 0;
        // SAFETY: the status pointer refers to a live local.
        let pid = unsafe { libc::waitpid(-1, &mut status, 0) };
        if pid == -1 && Errno::last() != Errno::EINTR {
            return;
        }
    }
}

/// Sends `signal` to every process of the run except init.
fn kill_tree(
    signal: libc::c_int,
    pid_namespace: bool,
    app: libc::pid_t,
    app_status: &mut Option<libc::c_int>,
) {
    if pid_namespace {
        // In its own PID namespace, kill(-1) from init reaches exactly the run's processes.
        sys::kill(-1, signal);
        return;
    }
    // Without a namespace: walk the descendants through /proc/PID/task/PID/children.
    // SIGKILL is repeated until no child is left, because children of a killed
    // process are re-parented to init (the subreaper) and appear as new children.
    let me = nix::unistd::getpid().as_raw();
    for _round in 0..64 {
        let mut stack = [0 as libc::pid_t; 1024];
        let mut found = read_children(me, &mut stack);
        if found == 0 {
            return;
        }
        let mut index = 0;
        while index < found {
            let pid = stack[index];
            sys::kill(pid, signal);
            found += read_children(pid, &mut stack[found..]);
            index += 1;
        }
        if signal != libc::SIGKILL {
            return;
        }
        reap_exited(app, app_status);
        // Give killed processes a moment to die and their orphans to move to init.
        let pause = libc::timespec {
            tv_sec: 0,
            tv_nsec: 2_000_000,
        };
        // SAFETY: nanosleep reads the live timespec and may be given a null remainder.
        unsafe { libc::nanosleep(&pause, std::ptr::null_mut()) };
    }
}

/// Reads the child pids of `pid` into `out`; returns how many were stored.
fn read_children(pid: libc::pid_t, out: &mut [libc::pid_t]) -> usize {
    let mut path = [0u8; 64];
    path[..6].copy_from_slice(b"/proc/");
    let mut len = 6;
    len += write_decimal(&mut path[len..], pid);
    path[len..len + 6].copy_from_slice(b"/task/");
    len += 6;
    len += write_decimal(&mut path[len..], pid);
    path[len..len + 9].copy_from_slice(b"/children");
    len += 9;
    path[len] = 0;

    // SAFETY: `path` is NUL-terminated within its buffer.
    let fd = unsafe { libc::open(path.as_ptr().cast(), libc::O_RDONLY | libc::O_CLOEXEC) };
    if fd == -1 {
        return 0;
    }
    let mut buf = [0u8; 4096];
    let read = sys::read_full(fd, &mut buf).unwrap_or(0);
    // SAFETY: closing the descriptor opened above.
    unsafe { libc::close(fd) };

    let mut count = 0;
    let mut value: libc::pid_t = 0;
    let mut in_number = false;
    for &byte in &buf[..read] {
        if byte.is_ascii_digit() {
            value = value
                .saturating_mul(10)
                .saturating_add(libc::pid_t::from(byte - b'0'));
            in_number = true;
        } else if in_number {
            if count < out.len() {
                out[count] = value;
                count += 1;
            }
            value = 0;
            in_number = false;
        }
    }
    if in_number && count < out.len() {
        out[count] = value;
        count += 1;
    }
    count
}

fn write_decimal(out: &mut [u8], value: libc::pid_t) -> usize {
    let mut digits = [0u8; 12];
    let mut n = value.unsigned_abs();
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for i in 0..len {
        out[i] = digits[len - 1 - i];
    }
    len
}
