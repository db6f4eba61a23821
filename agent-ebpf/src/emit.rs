//! The one way a program puts a record into the ring: reserve, header, fill in
//! place, submit; and count, per record type, what could not be delivered (no room,
//! or the fill could not read what it needed). Programs keep only their fill.

use agent_common::event::{Header, Record};
use aya_ebpf::helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns};

use crate::{
    maps::{EVENTS, count_lost, submit_flags},
    read::Fail,
};

/// Emits one `R` for socket `sk` (0: none) stamped `ts_ns` (0: now). `fill` writes
/// the body into the reservation (the 512-byte stack has no room for a copy); an
/// error from it discards the record and counts it as unreadable. Mark the closure
/// `#[inline(always)]`: outlined, its frame adds to the program's (512 bytes in all
/// on kernels before 6.13).
#[inline(always)]
pub fn emit<R: Record>(sk: u64, ts_ns: u64, fill: impl FnOnce(&mut R) -> Result<(), Fail>) {
    let Some(mut entry) = EVENTS.reserve::<R>(0) else {
        count_lost(R::RING_FULL);
        return;
    };
    let r = entry.write(R::default());
    let ts_ns = if ts_ns != 0 {
        ts_ns
    } else {
        unsafe { bpf_ktime_get_ns() }
    };
    *r.header_mut() = Header::new::<R>(unsafe { bpf_get_smp_processor_id() }, ts_ns, sk);
    match fill(r) {
        Ok(()) => entry.submit(submit_flags()),
        Err(_) => {
            entry.discard(0);
            count_lost(R::UNREADABLE);
        }
    }
}
