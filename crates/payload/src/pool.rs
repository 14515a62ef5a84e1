//! Empty pipes kept for the next payload.
//!
//! Every replicated 1 MiB write used to make three pipes on the Primary and
//! two or three on the Secondary (`pipe2`, `F_SETPIPE_SZ`, two `close`s
//! each): a profile of the pair under sequential 1 MiB writes put 5 % of
//! all CPU time there. A pipe whose bytes were all moved out is as good as
//! new, so it comes back here instead of being closed.
//!
//! A pipe handed out again must be empty: a byte left in it would land in
//! front of the next payload. [`give`] therefore asks the kernel
//! (`FIONREAD`) instead of trusting the caller's count, and closes any pipe
//! that is not.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::{Mutex, MutexGuard, OnceLock};

use crate::pipe::{readable_bytes, splice, Pipe};

/// Pipe capacity the pool may hold at once, in bytes. An unprivileged
/// user's pipes share a quota (`pipe-user-pages-soft`, 64 MiB of capacity
/// by default) with the pipes in flight; a quarter of it is plenty for
/// the pipes one write-depth of payloads needs.
const POOL_MAX_BYTES: usize = 16 << 20;

struct Pool {
    pipes: Vec<Pipe>,
    held_bytes: usize,
}

static POOL: Mutex<Pool> = Mutex::new(Pool {
    pipes: Vec::new(),
    held_bytes: 0,
});

fn lock() -> MutexGuard<'static, Pool> {
    // The pool is a plain list: a panic elsewhere cannot leave it torn.
    POOL.lock().unwrap_or_else(|p| p.into_inner())
}

/// An empty pipe of exactly `capacity_bytes`, if one is kept.
pub(crate) fn take(capacity_bytes: usize) -> Option<Pipe> {
    let mut pool = lock();
    let i = pool
        .pipes
        .iter()
        .rposition(|p| p.capacity_bytes == capacity_bytes)?;
    let pipe = pool.pipes.swap_remove(i);
    pool.held_bytes -= pipe.capacity_bytes;
    Some(pipe)
}

/// Keeps `pipe` for reuse if it is empty and the pool has room (`true`);
/// closes it otherwise.
pub(crate) fn give(pipe: Pipe) -> bool {
    if readable_bytes(pipe.read.as_raw_fd()).ok() != Some(0) {
        return false;
    }
    let mut pool = lock();
    if pool.held_bytes + pipe.capacity_bytes > POOL_MAX_BYTES {
        return false;
    }
    pool.held_bytes += pipe.capacity_bytes;
    pool.pipes.push(pipe);
    true
}

/// Empties `pipe`, which holds `len_bytes`, into `/dev/null` (one call
/// that drops the page references, as closing would) and keeps it.
pub(crate) fn drain_and_give(pipe: Pipe, mut len_bytes: usize) {
    let Some(null) = dev_null() else {
        return;
    };
    while len_bytes > 0 {
        match splice(
            pipe.read.as_raw_fd(),
            None,
            null,
            None,
            len_bytes,
            libc::SPLICE_F_NONBLOCK,
        ) {
            Ok(n) if n > 0 => len_bytes = len_bytes.saturating_sub(n),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // End of data earlier than counted, or an error: not reusable
            // on our count alone; `give` checks the kernel's.
            _ => break,
        }
    }
    give(pipe);
}

fn dev_null() -> Option<RawFd> {
    static NULL: OnceLock<Option<OwnedFd>> = OnceLock::new();
    NULL.get_or_init(|| {
        std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .ok()
            .map(OwnedFd::from)
    })
    .as_ref()
    .map(|fd| fd.as_raw_fd())
}
