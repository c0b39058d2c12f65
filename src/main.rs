//! The `safe-exec` binary: parse the command line, set up logging, dispatch,
//! and turn the outcome into an exit code.

use std::process::ExitCode;

use safe_exec::{cli, commands};
use tracing_subscriber::EnvFilter;

fn main() -> ExitCode {
    let cli = cli::parse();
    init_logging(cli.global.verbose, cli.global.quiet);

    match commands::dispatch(cli) {
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(255)),
        Err(failure) => {
            eprintln!("safe-exec: {}", failure.message);
            failure.code.into()
        }
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
        .with_writer(std::io::stderr)
        .with_target(false)
        .init();
}
