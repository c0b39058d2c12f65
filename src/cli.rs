//! Command-line interface: clap definitions only. `commands` runs them.

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{Args, FromArgMatches, Parser, Subcommand, ValueEnum};

/// Run an app under its sandbox policy: Landlock, seccomp, no capabilities,
/// credentials through an inherited pipe, and a tamper-evident audit log.
///
/// `safe-exec APP [-- ARGS...]` is short for `safe-exec run APP [-- ARGS...]`.
#[derive(Debug, Parser)]
#[command(name = "safe-exec", version, propagate_version = true)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes.
#[derive(Debug, Args)]
pub struct GlobalArgs {
    /// Vault directory (credentials, audit logs, rate-limit state).
    /// Default: $SAFE_EXEC_VAULT, else ~/.my-workspace-vault.
    #[arg(long, global = true, env = "SAFE_EXEC_VAULT", value_name = "DIR")]
    pub vault: Option<PathBuf>,

    /// Directory of the `<app>.yaml` policies.
    /// Default: $SAFE_EXEC_POLICY_DIR, else ./policies, else ~/.config/safe-exec/policies.
    #[arg(long, global = true, env = "SAFE_EXEC_POLICY_DIR", value_name = "DIR")]
    pub policy_dir: Option<PathBuf>,

    /// More log output on stderr (repeat for more); RUST_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// Only errors on stderr.
    #[arg(short, long, global = true, conflicts_with = "verbose")]
    pub quiet: bool,

    #[command(flatten)]
    pub passphrase: PassphraseSource,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run an app under its policy.
    Run(RunArgs),
    /// Run the preflight checks of the named apps (every policy when none is named) without running them.
    Check(CheckArgs),
    /// First-time setup: create the vault and its master key.
    Init(InitArgs),
    /// Report what this kernel and host support and what each policy feature needs.
    Doctor(JsonFlag),
    /// Store, read, list, rotate and migrate credentials.
    #[command(subcommand)]
    Cred(CredCommand),
    /// Check file permissions of the vault, key file, logs and policies (0700 directories, 0600 files).
    Validate(ValidateArgs),
    /// Inspect, take from and reset the rate-limit buckets.
    #[command(subcommand)]
    Rate(RateCommand),
    /// Verify, search, report on and follow the audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Ask the e-mail guard about a message outside a run.
    #[command(subcommand)]
    Guard(GuardCommand),
    /// Talk to the supervisor from inside a sandboxed run.
    #[command(subcommand)]
    Client(ClientCommand),
    /// Check, show and generate policies.
    #[command(subcommand)]
    Policy(PolicyCommand),
    /// Test only: serve the request channel to a command run without any
    /// sandbox, so the channel can be tested and measured on its own.
    #[command(name = "test-channel-server", hide = true)]
    TestChannelServer(TestChannelServerArgs),
    /// Test only: time rate-limit acquisitions, for `scripts/bench-rate`.
    #[command(name = "test-rate-bench", hide = true)]
    TestRateBench(TestRateBenchArgs),
    #[command(external_subcommand)]
    External(Vec<OsString>),
}

/// Arguments of the hidden `test-rate-bench` command.
#[derive(Debug, Args)]
pub struct TestRateBenchArgs {
    /// The app whose bucket to take from; not needed with --channel.
    #[arg(long)]
    pub app: Option<String>,
    /// The bucket to take one token from per iteration.
    #[arg(long)]
    pub bucket: String,
    /// Acquisitions to time.
    #[arg(long, default_value_t = 1000)]
    pub iterations: usize,
    /// Go through the request channel in SAFE_EXEC_SOCKET instead of the state files.
    #[arg(long)]
    pub channel: bool,
}

/// Arguments of the hidden `test-channel-server` command.
#[derive(Debug, Args)]
pub struct TestChannelServerArgs {
    /// The app whose policy supplies the rate limits and e-mail settings.
    #[arg(long)]
    pub app: String,
    /// Where to create the socket.
    #[arg(long, value_name = "PATH")]
    pub socket: PathBuf,
    /// Run id stamped on audit records.
    #[arg(long, default_value = "test-run")]
    pub run_id: String,
    /// Requests per second the run may send (burst four times this); default 100.
    #[arg(long)]
    pub requests_per_second: Option<f64>,
    /// The command to serve, with `SAFE_EXEC_SOCKET` set in its environment.
    #[arg(last = true, required = true)]
    pub command: Vec<OsString>,
}

/// A `--json` switch for commands that print a listing or report.
#[derive(Debug, Args)]
pub struct JsonFlag {
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RunArgs {
    /// The app: the stem of its policy file.
    pub app: String,

    /// Run every check and print the resolved plan, but do not run the app.
    #[arg(long)]
    pub dry_run: bool,

    /// Skip the preflight checks (the run is audited with a warning).
    #[arg(long)]
    pub skip_preflight: bool,

    /// With --dry-run: print the report as JSON.
    #[arg(long)]
    pub json: bool,

    /// Arguments appended to the policy's command.
    #[arg(last = true)]
    pub args: Vec<OsString>,
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// Apps to check; every policy in the policy directory when none is given.
    pub apps: Vec<String>,

    /// Print one JSON report per app, one per line.
    #[arg(long)]
    pub json: bool,
}

/// Storage of the vault's master key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeyBackend {
    /// The OS keyring if one responds; otherwise stop and list the other backends.
    Auto,
    /// The Secret Service over D-Bus (GNOME Keyring, KWallet, KeePassXC).
    SecretService,
    /// The kernel keyutils user keyring (lost at reboot).
    Keyutils,
    /// A key file (0600), outside the vault directory by default.
    File,
    /// A passphrase stretched with argon2id.
    Passphrase,
}

#[derive(Debug, Args)]
pub struct InitArgs {
    /// Master key storage.
    #[arg(long, value_enum, default_value = "auto")]
    pub key_backend: KeyBackend,

    /// With the file backend: the key file. Default: ~/.config/safe-exec/master.key.
    #[arg(long, value_name = "FILE")]
    pub key_file: Option<PathBuf>,
}

/// Where the vault passphrase (passphrase backend) is read from; a hidden
/// prompt on the terminal when neither is given. Never from argv.
#[derive(Debug, Args)]
pub struct PassphraseSource {
    /// Read the passphrase from this open file descriptor.
    #[arg(long, value_name = "FD", global = true)]
    pub passphrase_fd: Option<i32>,

    /// Read the passphrase from the environment variable with this name.
    #[arg(
        long,
        value_name = "VAR",
        global = true,
        conflicts_with = "passphrase_fd"
    )]
    pub passphrase_env: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum CredCommand {
    /// Store a credential; the value comes from --value-file, stdin, or a hidden prompt.
    Store(CredStoreArgs),
    /// Print a credential's value (audited).
    Get(CredKeyArgs),
    /// List credentials with ages and rotation dates, never values.
    List(CredListArgs),
    /// Delete a credential.
    Delete(CredKeyArgs),
    /// Exit 1 when any credential is past its rotation date.
    CheckRotation(JsonFlag),
    /// Replace a service's values, keeping the previous ones until the new ones are confirmed.
    Rotate(CredRotateArgs),
    /// Re-encrypt everything under a new master key.
    RotateMasterKey(CredRotateMasterKeyArgs),
    /// Import a .env file into the vault.
    Migrate(CredMigrateArgs),
    /// Write a service's credentials as the JSON that AWS Secrets Manager takes.
    ExportLambda(CredExportArgs),
    /// Open the vault and exit 0 when the master key matches; `init` runs it in a fresh process.
    #[command(hide = true)]
    VerifyKey,
}

#[derive(Debug, Args)]
pub struct CredRotateMasterKeyArgs {
    /// Passphrase backend: read the new passphrase from this open file descriptor.
    #[arg(long, value_name = "FD")]
    pub new_passphrase_fd: Option<i32>,
    /// Passphrase backend: read the new passphrase from this environment variable.
    #[arg(long, value_name = "VAR", conflicts_with = "new_passphrase_fd")]
    pub new_passphrase_env: Option<String>,
}

#[derive(Args)]
pub struct CredStoreArgs {
    #[arg(long)]
    pub service: String,
    #[arg(long)]
    pub key: String,
    /// Read the value from this file, byte for byte (a trailing newline is kept).
    /// Without it and without --value, the value is read from stdin (one
    /// trailing newline removed) or, on a terminal, from a hidden prompt.
    #[arg(long, value_name = "FILE", conflicts_with = "value")]
    pub value_file: Option<PathBuf>,
    /// The value itself. It leaks into shell history and `ps`; prefer stdin or --value-file.
    #[arg(long)]
    pub value: Option<String>,
    /// Days until the credential is due for rotation.
    #[arg(long, value_name = "DAYS")]
    pub rotate_days: Option<u32>,
}

// Written by hand so that `--value` never appears in debug output.
impl std::fmt::Debug for CredStoreArgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CredStoreArgs")
            .field("service", &self.service)
            .field("key", &self.key)
            .field("value_file", &self.value_file)
            .field("value", &self.value.as_ref().map(|_| "<redacted>"))
            .field("rotate_days", &self.rotate_days)
            .finish()
    }
}

#[derive(Debug, Args)]
pub struct CredKeyArgs {
    #[arg(long)]
    pub service: String,
    #[arg(long)]
    pub key: String,
}

#[derive(Debug, Args)]
pub struct CredListArgs {
    /// Only this service.
    #[arg(long)]
    pub service: Option<String>,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CredRotateArgs {
    #[arg(long)]
    pub service: String,
    /// Only this key; every key of the service when not given.
    #[arg(long)]
    pub key: Option<String>,
    /// Rotate even when the credential is not due.
    #[arg(long)]
    pub force: bool,
    /// Drop the previous values kept by the last rotation, once the new ones work.
    #[arg(long, conflicts_with_all = ["rollback", "force"])]
    pub confirm: bool,
    /// Restore the previous values kept by the last rotation.
    #[arg(long, conflicts_with = "force")]
    pub rollback: bool,
}

#[derive(Debug, Args)]
pub struct CredMigrateArgs {
    /// The .env file to import.
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "all",
        conflicts_with = "all"
    )]
    pub env_file: Option<PathBuf>,
    /// Service to store the keys under.
    #[arg(long, required_unless_present = "all")]
    pub service: Option<String>,
    /// Import every .env file inside the workdir of every policy.
    #[arg(long)]
    pub all: bool,
    /// Overwrite and delete the original after every value is verified.
    #[arg(long)]
    pub remove_original: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct CredExportArgs {
    #[arg(long)]
    pub service: String,
    /// Output file; created 0600, never overwritten.
    #[arg(long, value_name = "FILE")]
    pub output: PathBuf,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// Change modes to 0700 for directories and 0600 for files.
    #[arg(long)]
    pub fix: bool,
    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum RateCommand {
    /// Show tokens, capacity, refill rate and time to the next token.
    Status(RateStatusArgs),
    /// Take tokens from a bucket: exit 0 granted, 75 denied, 65 for a cost above the capacity.
    Acquire(RateAcquireArgs),
    /// Refill an app's buckets.
    Reset(RateResetArgs),
}

#[derive(Debug, Args)]
pub struct RateStatusArgs {
    #[arg(long)]
    pub app: Option<String>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct RateAcquireArgs {
    #[arg(long)]
    pub app: String,
    #[arg(long)]
    pub bucket: String,
    /// Tokens to take.
    #[arg(long, default_value_t = 1)]
    pub cost: u32,
    /// Wait up to this long for tokens, such as 30s.
    #[arg(long, value_name = "DURATION")]
    pub wait: Option<String>,
}

#[derive(Debug, Args)]
pub struct RateResetArgs {
    #[arg(long)]
    pub app: String,
    /// Only this bucket.
    #[arg(long, conflicts_with = "emergency")]
    pub bucket: Option<String>,
    /// Reset every bucket of the app at once (audited as CRITICAL).
    #[arg(long)]
    pub emergency: bool,
    /// Do not ask for confirmation.
    #[arg(long)]
    pub yes: bool,
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Check the hash chains and name the first damaged record: exit 0 intact, 1 damaged.
    Verify(AuditVerifyArgs),
    /// Find records by event, level, app, run or time, newest first.
    Search(AuditSearchArgs),
    /// Summarise runs, events and integrity over a period.
    Report(AuditReportArgs),
    /// Print the newest records and, with -f, follow new ones.
    Tail(AuditTailArgs),
    /// Compress the day files of earlier days with gzip.
    Rotate(AuditRotateArgs),
    /// Append an event from an unsandboxed caller and print its sequence number.
    Log(AuditLogArgs),
}

#[derive(Debug, Args)]
pub struct AuditVerifyArgs {
    /// An app, or `all`.
    #[arg(long, default_value = "all")]
    pub app: String,
    /// First day to check, YYYYMMDD; the link into that day is then trusted.
    #[arg(long, value_name = "YYYYMMDD")]
    pub start: Option<String>,
    /// Last day to check, YYYYMMDD; the head anchor is then not compared.
    #[arg(long, value_name = "YYYYMMDD")]
    pub end: Option<String>,
    /// Print one JSON document instead of text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct AuditSearchArgs {
    /// Event type, such as EMAIL_BLOCKED.
    #[arg(long)]
    pub event: Option<String>,
    /// INFO, WARNING or CRITICAL.
    #[arg(long)]
    pub level: Option<String>,
    /// An app, or `all` (the default).
    #[arg(long)]
    pub app: Option<String>,
    /// Only records of this run.
    #[arg(long)]
    pub run_id: Option<String>,
    /// The last day, week (7 days) or month (30 days): daily, weekly or monthly.
    #[arg(long, value_name = "PERIOD", conflicts_with = "since")]
    pub period: Option<String>,
    /// Earliest record: an RFC 3339 time or YYYYMMDD (start of that day, UTC).
    #[arg(long)]
    pub since: Option<String>,
    /// Latest record: an RFC 3339 time or YYYYMMDD (end of that day, UTC).
    #[arg(long)]
    pub until: Option<String>,
    /// Maximum number of records to print, newest first.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// Print one JSON record per line.
    #[arg(long)]
    pub json: bool,
    /// Take this RFC 3339 time as the current time (for tests).
    #[arg(long, hide = true)]
    pub now: Option<String>,
}

#[derive(Debug, Args)]
pub struct AuditReportArgs {
    /// An app, or `all`.
    #[arg(long, default_value = "all")]
    pub app: String,
    /// daily, weekly or monthly: the last 1, 7 or 30 days.
    #[arg(long, default_value = "weekly")]
    pub period: String,
    /// text, json or html (one self-contained page).
    #[arg(long, default_value = "text")]
    pub format: String,
    /// Same as --format json.
    #[arg(long)]
    pub json: bool,
    /// Take this RFC 3339 time as the current time (for tests).
    #[arg(long, hide = true)]
    pub now: Option<String>,
}

#[derive(Debug, Args)]
pub struct AuditTailArgs {
    /// Only this app; every app when not given or `all`.
    #[arg(long)]
    pub app: Option<String>,
    /// Keep following new records, across the change to a new day file.
    #[arg(short, long)]
    pub follow: bool,
    /// Records to print first.
    #[arg(short = 'n', long, default_value_t = 10)]
    pub lines: usize,
}

#[derive(Debug, Args)]
pub struct AuditRotateArgs {
    /// Only this app; every app when not given or `all`.
    #[arg(long)]
    pub app: Option<String>,
    /// Take this RFC 3339 time as the current time (for tests).
    #[arg(long, hide = true)]
    pub now: Option<String>,
}

#[derive(Debug, Args)]
pub struct AuditLogArgs {
    /// The app whose log gets the record.
    #[arg(long)]
    pub app: String,
    /// Event type, such as API_CALL. Not used with --stdin.
    #[arg(required_unless_present = "stdin")]
    pub event: Option<String>,
    /// INFO, WARNING or CRITICAL.
    #[arg(long, default_value = "INFO")]
    pub level: String,
    /// A detail as key=value; repeatable.
    #[arg(long = "detail", value_name = "KEY=VALUE")]
    pub details: Vec<String>,
    /// Details as a JSON object; --detail values are added to it.
    #[arg(long, value_name = "JSON")]
    pub details_json: Option<String>,
    /// Run id stamped on the record. Default: cli-<process id>.
    #[arg(long)]
    pub run_id: Option<String>,
    /// Read one event per line from stdin as JSON, {"event": .., "level": .., "details": {..}},
    /// and append each as its own record.
    #[arg(long, conflicts_with = "event")]
    pub stdin: bool,
    /// Append without fsync per record (faster; a crash can lose the last records).
    #[arg(long)]
    pub no_fsync: bool,
    /// Take this RFC 3339 time as the current time (for tests).
    #[arg(long, hide = true)]
    pub now: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum GuardCommand {
    /// Decide whether an e-mail may be sent.
    Email(GuardEmailArgs),
}

#[derive(Debug, Args)]
pub struct GuardEmailArgs {
    #[arg(long)]
    pub app: String,
    #[command(flatten)]
    pub message: EmailMessageArgs,
}

/// One e-mail for the guard.
#[derive(Debug, Args)]
pub struct EmailMessageArgs {
    /// Recipient; repeatable.
    #[arg(long, required = true)]
    pub to: Vec<String>,
    #[arg(long)]
    pub cc: Vec<String>,
    #[arg(long)]
    pub bcc: Vec<String>,
    #[arg(long)]
    pub subject: String,
    /// Tier of the message; its threshold comes from the policy.
    #[arg(long)]
    pub tier: u32,
    /// Classifier confidence from 0 to 1.
    #[arg(long)]
    pub confidence: f64,
    /// File with the message body.
    #[arg(long, value_name = "FILE")]
    pub body_file: Option<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Take a token from a bucket of this run's app.
    #[command(subcommand)]
    Rate(ClientRateCommand),
    /// Record an app event in the audit log.
    Audit(ClientAuditArgs),
    /// Ask the e-mail guard.
    #[command(subcommand)]
    Guard(ClientGuardCommand),
}

#[derive(Debug, Subcommand)]
pub enum ClientRateCommand {
    /// Take tokens: exit 0 granted, 75 denied, 65 impossible.
    Acquire {
        bucket: String,
        #[arg(long, default_value_t = 1)]
        cost: u32,
        /// Wait up to this long, such as 30s.
        #[arg(long, value_name = "DURATION")]
        wait: Option<String>,
    },
}

#[derive(Debug, Args)]
pub struct ClientAuditArgs {
    /// Event type, such as EMAIL_SENT or API_CALL.
    pub event: String,
    /// INFO, WARNING or CRITICAL.
    #[arg(long, default_value = "INFO")]
    pub level: String,
    /// A detail as key=value; repeatable.
    #[arg(long = "detail", value_name = "KEY=VALUE")]
    pub details: Vec<String>,
}

#[derive(Debug, Subcommand)]
pub enum ClientGuardCommand {
    /// Decide whether an e-mail may be sent.
    Email(EmailMessageArgs),
}

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Check policy files; every policy in the policy directory when none is given.
    Lint(PolicyLintArgs),
    /// Print an app's resolved policy, with defaults filled.
    Show(PolicyShowArgs),
    /// Print the JSON Schema of policy files, for editors.
    Schema,
    /// Write a policy from an app directory's security-config.json.
    Import(PolicyImportArgs),
}

#[derive(Debug, Args)]
pub struct PolicyLintArgs {
    pub files: Vec<PathBuf>,
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PolicyShowArgs {
    pub app: String,
    /// Print JSON instead of YAML-like text.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct PolicyImportArgs {
    /// App directory holding security-config.json.
    pub app_dir: PathBuf,
    /// Print the policy instead of writing policies/<app>.yaml.
    #[arg(long)]
    pub stdout: bool,
}

/// Parses the command line; `safe-exec APP ...` becomes `safe-exec run APP ...`.
///
/// Usage errors exit with 64 (EX_USAGE) instead of clap's 2, so they never
/// look like an app's own exit code 2.
pub fn parse() -> Cli {
    let args: Vec<OsString> = std::env::args_os().collect();
    let cli = parse_or_exit(&args);
    let Command::External(external) = &cli.command else {
        return cli;
    };
    let Some(app) = external.first() else {
        return cli;
    };
    let position = args
        .iter()
        .skip(1)
        .position(|arg| arg == app)
        .map_or(1, |index| index + 1);
    let mut rewritten = args.clone();
    rewritten.insert(position, OsString::from("run"));
    parse_or_exit(&rewritten)
}

fn parse_or_exit(args: &[OsString]) -> Cli {
    let parsed = command()
        .try_get_matches_from(args)
        .and_then(|matches| Cli::from_arg_matches(&matches));
    match parsed {
        Ok(cli) => cli,
        Err(err) => {
            let _ = err.print();
            let code = if err.use_stderr() {
                crate::exit::Code::Usage.as_i32()
            } else {
                0
            };
            std::process::exit(code);
        }
    }
}

/// Builds the parser that `Cli::command()` builds, but with the arguments
/// of each subcommand added only when that subcommand is parsed or shown
/// (`clap::Command::defer`). Building every subcommand took about a fifth of
/// a millisecond of each run's start-up. The texts repeat the doc comments
/// above, and a test checks that both parsers are the same.
pub fn command() -> clap::Command {
    use clap::Command as C;
    // Help lists a command's own options (numbered from 0), then the global
    // ones, then --help and --version (clap's default order, 999).
    const GLOBAL_ORDER: usize = 900;

    // An `Args` variant: the derive applies the variant's doc after the struct's own attributes.
    macro_rules! leaf {
        ($name:literal, $about:literal, $args:ty) => {
            C::new($name).about($about).defer(|cmd| {
                <$args as Args>::augment_args(cmd)
                    .about($about)
                    .long_about(None)
            })
        };
    }
    // A `#[command(subcommand)]` variant.
    macro_rules! group {
        ($name:literal, $about:literal, $sub:ty) => {
            C::new($name)
                .about($about)
                .subcommand_required(true)
                .arg_required_else_help(true)
                .defer(|cmd| {
                    <$sub as Subcommand>::augment_subcommands(cmd)
                        .about($about)
                        .long_about(None)
                })
        };
    }

    // A deferred subcommand receives the global options before its own, so
    // they get an order of their own to be listed after its own options.
    let root = GlobalArgs::augment_args(C::new("safe-exec").next_display_order(GLOBAL_ORDER))
        .next_display_order(Some(0))
        // The derive applies the struct's own attributes after its fields'.
        .version(env!("CARGO_PKG_VERSION"))
        .propagate_version(true)
        .about(
            "Run an app under its sandbox policy: Landlock, seccomp, no capabilities, \
             credentials through an inherited pipe, and a tamper-evident audit log",
        )
        .long_about(
            "Run an app under its sandbox policy: Landlock, seccomp, no capabilities, \
             credentials through an inherited pipe, and a tamper-evident audit log.\n\n\
             `safe-exec APP [-- ARGS...]` is short for `safe-exec run APP [-- ARGS...]`.",
        )
        .subcommand_required(true)
        .arg_required_else_help(true)
        .allow_external_subcommands(true)
        .external_subcommand_value_parser(clap::value_parser!(OsString));
    root.subcommands([
        leaf!("run", "Run an app under its policy", RunArgs),
        leaf!(
            "check",
            "Run the preflight checks of the named apps (every policy when none is named) without running them",
            CheckArgs
        ),
        leaf!("init", "First-time setup: create the vault and its master key", InitArgs),
        leaf!(
            "doctor",
            "Report what this kernel and host support and what each policy feature needs",
            JsonFlag
        ),
        group!("cred", "Store, read, list, rotate and migrate credentials", CredCommand),
        leaf!(
            "validate",
            "Check file permissions of the vault, key file, logs and policies (0700 directories, 0600 files)",
            ValidateArgs
        ),
        group!("rate", "Inspect, take from and reset the rate-limit buckets", RateCommand),
        group!("audit", "Verify, search, report on and follow the audit log", AuditCommand),
        group!("guard", "Ask the e-mail guard about a message outside a run", GuardCommand),
        group!("client", "Talk to the supervisor from inside a sandboxed run", ClientCommand),
        group!("policy", "Check, show and generate policies", PolicyCommand),
        leaf!(
            "test-channel-server",
            "Test only: serve the request channel to a command run without any sandbox, so the channel can be tested and measured on its own",
            TestChannelServerArgs
        )
        .hide(true),
        leaf!(
            "test-rate-bench",
            "Test only: time rate-limit acquisitions, for `scripts/bench-rate`",
            TestRateBenchArgs
        )
        .hide(true),
    ])
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    /// Describes a command and all its subcommands, with every setting that shows in help or parsing.
    fn describe(cmd: &clap::Command, out: &mut Vec<String>) {
        out.push(format!(
            "command {} about={:?} long_about={:?} hide={} required={} else_help={} external={} version={:?}",
            cmd.get_name(),
            cmd.get_about().map(ToString::to_string),
            cmd.get_long_about().map(ToString::to_string),
            cmd.is_hide_set(),
            cmd.is_subcommand_required_set(),
            cmd.is_arg_required_else_help_set(),
            cmd.is_allow_external_subcommands_set(),
            cmd.get_version(),
        ));
        let mut args: Vec<String> = cmd
            .get_arguments()
            .map(|arg| {
                format!(
                "  arg {} long={:?} short={:?} help={:?} global={} required={} env={:?} default={:?}",
                arg.get_id(),
                arg.get_long(),
                arg.get_short(),
                arg.get_help().map(ToString::to_string),
                arg.is_global_set(),
                arg.is_required_set(),
                arg.get_env(),
                arg.get_default_values(),
            )
            })
            .collect();
        args.sort();
        out.extend(args);
        // clap's own `help` subcommand copies the tree; `help_reaches_nested_commands` covers it.
        for sub in cmd.get_subcommands().filter(|sub| sub.get_name() != "help") {
            // Building a subcommand runs its deferred part, as parsing it does.
            let mut sub = sub.clone();
            sub.build();
            describe(&sub, out);
        }
    }

    #[test]
    fn deferred_parser_matches_derived() {
        let mut derived = Cli::command();
        derived.build();
        let mut deferred = command();
        deferred.build();
        let (mut want, mut got) = (Vec::new(), Vec::new());
        describe(&derived, &mut want);
        describe(&deferred, &mut got);
        for (got, want) in got.iter().zip(&want) {
            assert_eq!(got, want);
        }
        assert_eq!(got.len(), want.len());
    }

    #[test]
    fn help_reaches_nested_commands() {
        for (path, expected) in [
            (&["help", "cred", "store"][..], "Store a credential"),
            (&["audit", "verify", "--help"], "Check the hash chains"),
            (&["help", "run"], "Run an app under its policy"),
        ] {
            let args = std::iter::once("safe-exec").chain(path.iter().copied());
            let Err(err) = command().try_get_matches_from(args) else {
                panic!("{path:?} parsed without printing help");
            };
            assert_eq!(err.kind(), clap::error::ErrorKind::DisplayHelp, "{path:?}");
            assert!(err.to_string().starts_with(expected), "{path:?}: {err}");
        }
    }

    #[test]
    fn help_lists_own_options_first() {
        let mut cli = command();
        cli.build();
        let run = cli
            .find_subcommand_mut("run")
            .map(clap::Command::render_help);
        let help = run.map(|help| help.to_string()).unwrap_or_default();
        let position = |text: &str| help.find(text).unwrap_or(usize::MAX);
        assert!(position("--dry-run") < position("--vault"), "{help}");
        assert!(position("--json") < position("--vault"), "{help}");
        assert!(position("--passphrase-env") < position("--help"), "{help}");
        let mut top = command();
        let top_help = top.render_help().to_string();
        assert!(
            top_help.find("--passphrase-env") < top_help.find("--help"),
            "{top_help}"
        );
        assert!(
            top_help.find("  run ") < top_help.find("  check "),
            "{top_help}"
        );
    }

    #[test]
    fn deferred_help_matches_derived() {
        for path in [
            &[][..],
            &["run"],
            &["cred"],
            &["cred", "store"],
            &["audit", "verify"],
        ] {
            let mut derived = Cli::command();
            let mut deferred = command();
            derived.build();
            deferred.build();
            for name in path {
                derived = derived
                    .find_subcommand(name)
                    .cloned()
                    .unwrap_or_else(|| panic!("{name}"));
                deferred = deferred
                    .find_subcommand(name)
                    .cloned()
                    .unwrap_or_else(|| panic!("{name}"));
            }
            // The same lines; only the order of the options may differ.
            let lines = |cmd: &mut clap::Command| {
                let mut lines: Vec<String> = cmd
                    .render_long_help()
                    .to_string()
                    .lines()
                    .map(str::to_owned)
                    .collect();
                lines.sort();
                lines
            };
            assert_eq!(lines(&mut deferred), lines(&mut derived), "{path:?}");
        }
    }
}
