//! The app's set-up steps between fork and exec, in their fixed order.
//!
//! Everything the steps need is prepared by the supervisor in a `ChildPlan`
//! before the fork, so the child only makes system calls: no allocation, no
//! logging, no locks. A failing step writes its `Step` and errno to the error
//! pipe and exits; the supervisor reads them and names the step.

use std::ffi::CString;
use std::os::fd::RawFd;

use nix::errno::Errno;
use seccompiler::BpfProgram;

use super::landlock::PreparedRuleset;
use super::{seccomp, sys};

/// A set-up step of the child, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u32)]
pub enum Step {
    ParentDeathSignal = 1,
    Session = 2,
    Terminal = 3,
    Limits = 4,
    Descriptors = 5,
    Workdir = 6,
    Signals = 7,
    Capabilities = 8,
    NoNewPrivs = 9,
    Landlock = 10,
    Seccomp = 11,
    Exec = 12,
    Fork = 13,
    Namespaces = 14,
}

impl Step {
    /// Returns the step for a number read from the error pipe.
    pub fn from_u32(value: u32) -> Option<Step> {
        use Step::*;
        [
            ParentDeathSignal,
            Session,
            Terminal,
            Limits,
            Descriptors,
            Workdir,
            Signals,
            Capabilities,
            NoNewPrivs,
            Landlock,
            Seccomp,
            Exec,
            Fork,
            Namespaces,
        ]
        .into_iter()
        .find(|step| *step as u32 == value)
    }

    /// Returns the step's name as printed in errors and audit records.
    pub fn name(self) -> &'static str {
        match self {
            Step::ParentDeathSignal => "parent-death signal",
            Step::Session => "new session",
            Step::Terminal => "controlling terminal",
            Step::Limits => "resource limits",
            Step::Descriptors => "file descriptors",
            Step::Workdir => "working directory",
            Step::Signals => "signal mask and dispositions",
            Step::Capabilities => "drop capabilities",
            Step::NoNewPrivs => "no_new_privs",
            Step::Landlock => "Landlock",
            Step::Seccomp => "seccomp",
            Step::Exec => "exec",
            Step::Fork => "fork of the app",
            Step::Namespaces => "namespace set-up",
        }
    }
}

/// Sources of the app's standard streams.
#[derive(Debug, Default)]
pub struct Stdio {
    /// Slave side of the run's pseudo-terminal, when the caller's stdin is a terminal.
    pub pty_slave: Option<RawFd>,
    /// Put the slave on stdout too (the caller's stdout is the same terminal).
    pub slave_stdout: bool,
    /// Put the slave on stderr too.
    pub slave_stderr: bool,
}

/// Everything the child needs, prepared by the supervisor before the fork.
pub struct ChildPlan {
    pub program: CString,
    argv: Vec<CString>,
    argv_ptrs: Vec<*const libc::c_char>,
    envp: Vec<CString>,
    envp_ptrs: Vec<*const libc::c_char>,
    pub workdir: CString,
    pub stdio: Stdio,
    /// (resource, soft = hard limit) pairs.
    pub limits: Vec<(libc::__rlimit_resource_t, libc::rlim_t)>,
    /// Descriptors to keep, as (descriptor in the supervisor, number in the app).
    pub keep_fds: Vec<(RawFd, RawFd)>,
    pub landlock: Option<PreparedRuleset>,
    pub seccomp: Option<BpfProgram>,
}

impl ChildPlan {
    /// Builds a plan; `argv[0]` is passed as given and `program` is the path executed.
    pub fn new(program: CString, argv: Vec<CString>, envp: Vec<CString>, workdir: CString) -> Self {
        let argv_ptrs = null_terminated(&argv);
        let envp_ptrs = null_terminated(&envp);
        Self {
            program,
            argv,
            argv_ptrs,
            envp,
            envp_ptrs,
            workdir,
            stdio: Stdio::default(),
            limits: Vec::new(),
            keep_fds: Vec::new(),
            landlock: None,
            seccomp: None,
        }
    }

    /// Returns the arguments, for logs and audit records.
    pub fn argv(&self) -> &[CString] {
        &self.argv
    }

    /// Returns the environment variable names (never values), for audit records.
    pub fn env_names(&self) -> Vec<String> {
        self.envp
            .iter()
            .filter_map(|entry| {
                entry
                    .to_str()
                    .ok()
                    .and_then(|text| text.split_once('='))
                    .map(|(name, _)| name.to_owned())
            })
            .collect()
    }
}

fn null_terminated(strings: &[CString]) -> Vec<*const libc::c_char> {
    strings
        .iter()
        .map(|s| s.as_ptr())
        .chain(std::iter::once(std::ptr::null()))
        .collect()
}

/// Writes the failed step and errno to `error_fd` and exits with `code`.
pub fn fail(error_fd: RawFd, step: Step, errno: Errno, code: libc::c_int) -> ! {
    let mut record = [0u8; 8];
    record[..4].copy_from_slice(&(step as u32).to_le_bytes());
    record[4..].copy_from_slice(&(errno as i32).to_le_bytes());
    let _ = sys::write_all(error_fd, &record);
    sys::exit_now(code)
}

/// Runs the set-up steps and executes the app. Never returns.
///
/// Runs in the app's new process, whose parent is the run's init and which
/// shares init's memory until it execs (see `sys::spawn_sharing_memory`).
/// Before installing seccomp it waits for one byte on `start_fd`, which the
/// supervisor writes once the run's first audit records are on disk. EOF
/// there means the supervisor died, and the app never starts.
pub fn exec_app(plan: &mut ChildPlan, error_fd: RawFd, start_fd: RawFd) -> ! {
    let step = |step: Step, result: Result<(), Errno>| {
        if let Err(errno) = result {
            fail(error_fd, step, errno, 125);
        }
    };

    // Die with the run's init, so nothing outlives the run.
    step(
        Step::ParentDeathSignal,
        sys::set_parent_death_signal(libc::SIGKILL),
    );

    // A session of its own: no access to the caller's terminal, and the
    // caller's job-control signals do not reach the app directly.
    step(Step::Session, nix::unistd::setsid().map(drop));

    // The relayed pseudo-terminal becomes the controlling terminal and the
    // standard streams, so /dev/tty and raw mode work without the caller's terminal.
    step(Step::Terminal, attach_terminal(&plan.stdio));

    // Limits before anything else can allocate or open files on the app's behalf.
    step(Step::Limits, apply_limits(&plan.limits));

    // Only 0, 1, 2 and the listed descriptors survive exec.
    step(
        Step::Descriptors,
        arrange_descriptors(&plan.keep_fds, error_fd),
    );

    // chdir before Landlock: the workdir is then reached even if only its contents are granted.
    // SAFETY: the path is a NUL-terminated string owned by the plan.
    step(
        Step::Workdir,
        Errno::result(unsafe { libc::chdir(plan.workdir.as_ptr()) }).map(drop),
    );

    // The supervisor blocks signals and the Rust runtime ignores SIGPIPE; both
    // would be inherited by the app.
    sys::reset_signal_dispositions();
    step(Step::Signals, sys::set_signal_mask(&sys::empty_sigset()));

    step(Step::Capabilities, sys::drop_all_capabilities());

    // Required for unprivileged Landlock and seccomp, and stops setuid binaries from gaining anything.
    step(
        Step::NoNewPrivs,
        sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1).map(drop),
    );

    if let Some(ruleset) = plan.landlock.as_mut() {
        step(Step::Landlock, ruleset.restrict_self());
    }

    let mut start = [0u8; 1];
    if sys::read_full(start_fd, &mut start) != Ok(1) {
        sys::exit_now(125);
    }

    // Seccomp last, so the steps above may use the calls it denies.
    if let Some(program) = &plan.seccomp {
        step(Step::Seccomp, seccomp::install(program));
    }

    // SAFETY: program, argv and envp are NUL-terminated strings and null-terminated
    // pointer arrays owned by the plan, alive until exec replaces the process.
    unsafe {
        libc::execve(
            plan.program.as_ptr(),
            plan.argv_ptrs.as_ptr(),
            plan.envp_ptrs.as_ptr(),
        );
    }
    let errno = Errno::last();
    let code = match errno {
        Errno::ENOENT | Errno::ENOTDIR => 127,
        _ => 126,
    };
    fail(error_fd, Step::Exec, errno, code)
}

fn attach_terminal(stdio: &Stdio) -> Result<(), Errno> {
    let Some(slave) = stdio.pty_slave else {
        return Ok(());
    };
    // SAFETY: TIOCSCTTY takes an integer argument; the process is a session leader without a terminal.
    Errno::result(unsafe { libc::ioctl(slave, libc::TIOCSCTTY, 0) })?;
    sys::move_fd(slave, 0)?;
    if stdio.slave_stdout {
        sys::move_fd(slave, 1)?;
    }
    if stdio.slave_stderr {
        sys::move_fd(slave, 2)?;
    }
    Ok(())
}

fn apply_limits(limits: &[(libc::__rlimit_resource_t, libc::rlim_t)]) -> Result<(), Errno> {
    for &(resource, value) in limits {
        let limit = libc::rlimit {
            rlim_cur: value,
            rlim_max: value,
        };
        // SAFETY: the pointer refers to a live, initialised rlimit.
        Errno::result(unsafe { libc::setrlimit(resource, &limit) })?;
    }
    Ok(())
}

fn arrange_descriptors(keep: &[(RawFd, RawFd)], error_fd: RawFd) -> Result<(), Errno> {
    // Move kept descriptors out of the way first, so that one's target cannot
    // overwrite another's source. The copies go just above the highest target
    // rather than to a fixed high number, because RLIMIT_NOFILE is already set
    // (open_files may be as low as a few hundred) and F_DUPFD fails with
    // EINVAL at or above it.
    let above_targets = keep
        .iter()
        .map(|&(_, target)| target + 1)
        .max()
        .unwrap_or(3);
    let mut staged = [(-1, -1); 8];
    for (index, &(source, target)) in keep.iter().take(staged.len()).enumerate() {
        // SAFETY: F_DUPFD_CLOEXEC takes an integer argument.
        let moved =
            Errno::result(unsafe { libc::fcntl(source, libc::F_DUPFD_CLOEXEC, above_targets) })?;
        staged[index] = (moved, target);
    }
    // Every descriptor above 2 closes at exec, including the error pipe
    // (which must stay open until then) and the Landlock ruleset.
    sys::cloexec_from(3)?;
    for &(moved, target) in staged.iter().take(keep.len().min(8)) {
        if target == error_fd {
            return Err(Errno::EBADF);
        }
        sys::move_fd(moved, target)?;
    }
    Ok(())
}
