//! Resolution of a `RawPolicy` into the `Policy` the sandbox applies.
//!
//! Paths are expanded (`~`, relative to the policy file) and canonicalised, so
//! the target of a symlink is what gets granted and shown. Missing paths are
//! recorded, not rejected: whether they stop a run is decided by the
//! `missing` setting when the run is prepared (`FsPolicy::check_paths`), so
//! `policy lint` can check a policy for an app that is not installed here.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use serde::Serialize;
use serde_saphyr::{Location, Spanned};

use super::raw::{
    CredentialFormat, Enforcement, MissingPaths, NetworkMode, OnViolation, RawPolicy, Severity,
    SyscallProfile,
};
use super::units::RateSpec;
use super::{PolicyError, Position};

/// Environment variables that only the supervisor sets.
pub const RESERVED_ENV: &[&str] = &[
    "SAFE_EXEC_CREDENTIALS_FD",
    "SAFE_EXEC_SOCKET",
    "SAFE_EXEC_RUN_ID",
    "SAFE_EXEC_APP",
];

/// Inputs to resolution that come from the caller rather than the file.
#[derive(Debug, Clone)]
pub struct ResolveOptions {
    /// Expansion of `~`.
    pub home: PathBuf,
    /// Working directory used when the policy names none.
    pub current_dir: PathBuf,
}

impl ResolveOptions {
    /// Builds options from the process environment.
    pub fn from_env() -> Self {
        let home = std::env::var_os("HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("/"));
        let current_dir = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"));
        Self { home, current_dir }
    }
}

/// A resolved policy: the only form the preflight checks and the sandbox see.
#[derive(Debug, Clone, Serialize)]
pub struct Policy {
    pub app: String,
    pub file: PathBuf,
    pub description: Option<String>,
    pub command: Vec<String>,
    pub workdir: PathBuf,
    pub env: EnvPolicy,
    pub filesystem: FsPolicy,
    pub network: NetworkPolicy,
    pub syscalls: SyscallPolicy,
    pub limits: Limits,
    pub credentials: Option<CredentialsPolicy>,
    pub rate_limits: BTreeMap<String, RateSpec>,
    pub email: EmailPolicy,
    pub audit: AuditOptions,
    pub preflight: PreflightOptions,
    pub enforcement: Enforcement,
}

/// The app's environment.
#[derive(Debug, Clone, Serialize)]
pub struct EnvPolicy {
    pub inherit: Vec<String>,
    pub set: BTreeMap<String, String>,
}

/// Filesystem rules after resolution.
#[derive(Debug, Clone, Serialize)]
pub struct FsPolicy {
    pub system: bool,
    pub rules: Vec<PathRule>,
    pub missing: MissingPaths,
}

/// Rights granted on one path.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Access {
    pub read: bool,
    pub write: bool,
    pub exec: bool,
}

impl Access {
    /// Returns true when `self` grants a right that `other` lacks.
    pub fn exceeds(self, other: Access) -> bool {
        (self.read && !other.read) || (self.write && !other.write) || (self.exec && !other.exec)
    }

    /// Returns the rights as a short label such as `read+write`.
    pub fn label(self) -> String {
        let mut parts = Vec::new();
        if self.read {
            parts.push("read");
        }
        if self.write {
            parts.push("write");
        }
        if self.exec {
            parts.push("exec");
        }
        parts.join("+")
    }
}

/// One filesystem grant.
#[derive(Debug, Clone, Serialize)]
pub struct PathRule {
    /// The path as written in the policy.
    pub declared: String,
    /// Its position in the policy file.
    pub position: Position,
    pub target: RuleTarget,
    pub access: Access,
}

/// The target of a rule.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RuleTarget {
    /// A path on the host; `path` is canonical when `exists` is true.
    Path {
        path: PathBuf,
        /// Set when the declared path went through a symlink.
        symlink_from: Option<PathBuf>,
        exists: bool,
        is_dir: bool,
    },
    /// The run's private temporary directory, created for each run.
    RunTmp,
}

impl PathRule {
    /// Returns the host path of the rule, or `None` for `{tmp}`.
    pub fn path(&self) -> Option<&Path> {
        match &self.target {
            RuleTarget::Path { path, .. } => Some(path),
            RuleTarget::RunTmp => None,
        }
    }
}

/// A rule left out of a run because its path does not exist and `missing: skip` is set.
#[derive(Debug, Clone, Serialize)]
pub struct SkippedPath {
    pub declared: String,
    pub path: PathBuf,
    pub position: Position,
}

/// Network settings.
#[derive(Debug, Clone, Serialize)]
pub struct NetworkPolicy {
    pub mode: NetworkMode,
    pub allow: Vec<String>,
    pub tcp_connect: Vec<u16>,
}

/// Seccomp settings.
#[derive(Debug, Clone, Serialize)]
pub struct SyscallPolicy {
    pub profile: SyscallProfile,
    pub deny: Vec<String>,
    pub allow: Vec<String>,
    pub on_violation: OnViolation,
}

/// Resource limits; `None` keeps the caller's limit.
#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    #[serde(with = "opt_seconds")]
    pub timeout: Option<Duration>,
    pub memory: Option<u64>,
    pub processes: Option<u64>,
    pub open_files: Option<u64>,
    #[serde(with = "opt_seconds")]
    pub cpu: Option<Duration>,
    pub core_dumps: bool,
}

/// Credentials to deliver.
#[derive(Debug, Clone, Serialize)]
pub struct CredentialsPolicy {
    pub service: String,
    pub keys: Vec<String>,
    pub optional: Vec<String>,
    pub format: CredentialFormat,
    pub fd: i32,
}

/// E-mail guard settings with defaults filled.
#[derive(Debug, Clone, Serialize)]
pub struct EmailPolicy {
    pub enabled: bool,
    pub thresholds: BTreeMap<u32, f64>,
    pub off_limits: Vec<String>,
    pub suspicious_patterns: Vec<String>,
    #[serde(with = "seconds")]
    pub cache_ttl: Duration,
}

/// Audit options.
#[derive(Debug, Clone, Serialize)]
pub struct AuditOptions {
    pub log_all_sends: bool,
    pub store_drafts: bool,
}

/// Preflight options.
#[derive(Debug, Clone, Serialize)]
pub struct PreflightOptions {
    pub rotation_overdue: Severity,
    pub plaintext_secrets: Severity,
}

/// Resolves `raw`, read from `file`, for the app named `app`.
pub fn resolve(
    app: &str,
    file: &Path,
    raw: RawPolicy,
    options: &ResolveOptions,
) -> Result<Policy, PolicyError> {
    let base = file.parent().map(Path::to_path_buf).unwrap_or_default();
    let base = lenient_canonicalize(&absolute_from(&options.current_dir, &base));

    let command = &raw.command;
    if command
        .value
        .first()
        .is_none_or(|program| program.is_empty())
    {
        let message = "command must name a program, for example `command: [python3, app.py]`";
        return Err(error_at(file, command.referenced, message.into()));
    }

    let workdir = match &raw.workdir {
        Some(spanned) => {
            let expanded = expand(&spanned.value, &base, &options.home)
                .map_err(|message| at(file, spanned, message))?;
            lenient_canonicalize(&expanded)
        }
        None => options.current_dir.clone(),
    };

    let env = resolve_env(file, &raw)?;
    let filesystem = resolve_filesystem(file, &raw, &base, &options.home)?;
    let network = resolve_network(file, &raw)?;
    let syscalls = resolve_syscalls(file, &raw)?;
    let credentials = resolve_credentials(file, &raw)?;
    let email = resolve_email(file, &raw)?;

    Ok(Policy {
        app: app.to_owned(),
        file: file.to_owned(),
        description: raw.description,
        command: raw.command.value,
        workdir,
        env,
        filesystem,
        network,
        syscalls,
        limits: Limits {
            timeout: raw.limits.timeout.map(|d| d.0),
            memory: raw.limits.memory.map(|s| s.0),
            processes: raw.limits.processes,
            open_files: raw.limits.open_files,
            cpu: raw.limits.cpu.map(|d| d.0),
            core_dumps: raw.limits.core_dumps,
        },
        credentials,
        rate_limits: raw.rate_limits,
        email,
        audit: AuditOptions {
            log_all_sends: raw.audit.log_all_sends,
            store_drafts: raw.audit.store_drafts,
        },
        preflight: PreflightOptions {
            rotation_overdue: raw.preflight.rotation_overdue,
            plaintext_secrets: raw.preflight.plaintext_secrets,
        },
        enforcement: raw.enforcement,
    })
}

fn at(file: &Path, spanned: &Spanned<String>, message: String) -> PolicyError {
    error_at(file, spanned.referenced, message)
}

/// Builds the error for `message` at `location`, or for the whole file when
/// the value has no place in it because it is a default.
fn error_at(file: &Path, location: Location, message: String) -> PolicyError {
    if location == Location::UNKNOWN {
        return PolicyError::InvalidFile {
            file: file.to_owned(),
            message,
        };
    }
    PolicyError::Invalid {
        file: file.to_owned(),
        position: location.into(),
        message,
    }
}

fn values<T: Clone>(list: &[Spanned<T>]) -> Vec<T> {
    list.iter().map(|item| item.value.clone()).collect()
}

fn is_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    matches!(chars.next(), Some(c) if c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn resolve_env(file: &Path, raw: &RawPolicy) -> Result<EnvPolicy, PolicyError> {
    // A name in `set` is reported at its value, because map keys carry no position.
    let inherited = raw
        .env
        .inherit
        .iter()
        .map(|name| (name.value.as_str(), name.referenced));
    let set = raw
        .env
        .set
        .iter()
        .map(|(name, value)| (name.as_str(), value.referenced));
    for (name, location) in inherited.chain(set) {
        if !is_env_name(name) {
            let message = format!(
                "invalid environment variable name {name:?} in env; use letters, digits and '_', not starting with a digit"
            );
            return Err(error_at(file, location, message));
        }
        if RESERVED_ENV.contains(&name) {
            let message = format!("env must not name {name}: safe-exec sets it for each run");
            return Err(error_at(file, location, message));
        }
    }
    Ok(EnvPolicy {
        inherit: values(&raw.env.inherit),
        set: raw
            .env
            .set
            .iter()
            .map(|(name, value)| (name.clone(), value.value.clone()))
            .collect(),
    })
}

fn resolve_filesystem(
    file: &Path,
    raw: &RawPolicy,
    base: &Path,
    home: &Path,
) -> Result<FsPolicy, PolicyError> {
    let fs = &raw.filesystem;
    let lists: [(&Vec<Spanned<String>>, Access); 3] = [
        (
            &fs.read,
            Access {
                read: true,
                write: false,
                exec: false,
            },
        ),
        (
            &fs.write,
            Access {
                read: true,
                write: true,
                exec: false,
            },
        ),
        (
            &fs.exec,
            Access {
                read: true,
                write: false,
                exec: true,
            },
        ),
    ];

    let mut rules: Vec<PathRule> = Vec::new();
    for (entries, access) in lists {
        for entry in entries {
            let target = resolve_target(&entry.value, base, home)
                .map_err(|message| at(file, entry, message))?;
            if let Some(existing) = rules.iter_mut().find(|rule| rule.target == target) {
                existing.access.read |= access.read;
                existing.access.write |= access.write;
                existing.access.exec |= access.exec;
                continue;
            }
            rules.push(PathRule {
                declared: entry.value.clone(),
                position: entry.referenced.into(),
                target,
                access,
            });
        }
    }
    Ok(FsPolicy {
        system: fs.system,
        rules,
        missing: fs.missing,
    })
}

fn resolve_target(declared: &str, base: &Path, home: &Path) -> Result<RuleTarget, String> {
    if declared.trim() == "{tmp}" {
        return Ok(RuleTarget::RunTmp);
    }
    if declared.contains('{') {
        return Err(format!(
            "unknown placeholder in {declared:?}; the only placeholder is {{tmp}}"
        ));
    }
    let expanded = expand(declared, base, home)?;
    match std::fs::canonicalize(&expanded) {
        Ok(path) => {
            let is_dir = path.is_dir();
            let symlink_from = (path != expanded).then_some(expanded);
            Ok(RuleTarget::Path {
                path,
                symlink_from,
                exists: true,
                is_dir,
            })
        }
        Err(_) => Ok(RuleTarget::Path {
            path: lenient_canonicalize(&expanded),
            symlink_from: None,
            exists: false,
            is_dir: false,
        }),
    }
}

/// Expands `~` and makes `path` absolute against `base`, without touching the filesystem.
pub fn expand(path: &str, base: &Path, home: &Path) -> Result<PathBuf, String> {
    if path.is_empty() {
        return Err("empty path; remove the entry or name a path".into());
    }
    if path.contains('\0') {
        return Err(format!("path {path:?} contains a NUL byte"));
    }
    let expanded = if path == "~" {
        home.to_owned()
    } else if let Some(rest) = path.strip_prefix("~/") {
        home.join(rest)
    } else if path.starts_with('~') {
        return Err(format!(
            "cannot expand {path:?}: only `~` and `~/...` (the caller's home) are supported"
        ));
    } else {
        PathBuf::from(path)
    };
    Ok(normalize(&absolute_from(base, &expanded)))
}

fn absolute_from(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_owned()
    } else {
        base.join(path)
    }
}

/// Removes `.` and resolves `..` lexically.
fn normalize(path: &Path) -> PathBuf {
    let mut out = PathBuf::new();
    for component in path.components() {
        match component {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    out
}

/// Canonicalises the longest existing prefix of `path` and appends the rest,
/// so a path that does not exist yet still compares correctly with real ones.
pub fn lenient_canonicalize(path: &Path) -> PathBuf {
    if let Ok(canonical) = std::fs::canonicalize(path) {
        return canonical;
    }
    let mut missing = Vec::new();
    let mut current = path.to_owned();
    while let Some(parent) = current.parent().map(Path::to_path_buf) {
        if let Some(name) = current.file_name() {
            missing.push(name.to_owned());
        }
        if let Ok(mut canonical) = std::fs::canonicalize(&parent) {
            for name in missing.iter().rev() {
                canonical.push(name);
            }
            return canonical;
        }
        current = parent;
    }
    normalize(path)
}

fn resolve_network(file: &Path, raw: &RawPolicy) -> Result<NetworkPolicy, PolicyError> {
    let net = &raw.network;
    if let Some(first) = net.allow.first().filter(|_| net.mode != NetworkMode::Proxy) {
        let message = "network.allow only applies to `mode: proxy`; remove it or set the mode";
        return Err(error_at(file, first.referenced, message.into()));
    }
    if let Some(first) = net
        .tcp_connect
        .first()
        .filter(|_| net.mode != NetworkMode::Open)
    {
        let message = "network.tcp_connect only applies to `mode: open`; remove it or set the mode";
        return Err(error_at(file, first.referenced, message.into()));
    }
    if let Some(zero) = net.tcp_connect.iter().find(|port| port.value == 0) {
        let message = "network.tcp_connect contains port 0; list ports from 1 to 65535";
        return Err(error_at(file, zero.referenced, message.into()));
    }
    for pattern in &net.allow {
        let host = pattern
            .value
            .rsplit_once(':')
            .map_or(pattern.value.as_str(), |(host, _)| host);
        if host.is_empty() || host.contains('/') || host.contains(' ') {
            let message = format!(
                "invalid network.allow entry {:?}; write host[:port], such as api.example.com:443 or *.example.com",
                pattern.value
            );
            return Err(error_at(file, pattern.referenced, message));
        }
    }
    Ok(NetworkPolicy {
        mode: net.mode,
        allow: values(&net.allow),
        tcp_connect: values(&net.tcp_connect),
    })
}

fn resolve_syscalls(file: &Path, raw: &RawPolicy) -> Result<SyscallPolicy, PolicyError> {
    let syscalls = &raw.syscalls;
    for name in syscalls.deny.iter().chain(&syscalls.allow) {
        if crate::sandbox::seccomp::syscall_number(&name.value).is_none() {
            let message = format!(
                "unknown syscall name {:?} in syscalls; use the kernel's name, such as ptrace or mount",
                name.value
            );
            return Err(error_at(file, name.referenced, message));
        }
    }
    Ok(SyscallPolicy {
        profile: syscalls.profile,
        deny: values(&syscalls.deny),
        allow: values(&syscalls.allow),
        on_violation: syscalls.on_violation,
    })
}

fn resolve_credentials(
    file: &Path,
    raw: &RawPolicy,
) -> Result<Option<CredentialsPolicy>, PolicyError> {
    let Some(creds) = &raw.credentials else {
        return Ok(None);
    };
    if creds.service.value.trim().is_empty() {
        let message = "credentials.service is empty; name the vault service";
        return Err(error_at(file, creds.service.referenced, message.into()));
    }
    for key in creds.keys.iter().chain(&creds.optional) {
        if !is_env_name(&key.value) {
            let message = format!(
                "invalid credential key {:?}; use letters, digits and '_', not starting with a digit",
                key.value
            );
            return Err(error_at(file, key.referenced, message));
        }
    }
    let required = values(&creds.keys);
    if let Some(both) = creds
        .optional
        .iter()
        .find(|key| required.contains(&key.value))
    {
        let message = format!(
            "credential key {} is listed in both keys and optional; keep one",
            both.value
        );
        return Err(error_at(file, both.referenced, message));
    }
    if !(3..=255).contains(&creds.fd.value) {
        let message = format!(
            "credentials.fd is {}; use a descriptor from 3 to 255 (0 to 2 are stdin, stdout and stderr)",
            creds.fd.value
        );
        return Err(error_at(file, creds.fd.referenced, message));
    }
    Ok(Some(CredentialsPolicy {
        service: creds.service.value.clone(),
        keys: required,
        optional: values(&creds.optional),
        format: creds.format,
        fd: creds.fd.value,
    }))
}

fn resolve_email(file: &Path, raw: &RawPolicy) -> Result<EmailPolicy, PolicyError> {
    let default_ttl = Duration::from_secs(3600);
    let Some(email) = &raw.email else {
        return Ok(EmailPolicy {
            enabled: false,
            thresholds: BTreeMap::new(),
            off_limits: Vec::new(),
            suspicious_patterns: Vec::new(),
            cache_ttl: default_ttl,
        });
    };
    for (tier, threshold) in &email.thresholds {
        if !(0.0..=1.0).contains(&threshold.value) {
            let message = format!(
                "email.thresholds tier {tier} is {}; a confidence threshold is from 0 to 1",
                threshold.value
            );
            return Err(error_at(file, threshold.referenced, message));
        }
    }
    for pattern in &email.off_limits {
        let valid = pattern.value.contains('@') && !pattern.value.contains(char::is_whitespace);
        if !valid {
            let message = format!(
                "invalid email.off_limits entry {:?}; write an address or *@domain",
                pattern.value
            );
            return Err(error_at(file, pattern.referenced, message));
        }
    }
    for pattern in &email.suspicious_patterns {
        if let Err(message) = crate::guard::patterns::compile_policy_pattern(pattern) {
            return Err(PolicyError::InvalidFile {
                file: file.to_owned(),
                message: format!(
                    "invalid regular expression {pattern:?} in email.suspicious_patterns: {message}"
                ),
            });
        }
    }
    Ok(EmailPolicy {
        enabled: true,
        thresholds: email
            .thresholds
            .iter()
            .map(|(tier, threshold)| (*tier, threshold.value))
            .collect(),
        off_limits: values(&email.off_limits),
        suspicious_patterns: email.suspicious_patterns.clone(),
        cache_ttl: email.cache_ttl.map_or(default_ttl, |d| d.0),
    })
}

impl FsPolicy {
    /// Applies the `missing` setting: returns the rules to enforce and those
    /// skipped, or an error naming the first missing path when skipping is not allowed.
    pub fn check_paths(
        &self,
        file: &Path,
    ) -> Result<(Vec<PathRule>, Vec<SkippedPath>), PolicyError> {
        let mut kept = Vec::new();
        let mut skipped = Vec::new();
        for rule in &self.rules {
            let RuleTarget::Path {
                path,
                exists: false,
                ..
            } = &rule.target
            else {
                kept.push(rule.clone());
                continue;
            };
            if self.missing == MissingPaths::Skip {
                skipped.push(SkippedPath {
                    declared: rule.declared.clone(),
                    path: path.clone(),
                    position: rule.position,
                });
                continue;
            }
            let fix = if rule.access.write {
                "create it first (mkdir -p) or grant its parent directory"
            } else {
                "create it, remove it from the policy, or set `filesystem.missing: skip`"
            };
            return Err(PolicyError::Invalid {
                file: file.to_owned(),
                position: rule.position,
                message: format!(
                    "{} path {} does not exist ({}); {fix}",
                    rule.access.label(),
                    path.display(),
                    rule.declared
                ),
            });
        }
        Ok((kept, skipped))
    }
}

mod seconds {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(
        value: &Duration,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.serialize_f64(value.as_secs_f64())
    }
}

mod opt_seconds {
    use std::time::Duration;

    pub fn serialize<S: serde::Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(duration) => serializer.serialize_f64(duration.as_secs_f64()),
            None => serializer.serialize_none(),
        }
    }
}
