//! The heartbeat paths of `ha.cf`: one receive socket on `udpport` and one
//! send socket per path, each bound to its interface (SO_BINDTODEVICE), so
//! that a heartbeat leaves by the link it is meant to test and not by
//! whatever route the table prefers.
//!
//! - `bcast IFACE`: to 255.255.255.255:udpport out of IFACE.
//! - `ucast IFACE IP`: to IP:udpport out of IFACE. A ucast to one of this
//!   node's own addresses is skipped, as Heartbeat does, so both nodes can
//!   share one ha.cf listing both addresses.
//!
//! IPv4 only (the seed's setup and every Heartbeat example); an IPv6 ucast
//! is refused at start with a message rather than silently never sent.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket as StdUdp};

use hadisk_agent::wire::MAX_MESSAGE_BYTES;
use hadisk_config::ha::HaCf;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::UdpSocket;

/// Why the heartbeat sockets cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum TransportError {
    /// A socket call failed.
    #[error("heartbeat socket ({what}): {source}")]
    Socket {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// An IPv6 ucast address.
    #[error("ha.cf: `ucast {iface} {addr}`: IPv6 heartbeats are not supported; use the peer's IPv4 address")]
    Ipv6 {
        /// The interface.
        iface: String,
        /// The address.
        addr: IpAddr,
    },
    /// No path is left once ucasts to this node's own addresses are removed.
    #[error("ha.cf: no heartbeat path to the peer (every ucast names one of this node's own addresses and there is no bcast)")]
    NoPath,
}

fn sock_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> TransportError {
    let what = what.into();
    move |source| TransportError::Socket { what, source }
}

/// One way out.
#[derive(Debug)]
pub struct Path {
    /// `bcast eth0` / `ucast eth0 10.0.0.2`, for logs.
    pub label: String,
    sock: UdpSocket,
    dest: SocketAddr,
}

/// The receive socket and the send paths.
#[derive(Debug)]
pub struct Transport {
    recv: UdpSocket,
    /// The send paths.
    pub paths: Vec<Path>,
}

fn udp(what: &str) -> Result<Socket, TransportError> {
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))
        .map_err(sock_err(format!("{what}: socket")))?;
    s.set_nonblocking(true)
        .map_err(sock_err(format!("{what}: non-blocking")))?;
    Ok(s)
}

fn into_tokio(s: Socket, what: &str) -> Result<UdpSocket, TransportError> {
    UdpSocket::from_std(StdUdp::from(s)).map_err(sock_err(format!("{what}: tokio")))
}

/// Whether `ip` is one of this host's (this namespace's) addresses: binding
/// to it succeeds only then.
fn is_local(ip: Ipv4Addr) -> bool {
    StdUdp::bind(SocketAddrV4::new(ip, 0)).is_ok()
}

fn send_socket(iface: &str, label: &str, broadcast: bool) -> Result<UdpSocket, TransportError> {
    let s = udp(label)?;
    s.bind_device(Some(iface.as_bytes()))
        .map_err(sock_err(format!("{label}: bind to interface {iface}")))?;
    if broadcast {
        s.set_broadcast(true)
            .map_err(sock_err(format!("{label}: SO_BROADCAST")))?;
    }
    s.bind(&SocketAddr::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 0)).into())
        .map_err(sock_err(format!("{label}: bind")))?;
    into_tokio(s, label)
}

impl Transport {
    /// Opens the sockets ha.cf describes.
    pub fn open(hacf: &HaCf) -> Result<Self, TransportError> {
        let port = hacf.udpport;
        let what = format!("receive on udp port {port}");
        let r = udp(&what)?;
        r.set_reuse_address(true)
            .map_err(sock_err(format!("{what}: SO_REUSEADDR")))?;
        r.set_broadcast(true)
            .map_err(sock_err(format!("{what}: SO_BROADCAST")))?;
        r.bind(&SocketAddr::from(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)).into())
            .map_err(sock_err(format!("{what}: bind")))?;
        let recv = into_tokio(r, &what)?;
        let mut paths = Vec::new();
        for iface in &hacf.bcast {
            let label = format!("bcast {iface}");
            paths.push(Path {
                sock: send_socket(iface, &label, true)?,
                dest: SocketAddrV4::new(Ipv4Addr::BROADCAST, port).into(),
                label,
            });
        }
        for u in &hacf.ucast {
            let IpAddr::V4(ip) = u.addr else {
                return Err(TransportError::Ipv6 {
                    iface: u.iface.clone(),
                    addr: u.addr,
                });
            };
            if is_local(ip) {
                continue;
            }
            let label = format!("ucast {} {ip}", u.iface);
            paths.push(Path {
                sock: send_socket(&u.iface, &label, false)?,
                dest: SocketAddrV4::new(ip, port).into(),
                label,
            });
        }
        if paths.is_empty() {
            return Err(TransportError::NoPath);
        }
        Ok(Transport { recv, paths })
    }

    /// Sends one heartbeat on every path. A path that fails (its link is
    /// down, no route) is reported, the others still get it.
    pub async fn send(&self, datagram: &[u8]) -> Vec<(String, std::io::Error)> {
        let mut failed = Vec::new();
        for p in &self.paths {
            if let Err(e) = p.sock.send_to(datagram, p.dest).await {
                failed.push((p.label.clone(), e));
            }
        }
        failed
    }

    /// Receives one datagram into `buf` (sized one byte beyond the largest
    /// heartbeat, so an oversized datagram is seen as such, not truncated
    /// into a valid-looking one).
    pub async fn recv(
        &self,
        buf: &mut [u8; MAX_MESSAGE_BYTES + 1],
    ) -> std::io::Result<(usize, SocketAddr)> {
        self.recv.recv_from(buf).await
    }
}
