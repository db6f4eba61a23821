//! The BPF ring buffer transport (5.8+): one ring shared by every CPU keeps the
//! global order the agent's timeline needs, and a record is filled in place in its
//! reservation. The default; `transport/perf.rs` is the fallback for older kernels.
//! Each object carries exactly one transport (see `main.rs`): aya creates every map
//! of an object and fails if one cannot be created, so the perf object must not
//! contain a ring buffer map at all.

use aya_ebpf::{
    macros::map,
    maps::{RingBuf, ring_buf::RingBufEntry},
};

use crate::emit::{Ctx, Undelivered};

/// All events, all programs.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

// bpf_ringbuf_query() and bpf_ringbuf_submit() flags (include/uapi/linux/bpf.h).
const BPF_RB_AVAIL_DATA: u64 = 0;
const BPF_RB_RING_SIZE: u64 = 1;
const BPF_RB_NO_WAKEUP: u64 = 1;
const BPF_RB_FORCE_WAKEUP: u64 = 2;

/// Room for one record, written in place.
pub struct Slot<R: 'static>(RingBufEntry<R>);

impl<R: Default> Slot<R> {
    #[inline(always)]
    pub fn reserve() -> Option<Self> {
        EVENTS.reserve::<R>(0).map(Self)
    }

    #[inline(always)]
    pub fn init(&mut self) -> &mut R {
        self.0.write(R::default())
    }

    /// Hands the record to the agent. A reservation cannot fail to submit.
    #[inline(always)]
    pub fn submit(self, _ctx: Ctx) -> Result<(), ()> {
        self.0.submit(submit_flags());
        Ok(())
    }

    #[inline(always)]
    pub fn discard(self) {
        self.0.discard(0);
    }
}

/// Sends a finished record that lives in a map value (`udp_queue`'s state): copied
/// into a reservation by one helper call.
#[inline(always)]
pub fn output_from<R: 'static>(_ctx: Ctx, src: *const R) -> Result<(), Undelivered> {
    let Some(mut out) = EVENTS.reserve::<R>(0) else {
        return Err(Undelivered::Full);
    };
    let dst =
        unsafe { core::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<u8>(), size_of::<R>()) };
    match unsafe { aya_ebpf::helpers::bpf_probe_read_kernel_buf(src as *const u8, dst) } {
        Ok(()) => {
            out.submit(submit_flags());
            Ok(())
        }
        Err(_) => {
            out.discard(0);
            Err(Undelivered::Unreadable)
        }
    }
}

/// Submit flags: no wakeup while little waits in the ring (the agent polls on a
/// short timer anyway), a forced one when it fills up.
#[inline(always)]
fn submit_flags() -> u64 {
    if EVENTS.query(BPF_RB_AVAIL_DATA) >= cfg!(wakeup_bytes) as u64 {
        BPF_RB_FORCE_WAKEUP
    } else {
        BPF_RB_NO_WAKEUP
    }
}

/// Is there room for network-sourced records? Only while the ring is at most half
/// full: a flood then costs its own records, never the retransmits and send errors
/// that share the ring.
#[inline(always)]
pub fn room_for_net() -> bool {
    EVENTS.query(BPF_RB_AVAIL_DATA) * 2 <= EVENTS.query(BPF_RB_RING_SIZE)
}
