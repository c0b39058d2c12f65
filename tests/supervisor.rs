//! The supervisor end to end: exit codes, signals, timeout, process-tree
//! teardown without namespaces, run directory cleanup, credential delivery
//! and the records a run leaves in the audit log. Every test runs the real
//! binary under the real kernel sandbox.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is the failure report.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{TestEnv, code, stderr, stdout};

/// Counts processes whose command line is exactly `marker` (arguments joined by spaces).
fn count_processes(marker: &str) -> usize {
    let mut count = 0;
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let text = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        if text.trim_end() == marker {
            count += 1;
        }
    }
    count
}

/// Waits until `condition` is true or `limit` passes; returns the last result.
fn wait_for(limit: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if condition() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    condition()
}

#[test]
fn exit_code_passes_through() {
    let env = TestEnv::new();
    env.shell_policy("app", "exit 3", "");
    assert_eq!(code(&env.run(&["run", "app"])), 3);
}

#[test]
fn signal_death_gives_128_plus_n() {
    let env = TestEnv::new();
    env.shell_policy("app", "kill -ABRT $$", "");
    let output = env.run(&["app"]);
    assert_eq!(code(&output), 134, "{}", stderr(&output));
    let records = env.audit_records("app");
    let end = records
        .iter()
        .find(|r| r["event"] == "RUN_END")
        .expect("RUN_END record");
    assert_eq!(end["details"]["status"]["kind"], "signaled");
    assert_eq!(end["details"]["status"]["signal"], 6);
}

#[test]
fn exit_code_table() {
    let env = TestEnv::new();
    env.shell_policy("ok", "true", "");
    env.policy(
        "missing",
        &format!(
            "version: 1\ncommand: [/no/such/program]\nworkdir: {:?}\n",
            env.app.display().to_string()
        ),
    );
    std::fs::write(env.app.join("plain.txt"), "not a program").unwrap();
    env.policy(
        "noexec",
        &format!("version: 1\ncommand: [./plain.txt]\nworkdir: {app:?}\nfilesystem:\n  read: [{app:?}]\n", app = env.app.display().to_string()),
    );
    env.policy("broken", "version: 1\ncommand: [true]\nbogus: 1\n");
    env.shell_policy(
        "proxy",
        "true",
        "network:\n  mode: proxy\n  allow: [\"example.com:443\"]\n",
    );

    assert_eq!(code(&env.run(&["run", "ok"])), 0);
    assert_eq!(code(&env.run(&["run", "missing"])), 127);
    assert_eq!(code(&env.run(&["run", "noexec"])), 126);
    assert_eq!(code(&env.run(&["run", "broken"])), 65);
    assert_eq!(code(&env.run(&["run", "proxy"])), 77);
    assert_eq!(code(&env.run(&["run", "--no-such-flag", "ok"])), 64);
    assert_eq!(code(&env.run(&["policy", "show", "absent"])), 65);
    assert_eq!(code(&env.run(&["check", "proxy"])), 77);
}

#[test]
fn bad_option_value_is_usage_error() {
    let env = TestEnv::new();
    let output = env.run(&["audit", "verify", "--start", "yesterday"]);
    assert_eq!(code(&output), 64, "{}", stderr(&output));
}

#[test]
fn supervisor_failure_is_125() {
    let env = TestEnv::new();
    env.shell_policy("app", "true", "");
    // A run directory base writable by others is refused before anything starts.
    let runtime = env.root().join("runtime");
    std::fs::create_dir(&runtime).unwrap();
    std::fs::create_dir(runtime.join("safe-exec")).unwrap();
    std::fs::set_permissions(
        runtime.join("safe-exec"),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .unwrap();
    let output = env
        .command(&["run", "app"])
        .env("XDG_RUNTIME_DIR", &runtime)
        .output()
        .unwrap();
    assert_eq!(code(&output), 125, "{}", stderr(&output));
    assert!(
        stderr(&output).contains("not a private directory"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn run_records_start_preflight_end_cleanup() {
    let env = TestEnv::new();
    env.shell_policy("app", "echo done", "");
    let output = env.run(&["run", "app"]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert_eq!(stdout(&output), "done\n");

    let records = env.audit_records("app");
    let events: Vec<&str> = records
        .iter()
        .filter_map(|r| r["event"].as_str())
        .filter(|e| *e != "LOG_LINK")
        .collect();
    assert_eq!(events, ["RUN_START", "PREFLIGHT", "RUN_END", "CLEANUP"]);
    let run_ids: std::collections::BTreeSet<&str> = records
        .iter()
        .filter_map(|r| r["run_id"].as_str())
        .collect();
    assert_eq!(
        run_ids.len(),
        1,
        "one run id for the whole run: {run_ids:?}"
    );
    let end = &records.iter().find(|r| r["event"] == "RUN_END").unwrap()["details"];
    assert_eq!(end["exit_code"], 0);
    assert!(end["duration_ms"].is_u64());
    assert!(end["peak_memory_kib"].as_i64().unwrap() > 0);
    assert!(end["user_cpu_ms"].is_u64());
    let cleanup = &records.iter().find(|r| r["event"] == "CLEANUP").unwrap()["details"];
    assert_eq!(cleanup["result"], "removed");
    let run_dir = cleanup["run_dir"].as_str().unwrap();
    assert!(
        !std::path::Path::new(run_dir).exists(),
        "run directory {run_dir} was left behind"
    );

    let verify = env.run(&["audit", "verify", "--app", "app"]);
    assert_eq!(code(&verify), 0, "{}", stdout(&verify));
}

#[test]
fn skip_preflight_is_audited_as_warning() {
    let env = TestEnv::new();
    env.shell_policy("app", "true", "");
    let output = env.run(&["run", "app", "--skip-preflight"]);
    assert_eq!(code(&output), 0);
    assert!(stderr(&output).contains("preflight checks skipped"));
    let records = env.audit_records("app");
    let preflight = records.iter().find(|r| r["event"] == "PREFLIGHT").unwrap();
    assert_eq!(preflight["level"], "WARNING");
    assert_eq!(preflight["details"]["result"], "skipped");
}

#[test]
fn dry_run_prints_plan_and_runs_nothing() {
    let env = TestEnv::new();
    let marker = env.app.join("ran");
    env.shell_policy("app", &format!("touch {}", marker.display()), "");
    let output = env.run(&["run", "app", "--dry-run", "--json"]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let report: serde_json::Value = serde_json::from_str(stdout(&output).trim()).unwrap();
    assert_eq!(report["ok"], true);
    assert_eq!(report["plan"]["command_path"], "/bin/sh");
    assert!(
        report["checks"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["name"] == "kernel.landlock")
    );
    assert!(!marker.exists(), "dry run executed the app");
}

#[test]
fn environment_is_only_the_allowlist() {
    let env = TestEnv::new();
    env.shell_policy(
        "app",
        "env | sort",
        "env:\n  inherit: [PATH]\n  set: { GREETING: hi }\n",
    );
    let output = env
        .command(&["run", "app"])
        .env("LEAKY_SECRET", "should-not-pass")
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let text = stdout(&output);
    assert!(!text.contains("LEAKY_SECRET"), "{text}");
    assert!(text.contains("GREETING=hi"), "{text}");
    assert!(text.contains("SAFE_EXEC_RUN_ID="), "{text}");
    assert!(text.contains("TMPDIR="), "{text}");
    let names: Vec<&str> = text
        .lines()
        .filter_map(|l| l.split_once('=').map(|(n, _)| n))
        .collect();
    for name in names {
        assert!(
            [
                "PATH",
                "GREETING",
                "SAFE_EXEC_APP",
                "SAFE_EXEC_RUN_ID",
                "SAFE_EXEC_SOCKET",
                "TMPDIR",
                "PWD",
                "SHLVL",
                "_",
                "OLDPWD"
            ]
            .contains(&name),
            "unexpected variable {name} in the app's environment"
        );
    }
}

#[test]
fn signals_are_forwarded_to_the_app() {
    let env = TestEnv::new();
    let script =
        "trap 'echo got-usr1; exit 7' USR1; : > $TMPDIR/ready; while :; do sleep 0.05; done";
    env.shell_policy("app", script, "");
    let child = env
        .command(&["run", "app"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id() as i32;
    let run_base = format!("/tmp/safe-exec-{}", nix::unistd::getuid());
    // Wait for the app to start: it creates `ready` in its run directory's tmp.
    assert!(wait_for(Duration::from_secs(10), || {
        std::fs::read_dir(&run_base)
            .map(|d| d.flatten().any(|e| e.path().join("tmp/ready").exists()))
            .unwrap_or(false)
    }));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGUSR1,
    )
    .unwrap();
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(7));
    assert_eq!(stdout(&output), "got-usr1\n");
}

#[test]
fn timeout_stops_the_tree() {
    let env = TestEnv::new();
    env.shell_policy("app", "sleep 311 & sleep 311", "limits:\n  timeout: 1s\n");
    let output = env.run(&["run", "app"]);
    assert_eq!(code(&output), 143, "{}", stderr(&output));
    assert!(stderr(&output).contains("timed out"), "{}", stderr(&output));
    assert!(wait_for(Duration::from_secs(5), || count_processes(
        "sleep 311"
    ) == 0));
    let records = env.audit_records("app");
    let end = records.iter().find(|r| r["event"] == "RUN_END").unwrap();
    assert_eq!(end["details"]["timed_out"], true);
    assert_eq!(end["level"], "WARNING");
}

/// C09 without namespaces: the subreaper init with its parent-death signal
/// must end setsid grandchildren even when the supervisor is killed with SIGKILL.
#[test]
fn tree_dies_with_supervisor_without_namespaces() {
    let env = TestEnv::new();
    env.shell_policy("app", "sleep 312 & setsid sleep 312 & wait", "");
    for delay_ms in [0u64, 10, 20, 300] {
        let mut child = env
            .command(&["run", "app"])
            .env("SAFE_EXEC_NAMESPACES", "off")
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        if delay_ms == 300 {
            assert!(
                wait_for(Duration::from_secs(5), || count_processes("sleep 312") == 2),
                "the app did not start"
            );
        }
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(
            wait_for(Duration::from_secs(5), || count_processes("sleep 312") == 0),
            "sleeps survived SIGKILL of the supervisor after {delay_ms} ms"
        );
    }
}

#[test]
fn no_namespaces_still_denies_network() {
    let env = TestEnv::new();
    env.shell_policy(
        "app",
        "exec /usr/bin/python3 -c 'import socket; socket.socket()'",
        "",
    );
    let output = env
        .command(&["run", "app"])
        .env("SAFE_EXEC_NAMESPACES", "off")
        .output()
        .unwrap();
    assert_ne!(code(&output), 0);
    assert!(
        stderr(&output).contains("Errno 97") || stderr(&output).contains("Errno 1"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn stale_run_directory_is_removed_by_next_run() {
    let env = TestEnv::new();
    env.shell_policy("slow", "sleep 313", "");
    env.shell_policy("quick", "true", "");
    let runtime = env.root().join("runtime");
    std::fs::create_dir(&runtime).unwrap();
    std::fs::set_permissions(
        &runtime,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let mut child = env
        .command(&["run", "slow"])
        .env("XDG_RUNTIME_DIR", &runtime)
        .spawn()
        .unwrap();
    let base = runtime.join("safe-exec");
    assert!(wait_for(Duration::from_secs(5), || std::fs::read_dir(
        &base
    )
    .map(|d| d.count() == 1)
    .unwrap_or(false)));
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(
        std::fs::read_dir(&base).unwrap().count(),
        1,
        "the killed run left its directory"
    );

    let output = env
        .command(&["run", "quick"])
        .env("XDG_RUNTIME_DIR", &runtime)
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert_eq!(
        std::fs::read_dir(&base).unwrap().count(),
        0,
        "the stale run directory is still there"
    );
    assert!(wait_for(Duration::from_secs(5), || count_processes(
        "sleep 313"
    ) == 0));
}

#[test]
fn credentials_arrive_only_through_the_pipe() {
    let env = TestEnv::new();
    let sentinel = "sentinel-7f3a9c-not-in-any-file";
    let mut store = env
        .command(&["cred", "store", "--service", "svc", "--key", "API_TOKEN"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(store.stdin.as_mut().unwrap(), sentinel.as_bytes()).unwrap();
    assert!(store.wait().unwrap().success());

    // The app prints what it read from the pipe, then shows its environment and argv are clean.
    let script = "cat <&$SAFE_EXEC_CREDENTIALS_FD; echo; env; cat /proc/self/cmdline";
    env.shell_policy(
        "app",
        script,
        "credentials:\n  service: svc\n  keys: [API_TOKEN]\n",
    );
    let output = env.command(&["-vvv", "run", "app"]).output().unwrap();
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let text = stdout(&output);
    let (delivered, rest) = text.split_once('\n').unwrap();
    assert!(
        delivered.contains(sentinel),
        "the app did not receive the value: {delivered}"
    );
    assert!(
        !rest.contains(sentinel),
        "the value reached the environment or argv"
    );
    assert!(
        !stderr(&output).contains(sentinel),
        "the value reached the supervisor's log"
    );

    for entry in walk(env.root()) {
        let content = std::fs::read(&entry).unwrap_or_default();
        let found = content
            .windows(sentinel.len())
            .any(|w| w == sentinel.as_bytes());
        assert!(!found, "{} holds the value in plaintext", entry.display());
    }
    let records = env.audit_records("app");
    let access = records
        .iter()
        .find(|r| r["event"] == "CREDENTIAL_ACCESS")
        .expect("CREDENTIAL_ACCESS record");
    assert_eq!(access["details"]["key"], "API_TOKEN");
    assert_eq!(access["details"]["purpose"], "delivery");
}

#[test]
fn large_credentials_arrive_whole() {
    let env = TestEnv::new();
    let big: String = (0..200_000)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let mut store = env
        .command(&["cred", "store", "--service", "svc", "--key", "BIG"])
        .stdin(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(store.stdin.as_mut().unwrap(), big.as_bytes()).unwrap();
    assert!(store.wait().unwrap().success());
    env.shell_policy(
        "app",
        "sleep 0.3; wc -c <&3",
        "credentials:\n  service: svc\n  keys: [BIG]\n",
    );
    let output = env.run(&["run", "app"]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    let count: usize = stdout(&output).trim().parse().unwrap();
    assert!(count > big.len(), "only {count} bytes arrived");
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

#[test]
fn concurrent_runs_keep_audit_chain_intact() {
    let env = TestEnv::new();
    env.shell_policy("app", "true", "");
    let children: Vec<_> = (0..6)
        .map(|_| {
            env.command(&["run", "app"])
                .stdout(Stdio::null())
                .spawn()
                .unwrap()
        })
        .collect();
    for mut child in children {
        assert!(child.wait().unwrap().success());
    }
    let verify = env.run(&["audit", "verify", "--app", "app"]);
    assert_eq!(code(&verify), 0, "{}", stdout(&verify));
    let records = env.audit_records("app");
    assert_eq!(
        records.iter().filter(|r| r["event"] == "RUN_END").count(),
        6
    );
}

#[test]
fn policy_command_is_not_a_shell() {
    // Extra arguments after `--` are passed as argv, never through a shell.
    let env = TestEnv::new();
    env.policy(
        "app",
        &format!(
            "version: 1\ncommand: [/bin/echo]\nworkdir: {app:?}\nfilesystem:\n  read: [{app:?}]\n",
            app = env.app.display().to_string()
        ),
    );
    let output = env.run(&["app", "--", "$(id)", ";", "x"]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert_eq!(stdout(&output), "$(id) ; x\n");
}

#[test]
fn missing_path_refuses_with_audit_trail() {
    let env = TestEnv::new();
    env.shell_policy("app", "true", "  exec: [/opt/not-here-safe-exec-test]\n");
    for args in [&["run", "app"][..], &["run", "app", "--skip-preflight"][..]] {
        let output = env.run(args);
        assert_eq!(code(&output), 77, "{args:?}: {}", stderr(&output));
        assert!(
            stderr(&output).contains("/opt/not-here-safe-exec-test"),
            "{}",
            stderr(&output)
        );
    }
    let records = env.audit_records("app");
    let ends: Vec<_> = records.iter().filter(|r| r["event"] == "RUN_END").collect();
    assert_eq!(ends.len(), 2, "each refused run is closed in the audit log");
    assert!(
        records
            .iter()
            .all(|r| r["event"] != "CLEANUP" || r["details"]["result"] != "removed")
    );
}

#[test]
fn closed_stdout_ends_quietly() {
    let env = TestEnv::new();
    env.shell_policy("app", "true", "");
    for args in [
        &["policy", "schema"][..],
        &["run", "app", "--dry-run", "--json"][..],
        &["check", "--json"][..],
    ] {
        let mut child = env
            .command(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        drop(child.stdout.take());
        let output = child.wait_with_output().unwrap();
        assert!(
            !stderr(&output).contains("panicked"),
            "{args:?}: {}",
            stderr(&output)
        );
    }
}

#[test]
fn verify_of_unknown_app_fails() {
    let env = TestEnv::new();
    let output = env.run(&["audit", "verify", "--app", "no-such-app"]);
    assert_eq!(code(&output), 1, "{}", stdout(&output));
    assert!(
        stderr(&output).contains("no audit log for app"),
        "{}",
        stderr(&output)
    );
}

#[test]
fn migrate_bare_file_name_with_removal() {
    let env = TestEnv::new();
    std::fs::write(env.app.join(".env"), "TOKEN=abc\n").unwrap();
    let output = env
        .command(&[
            "cred",
            "migrate",
            "--env-file",
            ".env",
            "--service",
            "svc",
            "--remove-original",
        ])
        .current_dir(&env.app)
        .output()
        .unwrap();
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert!(
        !env.app.join(".env").exists(),
        "the original was not removed"
    );
    let get = env.run(&["cred", "get", "--service", "svc", "--key", "TOKEN"]);
    assert_eq!(stdout(&get).trim(), "abc");
}
