//! Gratuitous ARP after a virtual IP is added, so that clients and switches
//! move the address to this node's MAC at once (without it a client keeps
//! the old MAC for 26–53 s: testing/nfs-failover.md, pitfall 1).
//!
//! Debian has two `arping` packages that conflict and take different flags
//! (pitfall 2): iputils (`-U -I DEV -s IP`) and Thomas Habets' (`-U -i DEV
//! -S IP`, where `-s` means a source MAC and fails). [`detect`] tells them
//! apart by their own output; the flavour is detected once per agent.
//!
//! Both linger about a second waiting for replies, so the agent sends in the
//! background: the group's start does not wait for it, and a missing or
//! failing arping is logged, never a failed start (the address is up; only
//! the neighbours' caches are slow).

use std::net::Ipv4Addr;
use std::process::Stdio;
use std::time::Duration;

use tokio::process::Command;

/// Announcements per address (arping `-c`): two, as Heartbeat's IPaddr and
/// the recipe send, in case the first is lost.
pub const GARP_COUNT: u32 = 2;
/// How long an arping may run before it is killed.
pub const ARPING_LIMIT: Duration = Duration::from_secs(5);

/// Which arping is installed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavour {
    /// iputils-arping.
    Iputils,
    /// Thomas Habets' arping (Debian package `arping`).
    Habets,
    /// Neither answers as expected (or none is installed).
    Missing,
}

impl std::fmt::Display for Flavour {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Flavour::Iputils => "iputils arping",
            Flavour::Habets => "Habets arping",
            Flavour::Missing => "no arping",
        })
    }
}

/// Tells the installed arping apart by what it says about itself.
pub async fn detect() -> Flavour {
    let said = |args: &'static [&'static str]| async move {
        match Command::new("arping")
            .args(args)
            .stdin(Stdio::null())
            .kill_on_drop(true)
            .output()
            .await
        {
            Ok(o) => format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(_) => String::new(),
        }
    };
    if said(&["-V"]).await.contains("iputils") {
        return Flavour::Iputils;
    }
    if said(&["--help"]).await.contains("Habets") {
        return Flavour::Habets;
    }
    Flavour::Missing
}

/// The arping arguments announcing `ip` on `iface` for `flavour`.
pub fn arguments(flavour: Flavour, iface: &str, ip: Ipv4Addr) -> Option<Vec<String>> {
    let ip = ip.to_string();
    let count = GARP_COUNT.to_string();
    let (dev_flag, src_flag) = match flavour {
        Flavour::Iputils => ("-I", "-s"),
        Flavour::Habets => ("-i", "-S"),
        Flavour::Missing => return None,
    };
    Some(
        [
            "-q", "-U", "-c", &count, dev_flag, iface, src_flag, &ip, &ip,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect(),
    )
}

/// Sends the announcement in the background; the outcome is logged.
pub fn announce(flavour: Flavour, iface: &str, ip: Ipv4Addr) {
    let Some(args) = arguments(flavour, iface, ip) else {
        tracing::warn!(%ip, iface, "no gratuitous ARP sent: no arping found; install iputils-arping (or arping) so clients move to this node at once");
        return;
    };
    let iface = iface.to_owned();
    tokio::spawn(async move {
        match crate::cmd::run("arping", &args, ARPING_LIMIT).await {
            Ok(_) => tracing::info!(%ip, iface, tool = %flavour, "gratuitous ARP sent"),
            // iputils' arping exits 1 when no reply came, which is normal
            // for an unsolicited announcement: the packets went out.
            Err(e) if flavour == Flavour::Iputils && e.contains("(exit 1)") => {
                tracing::info!(%ip, iface, tool = %flavour, "gratuitous ARP sent")
            }
            Err(e) => tracing::warn!(%ip, iface, tool = %flavour, "gratuitous ARP failed: {e}"),
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_flavours_take_different_flags() {
        let ip = Ipv4Addr::new(10, 0, 0, 1);
        assert_eq!(
            arguments(Flavour::Iputils, "eth0", ip).unwrap().join(" "),
            "-q -U -c 2 -I eth0 -s 10.0.0.1 10.0.0.1"
        );
        assert_eq!(
            arguments(Flavour::Habets, "eth0", ip).unwrap().join(" "),
            "-q -U -c 2 -i eth0 -S 10.0.0.1 10.0.0.1"
        );
        assert_eq!(arguments(Flavour::Missing, "eth0", ip), None);
    }
}
