//! `hadisk`: the command-line entry point. Parses the command line, runs the
//! offline commands in-process, sends the others to the daemon, and maps
//! outcomes to exit codes: 0 success, 1 failure, 2 usage (clap's own).

use std::process::ExitCode;

use clap::Parser;

use hadisk::cli::{Cli, Command};

fn main() -> ExitCode {
    let cli = Cli::parse();
    if matches!(cli.command, Command::Daemon) {
        keep_freed_buffers();
        raise_descriptor_limit();
    }
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

/// The daemon's data path allocates and frees megabyte buffers all the time
/// (NBD payloads, peer frames, resync reads). glibc serves those from fresh
/// `mmap`s (above its adaptive threshold) and hands freed heap tops back to
/// the kernel, so each buffer's pages were faulted in and zeroed again:
/// 5-8 % of a 4 GiB resync's CPU (`perf`: page faults, `clear_page`,
/// `munmap`, mmap_lock contention between pool threads). A fixed 32 MiB
/// threshold and a 64 MiB trim threshold keep freed buffers for reuse;
/// what stays allocated is bounded by the in-flight limits, not by load.
fn keep_freed_buffers() {
    #[cfg(target_env = "gnu")]
    // SAFETY: mallopt only changes allocator tunables; called before any
    // other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 64 << 20);
    }
}

/// Large write payloads travel in pipes (two descriptors each, several
/// pipes per payload in flight: `hadisk_payload`), so the daemon takes the
/// descriptor limit it is allowed (soft = hard), as servers with many
/// connections do. Running out is not fatal either way: a payload that
/// finds no descriptor for a pipe is held in memory instead.
fn raise_descriptor_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a valid rlimit for the kernel to fill, then read.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}
