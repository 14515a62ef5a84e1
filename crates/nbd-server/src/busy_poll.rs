//! Polling the sockets a little before the event thread goes to sleep.
//!
//! Why: a replicated write at queue depth 1 waits three times in the two
//! daemons (the Primary for the peer's ack, the Secondary for the next
//! write, the Primary for its client's next request), and each wait that
//! ends in a thread wake-up costs more than the work around it on a
//! virtual machine: a ping-pong between two threads over a Unix socket
//! takes 11.2–12.5 µs per round trip with blocking reads and 4.3–4.5 µs
//! with polling ones on this project's machine (two wake-ups, ~3.5 µs
//! each).
//!
//! So when busy polling is on ([`enable`]) and the runtime is about to park
//! its thread, [`before_park`] polls the sockets registered with [`watch`]
//! (a level-triggered epoll set of our own, asked with a zero timeout) for
//! up to the budget and returns as soon as one has data; the runtime's own
//! `epoll_wait` then returns at once. Between polls the thread yields the
//! CPU (`sched_yield`): a thread that wants this CPU gets it, so the spin
//! only spends time nobody else wants. A socket that stays readable
//! because no task reads it (back-pressure, end of file) only makes the
//! hook return at once: the thread then sleeps as it would without it.
//!
//! The kernel drops a socket from the set when it is closed.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

struct Poller {
    set: OwnedFd,
    budget: Duration,
}

static POLLER: OnceLock<Poller> = OnceLock::new();

/// Turns busy polling on for this process, spinning up to `budget` before
/// each sleep (zero: off). The first call decides; later ones change
/// nothing.
pub fn enable(budget: Duration) -> io::Result<()> {
    if budget.is_zero() || POLLER.get().is_some() {
        return Ok(());
    }
    let _ = POLLER.set(Poller::new(budget)?);
    Ok(())
}

/// Adds a connected socket to the polled set (nothing when busy polling is
/// off). A failure only means this socket is not polled.
pub fn watch(fd: RawFd) {
    if let Some(p) = POLLER.get() {
        p.watch(fd);
    }
}

/// The runtime's park hook: returns when a watched socket has data, or
/// when the budget is spent.
pub fn before_park() {
    if let Some(p) = POLLER.get() {
        p.spin();
    }
}

impl Poller {
    fn new(budget: Duration) -> io::Result<Poller> {
        // SAFETY: no pointers; returns a new descriptor or -1.
        let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: epoll_create1 succeeded: the descriptor is open and ours.
        let set = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Poller { set, budget })
    }

    fn watch(&self, fd: RawFd) {
        let mut event = libc::epoll_event {
            events: libc::EPOLLIN as u32,
            u64: fd as u64,
        };
        // SAFETY: `event` is a valid epoll_event that outlives the call;
        // both descriptors are open (the caller holds the socket).
        let _ =
            unsafe { libc::epoll_ctl(self.set.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut event) };
    }

    fn spin(&self) {
        let start = Instant::now();
        let mut events = [libc::epoll_event { events: 0, u64: 0 }; 4];
        loop {
            // SAFETY: `events` has room for the 4 entries the kernel may
            // write; the set's descriptor is open.
            let n = unsafe { libc::epoll_wait(self.set.as_raw_fd(), events.as_mut_ptr(), 4, 0) };
            // Ready, or an error: either way the runtime should look now.
            if n != 0 || start.elapsed() >= self.budget {
                return;
            }
            // SAFETY: no arguments.
            unsafe { libc::sched_yield() };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::unix::net::UnixStream;

    #[test]
    fn a_spin_with_nothing_to_read_lasts_the_budget() {
        let p = Poller::new(Duration::from_millis(20)).unwrap();
        let (_a, b) = UnixStream::pair().unwrap();
        p.watch(b.as_raw_fd());
        let t = Instant::now();
        p.spin();
        assert!(t.elapsed() >= Duration::from_millis(20));
    }

    #[test]
    fn a_spin_ends_when_a_watched_socket_has_data() {
        // An hour's budget: the test only ends if the data ends the spin.
        let p = Poller::new(Duration::from_secs(3600)).unwrap();
        let (mut a, b) = UnixStream::pair().unwrap();
        let (_c, d) = UnixStream::pair().unwrap();
        p.watch(b.as_raw_fd());
        p.watch(d.as_raw_fd());
        a.write_all(b"x").unwrap();
        p.spin();
    }

    #[test]
    fn off_by_default_and_watch_is_harmless_then() {
        // No test enables the process-wide poller.
        assert!(POLLER.get().is_none());
        let (_a, b) = UnixStream::pair().unwrap();
        watch(b.as_raw_fd());
        before_park();
    }
}
