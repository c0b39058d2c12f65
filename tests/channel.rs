//! The request channel through the real binary's hidden `test-channel-server`
//! command, which serves the channel to one command run without a sandbox.
//!
//! Clients are child processes of that server, as the app is a child of the
//! supervisor. Some clients are this test binary itself, started again with
//! one of the `client_*` tests selected: those are ignored in a normal run
//! and only do work when `SAFE_EXEC_SOCKET` is set.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is the failure report.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod rate_support;

const BIN: &str = env!("CARGO_BIN_EXE_safe-exec");
const CLOCK: &str = "boot-test:1000:1800000000";

const POLICY: &str = r#"version: 1
command: [/bin/true]
rate_limits:
  hundred: 100/hour
  api: 10/minute
  email_send: 5/hour
email:
  thresholds: { 1: 0.9 }
  off_limits: ["*@lawfirm.example"]
"#;

struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("policies")).unwrap();
        std::fs::write(dir.path().join("policies/demo.yaml"), POLICY).unwrap();
        rate_support::init_vault(
            BIN,
            &dir.path().join("vault"),
            &dir.path().join("master.key"),
        );
        Self { dir }
    }

    fn socket(&self) -> PathBuf {
        self.dir.path().join("run/request.sock")
    }

    /// Serves the channel to `command` and returns its output once it exits.
    fn serve(&self, extra: &[&str], command: &[&str], env: &[(&str, &str)]) -> Output {
        std::fs::create_dir_all(self.dir.path().join("run")).unwrap();
        let mut server = Command::new(BIN);
        server
            .args(["test-channel-server", "--app", "demo", "--socket"])
            .arg(self.socket())
            .args(extra)
            .arg("--vault")
            .arg(self.dir.path().join("vault"))
            .arg("--policy-dir")
            .arg(self.dir.path().join("policies"))
            .arg("--")
            .args(command)
            .env("SAFE_EXEC_TEST_CLOCK", CLOCK)
            .env("SAFE_EXEC_BIN", BIN)
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        for (key, value) in env {
            server.env(key, value);
        }
        run_bounded(server)
    }

    fn audit_records(&self) -> Vec<Value> {
        rate_support::audit_records(&self.dir.path().join("vault"), "demo")
    }
}

fn run_bounded(mut command: Command) -> Output {
    let mut child = command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > Duration::from_secs(180) {
            child.kill().unwrap();
            panic!("command did not finish within three minutes: {command:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

/// Returns the command line that runs one of the `client_*` tests of this binary.
fn self_client(name: &str) -> Vec<String> {
    let exe = std::env::current_exe().unwrap();
    vec![
        exe.display().to_string(),
        name.to_owned(),
        "--exact".into(),
        "--ignored".into(),
        "--nocapture".into(),
    ]
}

fn assert_success(output: &Output) {
    assert_eq!(
        output.status.code(),
        Some(0),
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn eight_clients_grant_exactly_100() {
    let setup = Setup::new();
    let script = r#"
        for worker in 1 2 3 4 5 6 7 8; do
            (
                for attempt in $(seq 20); do
                    "$SAFE_EXEC_BIN" client rate acquire hundred >/dev/null 2>&1
                    echo $?
                done > "codes.$worker"
            ) &
        done
        wait
    "#;
    let output = setup.serve(&[], &["/bin/sh", "-c", script], &[]);
    assert_success(&output);
    let mut granted = 0;
    let mut denied = 0;
    for worker in 1..=8 {
        let codes =
            std::fs::read_to_string(setup.dir.path().join(format!("codes.{worker}"))).unwrap();
        for code in codes.lines() {
            match code {
                "0" => granted += 1,
                "75" => denied += 1,
                other => panic!("unexpected exit code {other}"),
            }
        }
    }
    assert_eq!(granted, 100);
    assert_eq!(denied, 60);
    assert!(
        !setup.socket().exists(),
        "the socket is removed when the server stops"
    );
}

#[test]
fn client_exit_codes() {
    let setup = Setup::new();
    let script = r#"
        c() { "$SAFE_EXEC_BIN" client "$@" >/dev/null 2>&1; echo $?; }
        {
            c rate acquire api --cost 10
            c rate acquire api
            c rate acquire api --cost 11
            c rate acquire missing
            c audit SMS_SENT --detail to=+15550100
            c audit RUN_END
            c guard email --to a@example.org --subject Hi --tier 1 --confidence 0.95
            c guard email --to a@lawfirm.example --subject Hi --tier 1 --confidence 0.95
        } > codes
    "#;
    let output = setup.serve(&[], &["/bin/sh", "-c", script], &[]);
    assert_success(&output);
    let codes = std::fs::read_to_string(setup.dir.path().join("codes")).unwrap();
    let codes: Vec<&str> = codes.lines().collect();
    assert_eq!(codes, ["0", "75", "65", "65", "0", "65", "0", "77"]);

    let records = setup.audit_records();
    let sms = records
        .iter()
        .find(|record| record["event"] == "SMS_SENT")
        .unwrap();
    assert_eq!(sms["actor"], "app");
    assert_eq!(sms["app"], "demo");
    assert_eq!(sms["run_id"], "test-run");
    assert_eq!(sms["details"]["to"], "+15550100");
    assert!(!records.iter().any(|record| record["event"] == "RUN_END"));
    assert!(
        records
            .iter()
            .any(|record| record["event"] == "API_RATE_LIMIT"
                && record["details"]["source"] == "channel")
    );
    assert!(
        records
            .iter()
            .any(|record| record["event"] == "EMAIL_BLOCKED")
    );
}

#[test]
fn client_outside_a_run_is_usage_error() {
    let output = Command::new(BIN)
        .args(["client", "rate", "acquire", "api"])
        .env_remove("SAFE_EXEC_SOCKET")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&output.stderr).contains("SAFE_EXEC_SOCKET"));
}

#[test]
fn process_outside_the_run_is_refused() {
    let setup = Setup::new();
    let socket = setup.socket();
    let done = setup.dir.path().join("done");
    let outsider = {
        let done = done.clone();
        std::thread::spawn(move || {
            let started = Instant::now();
            while !socket.exists() {
                assert!(
                    started.elapsed() < Duration::from_secs(60),
                    "the socket never appeared"
                );
                std::thread::sleep(Duration::from_millis(20));
            }
            let mut stream = UnixStream::connect(&socket).unwrap();
            stream
                .set_read_timeout(Some(Duration::from_secs(30)))
                .unwrap();
            let _ = stream.write_all(b"{\"op\":\"acquire\",\"bucket\":\"hundred\"}\n");
            let mut reply = String::new();
            let _ = BufReader::new(&stream).read_line(&mut reply);
            std::fs::write(&done, "").unwrap();
            reply
        })
    };
    let output = setup.serve(
        &[],
        &["/bin/sh", "-c", "while [ ! -e done ]; do sleep 0.05; done"],
        &[],
    );
    assert_success(&output);
    let reply: Value = serde_json::from_str(&outsider.join().unwrap()).unwrap();
    assert_eq!(reply["ok"], false);
    assert_eq!(reply["error"]["code"], "refused");
    assert!(
        setup
            .audit_records()
            .iter()
            .all(|record| record["event"] != "API_RATE_LIMIT")
    );
}

#[test]
fn protocol_errors_get_replies() {
    let setup = Setup::new();
    let output = setup.serve(
        &[],
        &self_client("client_protocol_errors")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        &[],
    );
    assert_success(&output);
    let records = setup.audit_records();
    let event = records
        .iter()
        .find(|record| record["event"] == "API_CALL")
        .unwrap();
    assert_eq!(event["actor"], "app");
    assert_eq!(event["app"], "demo", "the app cannot choose the app field");
    assert_eq!(event["details"]["app"], "someone-else");
}

#[test]
fn flood_is_throttled() {
    let setup = Setup::new();
    let output = setup.serve(
        &[],
        &self_client("client_flood")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        &[],
    );
    assert_success(&output);
    let app_records = setup
        .audit_records()
        .iter()
        .filter(|record| record["actor"] == "app")
        .count();
    assert!(app_records > 0);
    assert!(
        app_records < 3000,
        "{app_records} of 3000 flooded events were recorded"
    );
}

#[test]
fn fuzzed_frames_are_answered_or_dropped() {
    let setup = Setup::new();
    let output = setup.serve(
        &["--requests-per-second", "1000000"],
        &self_client("client_fuzz")
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>(),
        &[("CHANNEL_FUZZ_SECONDS", "3")],
    );
    assert_success(&output);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("fuzz frames:"), "{stdout}");
}

// The clients below run inside `test-channel-server`.

fn connect() -> Option<(UnixStream, BufReader<UnixStream>)> {
    let path = std::env::var_os("SAFE_EXEC_SOCKET")?;
    let stream = UnixStream::connect(Path::new(&path)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let reader = BufReader::new(stream.try_clone().unwrap());
    Some((stream, reader))
}

fn exchange(stream: &mut UnixStream, reader: &mut BufReader<UnixStream>, line: &[u8]) -> Value {
    stream.write_all(line).unwrap();
    let mut reply = String::new();
    reader.read_line(&mut reply).unwrap();
    serde_json::from_str(&reply).unwrap_or_else(|err| panic!("invalid reply {reply:?}: {err}"))
}

fn error_code(reply: &Value) -> &str {
    assert_eq!(reply["ok"], false, "{reply}");
    reply["error"]["code"].as_str().unwrap()
}

#[test]
#[ignore = "runs as a client inside the channel tests"]
fn client_protocol_errors() {
    let Some((mut stream, mut reader)) = connect() else {
        return;
    };
    let cases: &[(&[u8], &str)] = &[
        (b"not json\n", "malformed"),
        (b"[1,2,3]\n", "malformed"),
        (b"{\"op\":\"reset\"}\n", "malformed"),
        (b"{\"op\":\"acquire\"}\n", "malformed"),
        (
            b"{\"op\":\"acquire\",\"bucket\":\"api\",\"extra\":1}\n",
            "malformed",
        ),
        (
            b"{\"op\":\"acquire\",\"bucket\":\"api\",\"cost\":-1}\n",
            "malformed",
        ),
        (
            b"{\"op\":\"acquire\",\"bucket\":\"api\",\"cost\":0}\n",
            "invalid",
        ),
        (
            b"{\"op\":\"acquire\",\"bucket\":\"api\",\"cost\":11}\n",
            "impossible",
        ),
        (b"{\"op\":\"acquire\",\"bucket\":\"nope\"}\n", "impossible"),
        (b"{\"op\":\"audit\",\"event\":\"RUN_START\"}\n", "invalid"),
        (
            b"{\"op\":\"audit\",\"event\":\"API_CALL\",\"level\":\"LOUD\"}\n",
            "invalid",
        ),
        (
            b"{\"op\":\"guard_email\",\"to\":[],\"subject\":\"x\",\"tier\":1,\"confidence\":0.9}\n",
            "invalid",
        ),
        (b"\xff\xfe\n", "malformed"),
    ];
    for (line, expected) in cases {
        let reply = exchange(&mut stream, &mut reader, line);
        assert_eq!(
            error_code(&reply),
            *expected,
            "request {:?}",
            String::from_utf8_lossy(line)
        );
    }

    let mut huge = vec![b'a'; 100 * 1024];
    huge.push(b'\n');
    assert_eq!(
        error_code(&exchange(&mut stream, &mut reader, &huge)),
        "too_large"
    );

    let details = json!({ "op": "audit", "event": "API_CALL", "details": { "app": "someone-else", "endpoint": "/v1/x" } });
    let reply = exchange(&mut stream, &mut reader, format!("{details}\n").as_bytes());
    assert_eq!(reply["ok"], true, "{reply}");

    // Pipelined requests on one connection come back in order with their ids.
    stream.write_all(b"{\"id\":\"a\",\"op\":\"ping\"}\n{\"id\":\"b\",\"op\":\"acquire\",\"bucket\":\"api\"}\n").unwrap();
    for expected in ["a", "b"] {
        let mut reply = String::new();
        reader.read_line(&mut reply).unwrap();
        let reply: Value = serde_json::from_str(&reply).unwrap();
        assert_eq!(reply["id"], expected);
        assert_eq!(reply["ok"], true);
    }
}

#[test]
#[ignore = "runs as a client inside the channel tests"]
fn client_flood() {
    let Some((mut stream, reader)) = connect() else {
        return;
    };
    let counter = std::thread::spawn(move || {
        let mut throttled = 0;
        let mut recorded = 0;
        for line in reader.lines().take(3000) {
            let reply: Value = serde_json::from_str(&line.unwrap()).unwrap();
            if reply["ok"] == true {
                recorded += 1;
            } else {
                assert_eq!(reply["error"]["code"], "throttled", "{reply}");
                assert!(reply["error"]["retry_after_seconds"].as_f64().unwrap() > 0.0);
                throttled += 1;
            }
        }
        (recorded, throttled)
    });
    let line = b"{\"op\":\"audit\",\"event\":\"API_CALL\",\"details\":{\"n\":1}}\n";
    for _ in 0..3000 {
        stream.write_all(line).unwrap();
    }
    let (recorded, throttled) = counter.join().unwrap();
    assert!(
        throttled > 0,
        "no request was throttled ({recorded} recorded)"
    );
    assert_eq!(recorded + throttled, 3000);
}

/// A small xorshift generator, so the fuzzer needs no extra crate.
struct Random(u64);

impl Random {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, bound: usize) -> usize {
        (self.next() % bound as u64) as usize
    }
}

const VALID: &[&str] = &[
    r#"{"op":"ping","id":1}"#,
    r#"{"op":"acquire","bucket":"api","cost":1}"#,
    r#"{"op":"acquire","bucket":"hundred"}"#,
    r#"{"op":"audit","event":"API_CALL","details":{"k":"v"}}"#,
    r#"{"op":"guard_email","to":["a@example.org"],"cc":["b@lawfirm.example"],"subject":"Hi","body":"pay now http://10.0.0.1/","tier":1,"confidence":0.95}"#,
];

#[test]
#[ignore = "runs as a client inside the channel tests"]
fn client_fuzz() {
    let Some((mut stream, mut reader)) = connect() else {
        return;
    };
    let seconds: u64 = std::env::var("CHANNEL_FUZZ_SECONDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(3);
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("fuzz seed: {seed}");
    let mut random = Random(seed);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let (mut frames, mut answered, mut dropped) = (0u64, 0u64, 0u64);

    while Instant::now() < deadline {
        frames += 1;
        let template = VALID[random.below(VALID.len())].as_bytes();
        let mut frame: Vec<u8> = match random.below(5) {
            0 => (0..random.below(300))
                .map(|_| (random.next() & 0xff) as u8)
                .collect(),
            1 => template[..random.below(template.len())].to_vec(),
            2 => {
                let mut mutated = template.to_vec();
                for _ in 0..1 + random.below(4) {
                    let index = random.below(mutated.len());
                    mutated[index] = (random.next() & 0xff) as u8;
                }
                mutated
            }
            3 => vec![b'{'; 64 * 1024 + random.below(2048)],
            _ => template.to_vec(),
        };
        frame.retain(|&byte| byte != b'\n');

        if random.below(10) == 0 {
            // A truncated frame and a closed connection: the server drops it.
            stream.write_all(&frame).unwrap();
            drop(stream);
            (stream, reader) = connect().unwrap();
            dropped += 1;
            continue;
        }
        frame.push(b'\n');
        stream.write_all(&frame).unwrap();
        if frame.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let mut reply = String::new();
        reader.read_line(&mut reply).unwrap();
        let reply: Value = serde_json::from_str(&reply)
            .unwrap_or_else(|err| panic!("invalid reply {reply:?}: {err}"));
        assert!(reply["ok"].is_boolean(), "{reply}");
        answered += 1;
    }

    // The server still serves: a ping succeeds once any throttling has passed.
    let mut reply = exchange(&mut stream, &mut reader, b"{\"op\":\"ping\"}\n");
    for _ in 0..100 {
        if reply["ok"] == true {
            break;
        }
        assert_eq!(reply["error"]["code"], "throttled", "{reply}");
        std::thread::sleep(Duration::from_secs_f64(
            reply["error"]["retry_after_seconds"]
                .as_f64()
                .unwrap()
                .min(1.0),
        ));
        reply = exchange(&mut stream, &mut reader, b"{\"op\":\"ping\"}\n");
    }
    assert_eq!(reply["ok"], true, "{reply}");
    let mut rest = Vec::new();
    stream.shutdown(std::net::Shutdown::Write).unwrap();
    reader.read_to_end(&mut rest).unwrap();
    println!("fuzz frames: {frames}, answered: {answered}, dropped with the connection: {dropped}");
}

// Through a real sandboxed run: the app is confined by Landlock and seccomp,
// and reaches the rate limits and the audit log only through the channel.

/// A directory with a policy for `safe-exec run`: the app's workdir, an
/// output directory it may write, and a copy of the binary it may execute.
struct Sandboxed {
    dir: tempfile::TempDir,
}

impl Sandboxed {
    fn new(command: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for sub in ["policies", "app", "out", "bin"] {
            std::fs::create_dir(root.join(sub)).unwrap();
        }
        std::fs::copy(BIN, root.join("bin/safe-exec")).unwrap();
        let policy = format!(
            r#"version: 1
command: [/bin/sh, -c, {command:?}]
workdir: {app}
env:
  inherit: [PATH]
  set: {{ PATH: "{bin}:/usr/bin:/bin", VAULT: "{vault}", OUT: "{out}", POLICIES: "{policies}" }}
filesystem:
  system: true
  read: [{app}]
  write: [{out}]
  exec: [{bin}]
rate_limits:
  hundred: 100/hour
  api: 10/minute
"#,
            app = root.join("app").display(),
            out = root.join("out").display(),
            bin = root.join("bin").display(),
            vault = root.join("vault").display(),
            policies = root.join("policies").display(),
        );
        std::fs::write(root.join("policies/demo.yaml"), policy).unwrap();
        rate_support::init_vault(BIN, &root.join("vault"), &root.join("master.key"));
        Self { dir }
    }

    fn path(&self, sub: &str) -> PathBuf {
        self.dir.path().join(sub)
    }

    /// Adds `key=value` to the app's environment in the policy.
    fn set_env(&self, key: &str, value: &str) {
        let file = self.path("policies/demo.yaml");
        let policy = std::fs::read_to_string(&file).unwrap();
        std::fs::write(
            &file,
            policy.replace("POLICIES:", &format!("{key}: {value:?}, POLICIES:")),
        )
        .unwrap();
    }

    fn safe_exec(&self, args: &[&str]) -> Command {
        let mut command = Command::new(BIN);
        command
            .args(args)
            .arg("--vault")
            .arg(self.path("vault"))
            .arg("--policy-dir")
            .arg(self.path("policies"))
            .env("SAFE_EXEC_TEST_CLOCK", CLOCK)
            .env_remove("SAFE_EXEC_SOCKET")
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        command
    }

    /// Runs the app; returns `None` (after printing why) when this kernel
    /// cannot enforce the sandbox, unless `SAFE_EXEC_REQUIRE_SANDBOX` is set.
    fn run(&self) -> Option<Output> {
        let output = run_bounded(self.safe_exec(&["run", "demo"]));
        let stderr = String::from_utf8_lossy(&output.stderr);
        if rate_support::sandbox_unavailable(&output) {
            assert!(
                std::env::var_os("SAFE_EXEC_REQUIRE_SANDBOX").is_none(),
                "sandbox required but not enforceable: {stderr}"
            );
            eprintln!("skipped: this kernel cannot enforce the sandbox: {stderr}");
            return None;
        }
        Some(output)
    }

    fn read_out(&self, name: &str) -> String {
        std::fs::read_to_string(self.path("out").join(name))
            .unwrap_or_else(|err| panic!("out/{name}: {err}"))
    }
}

#[test]
fn sandboxed_eight_clients_grant_exactly_100() {
    let script = r#"
        for worker in 1 2 3 4 5 6 7 8; do
            (
                for attempt in $(seq 20); do
                    safe-exec client rate acquire hundred >/dev/null 2>&1
                    echo $?
                done > "$OUT/codes.$worker"
            ) &
        done
        wait
    "#;
    let setup = Sandboxed::new(script);
    let Some(output) = setup.run() else { return };
    assert_success(&output);
    let mut granted = 0;
    let mut denied = 0;
    for worker in 1..=8 {
        for code in setup.read_out(&format!("codes.{worker}")).lines() {
            match code {
                "0" => granted += 1,
                "75" => denied += 1,
                other => panic!("unexpected exit code {other}"),
            }
        }
    }
    assert_eq!(granted, 100);
    assert_eq!(denied, 60);

    let status = run_bounded(setup.safe_exec(&["rate", "status", "--app", "demo", "--json"]));
    let status: Value = serde_json::from_slice(&status.stdout).unwrap();
    let hundred = status["buckets"]
        .as_array()
        .unwrap()
        .iter()
        .find(|row| row["bucket"] == "hundred")
        .unwrap()
        .clone();
    assert_eq!(hundred["tokens"], 0.0);
}

#[test]
fn sandboxed_app_cannot_touch_state_or_log() {
    let script = r#"
        S="$VAULT/ratelimits"; A="$(dirname "$LOG")"
        try() { name="$1"; shift; if "$@" >/dev/null 2>&1; then echo "$name allowed"; else echo "$name denied"; fi; }
        {
            try read-state cat "$S/demo.json"
            try write-state sh -c "echo '{}' > '$S/demo.json'"
            try append-state sh -c "echo x >> '$S/demo.json'"
            try rename-state mv "$S/demo.json" "$S/moved.json"
            try unlink-state rm -f "$S/demo.json"
            try unlink-lock rm -f "$S/demo.lock"
            try create-in-state sh -c "echo x > '$S/new.json'"
            try link-state ln "$S/demo.json" "$OUT/linked.json"
            try list-state ls "$S"
            try read-log cat "$LOG"
            try append-log sh -c "echo forged >> '$LOG'"
            try rename-log mv "$LOG" "$LOG.moved"
            try unlink-log rm -f "$LOG"
            try list-log ls "$A"
            try rate-reset safe-exec rate reset --app demo --yes --vault "$VAULT" --policy-dir "$POLICIES"
            try rate-reset-no-env env -u SAFE_EXEC_SOCKET safe-exec rate reset --app demo --yes --vault "$VAULT" --policy-dir "$POLICIES"
            try rate-acquire-direct env -u SAFE_EXEC_SOCKET safe-exec rate acquire --app demo --bucket api --vault "$VAULT" --policy-dir "$POLICIES"
            try channel-acquire safe-exec client rate acquire api
        } > "$OUT/results"
    "#;
    let setup = Sandboxed::new(script);
    let drained = run_bounded(setup.safe_exec(&[
        "rate", "acquire", "--app", "demo", "--bucket", "api", "--cost", "10",
    ]));
    assert_success(&drained);
    let denied =
        run_bounded(setup.safe_exec(&["rate", "acquire", "--app", "demo", "--bucket", "api"]));
    assert_eq!(
        denied.status.code(),
        Some(75),
        "a denial writes the first audit record"
    );
    let state_before = std::fs::read(setup.path("vault/ratelimits/demo.json")).unwrap();
    let log = rate_support::audit_files(&setup.path("vault"))
        .into_iter()
        .find(|path| path.to_string_lossy().contains("demo"))
        .expect("the denial was audited");
    setup.set_env("LOG", &log.display().to_string());

    let Some(output) = setup.run() else { return };
    assert_success(&output);
    let results = setup.read_out("results");
    let expected = [
        "read-state denied",
        "write-state denied",
        "append-state denied",
        "rename-state denied",
        "unlink-state denied",
        "unlink-lock denied",
        "create-in-state denied",
        "link-state denied",
        "list-state denied",
        "read-log denied",
        "append-log denied",
        "rename-log denied",
        "unlink-log denied",
        "list-log denied",
        "rate-reset denied",
        "rate-reset-no-env denied",
        "rate-acquire-direct denied",
        "channel-acquire denied",
    ];
    assert_eq!(results.lines().collect::<Vec<_>>(), expected);

    assert_eq!(
        std::fs::read(setup.path("vault/ratelimits/demo.json")).unwrap(),
        state_before,
        "the state is unchanged"
    );
    assert!(setup.path("vault/ratelimits/demo.lock").exists());
    let log = rate_support::audit_text(&setup.path("vault"), "demo");
    assert!(
        log.lines().all(|line| line.starts_with('{')),
        "a line the app appended:\n{log}"
    );
    assert!(log.contains("\"event\":\"RUN_END\""));
    assert!(
        log.contains("\"source\":\"channel\""),
        "the channel's denial is audited"
    );
}

#[test]
fn sandboxed_fuzzing_leaves_the_run_intact() {
    let client = std::env::current_exe().unwrap();
    let setup = Sandboxed::new("exec channel-client client_fuzz --exact --ignored --nocapture");
    std::fs::copy(&client, setup.path("bin/channel-client")).unwrap();
    setup.set_env("CHANNEL_FUZZ_SECONDS", "3");

    let Some(output) = setup.run() else { return };
    assert_success(&output);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("fuzz frames:"), "{stdout}");
    let log = rate_support::audit_text(&setup.path("vault"), "demo");
    assert!(log.contains("\"event\":\"RUN_END\""));
    assert!(log.contains("\"event\":\"CLEANUP\""));
}
