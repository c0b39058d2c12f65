//! `policy import`: a policy from an app directory's security-config.json.
#![allow(clippy::unwrap_used, clippy::expect_used)] // Test code: a panic is the failure report.

mod common;

use common::{TestEnv, code, stderr, stdout};

fn write_config(env: &TestEnv, json: &str) {
    std::fs::write(env.app.join("security-config.json"), json).unwrap();
}

#[test]
fn import_maps_known_keys() {
    let env = TestEnv::without_vault();
    std::fs::create_dir(env.app.join("out")).unwrap();
    write_config(
        &env,
        r#"{
            "description": "Tracks things",
            "entrypoint": "main.py",
            "allowed_paths": {"read": ["data"], "write": ["out"]},
            "rate_limits": {"docs": {"max_requests": 60, "period": "minute"}, "sms": "1/5m"},
            "credentials": {"service": "tracker", "keys": ["TOKEN"]},
            "log_level": "debug"
        }"#,
    );
    let output = env.run(&["policy", "import", env.app.to_str().unwrap()]);
    assert_eq!(code(&output), 0, "{}", stderr(&output));
    assert!(
        stderr(&output).contains("\"log_level\" is not imported"),
        "{}",
        stderr(&output)
    );

    let show = env.run(&["policy", "show", "app", "--json"]);
    assert_eq!(code(&show), 0, "{}", stderr(&show));
    let policy: serde_json::Value = serde_json::from_str(&stdout(&show)).unwrap();
    assert_eq!(
        policy["command"],
        serde_json::json!(["/usr/bin/python3", "main.py"])
    );
    assert_eq!(policy["description"], "Tracks things");
    assert_eq!(policy["credentials"]["service"], "tracker");
    assert_eq!(policy["rate_limits"]["docs"]["count"], 60);
    assert_eq!(policy["rate_limits"]["sms"]["period_seconds"], 300.0);
    let rules = policy["filesystem"]["rules"].as_array().unwrap();
    let out_rule = rules
        .iter()
        .find(|r| r["declared"].as_str().unwrap().ends_with("/out"))
        .expect("out rule");
    assert_eq!(out_rule["access"]["write"], true);

    let lint = env.run(&["policy", "lint"]);
    assert_eq!(code(&lint), 0, "{}", stdout(&lint));
}

#[test]
fn import_never_overwrites() {
    let env = TestEnv::without_vault();
    write_config(&env, r#"{"command": ["/bin/true"]}"#);
    env.policy("app", "version: 1\ncommand: [/bin/false]\n");
    let output = env.run(&["policy", "import", env.app.to_str().unwrap()]);
    assert_eq!(code(&output), 65);
    assert!(
        stderr(&output).contains("remove it first or use --stdout"),
        "{}",
        stderr(&output)
    );
    let kept = std::fs::read_to_string(env.policies.join("app.yaml")).unwrap();
    assert!(kept.contains("/bin/false"));
}

#[test]
fn import_rejects_bad_config() {
    let env = TestEnv::without_vault();
    for (json, fragment) in [
        ("[1, 2]", "expected a JSON object"),
        (
            "{\"command\": 5}",
            "\"command\" must be a string or a list of strings",
        ),
        (
            "{\"description\": \"no command\"}",
            "names no `command` or `entrypoint`",
        ),
        (
            "{\"command\": [\"x\"], \"rate_limits\": {\"b\": {\"max_requests\": 3}}}",
            "rate_limits.b",
        ),
        ("{not json", "invalid JSON"),
    ] {
        write_config(&env, json);
        let output = env.run(&["policy", "import", env.app.to_str().unwrap(), "--stdout"]);
        assert_eq!(code(&output), 65, "{json}: {}", stderr(&output));
        assert!(
            stderr(&output).contains(fragment),
            "{json}: {}",
            stderr(&output)
        );
    }
}
