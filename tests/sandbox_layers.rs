//! The seccomp filter and the Landlock ruleset, each applied on its own to a
//! child process that runs `safe-exec-probe`.
//!
//! The layers are built with the library and applied in `pre_exec` (between
//! fork and exec, as the supervisor does), never in the test runner. Each
//! test also runs the same probe without the layer where that shows the
//! operation would have worked, so a filter that denies nothing fails here.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test helper panics on any unexpected failure"
)]

use std::io::Read;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use safe_exec::policy::{
    Access, NetworkMode, NetworkPolicy, OnViolation, PathRule, Position, RuleTarget, SyscallPolicy,
    SyscallProfile,
};
use safe_exec::sandbox::landlock::{self, LandlockRequest, PreparedRuleset};
use safe_exec::sandbox::seccomp;
use seccompiler::BpfProgram;
use serde_json::Value;

const PROBE: &str = env!("CARGO_BIN_EXE_safe-exec-probe");
const EPERM: i64 = libc::EPERM as i64;
const EACCES: i64 = libc::EACCES as i64;
const SIGSYS: i64 = libc::SIGSYS as i64;

/// The layers to apply before exec.
#[derive(Default)]
struct Layers {
    landlock: Option<PreparedRuleset>,
    seccomp: Option<BpfProgram>,
}

/// Applies `layers` to a child and runs `program` with `args` in it.
fn command_under(layers: Layers, program: &str, args: &[&str]) -> Command {
    let mut command = Command::new(program);
    command
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let Layers {
        mut landlock,
        seccomp,
    } = layers;
    // SAFETY: the closure makes only async-signal-safe calls (prctl, the
    // Landlock and seccomp syscalls) and allocates nothing.
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if let Some(ruleset) = landlock.as_mut() {
                ruleset.restrict_self()?;
            }
            if let Some(filter) = &seccomp {
                seccomp::install(filter)?;
            }
            Ok(())
        });
    }
    command
}

fn parse_report(output: &std::process::Output) -> Value {
    assert!(
        output.status.success(),
        "probe failed: {:?}\nstdout: {}\nstderr: {}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).unwrap_or_else(|err| {
        panic!(
            "probe printed no JSON ({err}): {}",
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

fn probe(layers: Layers, ops: &[&str]) -> Value {
    let output = command_under(layers, PROBE, ops).output().unwrap();
    parse_report(&output)
}

/// Returns the outcome of `op` in a probe report.
fn outcome<'a>(report: &'a Value, op: &str) -> &'a Value {
    report["operations"]
        .as_array()
        .unwrap()
        .iter()
        .find(|entry| entry["op"] == op)
        .unwrap_or_else(|| panic!("no outcome for {op} in {report}"))
}

fn succeeded(report: &Value, op: &str) -> bool {
    outcome(report, op)["ok"] == true
}

fn errno(report: &Value, op: &str) -> Option<i64> {
    outcome(report, op)["errno"].as_i64()
}

fn killed_by(report: &Value, op: &str) -> Option<i64> {
    outcome(report, op)["signal"].as_i64()
}

fn syscalls(
    profile: SyscallProfile,
    deny: &[&str],
    allow: &[&str],
    on_violation: OnViolation,
) -> SyscallPolicy {
    SyscallPolicy {
        profile,
        deny: deny.iter().map(|name| name.to_string()).collect(),
        allow: allow.iter().map(|name| name.to_string()).collect(),
        on_violation,
    }
}

fn default_filter() -> BpfProgram {
    seccomp::build(
        &syscalls(SyscallProfile::Default, &[], &[], OnViolation::Errno),
        false,
    )
    .unwrap()
}

fn with_filter(filter: BpfProgram) -> Layers {
    Layers {
        landlock: None,
        seccomp: Some(filter),
    }
}

/// Returns true when the test may run a check that needs Landlock `abi`;
/// prints why not otherwise. CI declares that its kernel has ABI 6, so there
/// a missing feature fails the test instead.
fn landlock_abi_at_least(abi: i32) -> bool {
    let have = landlock::kernel_abi();
    if have >= abi {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI expects Landlock ABI >= {abi}, this kernel has {have}"
    );
    eprintln!("skipped: this kernel has Landlock ABI {have}, the check needs {abi}");
    false
}

#[test]
fn seccomp_denies_dangerous_calls() {
    let ops = [
        "ptrace",
        "process-vm-readv",
        "io_uring",
        "bpf",
        "perf_event_open",
        "userfaultfd",
        "keyctl",
        "add-key",
        "unshare-user",
        "unshare-net",
        "clone-newuser",
        "clone-newnet",
        "setns",
        "mount",
        "umount",
        "pivot-root",
        "kexec-load",
        "init-module",
        "delete-module",
        "reboot",
        "swapon",
    ];
    let report = probe(with_filter(default_filter()), &ops);
    for op in ops {
        assert_eq!(
            errno(&report, op),
            Some(EPERM),
            "{op}: {}",
            outcome(&report, op)
        );
    }
    assert_eq!(report["status"]["Seccomp"], "2");
}

#[test]
fn seccomp_control_run_succeeds() {
    // Without the filter these calls work for the test runner, so the denials
    // above come from the filter.
    let ops = [
        "ptrace",
        "process-vm-readv",
        "io_uring",
        "keyctl",
        "unshare-user",
        "clone-newuser",
        "clone3",
    ];
    let report = probe(Layers::default(), &[&ops[..], &["bpf"]].concat());
    for op in ops {
        assert!(succeeded(&report, op), "{op}: {}", outcome(&report, op));
    }
    assert_ne!(
        errno(&report, "bpf"),
        Some(EPERM),
        "bpf denied without a filter; the test runner lacks privileges"
    );
}

#[test]
fn seccomp_clone3_enosys_threads_work() {
    let report = probe(
        with_filter(default_filter()),
        &["clone3", "thread", "clone-newuser", "unshare-user"],
    );
    assert_eq!(errno(&report, "clone3"), Some(libc::ENOSYS as i64));
    assert!(
        succeeded(&report, "thread"),
        "{}",
        outcome(&report, "thread")
    );
    assert_eq!(errno(&report, "clone-newuser"), Some(EPERM));
    assert_eq!(errno(&report, "unshare-user"), Some(EPERM));
}

#[test]
fn seccomp_denies_x32_and_kills_i386() {
    if !cfg!(target_arch = "x86_64") {
        eprintln!("skipped: the x32 and i386 entry points exist on x86_64 only");
        return;
    }
    let report = probe(with_filter(default_filter()), &["x32", "i386"]);
    assert_eq!(
        errno(&report, "x32"),
        Some(EPERM),
        "{}",
        outcome(&report, "x32")
    );
    assert_eq!(
        killed_by(&report, "i386"),
        Some(SIGSYS),
        "{}",
        outcome(&report, "i386")
    );

    let control = probe(Layers::default(), &["i386"]);
    assert!(
        succeeded(&control, "i386"),
        "int 0x80 does not work here: {}",
        outcome(&control, "i386")
    );
}

#[test]
fn seccomp_terminal_injection_denied() {
    for (filtered, label) in [(true, "filtered"), (false, "control")] {
        let pty = nix::pty::openpty(None, None).unwrap();
        let stdin = std::fs::File::from(pty.slave.try_clone().unwrap());
        let layers = if filtered {
            with_filter(default_filter())
        } else {
            Layers::default()
        };
        let mut command = command_under(
            layers,
            PROBE,
            &["tiocsti", "tiocsti-high-bits", "tioclinux"],
        );
        let output = command.stdin(stdin).output().unwrap();
        let report = parse_report(&output);

        // Whatever the probe pushed waits in the terminal's input queue.
        nix::fcntl::fcntl(
            &pty.slave,
            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
        )
        .unwrap();
        let mut pushed = Vec::new();
        let _ = std::fs::File::from(pty.slave).read_to_end(&mut pushed);
        let pushed = String::from_utf8_lossy(&pushed);

        if filtered {
            for op in ["tiocsti", "tiocsti-high-bits", "tioclinux"] {
                assert_eq!(
                    errno(&report, op),
                    Some(EPERM),
                    "{op}: {}",
                    outcome(&report, op)
                );
            }
            assert!(
                !pushed.contains("INJECTED"),
                "{label}: input was injected: {pushed:?}"
            );
        } else {
            assert!(
                pushed.contains("echo INJECTED"),
                "{label}: TIOCSTI did not work here: {pushed:?}"
            );
        }
        drop(pty.master);
    }
}

#[test]
fn seccomp_kill_on_violation() {
    let filter = seccomp::build(
        &syscalls(SyscallProfile::Default, &[], &[], OnViolation::Kill),
        false,
    )
    .unwrap();
    let report = probe(with_filter(filter), &["ptrace", "clone3", "thread"]);
    assert_eq!(
        killed_by(&report, "ptrace"),
        Some(SIGSYS),
        "{}",
        outcome(&report, "ptrace")
    );
    assert_eq!(errno(&report, "clone3"), Some(libc::ENOSYS as i64));
    assert!(succeeded(&report, "thread"));
}

#[test]
fn seccomp_allow_lifts_default_denial() {
    let filter = seccomp::build(
        &syscalls(
            SyscallProfile::Default,
            &["socket"],
            &["ptrace"],
            OnViolation::Errno,
        ),
        false,
    )
    .unwrap();
    let report = probe(with_filter(filter), &["ptrace", "socket-unix", "io_uring"]);
    assert!(
        succeeded(&report, "ptrace"),
        "{}",
        outcome(&report, "ptrace")
    );
    assert_eq!(errno(&report, "socket-unix"), Some(EPERM));
    assert_eq!(errno(&report, "io_uring"), Some(EPERM));
}

#[test]
fn seccomp_strict_allows_common_calls() {
    let filter = seccomp::build(
        &syscalls(SyscallProfile::Strict, &[], &[], OnViolation::Errno),
        false,
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("f");
    let write = format!("write:{}", file.display());
    let read = format!("read:{}", file.display());
    let report = probe(
        with_filter(filter),
        &[
            &write,
            &read,
            "thread",
            "exec:/bin/true",
            "socket-unix",
            "chroot",
            "ptrace",
        ],
    );
    for op in [
        write.as_str(),
        read.as_str(),
        "thread",
        "exec:/bin/true",
        "socket-unix",
    ] {
        assert!(succeeded(&report, op), "{op}: {}", outcome(&report, op));
    }
    assert_eq!(
        errno(&report, "chroot"),
        Some(EPERM),
        "chroot is not on the strict list"
    );
    assert_eq!(errno(&report, "ptrace"), Some(EPERM));

    let control = probe(Layers::default(), &["chroot"]);
    assert_ne!(errno(&control, "chroot"), Some(EPERM));
}

#[test]
fn seccomp_deny_inet_keeps_unix() {
    let filter = seccomp::build(
        &syscalls(SyscallProfile::Default, &[], &[], OnViolation::Errno),
        true,
    )
    .unwrap();
    let report = probe(
        with_filter(filter),
        &[
            "socket-inet",
            "socket-inet6",
            "socket-netlink",
            "socket-unix",
        ],
    );
    for op in ["socket-inet", "socket-inet6", "socket-netlink"] {
        assert_eq!(
            errno(&report, op),
            Some(libc::EAFNOSUPPORT as i64),
            "{op}: {}",
            outcome(&report, op)
        );
    }
    assert!(succeeded(&report, "socket-unix"));
}

/// A directory tree for the Landlock checks, with one grant of each kind.
struct Tree {
    _dir: tempfile::TempDir,
    root: PathBuf,
}

impl Tree {
    fn new() -> Tree {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        for sub in ["ro", "rw", "rw/sub", "outside"] {
            std::fs::create_dir(root.join(sub)).unwrap();
        }
        std::fs::write(root.join("ro/file.txt"), "read-only data\n").unwrap();
        std::fs::write(root.join("rw/a"), "moved\n").unwrap();
        std::fs::write(root.join("outside/secret.txt"), "secret\n").unwrap();
        std::os::unix::fs::symlink(
            root.join("outside/secret.txt"),
            root.join("ro/link-to-secret"),
        )
        .unwrap();
        Tree { _dir: dir, root }
    }

    fn path(&self, name: &str) -> String {
        self.root.join(name).display().to_string()
    }
}

fn path_rule(path: &Path, access: Access) -> PathRule {
    PathRule {
        declared: path.display().to_string(),
        position: Position::default(),
        target: RuleTarget::Path {
            path: path.to_owned(),
            symlink_from: None,
            exists: true,
            is_dir: path.is_dir(),
        },
        access,
    }
}

const READ: Access = Access {
    read: true,
    write: false,
    exec: false,
};
const WRITE: Access = Access {
    read: true,
    write: true,
    exec: false,
};
const EXEC: Access = Access {
    read: true,
    write: false,
    exec: true,
};

fn network(mode: NetworkMode, ports: &[u16]) -> NetworkPolicy {
    NetworkPolicy {
        mode,
        allow: Vec::new(),
        tcp_connect: ports.to_vec(),
    }
}

/// Prepares a ruleset with the system preset, the tree's grants and exec on the probe.
fn tree_ruleset(tree: &Tree, network: &NetworkPolicy) -> PreparedRuleset {
    let rules = vec![
        path_rule(&tree.root.join("ro"), READ),
        path_rule(&tree.root.join("rw"), WRITE),
        path_rule(Path::new(PROBE), EXEC),
    ];
    let request = LandlockRequest {
        rules: &rules,
        system: true,
        run_tmp: &tree.root.join("rw"),
        network,
    };
    landlock::prepare(&request).unwrap()
}

fn with_ruleset(ruleset: PreparedRuleset) -> Layers {
    Layers {
        landlock: Some(ruleset),
        seccomp: None,
    }
}

#[test]
fn landlock_confines_filesystem() {
    if !landlock_abi_at_least(3) {
        return;
    }
    let tree = Tree::new();
    let ops = [
        format!("write:{}", tree.path("rw/new.txt")),
        format!("read:{}", tree.path("ro/file.txt")),
        format!("write:{}", tree.path("ro/new.txt")),
        format!("write:{}", tree.path("outside/new.txt")),
        format!("read:{}", tree.path("outside/secret.txt")),
        format!("read:{}", tree.path("ro/link-to-secret")),
        format!("truncate:{}", tree.path("ro/file.txt")),
        format!("write-exec:{}", tree.path("rw/script.sh")),
        "write:/etc/safe-exec-probe".to_string(),
        "read:/dev/zero".to_string(),
        "write:/dev/null".to_string(),
    ];
    let ops: Vec<&str> = ops.iter().map(String::as_str).collect();
    let report = probe(
        with_ruleset(tree_ruleset(&tree, &network(NetworkMode::Open, &[]))),
        &ops,
    );

    for op in [ops[0], ops[1], ops[9], ops[10]] {
        assert!(succeeded(&report, op), "{op}: {}", outcome(&report, op));
    }
    for op in [ops[2], ops[3], ops[4], ops[5], ops[6], ops[7], ops[8]] {
        assert_eq!(
            errno(&report, op),
            Some(EACCES),
            "{op}: {}",
            outcome(&report, op)
        );
    }
    assert!(
        tree.root.join("rw/script.sh").exists(),
        "the script was not written, so its exec was not tested"
    );
    assert_eq!(
        std::fs::read_to_string(tree.root.join("ro/file.txt")).unwrap(),
        "read-only data\n"
    );

    let control = probe(Layers::default(), &[ops[5], ops[7]]);
    assert!(succeeded(&control, ops[5]), "{}", outcome(&control, ops[5]));
    assert!(succeeded(&control, ops[7]), "{}", outcome(&control, ops[7]));
}

#[test]
fn landlock_rename_truncate_in_write_grant() {
    if !landlock_abi_at_least(3) {
        return;
    }
    let tree = Tree::new();
    let ruleset = tree_ruleset(&tree, &network(NetworkMode::Open, &[]));
    let moved = command_under(
        with_ruleset(ruleset),
        "/bin/mv",
        &[&tree.path("rw/a"), &tree.path("rw/sub/a")],
    )
    .output()
    .unwrap();
    assert!(
        moved.status.success(),
        "mv failed: {}",
        String::from_utf8_lossy(&moved.stderr)
    );
    assert!(tree.root.join("rw/sub/a").exists());

    let script = format!("open({:?}, 'w').write('replaced')", tree.path("rw/sub/a"));
    let ruleset = tree_ruleset(&tree, &network(NetworkMode::Open, &[]));
    let python = command_under(with_ruleset(ruleset), "/usr/bin/python3", &["-c", &script])
        .output()
        .unwrap();
    assert!(
        python.status.success(),
        "python3 write failed: {}",
        String::from_utf8_lossy(&python.stderr)
    );
    assert_eq!(
        std::fs::read_to_string(tree.root.join("rw/sub/a")).unwrap(),
        "replaced"
    );

    let ruleset = tree_ruleset(&tree, &network(NetworkMode::Open, &[]));
    let truncate = command_under(
        with_ruleset(ruleset),
        "/usr/bin/truncate",
        &["-s", "0", &tree.path("ro/file.txt")],
    )
    .output()
    .unwrap();
    assert!(
        !truncate.status.success(),
        "truncate of a read-only file succeeded"
    );
    assert_eq!(
        std::fs::read_to_string(tree.root.join("ro/file.txt")).unwrap(),
        "read-only data\n"
    );
}

#[test]
fn landlock_scopes_block_outside() {
    if !landlock_abi_at_least(6) {
        return;
    }
    let tree = Tree::new();
    let name = format!("safe-exec-test-{}", std::process::id());
    let address = {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap()
    };
    let _listener = std::os::unix::net::UnixListener::bind_addr(&address).unwrap();
    let connect = format!("abstract-connect:{name}");
    let signal = format!("signal:{}", std::process::id());

    let report = probe(
        with_ruleset(tree_ruleset(&tree, &network(NetworkMode::Open, &[]))),
        &[&connect, &signal],
    );
    assert_eq!(
        errno(&report, &connect),
        Some(EPERM),
        "{}",
        outcome(&report, &connect)
    );
    assert_eq!(
        errno(&report, &signal),
        Some(EPERM),
        "{}",
        outcome(&report, &signal)
    );

    let control = probe(Layers::default(), &[&connect, &signal]);
    assert!(
        succeeded(&control, &connect),
        "{}",
        outcome(&control, &connect)
    );
    assert!(
        succeeded(&control, &signal),
        "{}",
        outcome(&control, &signal)
    );
}

#[test]
fn landlock_tcp_ports() {
    if !landlock_abi_at_least(4) {
        return;
    }
    let tree = Tree::new();
    let allowed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let allowed_port = allowed.local_addr().unwrap().port();
    let other_port = other.local_addr().unwrap().port();
    let connect_allowed = format!("tcp-connect:{allowed_port}");
    let connect_other = format!("tcp-connect:{other_port}");
    let bind = "tcp-bind:0";

    let open = network(NetworkMode::Open, &[allowed_port]);
    let report = probe(
        with_ruleset(tree_ruleset(&tree, &open)),
        &[&connect_allowed, &connect_other, bind],
    );
    assert!(
        succeeded(&report, &connect_allowed),
        "{}",
        outcome(&report, &connect_allowed)
    );
    assert_eq!(
        errno(&report, &connect_other),
        Some(EACCES),
        "{}",
        outcome(&report, &connect_other)
    );
    assert_eq!(
        errno(&report, bind),
        Some(EACCES),
        "{}",
        outcome(&report, bind)
    );

    let none = network(NetworkMode::None, &[]);
    let report = probe(
        with_ruleset(tree_ruleset(&tree, &none)),
        &[&connect_allowed],
    );
    assert_eq!(
        errno(&report, &connect_allowed),
        Some(EACCES),
        "{}",
        outcome(&report, &connect_allowed)
    );
    drop((allowed, other));
}

#[test]
fn layers_together_report_status() {
    let tree = Tree::new();
    let ruleset = tree_ruleset(&tree, &network(NetworkMode::None, &[]));
    let ruleset_fd = ruleset.ruleset_fd().map(|fd| fd.as_raw_fd().to_string());
    let layers = Layers {
        landlock: Some(ruleset),
        seccomp: Some(default_filter()),
    };
    let report = probe(layers, &["thread"]);
    assert_eq!(report["status"]["NoNewPrivs"], "1");
    assert_eq!(report["status"]["Seccomp"], "2");
    assert!(succeeded(&report, "thread"));
    // The ruleset descriptor is close-on-exec, so it does not reach the app.
    if let Some(fd) = ruleset_fd {
        assert!(
            report["fds"].get(&fd).is_none(),
            "ruleset descriptor {fd} leaked: {}",
            report["fds"]
        );
    }
}
