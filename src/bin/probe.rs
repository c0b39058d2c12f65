//! `safe-exec-probe`: run inside the sandbox, it reports what the process
//! can and cannot do as one JSON object on stdout.
//!
//! The report contains the process's credentials, its `/proc/self/status`
//! security fields (NoNewPrivs, Seccomp, capability sets), its core-dump
//! limit and open descriptors, and the result of each operation named on the
//! command line, such as `write:/etc/x`, `ptrace` or `clone3`
//! (`safe-exec-probe --help` lists them). Each operation runs in a forked
//! child, so one that changes the process (a new namespace) or kills it (a
//! seccomp kill) does not affect the others. A child killed by a signal is
//! reported with that signal.
//!
//! This is a test tool: it calls libc directly so that each probe is exactly
//! the syscall under test.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::ExitCode;

use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

const USAGE: &str = "\
usage: safe-exec-probe [OPERATION...]

Prints one JSON object: uid/gid, /proc/self/status security fields, RLIMIT_CORE,
open descriptors, and for each OPERATION whether it succeeded and its errno.

Operations:
  write:PATH read:PATH exec:PATH truncate:PATH mkdir:PATH   filesystem
  write-exec:PATH                 write a shell script to PATH, then run it
  ptrace process-vm-readv io_uring bpf perf_event_open userfaultfd
  keyctl add-key unshare-user unshare-net clone-newuser clone-newnet clone3
  setns chroot mount umount pivot-root kexec-load init-module delete-module reboot swapon
  tiocsti tiocsti-high-bits tioclinux                      ioctl on stdin
  socket-inet socket-inet6 socket-packet socket-netlink socket-unix
  tcp-connect:PORT tcp-bind:PORT                           on 127.0.0.1
  thread signal:PID abstract-connect:NAME abstract-listen:NAME setuid-root
  i386 x32                                                 other syscall entry points
";

/// The outcome of one operation.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Outcome {
    op: String,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    errno: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    errno_name: Option<String>,
    /// The signal that killed the child running the operation.
    #[serde(skip_serializing_if = "Option::is_none")]
    signal: Option<i32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

impl Outcome {
    fn success(detail: Option<String>) -> Self {
        Outcome {
            ok: true,
            detail,
            ..Outcome::default()
        }
    }

    fn failure(errno: i32) -> Self {
        Outcome {
            ok: false,
            errno: Some(errno),
            errno_name: Some(format!("{:?}", nix::errno::Errno::from_raw(errno))),
            ..Outcome::default()
        }
    }

    fn from_io(err: &std::io::Error) -> Self {
        match err.raw_os_error() {
            Some(errno) => Outcome::failure(errno),
            None => Outcome {
                ok: false,
                detail: Some(err.to_string()),
                ..Outcome::default()
            },
        }
    }

    fn invalid(message: String) -> Self {
        Outcome {
            ok: false,
            detail: Some(message),
            ..Outcome::default()
        }
    }
}

fn last_errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// Turns the return value of a libc call into an outcome.
fn from_return(result: i64) -> Outcome {
    if result < 0 {
        Outcome::failure(last_errno())
    } else {
        Outcome::success(None)
    }
}

fn cstring(text: &str) -> Result<CString, Outcome> {
    CString::new(text).map_err(|_| Outcome::invalid(format!("{text:?} contains a NUL byte")))
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|arg| arg == "--help" || arg == "-h") {
        print!("{USAGE}");
        return ExitCode::SUCCESS;
    }

    // Listed first, before the probe opens anything of its own.
    let fds = open_descriptors();

    let mut report = serde_json::Map::new();
    report.insert("pid".into(), json!(std::process::id()));
    report.insert("credentials".into(), credentials());
    report.insert("status".into(), status_fields());
    report.insert("rlimit_core".into(), core_limit());
    report.insert("fds".into(), fds);
    report.insert(
        "cwd".into(),
        json!(
            std::env::current_dir()
                .map(|d| d.display().to_string())
                .unwrap_or_default()
        ),
    );
    let mut env_names: Vec<String> = std::env::vars_os()
        .map(|(name, _)| name.to_string_lossy().into_owned())
        .collect();
    env_names.sort();
    report.insert("env_names".into(), json!(env_names));

    let outcomes: Vec<Outcome> = args.iter().map(|op| run_isolated(op)).collect();
    report.insert("operations".into(), json!(outcomes));

    println!("{}", Value::Object(report));
    ExitCode::SUCCESS
}

fn credentials() -> Value {
    let (mut ruid, mut euid, mut suid) = (0, 0, 0);
    let (mut rgid, mut egid, mut sgid) = (0, 0, 0);
    // SAFETY: the pointers are to local integers that outlive the calls.
    unsafe {
        libc::getresuid(&mut ruid, &mut euid, &mut suid);
        libc::getresgid(&mut rgid, &mut egid, &mut sgid);
    }
    json!({ "uid": ruid, "euid": euid, "suid": suid, "gid": rgid, "egid": egid, "sgid": sgid })
}

fn status_fields() -> Value {
    const FIELDS: &[&str] = &[
        "NoNewPrivs",
        "Seccomp",
        "Seccomp_filters",
        "CapInh",
        "CapPrm",
        "CapEff",
        "CapBnd",
        "CapAmb",
    ];
    let text = match std::fs::read_to_string("/proc/self/status") {
        Ok(text) => text,
        Err(err) => return json!({ "error": err.to_string() }),
    };
    let mut fields = BTreeMap::new();
    for line in text.lines() {
        if let Some((name, value)) = line.split_once(':')
            && FIELDS.contains(&name)
        {
            fields.insert(name.to_owned(), value.trim().to_owned());
        }
    }
    json!(fields)
}

fn core_limit() -> Value {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `limit` is a valid rlimit the kernel writes into.
    if unsafe { libc::getrlimit(libc::RLIMIT_CORE, &mut limit) } != 0 {
        return json!({ "error": std::io::Error::last_os_error().to_string() });
    }
    json!({ "soft": limit.rlim_cur, "hard": limit.rlim_max })
}

/// Maps each open descriptor to its target, leaving out the directory handle
/// used for the listing itself.
fn open_descriptors() -> Value {
    let path = c"/proc/self/fd";
    // SAFETY: `path` is NUL-terminated; the handle is closed below.
    let dir = unsafe { libc::opendir(path.as_ptr()) };
    if dir.is_null() {
        return json!({ "error": std::io::Error::last_os_error().to_string() });
    }
    // SAFETY: `dir` is an open directory stream.
    let own_fd = unsafe { libc::dirfd(dir) };
    let mut numbers = Vec::new();
    loop {
        // SAFETY: `dir` is open; the entry stays valid until the next readdir.
        let entry = unsafe { libc::readdir(dir) };
        if entry.is_null() {
            break;
        }
        // SAFETY: d_name is a NUL-terminated name inside the entry.
        let name = unsafe { std::ffi::CStr::from_ptr((*entry).d_name.as_ptr()) };
        if let Some(fd) = name.to_str().ok().and_then(|name| name.parse::<i32>().ok())
            && fd != own_fd
        {
            numbers.push(fd);
        }
    }
    // SAFETY: `dir` is open and not used after this.
    unsafe { libc::closedir(dir) };

    let mut fds = BTreeMap::new();
    for fd in numbers {
        let target = std::fs::read_link(format!("/proc/self/fd/{fd}"))
            .map(|t| t.display().to_string())
            .unwrap_or_default();
        fds.insert(fd, target);
    }
    json!(fds)
}

/// Runs `op` in a forked child and collects its outcome through a pipe.
fn run_isolated(op: &str) -> Outcome {
    let mut ends = [0; 2];
    // SAFETY: `ends` has room for the two descriptors pipe2 returns.
    if unsafe { libc::pipe2(ends.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return Outcome {
            op: op.to_owned(),
            ..Outcome::from_io(&std::io::Error::last_os_error())
        };
    }
    // SAFETY: pipe2 returned two new descriptors that nothing else owns.
    let (read_end, write_end) =
        unsafe { (OwnedFd::from_raw_fd(ends[0]), OwnedFd::from_raw_fd(ends[1])) };
    let _ = std::io::stdout().flush();

    // SAFETY: the probe is single-threaded, so the child may allocate freely.
    let pid = unsafe { libc::fork() };
    if pid < 0 {
        return Outcome {
            op: op.to_owned(),
            ..Outcome::from_io(&std::io::Error::last_os_error())
        };
    }
    if pid == 0 {
        drop(read_end);
        let mut outcome = run(op);
        outcome.op = op.to_owned();
        let text = serde_json::to_vec(&outcome).unwrap_or_default();
        let mut pipe = std::fs::File::from(write_end);
        let _ = pipe.write_all(&text);
        drop(pipe);
        // SAFETY: _exit ends the child without running the parent's atexit handlers.
        unsafe { libc::_exit(0) };
    }
    drop(write_end);

    let mut text = Vec::new();
    let _ = std::fs::File::from(read_end).read_to_end(&mut text);
    let mut status = 0;
    // SAFETY: `pid` is our child and `status` a valid output location.
    unsafe { libc::waitpid(pid, &mut status, 0) };

    let mut outcome = serde_json::from_slice::<Outcome>(&text).unwrap_or_else(|_| Outcome {
        ok: false,
        detail: Some("the child reported nothing".into()),
        ..Outcome::default()
    });
    outcome.op = op.to_owned();
    if libc::WIFSIGNALED(status) {
        outcome.ok = false;
        outcome.signal = Some(libc::WTERMSIG(status));
    }
    outcome
}

fn run(op: &str) -> Outcome {
    let (name, argument) = op.split_once(':').unwrap_or((op, ""));
    let result = match name {
        "write" => Ok(write_file(argument)),
        "read" => Ok(read_file(argument)),
        "exec" => Ok(exec_file(argument)),
        "write-exec" => Ok(write_and_exec(argument)),
        "truncate" => truncate_file(argument),
        "mkdir" => Ok(std::fs::create_dir(argument)
            .map_or_else(|e| Outcome::from_io(&e), |()| Outcome::success(None))),
        "ptrace" => Ok(ptrace_child()),
        "process-vm-readv" => Ok(process_vm_readv_self()),
        "io_uring" => Ok(io_uring_setup()),
        "bpf" => Ok(bpf_map_create()),
        "perf_event_open" => Ok(perf_event_open()),
        "userfaultfd" => Ok(userfaultfd()),
        "keyctl" => Ok(keyctl()),
        "add-key" => add_key(),
        "unshare-user" => Ok(unshare(libc::CLONE_NEWUSER)),
        "unshare-net" => Ok(unshare(libc::CLONE_NEWNET)),
        "clone-newuser" => Ok(clone_with(libc::CLONE_NEWUSER)),
        "clone-newnet" => Ok(clone_with(libc::CLONE_NEWNET)),
        "clone3" => Ok(clone3()),
        "setns" => Ok(setns_own()),
        "chroot" => chroot(),
        "mount" => mount_tmpfs(),
        "umount" => umount(),
        "pivot-root" => pivot_root(),
        "kexec-load" => Ok(kexec_load()),
        "init-module" => init_module(),
        "delete-module" => delete_module(),
        "reboot" => Ok(reboot_bad_magic()),
        "swapon" => swapon(),
        "tiocsti" => Ok(tiocsti(TIOCSTI)),
        "tiocsti-high-bits" => Ok(tiocsti(TIOCSTI | 1 << 32)),
        "tioclinux" => Ok(tioclinux()),
        "socket-inet" => Ok(socket(libc::AF_INET, libc::SOCK_STREAM)),
        "socket-inet6" => Ok(socket(libc::AF_INET6, libc::SOCK_STREAM)),
        "socket-packet" => Ok(socket(libc::AF_PACKET, libc::SOCK_RAW)),
        "socket-netlink" => Ok(socket(libc::AF_NETLINK, libc::SOCK_RAW)),
        "socket-unix" => Ok(socket(libc::AF_UNIX, libc::SOCK_STREAM)),
        "tcp-connect" => Ok(tcp(argument, true)),
        "tcp-bind" => Ok(tcp(argument, false)),
        "thread" => Ok(thread()),
        "signal" => Ok(signal(argument)),
        "abstract-connect" => Ok(abstract_socket(argument, true)),
        "abstract-listen" => Ok(abstract_socket(argument, false)),
        "setuid-root" => Ok(setuid_root()),
        "i386" => Ok(i386_getpid()),
        "x32" => Ok(x32_getpid()),
        _ => Ok(Outcome::invalid(format!(
            "unknown operation {op:?}; run safe-exec-probe --help"
        ))),
    };
    result.unwrap_or_else(|outcome| outcome)
}

fn write_file(path: &str) -> Outcome {
    match std::fs::write(path, b"written by safe-exec-probe\n") {
        Ok(()) => Outcome::success(None),
        Err(err) => Outcome::from_io(&err),
    }
}

/// Reads at most 64 KiB of `path`, so devices such as /dev/zero end too.
fn read_file(path: &str) -> Outcome {
    let mut bytes = Vec::new();
    match std::fs::File::open(path).and_then(|file| file.take(64 * 1024).read_to_end(&mut bytes)) {
        Ok(count) => Outcome::success(Some(format!("{count} bytes"))),
        Err(err) => Outcome::from_io(&err),
    }
}

fn exec_file(path: &str) -> Outcome {
    match std::process::Command::new(path).status() {
        Ok(status) => Outcome::success(Some(status.to_string())),
        Err(err) => Outcome::from_io(&err),
    }
}

/// Writes a shell script to `path`, makes it executable and runs it.
fn write_and_exec(path: &str) -> Outcome {
    use std::os::unix::fs::OpenOptionsExt;
    let written = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o755)
        .open(path)
        .and_then(|mut file| file.write_all(b"#!/bin/sh\nexit 0\n"));
    if let Err(err) = written {
        let mut outcome = Outcome::from_io(&err);
        outcome.detail = Some("failed to write the script".into());
        return outcome;
    }
    exec_file(path)
}

fn truncate_file(path: &str) -> Result<Outcome, Outcome> {
    let path = cstring(path)?;
    // SAFETY: `path` is NUL-terminated.
    Ok(from_return(i64::from(unsafe {
        libc::truncate(path.as_ptr(), 0)
    })))
}

fn ptrace_child() -> Outcome {
    let parent = std::process::id() as libc::pid_t;
    // SAFETY: the child only pauses until it is killed.
    let child = unsafe { libc::fork() };
    if child == 0 {
        // The child must not outlive a parent killed by seccomp, nor hold its
        // stdout open. The getppid check covers a parent that died before prctl.
        // SAFETY: prctl, getppid, close and _exit take integers only.
        unsafe {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            if libc::getppid() != parent {
                libc::_exit(0);
            }
            libc::close(1);
            libc::close(2);
        }
        loop {
            // SAFETY: pause has no preconditions.
            unsafe { libc::pause() };
        }
    }
    if child < 0 {
        return Outcome::failure(last_errno());
    }
    // SAFETY: PTRACE_ATTACH takes no pointers.
    let attached = unsafe { libc::ptrace(libc::PTRACE_ATTACH, child, 0, 0) };
    let outcome = from_return(attached);
    // SAFETY: `child` is our own child; killing and reaping it ends the probe's use of it.
    unsafe {
        libc::kill(child, libc::SIGKILL);
        libc::waitpid(child, std::ptr::null_mut(), 0);
    }
    outcome
}

fn process_vm_readv_self() -> Outcome {
    let source = [7u8; 16];
    let mut target = [0u8; 16];
    let local = libc::iovec {
        iov_base: target.as_mut_ptr().cast(),
        iov_len: target.len(),
    };
    let remote = libc::iovec {
        iov_base: source.as_ptr().cast_mut().cast(),
        iov_len: source.len(),
    };
    // SAFETY: both iovecs describe live buffers of the stated length in this process.
    let result = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    from_return(result as i64)
}

fn io_uring_setup() -> Outcome {
    // struct io_uring_params is 120 bytes, and all zeroes selects the defaults.
    let mut params = [0u8; 120];
    // SAFETY: `params` is a writable buffer of the size the kernel expects.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
    close_if_open(fd);
    from_return(fd)
}

fn bpf_map_create() -> Outcome {
    // BPF_MAP_CREATE with an all-zero attribute: the kernel rejects it as
    // invalid (EINVAL) when the call is allowed at all.
    let mut attr = [0u8; 128];
    // SAFETY: `attr` is a buffer of the size passed.
    let fd = unsafe { libc::syscall(libc::SYS_bpf, 0, attr.as_mut_ptr(), attr.len() as u32) };
    close_if_open(fd);
    from_return(fd)
}

fn perf_event_open() -> Outcome {
    // A software task-clock counter on this process, user space only.
    let mut attr = [0u8; 128];
    attr[0..4].copy_from_slice(&1u32.to_ne_bytes()); // type: PERF_TYPE_SOFTWARE
    attr[4..8].copy_from_slice(&128u32.to_ne_bytes()); // size
    attr[8..16].copy_from_slice(&1u64.to_ne_bytes()); // config: PERF_COUNT_SW_TASK_CLOCK
    attr[40..48].copy_from_slice(&(1u64 << 5 | 1 << 6).to_ne_bytes()); // exclude_kernel, exclude_hv
    // SAFETY: `attr` is a perf_event_attr of the size it declares.
    let fd = unsafe { libc::syscall(libc::SYS_perf_event_open, attr.as_ptr(), 0, -1, -1, 0) };
    close_if_open(fd);
    from_return(fd)
}

fn userfaultfd() -> Outcome {
    const UFFD_USER_MODE_ONLY: libc::c_int = 1;
    // SAFETY: userfaultfd takes only flags.
    let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | UFFD_USER_MODE_ONLY) };
    close_if_open(fd);
    from_return(fd)
}

fn keyctl() -> Outcome {
    const KEYCTL_GET_KEYRING_ID: libc::c_int = 0;
    const KEY_SPEC_PROCESS_KEYRING: libc::c_int = -2;
    // SAFETY: KEYCTL_GET_KEYRING_ID takes integers only.
    let result = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_GET_KEYRING_ID,
            KEY_SPEC_PROCESS_KEYRING,
            1,
        )
    };
    from_return(result)
}

fn add_key() -> Result<Outcome, Outcome> {
    const KEY_SPEC_PROCESS_KEYRING: libc::c_int = -2;
    let kind = cstring("user")?;
    let description = cstring("safe-exec-probe")?;
    let payload = b"x";
    // SAFETY: the strings are NUL-terminated and the payload length matches.
    let result = unsafe {
        libc::syscall(
            libc::SYS_add_key,
            kind.as_ptr(),
            description.as_ptr(),
            payload.as_ptr(),
            payload.len(),
            KEY_SPEC_PROCESS_KEYRING,
        )
    };
    Ok(from_return(result))
}

fn unshare(flags: libc::c_int) -> Outcome {
    // SAFETY: unshare takes only flags; it changes this forked child only.
    from_return(i64::from(unsafe { libc::unshare(flags) }))
}

/// Calls the raw `clone` syscall with `flags` and no new stack, like fork.
fn clone_with(flags: libc::c_int) -> Outcome {
    // SAFETY: a null stack makes the child continue on a copy of this stack,
    // as with fork; the child exits at once.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (flags | libc::SIGCHLD) as libc::c_ulong,
            0,
            0,
            0,
            0,
        )
    };
    reap_clone(pid)
}

fn clone3() -> Outcome {
    // struct clone_args (version 0, 64 bytes): flags, pidfd, child_tid,
    // parent_tid, exit_signal, stack, stack_size, tls.
    let mut args = [0u64; 8];
    args[4] = libc::SIGCHLD as u64;
    // SAFETY: `args` is a valid clone_args of the size passed; with no stack
    // the child continues like a fork child and exits at once.
    let pid = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            args.as_mut_ptr(),
            std::mem::size_of_val(&args),
        )
    };
    reap_clone(pid)
}

fn reap_clone(pid: i64) -> Outcome {
    if pid == 0 {
        // SAFETY: the new child leaves at once.
        unsafe { libc::_exit(0) };
    }
    if pid > 0 {
        // SAFETY: `pid` is our child.
        unsafe { libc::waitpid(pid as libc::pid_t, std::ptr::null_mut(), 0) };
    }
    from_return(pid)
}

fn setns_own() -> Outcome {
    let namespace = match std::fs::File::open("/proc/self/ns/net") {
        Ok(file) => file,
        Err(err) => return Outcome::invalid(format!("failed to open /proc/self/ns/net: {err}")),
    };
    // SAFETY: the descriptor is open for the duration of the call.
    from_return(i64::from(unsafe {
        libc::setns(namespace.as_raw_fd(), libc::CLONE_NEWNET)
    }))
}

/// A target that does not exist, so an allowed mount-related call fails harmlessly.
const NOWHERE: &str = "/nonexistent/safe-exec-probe";

fn chroot() -> Result<Outcome, Outcome> {
    let path = cstring(NOWHERE)?;
    // SAFETY: `path` is NUL-terminated.
    Ok(from_return(i64::from(unsafe {
        libc::chroot(path.as_ptr())
    })))
}

fn mount_tmpfs() -> Result<Outcome, Outcome> {
    let source = cstring("none")?;
    let target = cstring(NOWHERE)?;
    let kind = cstring("tmpfs")?;
    // SAFETY: the strings are NUL-terminated; data may be null.
    let result = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            kind.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    Ok(from_return(i64::from(result)))
}

fn umount() -> Result<Outcome, Outcome> {
    let target = cstring(NOWHERE)?;
    // SAFETY: `target` is NUL-terminated.
    Ok(from_return(i64::from(unsafe {
        libc::umount2(target.as_ptr(), 0)
    })))
}

fn pivot_root() -> Result<Outcome, Outcome> {
    let new_root = cstring(NOWHERE)?;
    // SAFETY: both paths are NUL-terminated.
    Ok(from_return(unsafe {
        libc::syscall(libc::SYS_pivot_root, new_root.as_ptr(), new_root.as_ptr())
    }))
}

fn kexec_load() -> Outcome {
    // Flag 0x80 is unknown to the kernel, so an allowed call fails with EINVAL.
    // SAFETY: no segments are passed, so the kernel reads no memory.
    from_return(unsafe { libc::syscall(libc::SYS_kexec_load, 0, 0, std::ptr::null::<u8>(), 0x80) })
}

fn init_module() -> Result<Outcome, Outcome> {
    let options = cstring("")?;
    // SAFETY: an empty image: an allowed call fails with ENOEXEC before reading it.
    Ok(from_return(unsafe {
        libc::syscall(
            libc::SYS_init_module,
            std::ptr::null::<u8>(),
            0,
            options.as_ptr(),
        )
    }))
}

fn delete_module() -> Result<Outcome, Outcome> {
    let name = cstring("safe_exec_probe_no_such_module")?;
    // SAFETY: `name` is NUL-terminated.
    Ok(from_return(unsafe {
        libc::syscall(libc::SYS_delete_module, name.as_ptr(), libc::O_NONBLOCK)
    }))
}

fn reboot_bad_magic() -> Outcome {
    // Wrong magic numbers: an allowed call fails with EINVAL and reboots nothing.
    // SAFETY: reboot reads no memory for these arguments.
    from_return(unsafe { libc::syscall(libc::SYS_reboot, 0, 0, 0, 0) })
}

fn swapon() -> Result<Outcome, Outcome> {
    let path = cstring(NOWHERE)?;
    // SAFETY: `path` is NUL-terminated.
    Ok(from_return(unsafe {
        libc::syscall(libc::SYS_swapon, path.as_ptr(), 0)
    }))
}

/// TIOCSTI and TIOCLINUX, the same numbers on x86_64 and aarch64.
const TIOCSTI: u64 = 0x5412;
const TIOCLINUX: u64 = 0x541C;

/// Pushes `echo INJECTED` and a newline into the input queue of the terminal
/// on stdin, one byte per ioctl, with `request` as the request number.
fn tiocsti(request: u64) -> Outcome {
    let mut pushed = 0;
    for byte in b"echo INJECTED\n" {
        // SAFETY: the third argument points to one readable byte.
        let result = unsafe { libc::syscall(libc::SYS_ioctl, 0, request, byte as *const u8) };
        if result < 0 {
            let mut outcome = Outcome::failure(last_errno());
            outcome.detail = Some(format!("{pushed} bytes pushed"));
            return outcome;
        }
        pushed += 1;
    }
    Outcome::success(Some(format!("{pushed} bytes pushed")))
}

fn tioclinux() -> Outcome {
    // Subcode 3 is TIOCL_PASTESEL: paste the console selection as input.
    let subcode = [3u8; 1];
    // SAFETY: the third argument points to one readable byte.
    from_return(unsafe { libc::syscall(libc::SYS_ioctl, 0, TIOCLINUX, subcode.as_ptr()) })
}

fn socket(family: libc::c_int, kind: libc::c_int) -> Outcome {
    // SAFETY: socket takes integers only.
    let fd = unsafe { libc::socket(family, kind | libc::SOCK_CLOEXEC, 0) };
    close_if_open(i64::from(fd));
    from_return(i64::from(fd))
}

fn tcp(port: &str, connect: bool) -> Outcome {
    let Ok(port) = port.parse::<u16>() else {
        return Outcome::invalid(format!("invalid port {port:?}"));
    };
    let address = std::net::SocketAddr::from(([127, 0, 0, 1], port));
    let result = if connect {
        std::net::TcpStream::connect(address).map(drop)
    } else {
        std::net::TcpListener::bind(address).map(drop)
    };
    result.map_or_else(|err| Outcome::from_io(&err), |()| Outcome::success(None))
}

fn thread() -> Outcome {
    match std::thread::Builder::new()
        .spawn(|| 42)
        .map(std::thread::JoinHandle::join)
    {
        Ok(Ok(42)) => Outcome::success(None),
        Ok(_) => Outcome::invalid("the thread did not return its value".into()),
        Err(err) => Outcome::from_io(&err),
    }
}

fn signal(pid: &str) -> Outcome {
    let Ok(pid) = pid.parse::<libc::pid_t>() else {
        return Outcome::invalid(format!("invalid pid {pid:?}"));
    };
    // SAFETY: signal 0 checks permission only and delivers nothing.
    from_return(i64::from(unsafe { libc::kill(pid, 0) }))
}

fn abstract_socket(name: &str, connect: bool) -> Outcome {
    use std::os::linux::net::SocketAddrExt;
    let address = match std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()) {
        Ok(address) => address,
        Err(err) => return Outcome::from_io(&err),
    };
    let result = if connect {
        std::os::unix::net::UnixStream::connect_addr(&address).map(drop)
    } else {
        std::os::unix::net::UnixListener::bind_addr(&address).map(drop)
    };
    result.map_or_else(|err| Outcome::from_io(&err), |()| Outcome::success(None))
}

fn setuid_root() -> Outcome {
    // SAFETY: setuid takes an integer only and changes this forked child only.
    from_return(i64::from(unsafe { libc::setuid(0) }))
}

/// Calls getpid through the i386 entry point (`int 0x80`, number 20).
#[cfg(target_arch = "x86_64")]
fn i386_getpid() -> Outcome {
    let mut result: i64 = 20;
    // SAFETY: i386 getpid takes no arguments and touches no memory; int 0x80
    // clobbers only eax and, on 64-bit kernels, r8 to r11.
    unsafe {
        std::arch::asm!(
            "int 0x80",
            inout("rax") result,
            out("r8") _, out("r9") _, out("r10") _, out("r11") _,
        );
    }
    if result < 0 {
        Outcome::failure((-result) as i32)
    } else {
        Outcome::success(Some(format!("pid {result}")))
    }
}

#[cfg(not(target_arch = "x86_64"))]
fn i386_getpid() -> Outcome {
    Outcome::invalid("the i386 entry point exists on x86_64 only".into())
}

/// Calls getpid through the x32 ABI (number 39 with bit 30 set).
fn x32_getpid() -> Outcome {
    if !cfg!(target_arch = "x86_64") {
        return Outcome::invalid("the x32 ABI exists on x86_64 only".into());
    }
    const X32_SYSCALL_BIT: libc::c_long = 0x4000_0000;
    // SAFETY: getpid takes no arguments.
    from_return(unsafe { libc::syscall(X32_SYSCALL_BIT | 39) })
}

fn close_if_open(fd: i64) {
    if fd >= 0 {
        // SAFETY: `fd` was just returned to this process and nothing else owns it.
        unsafe { libc::close(fd as libc::c_int) };
    }
}
