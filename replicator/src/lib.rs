//! The `hadisk` binary's library: the CLI definition, the control protocol,
//! the daemon (tokio: NBD listener, control socket, peer link) and the
//! offline metadata commands. I/O and glue only: the formats and the
//! replication rules live in the pure crates under `crates/` and `metadata/`.

pub mod agent;
pub mod cli;
pub mod control;
pub mod daemon;
pub mod demo;
pub mod md;
pub mod status;

use anyhow::Result;

use cli::{Cli, Command, GlobalOpts};
use control::Request;

/// Runs one command to completion.
pub fn run(cli: Cli) -> Result<()> {
    let g = cli.global;
    match cli.command {
        Command::Daemon => daemon::run(&g),
        Command::CreateMd {
            resource,
            force,
            yes,
        } => md::create_md(&g, &resource, force, yes),
        Command::DumpMd { resource, json } => md::dump_md(&g, &resource, json),
        Command::Status { resource, json } => {
            let report = status_of(&g, resource)?;
            if json {
                emit(&format!("{}\n", serde_json::to_string_pretty(&report)?))?;
            } else {
                emit(&status::render_status(&report))?;
            }
            Ok(())
        }
        Command::Overview => {
            let report = status_of(&g, None)?;
            emit(&status::render_overview(&report))?;
            Ok(())
        }
        Command::Agent { ha_dir, action } => agent::run(&g, ha_dir, action),
        Command::Demo => demo::run(),
        other => {
            let request = to_request(&g, other)?;
            let response = control::call(&g.run_dir, &request)?;
            if !response.ok {
                anyhow::bail!("{}", response.message);
            }
            if !response.message.is_empty() {
                emit(&format!("{}\n", response.message))?;
            }
            Ok(())
        }
    }
}

/// Writes to stdout; a closed pipe (`hadisk status | grep -q …`,
/// `dump-md | head`) ends the output quietly instead of panicking as
/// `println!` would.
pub(crate) fn emit(text: &str) -> Result<()> {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(anyhow::anyhow!("writing to standard output: {e}"))
        }
        _ => Ok(()),
    }
}

fn status_of(g: &GlobalOpts, resource: Option<String>) -> Result<status::StatusReport> {
    let response = control::call(&g.run_dir, &Request::Status { resource })?;
    if !response.ok {
        anyhow::bail!("{}", response.message);
    }
    response
        .status
        .ok_or_else(|| anyhow::anyhow!("the daemon answered a status request without a status"))
}

/// This node's name: `--node`, else the host name, as drbdadm uses `uname -n`.
pub fn node_name(g: &GlobalOpts) -> Result<String> {
    if let Some(n) = &g.node {
        return Ok(n.clone());
    }
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").map_err(|e| {
        anyhow::anyhow!(
            "cannot read the host name (/proc/sys/kernel/hostname): {e}; pass --node NAME"
        )
    })?;
    Ok(name.trim().to_string())
}

fn to_request(g: &GlobalOpts, command: Command) -> Result<Request> {
    Ok(match command {
        Command::Up { resource, wait } => Request::Up {
            resource,
            config: std::path::absolute(&g.config)?,
            node: node_name(g)?,
            wait,
        },
        Command::Down { resource } => Request::Down { resource },
        Command::Primary { resource, force } => Request::Primary { resource, force },
        Command::Secondary { resource } => Request::Secondary { resource },
        Command::Connect {
            resource,
            discard_my_data,
        } => Request::Connect {
            resource,
            discard_my_data,
        },
        Command::Disconnect { resource } => Request::Disconnect { resource },
        Command::Invalidate { resource } => Request::Invalidate { resource },
        Command::InvalidateRemote { resource } => Request::InvalidateRemote { resource },
        Command::Verify { resource } => Request::Verify { resource },
        Command::PauseSync { resource } => Request::PauseSync { resource },
        Command::ResumeSync { resource } => Request::ResumeSync { resource },
        Command::CreateMd { .. }
        | Command::DumpMd { .. }
        | Command::Daemon
        | Command::Status { .. }
        | Command::Overview
        | Command::Agent { .. }
        | Command::Demo => {
            anyhow::bail!("internal: {command:?} is not a daemon request")
        }
    })
}
