//! The one way a program hands a record to the agent: reserve, header, fill in
//! place, submit; and count, per record type, what could not be delivered (no room,
//! or the fill could not read what it needed). Programs keep only their fill. Where
//! the record goes is the object's `transport` (ring buffer or perf buffers).

use agent_common::event::{Header, Record};
use aya_ebpf::helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns};

use crate::{maps::count_lost, read::Fail, transport::Slot};

/// The running program's context (`EbpfContext::as_ptr`): the perf transport's
/// output helper needs it. One raw type for every program type, so the functions
/// that pass it on are not duplicated per context type.
pub type Ctx = *mut core::ffi::c_void;

/// Why a finished record did not reach the agent.
pub enum Undelivered {
    /// The ring (or this CPU's perf buffer) had no room.
    Full,
    /// Copying it out failed.
    #[allow(
        dead_code,
        reason = "the perf object's helper copies and reads at once"
    )]
    Unreadable,
}

/// Emits one `R` for socket `sk` (0: none) stamped `ts_ns` (0: now). `fill` writes
/// the body into the reservation (the 512-byte stack has no room for a copy); an
/// error from it discards the record and counts it as unreadable. Mark the closure
/// `#[inline(always)]`: outlined, its frame adds to the program's (512 bytes in all
/// on kernels before 6.13).
#[inline(always)]
pub fn emit<R: Record>(
    ctx: Ctx,
    sk: u64,
    ts_ns: u64,
    fill: impl FnOnce(&mut R) -> Result<(), Fail>,
) {
    let Some(mut slot) = Slot::<R>::reserve() else {
        count_lost(R::RING_FULL);
        return;
    };
    let r = slot.init();
    let ts_ns = if ts_ns != 0 {
        ts_ns
    } else {
        unsafe { bpf_ktime_get_ns() }
    };
    *r.header_mut() = Header::new::<R>(unsafe { bpf_get_smp_processor_id() }, ts_ns, sk);
    match fill(r) {
        Ok(()) => {
            if slot.submit(ctx).is_err() {
                count_lost(R::RING_FULL);
            }
        }
        Err(_) => {
            slot.discard();
            count_lost(R::UNREADABLE);
        }
    }
}
