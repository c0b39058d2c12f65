//! The sandbox's promises, checked against the real `safe-exec` binary.
//!
//! Each test writes a policy into a temporary policy directory and runs
//! `safe-exec run` on it with a temporary vault. Most tests then read what the
//! app could do from `safe-exec-probe`, which prints its credentials,
//! security status, descriptors and the result of each operation it is asked
//! to try. Tests that need a kernel feature check `safe-exec doctor --json`
//! and skip with a printed reason, except in CI (`CI=true`), which declares
//! the features it has and fails instead.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a test helper panics on any unexpected failure"
)]

mod common;

use std::io::Read;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{TestEnv, code, stderr, stdout};
use serde_json::Value;

const PROBE: &str = env!("CARGO_BIN_EXE_safe-exec-probe");
const EPERM: i64 = libc::EPERM as i64;
const EACCES: i64 = libc::EACCES as i64;

/// How long a test waits for something that should happen at once before it
/// reports a hang. This guards against a stuck test; it is not a speed check.
const HANG_GUARD: Duration = Duration::from_secs(60);

fn in_ci() -> bool {
    std::env::var("CI").as_deref() == Ok("true")
}

/// Returns true when `available`; otherwise prints why the test is skipped,
/// or fails in CI, which declares that it has every feature these tests need.
fn require(feature: &str, available: bool) -> bool {
    if available {
        return true;
    }
    assert!(!in_ci(), "CI expects {feature}, which this host lacks");
    eprintln!("skipped: this host lacks {feature}");
    false
}

/// Returns `safe-exec doctor --json` parsed.
fn doctor(env: &TestEnv) -> Value {
    let output = env.run(&["doctor", "--json"]);
    assert_eq!(code(&output), 0, "doctor failed: {}", stderr(&output));
    serde_json::from_slice(&output.stdout).unwrap()
}

fn landlock_abi(env: &TestEnv) -> i64 {
    doctor(env)["landlock_abi"].as_i64().unwrap_or(0)
}

/// Directories around the app: `out` is granted write, `outside` nothing.
struct Dirs {
    out: PathBuf,
    outside: PathBuf,
}

fn make_dirs(env: &TestEnv) -> Dirs {
    let out = env.root().join("out");
    let outside = env.root().join("outside");
    std::fs::create_dir_all(&out).unwrap();
    std::fs::create_dir_all(&outside).unwrap();
    std::fs::write(outside.join("secret.txt"), "secret\n").unwrap();
    std::fs::write(env.app.join("data.txt"), "app data\n").unwrap();
    let link = env.app.join("link-to-secret");
    if !link.exists() {
        std::os::unix::fs::symlink(outside.join("secret.txt"), link).unwrap();
    }
    Dirs { out, outside }
}

fn quoted(path: &Path) -> String {
    format!("{:?}", path.display().to_string())
}

/// Writes a policy that runs the probe with read on the app dir, write on
/// `out` and `{tmp}`, and `extra` appended (more YAML keys).
fn probe_policy(env: &TestEnv, app: &str, probe: &str, dirs: &Dirs, extra: &str) {
    let yaml = format!(
        "version: 1\ncommand: [{probe:?}]\nworkdir: {app_dir}\nfilesystem:\n  read: [{app_dir}]\n  write: [{out}, \"{{tmp}}\"]\n  exec: [{probe:?}]\n{extra}",
        app_dir = quoted(&env.app),
        out = quoted(&dirs.out),
    );
    env.policy(app, &yaml);
}

fn parse_report(output: &Output) -> Value {
    let text = stdout(output);
    let line = text
        .lines()
        .find(|line| line.starts_with('{'))
        .unwrap_or_else(|| {
            panic!(
                "no probe report (exit {:?})\nstdout: {text}\nstderr: {}",
                output.status,
                stderr(output)
            )
        });
    serde_json::from_str(line).unwrap()
}

fn run_probe(env: &TestEnv, app: &str, ops: &[&str]) -> Value {
    let mut args = vec!["run", app, "--"];
    args.extend_from_slice(ops);
    let output = env.run(&args);
    assert_eq!(
        code(&output),
        0,
        "safe-exec run failed\nstdout: {}\nstderr: {}",
        stdout(&output),
        stderr(&output)
    );
    parse_report(&output)
}

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

/// Operations that must fail inside the sandbox, for root and unprivileged users alike.
fn denied_operations(dirs: &Dirs, app: &Path) -> Vec<String> {
    vec![
        format!("write:{}", dirs.outside.join("new.txt").display()),
        format!("write:{}", app.join("new.txt").display()),
        format!("read:{}", dirs.outside.join("secret.txt").display()),
        format!("read:{}", app.join("link-to-secret").display()),
        format!("write-exec:{}", dirs.out.join("script.sh").display()),
        "ptrace".into(),
        "process-vm-readv".into(),
        "io_uring".into(),
        "unshare-user".into(),
        "unshare-net".into(),
        "clone-newuser".into(),
        "bpf".into(),
        "perf_event_open".into(),
        "userfaultfd".into(),
        "keyctl".into(),
        "mount".into(),
        "setuid-root".into(),
    ]
}

/// Checks the status fields and denied operations of a probe report.
fn assert_confined(report: &Value, ops: &[String], runner: &str) {
    let status = &report["status"];
    assert_eq!(status["NoNewPrivs"], "1", "{runner}: {status}");
    assert_eq!(status["Seccomp"], "2", "{runner}: {status}");
    for set in ["CapEff", "CapPrm", "CapInh", "CapAmb"] {
        assert_eq!(
            status[set], "0000000000000000",
            "{runner}: {set} is not empty: {status}"
        );
    }
    assert_eq!(
        report["rlimit_core"]["soft"], 0,
        "{runner}: {}",
        report["rlimit_core"]
    );
    assert_eq!(
        report["rlimit_core"]["hard"], 0,
        "{runner}: {}",
        report["rlimit_core"]
    );
    assert_ne!(
        report["credentials"]["euid"], 0,
        "{runner}: the app runs with euid 0 in its namespace"
    );

    let fds: Vec<&String> = report["fds"].as_object().unwrap().keys().collect();
    assert_eq!(
        fds,
        ["0", "1", "2"],
        "{runner}: unexpected descriptors {}",
        report["fds"]
    );

    for op in ops {
        assert!(
            !succeeded(report, op),
            "{runner}: {op} succeeded in the sandbox: {}",
            outcome(report, op)
        );
    }
}

#[test]
fn probe_confined_as_root() {
    let env = TestEnv::new();
    let dirs = make_dirs(&env);
    probe_policy(&env, "probe", PROBE, &dirs, "");
    let denied = denied_operations(&dirs, &env.app);
    let mut ops: Vec<&str> = denied.iter().map(String::as_str).collect();
    let allowed_write = format!("write:{}", dirs.out.join("ok.txt").display());
    let allowed_read = format!("read:{}", env.app.join("data.txt").display());
    ops.extend([
        allowed_write.as_str(),
        allowed_read.as_str(),
        "clone3",
        "thread",
    ]);

    let report = run_probe(&env, "probe", &ops);
    assert_confined(&report, &denied, "root");
    assert!(
        succeeded(&report, &allowed_write),
        "{}",
        outcome(&report, &allowed_write)
    );
    assert!(
        succeeded(&report, &allowed_read),
        "{}",
        outcome(&report, &allowed_read)
    );
    assert_eq!(
        errno(&report, &denied[0]),
        Some(EACCES),
        "write outside the grants"
    );
    assert_eq!(
        errno(&report, &denied[3]),
        Some(EACCES),
        "read through a symlink"
    );
    assert_eq!(
        errno(&report, &denied[4]),
        Some(EACCES),
        "exec of a file written into a write grant"
    );
    assert!(
        dirs.out.join("script.sh").exists(),
        "the script was not written, so its exec was not tested"
    );
    assert_eq!(errno(&report, "ptrace"), Some(EPERM));
    assert_eq!(errno(&report, "io_uring"), Some(EPERM));
    assert!(!dirs.outside.join("new.txt").exists());
}

/// Returns the uid and gid of the unprivileged test user, or `None` with the
/// reason printed (a failure in CI).
fn test_user() -> Option<(u32, u32, String)> {
    let reason = if !nix::unistd::geteuid().is_root() {
        "the tests do not run as root, so they cannot switch to another user".to_string()
    } else {
        // CI creates `safeexec-test`; SAFE_EXEC_TEST_USER names another user.
        let name = std::env::var("SAFE_EXEC_TEST_USER").unwrap_or_else(|_| "safeexec-test".into());
        match nix::unistd::User::from_name(&name) {
            Ok(Some(user)) => return Some((user.uid.as_raw(), user.gid.as_raw(), name)),
            _ => format!(
                "user {name:?} does not exist; create it or name another in SAFE_EXEC_TEST_USER"
            ),
        }
    };
    assert!(
        !in_ci(),
        "CI must run the sandbox as an unprivileged user: {reason}"
    );
    eprintln!("skipped: {reason}");
    None
}

#[test]
fn probe_confined_as_unprivileged_user() {
    let Some((uid, gid, name)) = test_user() else {
        return;
    };

    // The binaries are copied where the user can execute them: the build
    // directory may sit under a home directory the user cannot enter.
    let bin = tempfile::Builder::new()
        .prefix("safe-exec-bin-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(bin.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let safe_exec = bin.path().join("safe-exec");
    let probe = bin.path().join("safe-exec-probe");
    std::fs::copy(common::binary(), &safe_exec).unwrap();
    std::fs::copy(PROBE, &probe).unwrap();

    // The user's own tree: home, vault, policies, app and output directories.
    let home = tempfile::Builder::new()
        .prefix("safe-exec-user-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(home.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let root = home.path().join("home");
    let policies = root.join("policies");
    let app = root.join("app");
    let out = root.join("out");
    let outside = root.join("outside");
    for dir in [&root, &policies, &app, &out, &outside] {
        std::fs::create_dir_all(dir).unwrap();
    }
    std::fs::write(outside.join("secret.txt"), "secret\n").unwrap();
    std::fs::write(app.join("data.txt"), "app data\n").unwrap();
    std::os::unix::fs::symlink(outside.join("secret.txt"), app.join("link-to-secret")).unwrap();
    let dirs = Dirs {
        out: out.clone(),
        outside: outside.clone(),
    };
    let probe_path = probe.display().to_string();
    let yaml = format!(
        "version: 1\ncommand: [{probe_path:?}]\nworkdir: {app_dir}\nfilesystem:\n  read: [{app_dir}]\n  write: [{out_dir}, \"{{tmp}}\"]\n  exec: [{probe_path:?}]\n",
        app_dir = quoted(&app),
        out_dir = quoted(&out),
    );
    std::fs::write(policies.join("probe.yaml"), yaml).unwrap();
    std::fs::set_permissions(&policies, std::fs::Permissions::from_mode(0o700)).unwrap();
    let status = Command::new("chown")
        .arg("-R")
        .arg(format!("{uid}:{gid}"))
        .arg(&root)
        .status()
        .unwrap();
    assert!(status.success(), "chown of the user's test tree failed");

    let as_user = |args: &[&str]| -> Output {
        Command::new("setpriv")
            .arg(format!("--reuid={uid}"))
            .arg(format!("--regid={gid}"))
            .arg("--init-groups")
            .arg("--")
            .arg(&safe_exec)
            .arg("--vault")
            .arg(root.join("vault"))
            .arg("--policy-dir")
            .arg(&policies)
            .args(args)
            .env("HOME", &root)
            .env_remove("SAFE_EXEC_VAULT")
            .env_remove("SAFE_EXEC_POLICY_DIR")
            .current_dir(&root)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };
    let key_file = root.join("master.key").display().to_string();
    let init = as_user(&["init", "--key-backend", "file", "--key-file", &key_file]);
    assert_eq!(code(&init), 0, "init as {name} failed: {}", stderr(&init));

    let denied = denied_operations(&dirs, &app);
    let allowed_write = format!("write:{}", out.join("ok.txt").display());
    let mut args: Vec<&str> = vec!["run", "probe", "--", &allowed_write];
    args.extend(denied.iter().map(String::as_str));
    let output = as_user(&args);
    assert_eq!(
        code(&output),
        0,
        "run as {name} failed\nstdout: {}\nstderr: {}",
        stdout(&output),
        stderr(&output)
    );
    let report = parse_report(&output);
    assert_confined(&report, &denied, &name);
    assert!(!outside.join("new.txt").exists());

    // The file the app wrote belongs to the user on the host: the run had no more than the user's rights.
    assert!(
        succeeded(&report, &allowed_write),
        "{}",
        outcome(&report, &allowed_write)
    );
    let owner =
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata(out.join("ok.txt")).unwrap());
    assert_eq!(
        owner, uid,
        "the app's file is owned by uid {owner}, not {name}"
    );
}

/// What a run on a pseudo-terminal left behind.
struct TerminalRun {
    status: ExitStatus,
    /// Everything the run wrote to the terminal.
    screen: String,
    /// Input still queued on the terminal after the run, as the caller's shell would read it.
    pending_input: String,
}

/// Runs `command` with a new pseudo-terminal as its controlling terminal and
/// standard streams, as a shell in a terminal emulator would.
fn run_on_terminal(mut command: Command) -> TerminalRun {
    let size = nix::pty::Winsize {
        ws_row: 24,
        ws_col: 80,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let pty = nix::pty::openpty(Some(&size), None).unwrap();
    for stream in 0..3 {
        let slave = std::fs::File::from(pty.slave.try_clone().unwrap());
        match stream {
            0 => command.stdin(slave),
            1 => command.stdout(slave),
            _ => command.stderr(slave),
        };
    }
    // SAFETY: setsid and ioctl are async-signal-safe and allocate nothing.
    unsafe {
        command.pre_exec(|| {
            if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = command.spawn().unwrap();
    // The command keeps copies of the slave, and the master reads EOF only once they are closed.
    drop(command);

    let screen = Arc::new(Mutex::new(Vec::new()));
    let reader = {
        let screen = Arc::clone(&screen);
        let mut master = std::fs::File::from(pty.master.try_clone().unwrap());
        std::thread::spawn(move || {
            let mut buffer = [0u8; 4096];
            // Ends with EIO once no process has the slave side open.
            while let Ok(count @ 1..) = master.read(&mut buffer) {
                screen.lock().unwrap().extend_from_slice(&buffer[..count]);
            }
        })
    };

    let status = wait_or_kill(&mut child, HANG_GUARD);
    let pending_input = read_pending_input(&pty.slave);
    drop(pty.slave);
    let _ = reader.join();
    drop(pty.master);
    let screen = String::from_utf8_lossy(&screen.lock().unwrap()).into_owned();
    TerminalRun {
        status,
        screen,
        pending_input,
    }
}

/// Returns the bytes waiting in the terminal's input queue.
fn read_pending_input(slave: &OwnedFd) -> String {
    let mut queued: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int to the pointer.
    unsafe { libc::ioctl(slave.as_raw_fd(), libc::FIONREAD, &mut queued) };
    if queued <= 0 {
        return String::new();
    }
    nix::fcntl::fcntl(
        slave,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .unwrap();
    let mut bytes = vec![0u8; queued as usize];
    let count = nix::unistd::read(slave, &mut bytes).unwrap_or(0);
    String::from_utf8_lossy(&bytes[..count]).into_owned()
}

fn wait_or_kill(child: &mut Child, limit: Duration) -> ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("safe-exec did not finish within {limit:?}; killed it (hang guard)");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn terminal_injection_not_delivered() {
    let env = TestEnv::new();
    let dirs = make_dirs(&env);
    probe_policy(&env, "inject", PROBE, &dirs, "");
    let mut command = env.command(&[
        "run",
        "inject",
        "--",
        "tiocsti",
        "tiocsti-high-bits",
        "tioclinux",
    ]);
    command.stdin(Stdio::inherit());
    let run = run_on_terminal(command);

    assert_eq!(run.status.code(), Some(0), "screen: {}", run.screen);
    assert!(
        !run.pending_input.contains("INJECTED"),
        "input reached the caller's terminal: {:?}",
        run.pending_input
    );
    assert_eq!(
        run.pending_input, "",
        "unexpected input left on the caller's terminal"
    );
    let report_line = run
        .screen
        .lines()
        .find(|line| line.contains("\"operations\""))
        .unwrap_or_else(|| panic!("no probe report on the terminal: {}", run.screen));
    let report: Value = serde_json::from_str(report_line.trim()).unwrap();
    for op in ["tiocsti", "tiocsti-high-bits", "tioclinux"] {
        assert_eq!(
            errno(&report, op),
            Some(EPERM),
            "{op}: {}",
            outcome(&report, op)
        );
    }
}

#[test]
fn clone3_enosys_threads_work() {
    let env = TestEnv::new();
    let dirs = make_dirs(&env);
    probe_policy(&env, "threads", PROBE, &dirs, "");
    let report = run_probe(
        &env,
        "threads",
        &[
            "clone3",
            "thread",
            "clone-newuser",
            "clone-newnet",
            "unshare-user",
            "unshare-net",
        ],
    );
    assert_eq!(
        errno(&report, "clone3"),
        Some(libc::ENOSYS as i64),
        "{}",
        outcome(&report, "clone3")
    );
    assert!(
        succeeded(&report, "thread"),
        "{}",
        outcome(&report, "thread")
    );
    for op in [
        "clone-newuser",
        "clone-newnet",
        "unshare-user",
        "unshare-net",
    ] {
        assert_eq!(
            errno(&report, op),
            Some(EPERM),
            "{op}: {}",
            outcome(&report, op)
        );
    }

    let script = "import threading\nt = threading.Thread(target=print, args=('thread ran',))\nt.start()\nt.join()";
    env.policy(
        "pythreads",
        &format!(
            "version: 1\ncommand: [/usr/bin/python3, -c, {script:?}]\nworkdir: {}\n",
            quoted(&env.app)
        ),
    );
    let output = env.run(&["run", "pythreads"]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert!(
        stdout(&output).contains("thread ran"),
        "{}",
        stdout(&output)
    );
}

#[test]
fn descriptors_only_standard_and_credentials() {
    let env = TestEnv::new();
    let dirs = make_dirs(&env);
    let mut store = env.command(&["cred", "store", "--service", "fdtest", "--key", "API_TOKEN"]);
    store
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = store.spawn().unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"token-value\n").unwrap();
    let stored = child.wait_with_output().unwrap();
    assert_eq!(code(&stored), 0, "cred store failed: {}", stderr(&stored));

    probe_policy(
        &env,
        "fds",
        PROBE,
        &dirs,
        "credentials:\n  service: fdtest\n  keys: [API_TOKEN]\n",
    );
    let report = run_probe(&env, "fds", &[]);
    let fds = report["fds"].as_object().unwrap();
    let numbers: Vec<&String> = fds.keys().collect();
    assert_eq!(numbers, ["0", "1", "2", "3"], "{}", report["fds"]);
    assert!(
        fds["3"].as_str().unwrap().starts_with("pipe:"),
        "{}",
        report["fds"]
    );
    let vault = env.vault.display().to_string();
    let policies = env.policies.display().to_string();
    for target in fds.values() {
        let target = target.as_str().unwrap();
        assert!(!target.starts_with(&vault), "vault handle leaked: {target}");
        assert!(
            !target.starts_with(&policies),
            "policy handle leaked: {target}"
        );
    }

    // Reading the credential pipe reaches EOF: no process but the supervisor
    // has the write end, and the supervisor closes it after writing.
    env.policy(
        "fdread",
        &format!(
            "version: 1\ncommand: [/bin/sh, -c, \"cat <&3; echo END; ls /proc/self/fd\"]\nworkdir: {}\ncredentials:\n  service: fdtest\n  keys: [API_TOKEN]\n",
            quoted(&env.app)
        ),
    );
    let mut command = env.command(&["run", "fdread"]);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let status = wait_or_kill(&mut child, HANG_GUARD);
    let output = child.wait_with_output().unwrap();
    assert_eq!(status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("END"), "{text}");
}

#[test]
fn credential_value_delivered() {
    let env = TestEnv::new();
    let mut store = env.command(&["cred", "store", "--service", "fdtest", "--key", "API_TOKEN"]);
    store
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = store.spawn().unwrap();
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), b"token-value\n").unwrap();
    let stored = child.wait_with_output().unwrap();
    assert_eq!(code(&stored), 0, "cred store failed: {}", stderr(&stored));
    env.policy(
        "fdvalue",
        &format!(
            "version: 1\ncommand: [/bin/sh, -c, \"cat <&3\"]\nworkdir: {}\ncredentials:\n  service: fdtest\n  keys: [API_TOKEN]\n",
            quoted(&env.app)
        ),
    );
    let mut command = env.command(&["run", "fdvalue"]);
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let status = wait_or_kill(&mut child, HANG_GUARD);
    let output = child.wait_with_output().unwrap();
    assert_eq!(status.code(), Some(0), "{}", stderr(&output));
    let text = stdout(&output);
    assert!(text.contains("API_TOKEN="), "{text}");
    assert!(text.contains("token-value"), "{text}");
}

#[test]
fn setuid_binary_gains_nothing() {
    let env = TestEnv::new();
    let bin = env.root().join("bin");
    std::fs::create_dir(&bin).unwrap();
    let id = bin.join("id");
    std::fs::copy("/usr/bin/id", &id).unwrap();
    std::fs::set_permissions(&id, std::fs::Permissions::from_mode(0o4755)).unwrap();

    let sudo = if Path::new("/usr/bin/sudo").exists() {
        "sudo -n true && echo SUDO_OK;"
    } else {
        ""
    };
    let script = format!("{sudo} {} -u; {} -g", id.display(), id.display());
    env.policy(
        "setuid",
        &format!(
            "version: 1\ncommand: [/bin/sh, -c, {script:?}]\nworkdir: {app}\nfilesystem:\n  exec: [{bin}]\n",
            app = quoted(&env.app),
            bin = quoted(&bin)
        ),
    );

    let output = env.run(&["run", "setuid"]);
    let text = stdout(&output);
    assert_eq!(
        code(&output),
        0,
        "stdout: {text}\nstderr: {}",
        stderr(&output)
    );
    let euid = text.lines().next().unwrap_or_default().trim();
    assert!(!euid.is_empty(), "id printed nothing: {text}");
    assert_ne!(euid, "0", "a setuid-root binary ran with euid 0");
    assert!(!text.contains("SUDO_OK"), "sudo succeeded in the sandbox");
}

#[test]
fn missing_path_error_names_path() {
    let env = TestEnv::new();
    env.policy(
        "missing",
        &format!(
            "version: 1\ncommand: [/bin/true]\nworkdir: {}\nfilesystem:\n  read: [/opt/not-here]\n  missing: error\n",
            quoted(&env.app)
        ),
    );
    let output = env.run(&["run", "missing"]);
    assert_ne!(code(&output), 0, "a run with a missing path started");
    assert!(
        stderr(&output).contains("/opt/not-here"),
        "{}",
        stderr(&output)
    );

    let not_yet = env.root().join("not-yet");
    env.policy(
        "missingwrite",
        &format!(
            "version: 1\ncommand: [/bin/true]\nworkdir: {}\nfilesystem:\n  write: [{}]\n",
            quoted(&env.app),
            quoted(&not_yet)
        ),
    );
    let output = env.run(&["run", "missingwrite"]);
    assert_ne!(code(&output), 0);
    let message = stderr(&output);
    assert!(message.contains("not-yet"), "{message}");
    assert!(
        message.contains("create it") && message.contains("parent"),
        "{message}"
    );
}

#[test]
fn missing_path_skip_stays_confined() {
    let env = TestEnv::new();
    let dirs = make_dirs(&env);
    probe_policy(&env, "skip", PROBE, &dirs, "");
    // Add the missing rule to the generated policy.
    let file = env.policies.join("skip.yaml");
    let text = std::fs::read_to_string(&file).unwrap();
    let text = text
        .replace("  read: [", "  read: [/opt/not-here, ")
        .replace("filesystem:\n", "filesystem:\n  missing: skip\n");
    std::fs::write(&file, text).unwrap();

    let write_outside = format!("write:{}", dirs.outside.join("new.txt").display());
    let output = env.run(&["run", "skip", "--", &write_outside]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert!(
        stderr(&output).contains("/opt/not-here"),
        "no warning names the skipped path: {}",
        stderr(&output)
    );
    let report = parse_report(&output);
    assert_eq!(
        errno(&report, &write_outside),
        Some(EACCES),
        "the ruleset was dropped: {}",
        outcome(&report, &write_outside)
    );
    let records = env.audit_records("skip");
    assert!(
        records
            .iter()
            .any(|record| record.to_string().contains("/opt/not-here")),
        "no audit record names the skipped path"
    );
}

#[test]
fn rename_and_truncate_rights() {
    let env = TestEnv::new();
    let dirs = make_dirs(&env);
    std::fs::create_dir(dirs.out.join("sub")).unwrap();
    std::fs::write(dirs.out.join("a"), "moved\n").unwrap();
    std::fs::write(env.app.join("ro.txt"), "read-only\n").unwrap();

    let out = dirs.out.display().to_string();
    let ro = env.app.join("ro.txt").display().to_string();
    let script = format!(
        "mv {out}/a {out}/sub/a || exit 10\n\
         /usr/bin/python3 -c \"open('{out}/sub/a', 'w').write('rewritten')\" || exit 11\n\
         if truncate -s 0 {ro}; then exit 12; fi\n\
         exit 0"
    );
    env.policy(
        "rename",
        &format!(
            "version: 1\ncommand: [/bin/sh, -c, {script:?}]\nworkdir: {app}\nenv:\n  inherit: [PATH]\nfilesystem:\n  read: [{app}]\n  write: [{out_dir}]\n",
            app = quoted(&env.app),
            out_dir = quoted(&dirs.out)
        ),
    );

    let output = env.run(&["run", "rename"]);
    assert_eq!(
        code(&output),
        0,
        "step failed (10 mv, 11 open for write, 12 truncate allowed): {}",
        stderr(&output)
    );
    assert_eq!(
        std::fs::read_to_string(dirs.out.join("sub/a")).unwrap(),
        "rewritten"
    );
    assert_eq!(
        std::fs::read_to_string(env.app.join("ro.txt")).unwrap(),
        "read-only\n"
    );
}

#[test]
fn devices_usable_with_system_preset() {
    let env = TestEnv::new();
    let script = "echo x > /dev/null || exit 10\n\
                  head -c 8 /dev/zero > /dev/null || exit 11\n\
                  head -c 8 /dev/urandom > /dev/null || exit 12\n\
                  /usr/bin/python3 -c 'import pty; pty.openpty()' || exit 13\n\
                  exit 0";
    env.policy(
        "devices",
        &format!("version: 1\ncommand: [/bin/sh, -c, {script:?}]\nworkdir: {}\nenv:\n  inherit: [PATH]\n", quoted(&env.app)),
    );
    let output = env.run(&["run", "devices"]);
    assert_eq!(
        code(&output),
        0,
        "step failed (10 null, 11 zero, 12 urandom, 13 openpty): {}",
        stderr(&output)
    );
}

#[test]
fn stty_on_dev_tty_interactive() {
    let env = TestEnv::new();
    let script = "stty -echo < /dev/tty && stty echo < /dev/tty && echo STTY_OK";
    env.policy(
        "stty",
        &format!("version: 1\ncommand: [/bin/sh, -c, {script:?}]\nworkdir: {}\nenv:\n  inherit: [PATH]\n", quoted(&env.app)),
    );
    let mut command = env.command(&["run", "stty"]);
    command.stdin(Stdio::inherit());
    let run = run_on_terminal(command);
    assert_eq!(run.status.code(), Some(0), "screen: {}", run.screen);
    assert!(run.screen.contains("STTY_OK"), "screen: {}", run.screen);
}

fn shell_app(env: &TestEnv, app: &str, script: &str) {
    env.policy(
        app,
        &format!("version: 1\ncommand: [/bin/sh, -c, {script:?}]\nworkdir: {}\nenv:\n  inherit: [PATH]\n", quoted(&env.app)),
    );
}

#[test]
fn exit_codes_passed_through() {
    let env = TestEnv::new();
    shell_app(&env, "abort", "kill -ABRT $$");
    shell_app(&env, "three", "exit 3");
    env.policy(
        "notfound",
        &format!(
            "version: 1\ncommand: [/nonexistent/program]\nworkdir: {}\n",
            quoted(&env.app)
        ),
    );
    let plain = env.app.join("plain.sh");
    std::fs::write(&plain, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&plain, std::fs::Permissions::from_mode(0o644)).unwrap();
    env.policy(
        "noexec",
        &format!(
            "version: 1\ncommand: [{}]\nworkdir: {app}\nfilesystem:\n  exec: [{app}]\n",
            quoted(&plain),
            app = quoted(&env.app)
        ),
    );

    assert_eq!(code(&env.run(&["run", "abort"])), 134);
    assert_eq!(code(&env.run(&["run", "three"])), 3);
    assert_eq!(code(&env.run(&["run", "notfound"])), 127);
    assert_eq!(code(&env.run(&["run", "noexec"])), 126);

    let records = env.audit_records("abort");
    let end = records
        .iter()
        .rev()
        .find(|record| record["event"] == "RUN_END")
        .expect("no RUN_END record");
    assert_eq!(end["details"]["status"]["signal"], 6, "{end}");
    assert_eq!(end["details"]["exit_code"], 134, "{end}");
}

/// Returns the pids of processes whose arguments are exactly `sleep MARKER`.
fn sleepers(marker: &str) -> Vec<i32> {
    let expected = format!("sleep\0{marker}\0");
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
        if cmdline.ends_with(expected.as_bytes()) && cmdline.starts_with(b"sleep") {
            pids.push(pid);
        }
    }
    pids
}

fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed() < HANG_GUARD,
            "{what} did not happen within {HANG_GUARD:?} (hang guard)"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Returns a `sleep` argument no other test uses, such as `3000.4242001`.
fn unique_marker(case: u32) -> String {
    format!("3000.{}{case:03}", std::process::id())
}

fn tree_policy(env: &TestEnv, app: &str, marker: &str) {
    shell_app(
        env,
        app,
        &format!("sleep {marker} & setsid sleep {marker} & wait"),
    );
}

#[test]
fn process_tree_ends_on_sigterm() {
    let env = TestEnv::new();
    let marker = unique_marker(1);
    tree_policy(&env, "treeterm", &marker);
    let mut child = env
        .command(&["run", "treeterm"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("both sleeps starting", || sleepers(&marker).len() == 2);

    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::SIGTERM,
    )
    .unwrap();
    wait_or_kill(&mut child, HANG_GUARD);
    wait_until("both sleeps ending", || sleepers(&marker).is_empty());
}

#[test]
fn process_tree_ends_on_sigkill() {
    let env = TestEnv::new();
    let marker = unique_marker(2);
    tree_policy(&env, "treekill", &marker);
    let mut child = env
        .command(&["run", "treekill"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("both sleeps starting", || sleepers(&marker).len() == 2);

    child.kill().unwrap();
    child.wait().unwrap();
    wait_until("both sleeps ending after SIGKILL of safe-exec", || {
        sleepers(&marker).is_empty()
    });
}

#[test]
fn process_tree_ends_on_early_kill() {
    let env = TestEnv::new();
    for (case, delay_ms) in [0u64, 2, 5, 10, 15, 20].into_iter().enumerate() {
        let marker = unique_marker(10 + case as u32);
        let app = format!("early{case}");
        tree_policy(&env, &app, &marker);
        let mut child = env
            .command(&["run", &app])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().unwrap();
        child.wait().unwrap();
        wait_until(
            &format!("no sleeps left after a kill at {delay_ms} ms"),
            || sleepers(&marker).is_empty(),
        );
        // A process started after the check would still be found here.
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            sleepers(&marker).is_empty(),
            "a sleep started after safe-exec was killed at {delay_ms} ms"
        );
    }
}

/// A tmux server on a private socket, killed when dropped.
struct Tmux {
    socket: PathBuf,
}

impl Tmux {
    fn command(&self) -> Command {
        let mut command = Command::new("tmux");
        command.arg("-S").arg(&self.socket);
        command
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().unwrap()
    }

    fn screen(&self) -> String {
        stdout(&self.run(&["capture-pane", "-p", "-t", "sandbox"]))
    }

    fn wait_for(&self, text: &str) -> String {
        let start = Instant::now();
        loop {
            let screen = self.screen();
            if screen.contains(text) {
                return screen;
            }
            assert!(
                start.elapsed() < HANG_GUARD,
                "{text:?} never appeared (hang guard); screen:\n{screen}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.run(&["kill-server"]);
    }
}

#[test]
fn interactive_program_under_tmux() {
    if !require(
        "tmux",
        Command::new("tmux")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success()),
    ) {
        return;
    }
    let env = TestEnv::new();
    let script = r#"
import os, sys, termios, time, tty
print("SIZE1", tuple(os.get_terminal_size(0)), flush=True)
saved = termios.tcgetattr(0)
tty.setraw(0)
key = os.read(0, 1)
termios.tcsetattr(0, termios.TCSADRAIN, saved)
print("RAW", key, flush=True)
line = input("LINE? ")
print("GOT", line, "SIZE2", tuple(os.get_terminal_size(0)), flush=True)
try:
    print("WAITING", flush=True)
    time.sleep(120)
except KeyboardInterrupt:
    print("INTERRUPTED", flush=True)
"#;
    env.policy(
        "interactive",
        &format!("version: 1\ncommand: [/usr/bin/python3, -c, {script:?}]\nworkdir: {}\nenv:\n  inherit: [TERM]\n", quoted(&env.app)),
    );

    let tmux = Tmux {
        socket: env.root().join("tmux.sock"),
    };
    let shell_command = format!(
        "{} --vault {} --policy-dir {} run interactive; echo EXIT:$?; sleep 120",
        common::binary(),
        env.vault.display(),
        env.policies.display()
    );
    let started = tmux.run(&[
        "new-session",
        "-d",
        "-s",
        "sandbox",
        "-x",
        "80",
        "-y",
        "24",
        &shell_command,
    ]);
    assert!(
        started.status.success(),
        "tmux failed: {}",
        stderr(&started)
    );

    tmux.wait_for("SIZE1 (80, 24)");
    tmux.run(&["send-keys", "-t", "sandbox", "-l", "k"]);
    tmux.wait_for("RAW b'k'");
    tmux.wait_for("LINE?");
    tmux.run(&["resize-window", "-t", "sandbox", "-x", "100", "-y", "30"]);
    tmux.run(&["send-keys", "-t", "sandbox", "-l", "hello"]);
    tmux.run(&["send-keys", "-t", "sandbox", "Enter"]);
    tmux.wait_for("GOT hello SIZE2 (100, 30)");
    tmux.wait_for("WAITING");
    tmux.run(&["send-keys", "-t", "sandbox", "C-c"]);
    tmux.wait_for("INTERRUPTED");
    let screen = tmux.wait_for("EXIT:");
    assert!(screen.contains("EXIT:0"), "screen:\n{screen}");
}

#[test]
fn ci_kernel_features_present() {
    let env = TestEnv::new();
    let report = doctor(&env);
    let abi = report["landlock_abi"].as_i64().unwrap_or(0);
    let checks = [
        ("Landlock ABI 6 or newer", abi >= 6),
        ("seccomp filters", report["seccomp"] == true),
        ("user namespaces", report["user_namespaces"] == true),
    ];
    for (feature, available) in checks {
        if in_ci() {
            assert!(available, "CI expects {feature}; doctor reports: {report}");
        } else if !available {
            eprintln!("note: this host lacks {feature}; tests that need it skip");
        }
    }
    assert_eq!(landlock_abi(&env), abi);
}

#[test]
fn network_none_without_namespaces_denies_inet() {
    let env = TestEnv::new();
    let dirs = make_dirs(&env);
    probe_policy(&env, "nonet", PROBE, &dirs, "network:\n  mode: none\n");
    let ops = [
        "socket-inet",
        "socket-inet6",
        "socket-packet",
        "socket-unix",
    ];
    let mut args = vec!["run", "nonet", "--"];
    args.extend(ops);
    let output = env
        .command(&args)
        .env("SAFE_EXEC_NAMESPACES", "off")
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let report = parse_report(&output);

    for op in ["socket-inet", "socket-inet6", "socket-packet"] {
        assert_eq!(
            errno(&report, op),
            Some(libc::EAFNOSUPPORT as i64),
            "{op}: {}",
            outcome(&report, op)
        );
    }
    assert!(
        succeeded(&report, "socket-unix"),
        "{}",
        outcome(&report, "socket-unix")
    );
    assert_eq!(report["status"]["Seccomp"], "2");
}

#[test]
fn network_none_blocks_loopback() {
    let env = TestEnv::new();
    let dirs = make_dirs(&env);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let connect = format!("tcp-connect:{}", listener.local_addr().unwrap().port());
    probe_policy(&env, "noloop", PROBE, &dirs, "network:\n  mode: none\n");

    let report = run_probe(&env, "noloop", &[&connect]);
    assert!(
        !succeeded(&report, &connect),
        "{}",
        outcome(&report, &connect)
    );
}

#[test]
fn network_open_tcp_ports_and_scopes() {
    let env = TestEnv::new();
    if !require(
        "Landlock ABI 6 (TCP rules and scopes)",
        landlock_abi(&env) >= 6,
    ) {
        return;
    }
    let dirs = make_dirs(&env);
    let allowed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let allowed_port = allowed.local_addr().unwrap().port();
    let connect_allowed = format!("tcp-connect:{allowed_port}");
    let connect_other = format!("tcp-connect:{}", other.local_addr().unwrap().port());
    let name = format!("safe-exec-sandbox-test-{}", std::process::id());
    let address = {
        use std::os::linux::net::SocketAddrExt;
        std::os::unix::net::SocketAddr::from_abstract_name(name.as_bytes()).unwrap()
    };
    let _abstract = std::os::unix::net::UnixListener::bind_addr(&address).unwrap();
    let connect_abstract = format!("abstract-connect:{name}");
    probe_policy(
        &env,
        "open",
        PROBE,
        &dirs,
        &format!("network:\n  mode: open\n  tcp_connect: [{allowed_port}]\n"),
    );

    let report = run_probe(
        &env,
        "open",
        &[
            &connect_allowed,
            &connect_other,
            "tcp-bind:0",
            &connect_abstract,
        ],
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
        errno(&report, "tcp-bind:0"),
        Some(EACCES),
        "{}",
        outcome(&report, "tcp-bind:0")
    );
    assert_eq!(
        errno(&report, &connect_abstract),
        Some(EPERM),
        "an abstract socket outside the sandbox was reachable: {}",
        outcome(&report, &connect_abstract)
    );
}

#[test]
fn process_tree_ends_without_namespaces() {
    let env = TestEnv::new();
    let marker = unique_marker(3);
    tree_policy(&env, "treefallback", &marker);
    let mut child = env
        .command(&["run", "treefallback"])
        .env("SAFE_EXEC_NAMESPACES", "off")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_until("both sleeps starting", || sleepers(&marker).len() == 2);

    child.kill().unwrap();
    child.wait().unwrap();
    wait_until(
        "both sleeps ending after SIGKILL of safe-exec without namespaces",
        || sleepers(&marker).is_empty(),
    );
}

#[test]
fn strict_profile_runs_common_programs() {
    let env = TestEnv::new();
    // Kill on violation, so a common call missing from the strict list ends the run.
    let script = "ls /usr > /dev/null && date > /dev/null && \
                  /usr/bin/python3 -c 'import subprocess, threading; subprocess.run([\"true\"]); print(\"PY_OK\")' && \
                  echo STRICT_OK";
    env.policy(
        "strict",
        &format!(
            "version: 1\ncommand: [/bin/sh, -c, {script:?}]\nworkdir: {}\nenv:\n  inherit: [PATH]\nsyscalls:\n  profile: strict\n  on_violation: kill\n",
            quoted(&env.app)
        ),
    );

    let output = env.run(&["run", "strict"]);
    assert_eq!(
        code(&output),
        0,
        "stdout: {}\nstderr: {}",
        stdout(&output),
        stderr(&output)
    );
    assert!(stdout(&output).contains("PY_OK"), "{}", stdout(&output));
    assert!(stdout(&output).contains("STRICT_OK"), "{}", stdout(&output));
}

#[test]
fn kill_on_violation_ends_app() {
    let env = TestEnv::new();
    let dirs = make_dirs(&env);
    probe_policy(
        &env,
        "killmode",
        PROBE,
        &dirs,
        "syscalls:\n  on_violation: kill\n",
    );

    let report = run_probe(&env, "killmode", &["ptrace", "clone3", "thread"]);
    assert_eq!(
        outcome(&report, "ptrace")["signal"].as_i64(),
        Some(libc::SIGSYS as i64),
        "{}",
        outcome(&report, "ptrace")
    );
    assert_eq!(errno(&report, "clone3"), Some(libc::ENOSYS as i64));
    assert!(
        succeeded(&report, "thread"),
        "{}",
        outcome(&report, "thread")
    );
}
