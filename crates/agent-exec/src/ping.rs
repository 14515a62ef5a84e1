//! Ping nodes (`ping IP` in ha.cf) through a raw ICMP socket: an echo
//! request to each every keepalive; each echo reply from one of them is
//! reported to the runner, which feeds [`hadisk_agent::node::Node::ping_reply`].
//!
//! A raw socket needs CAP_NET_RAW, which the agent has (it runs as root to
//! manage addresses and mounts). This avoids depending on a `ping` binary
//! (minimal systems have none) and one process per probe every keepalive.
//! A raw ICMP socket receives every ICMP packet of the namespace, so replies
//! are matched on the identifier (this process's) and on the source address.

use std::io::Read;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::atomic::{AtomicU16, Ordering};

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::io::unix::AsyncFd;

/// ICMP echo request.
const ECHO_REQUEST: u8 = 8;
/// ICMP echo reply.
const ECHO_REPLY: u8 = 0;
/// The largest packet read: an IPv4 header with options plus an echo.
pub const MAX_PACKET_BYTES: usize = 1500;

/// The raw socket and the identifier of this agent's echoes.
#[derive(Debug)]
pub struct Pinger {
    sock: AsyncFd<Socket>,
    ident: u16,
    seq: AtomicU16,
}

/// The internet checksum (RFC 1071).
pub fn checksum(data: &[u8]) -> u16 {
    let mut sum: u32 = data
        .chunks(2)
        .map(|c| u32::from(u16::from_be_bytes([c[0], c.get(1).copied().unwrap_or(0)])))
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// An echo request with `ident` and `seq`.
pub fn echo_request(ident: u16, seq: u16) -> [u8; 16] {
    let mut p = [0u8; 16];
    p[0] = ECHO_REQUEST;
    p[4..6].copy_from_slice(&ident.to_be_bytes());
    p[6..8].copy_from_slice(&seq.to_be_bytes());
    p[8..16].copy_from_slice(b"hadiskhb");
    let c = checksum(&p);
    p[2..4].copy_from_slice(&c.to_be_bytes());
    p
}

/// The source of an IPv4 packet holding an echo reply with `ident`.
pub fn reply_source(packet: &[u8], ident: u16) -> Option<Ipv4Addr> {
    let ihl = usize::from(packet.first()? & 0x0f) * 4;
    let icmp = packet.get(ihl..)?;
    let src = packet.get(12..16)?;
    if *icmp.first()? != ECHO_REPLY || icmp.get(4..6)? != ident.to_be_bytes() {
        return None;
    }
    Some(Ipv4Addr::new(src[0], src[1], src[2], src[3]))
}

impl Pinger {
    /// Opens the raw socket.
    pub fn open() -> std::io::Result<Self> {
        let s = Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4))?;
        s.set_nonblocking(true)?;
        // SAFETY: the Socket owns its descriptor, which stays open and the
        // same until the AsyncFd (which owns the Socket) is dropped.
        let sock = unsafe { AsyncFd::register(s) }.map_err(|e| e.into_parts().1)?;
        Ok(Pinger {
            sock,
            ident: (std::process::id() & 0xffff) as u16,
            seq: AtomicU16::new(0),
        })
    }

    /// Sends one echo request to `ip`.
    pub fn send(&self, ip: Ipv4Addr) -> std::io::Result<()> {
        let seq = self.seq.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        let p = echo_request(self.ident, seq);
        let to = SockAddr::from(SocketAddrV4::new(ip, 0));
        self.sock.get_ref().send_to(&p, &to).map(|_| ())
    }

    /// Waits for the next echo reply to this agent; its source.
    pub async fn reply(&self) -> std::io::Result<Ipv4Addr> {
        let mut buf = [0u8; MAX_PACKET_BYTES];
        loop {
            let mut guard = self.sock.readable().await?;
            match guard.try_io(|inner| inner.get_ref().read(&mut buf)) {
                Ok(Ok(n)) => {
                    if let Some(src) = buf.get(..n).and_then(|p| reply_source(p, self.ident)) {
                        return Ok(src);
                    }
                }
                Ok(Err(e)) => return Err(e),
                Err(_would_block) => continue,
            }
        }
    }
}

/// Resolves ha.cf's `ping` entries to IPv4 addresses.
pub fn resolve(names: &[String]) -> Result<Vec<Ipv4Addr>, String> {
    names
        .iter()
        .map(|n| {
            if let Ok(ip) = n.parse::<Ipv4Addr>() {
                return Ok(ip);
            }
            std::net::ToSocketAddrs::to_socket_addrs(&(n.as_str(), 0))
                .ok()
                .and_then(|mut a| {
                    a.find_map(|a| match a.ip() {
                        std::net::IpAddr::V4(v4) => Some(v4),
                        std::net::IpAddr::V6(_) => None,
                    })
                })
                .ok_or_else(|| {
                    format!("ha.cf: ping node '{n}' has no IPv4 address; write its address")
                })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn echo_and_reply() {
        let p = echo_request(0x1234, 7);
        assert_eq!(checksum(&p), 0, "a packet with its checksum sums to zero");
        let mut reply = vec![
            0x45u8, 0, 0, 36, 0, 0, 0, 0, 64, 1, 0, 0, 10, 0, 0, 9, 10, 0, 0, 1,
        ];
        let mut icmp = p;
        icmp[0] = ECHO_REPLY;
        reply.extend_from_slice(&icmp);
        assert_eq!(
            reply_source(&reply, 0x1234),
            Some(Ipv4Addr::new(10, 0, 0, 9))
        );
        assert_eq!(reply_source(&reply, 0x1235), None);
        assert_eq!(reply_source(&reply[..22], 0x1234), None);
        assert_eq!(reply_source(&[], 0x1234), None);
    }
}
