//! Ring-buffer records: a common [`Header`] followed by a per-kind body.

/// Record kinds, as written into [`Header::kind`]. Values are part of the wire format
/// (recordings depend on them): never renumber, only append.
pub mod kind {
    pub const RETRANSMIT: u16 = 1;
}

/// First bytes of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// One of [`kind`].
    pub kind: u16,
    /// Size in bytes of the whole record, header included. Lets the decoder reject
    /// truncated or mismatched records instead of reading past them.
    pub len: u16,
    /// CPU the program ran on.
    pub cpu: u32,
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC, converted to wall time by the agent.
    pub ts_ns: u64,
    /// Kernel address of the `struct sock`. Used only as an identity key by the
    /// agent (which maps it to a small socket id); never printed.
    pub sk: u64,
}

/// A socket's flow as seen from the local host. Addresses are in network byte order;
/// IPv4 addresses occupy the first four bytes. Ports are in host byte order.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Flow {
    pub saddr: [u8; 16],
    pub daddr: [u8; 16],
    pub sport: u16,
    pub dport: u16,
    /// AF_INET (2) or AF_INET6 (10).
    pub family: u16,
    /// IPPROTO_TCP (6), IPPROTO_UDP (17).
    pub protocol: u8,
    /// TCP state (TCP_ESTABLISHED = 1, ...), 0 when not known.
    pub state: u8,
}

pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;
pub const IPPROTO_TCP: u8 = 6;
pub const IPPROTO_UDP: u8 = 17;

/// `tcp:tcp_retransmit_skb` fired: the kernel (re)sent one skb of a TCP socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Retransmit {
    pub header: Header,
    pub flow: Flow,
    /// Segments in the retransmitted skb (`tcp_skb_pcount`): the kernel's retransmit
    /// counters count segments, not skbs.
    pub segs: u32,
    /// Payload bytes in the skb (all its segments).
    pub len: u32,
    /// Bytes per segment (the GSO size when `segs > 1`, else `len`).
    pub seg_len: u32,
    /// Result of the transmit attempt, when the kernel reports it (see `flags`).
    pub err: i32,
    /// [`retransmit_flags`].
    pub flags: u32,
    pub _reserved: u32,
}

pub mod retransmit_flags {
    /// The tracepoint has an `err` field (newer kernels); `Retransmit::err` is valid.
    pub const HAS_ERR: u32 = 1 << 0;
    /// Reading the skb failed; `segs`/`len`/`seg_len` are not known.
    pub const NO_SKB: u32 = 1 << 1;
}

const _: () = assert!(core::mem::size_of::<Header>() == 24);
const _: () = assert!(core::mem::size_of::<Flow>() == 40);
const _: () = assert!(core::mem::size_of::<Retransmit>() == 88);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all types are repr(C), made only of integers and arrays of integers,
    // with no implicit padding (sizes asserted above); any bit pattern is valid.
    unsafe impl aya::Pod for super::Header {}
    unsafe impl aya::Pod for super::Flow {}
    unsafe impl aya::Pod for super::Retransmit {}
}
