//! `hadisk`: the command-line entry point. Parses the command line, runs the
//! offline commands in-process, sends the others to the daemon, and maps
//! outcomes to exit codes: 0 success, 1 failure, 2 usage (clap's own).

use std::process::ExitCode;

use clap::Parser;

use hadisk::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_tracing(matches!(
        cli.command,
        Command::Daemon | Command::Agent { action: None, .. }
    ));
    match hadisk::run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hadisk: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// The daemon logs at info by default; one-shot commands only print warnings,
/// so that their output stays what scripts parse. `RUST_LOG` overrides both.
fn init_tracing(daemon: bool) {
    let default = if daemon { "info" } else { "warn" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
