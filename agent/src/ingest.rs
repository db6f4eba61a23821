//! Owns the transport's buffers (the ring, or one perf buffer per CPU): waits for
//! them asynchronously and hands out raw records.

use std::{future::poll_fn, io, ops::ControlFlow, task::Poll};

use aya::maps::{
    MapData, PerfEventArray, RingBuf,
    perf::{PerfEvent, PerfEventArrayBuffer},
};
use tokio::io::{
    Interest,
    unix::{AsyncFd, AsyncFdReadyMutGuard},
};

use crate::probes::Events;

/// Records drained per wake-up before yielding back to the event loop, so a flood
/// cannot starve signal handling or the loss ticker.
pub const BATCH: usize = 4096;

pub enum Ingest {
    Ring(AsyncFd<RingBuf<MapData>>),
    Perf(Perf),
}

pub struct Perf {
    buffers: Vec<AsyncFd<PerfEventArrayBuffer>>,
    /// Keeps the buffers in the programs' array (dropping it clears the entries).
    _array: PerfEventArray<MapData>,
    /// The last drain stopped at [`BATCH`]: the next wait returns at once.
    more: bool,
    /// Where the next drain starts, so a busy CPU's buffer cannot starve the others.
    next: usize,
    /// A record that wraps around its buffer's end, made whole.
    whole: Vec<u8>,
    /// Samples the buffers' kernel side reported lost (`PERF_RECORD_LOST`).
    lost: u64,
}

/// The transport is readable; drain it with [`Batch::drain`].
pub enum Batch<'a> {
    Ring(AsyncFdReadyMutGuard<'a, RingBuf<MapData>>),
    Perf(&'a mut Perf),
}

impl Batch<'_> {
    /// Hands up to [`BATCH`] records to `f`; returns how many.
    pub fn drain(self, f: impl FnMut(&[u8])) -> usize {
        match self {
            Batch::Ring(mut guard) => {
                let n = take(guard.get_inner_mut(), BATCH, f);
                if n < BATCH {
                    // Drained: sleep until the kernel's next notification. After a
                    // full batch the readiness is kept so the next wait returns at once.
                    guard.clear_ready();
                }
                n
            }
            Batch::Perf(perf) => perf.take(BATCH, f),
        }
    }
}

impl Ingest {
    pub fn new(events: Events) -> io::Result<Self> {
        match events {
            // SAFETY (both): the ring and each buffer own their fd and keep it open
            // for as long as the AsyncFd (which owns them) is registered; nothing
            // else closes it.
            Events::Ring(ring) => Ok(Self::Ring(
                unsafe { AsyncFd::register_with_interest(ring, Interest::READABLE) }
                    .map_err(io::Error::from)?,
            )),
            Events::Perf { array, buffers, .. } => {
                let buffers = buffers
                    .into_iter()
                    .map(|b| {
                        unsafe { AsyncFd::register_with_interest(b, Interest::READABLE) }
                            .map_err(io::Error::from)
                    })
                    .collect::<io::Result<_>>()?;
                Ok(Self::Perf(Perf {
                    buffers,
                    _array: array,
                    more: false,
                    next: 0,
                    whole: Vec::new(),
                    lost: 0,
                }))
            }
        }
    }

    pub async fn ready(&mut self) -> io::Result<Batch<'_>> {
        match self {
            Ingest::Ring(ring) => Ok(Batch::Ring(ring.readable_mut().await?)),
            Ingest::Perf(perf) => {
                if !perf.more {
                    perf.readable().await?;
                }
                Ok(Batch::Perf(perf))
            }
        }
    }

    /// Drains up to [`BATCH`] records without waiting for a notification: the
    /// ring's programs only wake us when it fills up, so the agent also polls.
    pub fn poll(&mut self, f: impl FnMut(&[u8])) -> usize {
        match self {
            Ingest::Ring(ring) => take(ring.get_mut(), BATCH, f),
            Ingest::Perf(perf) => perf.take(BATCH, f),
        }
    }

    /// Drains whatever is left without waiting (after detaching).
    pub fn drain_now(&mut self, f: impl FnMut(&[u8])) -> usize {
        match self {
            Ingest::Ring(ring) => take(ring.get_mut(), usize::MAX, f),
            Ingest::Perf(perf) => perf.take(usize::MAX, f),
        }
    }

    /// Samples the perf buffers themselves reported lost so far (none with the
    /// ring). A cross-check of the programs' own count, which the ledger uses: every
    /// output the kernel refused for want of room is also a failed helper call,
    /// counted per record kind by the program.
    pub fn transport_lost(&self) -> Option<u64> {
        match self {
            Ingest::Ring(_) => None,
            Ingest::Perf(perf) => Some(perf.lost),
        }
    }
}

impl Perf {
    /// Waits until some buffer is readable. Readiness is cleared for every buffer
    /// found ready, before draining: a sample arriving after this sets it again,
    /// and one left behind by a batch limit is `more`'s (or the poll's) to take.
    async fn readable(&mut self) -> io::Result<()> {
        poll_fn(|cx| {
            let mut any = false;
            for buffer in &mut self.buffers {
                match buffer.poll_read_ready_mut(cx) {
                    Poll::Ready(Ok(mut guard)) => {
                        guard.clear_ready();
                        any = true;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => {}
                }
            }
            if any {
                Poll::Ready(Ok(()))
            } else {
                Poll::Pending
            }
        })
        .await
    }

    /// Hands up to `limit` records of all buffers to `f`, one buffer after the
    /// other from a rotating start; returns how many.
    fn take(&mut self, limit: usize, mut f: impl FnMut(&[u8])) -> usize {
        let mut n = 0;
        let count = self.buffers.len();
        for i in 0..count {
            if n >= limit {
                break;
            }
            let at = (self.next + i) % count;
            let whole = &mut self.whole;
            let lost = &mut self.lost;
            let flow = self.buffers[at]
                .get_mut()
                .try_fold(n, |n, event| match event {
                    PerfEvent::Sample { head, tail } => {
                        if tail.is_empty() {
                            f(head);
                        } else {
                            whole.clear();
                            whole.extend_from_slice(head);
                            whole.extend_from_slice(tail);
                            f(whole);
                        }
                        if n + 1 >= limit {
                            ControlFlow::Break(n + 1)
                        } else {
                            ControlFlow::Continue(n + 1)
                        }
                    }
                    PerfEvent::Lost { count } => {
                        *lost += count;
                        ControlFlow::Continue(n)
                    }
                });
            n = match flow {
                ControlFlow::Continue(n) | ControlFlow::Break(n) => n,
            };
        }
        if count > 0 {
            self.next = (self.next + 1) % count;
        }
        self.more = n >= limit;
        n
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
