//! Integration tests of the credential vault. They drive the real binary in a
//! temporary directory with `--vault` and `--policy-dir` pointing into it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is the failure report.

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const SAFE_EXEC: &str = env!("CARGO_BIN_EXE_safe-exec");

/// Upper bound for one command, so a hang fails the test instead of blocking CI.
const COMMAND_LIMIT: Duration = Duration::from_secs(180);

struct Sandbox {
    _dir: tempfile::TempDir,
    root: PathBuf,
    vault: PathBuf,
    policies: PathBuf,
    home: PathBuf,
}

impl Sandbox {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_path_buf();
        let home = root.join("home");
        let policies = root.join("policies");
        std::fs::create_dir_all(&home).unwrap();
        std::fs::create_dir_all(&policies).unwrap();
        Self {
            vault: root.join("vault"),
            _dir: dir,
            root,
            policies,
            home,
        }
    }

    fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(SAFE_EXEC);
        command
            .arg("--vault")
            .arg(&self.vault)
            .arg("--policy-dir")
            .arg(&self.policies)
            .args(args);
        command
            .env("HOME", &self.home)
            .env_remove("SAFE_EXEC_VAULT")
            .env_remove("SAFE_EXEC_POLICY_DIR")
            .env_remove("RUST_LOG");
        command
    }

    fn run(&self, args: &[&str], stdin: Option<&[u8]>) -> Output {
        run_command(self.command(args), stdin)
    }

    fn key_file(&self) -> PathBuf {
        self.root.join("master.key")
    }

    fn init_file(&self) {
        let key_file = self.key_file();
        let output = self.run(
            &[
                "init",
                "--key-backend",
                "file",
                "--key-file",
                key_file.to_str().unwrap(),
            ],
            None,
        );
        assert_success(&output, "init");
    }

    fn store(&self, service: &str, key: &str, value: &str) {
        let output = self.run(
            &["cred", "store", "--service", service, "--key", key],
            Some(value.as_bytes()),
        );
        assert_success(&output, "cred store");
    }

    fn get(&self, service: &str, key: &str) -> Output {
        self.run(&["cred", "get", "--service", service, "--key", key], None)
    }

    fn get_value(&self, service: &str, key: &str) -> String {
        let output = self.get(service, key);
        assert_success(&output, &format!("cred get {service}/{key}"));
        String::from_utf8(output.stdout).unwrap()
    }

    fn vault_file(&self) -> PathBuf {
        self.vault.join("credentials.vault")
    }
}

fn run_command(mut command: Command, stdin: Option<&[u8]>) -> Output {
    command.stdin(if stdin.is_some() {
        Stdio::piped()
    } else {
        Stdio::null()
    });
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    if let Some(bytes) = stdin {
        child.stdin.take().unwrap().write_all(bytes).unwrap();
    }
    wait_bounded(child)
}

fn wait_bounded(mut child: Child) -> Output {
    let mut stdout = child.stdout.take().unwrap();
    let mut stderr = child.stderr.take().unwrap();
    let out_reader = std::thread::spawn(move || {
        let mut buffer = Vec::new();
        stdout.read_to_end(&mut buffer).unwrap();
        buffer
    });
    let err_reader = std::thread::spawn(move || {
        let mut buffer = Vec::new();
        stderr.read_to_end(&mut buffer).unwrap();
        buffer
    });
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > COMMAND_LIMIT {
            child.kill().unwrap();
            child.wait().unwrap();
            panic!("command did not finish within {COMMAND_LIMIT:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    Output {
        status,
        stdout: out_reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    }
}

fn assert_success(output: &Output, what: &str) {
    assert!(
        output.status.success(),
        "{what} failed with {:?}: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Fails in CI, where every tool the tests need is installed, and skips with a printed reason elsewhere.
fn require_tool(tool: &str) -> bool {
    let found = Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        assert!(
            std::env::var("CI").is_err(),
            "{tool} is required in CI; install it in .ci/run"
        );
        eprintln!("skipping: {tool} is not installed");
    }
    found
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(path) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&path) else {
            continue;
        };
        for entry in entries.flatten() {
            let path = entry.path();
            if entry.file_type().unwrap().is_dir() {
                stack.push(path);
            } else {
                files.push(path);
            }
        }
    }
    files
}

/// Returns the audit records of `app`, from every daily file of its log.
fn audit_text(sandbox: &Sandbox, app: &str) -> String {
    let mut files = files_under(&sandbox.vault.join("audit").join(app));
    files.sort();
    files
        .iter()
        .map(|path| std::fs::read_to_string(path).unwrap())
        .collect()
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

// ---- .env migration ----

fn migrate(sandbox: &Sandbox, content: &[u8], service: &str) -> Output {
    let env_file = sandbox.root.join(format!("{service}.env"));
    std::fs::write(&env_file, content).unwrap();
    sandbox.run(
        &[
            "cred",
            "migrate",
            "--env-file",
            env_file.to_str().unwrap(),
            "--service",
            service,
        ],
        None,
    )
}

#[test]
fn migrate_hash_in_values() {
    let sandbox = Sandbox::new();
    sandbox.init_file();
    let content =
        "A=foo#bar\nB=foo #bar\nC=\"x # y\"\nD='{\"k\":\"v#w\"}'\nE=p@ss#word\nF=6U+c'UD\"l#w\n";
    let output = migrate(&sandbox, content.as_bytes(), "hash");
    let report = text(&output.stdout);

    assert_eq!(
        output.status.code(),
        Some(65),
        "a rejected line makes the migration exit 65: {report}"
    );
    assert_eq!(sandbox.get_value("hash", "A"), "foo#bar");
    assert_eq!(sandbox.get_value("hash", "B"), "foo");
    assert_eq!(sandbox.get_value("hash", "C"), "x # y");
    assert_eq!(sandbox.get_value("hash", "D"), "{\"k\":\"v#w\"}");
    assert_eq!(sandbox.get_value("hash", "E"), "p@ss#word");
    assert_eq!(
        sandbox.get(&"hash", "F").status.code(),
        Some(65),
        "F must not be stored"
    );
    assert!(
        report.lines().any(|line| line.contains("line    2")
            && line.contains("trimmed")
            && line.contains("inline comment")),
        "{report}"
    );
    assert!(
        report.lines().any(|line| line.contains("line    6")
            && line.contains("REJECTED")
            && line.contains("unbalanced quote")),
        "{report}"
    );
    assert!(
        !report.contains("6U+c"),
        "the report must not show values: {report}"
    );
}

#[test]
fn migrate_bom_and_crlf() {
    let sandbox = Sandbox::new();
    sandbox.init_file();
    let output = migrate(
        &sandbox,
        b"\xEF\xBB\xBFFIRST_KEY=one\r\nSECOND=\"two\"\r\nTHIRD=three\r\n",
        "crlf",
    );
    assert_success(&output, "migrate");
    assert_eq!(sandbox.get_value("crlf", "FIRST_KEY"), "one");
    assert_eq!(sandbox.get_value("crlf", "SECOND"), "two");
    assert_eq!(sandbox.get_value("crlf", "THIRD"), "three");
}

#[test]
fn migrate_equals_export_multiline() {
    let sandbox = Sandbox::new();
    sandbox.init_file();
    let pem = "-----BEGIN PRIVATE KEY-----\nMIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEAu1SU1LfVLPHCozMx\nH2Mo4lgOEePzNm0tRgeLezV6ffAt0gunVTLw7onLRnrq0/IzW7yWR7QkrmBL7jTK\n-----END PRIVATE KEY-----";
    let content = format!(
        "KEY_B64=ZGV2X2tleQ==\nDB_URL=mysql://app:p=ss@127.0.0.1:3306/db\nexport A=1\nexport\tLONG_NAME=2\nSERVICE-NAME=x\nPEM=\"{pem}\"\nNL=\"a\\nb\"\nLITERAL='a\\nb'\nWIN=\"c:\\\\dir\"\n"
    );
    let output = migrate(&sandbox, content.as_bytes(), "eq");
    let report = text(&output.stdout);

    assert_eq!(sandbox.get_value("eq", "KEY_B64"), "ZGV2X2tleQ==");
    assert_eq!(
        sandbox.get_value("eq", "DB_URL"),
        "mysql://app:p=ss@127.0.0.1:3306/db"
    );
    assert_eq!(sandbox.get_value("eq", "A"), "1");
    assert_eq!(sandbox.get_value("eq", "LONG_NAME"), "2");
    assert_eq!(sandbox.get_value("eq", "PEM"), pem);
    assert_eq!(sandbox.get_value("eq", "NL"), "a\nb");
    assert_eq!(sandbox.get_value("eq", "LITERAL"), "a\\nb");
    assert_eq!(sandbox.get_value("eq", "WIN"), "c:\\dir");
    assert!(
        report.lines().any(|line| line.contains("line    5")
            && line.contains("REJECTED")
            && line.contains("SERVICE-NAME")),
        "{report}"
    );
    assert_eq!(output.status.code(), Some(65));
}

#[test]
fn migrate_remove_original_after_verify() {
    let sandbox = Sandbox::new();
    sandbox.init_file();
    let env_file = sandbox.root.join("app.env");
    std::fs::write(&env_file, "TOKEN=abc\nOTHER='x y'\n").unwrap();
    let output = sandbox.run(
        &[
            "cred",
            "migrate",
            "--env-file",
            env_file.to_str().unwrap(),
            "--service",
            "app",
            "--remove-original",
        ],
        None,
    );
    assert_success(&output, "migrate");
    assert!(
        !env_file.exists(),
        "the original must be removed after verification"
    );
    assert_eq!(sandbox.get_value("app", "TOKEN"), "abc");
    assert_eq!(sandbox.get_value("app", "OTHER"), "x y");

    std::fs::write(&env_file, "GOOD=1\nBAD-KEY=2\n").unwrap();
    let output = sandbox.run(
        &[
            "cred",
            "migrate",
            "--env-file",
            env_file.to_str().unwrap(),
            "--service",
            "app2",
            "--remove-original",
        ],
        None,
    );
    assert_eq!(output.status.code(), Some(65));
    assert!(
        env_file.exists(),
        "a file with a rejected line must be kept"
    );
}

// ---- files born private ----

#[test]
fn files_born_private_under_umask() {
    let sandbox = Sandbox::new();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let watched = sandbox.vault.clone();
    let key_dir = sandbox.root.join("keys");
    let watched_key_dir = key_dir.clone();
    let flag = stop.clone();
    let watcher = std::thread::spawn(move || {
        let mut exposed = Vec::new();
        let mut observations = 0usize;
        while !flag.load(std::sync::atomic::Ordering::Relaxed) {
            for root in [&watched, &watched_key_dir] {
                for path in files_under(root).into_iter().chain([root.clone()]) {
                    if let Ok(metadata) = std::fs::symlink_metadata(&path) {
                        observations += 1;
                        if metadata.permissions().mode() & 0o077 != 0 {
                            exposed.push(format!(
                                "{} {:o}",
                                path.display(),
                                metadata.permissions().mode()
                            ));
                        }
                    }
                }
            }
        }
        (exposed, observations)
    });

    let umask = |args: &[&str], stdin: Option<&[u8]>| {
        let mut command = Command::new("sh");
        command
            .arg("-c")
            .arg("umask 022; exec \"$@\"")
            .arg("sh")
            .arg(SAFE_EXEC);
        command
            .arg("--vault")
            .arg(&sandbox.vault)
            .arg("--policy-dir")
            .arg(&sandbox.policies)
            .args(args)
            .env("HOME", &sandbox.home);
        run_command(command, stdin)
    };
    let key_file = key_dir.join("master.key");
    assert_success(
        &umask(
            &[
                "init",
                "--key-backend",
                "file",
                "--key-file",
                key_file.to_str().unwrap(),
            ],
            None,
        ),
        "init",
    );
    for index in 0..20 {
        assert_success(
            &umask(
                &[
                    "cred",
                    "store",
                    "--service",
                    "s",
                    "--key",
                    &format!("K{index}"),
                ],
                Some(b"value"),
            ),
            "store",
        );
    }
    for index in 0..5 {
        let env_file = sandbox.root.join(format!("m{index}.env"));
        std::fs::write(&env_file, format!("M{index}=secret\n")).unwrap();
        let output = umask(
            &[
                "cred",
                "migrate",
                "--env-file",
                env_file.to_str().unwrap(),
                "--service",
                "m",
                "--remove-original",
            ],
            None,
        );
        assert_success(&output, "migrate");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (exposed, observations) = watcher.join().unwrap();

    assert!(observations > 0, "the watcher saw no file");
    assert!(
        exposed.is_empty(),
        "readable by group or others: {exposed:?}"
    );
    let leftovers: Vec<PathBuf> = files_under(&sandbox.vault)
        .into_iter()
        .filter(|path| path.to_string_lossy().contains(".tmp-"))
        .collect();
    assert!(
        leftovers.is_empty(),
        "temporary files remain: {leftovers:?}"
    );
    let plaintext: Vec<PathBuf> = files_under(&sandbox.vault)
        .into_iter()
        .filter(|path| contains(&std::fs::read(path).unwrap(), b"secret"))
        .collect();
    assert!(
        plaintext.is_empty(),
        "plaintext under the vault: {plaintext:?}"
    );
}

// ---- delivery ----

#[test]
fn sentinel_reaches_app_only_through_pipe() {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;

    let sandbox = Sandbox::new();
    sandbox.init_file();
    let sentinel = "SENTINEL-7f3a9c-value";
    sandbox.store("demo", "API_TOKEN", sentinel);
    // Big enough to overflow a pipe buffer, so the writer thread must keep writing while the app reads.
    let large = "L".repeat(300_000);
    sandbox.store("demo", "LARGE", &large);

    let context = safe_exec::context::Context::new(
        Some(sandbox.vault.clone()),
        Some(sandbox.policies.clone()),
    );
    let creds = safe_exec::policy::CredentialsPolicy {
        service: "demo".into(),
        keys: vec!["API_TOKEN".into(), "LARGE".into()],
        optional: vec!["NOT_THERE".into()],
        format: safe_exec::policy::CredentialFormat::Dotenv,
        fd: 3,
    };
    let payload = safe_exec::vault::deliver(&context, &creds, "demo", "test-run").unwrap();
    let (read_end, writer) = safe_exec::vault::delivery::spawn_writer(payload).unwrap();

    // The app reads the credentials from fd 3 with Python's standard library, then waits for stdin to close.
    let script = "import os, sys\nfd = int(os.environ['SAFE_EXEC_CREDENTIALS_FD'])\ndata = os.fdopen(fd).read()\nvalues = dict(line.split('=', 1) for line in data.splitlines())\nprint(values['API_TOKEN'].strip(\"'\"), len(values['LARGE'].strip(\"'\")), flush=True)\nsys.stdin.read()\n";
    let raw = read_end.as_raw_fd();
    let mut command = Command::new("python3");
    command
        .arg("-c")
        .arg(script)
        .env("SAFE_EXEC_CREDENTIALS_FD", "3")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped());
    // SAFETY: dup2 and fcntl are async-signal-safe, and `raw` stays open in the parent until after spawn.
    unsafe {
        command.pre_exec(move || {
            // dup2 onto itself keeps close-on-exec, so clear the flag in that case.
            let placed = if raw == 3 {
                libc::fcntl(3, libc::F_SETFD, 0)
            } else {
                libc::dup2(raw, 3) - 3
            };
            if placed == 0 {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let mut child = command.spawn().unwrap();
    drop(read_end);
    let mut line = String::new();
    std::io::BufRead::read_line(
        &mut std::io::BufReader::new(child.stdout.as_mut().unwrap()),
        &mut line,
    )
    .unwrap();
    writer.join().unwrap().unwrap();
    assert_eq!(line.trim(), format!("{sentinel} 300000"));

    // While the app is alive, no environment or command line on the machine contains the value.
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        for file in ["environ", "cmdline"] {
            if let Ok(bytes) = std::fs::read(entry.path().join(file)) {
                assert!(
                    !contains(&bytes, sentinel.as_bytes()),
                    "{}/{file} holds the value",
                    entry.path().display()
                );
            }
        }
    }
    drop(child.stdin.take());
    child.wait().unwrap();

    for path in files_under(&sandbox.vault) {
        assert!(
            !contains(&std::fs::read(&path).unwrap(), sentinel.as_bytes()),
            "{} holds the value",
            path.display()
        );
    }
    let audit = audit_text(&sandbox, "demo");
    assert_eq!(
        audit.matches("CREDENTIAL_ACCESS").count(),
        2,
        "one record per key delivered: {audit}"
    );
    assert!(audit.contains("\"purpose\":\"delivery\""));

    // Logs at the most verbose level contain no value either.
    let output = sandbox.run(&["-vvvv", "cred", "list"], None);
    assert!(!contains(&output.stderr, sentinel.as_bytes()));
    let output = sandbox.run(
        &[
            "-vvvv",
            "cred",
            "get",
            "--service",
            "demo",
            "--key",
            "API_TOKEN",
        ],
        None,
    );
    assert!(!contains(&output.stderr, sentinel.as_bytes()));
    assert_eq!(text(&output.stdout), sentinel);
}

#[test]
fn delivery_names_missing_required_keys() {
    let sandbox = Sandbox::new();
    sandbox.init_file();
    sandbox.store("demo", "PRESENT", "x");
    let context = safe_exec::context::Context::new(
        Some(sandbox.vault.clone()),
        Some(sandbox.policies.clone()),
    );
    let creds = safe_exec::policy::CredentialsPolicy {
        service: "demo".into(),
        keys: vec!["PRESENT".into(), "GONE_ONE".into(), "GONE_TWO".into()],
        optional: vec![],
        format: safe_exec::policy::CredentialFormat::Json,
        fd: 3,
    };
    let err = safe_exec::vault::deliver(&context, &creds, "demo", "run").unwrap_err();
    let message = err.to_string();
    assert!(
        message.contains("GONE_ONE") && message.contains("GONE_TWO"),
        "{message}"
    );
    assert!(!message.contains("PRESENT,"), "{message}");
    assert_eq!(
        safe_exec::exit::HasExitCode::exit_code(&err),
        safe_exec::exit::Code::NoPerm
    );
}

// ---- backends ----

#[test]
fn file_backend_round_trip() {
    let sandbox = Sandbox::new();
    sandbox.init_file();
    let mode = std::fs::metadata(sandbox.key_file())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600);
    sandbox.store("svc", "KEY", "file-value");
    assert_eq!(sandbox.get_value("svc", "KEY"), "file-value");
    let header = std::fs::read_to_string(sandbox.vault_file()).unwrap();
    assert!(
        header.lines().next().unwrap().contains("\"kind\":\"file\""),
        "backend recorded in the header"
    );

    let output = sandbox.run(
        &[
            "init",
            "--key-backend",
            "file",
            "--key-file",
            sandbox.key_file().to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(
        output.status.code(),
        Some(64),
        "a second init must be refused"
    );
}

#[test]
fn passphrase_round_trip_and_wrong_passphrase() {
    let sandbox = Sandbox::new();
    let mut init = sandbox.command(&[
        "--passphrase-fd",
        "0",
        "init",
        "--key-backend",
        "passphrase",
    ]);
    init.env_remove("VAULT_PASS");
    assert_success(&run_command(init, Some(b"correct horse battery\n")), "init");

    let mut store = sandbox.command(&[
        "--passphrase-env",
        "VAULT_PASS",
        "cred",
        "store",
        "--service",
        "s",
        "--key",
        "K",
        "--value-file",
    ]);
    let value_file = sandbox.root.join("value");
    std::fs::write(&value_file, "pass-value").unwrap();
    store
        .arg(&value_file)
        .env("VAULT_PASS", "correct horse battery");
    assert_success(&run_command(store, None), "store");

    let mut get = sandbox.command(&[
        "--passphrase-env",
        "VAULT_PASS",
        "cred",
        "get",
        "--service",
        "s",
        "--key",
        "K",
    ]);
    get.env("VAULT_PASS", "correct horse battery");
    let output = run_command(get, None);
    assert_success(&output, "get");
    assert_eq!(text(&output.stdout), "pass-value");

    let mut wrong = sandbox.command(&[
        "--passphrase-env",
        "VAULT_PASS",
        "cred",
        "get",
        "--service",
        "s",
        "--key",
        "K",
    ]);
    wrong.env("VAULT_PASS", "wrong horse");
    let output = run_command(wrong, None);
    assert_eq!(output.status.code(), Some(77), "{}", text(&output.stderr));
    assert!(
        text(&output.stderr).contains("wrong master key"),
        "{}",
        text(&output.stderr)
    );
    assert!(output.stdout.is_empty());

    // The audit key comes from the vault, so the failure waits beside the log
    // until the next successful unlock writes it.
    let pending = sandbox.vault.join("auth-failures.pending");
    let kept = std::fs::read_to_string(&pending).unwrap();
    assert!(kept.contains("wrong master key"), "{kept}");
    assert!(
        !kept.contains("wrong horse"),
        "the passphrase must not be kept"
    );
    assert_eq!(
        std::fs::metadata(&pending).unwrap().permissions().mode() & 0o777,
        0o600
    );

    let mut get = sandbox.command(&[
        "--passphrase-env",
        "VAULT_PASS",
        "cred",
        "get",
        "--service",
        "s",
        "--key",
        "K",
    ]);
    get.env("VAULT_PASS", "correct horse battery");
    assert_success(&run_command(get, None), "get after a failure");
    assert!(
        !pending.exists(),
        "the kept failure moved into the audit log"
    );
    let audit = audit_text(&sandbox, "vault");
    let failure = audit
        .lines()
        .find(|line| line.contains("\"event\":\"AUTH_FAILURE\""))
        .unwrap_or_else(|| panic!("no AUTH_FAILURE: {audit}"));
    assert!(failure.contains("\"recorded_late\":true"), "{failure}");
    assert!(!audit.contains("wrong horse"));
}

#[test]
fn wrong_key_file_is_auth_failure() {
    let sandbox = Sandbox::new();
    sandbox.init_file();
    sandbox.store("s", "K", "v");
    std::fs::write(sandbox.key_file(), format!("{}\n", "ab".repeat(32))).unwrap();
    let output = sandbox.get("s", "K");
    assert_eq!(output.status.code(), Some(77));
    assert!(text(&output.stderr).contains("wrong master key"));
}

#[test]
fn keyutils_round_trip() {
    let sandbox = Sandbox::new();
    let output = sandbox.run(&["init", "--key-backend", "keyutils"], None);
    if !output.status.success()
        && text(&output.stderr).contains("keyutils")
        && std::env::var("CI").is_err()
    {
        eprintln!(
            "skipping: the kernel keyutils keyring is not usable here: {}",
            text(&output.stderr)
        );
        return;
    }
    assert_success(&output, "init keyutils");
    sandbox.store("s", "K", "keyring-value");
    assert_eq!(sandbox.get_value("s", "K"), "keyring-value");
}

#[test]
fn auto_without_session_bus_fails() {
    let sandbox = Sandbox::new();
    let mut command = sandbox.command(&["init", "--key-backend", "auto"]);
    command
        .env_remove("DBUS_SESSION_BUS_ADDRESS")
        .env_remove("XDG_RUNTIME_DIR");
    let output = run_command(command, None);
    let stderr = text(&output.stderr);
    assert_eq!(output.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("no OS keyring answered"), "{stderr}");
    for backend in [
        "--key-backend keyutils",
        "--key-backend file",
        "--key-backend passphrase",
    ] {
        assert!(
            stderr.contains(backend),
            "the message must offer {backend}: {stderr}"
        );
    }
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(!sandbox.vault_file().exists(), "no vault without a key");
}

#[test]
fn secret_service_round_trip() {
    if !(require_tool("dbus-run-session")
        && require_tool("gnome-keyring-daemon")
        && require_tool("secret-tool"))
    {
        return;
    }
    let sandbox = Sandbox::new();
    let script = r#"
set -eu
eval "$(printf 'test-keyring-password' | gnome-keyring-daemon --unlock --components=secrets)"
"$SAFE_EXEC" --vault "$VAULT" init --key-backend secret-service
printf 'ss-value' | "$SAFE_EXEC" --vault "$VAULT" cred store --service svc --key KEY
printf 'get='; "$SAFE_EXEC" --vault "$VAULT" cred get --service svc --key KEY; echo
printf 'auto='; "$SAFE_EXEC" --vault "$VAULT-auto" init --key-backend auto >/dev/null && echo ok
printf 'items='; secret-tool search --all application safe-exec 2>&1 | grep -c '^label = safe-exec vault master key' || true
"#;
    let mut command = Command::new("timeout");
    command.args([
        "-s",
        "KILL",
        "120",
        "dbus-run-session",
        "--",
        "sh",
        "-c",
        script,
    ]);
    command
        .env("SAFE_EXEC", SAFE_EXEC)
        .env("VAULT", &sandbox.vault)
        .env("HOME", &sandbox.home);
    command
        .env("XDG_DATA_HOME", sandbox.home.join(".local/share"))
        .env_remove("DBUS_SESSION_BUS_ADDRESS");
    let output = run_command(command, None);
    let stdout = text(&output.stdout);
    assert_success(&output, &format!("secret service script ({stdout})"));
    assert!(stdout.contains("get=ss-value"), "{stdout}");
    assert!(
        stdout.contains("auto=ok"),
        "auto picks the Secret Service when it answers: {stdout}"
    );
    assert!(
        stdout.contains("items=2"),
        "both vaults' keys are in the keyring: {stdout}"
    );
    let header = std::fs::read_to_string(sandbox.vault_file()).unwrap();
    assert!(header.contains("\"kind\":\"secret-service\""));
}

// ---- tampering ----

fn entry_line(sandbox: &Sandbox, key: &str) -> usize {
    let content = std::fs::read_to_string(sandbox.vault_file()).unwrap();
    content
        .lines()
        .position(|line| line.contains(&format!("\"key\":\"{key}\"")))
        .unwrap()
}

fn edit_lines(sandbox: &Sandbox, edit: impl FnOnce(&mut Vec<String>)) {
    let content = std::fs::read_to_string(sandbox.vault_file()).unwrap();
    let mut lines: Vec<String> = content.lines().map(str::to_owned).collect();
    edit(&mut lines);
    std::fs::write(sandbox.vault_file(), lines.join("\n") + "\n").unwrap();
}

fn three_entries() -> Sandbox {
    let sandbox = Sandbox::new();
    sandbox.init_file();
    for (key, value) in [
        ("ONE", "value-one"),
        ("TWO", "value-two"),
        ("THREE", "value-three"),
    ] {
        sandbox.store("svc", key, value);
    }
    sandbox
}

#[test]
fn flipped_bit_reported_by_entry() {
    let sandbox = three_entries();
    let index = entry_line(&sandbox, "TWO");
    edit_lines(&sandbox, |lines| {
        let line = &mut lines[index];
        let at = line.find("\"ciphertext\":\"").unwrap() + 14;
        let flipped = if &line[at..at + 1] == "0" { "1" } else { "0" };
        line.replace_range(at..at + 1, flipped);
    });
    let output = sandbox.get("svc", "TWO");
    assert_eq!(output.status.code(), Some(65));
    assert!(
        text(&output.stderr).contains("svc/TWO is damaged"),
        "{}",
        text(&output.stderr)
    );
    assert_eq!(sandbox.get_value("svc", "ONE"), "value-one");
    assert_eq!(sandbox.get_value("svc", "THREE"), "value-three");
}

#[test]
fn moved_ciphertext_fails_to_open() {
    let sandbox = three_entries();
    let one = entry_line(&sandbox, "ONE");
    let three = entry_line(&sandbox, "THREE");
    edit_lines(&sandbox, |lines| {
        let value_of = |line: &str| {
            let start = line.find("\"value\":").unwrap();
            let end = line[start..].find('}').unwrap() + start + 1;
            line[start..end].to_owned()
        };
        let moved = value_of(&lines[one]);
        let replaced = value_of(&lines[three]);
        lines[three] = lines[three].replace(&replaced, &moved);
    });
    let output = sandbox.get("svc", "THREE");
    assert_eq!(output.status.code(), Some(65));
    assert!(
        text(&output.stderr).contains("svc/THREE is damaged"),
        "{}",
        text(&output.stderr)
    );
    assert_eq!(sandbox.get_value("svc", "ONE"), "value-one");
    assert_eq!(sandbox.get_value("svc", "TWO"), "value-two");
}

#[test]
fn truncated_vault_keeps_the_rest() {
    let sandbox = three_entries();
    let content = std::fs::read(sandbox.vault_file()).unwrap();
    std::fs::write(sandbox.vault_file(), &content[..content.len() - 40]).unwrap();

    let output = sandbox.get("svc", "THREE");
    assert_eq!(output.status.code(), Some(65));
    assert!(
        text(&output.stderr).contains("svc/THREE is damaged"),
        "{}",
        text(&output.stderr)
    );
    assert_eq!(sandbox.get_value("svc", "ONE"), "value-one");
    assert_eq!(sandbox.get_value("svc", "TWO"), "value-two");
    let list = sandbox.run(&["cred", "list"], None);
    assert!(
        text(&list.stderr).contains("truncated entry"),
        "{}",
        text(&list.stderr)
    );

    // A later write keeps the other entries and the damaged line as it was.
    sandbox.store("svc", "FOUR", "value-four");
    assert_eq!(sandbox.get_value("svc", "ONE"), "value-one");
    assert_eq!(sandbox.get_value("svc", "FOUR"), "value-four");
    sandbox.store("svc", "THREE", "value-three-again");
    assert_eq!(sandbox.get_value("svc", "THREE"), "value-three-again");
}

// ---- concurrency and crashes ----

#[test]
fn concurrent_stores_keep_all() {
    let sandbox = Sandbox::new();
    sandbox.init_file();
    let sandbox = std::sync::Arc::new(sandbox);
    let writers: Vec<_> = ["A", "B"]
        .into_iter()
        .map(|prefix| {
            let sandbox = sandbox.clone();
            std::thread::spawn(move || {
                for index in 0..500 {
                    sandbox.store(
                        "bulk",
                        &format!("{prefix}_{index}"),
                        &format!("{prefix}-{index}"),
                    );
                }
            })
        })
        .collect();
    for writer in writers {
        writer.join().unwrap();
    }
    let output = sandbox.run(&["cred", "list", "--json", "--service", "bulk"], None);
    assert_success(&output, "list");
    let listing: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(listing["credentials"].as_array().unwrap().len(), 1000);
    for key in ["A_0", "A_499", "B_0", "B_250", "B_499"] {
        assert_eq!(sandbox.get_value("bulk", key), key.replace('_', "-"));
    }
}

#[test]
fn kill_during_master_key_rotation() {
    let sandbox = Sandbox::new();
    sandbox.init_file();
    let values: Vec<(String, String)> = (0..5)
        .map(|index| (format!("K{index}"), format!("value-{index}")))
        .collect();
    for (key, value) in &values {
        sandbox.store("rot", key, value);
    }
    for round in 0..25u64 {
        let mut child = sandbox
            .command(&["cred", "rotate-master-key"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let delay = u64::from(getrandom::u32().unwrap() % 40_000);
        std::thread::sleep(Duration::from_micros(delay));
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        child.wait().unwrap();
        for (key, value) in &values {
            assert_eq!(
                sandbox.get_value("rot", key),
                *value,
                "round {round}, killed after {delay} µs"
            );
        }
    }
    assert_success(
        &sandbox.run(&["cred", "rotate-master-key"], None),
        "rotate-master-key",
    );
    for (key, value) in &values {
        assert_eq!(sandbox.get_value("rot", key), *value);
    }
    assert!(!sandbox.root.join("master.key.pending").exists());
}

// ---- other commands ----

#[test]
fn export_lambda_private_and_no_overwrite() {
    let sandbox = three_entries();
    let output_file = sandbox.root.join("secret.json");
    let output = sandbox.run(
        &[
            "cred",
            "export-lambda",
            "--service",
            "svc",
            "--output",
            output_file.to_str().unwrap(),
        ],
        None,
    );
    assert_success(&output, "export");
    assert_eq!(
        std::fs::metadata(&output_file)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let json: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&output_file).unwrap()).unwrap();
    assert_eq!(json["TWO"], "value-two");
    assert!(text(&output.stderr).contains("plaintext"));

    let again = sandbox.run(
        &[
            "cred",
            "export-lambda",
            "--service",
            "svc",
            "--output",
            output_file.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(again.status.code(), Some(64));
    assert!(text(&again.stderr).contains("refusing to overwrite"));

    let audit = audit_text(&sandbox, "vault");
    assert!(
        audit
            .lines()
            .any(|line| line.contains("\"event\":\"CREDENTIAL_EXPORT\"")
                && line.contains("\"level\":\"WARNING\""))
    );
    assert_eq!(audit.matches("\"purpose\":\"export\"").count(), 3);
    assert!(!audit.contains("value-two"));
}

#[test]
fn check_rotation_exit_code() {
    let sandbox = Sandbox::new();
    sandbox.init_file();
    sandbox.store("r", "FRESH", "x");
    assert_eq!(
        sandbox.run(&["cred", "check-rotation"], None).status.code(),
        Some(0)
    );

    let output = sandbox.run(
        &[
            "cred",
            "store",
            "--service",
            "r",
            "--key",
            "OLD",
            "--rotate-days",
            "0",
        ],
        Some(b"y"),
    );
    assert_success(&output, "store");
    std::thread::sleep(Duration::from_millis(20));
    let output = sandbox.run(&["cred", "check-rotation", "--json"], None);
    assert_eq!(output.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["overdue"][0]["key"], "OLD");
}

#[test]
fn rotate_keeps_previous_until_confirmed() {
    let sandbox = Sandbox::new();
    sandbox.init_file();
    sandbox.store("svc", "TOKEN", "old-token");
    let output = sandbox.run(
        &["cred", "rotate", "--service", "svc", "--force"],
        Some(b"new-token\n"),
    );
    assert_success(&output, "rotate");
    assert_eq!(sandbox.get_value("svc", "TOKEN"), "new-token");

    assert_success(
        &sandbox.run(&["cred", "rotate", "--service", "svc", "--rollback"], None),
        "rollback",
    );
    assert_eq!(sandbox.get_value("svc", "TOKEN"), "old-token");

    assert_success(
        &sandbox.run(
            &["cred", "rotate", "--service", "svc", "--force"],
            Some(b"newer\n"),
        ),
        "rotate",
    );
    assert_success(
        &sandbox.run(&["cred", "rotate", "--service", "svc", "--confirm"], None),
        "confirm",
    );
    assert_success(
        &sandbox.run(&["cred", "rotate", "--service", "svc", "--rollback"], None),
        "rollback after confirm",
    );
    assert_eq!(
        sandbox.get_value("svc", "TOKEN"),
        "newer",
        "a confirmed rotation has nothing to roll back"
    );
    let audit = audit_text(&sandbox, "vault");
    assert!(audit.contains("CREDENTIAL_ROTATED"));
}

#[test]
fn store_value_flag_warns() {
    let sandbox = Sandbox::new();
    sandbox.init_file();
    let output = sandbox.run(
        &[
            "cred",
            "store",
            "--service",
            "s",
            "--key",
            "K",
            "--value",
            "argv-value",
        ],
        None,
    );
    assert_success(&output, "store");
    assert!(text(&output.stderr).contains("shell history"));
}

#[test]
fn validate_fix_sets_modes() {
    let sandbox = Sandbox::new();
    sandbox.init_file();
    sandbox.store("s", "K", "v");
    std::fs::set_permissions(sandbox.vault_file(), std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::set_permissions(&sandbox.vault, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(
        sandbox.policies.join("app.yaml"),
        "version: 1\ncommand: [true]\n",
    )
    .unwrap();
    std::fs::set_permissions(
        sandbox.policies.join("app.yaml"),
        std::fs::Permissions::from_mode(0o664),
    )
    .unwrap();

    let output = sandbox.run(&["validate"], None);
    assert_eq!(output.status.code(), Some(1));
    let report = text(&output.stdout);
    assert!(
        report.contains("credentials.vault") && report.contains("app.yaml"),
        "{report}"
    );

    assert_success(&sandbox.run(&["validate", "--fix"], None), "validate --fix");
    assert_eq!(
        std::fs::metadata(sandbox.vault_file())
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    assert_eq!(
        std::fs::metadata(&sandbox.vault)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o700
    );
    assert_success(&sandbox.run(&["validate"], None), "validate after fix");
}

fn write_policy(sandbox: &Sandbox, app_dir: &Path) {
    std::fs::create_dir_all(app_dir).unwrap();
    let policy = format!(
        "version: 1\ncommand: [/bin/true]\nworkdir: {dir}\nfilesystem:\n  read: [{dir}]\ncredentials:\n  service: mysvc\n  keys: [TOKEN, MISSING_ONE]\npreflight:\n  rotation_overdue: fail\n  plaintext_secrets: warn\n",
        dir = app_dir.display()
    );
    std::fs::write(sandbox.policies.join("myapp.yaml"), policy).unwrap();
}

#[test]
fn migrate_all_policy_workdirs() {
    let sandbox = Sandbox::new();
    sandbox.init_file();
    let app_dir = sandbox.root.join("app");
    write_policy(&sandbox, &app_dir);
    std::fs::create_dir_all(app_dir.join("sub")).unwrap();
    std::fs::write(app_dir.join(".env"), "TOKEN=abc\n").unwrap();
    std::fs::write(app_dir.join("sub/.env.local"), "NESTED=1\n").unwrap();
    std::fs::write(app_dir.join(".env.example"), "TEMPLATE=x\n").unwrap();

    let output = sandbox.run(&["cred", "migrate", "--all"], None);
    assert_success(&output, "migrate --all");
    assert_eq!(sandbox.get_value("mysvc", "TOKEN"), "abc");
    assert_eq!(sandbox.get_value("mysvc", "NESTED"), "1");
    assert_eq!(
        sandbox.get("mysvc", "TEMPLATE").status.code(),
        Some(65),
        "templates are not imported"
    );
}

#[test]
fn preflight_reports_missing_and_plaintext() {
    let sandbox = Sandbox::new();
    sandbox.init_file();
    let app_dir = sandbox.root.join("app");
    write_policy(&sandbox, &app_dir);
    let output = sandbox.run(
        &[
            "cred",
            "store",
            "--service",
            "mysvc",
            "--key",
            "TOKEN",
            "--rotate-days",
            "0",
        ],
        Some(b"tok-value"),
    );
    assert_success(&output, "store");
    std::fs::write(app_dir.join(".env"), "LEFT_BEHIND=plain-secret\n").unwrap();
    std::fs::write(
        app_dir.join(".mcp.json"),
        r#"{"mcpServers":{"github":{"command":"gh-mcp","env":{"GITHUB_TOKEN":"ghp_inline","FROM_ENV":"${GITHUB_TOKEN}"}}}}"#,
    )
    .unwrap();
    std::thread::sleep(Duration::from_millis(20));

    let context = safe_exec::context::Context::new(
        Some(sandbox.vault.clone()),
        Some(sandbox.policies.clone()),
    );
    let policy =
        safe_exec::policy::load(&sandbox.policies, "myapp", &context.resolve_options()).unwrap();
    let findings = safe_exec::vault::preflight(&context, &policy);
    let find = |name: &str| {
        findings
            .iter()
            .find(|finding| finding.name == name)
            .unwrap_or_else(|| panic!("no {name} finding: {findings:?}"))
    };

    let credentials = find("credentials");
    assert_eq!(credentials.status, safe_exec::vault::Status::Fail);
    assert!(
        credentials.message.contains("MISSING_ONE"),
        "{}",
        credentials.message
    );

    let rotation = find("credential_rotation");
    assert_eq!(
        rotation.status,
        safe_exec::vault::Status::Fail,
        "rotation_overdue: fail"
    );
    assert!(rotation.message.contains("TOKEN"));

    let plaintext = find("plaintext_secrets");
    assert_eq!(
        plaintext.status,
        safe_exec::vault::Status::Warn,
        "plaintext_secrets: warn"
    );
    assert!(
        plaintext.message.contains(".env (LEFT_BEHIND)"),
        "{}",
        plaintext.message
    );
    assert!(
        plaintext
            .message
            .contains(".mcp.json (github/GITHUB_TOKEN)"),
        "{}",
        plaintext.message
    );
    assert!(
        !plaintext.message.contains("FROM_ENV"),
        "references are not secrets: {}",
        plaintext.message
    );
    for finding in &findings {
        assert!(
            !finding.message.contains("plain-secret")
                && !finding.message.contains("ghp_inline")
                && !finding.message.contains("tok-value")
        );
    }
}

#[test]
fn interrupted_rotation_states_recover() {
    let sandbox = Sandbox::new();
    sandbox.init_file();
    sandbox.store("rot", "KEY", "survives");
    let pending = sandbox.root.join("master.key.pending");
    let old_key = std::fs::read(sandbox.key_file()).unwrap();
    let old_vault = std::fs::read(sandbox.vault_file()).unwrap();
    assert_success(
        &sandbox.run(&["cred", "rotate-master-key"], None),
        "rotate-master-key",
    );
    let new_key = std::fs::read(sandbox.key_file()).unwrap();
    assert_ne!(old_key, new_key);

    // Killed after the vault file was rewritten, before the new key became current.
    std::fs::write(sandbox.key_file(), &old_key).unwrap();
    std::fs::write(&pending, &new_key).unwrap();
    assert_eq!(sandbox.get_value("rot", "KEY"), "survives");
    assert!(!pending.exists(), "the pending key is promoted");
    assert_eq!(std::fs::read(sandbox.key_file()).unwrap(), new_key);

    // Killed after the new key was written, before the vault file was rewritten.
    std::fs::write(sandbox.vault_file(), &old_vault).unwrap();
    std::fs::write(sandbox.key_file(), &old_key).unwrap();
    std::fs::write(&pending, &new_key).unwrap();
    assert_eq!(sandbox.get_value("rot", "KEY"), "survives");
    assert!(!pending.exists(), "the unused pending key is removed");
    assert_eq!(std::fs::read(sandbox.key_file()).unwrap(), old_key);
}

#[test]
fn audit_mac_key_survives_rotation() {
    let first = Sandbox::new();
    first.init_file();
    let second = Sandbox::new();
    second.init_file();
    let context = |sandbox: &Sandbox| {
        safe_exec::context::Context::new(
            Some(sandbox.vault.clone()),
            Some(sandbox.policies.clone()),
        )
    };

    let before = safe_exec::vault::audit_mac_key(&context(&first)).unwrap();
    assert_success(
        &first.run(&["cred", "rotate-master-key"], None),
        "rotate-master-key",
    );
    let other = safe_exec::vault::audit_mac_key(&context(&second)).unwrap();
    assert_ne!(*before, *other, "each vault has its own audit key");
    // The second call replaced the cached key, so this one derives it from disk again.
    let after = safe_exec::vault::audit_mac_key(&context(&first)).unwrap();
    assert_eq!(*before, *after);
}

#[test]
fn run_delivers_sentinel_through_pipe() {
    let sandbox = Sandbox::new();
    sandbox.init_file();
    let sentinel = "SENTINEL-run-5d1e";
    sandbox.store("demo", "API_TOKEN", sentinel);
    sandbox.store("demo", "LARGE", &"L".repeat(200_000));
    let app_dir = sandbox.root.join("app");
    std::fs::create_dir_all(&app_dir).unwrap();
    let python = ["/usr/bin/python3", "/usr/local/bin/python3"]
        .into_iter()
        .find(|path| Path::new(path).exists())
        .expect("python3");
    // The app parses the dotenv payload with the standard library, prints proof that it has the token, and waits for stdin to close.
    std::fs::write(
        app_dir.join("app.py"),
        "import os, sys\nfd = int(os.environ['SAFE_EXEC_CREDENTIALS_FD'])\nwith os.fdopen(fd) as pipe:\n    data = pipe.read()\nvalues = dict(line.split('=', 1) for line in data.splitlines())\nprint('token', values['API_TOKEN'].strip(\"'\")[::-1], len(values['LARGE']) - 2, flush=True)\nsys.stdin.read()\n",
    )
    .unwrap();
    let policy = format!(
        "version: 1\ncommand: [{python}, app.py]\nworkdir: {dir}\nfilesystem:\n  read: [{dir}]\ncredentials:\n  service: demo\n  keys: [API_TOKEN, LARGE]\nenforcement: best_effort\n",
        dir = app_dir.display()
    );
    std::fs::write(sandbox.policies.join("demo.yaml"), policy).unwrap();

    let mut command = sandbox.command(&["-vvvv", "run", "demo"]);
    command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = command.spawn().unwrap();
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    std::io::BufRead::read_line(&mut stdout, &mut line).unwrap();
    let reversed: String = sentinel.chars().rev().collect();
    assert_eq!(
        line.trim(),
        format!("token {reversed} 200000"),
        "the app got every byte"
    );

    // While the app runs, no environment or command line on the machine contains the value.
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        for file in ["environ", "cmdline"] {
            if let Ok(bytes) = std::fs::read(entry.path().join(file)) {
                assert!(
                    !contains(&bytes, sentinel.as_bytes()),
                    "{}/{file} contains the value",
                    entry.path().display()
                );
            }
        }
    }
    drop(child.stdin.take());
    let mut rest = Vec::new();
    stdout.read_to_end(&mut rest).unwrap();
    let mut stderr = Vec::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_end(&mut stderr)
        .unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "run failed: {}", text(&stderr));

    assert!(
        !contains(&stderr, sentinel.as_bytes()),
        "the most verbose log contains the value"
    );
    for path in files_under(&sandbox.vault) {
        assert!(
            !contains(&std::fs::read(&path).unwrap(), sentinel.as_bytes()),
            "{} contains the value",
            path.display()
        );
    }
    let audit = audit_text(&sandbox, "demo");
    assert_eq!(
        audit.matches("\"purpose\":\"delivery\"").count(),
        2,
        "{audit}"
    );
}

#[test]
fn missing_vault_exit_code() {
    let sandbox = Sandbox::new();
    let output = sandbox.get("svc", "KEY");
    assert_eq!(output.status.code(), Some(77));
    assert!(
        text(&output.stderr).contains("safe-exec init"),
        "{}",
        text(&output.stderr)
    );
    assert!(
        !sandbox.vault.exists(),
        "a failed command must not create the vault directory"
    );
}
