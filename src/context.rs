//! Locations of the vault and the policies for this invocation.
//!
//! Every command takes `--vault DIR` and `--policy-dir DIR`; this module
//! applies the defaults (`$SAFE_EXEC_VAULT`, else `~/.my-workspace-vault`;
//! `$SAFE_EXEC_POLICY_DIR`, else `./policies`, else
//! `~/.config/safe-exec/policies`) and names the files inside the vault.

use std::path::{Path, PathBuf};

use crate::policy::ResolveOptions;
use crate::policy::lint::Protected;
use crate::policy::resolve::lenient_canonicalize;

/// Directory name of the vault under the home directory when nothing else is given.
pub const DEFAULT_VAULT_NAME: &str = ".my-workspace-vault";

/// The resolved locations for one invocation.
#[derive(Debug, Clone)]
pub struct Context {
    /// The vault directory (0700): vault file, audit logs, rate-limit state.
    pub vault_dir: PathBuf,
    /// The directory holding `<app>.yaml` policy files.
    pub policy_dir: PathBuf,
    /// The caller's home directory, used to expand `~`.
    pub home: PathBuf,
}

impl Context {
    /// Applies the defaults to the values given on the command line (or by the
    /// environment variables, which clap has already read).
    pub fn new(vault: Option<PathBuf>, policy_dir: Option<PathBuf>) -> Self {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/"));
        let vault_dir = vault.unwrap_or_else(|| home.join(DEFAULT_VAULT_NAME));
        let policy_dir = policy_dir.unwrap_or_else(|| {
            let local = PathBuf::from("policies");
            if local.is_dir() {
                local
            } else {
                home.join(".config/safe-exec/policies")
            }
        });
        Self {
            vault_dir: absolute(&vault_dir),
            policy_dir: absolute(&policy_dir),
            home,
        }
    }

    /// Returns the directory of the audit logs.
    pub fn audit_dir(&self) -> PathBuf {
        self.vault_dir.join("audit")
    }

    /// Returns the directory of the rate-limit state.
    pub fn ratelimit_dir(&self) -> PathBuf {
        self.vault_dir.join("ratelimits")
    }

    /// Returns the options for resolving policies in this invocation.
    pub fn resolve_options(&self) -> ResolveOptions {
        let current_dir = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        ResolveOptions {
            home: self.home.clone(),
            current_dir,
        }
    }

    /// Returns the paths no policy may grant.
    pub fn protected(&self) -> Protected {
        let mut dirs = vec![
            ("vault".to_owned(), lenient_canonicalize(&self.vault_dir)),
            (
                "policy directory".to_owned(),
                lenient_canonicalize(&self.policy_dir),
            ),
            (
                "safe-exec configuration directory".to_owned(),
                lenient_canonicalize(&self.home.join(".config/safe-exec")),
            ),
        ];
        dirs.dedup_by(|a, b| a.1 == b.1);
        let executable = std::env::current_exe()
            .ok()
            .map(|exe| lenient_canonicalize(&exe));
        Protected { dirs, executable }
    }
}

fn absolute(path: &Path) -> PathBuf {
    if path.is_absolute() {
        return path.to_owned();
    }
    std::env::current_dir()
        .map(|cwd| cwd.join(path))
        .unwrap_or_else(|_| path.to_owned())
}
