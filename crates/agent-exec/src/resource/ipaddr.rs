//! `IPaddr::IP/PREFIX/IFACE[:LABEL][/BCAST]`: the virtual address, added
//! with `ip addr add … label IFACE:LABEL`, announced with a gratuitous ARP,
//! removed on stop.
//!
//! The `ip` tool acts in the network namespace the agent runs in (tests run
//! each node's agent in its own namespace with `nsenter --net=`).

use std::net::Ipv4Addr;
use std::time::Duration;

use crate::cmd;
use crate::garp::{self, Flavour};

/// How long one `ip` command may take.
pub const IP_LIMIT: Duration = Duration::from_secs(10);

/// A virtual address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Address {
    /// The address.
    pub addr: Ipv4Addr,
    /// Its prefix length.
    pub prefix: u8,
    /// The interface.
    pub iface: String,
    /// The label (`eth0:0`), if any.
    pub label: Option<String>,
    /// The broadcast address, if given.
    pub broadcast: Option<Ipv4Addr>,
}

/// The `ip addr add` arguments for `a`.
pub fn add_arguments(a: &Address) -> Vec<String> {
    let mut v = vec![
        "addr".to_owned(),
        "add".to_owned(),
        format!("{}/{}", a.addr, a.prefix),
        "dev".to_owned(),
        a.iface.clone(),
    ];
    if let Some(l) = &a.label {
        v.extend(["label".to_owned(), l.clone()]);
    }
    if let Some(b) = a.broadcast {
        v.extend(["broadcast".to_owned(), b.to_string()]);
    }
    v
}

/// Adds the address (unless it is there) and announces it.
pub async fn add(a: &Address, flavour: Flavour) -> Result<(), String> {
    if !is_present(a.addr, a.prefix, &a.iface).await? {
        cmd::run("ip", &add_arguments(a), IP_LIMIT).await?;
    }
    garp::announce(flavour, &a.iface, a.addr);
    Ok(())
}

/// Removes the address if it is there.
pub async fn remove(addr: Ipv4Addr, prefix: u8, iface: &str) -> Result<(), String> {
    if !is_present(addr, prefix, iface).await? {
        return Ok(());
    }
    let cidr = format!("{addr}/{prefix}");
    cmd::run("ip", &["addr", "del", &cidr, "dev", iface], IP_LIMIT)
        .await
        .map(|_| ())
}

/// Whether `iface` carries `addr/prefix`.
pub async fn is_present(addr: Ipv4Addr, prefix: u8, iface: &str) -> Result<bool, String> {
    let out = cmd::run("ip", &["-o", "-4", "addr", "show", "dev", iface], IP_LIMIT).await?;
    Ok(has_address(&out.stdout, addr, prefix))
}

/// Whether `ip -o -4 addr show` output lists `addr/prefix`.
pub fn has_address(listing: &str, addr: Ipv4Addr, prefix: u8) -> bool {
    let want = format!("{addr}/{prefix}");
    listing.lines().any(|l| {
        let mut words = l.split_whitespace();
        while let Some(w) = words.next() {
            if w == "inet" {
                return words.next() == Some(want.as_str());
            }
        }
        false
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_and_arguments() {
        let out = "2: eth0    inet 10.9.0.1/24 brd 10.9.0.255 scope global eth0\\       valid_lft forever preferred_lft forever\n2: eth0    inet 10.9.0.100/24 scope global secondary eth0:0\\       valid_lft forever\n";
        let vip = Ipv4Addr::new(10, 9, 0, 100);
        assert!(has_address(out, vip, 24));
        assert!(!has_address(out, vip, 25));
        assert!(!has_address(out, Ipv4Addr::new(10, 9, 0, 10), 24));
        let a = Address {
            addr: vip,
            prefix: 24,
            iface: "eth0".into(),
            label: Some("eth0:0".into()),
            broadcast: None,
        };
        assert_eq!(
            add_arguments(&a).join(" "),
            "addr add 10.9.0.100/24 dev eth0 label eth0:0"
        );
    }
}
