//! The `safe-exec` binary: parse the command line, set up logging, dispatch,
//! and turn the outcome into an exit code.

use std::process::ExitCode;

use safe_exec::{cli, commands};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = cli::parse();
    init_logging(cli.global.verbose, cli.global.quiet);
    if prints_only(&cli.command) {
        restore_sigpipe();
    }

    match commands::dispatch(cli) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(255)),
        Err(failure) => {
            eprintln!("safe-exec: {}", failure.message);
            failure.code.into()
        }
    }
}

/// Returns true for commands whose only pipe is their own stdout, so a closed
/// reader (`safe-exec policy schema | head`) should end them quietly. Every
/// other command keeps SIGPIPE ignored and sees EPIPE instead of dying: a run
/// writes to the app's pipes, and any command that appends an audit record
/// may write a CRITICAL record to the stdin of the configured alert command,
/// which can exit without reading it.
fn prints_only(command: &cli::Command) -> bool {
    use cli::{AuditCommand, Command, CredCommand, RateCommand};
    match command {
        Command::Run(args) => args.dry_run,
        Command::Check(_) | Command::Doctor(_) | Command::Policy(_) => true,
        Command::Audit(audit) => matches!(
            audit,
            AuditCommand::Verify(_)
                | AuditCommand::Search(_)
                | AuditCommand::Report(_)
                | AuditCommand::Tail(_)
        ),
        Command::Rate(RateCommand::Status(_)) => true,
        Command::Cred(CredCommand::List(_) | CredCommand::CheckRotation(_)) => true,
        _ => false,
    }
}

/// Restores the default SIGPIPE action, which the Rust runtime sets to ignore.
fn restore_sigpipe() {
    // SAFETY: installing SIG_DFL passes no handler code and happens before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn init_logging(verbose: u8, quiet: bool) {
    let default = match (quiet, verbose) {
        (true, _) => "error",
        (false, 0) => "warn",
        (false, 1) => "info",
        (false, 2) => "debug",
        (false, _) => "trace",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
