//! The peer link of one resource: listening on this node's `address`,
//! dialing the peer's, the authenticated `hadisk-peer-proto` handshake,
//! keepalive and timeouts. It hands the driver ([`super::driver`]) one
//! authenticated connection at a time ([`Driver::link_up`] with the link's
//! outgoing FIFO, [`super::link_out`]) and reports its end
//! ([`Driver::link_down`]). The reader task feeds each received message to
//! the driver itself ([`Driver::peer`]): on a Secondary, a mirrored write
//! is applied and acknowledged from the reader task, with no hop to another
//! task.
//!
//! Duplicate connections are resolved by a fixed rule: **the outgoing
//! connection of the node with the lower name is the link.** Both nodes
//! listen and both dial, but the higher-named node's dial is only a knock:
//! the lower node answers an incoming connection by closing it and dialing
//! at once, so a restarted peer is reached without waiting for a backoff.
//! On the higher node, a new authenticated incoming connection replaces
//! the current link (the peer restarted; the old one is half-open).
//!
//! Invariants:
//! - every link carries a generation number; messages and link-down reports
//!   of a link that is no longer current are dropped by the driver;
//! - the secret never goes on the wire (peer-proto's challenge-response); a
//!   failed handshake closes the connection and its reason is kept for
//!   `status` and logged;
//! - a peer that stops reading or answering never hangs us: every write to
//!   the socket has a deadline (`timeout`), and a link silent for
//!   `ping-int + max(ping-timeout, timeout)` while we send pings every
//!   `ping-int` is declared dead;
//! - garbage on the port is a logged decode error on that connection only.

use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use hadisk_nbd_server::{SpliceRead, SPLICE_MIN_BYTES};
use hadisk_peer_proto::frame::HEADER_LEN;
use hadisk_peer_proto::{DataHead, Decoder, Handshake, HandshakeConfig, HmacAlg, Message, Payload};
use hadisk_storage::{Filled, PipeFill};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tracing::{info, warn};

use super::driver::Driver;
use super::link_out::LinkOut;

/// Longest time a connection attempt plus handshake may take.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// First reconnect delay; doubled after each failure up to `connect-int`.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Read buffer growth step. Received payloads share the buffer (zero
/// copy), so a fresh one is allocated only when less than
/// [`READ_MIN_SPARE_BYTES`] is left, not at every read; the frame cut at
/// the end of a buffer is copied into the next one, so the step is several
/// 1 MiB frames (with 1 MiB, nearly every resync frame was copied once
/// more).
const READ_CHUNK_BYTES: usize = 4 * 1024 * 1024;
/// Spare capacity below which the read buffer is grown.
const READ_MIN_SPARE_BYTES: usize = 64 * 1024;

/// What the link needs to know, from the resource file.
#[derive(Clone)]
pub struct LinkConfig {
    pub resource: String,
    pub local_name: String,
    pub peer_name: String,
    pub listen: SocketAddr,
    pub peer: SocketAddr,
    pub secret: Option<Vec<u8>>,
    pub alg: HmacAlg,
    pub timeout: Duration,
    pub ping_int: Duration,
    pub ping_timeout: Duration,
    pub connect_int: Duration,
    /// `tcp-congestion`: `None` keeps the kernel's default.
    pub tcp_congestion: Option<String>,
    /// `sndbuf-size` / `rcvbuf-size` in bytes; 0 = the kernel autotunes.
    pub sndbuf_bytes: u64,
    pub rcvbuf_bytes: u64,
}

impl std::fmt::Debug for LinkConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LinkConfig")
            .field("resource", &self.resource)
            .field("listen", &self.listen)
            .field("peer", &self.peer)
            .finish()
    }
}

impl LinkConfig {
    /// The lower-named node's outgoing connection is the link.
    fn dials(&self) -> bool {
        self.local_name < self.peer_name
    }
    /// Silence after which the link is dead.
    fn rx_deadline(&self) -> Duration {
        self.ping_int + self.ping_timeout.max(self.timeout)
    }
}

/// Commands from the driver (the core's `Dial` / `CloseLink`).
#[derive(Debug)]
pub enum LinkCmd {
    Dial,
    Close { redial: bool },
    Stop,
}

/// Why the link is not up, shown by `status` (a wrong secret, …).
pub type LastError = Arc<Mutex<Option<String>>>;

/// The peer address bound, before the driver exists (`up` binds every
/// address before it touches the metadata).
#[derive(Debug)]
pub struct Bound {
    cfg: LinkConfig,
    listener: TcpListener,
}

/// Binds the listener (an error names the address). The congestion control
/// is set on the listening socket, whose accepted connections inherit it,
/// and tried here once: if the kernel refuses it the log says so and the
/// link's dials do not try again.
pub async fn bind(mut cfg: LinkConfig) -> anyhow::Result<Bound> {
    let cannot = |e: std::io::Error| {
        anyhow::anyhow!(
            "{}: cannot listen on the peer address {}: {e} (address in the resource file)",
            cfg.resource,
            cfg.listen
        )
    };
    let socket = new_socket(cfg.listen).map_err(cannot)?;
    if let Err(e) = set_congestion(&socket, cfg.tcp_congestion.as_deref()) {
        warn!(
            resource = %cfg.resource,
            error = %e,
            "tcp-congestion {}: refused by the kernel; the peer link uses the system's default (see /proc/sys/net/ipv4/tcp_allowed_congestion_control)",
            cfg.tcp_congestion.as_deref().unwrap_or_default()
        );
        cfg.tcp_congestion = None;
    }
    // On the listening socket too: accepted connections inherit its
    // buffer sizes (and that they are fixed).
    set_buffers(&socket, &cfg).map_err(cannot)?;
    let (sndbuf, rcvbuf) = buffer_sizes(&socket);
    for (key, want, got, sysctl) in [
        ("sndbuf-size", cfg.sndbuf_bytes, sndbuf, "net.core.wmem_max"),
        ("rcvbuf-size", cfg.rcvbuf_bytes, rcvbuf, "net.core.rmem_max"),
    ] {
        // An odd size is set as its even half twice over.
        if want != 0 && got < want / 2 * 2 {
            warn!(
                resource = %cfg.resource,
                "{key} {want}: the kernel allows {got} bytes ({sysctl}; a daemon with CAP_NET_ADMIN is not capped)"
            );
        }
    }
    let listener = socket
        .set_reuseaddr(true)
        .and_then(|()| socket.bind(cfg.listen))
        .and_then(|()| socket.listen(LISTEN_BACKLOG))
        .map_err(cannot)?;
    Ok(Bound { cfg, listener })
}

/// Pending connections the peer port queues (the peer dials one at a time;
/// the rest is room for strangers and garbage senders).
const LISTEN_BACKLOG: u32 = 64;

fn new_socket(addr: SocketAddr) -> std::io::Result<TcpSocket> {
    if addr.is_ipv4() {
        TcpSocket::new_v4()
    } else {
        TcpSocket::new_v6()
    }
}

/// Sets the peer link's congestion control before the socket connects or
/// listens: changed on an established connection, the kernel would keep
/// pacing it if the default algorithm had asked for pacing. The default
/// (`cubic`) is not the machine's on purpose: a pacing algorithm (BBR)
/// spaces a replicated write's segments out over time and protocol C waits
/// for the last one (1 MiB writes through a loopback pair: 1.37–1.51 GB/s
/// with BBR as the system's default, 1.66–1.82 with cubic).
fn set_congestion(socket: &TcpSocket, name: Option<&str>) -> std::io::Result<()> {
    match name {
        Some(name) => socket2::SockRef::from(socket).set_tcp_congestion(name.as_bytes()),
        None => Ok(()),
    }
}

/// Fixes the socket's send and receive buffers at `sndbuf-size` and
/// `rcvbuf-size` (0 leaves one to the kernel's autotuning). As in DRBD the
/// socket's buffer is the configured size itself: `setsockopt` doubles
/// what it is given (room for the kernel's bookkeeping), so it gets half.
/// The `…FORCE` options, which root's `CAP_NET_ADMIN` allows, pass
/// `net.core.wmem_max` / `rmem_max` (208 KiB on many systems); without
/// the capability the plain ones are capped there and `bind` says so.
fn set_buffers(socket: &TcpSocket, cfg: &LinkConfig) -> std::io::Result<()> {
    let fd = socket.as_raw_fd();
    for (bytes, force, plain) in [
        (cfg.sndbuf_bytes, libc::SO_SNDBUFFORCE, libc::SO_SNDBUF),
        (cfg.rcvbuf_bytes, libc::SO_RCVBUFFORCE, libc::SO_RCVBUF),
    ] {
        if bytes == 0 {
            continue;
        }
        let half = libc::c_int::try_from(bytes / 2).unwrap_or(libc::c_int::MAX);
        if set_int_option(fd, force, half).is_err() {
            set_int_option(fd, plain, half)?;
        }
    }
    Ok(())
}

fn set_int_option(fd: RawFd, option: libc::c_int, value: libc::c_int) -> std::io::Result<()> {
    // SAFETY: `value` is a live c_int for the duration of the call and its
    // size is passed along; `fd` is a socket the caller owns.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            option,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The socket's send and receive buffers as the kernel has them (0 when
/// it cannot say).
fn buffer_sizes(socket: &impl AsFd) -> (u64, u64) {
    let s = socket2::SockRef::from(socket);
    (
        s.send_buffer_size().map_or(0, |n| n as u64),
        s.recv_buffer_size().map_or(0, |n| n as u64),
    )
}

impl Bound {
    /// Starts the manager, which takes its commands from `cmds` (the
    /// driver's `Dial` / `CloseLink`).
    pub fn start(
        self,
        driver: Arc<Driver>,
        cmds: mpsc::UnboundedReceiver<LinkCmd>,
        last_error: LastError,
    ) {
        tokio::spawn(Manager::new(self.cfg, driver, last_error).run(self.listener, cmds));
    }
}

enum Note {
    /// A handshake finished: (outgoing?, result).
    Handshaken(bool, Result<Conn, String>),
    /// A link's tasks ended.
    Ended(u64, String),
}

struct Conn {
    read: OwnedReadHalf,
    write: OwnedWriteHalf,
    decoder: Decoder,
    addr: SocketAddr,
}

/// The current link: its generation, its tasks and its outgoing FIFO.
struct Current {
    gen: u64,
    tasks: Vec<tokio::task::AbortHandle>,
    out: Arc<LinkOut>,
}

struct Manager {
    cfg: LinkConfig,
    driver: Arc<Driver>,
    last_error: LastError,
    want: bool,
    current: Option<Current>,
    next_gen: u64,
    dialing: bool,
    backoff: Duration,
    notes_tx: mpsc::UnboundedSender<Note>,
    notes: mpsc::UnboundedReceiver<Note>,
}

impl Manager {
    fn new(cfg: LinkConfig, driver: Arc<Driver>, last_error: LastError) -> Self {
        let (notes_tx, notes) = mpsc::unbounded_channel();
        Manager {
            cfg,
            driver,
            last_error,
            want: false,
            current: None,
            next_gen: 1,
            dialing: false,
            backoff: BACKOFF_MIN,
            notes_tx,
            notes,
        }
    }

    async fn run(mut self, listener: TcpListener, mut cmds: mpsc::UnboundedReceiver<LinkCmd>) {
        let mut dial_at = tokio::time::Instant::now();
        loop {
            let dial_due = self.want && self.current.is_none() && !self.dialing;
            tokio::select! {
                cmd = cmds.recv() => match cmd {
                    Some(LinkCmd::Dial) => {
                        self.want = true;
                        dial_at = tokio::time::Instant::now();
                    }
                    Some(LinkCmd::Close { redial }) => {
                        self.close_current();
                        self.want = redial;
                        dial_at = tokio::time::Instant::now() + self.backoff;
                    }
                    Some(LinkCmd::Stop) | None => {
                        self.close_current();
                        return;
                    }
                },
                accepted = listener.accept() => {
                    if let Ok((stream, addr)) = accepted {
                        self.incoming(stream, addr);
                        dial_at = tokio::time::Instant::now();
                    }
                }
                _ = tokio::time::sleep_until(dial_at), if dial_due => {
                    self.dialing = true;
                    let (cfg, notes) = (self.cfg.clone(), self.notes_tx.clone());
                    tokio::spawn(async move {
                        let r = outgoing(&cfg).await;
                        let _ = notes.send(Note::Handshaken(true, r));
                    });
                }
                Some(note) = self.notes.recv() => {
                    if let Some(delay) = self.note(note) {
                        dial_at = tokio::time::Instant::now() + delay;
                    }
                }
            }
        }
    }

    fn incoming(&mut self, stream: TcpStream, addr: SocketAddr) {
        if self.cfg.dials() || !self.want {
            // The knock of the higher node (or we are StandAlone): close;
            // the dial timer was reset by the caller.
            drop(stream);
            return;
        }
        let (cfg, notes) = (self.cfg.clone(), self.notes_tx.clone());
        tokio::spawn(async move {
            let r = match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&cfg, stream, addr))
                .await
            {
                Ok(r) => r,
                Err(_) => Err(format!("handshake with {addr} timed out")),
            };
            let _ = notes.send(Note::Handshaken(false, r));
        });
    }

    /// Returns a new dial delay when one should be set.
    fn note(&mut self, note: Note) -> Option<Duration> {
        match note {
            Note::Handshaken(outgoing, r) => {
                if outgoing {
                    self.dialing = false;
                }
                match r {
                    Ok(conn) if self.want && (outgoing == self.cfg.dials()) => {
                        self.backoff = BACKOFF_MIN;
                        *lock(&self.last_error) = None;
                        self.link_up(conn);
                        None
                    }
                    Ok(_) => Some(self.backoff),
                    Err(reason) => {
                        self.failed(&reason);
                        Some(self.next_backoff())
                    }
                }
            }
            Note::Ended(gen, reason) => {
                if self.current.as_ref().is_some_and(|c| c.gen == gen) {
                    self.close_current();
                    warn!(resource = %self.cfg.resource, %reason, "peer link lost");
                    self.driver.link_down(gen, reason);
                }
                Some(BACKOFF_MIN)
            }
        }
    }

    fn next_backoff(&mut self) -> Duration {
        let d = self.backoff;
        self.backoff = (self.backoff * 2).min(self.cfg.connect_int.max(BACKOFF_MIN));
        d
    }

    fn failed(&mut self, reason: &str) {
        // Refused connections are the normal state while the peer is down:
        // not worth a status line; handshake failures are.
        if reason.contains("connecting to") {
            tracing::debug!(resource = %self.cfg.resource, %reason, "peer not reachable");
            return;
        }
        warn!(resource = %self.cfg.resource, %reason, "peer connection refused");
        *lock(&self.last_error) = Some(reason.to_string());
    }

    fn close_current(&mut self) {
        if let Some(c) = self.current.take() {
            c.out.close("the link was closed");
            for t in c.tasks {
                t.abort();
            }
        }
    }

    fn link_up(&mut self, conn: Conn) {
        if let Some(old) = self.current.as_ref().map(|c| c.gen) {
            self.close_current();
            self.driver
                .link_down(old, "replaced by a new connection from the peer".into());
        }
        let gen = self.next_gen;
        self.next_gen += 1;
        let out = Arc::new(LinkOut::new(conn.write));
        // What the kernel actually uses (the configured one, or the
        // system's default if it refused that at bind).
        let congestion = socket2::SockRef::from(conn.read.as_ref())
            .tcp_congestion()
            .map(|name| {
                String::from_utf8_lossy(&name)
                    .trim_end_matches('\0')
                    .to_string()
            })
            .unwrap_or_else(|e| format!("unknown ({e})"));
        let (sndbuf, rcvbuf) = buffer_sizes(conn.read.as_ref());
        let shown = |configured: u64, now: u64| {
            if configured == 0 {
                format!("auto({now})")
            } else {
                now.to_string()
            }
        };
        let sndbuf = shown(self.cfg.sndbuf_bytes, sndbuf);
        let rcvbuf = shown(self.cfg.rcvbuf_bytes, rcvbuf);
        info!(resource = %self.cfg.resource, peer = %conn.addr, %congestion, %sndbuf, %rcvbuf, "peer link up (authenticated)");
        let writer = tokio::spawn(write_loop(
            self.cfg.clone(),
            gen,
            out.clone(),
            self.notes_tx.clone(),
        ));
        let reader = tokio::spawn(read_loop(
            self.cfg.clone(),
            gen,
            conn.read,
            conn.decoder,
            self.driver.clone(),
            self.notes_tx.clone(),
        ));
        self.current = Some(Current {
            gen,
            tasks: vec![writer.abort_handle(), reader.abort_handle()],
            out: out.clone(),
        });
        self.driver.link_up(gen, out);
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn outgoing(cfg: &LinkConfig) -> Result<Conn, String> {
    let socket = new_socket(cfg.peer).map_err(|e| format!("connecting to {}: {e}", cfg.peer))?;
    // Refused already at bind (then `None` here) or allowed.
    let _ = set_congestion(&socket, cfg.tcp_congestion.as_deref());
    set_buffers(&socket, cfg).map_err(|e| format!("connecting to {}: {e}", cfg.peer))?;
    let connect = tokio::time::timeout(HANDSHAKE_TIMEOUT, socket.connect(cfg.peer)).await;
    let stream = match connect {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => return Err(format!("connecting to {}: {e}", cfg.peer)),
        Err(_) => return Err(format!("connecting to {}: timed out", cfg.peer)),
    };
    if !cfg.dials() {
        // A knock: the lower node dials back.
        return Err(format!("connecting to {}: knocked", cfg.peer));
    }
    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(cfg, stream, cfg.peer)).await {
        Ok(r) => r,
        Err(_) => Err(format!("handshake with {} timed out", cfg.peer)),
    }
}

fn challenge() -> Bytes {
    let mut c = vec![0u8; 32];
    rand::Rng::fill(&mut rand::thread_rng(), &mut c[..]);
    Bytes::from(c)
}

/// Runs the peer-proto handshake; on failure tells the peer why.
async fn handshake(cfg: &LinkConfig, stream: TcpStream, addr: SocketAddr) -> Result<Conn, String> {
    let _ = stream.set_nodelay(true);
    hadisk_nbd_server::busy_poll::watch(std::os::fd::AsRawFd::as_raw_fd(&stream));
    let (mut read, mut write) = stream.into_split();
    let mut hs = Handshake::new(HandshakeConfig {
        local_name: cfg.local_name.clone(),
        peer_name: cfg.peer_name.clone(),
        secret: cfg.secret.clone(),
        alg: cfg.alg,
        features: 0,
        challenge: challenge(),
    })
    .map_err(|e| e.to_string())?;
    send_all(&mut write, &hs.start())
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    let mut decoder = Decoder::new();
    loop {
        let msg = match decoder.next_message() {
            Ok(Some(m)) => m,
            Ok(None) => {
                let buf = decoder.buffer_mut();
                buf.reserve(4096);
                match read.read_buf(buf).await {
                    Ok(0) => {
                        return Err(format!(
                            "{addr}: the peer closed the connection during the handshake"
                        ))
                    }
                    Ok(_) => continue,
                    Err(e) => return Err(format!("{addr}: {e}")),
                }
            }
            Err(e) => return Err(refuse(&mut write, addr, e.to_string()).await),
        };
        if let Message::Disconnect { reason } = &msg {
            return Err(format!("{addr}: the peer refused the connection: {reason}"));
        }
        match hs.on_message(msg) {
            Ok(step) => {
                send_all(&mut write, &step.send)
                    .await
                    .map_err(|e| format!("{addr}: {e}"))?;
                if step.done.is_some() {
                    return Ok(Conn {
                        read,
                        write,
                        decoder,
                        addr,
                    });
                }
            }
            Err(e) => return Err(refuse(&mut write, addr, e.to_string()).await),
        }
    }
}

async fn refuse(write: &mut OwnedWriteHalf, addr: SocketAddr, reason: String) -> String {
    let _ = send_all(
        write,
        &[Message::Disconnect {
            reason: reason.clone(),
        }],
    )
    .await;
    format!("{addr}: {reason}")
}

async fn send_all(write: &mut OwnedWriteHalf, msgs: &[Message]) -> std::io::Result<()> {
    for m in msgs {
        let frame = m
            .encode()
            .map_err(|e| std::io::Error::other(e.to_string()))?;
        write.write_all(&frame.header).await?;
        write.write_all(&frame.payload.to_bytes()?).await?;
    }
    write.flush().await
}

async fn write_loop(
    cfg: LinkConfig,
    gen: u64,
    out: Arc<LinkOut>,
    notes: mpsc::UnboundedSender<Note>,
) {
    let reason = out.run_writer(cfg.ping_int, cfg.timeout).await;
    let _ = notes.send(Note::Ended(gen, reason));
}

/// Why a link that received nothing within `deadline` is closed.
fn declared_dead(deadline: Duration) -> String {
    format!(
        "the peer did not answer for {} ms (ping-int + timeout): declared dead",
        deadline.as_millis()
    )
}

/// Receives the rest of a large `Data` frame's payload into a pipe
/// (`splice`), or into memory when it does not fit one.
async fn receive_payload(
    read: &mut OwnedReadHalf,
    head: DataHead,
    deadline: Duration,
) -> Result<Message, String> {
    let mut fill = match PipeFill::new(head.len_bytes) {
        Ok(mut fill) => match fill.push_bytes(&head.prefix) {
            Ok(()) => Some(fill),
            Err(_) => None,
        },
        Err(_) => None,
    };
    while let Some(f) = fill.as_mut().filter(|f| f.remaining() > 0) {
        let step = std::future::poll_fn(|cx| read.poll_splice(cx, f));
        match tokio::time::timeout(deadline, step).await {
            Ok(Ok(Filled::Moved(_))) => {}
            Ok(Ok(Filled::PipeFull)) => {
                tracing::debug!(
                    len = head.len_bytes,
                    missing = f.remaining(),
                    "a mirrored payload did not fit its pipe: reading the rest into memory"
                );
                break;
            }
            Ok(Ok(Filled::Eof)) => return Err("the peer closed the connection".to_string()),
            Ok(Err(e)) => return Err(format!("receiving from the peer: {e}")),
            Err(_) => return Err(declared_dead(deadline)),
        }
    }
    let data = match fill.map(PipeFill::finish) {
        Some(Ok(pipe)) => Payload::from(pipe),
        // No pipe, or the payload did not fit one: the rest into memory.
        unfinished => {
            let mut buf = match unfinished {
                Some(Err(fill)) => fill
                    .into_vec()
                    .map_err(|e| format!("receiving from the peer: {e}"))?,
                _ => head.prefix.to_vec(),
            };
            let start = buf.len();
            buf.resize(head.len_bytes, 0);
            match tokio::time::timeout(deadline, read.read_exact(&mut buf[start..])).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(format!("receiving from the peer: {e}")),
                Err(_) => return Err(declared_dead(deadline)),
            }
            Payload::from(buf)
        }
    };
    head.into_message(data)
        .map_err(|e| format!("protocol error from the peer: {e}"))
}

async fn read_loop(
    cfg: LinkConfig,
    gen: u64,
    mut read: OwnedReadHalf,
    mut decoder: Decoder,
    driver: Arc<Driver>,
    notes: mpsc::UnboundedSender<Note>,
) {
    let deadline = cfg.rx_deadline();
    // After a spliced payload the next read takes one frame header only,
    // so that the next payload is not read into memory either.
    let mut header_only = false;
    let reason = loop {
        match decoder.next_message() {
            Ok(Some(Message::PingAck { .. })) => continue,
            Ok(Some(msg)) => {
                if let Message::Disconnect { reason } = &msg {
                    break format!("the peer closed the link: {reason}");
                }
                driver.peer(gen, msg);
                continue;
            }
            // Everything received so far is fed: its acks leave together.
            Ok(None) => driver.flush_link(),
            Err(e) => {
                warn!(resource = %cfg.resource, error = %e, "garbage from the peer: dropping the connection");
                break format!("protocol error from the peer: {e}");
            }
        }
        // A large mirrored write of which little has arrived: its payload
        // goes from the socket into a pipe and from there to the disk.
        if super::export::splice_enabled()
            && decoder.buffered_bytes() < HEADER_LEN + SPLICE_MIN_BYTES / 2
        {
            match decoder.take_data_head(SPLICE_MIN_BYTES) {
                Ok(Some(head)) => match receive_payload(&mut read, head, deadline).await {
                    Ok(msg) => {
                        driver.peer(gen, msg);
                        header_only = true;
                        continue;
                    }
                    Err(reason) => break reason,
                },
                Ok(None) => {}
                Err(e) => {
                    warn!(resource = %cfg.resource, error = %e, "garbage from the peer: dropping the connection");
                    break format!("protocol error from the peer: {e}");
                }
            }
        }
        let buf: &mut BytesMut = decoder.buffer_mut();
        if buf.capacity() - buf.len() < READ_MIN_SPARE_BYTES {
            buf.reserve(READ_CHUNK_BYTES);
        }
        let limit = if std::mem::take(&mut header_only) && buf.len() < HEADER_LEN {
            (HEADER_LEN - buf.len()) as u64
        } else {
            u64::MAX
        };
        match tokio::time::timeout(deadline, (&mut read).take(limit).read_buf(buf)).await {
            Ok(Ok(0)) => break "the peer closed the connection".to_string(),
            Ok(Ok(_)) => {}
            Ok(Err(e)) => break format!("receiving from the peer: {e}"),
            Err(_) => break declared_dead(deadline),
        }
    };
    let _ = notes.send(Note::Ended(gen, reason));
}
