//! Thin wrappers over the raw system calls that the child's set-up steps
//! need and that `nix` does not offer, or offers only with allocation.
//!
//! Every function here is async-signal-safe: it makes system calls and
//! touches no allocator, lock or logger, so it may run between fork and exec
//! of a multi-threaded supervisor.

use std::os::fd::RawFd;

use nix::errno::Errno;

fn check(result: libc::c_long) -> Result<libc::c_long, Errno> {
    if result == -1 {
        Err(Errno::last())
    } else {
        Ok(result)
    }
}

fn check_int(result: libc::c_int) -> Result<libc::c_int, Errno> {
    if result == -1 {
        Err(Errno::last())
    } else {
        Ok(result)
    }
}

/// Forks with extra `clone` flags (namespaces) and SIGCHLD as the exit signal.
///
/// Returns 0 in the child and the child's pid in the parent, like fork(2).
/// The child gets a copy of the calling thread only and must not allocate,
/// take locks or run atfork handlers: glibc's locks may be held by threads
/// that do not exist in the child.
pub fn clone_process(flags: libc::c_int) -> Result<libc::pid_t, Errno> {
    // SAFETY: clone with a null stack behaves as fork(2): the child continues on
    // a copy-on-write copy of this stack. The callers run only async-signal-safe
    // code in the child until exec or _exit.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            libc::c_long::from(flags | libc::SIGCHLD),
            0 as libc::c_long,
            0 as libc::c_long,
            0 as libc::c_long,
            0 as libc::c_long,
        )
    };
    check(pid).map(|pid| pid as libc::pid_t)
}

/// Size of the stack that `spawn_sharing_memory` gives the child.
const SHARED_CHILD_STACK: usize = 256 * 1024;

/// Starts `entry(arg)` in a new process that shares this one's memory until
/// it execs or exits, as `posix_spawn` does (`CLONE_VM | CLONE_VFORK`).
///
/// The caller is suspended until then, and no page tables are copied. The
/// child runs on a stack of its own, allocated here and unmapped once the
/// child has left this memory. Like the child of `clone_process`, it may only
/// make system calls, and the caller sees every write it makes to memory.
///
/// # Safety
///
/// `arg` must be valid for whatever `entry` does with it until the child
/// has exec'd or exited, which is when this function returns.
pub unsafe fn spawn_sharing_memory(
    entry: extern "C" fn(*mut libc::c_void) -> libc::c_int,
    arg: *mut libc::c_void,
) -> Result<libc::pid_t, Errno> {
    let page = 4096;
    // SAFETY: a fresh anonymous private mapping, used only as the child's stack.
    let stack = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            SHARED_CHILD_STACK,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
            -1,
            0,
        )
    };
    if stack == libc::MAP_FAILED {
        return Err(Errno::last());
    }

    // The lowest page is a guard: an overflow faults instead of writing below the stack.
    // SAFETY: the range is the first page of the mapping made above.
    unsafe { libc::mprotect(stack, page, libc::PROT_NONE) };

    // SAFETY: the stack grows down from the end of the mapping, which stays
    // mapped until the child has exec'd or exited (CLONE_VFORK waits for that).
    let pid = unsafe {
        libc::clone(
            entry,
            stack.cast::<u8>().add(SHARED_CHILD_STACK).cast(),
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            arg,
        )
    };
    let result = check_int(pid);
    // SAFETY: unmapping the mapping made above, which the child no longer uses.
    unsafe { libc::munmap(stack, SHARED_CHILD_STACK) };
    result
}

/// Marks every descriptor from `first` upward close-on-exec (close_range with CLOSE_RANGE_CLOEXEC, Linux 5.11).
pub fn cloexec_from(first: RawFd) -> Result<(), Errno> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range only changes descriptor flags; no memory is passed.
    let result = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    check(result).map(drop)
}

/// Clears or sets the close-on-exec flag of `fd`.
pub fn set_cloexec(fd: RawFd, on: bool) -> Result<(), Errno> {
    let flag = if on { libc::FD_CLOEXEC } else { 0 };
    // SAFETY: F_SETFD takes an integer argument and touches no memory.
    check_int(unsafe { libc::fcntl(fd, libc::F_SETFD, flag) }).map(drop)
}

/// Moves `fd` to descriptor `target` (inheritable across exec); returns `target`.
pub fn move_fd(fd: RawFd, target: RawFd) -> Result<RawFd, Errno> {
    if fd == target {
        set_cloexec(target, false)?;
        return Ok(target);
    }
    // SAFETY: dup2 only changes the descriptor table; the new descriptor has no close-on-exec flag.
    check_int(unsafe { libc::dup2(fd, target) })
}

/// prctl with integer arguments.
pub fn prctl(option: libc::c_int, arg2: libc::c_ulong) -> Result<libc::c_int, Errno> {
    // SAFETY: every option used in this crate takes integer arguments only.
    check_int(unsafe {
        libc::prctl(
            option,
            arg2,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
            0 as libc::c_ulong,
        )
    })
}

/// Sets the signal sent to this process when its parent thread dies.
pub fn set_parent_death_signal(signal: libc::c_int) -> Result<(), Errno> {
    prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong).map(drop)
}

/// Writes all of `bytes` to `fd`, retrying on EINTR and short writes.
pub fn write_all(fd: RawFd, mut bytes: &[u8]) -> Result<(), Errno> {
    while !bytes.is_empty() {
        // SAFETY: the pointer and length come from a live slice.
        let written = unsafe { libc::write(fd, bytes.as_ptr().cast(), bytes.len()) };
        if written == -1 {
            let errno = Errno::last();
            if errno == Errno::EINTR {
                continue;
            }
            return Err(errno);
        }
        bytes = &bytes[written as usize..];
    }
    Ok(())
}

/// Reads into `buf` until it is full or EOF; returns the bytes read.
pub fn read_full(fd: RawFd, buf: &mut [u8]) -> Result<usize, Errno> {
    let mut filled = 0;
    while filled < buf.len() {
        // SAFETY: the pointer and length describe the unfilled tail of a live buffer.
        let read = unsafe { libc::read(fd, buf[filled..].as_mut_ptr().cast(), buf.len() - filled) };
        match read {
            -1 if Errno::last() == Errno::EINTR => continue,
            -1 => return Err(Errno::last()),
            0 => break,
            n => filled += n as usize,
        }
    }
    Ok(filled)
}

/// Ends the calling process at once, without running exit handlers.
pub fn exit_now(code: libc::c_int) -> ! {
    // SAFETY: _exit never returns and is async-signal-safe.
    unsafe { libc::_exit(code) }
}

/// Sets the whole signal mask of the calling thread.
pub fn set_signal_mask(set: &libc::sigset_t) -> Result<(), Errno> {
    // SAFETY: `set` is a valid, initialised signal set; the old mask is not requested.
    let result = unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, set, std::ptr::null_mut()) };
    if result == 0 {
        Ok(())
    } else {
        Err(Errno::from_raw(result))
    }
}

/// Returns an empty signal set.
pub fn empty_sigset() -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the zeroed set it is given.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        set
    }
}

/// Returns a signal set holding every signal.
pub fn full_sigset() -> libc::sigset_t {
    // SAFETY: sigfillset initialises the zeroed set it is given.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        set
    }
}

/// Restores the default action of every catchable signal, since ignored
/// signals (the Rust runtime ignores SIGPIPE) stay ignored across exec.
pub fn reset_signal_dispositions() {
    for signal in 1..libc::SIGRTMAX() {
        if signal == libc::SIGKILL || signal == libc::SIGSTOP {
            continue;
        }
        // SAFETY: installing SIG_DFL passes no handler code; failures for
        // signals that cannot be changed are harmless and ignored.
        unsafe {
            libc::signal(signal, libc::SIG_DFL);
        }
    }
}

/// Waits for a signal in `set` (which must be blocked); returns its number.
pub fn wait_signal(set: &libc::sigset_t) -> Result<libc::c_int, Errno> {
    // SAFETY: `set` is initialised and the info pointer may be null.
    check_int(unsafe { libc::sigwaitinfo(set, std::ptr::null_mut()) })
}

/// Sends `signal` to process `pid` and ignores ESRCH.
pub fn kill(pid: libc::pid_t, signal: libc::c_int) {
    // SAFETY: kill takes plain integers.
    unsafe {
        libc::kill(pid, signal);
    }
}

/// Reaps one exited child without blocking; returns (pid, raw wait status), or None.
pub fn reap_any() -> Option<(libc::pid_t, libc::c_int)> {
    let mut status = 0;
    // SAFETY: the status pointer refers to a live local.
    let pid = unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) };
    if pid > 0 { Some((pid, status)) } else { None }
}

/// Drops every capability: bounding set (where permitted), ambient, and the
/// effective, permitted and inheritable sets.
pub fn drop_all_capabilities() -> Result<(), Errno> {
    let last_cap = last_capability();
    for cap in 0..=last_cap {
        match prctl(libc::PR_CAPBSET_DROP, cap) {
            Ok(_) => {}
            // Without CAP_SETPCAP the bounding set cannot shrink; the process
            // then has no capabilities to lose and no_new_privs stops it gaining any.
            Err(Errno::EPERM) => {}
            Err(Errno::EINVAL) => break,
            Err(errno) => return Err(errno),
        }
    }
    // SAFETY: PR_CAP_AMBIENT_CLEAR_ALL takes integer arguments only.
    let cleared = unsafe {
        libc::prctl(
            libc::PR_CAP_AMBIENT,
            libc::PR_CAP_AMBIENT_CLEAR_ALL,
            0,
            0,
            0,
        )
    };
    if cleared == -1 && Errno::last() != Errno::EINVAL {
        return Err(Errno::last());
    }

    #[repr(C)]
    struct Header {
        version: u32,
        pid: libc::c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const LINUX_CAPABILITY_VERSION_3: u32 = 0x2008_0522;
    let mut header = Header {
        version: LINUX_CAPABILITY_VERSION_3,
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capset reads a version-3 header and two data structs, which is
    // exactly what is passed; both live until the call returns.
    let result =
        unsafe { libc::syscall(libc::SYS_capset, &mut header as *mut Header, data.as_ptr()) };
    check(result).map(drop)
}

/// Returns the highest capability number of this kernel, probing the bounding set.
fn last_capability() -> libc::c_ulong {
    // CAP_CHECKPOINT_RESTORE (40) is the highest in Linux 6.x; probe upward in case of newer ones.
    let mut cap: libc::c_ulong = 40;
    while cap < 63 && prctl(libc::PR_CAPBSET_READ, cap + 1).is_ok() {
        cap += 1;
    }
    cap
}
