//! Turns a resolved policy into the child's plan: the program path, argv,
//! environment and limits, all computed before the fork.

use std::collections::BTreeMap;
use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use thiserror::Error;

use crate::policy::{Limits, Policy};

/// PATH used to find the command when the app's environment has none.
const DEFAULT_PATH: &str = "/usr/local/bin:/usr/bin:/bin";

/// A command that cannot be run.
#[derive(Debug, Error)]
pub enum CommandError {
    #[error(
        "command {name:?} not found (searched {searched}); install it or give its full path in `command`"
    )]
    NotFound { name: String, searched: String },
    #[error(
        "command {path} is not executable: {reason}; fix its permissions or the `command` in the policy"
    )]
    NotExecutable { path: PathBuf, reason: String },
    #[error("{what} contains a NUL byte: {value:?}")]
    Nul { what: &'static str, value: String },
}

/// Finds the program to execute for `policy.command[0]`, like execvp would
/// from `workdir` with the app's PATH.
pub fn resolve_command(
    policy: &Policy,
    env: &BTreeMap<OsString, OsString>,
) -> Result<PathBuf, CommandError> {
    let name = &policy.command[0];
    if name.contains('/') {
        let path = policy.workdir.join(name);
        return check_executable(&path).map(|()| path);
    }
    let search = env
        .get(OsStr::new("PATH"))
        .map(|path| path.to_string_lossy().into_owned())
        .unwrap_or_else(|| DEFAULT_PATH.to_owned());
    let mut not_executable = None;
    for dir in search.split(':').filter(|dir| !dir.is_empty()) {
        let candidate = Path::new(dir).join(name);
        if !candidate.exists() {
            continue;
        }
        match check_executable(&candidate) {
            Ok(()) => return Ok(candidate),
            Err(err) => not_executable = not_executable.or(Some(err)),
        }
    }
    Err(not_executable.unwrap_or(CommandError::NotFound {
        name: name.clone(),
        searched: search,
    }))
}

fn check_executable(path: &Path) -> Result<(), CommandError> {
    let meta = std::fs::metadata(path).map_err(|_| CommandError::NotFound {
        name: path.display().to_string(),
        searched: "the path as given".into(),
    })?;
    if meta.is_dir() {
        return Err(CommandError::NotExecutable {
            path: path.to_owned(),
            reason: "it is a directory".into(),
        });
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Err(CommandError::NotExecutable {
            path: path.to_owned(),
            reason: "no execute permission".into(),
        });
    }
    Ok(())
}

/// Builds the app's environment: the allowlisted variables of the caller,
/// the policy's fixed values, then the supervisor's own (`extra`).
pub fn build_env(policy: &Policy, extra: &[(&str, String)]) -> BTreeMap<OsString, OsString> {
    let mut env = BTreeMap::new();
    for name in &policy.env.inherit {
        if let Some(value) = std::env::var_os(name) {
            env.insert(OsString::from(name), value);
        }
    }
    for (name, value) in &policy.env.set {
        env.insert(OsString::from(name), OsString::from(value));
    }
    for (name, value) in extra {
        env.insert(OsString::from(name), OsString::from(value));
    }
    env
}

/// Returns the environment as `NAME=value` C strings.
pub fn env_strings(env: &BTreeMap<OsString, OsString>) -> Result<Vec<CString>, CommandError> {
    env.iter()
        .map(|(name, value)| {
            let mut entry = name.clone().into_vec();
            entry.push(b'=');
            entry.extend_from_slice(value.as_bytes());
            CString::new(entry).map_err(|_| CommandError::Nul {
                what: "environment variable",
                value: name.to_string_lossy().into_owned(),
            })
        })
        .collect()
}

/// Returns argv: the policy's command followed by the caller's extra arguments.
pub fn argv(policy: &Policy, extra: &[OsString]) -> Result<Vec<CString>, CommandError> {
    policy
        .command
        .iter()
        .map(|arg| arg.as_bytes().to_vec())
        .chain(extra.iter().map(|arg| arg.as_bytes().to_vec()))
        .map(|arg| {
            CString::new(arg.clone()).map_err(|_| CommandError::Nul {
                what: "argument",
                value: String::from_utf8_lossy(&arg).into_owned(),
            })
        })
        .collect()
}

/// Converts a path to a C string.
pub fn path_cstring(path: &Path, what: &'static str) -> Result<CString, CommandError> {
    CString::new(path.as_os_str().as_bytes()).map_err(|_| CommandError::Nul {
        what,
        value: path.display().to_string(),
    })
}

/// Returns the resource limits to set, as (resource, value) pairs.
pub fn rlimits(limits: &Limits) -> Vec<(libc::__rlimit_resource_t, libc::rlim_t)> {
    let mut out = Vec::new();
    if !limits.core_dumps {
        out.push((libc::RLIMIT_CORE, 0));
    }
    if let Some(memory) = limits.memory {
        out.push((libc::RLIMIT_AS, memory));
    }
    if let Some(processes) = limits.processes {
        out.push((libc::RLIMIT_NPROC, processes));
    }
    if let Some(open_files) = limits.open_files {
        out.push((libc::RLIMIT_NOFILE, open_files));
    }
    if let Some(cpu) = limits.cpu {
        out.push((libc::RLIMIT_CPU, cpu.as_secs().max(1)));
    }
    out
}
