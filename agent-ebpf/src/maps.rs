//! Every map the programs share but the transport's (`transport`; the globals are
//! in `globals`). Sizes here are defaults: the agent
//! overrides them at load time from its flags (`--ring-bytes`, `--max-sockets`).

use crate::transport;
use agent_common::{
    event::{PendingSend, SockInfo},
    loss,
};
use aya_ebpf::{
    macros::map,
    maps::{HashMap, LruHashMap, PerCpuArray},
};

/// Reservation failures per program (see `agent_common::loss::slot`), per CPU.
#[map]
pub static LOST: PerCpuArray<u64> = PerCpuArray::with_max_entries(loss::slot::COUNT, 0);

/// Socket -> owner. LRU: the least recently active socket makes
/// room; the agent reports events whose owner is unknown as such.
#[map]
pub static SOCKS: LruHashMap<u64, SockInfo> = LruHashMap::with_max_entries(65_536, 0);

/// The last socket each CPU saw a successful send on, and whether it is UDP: a
/// stream of sends on one socket (the common case at high rates) then needs no hash
/// lookup, no read of the socket and no helper call. See `sock::sent_on`.
#[map]
pub static LAST_SEND: PerCpuArray<LastSend> = PerCpuArray::with_max_entries(1, 0);

#[repr(C)]
#[derive(Clone, Copy)]
pub struct LastSend {
    pub sk: u64,
    /// Sends answered from here since the owner was last claimed.
    pub hits: u32,
    pub udp: u32,
}

/// Thread id -> socket-layer send failure waiting for the syscall exit. A plain hash
/// (not LRU): when full, an insert fails visibly and the event is emitted at once.
#[map]
pub static PENDING: HashMap<u32, PendingSend> = HashMap::with_max_entries(4096, 0);

/// Count one lost event for `slot`. Never fails: a counter must not turn into a
/// second loss.
#[inline(always)]
pub fn count_lost(slot: u32) {
    if let Some(counter) = LOST.get_ptr_mut(slot) {
        // Per-CPU slot; programs do not preempt each other on one CPU for the same
        // slot in a way that matters for a statistics counter.
        unsafe { *counter += 1 };
    }
}

/// Per CPU: `[second, records emitted in it]` for network-sourced records.
#[map]
pub static NET_BUDGET: PerCpuArray<[u64; 2]> = PerCpuArray::with_max_entries(1, 0);

/// May a network-sourced record (a too-big message anyone can send) go out now?
/// Only while the transport has room to spare (`transport::room_for_net`), and
/// within the per-CPU budget per second: a flood then costs its own records, never
/// the retransmits and send errors that share the transport. Refusals are counted
/// by the caller.
#[inline(always)]
pub fn net_budget(now_ns: u64) -> bool {
    if !transport::room_for_net() {
        return false;
    }
    let Some(b) = NET_BUDGET.get_ptr_mut(0) else {
        return false;
    };
    let b = unsafe { &mut *b };
    let second = now_ns / 1_000_000_000;
    if b[0] != second {
        b[0] = second;
        b[1] = 0;
    }
    if b[1] >= cfg!(net_events_per_cpu_s) as u64 {
        return false;
    }
    b[1] += 1;
    true
}
