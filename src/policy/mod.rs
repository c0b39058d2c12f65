//! Policy files: read (`raw`), resolve (`resolve`) and check (`lint`).
//!
//! The pipeline is file -> `RawPolicy` -> `Policy`. Only the resolved `Policy`
//! reaches the preflight checks and the sandbox steps.

pub mod lint;
pub mod raw;
pub mod resolve;
pub mod units;

use std::fmt;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::exit::{Code, HasExitCode};

pub use raw::{
    CredentialFormat, Enforcement, MissingPaths, NetworkMode, OnViolation, RawPolicy, Severity,
    SyscallProfile,
};
pub use resolve::{
    Access, CredentialsPolicy, EmailPolicy, EnvPolicy, FsPolicy, Limits, NetworkPolicy, PathRule,
    Policy, ResolveOptions, RuleTarget, SkippedPath, SyscallPolicy,
};

/// A line and column in a policy file, both counted from 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Position {
    pub line: u64,
    pub column: u64,
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.line, self.column)
    }
}

impl From<serde_saphyr::Location> for Position {
    fn from(location: serde_saphyr::Location) -> Self {
        Self {
            line: location.line(),
            column: location.column(),
        }
    }
}

/// A policy that could not be found, read, parsed or resolved.
#[derive(Debug, Error)]
pub enum PolicyError {
    #[error("no policy for app {app:?}: {file} does not exist; create it or pass --policy-dir")]
    NotFound { app: String, file: PathBuf },

    #[error(
        "invalid app name {app:?}: use letters, digits, '-', '_' and '.', not starting with '.'"
    )]
    BadAppName { app: String },

    #[error("failed to read policy file {file}: {source}")]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },

    #[error("failed to read policy directory {dir}: {source}; create it or pass --policy-dir")]
    ReadDir {
        dir: PathBuf,
        source: std::io::Error,
    },

    #[error("{file}:{position}: {message}")]
    Invalid {
        file: PathBuf,
        position: Position,
        message: String,
    },

    #[error("{file}: {message}")]
    InvalidFile { file: PathBuf, message: String },
}

impl HasExitCode for PolicyError {
    fn exit_code(&self) -> Code {
        Code::DataErr
    }
}

/// Returns the path of `app`'s policy file in `dir`, checking the name first.
pub fn policy_file(dir: &Path, app: &str) -> Result<PathBuf, PolicyError> {
    let valid = !app.is_empty()
        && !app.starts_with('.')
        && app
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid {
        return Err(PolicyError::BadAppName {
            app: app.to_owned(),
        });
    }
    Ok(dir.join(format!("{app}.yaml")))
}

/// Reads and parses one policy file without resolving it.
pub fn parse_file(file: &Path) -> Result<RawPolicy, PolicyError> {
    let text = std::fs::read_to_string(file).map_err(|source| PolicyError::Read {
        file: file.to_owned(),
        source,
    })?;
    parse_text(file, &text)
}

/// Parses policy text; `file` is used in error messages only.
pub fn parse_text(file: &Path, text: &str) -> Result<RawPolicy, PolicyError> {
    // A file of only comments parses as an empty document, which serde-saphyr
    // reports as an unexpected end of input.
    let has_content = text.lines().any(|line| {
        let line = line.trim();
        !line.is_empty() && !line.starts_with('#') && line != "---" && line != "..."
    });
    if !has_content {
        return Err(PolicyError::InvalidFile {
            file: file.to_owned(),
            message: "the file is empty or only comments; a policy needs at least `version: 1` and `command`"
                .into(),
        });
    }
    let raw: RawPolicy =
        serde_saphyr::from_str(text).map_err(|err| yaml_error(file, text, &err))?;
    if raw.version.value != 1 {
        return Err(PolicyError::Invalid {
            file: file.to_owned(),
            position: raw.version.referenced.into(),
            message: format!(
                "unsupported version {}; this safe-exec reads version 1",
                raw.version.value
            ),
        });
    }
    Ok(raw)
}

fn yaml_error(file: &Path, text: &str, err: &serde_saphyr::Error) -> PolicyError {
    let message = match err.without_snippet() {
        serde_saphyr::Error::InvalidScalar { ty, location } => wrong_type(ty, text, *location),
        serde_saphyr::Error::Unexpected { expected, location } => {
            wrong_type(expected, text, *location)
        }
        serde_saphyr::Error::DuplicateMappingKey { key: Some(key), .. } => {
            format!("duplicate key {key:?}; each key may appear once in a mapping")
        }
        _ => first_line(&err.to_string()),
    };
    match err.location() {
        Some(location) => PolicyError::Invalid {
            file: file.to_owned(),
            position: location.into(),
            message,
        },
        None => PolicyError::InvalidFile {
            file: file.to_owned(),
            message,
        },
    }
}

/// Describes a value of the wrong type, such as `processes: many`, quoting it
/// from the source because serde-saphyr's message names only the expected Rust
/// type or YAML token.
fn wrong_type(expected: &str, text: &str, location: serde_saphyr::Location) -> String {
    let expected = match expected {
        "u8" | "u16" | "u32" | "u64" | "u128" | "usize" => "a whole number of 0 or more",
        "i8" | "i16" | "i32" | "i64" | "i128" | "isize" => "a whole number",
        "f32" | "f64" => "a number",
        "bool" | "boolean" => "true or false",
        "sequence start" => "a list, such as [a, b]",
        "mapping start" => "a mapping of `key: value` entries",
        "string scalar" => "a single value, not a list or mapping",
        other => other,
    };
    let found = usize::try_from(location.line())
        .ok()
        .and_then(|line| text.lines().nth(line.checked_sub(1)?))
        .and_then(|line| {
            let column = usize::try_from(location.column()).ok()?.checked_sub(1)?;
            let rest: String = line.chars().skip(column).collect();
            let value = rest
                .split(" #")
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned();
            (!value.is_empty()).then_some(value)
        });
    match found {
        Some(value) => format!("invalid value {value:?}: expected {expected}"),
        None => format!("invalid value: expected {expected}"),
    }
}

/// Keeps the message of a serde-saphyr error and drops its source snippet,
/// because the position is printed separately.
fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or(text).trim();
    let line = line.strip_prefix("error: ").unwrap_or(line);
    // serde-saphyr starts some messages with "line L column C: ".
    let line = match line
        .strip_prefix("line ")
        .and_then(|rest| rest.split_once(": "))
    {
        Some((position, rest)) if position.contains(" column ") => rest,
        _ => line,
    };
    // serde-saphyr appends " at line L, column C" to some messages.
    match line.rfind(" at line ") {
        Some(index) => line[..index].to_owned(),
        None => line.to_owned(),
    }
}

/// Lists the app names of every policy file in `dir`, sorted.
pub fn list_apps(dir: &Path) -> Result<Vec<String>, PolicyError> {
    let entries = std::fs::read_dir(dir).map_err(|source| PolicyError::ReadDir {
        dir: dir.to_owned(),
        source,
    })?;
    let mut apps = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|source| PolicyError::ReadDir {
            dir: dir.to_owned(),
            source,
        })?;
        let path = entry.path();
        if path.extension().is_some_and(|ext| ext == "yaml")
            && let Some(stem) = path.file_stem().and_then(|s| s.to_str())
        {
            apps.push(stem.to_owned());
        }
    }
    apps.sort();
    Ok(apps)
}

/// Loads and resolves `app`'s policy from `dir`.
pub fn load(dir: &Path, app: &str, options: &ResolveOptions) -> Result<Policy, PolicyError> {
    let file = policy_file(dir, app)?;
    if !file.exists() {
        return Err(PolicyError::NotFound {
            app: app.to_owned(),
            file,
        });
    }
    let raw = parse_file(&file)?;
    resolve::resolve(app, &file, raw, options)
}
