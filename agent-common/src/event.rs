//! Ring-buffer records: a common [`Header`] followed by a per-kind body.

/// Record kinds, as written into [`Header::kind`]. Values are part of the wire format
/// (recordings depend on them): never renumber, only append.
#[repr(u16)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Kind {
    Retransmit = 1,
    SendError = 2,
    IcmpTooBig = 3,
    SocketState = 4,
    SocketError = 5,
    CongState = 6,
    UdpSend = 7,
    /// Made by the agent, never by a program: see [`SockLookup`].
    SockLookup = 8,
    /// Made by the agent: see [`LossReport`].
    LossReport = 9,
    /// Made by the agent: see [`ClockStep`].
    ClockStep = 10,
    /// Datagrams dropped at a full socket receive queue (and the socket's memory
    /// limits), counted per socket in the kernel: see [`UdpQueueDrop`].
    UdpQueueDrop = 11,
}

impl Kind {
    pub const ALL: [Kind; 11] = [
        Kind::Retransmit,
        Kind::SendError,
        Kind::IcmpTooBig,
        Kind::SocketState,
        Kind::SocketError,
        Kind::CongState,
        Kind::UdpSend,
        Kind::SockLookup,
        Kind::LossReport,
        Kind::ClockStep,
        Kind::UdpQueueDrop,
    ];

    pub fn from_u16(v: u16) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| *k as u16 == v)
    }

    /// Size in bytes of the whole record of this kind, header included.
    pub const fn size(self) -> usize {
        match self {
            Kind::Retransmit => size_of::<Retransmit>(),
            Kind::SendError => size_of::<SendError>(),
            Kind::IcmpTooBig => size_of::<IcmpTooBig>(),
            Kind::SocketState => size_of::<SocketState>(),
            Kind::SocketError => size_of::<SocketError>(),
            Kind::CongState => size_of::<CongState>(),
            Kind::UdpSend => size_of::<UdpSend>(),
            Kind::SockLookup => size_of::<SockLookup>(),
            Kind::LossReport => size_of::<LossReport>(),
            Kind::ClockStep => size_of::<ClockStep>(),
            Kind::UdpQueueDrop => size_of::<UdpQueueDrop>(),
        }
    }

    /// Made by the agent (kernel answers, its own bookkeeping), never by a program.
    pub const fn is_agent_made(self) -> bool {
        matches!(self, Kind::SockLookup | Kind::LossReport | Kind::ClockStep)
    }
}

/// A record type: its kind, and where a program counts it when it cannot deliver it.
/// Every record starts with a [`Header`].
pub trait Record: Copy + Default + 'static {
    const KIND: Kind;
    /// `LOST` slot counted when the ring has no room (`loss::slot`).
    const RING_FULL: u32;
    /// `LOST` slot counted when a reserved record is discarded because reading the
    /// kernel's data for it failed.
    const UNREADABLE: u32;
    fn header(&self) -> &Header;
    fn header_mut(&mut self) -> &mut Header;
}

macro_rules! record {
    ($t:ident, $kind:ident, $full:expr, $unreadable:expr) => {
        impl Record for $t {
            const KIND: Kind = Kind::$kind;
            const RING_FULL: u32 = $full;
            const UNREADABLE: u32 = $unreadable;
            fn header(&self) -> &Header {
                &self.header
            }
            fn header_mut(&mut self) -> &mut Header {
                &mut self.header
            }
        }
    };
}

use crate::loss::slot;
record!(
    Retransmit,
    Retransmit,
    slot::RETRANSMIT,
    slot::RETRANSMIT_UNREADABLE
);
record!(
    SendError,
    SendError,
    slot::SEND_ERROR,
    slot::SEND_ERROR_UNREADABLE
);
record!(IcmpTooBig, IcmpTooBig, slot::ICMP, slot::ICMP_UNREADABLE);
record!(
    SocketState,
    SocketState,
    slot::SOCKET_STATE,
    slot::SOCKET_STATE_UNREADABLE
);
record!(
    SocketError,
    SocketError,
    slot::SOCKET_ERROR,
    slot::SOCKET_ERROR_UNREADABLE
);
record!(
    CongState,
    CongState,
    slot::CONG_STATE,
    slot::CONG_STATE_UNREADABLE
);
record!(UdpSend, UdpSend, slot::UDP_SEND, slot::UDP_SEND_UNREADABLE);
record!(SockLookup, SockLookup, slot::NONE, slot::NONE);
record!(LossReport, LossReport, slot::NONE, slot::NONE);
record!(ClockStep, ClockStep, slot::NONE, slot::NONE);
record!(
    UdpQueueDrop,
    UdpQueueDrop,
    slot::UDP_QUEUE,
    slot::UDP_QUEUE_UNREADABLE
);

/// First bytes of every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Header {
    /// A [`Kind`], as its number.
    pub kind: u16,
    /// Size in bytes of the whole record, header included. Lets the decoder reject
    /// truncated or mismatched records instead of reading past them.
    pub len: u16,
    /// CPU the program ran on.
    pub cpu: u32,
    /// `bpf_ktime_get_ns()`: CLOCK_MONOTONIC, converted to wall time by the agent.
    pub ts_ns: u64,
    /// Kernel address of the `struct sock`, 0 when the event has none. Used only as
    /// an identity key by the agent (which maps it to a small socket id); never printed.
    pub sk: u64,
}

impl Header {
    /// The header of a record of type `R`, made now (`ts_ns`) on `cpu`.
    pub fn new<R: Record>(cpu: u32, ts_ns: u64, sk: u64) -> Header {
        Header {
            kind: R::KIND as u16,
            len: size_of::<R>() as u16,
            cpu,
            ts_ns,
            sk,
        }
    }
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

/// The process behind a socket: the caller for process-context events, the
/// recorded owner (see `SockInfo`) for softirq ones. `pid == 0`: unknown.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Owner {
    /// Thread group id (what userspace calls the pid).
    pub pid: u32,
    /// Thread id.
    pub tid: u32,
    pub cgroup: u64,
    pub comm: [u8; 16],
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
    pub owner: Owner,
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
    /// Sequence number of the skb's first byte.
    pub seq: u32,
    /// `tp->mss_cache`: the MSS the socket is using now.
    pub mss: u32,
    /// `icsk->icsk_pmtu_cookie`: the path MTU the socket last synced to.
    pub pmtu: u32,
    /// `icsk->icsk_rto`, in jiffies (the agent converts with the kernel's HZ).
    pub rto_jiffies: u32,
    /// `tp->write_seq - tp->snd_una`: bytes written but not yet acknowledged.
    pub snd_queue: u32,
    /// `tp->srtt_us >> 3`: smoothed RTT in microseconds.
    pub srtt_us: u32,
    /// `tp->snd_cwnd`
    pub cwnd: u32,
    /// Network namespace inode of the socket, 0 when unknown.
    pub netns: u32,
    /// `icsk->icsk_backoff`: RTO doublings so far.
    pub backoff: u8,
    /// `icsk->icsk_ca_state` (TCP_CA_Open = 0 ... TCP_CA_Loss = 4).
    pub ca_state: u8,
    /// [`retransmit_kind`], decided from ca_state and the pending timer.
    pub kind: u8,
    /// The low byte of `tp->dsack_dups`: segments the peer has reported receiving
    /// twice (DSACK), so far (DSACK blocks before 5.10). A retransmission the peer reports this way was not
    /// needed (reordering, an early timer, a probe). Only differences between
    /// records of one socket mean anything; a byte keeps the record's layout (older
    /// recordings carry 0, as do kernels without the field).
    pub dsacks: u8,
    /// `tp->snd_una`: oldest unacknowledged sequence number (progress shows here).
    pub snd_una: u32,
    /// `tp->delivered`: data segments delivered so far.
    pub delivered: u32,
    /// `tp->bytes_acked`: bytes acknowledged so far. With `delivered` it tells whether
    /// full-size segments ever got through (the black-hole question).
    pub bytes_acked: u64,
}

pub mod retransmit_flags {
    /// The tracepoint has an `err` field (newer kernels); `Retransmit::err` is valid.
    pub const HAS_ERR: u32 = 1 << 0;
    /// Reading the skb failed; `segs`/`len`/`seg_len`/`seq` are not known.
    pub const NO_SKB: u32 = 1 << 1;
    /// Reading the socket failed; mss, rto, queue and friends are not known.
    pub const NO_SOCK: u32 = 1 << 2;
}

pub mod retransmit_kind {
    pub const OTHER: u8 = 0;
    /// Retransmission timeout: the socket entered TCP_CA_Loss.
    pub const RTO: u8 = 1;
    /// Fast retransmit / recovery (dupacks, SACK, RACK): TCP_CA_Recovery.
    pub const FAST: u8 = 2;
    /// Tail loss probe: fired from the loss-probe timer.
    pub const TLP: u8 = 3;
}

/// A send-family call failed on a socket.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SendError {
    pub header: Header,
    pub flow: Flow,
    pub owner: Owner,
    /// Positive errno (70 = ECOMM).
    pub errno: i32,
    /// Bytes the call asked to send, when known (see `flags`).
    pub bytes: u32,
    /// Syscall number (the agent's architecture), or -1 when the error was seen only
    /// in the socket layer (no syscall exit followed).
    pub syscall: i32,
    pub netns: u32,
    /// [`send_source`] bits: which hooks saw this failure.
    pub source: u32,
    /// [`send_flags`].
    pub flags: u32,
}

pub mod send_source {
    /// `sock:sock_send_length` (the socket layer).
    pub const SOCKET: u32 = 1 << 0;
    /// The syscall exit of a send-family call.
    pub const SYSCALL: u32 = 1 << 1;
}

pub mod send_flags {
    pub const BYTES_KNOWN: u32 = 1 << 0;
    /// The socket behind the fd could not be resolved: flow unknown.
    pub const NO_SOCK: u32 = 1 << 1;
}

/// An ICMP "fragmentation needed" (IPv4 type 3 code 4) or ICMPv6 "packet too big"
/// (type 2) message, received by or (`source`) sent from this host.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct IcmpTooBig {
    pub header: Header,
    /// The flow quoted inside the ICMP payload, as seen from the host that sent the
    /// original packet: saddr/sport local, daddr/dport peer.
    pub quoted: Flow,
    /// Source address of the ICMP message: the router that could not forward.
    pub router: [u8; 16],
    /// Next-hop MTU the message reports.
    pub mtu: u32,
    /// TCP sequence number quoted (0 for other protocols).
    pub seq: u32,
    /// Namespace of the receiving device, 0 when unknown.
    pub netns: u32,
    pub ifindex: u32,
    /// [`icmp_source`]
    pub source: u8,
    pub icmp_type: u8,
    pub icmp_code: u8,
    pub _reserved: [u8; 5],
}

pub mod icmp_source {
    pub const RECEIVED: u8 = 1;
    pub const SENT: u8 = 2;
}

/// `sock:inet_sock_set_state`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketState {
    pub header: Header,
    pub flow: Flow,
    pub owner: Owner,
    pub netns: u32,
    pub old_state: u8,
    pub new_state: u8,
    /// The socket's `sk_err` at a move to CLOSE, where no error-report hook exists
    /// (`Config::errors_at_close`), else 0. The agent reads a nonzero one as a
    /// [`SocketError`] just before this change: errnos fit a byte, and the state
    /// program has no stack left for a second record on 5.10's verifier.
    pub sk_err: u8,
    pub _reserved: u8,
}

impl SocketState {
    /// The error report this change carries, if any.
    pub fn error(&self) -> Option<SocketError> {
        (self.sk_err != 0).then(|| SocketError {
            header: Header {
                kind: Kind::SocketError as u16,
                len: size_of::<SocketError>() as u16,
                ..self.header
            },
            flow: self.flow,
            errno: self.sk_err.into(),
            _reserved: 0,
        })
    }
}

/// `sock:inet_sk_error_report`: an error was reported on a socket. The tracepoint
/// carries no socket pointer; the agent finds the socket by its flow.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SocketError {
    pub header: Header,
    pub flow: Flow,
    /// Positive errno.
    pub errno: i32,
    pub _reserved: u32,
}

/// `tcp:tcp_cong_state_set`: congestion-control state change.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CongState {
    pub header: Header,
    pub flow: Flow,
    /// New `icsk_ca_state`.
    pub state: u8,
    pub _reserved: [u8; 7],
}

/// Per-socket facts kept in the kernel (`SOCKS` map): the owner, recorded from
/// process context, for the events raised in softirq.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockInfo {
    pub owner: Owner,
    pub netns: u32,
    /// Second (ktime) of the last `UdpSend` record for this socket: one per second.
    pub udp_reported_s: u32,
}

/// A UDP datagram larger than `Config::udp_large_bytes` was sent (at most one
/// record per socket per second): the payload that may not fit the path.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpSend {
    pub header: Header,
    pub flow: Flow,
    pub owner: Owner,
    pub bytes: u32,
    pub netns: u32,
}

/// One source of datagrams a socket dropped, with its count (see [`UdpQueueDrop`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpPeer {
    /// Network order; IPv4 in the first four bytes. All zero: slot unused.
    pub addr: [u8; 16],
    /// Host order.
    pub port: u16,
    /// AF_INET / AF_INET6.
    pub family: u16,
    pub _reserved: u32,
    pub drops: u64,
}

/// Peers tracked per socket; drops from further sources are counted in
/// `UdpQueueDrop::other_peer_drops`.
pub const UDP_QUEUE_PEERS: usize = 4;

/// The state of one socket's receive-queue drops, kept in the kernel (`UDPQ` map,
/// keyed by the `struct sock` address) and emitted as a record at the first drop and
/// then at most once per `Config::udpq_interval_ms` per socket. Every counter is
/// cumulative since the agent attached, so the latest record is exact however many
/// were suppressed (`suppressed`); the agent also reads the map itself and sends
/// the latest state through the stream (`udpq_flags::AGENT`).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UdpQueueDrop {
    pub header: Header,
    /// The socket's own flow: saddr/sport local; daddr/dport zero when unconnected.
    pub flow: Flow,
    /// The recorded owner (SOCKS), else the one the agent found in /proc
    /// (`udpq_flags::OWNER_FROM_PROC`); zero when unknown.
    pub owner: Owner,
    /// The first sources of dropped datagrams, with their counts.
    pub peers: [UdpPeer; UDP_QUEUE_PEERS],
    /// Drops from sources beyond `peers`, or whose source could not be read.
    pub other_peer_drops: u64,
    /// Datagrams dropped because the receive queue was full (rc -ENOMEM: what the
    /// kernel counts as `Udp: RcvbufErrors`).
    pub drops: u64,
    /// Other enqueue failures (-ENOBUFS: the protocol's memory limit, `MemErrors`).
    pub mem_drops: u64,
    /// Records for this socket not emitted because of the rate bound.
    pub suppressed: u64,
    /// ktime of the first and the last drop.
    pub first_ns: u64,
    pub last_ns: u64,
    /// ktime of the last emitted record (the rate bound's clock).
    pub last_emit_ns: u64,
    /// Inode of the socket (what /proc/PID/fd links name), 0 when unknown.
    pub inode: u64,
    /// `sock:sock_exceed_buf_limit` hits, send side (SK_MEM_SEND) and receive side.
    pub send_limit: u32,
    pub recv_limit: u32,
    /// The socket's own drop counter (`sk_drops`, + its per-NUMA counters on 6.18+)
    /// at the last drop: every drop of the socket since it was created.
    pub sk_drops: u32,
    /// `sk_rcvbuf`: the receive buffer limit in bytes; -1 unknown.
    pub rcvbuf: i32,
    /// `sk_rmem_alloc` at the last drop: bytes queued (truesize); -1 unknown.
    pub queued: i32,
    pub netns: u32,
    /// Bytes of the last dropped datagram (skb->len, headers included).
    pub last_len: u32,
    /// [`udpq_flags`].
    pub flags: u32,
}

pub mod udpq_flags {
    /// `peers` were read from the dropped skbs.
    pub const HAS_PEERS: u32 = 1 << 0;
    /// No socket pointer (classic tracepoint record): keyed by local port, flow
    /// partial, owner unknown.
    pub const NO_SOCK: u32 = 1 << 1;
    /// `sk_drops` was read.
    pub const SK_DROPS: u32 = 1 << 2;
    /// Made by the agent from the kernel's map (the state after the last emitted
    /// record), not by a program.
    pub const AGENT: u32 = 1 << 3;
    /// The agent's last read of the map, at the end of the run.
    pub const FINAL: u32 = 1 << 4;
    /// The owner was found by the agent in /proc (the socket never sent).
    pub const OWNER_FROM_PROC: u32 = 1 << 5;
}

/// Made by the agent, never by a program: the kernel's answer to "does a TCP socket
/// with this flow exist in this network namespace?", asked when a too-big message
/// quotes a TCP flow the agent does not track (a forgery quotes one that does not
/// exist). It travels in the record stream just before the message it answers, so a
/// recording carries the answer and a replay reaches the same verdict.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct SockLookup {
    pub header: Header,
    /// The flow asked about (the quoted flow: saddr/sport local).
    pub flow: Flow,
    pub netns: u32,
    /// [`lookup_answer`]
    pub answer: u8,
    pub _reserved: [u8; 3],
}

pub mod lookup_answer {
    /// The agent could not ask (no process in that namespace readable, rate bound).
    pub const UNKNOWN: u8 = 0;
    pub const EXISTS: u8 = 1;
    pub const ABSENT: u8 = 2;
}

/// Made by the agent, never by a program: the kernel's loss counters as the agent
/// read them (one record per counter that grew). In a recording they carry the live
/// run's losses into the replay, whose ledger then says the same.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LossReport {
    pub header: Header,
    /// The `LOST` slot (`loss::slot`).
    pub slot: u32,
    pub _reserved: u32,
    /// The slot's total since start.
    pub total: u64,
}

/// Made by the agent: the wall clock moved against the monotonic clock (an NTP step,
/// a manual `date -s`). Later timestamps are converted with the new offset, in the
/// live run and in its replay alike.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ClockStep {
    pub header: Header,
    /// Realtime minus monotonic, in ns, from now on.
    pub offset_ns: i64,
}

/// A socket-layer send failure waiting for its syscall exit (`PENDING`, per thread),
/// which adds what only the syscall knows (bytes requested, syscall number).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PendingSend {
    pub sk: u64,
    pub ts_ns: u64,
    pub errno: i32,
    pub _reserved: u32,
}

const _: () = assert!(core::mem::size_of::<Header>() == 24);
const _: () = assert!(core::mem::size_of::<Flow>() == 40);
const _: () = assert!(core::mem::size_of::<Owner>() == 32);
const _: () = assert!(core::mem::size_of::<Retransmit>() == 168);
const _: () = assert!(core::mem::size_of::<SendError>() == 96 + 24);
const _: () = assert!(core::mem::size_of::<IcmpTooBig>() == 64 + 16 + 24);
const _: () = assert!(core::mem::size_of::<SocketState>() == 96 + 8);
const _: () = assert!(core::mem::size_of::<SocketError>() == 72);
const _: () = assert!(core::mem::size_of::<CongState>() == 72);
const _: () = assert!(core::mem::size_of::<SockInfo>() == 40);
const _: () = assert!(core::mem::size_of::<UdpSend>() == 104);
const _: () = assert!(core::mem::size_of::<PendingSend>() == 24);
const _: () = assert!(core::mem::size_of::<SockLookup>() == 72);
const _: () = assert!(core::mem::size_of::<LossReport>() == 40);
const _: () = assert!(core::mem::size_of::<ClockStep>() == 32);
const _: () = assert!(core::mem::size_of::<UdpPeer>() == 32);
const _: () = assert!(core::mem::size_of::<UdpQueueDrop>() == 320);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: all types are repr(C), made only of integers and arrays of integers,
    // with no implicit padding (sizes asserted above); any bit pattern is valid.
    unsafe impl aya::Pod for super::Header {}
    unsafe impl aya::Pod for super::Flow {}
    unsafe impl aya::Pod for super::Owner {}
    unsafe impl aya::Pod for super::Retransmit {}
    unsafe impl aya::Pod for super::SendError {}
    unsafe impl aya::Pod for super::IcmpTooBig {}
    unsafe impl aya::Pod for super::SocketState {}
    unsafe impl aya::Pod for super::SocketError {}
    unsafe impl aya::Pod for super::CongState {}
    unsafe impl aya::Pod for super::SockInfo {}
    unsafe impl aya::Pod for super::UdpSend {}
    unsafe impl aya::Pod for super::PendingSend {}
    unsafe impl aya::Pod for super::SockLookup {}
    unsafe impl aya::Pod for super::LossReport {}
    unsafe impl aya::Pod for super::ClockStep {}
    unsafe impl aya::Pod for super::UdpPeer {}
    unsafe impl aya::Pod for super::UdpQueueDrop {}
}
