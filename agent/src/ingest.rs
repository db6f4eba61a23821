//! Owns the ring buffer: waits for it asynchronously and hands out raw records.

use std::io;

use aya::maps::{MapData, RingBuf};
use tokio::io::{
    Interest,
    unix::{AsyncFd, AsyncFdReadyMutGuard},
};

/// Records drained per wake-up before yielding back to the event loop, so a flood
/// cannot starve signal handling or the loss ticker.
pub const BATCH: usize = 4096;

pub struct Ingest {
    ring: AsyncFd<RingBuf<MapData>>,
}

/// The ring is readable; drain it with [`Batch::drain`].
pub struct Batch<'a> {
    guard: AsyncFdReadyMutGuard<'a, RingBuf<MapData>>,
}

impl Batch<'_> {
    /// Hands up to [`BATCH`] records to `f`; returns how many.
    pub fn drain(mut self, f: impl FnMut(&[u8])) -> usize {
        let n = take(self.guard.get_inner_mut(), BATCH, f);
        if n < BATCH {
            // Drained: sleep until the kernel's next notification. After a full batch
            // the readiness is kept so the next wait returns at once.
            self.guard.clear_ready();
        }
        n
    }
}

impl Ingest {
    pub fn new(ring: RingBuf<MapData>) -> io::Result<Self> {
        // SAFETY: the ring owns its fd and keeps it open for as long as the AsyncFd
        // (which owns the ring) is registered; nothing else closes it.
        let ring = unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Self { ring })
    }

    pub async fn ready(&mut self) -> io::Result<Batch<'_>> {
        Ok(Batch {
            guard: self.ring.readable_mut().await?,
        })
    }

    /// Drains up to [`BATCH`] records without waiting for a notification: the
    /// programs only wake us when the ring fills up, so the agent also polls.
    pub fn poll(&mut self, f: impl FnMut(&[u8])) -> usize {
        take(self.ring.get_mut(), BATCH, f)
    }

    /// Drains whatever is left without waiting (after detaching).
    pub fn drain_now(&mut self, f: impl FnMut(&[u8])) -> usize {
        take(self.ring.get_mut(), usize::MAX, f)
    }
}

/// Hands up to `limit` records of `ring` to `f`; returns how many.
fn take(ring: &mut RingBuf<MapData>, limit: usize, mut f: impl FnMut(&[u8])) -> usize {
    let mut n = 0;
    while n < limit {
        let Some(item) = ring.next() else { break };
        f(&item);
        n += 1;
    }
    n
}
