//! Runs the parsed command line. Each submodule owns one command group and
//! returns the process exit code, or a `Failure` that `main` prints.

pub mod audit;
pub mod cred;
pub mod doctor;
pub mod policy;
pub mod rate;
pub mod run;

use std::fmt::Display;

use crate::cli::{Cli, Command};
use crate::context::Context;
use crate::exit::{Code, HasExitCode};

/// A command that failed: the message for stderr and the exit code.
#[derive(Debug)]
pub struct Failure {
    pub code: Code,
    pub message: String,
}

impl Failure {
    /// Builds a failure from a code and a message.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }
}

impl<E: HasExitCode + Display> From<E> for Failure {
    fn from(err: E) -> Self {
        Self {
            code: err.exit_code(),
            message: err.to_string(),
        }
    }
}

/// The result of a command: its exit code, or a failure to report.
pub type Outcome = Result<i32, Failure>;

/// Runs `cli` and returns the exit code.
pub fn dispatch(cli: Cli) -> Outcome {
    let context = Context::new(cli.global.vault.clone(), cli.global.policy_dir.clone());
    crate::vault::set_passphrase_source(crate::vault::PassphraseSource {
        fd: cli.global.passphrase.passphrase_fd,
        env: cli.global.passphrase.passphrase_env.clone(),
    });
    match cli.command {
        Command::Run(args) => run::run(&context, args),
        Command::Check(args) => run::check(&context, args),
        Command::Doctor(args) => doctor::doctor(&context, args.json),
        Command::Init(args) => cred::init(&context, args),
        Command::Cred(command) => cred::cred(&context, command),
        Command::Validate(args) => cred::validate(&context, args),
        Command::Rate(command) => rate::rate(&context, command),
        Command::Guard(command) => rate::guard(&context, command),
        Command::Client(command) => rate::client(command),
        Command::TestChannelServer(args) => rate::test_channel_server(&context, args),
        Command::TestRateBench(args) => rate::test_rate_bench(&context, args),
        Command::Audit(command) => audit::audit(&context, command),
        Command::Policy(command) => policy::policy(&context, command),
        Command::External(args) => Err(Failure::new(
            Code::Usage,
            format!("unknown command {:?}; run `safe-exec --help`", args.first()),
        )),
    }
}
