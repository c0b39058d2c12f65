//! `policy import`: a starting policy from an app directory's `security-config.json`.
//!
//! The importer reads the keys listed in `import_config` and maps each onto the
//! policy schema. Every key it does not know is listed in a warning rather than
//! dropped silently, and the result is parsed and resolved like any policy
//! before it is written, so an import never produces a policy that fails lint.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use serde_json::{Map, Value, json};

use crate::commands::{Failure, Outcome};
use crate::context::Context;
use crate::exit::Code;
use crate::policy;

/// Name of the configuration file read from the app directory.
pub const CONFIG_FILE: &str = "security-config.json";

/// Writes (or prints) a policy generated from `app_dir/security-config.json`.
pub fn import(context: &Context, app_dir: &Path, to_stdout: bool) -> Outcome {
    let app_dir = std::fs::canonicalize(app_dir).map_err(|err| {
        Failure::new(
            Code::DataErr,
            format!("cannot open app directory {}: {err}", app_dir.display()),
        )
    })?;
    let app = app_dir
        .file_name()
        .and_then(|name| name.to_str())
        .unwrap_or_default()
        .to_owned();
    let config_path = app_dir.join(CONFIG_FILE);
    let text = std::fs::read_to_string(&config_path).map_err(|err| {
        Failure::new(
            Code::DataErr,
            format!(
                "failed to read {}: {err}; `policy import` needs that file",
                config_path.display()
            ),
        )
    })?;
    let config: Value = serde_json::from_str(&text).map_err(|err| {
        Failure::new(
            Code::DataErr,
            format!("{}: invalid JSON: {err}", config_path.display()),
        )
    })?;
    let Value::Object(config) = config else {
        return Err(Failure::new(
            Code::DataErr,
            format!(
                "{}: expected a JSON object at the top",
                config_path.display()
            ),
        ));
    };

    let (policy_value, skipped) = import_config(&app_dir, &config)?;
    for key in &skipped {
        eprintln!(
            "safe-exec: warning: {}: key {key:?} is not imported; add its rule to the policy by hand",
            config_path.display()
        );
    }
    let yaml = render(&policy_value, &config_path)?;

    let target = policy::policy_file(&context.policy_dir, &app)?;
    let raw = policy::parse_text(&target, &yaml)?;
    policy::resolve::resolve(&app, &target, raw, &context.resolve_options())?;

    if to_stdout {
        print!("{yaml}");
        return Ok(0);
    }
    std::fs::create_dir_all(&context.policy_dir).map_err(|err| {
        Failure::new(
            Code::DataErr,
            format!("cannot create {}: {err}", context.policy_dir.display()),
        )
    })?;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&target)
        .map_err(|err| {
            Failure::new(
                Code::DataErr,
                format!(
                    "cannot create {}: {err}; remove it first or use --stdout",
                    target.display()
                ),
            )
        })?;
    file.write_all(yaml.as_bytes()).map_err(|err| {
        Failure::new(
            Code::DataErr,
            format!("failed to write {}: {err}", target.display()),
        )
    })?;
    println!(
        "Wrote {}; review it, then run `safe-exec policy lint {}`.",
        target.display(),
        target.display()
    );
    Ok(0)
}

/// Maps the known keys of `config` onto a policy document; returns it with the keys not imported.
fn import_config(
    app_dir: &Path,
    config: &Map<String, Value>,
) -> Result<(Value, Vec<String>), Failure> {
    let mut policy = Map::new();
    let mut skipped = Vec::new();
    policy.insert("version".into(), json!(1));
    policy.insert("workdir".into(), json!(app_dir));
    let mut filesystem = Map::new();
    filesystem.insert("read".into(), json!([app_dir]));

    for (key, value) in config {
        match key.as_str() {
            "description" | "name" | "app_name" if value.is_string() => {
                if key == "description" {
                    policy.insert("description".into(), value.clone());
                }
            }
            "command" => policy
                .insert("command".into(), string_list(key, value)?)
                .map_or((), drop),
            "entrypoint" => policy
                .insert("command".into(), entrypoint_command(value)?)
                .map_or((), drop),
            "allowed_paths" | "filesystem" => merge_paths(&mut filesystem, app_dir, key, value)?,
            "network" => {
                policy.insert("network".into(), network(value)?);
            }
            "rate_limits" => {
                policy.insert("rate_limits".into(), rate_limits(value)?);
            }
            "credentials" | "required_credentials" => {
                policy.insert("credentials".into(), credentials(app_dir, key, value)?);
            }
            "email" => {
                policy.insert("email".into(), email(value)?);
            }
            "timeout" => {
                policy.insert("limits".into(), json!({ "timeout": value }));
            }
            _ => skipped.push(key.clone()),
        }
    }
    if !policy.contains_key("command") {
        return Err(Failure::new(
            Code::DataErr,
            format!(
                "{CONFIG_FILE} names no `command` or `entrypoint`; add one so the policy knows what to run"
            ),
        ));
    }
    let write = filesystem.entry("write").or_insert_with(|| json!([]));
    if let Value::Array(paths) = write {
        paths.push(json!("{tmp}"));
    }
    policy.insert("filesystem".into(), Value::Object(filesystem));
    Ok((Value::Object(policy), skipped))
}

fn invalid(key: &str, expected: &str) -> Failure {
    Failure::new(
        Code::DataErr,
        format!("{CONFIG_FILE}: key {key:?} must be {expected}"),
    )
}

fn string_list(key: &str, value: &Value) -> Result<Value, Failure> {
    match value {
        Value::Array(items) if items.iter().all(Value::is_string) => Ok(value.clone()),
        Value::String(text) => Ok(json!([text])),
        _ => Err(invalid(key, "a string or a list of strings")),
    }
}

fn entrypoint_command(value: &Value) -> Result<Value, Failure> {
    let Some(entry) = value.as_str() else {
        return Err(invalid("entrypoint", "a file name such as main.py"));
    };
    let command = match Path::new(entry).extension().and_then(|ext| ext.to_str()) {
        Some("py") => json!(["/usr/bin/python3", entry]),
        Some("js" | "mjs") => json!(["/usr/bin/node", entry]),
        _ => json!([format!("./{entry}")]),
    };
    Ok(command)
}

/// Adds the path lists of `value` to `filesystem`; relative paths are relative to the app directory.
fn merge_paths(
    filesystem: &mut Map<String, Value>,
    app_dir: &Path,
    key: &str,
    value: &Value,
) -> Result<(), Failure> {
    let lists: Vec<(&str, &Value)> = match value {
        Value::Array(_) => vec![("read", value)],
        Value::Object(map) => map.iter().map(|(k, v)| (k.as_str(), v)).collect(),
        _ => {
            return Err(invalid(
                key,
                "a list of paths or an object with read, write and exec lists",
            ));
        }
    };
    for (access, paths) in lists {
        if !matches!(access, "read" | "write" | "exec") {
            return Err(invalid(
                &format!("{key}.{access}"),
                "one of read, write or exec",
            ));
        }
        let paths = string_list(&format!("{key}.{access}"), paths)?;
        let paths: Vec<Value> = paths
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .map(|path| {
                if path.starts_with('/') || path.starts_with('~') {
                    json!(path)
                } else {
                    json!(app_dir.join(path))
                }
            })
            .collect();
        let paths = Value::Array(paths);
        let entry = filesystem
            .entry(access.to_owned())
            .or_insert_with(|| json!([]));
        if let (Value::Array(existing), Value::Array(new)) = (entry, paths) {
            existing.extend(new);
        }
    }
    Ok(())
}

/// Imports a host allowlist as `mode: open` with the listed ports, since
/// `mode: proxy` is not supported yet. A warning states this.
fn network(value: &Value) -> Result<Value, Failure> {
    let Value::Object(map) = value else {
        return Err(invalid("network", "an object"));
    };
    let hosts: Vec<&str> = ["allowed_hosts", "allowed_domains", "allow"]
        .iter()
        .filter_map(|key| map.get(*key))
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    if hosts.is_empty() && map.get("enabled").is_none_or(|enabled| enabled == false) {
        return Ok(json!({ "mode": "none" }));
    }
    let mut ports: Vec<u16> = hosts
        .iter()
        .filter_map(|host| {
            host.rsplit_once(':')
                .and_then(|(_, port)| port.parse().ok())
        })
        .collect();
    if ports.is_empty() {
        ports.push(443);
    }
    ports.sort_unstable();
    ports.dedup();
    if !hosts.is_empty() {
        eprintln!(
            "safe-exec: warning: the host allowlist {hosts:?} is imported as `network.mode: open` with TCP ports {ports:?}, \
             because host rules (mode proxy) are not supported yet"
        );
    }
    Ok(json!({ "mode": "open", "tcp_connect": ports }))
}

fn rate_limits(value: &Value) -> Result<Value, Failure> {
    let Value::Object(map) = value else {
        return Err(invalid("rate_limits", "an object of bucket name to limit"));
    };
    let mut out = Map::new();
    for (bucket, limit) in map {
        let rate = match limit {
            Value::String(text) => text.clone(),
            Value::Object(spec) => {
                let count = ["max_requests", "limit", "count", "calls"]
                    .iter()
                    .find_map(|k| spec.get(*k))
                    .and_then(Value::as_u64);
                let period = ["period", "window", "per"]
                    .iter()
                    .find_map(|k| spec.get(*k));
                let period = match period {
                    Some(Value::String(text)) => text.clone(),
                    Some(Value::Number(seconds)) => format!("{seconds}s"),
                    _ => String::new(),
                };
                match count {
                    Some(count) if !period.is_empty() => format!("{count}/{period}"),
                    _ => {
                        return Err(invalid(
                            &format!("rate_limits.{bucket}"),
                            "\"COUNT/PERIOD\" or {\"max_requests\": N, \"period\": \"hour\"}",
                        ));
                    }
                }
            }
            _ => {
                return Err(invalid(
                    &format!("rate_limits.{bucket}"),
                    "\"COUNT/PERIOD\" or an object",
                ));
            }
        };
        out.insert(bucket.clone(), Value::String(rate));
    }
    Ok(Value::Object(out))
}

fn credentials(app_dir: &Path, key: &str, value: &Value) -> Result<Value, Failure> {
    let app = app_dir
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("app");
    match value {
        Value::Array(_) => Ok(json!({ "service": app, "keys": string_list(key, value)? })),
        Value::Object(map) => {
            let service = map.get("service").and_then(Value::as_str).unwrap_or(app);
            let keys = map
                .get("keys")
                .map(|v| string_list("credentials.keys", v))
                .transpose()?
                .unwrap_or_else(|| json!([]));
            let optional = map
                .get("optional")
                .map(|v| string_list("credentials.optional", v))
                .transpose()?
                .unwrap_or_else(|| json!([]));
            Ok(json!({ "service": service, "keys": keys, "optional": optional }))
        }
        _ => Err(invalid(
            key,
            "a list of key names or an object with service and keys",
        )),
    }
}

fn email(value: &Value) -> Result<Value, Failure> {
    let Value::Object(map) = value else {
        return Err(invalid("email", "an object"));
    };
    let mut out = Map::new();
    for (key, item) in map {
        let target = match key.as_str() {
            "thresholds" | "confidence_thresholds" => "thresholds",
            "off_limits" | "off_limits_contacts" | "blocked_recipients" => "off_limits",
            "suspicious_patterns" => "suspicious_patterns",
            _ => {
                eprintln!("safe-exec: warning: {CONFIG_FILE}: key \"email.{key}\" is not imported");
                continue;
            }
        };
        out.insert(target.into(), item.clone());
    }
    Ok(Value::Object(out))
}

/// Renders the policy as YAML with a header naming its source.
fn render(policy: &Value, source: &Path) -> Result<String, Failure> {
    let body = serde_saphyr::to_string(policy).map_err(|err| {
        Failure::new(
            Code::Supervisor,
            format!("failed to write the policy as YAML: {err}"),
        )
    })?;
    Ok(format!(
        "# Imported by `safe-exec policy import` from {}.\n# Review every grant before the first run.\n{body}",
        source.display()
    ))
}
