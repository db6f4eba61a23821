//! Every map and global the programs share. Sizes here are defaults: the agent
//! overrides them at load time from its flags (`--ring-bytes`).

use agent_common::{layout::Layout, loss};
use aya_ebpf::{
    Global,
    macros::map,
    maps::{PerCpuArray, RingBuf},
};

/// All events, all programs: one ring keeps the global order the agent's timeline needs.
#[map]
pub static EVENTS: RingBuf = RingBuf::with_byte_size(1 << 20, 0);

/// Reservation failures per program (see `agent_common::loss::slot`), per CPU.
#[map]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(loss::slot::COUNT, 0);

/// Offsets resolved by the agent on the running kernel (tracefs + BTF).
#[unsafe(no_mangle)]
pub static LAYOUT: Global<Layout> = Global::new(Layout::UNRESOLVED);

/// Count one lost event for `slot`. Never fails: a missing slot is a loader bug the
/// agent's check catches, and a counter must not turn into a second loss.
#[inline(always)]
pub fn count_lost(slot: u32) {
    if let Some(counter) = LOST.get_ptr_mut(slot) {
        // Per-CPU slot and tracepoints do not nest on one CPU for the same program,
        // so a plain add is race-free.
        unsafe { *counter += 1 };
    }
}
