//! The policy file as written: serde types that reject unknown keys.
//!
//! Nothing here touches the filesystem. `resolve` turns a `RawPolicy` into the
//! `Policy` that the sandbox applies, and `policy schema` is generated from
//! these same types.

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_saphyr::{Location, Spanned};

use super::units::{DurationSpec, RateSpec, SizeSpec};

/// One policy file, `policies/<app>.yaml`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "safe-exec policy")]
pub struct RawPolicy {
    /// Schema version; only 1 exists.
    #[schemars(with = "u32")]
    pub version: Spanned<u32>,
    /// A description of the app, shown by `policy show` and `check`.
    #[serde(default)]
    pub description: Option<String>,
    /// The program and its arguments; arguments after `--` on the command line follow.
    #[schemars(with = "Vec<String>")]
    pub command: Spanned<Vec<String>>,
    /// Working directory of the app; relative paths are relative to the policy file.
    #[serde(default)]
    #[schemars(with = "Option<String>")]
    pub workdir: Option<Spanned<String>>,
    /// Environment of the app.
    #[serde(default)]
    pub env: RawEnv,
    /// Landlock filesystem rules.
    #[serde(default)]
    pub filesystem: RawFilesystem,
    /// Network access.
    #[serde(default)]
    pub network: RawNetwork,
    /// The seccomp filter.
    #[serde(default)]
    pub syscalls: RawSyscalls,
    /// Resource limits.
    #[serde(default)]
    pub limits: RawLimits,
    /// Credentials delivered through an inherited pipe.
    #[serde(default)]
    pub credentials: Option<RawCredentials>,
    /// Token buckets by name: `COUNT/PERIOD` or `{rate, burst}`.
    #[serde(default)]
    pub rate_limits: BTreeMap<String, RateSpec>,
    /// The e-mail sending guard.
    #[serde(default)]
    pub email: Option<RawEmail>,
    /// Audit records beyond the supervisor's own events.
    #[serde(default)]
    pub audit: RawAudit,
    /// Severity of preflight findings.
    #[serde(default)]
    pub preflight: RawPreflight,
    /// Whether the run may start when a restriction cannot be enforced on this kernel.
    #[serde(default)]
    pub enforcement: Enforcement,
}

/// The app's environment: an allowlist copied from the caller plus fixed values.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawEnv {
    /// Variables copied from the caller's environment; all others are dropped.
    #[serde(default = "default_inherit")]
    #[schemars(with = "Vec<String>")]
    pub inherit: Vec<Spanned<String>>,
    /// Variables set to fixed values.
    #[serde(default)]
    #[schemars(with = "BTreeMap<String, String>")]
    pub set: BTreeMap<String, Spanned<String>>,
}

impl Default for RawEnv {
    fn default() -> Self {
        Self {
            inherit: default_inherit(),
            set: BTreeMap::new(),
        }
    }
}

fn default_inherit() -> Vec<Spanned<String>> {
    ["PATH", "HOME", "LANG", "TZ", "TERM"]
        .map(|name| unplaced(name.to_owned()))
        .to_vec()
}

/// Wraps a default value that has no place in the file.
fn unplaced<T>(value: T) -> Spanned<T> {
    Spanned::new(value, Location::UNKNOWN, Location::UNKNOWN)
}

/// Landlock filesystem grants.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawFilesystem {
    /// Read and execute on the usual system directories and use of /dev/null,
    /// /dev/zero, /dev/urandom and /dev/tty; false grants nothing implicitly.
    #[serde(default = "yes")]
    pub system: bool,
    /// Paths the app may read.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub read: Vec<Spanned<String>>,
    /// Paths the app may read, create, change, rename and delete in.
    /// `{tmp}` is the run's private temporary directory.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub write: Vec<Spanned<String>>,
    /// Paths the app may read and execute.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub exec: Vec<Spanned<String>>,
    /// Treatment of a path that does not exist.
    #[serde(default)]
    pub missing: MissingPaths,
}

impl Default for RawFilesystem {
    fn default() -> Self {
        Self {
            system: true,
            read: Vec::new(),
            write: Vec::new(),
            exec: Vec::new(),
            missing: MissingPaths::default(),
        }
    }
}

fn yes() -> bool {
    true
}

/// Treatment of policy paths that do not exist.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum MissingPaths {
    /// Refuse the run and name the path.
    #[default]
    Error,
    /// Skip only that rule, with a warning and an audit record.
    Skip,
}

/// Network access mode and its allowlists.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawNetwork {
    /// none: no network at all; proxy: only through the supervisor's proxy; open: the host network.
    #[serde(default)]
    pub mode: NetworkMode,
    /// For mode proxy: allowed `host[:port]` patterns such as `api.example.com:443` or `*.example.com`.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub allow: Vec<Spanned<String>>,
    /// For mode open: TCP ports the app may connect to (Landlock); empty allows any port.
    #[serde(default)]
    #[schemars(with = "Vec<u16>")]
    pub tcp_connect: Vec<Spanned<u16>>,
}

/// Network access mode.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    /// No network: an empty network namespace, or no internet sockets.
    #[default]
    None,
    /// Only the hosts in `allow`, through a proxy run by the supervisor.
    Proxy,
    /// The host's network, with optional TCP port rules.
    Open,
}

/// The seccomp filter.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawSyscalls {
    /// default: deny the dangerous calls; strict: allow only a list of common calls.
    #[serde(default)]
    pub profile: SyscallProfile,
    /// Extra syscall names to deny.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub deny: Vec<Spanned<String>>,
    /// Exceptions to the default deny list, such as `ptrace` for a debugger.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub allow: Vec<Spanned<String>>,
    /// Action for a denied call: fail with EPERM, or kill the process.
    #[serde(default)]
    pub on_violation: OnViolation,
}

/// Seccomp profile.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SyscallProfile {
    /// Deny a fixed list of dangerous calls and allow the rest.
    #[default]
    Default,
    /// Allow only a fixed list of common calls.
    Strict,
}

/// Action for a denied syscall.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnViolation {
    /// The call fails with EPERM.
    #[default]
    Errno,
    /// The process is killed with SIGSYS.
    Kill,
}

/// Resource limits.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawLimits {
    /// Wall-clock time before the app's process tree gets SIGTERM, then SIGKILL.
    #[serde(default)]
    pub timeout: Option<DurationSpec>,
    /// Address-space limit per process (RLIMIT_AS).
    #[serde(default)]
    pub memory: Option<SizeSpec>,
    /// Maximum processes of the user (RLIMIT_NPROC).
    #[serde(default)]
    pub processes: Option<u64>,
    /// Maximum open file descriptors per process (RLIMIT_NOFILE).
    #[serde(default)]
    pub open_files: Option<u64>,
    /// CPU time per process (RLIMIT_CPU).
    #[serde(default)]
    pub cpu: Option<DurationSpec>,
    /// Allow core dumps; off by default because a core dump can contain credentials.
    #[serde(default)]
    pub core_dumps: bool,
}

/// Credentials delivered to the app.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawCredentials {
    /// Vault service the keys belong to.
    #[schemars(with = "String")]
    pub service: Spanned<String>,
    /// Required keys: a missing one fails preflight.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub keys: Vec<Spanned<String>>,
    /// Keys delivered when present.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub optional: Vec<Spanned<String>>,
    /// Format written to the pipe.
    #[serde(default)]
    pub format: CredentialFormat,
    /// Descriptor number of the pipe's read end in the app.
    #[serde(default = "default_credentials_fd")]
    #[schemars(with = "i32")]
    pub fd: Spanned<i32>,
}

fn default_credentials_fd() -> Spanned<i32> {
    unplaced(3)
}

/// Format of the credentials written to the pipe.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CredentialFormat {
    /// `KEY="value"` lines, readable by the usual dotenv loaders.
    #[default]
    Dotenv,
    /// One JSON object of key to value.
    Json,
}

/// The e-mail sending guard.
#[derive(Debug, Default, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawEmail {
    /// Tier number to the minimum confidence (0 to 1) needed to send.
    #[serde(default)]
    #[schemars(with = "BTreeMap<u32, f64>")]
    pub thresholds: BTreeMap<u32, Spanned<f64>>,
    /// Recipients never to write to: exact addresses or `*@domain` patterns, case-insensitive.
    #[serde(default)]
    #[schemars(with = "Vec<String>")]
    pub off_limits: Vec<Spanned<String>>,
    /// Extra regular expressions matched against subject and body.
    #[serde(default)]
    pub suspicious_patterns: Vec<String>,
    /// How long an identical decision is served from the cache.
    #[serde(default)]
    pub cache_ttl: Option<DurationSpec>,
}

/// Audit options.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawAudit {
    /// Record every e-mail decision, sent or blocked.
    #[serde(default = "yes")]
    pub log_all_sends: bool,
    /// Keep the draft of each e-mail in its audit record.
    #[serde(default = "yes")]
    pub store_drafts: bool,
}

impl Default for RawAudit {
    fn default() -> Self {
        Self {
            log_all_sends: true,
            store_drafts: true,
        }
    }
}

/// Treatment of preflight findings.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawPreflight {
    /// A credential past its rotation date.
    #[serde(default = "warn")]
    pub rotation_overdue: Severity,
    /// `.env` files or inline secrets in MCP configs inside the app's grants.
    #[serde(default = "fail")]
    pub plaintext_secrets: Severity,
}

impl Default for RawPreflight {
    fn default() -> Self {
        Self {
            rotation_overdue: Severity::Warn,
            plaintext_secrets: Severity::Fail,
        }
    }
}

fn warn() -> Severity {
    Severity::Warn
}

fn fail() -> Severity {
    Severity::Fail
}

/// Whether a preflight finding only warns or stops the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Print and audit a warning, then run.
    Warn,
    /// Refuse the run.
    Fail,
}

/// Whether a run may start with less than the policy asked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Enforcement {
    /// Refuse to run if any requested restriction cannot be enforced.
    #[default]
    Strict,
    /// Run, and print and audit every restriction that is missing.
    BestEffort,
}
