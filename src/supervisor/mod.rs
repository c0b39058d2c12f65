//! The supervisor: prepares a run, starts the sandboxed child, serves it
//! until it exits, and tears everything down.
//!
//! Process layout of a run:
//!
//! ```text
//! safe-exec (supervisor, child subreaper)
//!   └─ init  (PID 1 of the run's PID namespace, or a subreaper without one)
//!        └─ app (set-up steps, then exec of the policy's command)
//! ```
//!
//! The supervisor talks to init with signals (forwarded ones, and two
//! real-time signals for "terminate the tree" and "kill the tree"), and init
//! reports the app's wait status through a pipe. Set-up failures in the app
//! come back through a close-on-exec error pipe naming the failed step.

pub mod init;
pub mod namespaces;
pub mod plan;
pub mod pty;
pub mod rundir;
mod wait;

use std::ffi::OsString;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use serde::Serialize;
use thiserror::Error;
use zeroize::Zeroizing;

use crate::exit::{self, Code, HasExitCode};
use crate::policy::{NetworkMode, PathRule, Policy};
use crate::sandbox::child::{ChildPlan, Step};
use crate::sandbox::landlock::{self, LandlockError, LandlockRequest};
use crate::sandbox::seccomp::{self, SeccompError};
use crate::sandbox::{Enforced, sys};

pub use namespaces::Namespaces;
pub use plan::CommandError;
pub use rundir::RunDir;

/// Time between SIGTERM and SIGKILL when a run is stopped.
pub const GRACE_PERIOD: Duration = Duration::from_secs(5);

/// Descriptors handed to the child start at this number, far above any
/// policy's credential descriptor (at most 255), so moving one cannot clobber another.
const HIGH_FD: RawFd = 512;

/// A failure of the supervisor or of one of the child's set-up steps.
#[derive(Debug, Error)]
pub enum SupervisorError {
    #[error(transparent)]
    Command(#[from] CommandError),
    #[error(transparent)]
    RunDir(#[from] rundir::RunDirError),
    #[error(transparent)]
    Landlock(#[from] LandlockError),
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    #[error("failed to {action}: {errno}")]
    Sys { action: &'static str, errno: Errno },
    #[error("failed to set up the user namespace: {0}")]
    IdMap(#[from] namespaces::MapError),
    #[error("sandbox set-up step \"{}\" failed: {errno}", step.name())]
    Step { step: Step, errno: Errno },
    #[error("failed to deliver credentials: {0}")]
    Credentials(String),
}

impl HasExitCode for SupervisorError {
    fn exit_code(&self) -> Code {
        match self {
            SupervisorError::Command(CommandError::NotFound { .. }) => Code::NotFound,
            SupervisorError::Command(CommandError::NotExecutable { .. }) => Code::NotExecutable,
            SupervisorError::Command(CommandError::Nul { .. }) => Code::DataErr,
            SupervisorError::Step {
                step: Step::Exec,
                errno: Errno::ENOENT | Errno::ENOTDIR,
            } => Code::NotFound,
            SupervisorError::Step {
                step: Step::Exec, ..
            } => Code::NotExecutable,
            _ => Code::Supervisor,
        }
    }
}

fn sys_err(action: &'static str) -> impl Fn(Errno) -> SupervisorError {
    move |errno| SupervisorError::Sys { action, errno }
}

/// A request to run one app.
pub struct RunRequest<'a> {
    pub policy: &'a Policy,
    /// The filesystem rules to enforce (missing paths already skipped or rejected).
    pub rules: Vec<PathRule>,
    pub extra_args: Vec<OsString>,
    pub run_id: String,
    /// Extra environment the supervisor sets (socket path and the like).
    pub extra_env: Vec<(&'static str, String)>,
}

/// One layer's enforcement, for the report and the audit record.
#[derive(Debug, Clone, Serialize)]
pub struct LayerReport {
    pub layer: &'static str,
    pub enforced: Enforced,
}

/// A run ready to start.
pub struct Prepared {
    plan: ChildPlan,
    namespaces: Namespaces,
    pub run_dir: RunDir,
    pub command: PathBuf,
    pub layers: Vec<LayerReport>,
    credentials: Option<(OwnedFd, OwnedFd)>,
    timeout: Option<Duration>,
}

impl Prepared {
    /// Returns every restriction the kernel cannot enforce, one line each.
    pub fn missing(&self) -> Vec<String> {
        self.layers
            .iter()
            .flat_map(|layer| {
                layer
                    .enforced
                    .missing()
                    .into_iter()
                    .map(move |m| format!("{}: {m}", layer.layer))
            })
            .collect()
    }

    /// Returns the names (never values) of the app's environment variables.
    pub fn env_names(&self) -> Vec<String> {
        self.plan.env_names()
    }

    /// Returns the namespaces the run will ask for.
    pub fn namespaces(&self) -> Namespaces {
        self.namespaces
    }
}

/// Prepares everything the child needs: run directory, program, environment,
/// limits, Landlock ruleset and seccomp filter.
pub fn prepare(request: RunRequest<'_>) -> Result<Prepared, SupervisorError> {
    let removed = rundir::remove_stale();
    if !removed.is_empty() {
        tracing::info!(
            count = removed.len(),
            "removed run directories left by killed supervisors"
        );
    }
    let run_dir = RunDir::create(&request.run_id)?;
    let result = prepare_in(&request, run_dir);
    if let Err(err) = &result {
        tracing::debug!(error = %err, "run preparation failed");
    }
    result
}

fn prepare_in(request: &RunRequest<'_>, run_dir: RunDir) -> Result<Prepared, SupervisorError> {
    let policy = request.policy;
    let guard = RemoveOnError(Some(run_dir));
    let run_dir_ref = guard.0.as_ref().ok_or(SupervisorError::Sys {
        action: "create the run directory",
        errno: Errno::EINVAL,
    })?;

    let mut extra_env: Vec<(&str, String)> = vec![
        ("SAFE_EXEC_APP", policy.app.clone()),
        ("SAFE_EXEC_RUN_ID", request.run_id.clone()),
    ];
    if request.rules.iter().any(|rule| rule.path().is_none()) {
        extra_env.push(("TMPDIR", run_dir_ref.tmp().display().to_string()));
    }
    // The request channel is served on this path once the run is prepared (see `channel::Server`).
    extra_env.push((
        "SAFE_EXEC_SOCKET",
        run_dir_ref.socket().display().to_string(),
    ));
    let credentials = match &policy.credentials {
        Some(creds) => {
            extra_env.push(("SAFE_EXEC_CREDENTIALS_FD", creds.fd.to_string()));
            Some(pipe_high()?)
        }
        None => None,
    };
    extra_env.extend(request.extra_env.iter().cloned());

    let env = plan::build_env(policy, &extra_env);
    let command = plan::resolve_command(policy, &env)?;
    let mut child_plan = ChildPlan::new(
        plan::path_cstring(&command, "command path")?,
        plan::argv(policy, &request.extra_args)?,
        plan::env_strings(&env)?,
        plan::path_cstring(&policy.workdir, "workdir")?,
    );
    child_plan.limits = plan::rlimits(&policy.limits);
    if let (Some(creds), Some((read, _))) = (&policy.credentials, &credentials) {
        child_plan.keep_fds.push((read.as_raw_fd(), creds.fd));
    }

    let namespaces = Namespaces::preferred(policy.network.mode == NetworkMode::None);
    let mut layers = Vec::new();

    let ruleset = landlock::prepare(&LandlockRequest {
        rules: &request.rules,
        system: policy.filesystem.system,
        run_tmp: &run_dir_ref.tmp(),
        network: &policy.network,
    })?;
    layers.push(LayerReport {
        layer: "landlock",
        enforced: ruleset.enforced.clone(),
    });
    let mut ruleset = ruleset;
    ruleset
        .raise_descriptor(HIGH_FD)
        .map_err(sys_err("move the Landlock ruleset descriptor"))?;
    child_plan.landlock = Some(ruleset);

    // The socket-family filter is built for the case without a network
    // namespace; `start` swaps in the plain filter when the namespace is created.
    let program = seccomp::build(&policy.syscalls, false)?;
    layers.push(LayerReport {
        layer: "seccomp",
        enforced: seccomp_available(),
    });
    child_plan.seccomp = Some(program);

    let run_dir = guard.disarm();
    Ok(Prepared {
        plan: child_plan,
        namespaces,
        run_dir,
        command,
        layers,
        credentials,
        timeout: policy.limits.timeout,
    })
}

/// Removes the run directory if preparation fails half-way.
struct RemoveOnError(Option<RunDir>);

impl RemoveOnError {
    fn disarm(mut self) -> RunDir {
        match self.0.take() {
            Some(dir) => dir,
            None => RunDir {
                path: PathBuf::new(),
            },
        }
    }
}

impl Drop for RemoveOnError {
    fn drop(&mut self) {
        if let Some(dir) = self.0.take() {
            let _ = dir.remove();
        }
    }
}

/// Reports whether this kernel has seccomp filters.
pub fn seccomp_available() -> Enforced {
    if crate::sandbox::kernel::seccomp_available() {
        Enforced::Full
    } else {
        Enforced::None(
            "seccomp filters are not available in this kernel (CONFIG_SECCOMP_FILTER)".to_owned(),
        )
    }
}

/// The end of the app: exit code, signal, or failed set-up step.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum AppStatus {
    Exited { code: i32 },
    Signaled { signal: i32, name: String },
    SetupFailed { step: String, error: String },
}

/// The result of a finished run.
#[derive(Debug, Clone, Serialize)]
pub struct RunOutcome {
    pub status: AppStatus,
    pub exit_code: i32,
    pub timed_out: bool,
    pub duration_ms: u64,
    pub peak_memory_kib: i64,
    pub user_cpu_ms: u64,
    pub system_cpu_ms: u64,
    pub namespaces: Namespaces,
    pub init_pid: i32,
}

/// Produces the credential bytes once the app has started, or an error message.
pub type CredentialSource<'a> = Box<dyn FnOnce() -> Result<Zeroizing<Vec<u8>>, String> + 'a>;

/// Runs the prepared child to completion.
///
/// Once the child may start its set-up, `before_exec` is called: the app is
/// executed only after it returns, but the set-up runs beside it.
/// `credentials` is called once the app has been executed, and its bytes go
/// into the credential pipe. `channel`, bound to the socket named in the
/// app's environment, starts serving when the app first connects.
pub fn execute(
    mut prepared: Prepared,
    policy: &Policy,
    before_exec: &mut dyn FnMut(),
    credentials: Option<CredentialSource<'_>>,
    channel: Option<&mut crate::channel::Server>,
) -> Result<RunOutcome, SupervisorError> {
    let started = Instant::now();

    // Signals for the event loop: blocked here (and so in every thread started
    // later and in the child), read through a signalfd.
    let mut handled = nix::sys::signal::SigSet::empty();
    for signal in init::FORWARDED.iter().chain(&[libc::SIGCHLD]) {
        if let Ok(signal) = nix::sys::signal::Signal::try_from(*signal) {
            handled.add(signal);
        }
    }
    handled.thread_block().map_err(sys_err("block signals"))?;
    let signal_fd = nix::sys::signalfd::SignalFd::with_flags(
        &handled,
        nix::sys::signalfd::SfdFlags::SFD_CLOEXEC | nix::sys::signalfd::SfdFlags::SFD_NONBLOCK,
    )
    .map_err(sys_err("create a signalfd"))?;

    // The supervisor is the subreaper of everything the run starts, so even
    // if init dies early nothing is re-parented outside this process.
    sys::prctl(libc::PR_SET_CHILD_SUBREAPER, 1).map_err(sys_err("become a child subreaper"))?;

    // A private pty when stdin is a terminal.
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let use_pty = pty::is_terminal(stdin.as_fd());
    let pty = if use_pty {
        Some(pty::open(stdin.as_fd()).map_err(sys_err("open a pseudo-terminal"))?)
    } else {
        None
    };
    let (pty_master, pty_slave) = match pty {
        Some(pty) => (Some(pty.master), Some(pty.slave)),
        None => (None, None),
    };
    if let Some(slave) = &pty_slave {
        prepared.plan.stdio.pty_slave = Some(slave.as_raw_fd());
        prepared.plan.stdio.slave_stdout = pty::is_terminal(stdout.as_fd());
        prepared.plan.stdio.slave_stderr = pty::is_terminal(std::io::stderr().as_fd());
    }

    let (start_read, start_write) = pipe_high()?;
    let (error_read, error_write) = pipe_high()?;
    let (status_read, status_write) = pipe_high()?;

    let fds = init::InitFds {
        start: start_read.as_raw_fd(),
        error: error_write.as_raw_fd(),
        status: status_write.as_raw_fd(),
        close: [
            start_write.as_raw_fd(),
            error_read.as_raw_fd(),
            status_read.as_raw_fd(),
            signal_fd.as_raw_fd(),
            prepared
                .credentials
                .as_ref()
                .map_or(-1, |(_, write_end)| write_end.as_raw_fd()),
        ],
    };

    let (init_pid, namespaces) = spawn_init(&mut prepared, policy, fds)?;
    drop(start_read);
    drop(error_write);
    drop(status_write);
    // The slave belongs to the app now. The master reads EIO only when every
    // slave is closed, so keeping this copy would hide the app's exit from the relay.
    drop(pty_slave);

    if namespaces.user
        && let Err(err) = namespaces::write_id_maps(init_pid)
    {
        sys::kill(init_pid, libc::SIGKILL);
        wait::reap(init_pid);
        return Err(err.into());
    }
    sys::write_all(start_write.as_raw_fd(), b"g").map_err(sys_err("start the child"))?;
    before_exec();
    // When the child failed before the app was started, nothing reads this
    // byte (EPIPE), and the error pipe names the failed step.
    let _ = sys::write_all(start_write.as_raw_fd(), b"x");
    drop(start_write);

    // The error pipe closes at exec (or carries the failed step).
    let mut record = [0u8; 8];
    let read = sys::read_full(error_read.as_raw_fd(), &mut record)
        .map_err(sys_err("read the child's set-up result"))?;
    drop(error_read);
    let setup_failure = (read == 8).then(|| {
        let step = u32::from_le_bytes([record[0], record[1], record[2], record[3]]);
        let errno = i32::from_le_bytes([record[4], record[5], record[6], record[7]]);
        (
            Step::from_u32(step).unwrap_or(Step::Exec),
            Errno::from_raw(errno),
        )
    });

    let mut credential_writer = None;
    if setup_failure.is_none()
        && let (Some((read_end, write_end)), Some(provide)) =
            (prepared.credentials.take(), credentials)
    {
        drop(read_end);
        // The supervisor has secrets in memory from here on, so it allows no core dumps and no ptrace.
        sys::prctl(libc::PR_SET_DUMPABLE, 0)
            .map_err(sys_err("make the supervisor non-dumpable"))?;
        match provide() {
            Ok(payload) => {
                credential_writer = Some(std::thread::spawn(move || {
                    write_payload(write_end, payload)
                }))
            }
            Err(message) => {
                sys::kill(init_pid, init::tree_kill_signal());
                wait::reap(init_pid);
                return Err(SupervisorError::Credentials(message));
            }
        }
    }
    prepared.credentials = None;

    let relay = wait::Relay::new(pty_master.as_ref().map(|master| master.as_fd()));
    let waited = wait::serve(
        init_pid,
        &signal_fd,
        relay,
        channel,
        prepared.timeout,
        GRACE_PERIOD,
    );

    if let Some(writer) = credential_writer {
        let _ = writer.join();
    }
    wait::kill_orphans();

    let mut status_bytes = [0u8; 4];
    let status_len = sys::read_full(status_read.as_raw_fd(), &mut status_bytes).unwrap_or(0);
    let raw_status = if status_len == 4 {
        i32::from_le_bytes(status_bytes)
    } else {
        waited.init_status
    };

    match setup_failure {
        Some((Step::Exec, errno @ (Errno::ENOENT | Errno::ENOTDIR))) => {
            return Err(SupervisorError::Command(CommandError::NotFound {
                name: prepared.command.display().to_string(),
                searched: format!("exec failed: {errno}"),
            }));
        }
        Some((Step::Exec, errno)) => {
            return Err(SupervisorError::Command(CommandError::NotExecutable {
                path: prepared.command.clone(),
                reason: format!(
                    "exec failed with {errno}; the file mode or the policy's exec grants (filesystem.exec, or the system preset) do not allow it"
                ),
            }));
        }
        Some((step, errno)) => return Err(SupervisorError::Step { step, errno }),
        None => {}
    }
    let status = status_from_wait(raw_status);
    let exit_code = match &status {
        AppStatus::Exited { code } => *code,
        AppStatus::Signaled { signal, .. } => exit::for_signal(*signal),
        AppStatus::SetupFailed { .. } => Code::Supervisor.as_i32(),
    };
    let usage = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_CHILDREN).ok();
    let millis =
        |tv: nix::sys::time::TimeVal| (tv.tv_sec() as u64) * 1000 + (tv.tv_usec() as u64) / 1000;

    Ok(RunOutcome {
        status,
        exit_code,
        timed_out: waited.timed_out,
        duration_ms: started.elapsed().as_millis() as u64,
        peak_memory_kib: usage.as_ref().map_or(0, |u| u.max_rss()),
        user_cpu_ms: usage.as_ref().map_or(0, |u| millis(u.user_time())),
        system_cpu_ms: usage.as_ref().map_or(0, |u| millis(u.system_time())),
        namespaces,
        init_pid,
    })
}

/// Clones init with the preferred namespaces, falling back when the kernel
/// refuses a user namespace; returns its pid and the namespaces it got.
fn spawn_init(
    prepared: &mut Prepared,
    policy: &Policy,
    fds: init::InitFds,
) -> Result<(libc::pid_t, Namespaces), SupervisorError> {
    let mut namespaces = prepared.namespaces;
    loop {
        // Without a network namespace, `mode: none` is enforced by denying every socket family but AF_UNIX.
        let deny_inet = policy.network.mode == NetworkMode::None && !namespaces.net;
        if deny_inet {
            prepared.plan.seccomp = Some(seccomp::build(&policy.syscalls, true)?);
        }
        match sys::clone_process(namespaces.clone_flags()) {
            Ok(0) => init::run(&mut prepared.plan, fds, namespaces.pid),
            Ok(pid) => return Ok((pid, namespaces)),
            Err(errno) if namespaces.user && namespaces::is_refusal(errno) => {
                tracing::warn!(%errno, "user namespaces are not available; running without them");
                namespaces = namespaces.without_user();
            }
            Err(errno) if namespaces.clone_flags() != 0 && namespaces::is_refusal(errno) => {
                tracing::warn!(%errno, "PID and network namespaces are not available; running without them");
                namespaces = Namespaces {
                    user: false,
                    pid: false,
                    net: false,
                };
            }
            Err(errno) => {
                return Err(SupervisorError::Sys {
                    action: "clone the run's init process",
                    errno,
                });
            }
        }
    }
}

fn write_payload(write_end: OwnedFd, payload: Zeroizing<Vec<u8>>) {
    if let Err(errno) = sys::write_all(write_end.as_raw_fd(), &payload) {
        tracing::warn!(%errno, "the app closed its credential descriptor before reading everything");
    }
    drop(payload);
    drop(write_end);
}

fn status_from_wait(status: i32) -> AppStatus {
    if libc::WIFEXITED(status) {
        AppStatus::Exited {
            code: libc::WEXITSTATUS(status),
        }
    } else if libc::WIFSIGNALED(status) {
        let signal = libc::WTERMSIG(status);
        let name = nix::sys::signal::Signal::try_from(signal)
            .map_or_else(|_| format!("signal {signal}"), |s| s.as_str().to_owned());
        AppStatus::Signaled { signal, name }
    } else {
        AppStatus::Exited {
            code: Code::Supervisor.as_i32(),
        }
    }
}

/// Grows this process's descriptor table to hold descriptor 512 and up,
/// where the run's own descriptors go. Call it while the process has one
/// thread: growing a table that several threads share waits for an RCU grace
/// period (`synchronize_rcu` in the kernel's `expand_files`), which takes
/// milliseconds.
pub fn reserve_descriptors() {
    let Ok(root) = std::fs::File::open("/") else {
        return;
    };
    // SAFETY: F_DUPFD_CLOEXEC on a descriptor this function owns returns a new descriptor or -1.
    let probe = unsafe { libc::fcntl(root.as_raw_fd(), libc::F_DUPFD_CLOEXEC, HIGH_FD) };
    if probe >= 0 {
        // SAFETY: `probe` is the descriptor just created here.
        unsafe { libc::close(probe) };
    }
}

/// Creates a close-on-exec pipe whose ends sit at descriptor 512 or above.
fn pipe_high() -> Result<(OwnedFd, OwnedFd), SupervisorError> {
    let (read, write) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC).map_err(sys_err("create a pipe"))?;
    Ok((raise(read)?, raise(write)?))
}

fn raise(fd: OwnedFd) -> Result<OwnedFd, SupervisorError> {
    // SAFETY: F_DUPFD_CLOEXEC returns a new descriptor that this function then owns.
    let raised = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, HIGH_FD) };
    let raised = Errno::result(raised).map_err(sys_err("move a descriptor"))?;
    // SAFETY: `raised` is a fresh descriptor that no other owner closes.
    Ok(unsafe { OwnedFd::from_raw_fd(raised) })
}
