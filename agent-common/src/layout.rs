//! Where things are in the running kernel's memory.
//!
//! Rust eBPF gets no CO-RE relocations from the compiler, so no offset is compiled in:
//! the agent resolves tracepoint record layouts from tracefs `format` files and kernel
//! struct member offsets from BTF at start-up, and hands this table to the programs as
//! a read-only global (`LAYOUT`), frozen before verification.

/// Marks a field the running kernel does not have.
pub const ABSENT: u16 = u16::MAX;

/// Offsets into the `tcp:tcp_retransmit_skb` tracepoint record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetransmitTp {
    pub skbaddr: u16,
    pub skaddr: u16,
    pub state: u16,
    pub sport: u16,
    pub dport: u16,
    pub family: u16,
    pub saddr: u16,
    pub daddr: u16,
    pub saddr_v6: u16,
    pub daddr_v6: u16,
    /// [`ABSENT`] on kernels before the `err` field was added.
    pub err: u16,
    pub _reserved: u16,
}

/// Member offsets of kernel structs, from BTF.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelStructs {
    /// `sk_buff.len`
    pub skb_len: u16,
    /// `sk_buff.cb`: TCP keeps its `struct tcp_skb_cb` here.
    pub skb_cb: u16,
    /// `tcp_skb_cb.tcp_gso_segs` (u16)
    pub tcb_gso_segs: u16,
    /// `tcp_skb_cb.tcp_gso_size` (u16)
    pub tcb_gso_size: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub retransmit_tp: RetransmitTp,
    pub kernel: KernelStructs,
}

impl Layout {
    /// Everything absent: what the programs see if the loader forgot to fill it in,
    /// which makes them emit nothing rather than read garbage.
    pub const UNRESOLVED: Layout = Layout {
        retransmit_tp: RetransmitTp {
            skbaddr: ABSENT,
            skaddr: ABSENT,
            state: ABSENT,
            sport: ABSENT,
            dport: ABSENT,
            family: ABSENT,
            saddr: ABSENT,
            daddr: ABSENT,
            saddr_v6: ABSENT,
            daddr_v6: ABSENT,
            err: ABSENT,
            _reserved: 0,
        },
        kernel: KernelStructs {
            skb_len: ABSENT,
            skb_cb: ABSENT,
            tcb_gso_segs: ABSENT,
            tcb_gso_size: ABSENT,
        },
    };
}

const _: () = assert!(core::mem::size_of::<Layout>() == 32);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C) structs of u16 only, no padding (size asserted above).
    unsafe impl aya::Pod for super::Layout {}
    unsafe impl aya::Pod for super::RetransmitTp {}
    unsafe impl aya::Pod for super::KernelStructs {}
}
