//! Datagrams dropped at a full socket receive queue: the failure Windows calls
//! ERROR_IPSEC_IKE_QUEUE_DROP_MM, silent on Linux but for one host-wide counter
//! (`Udp: RcvbufErrors`). Counted per socket here, emitted at a bounded rate.
//!
//! Kernel contract (what this file relies on, checked by the loader):
//!
//! - `udp:udp_fail_queue_rcv_skb` fires once per datagram the socket layer refused
//!   (`__udp_queue_rcv_skb`, and the IPv6 twin), right after the kernel counted it:
//!   rc -ENOMEM is `RcvbufErrors` (queue full: `sk_rmem_alloc` over `sk_rcvbuf`),
//!   anything else `MemErrors` (-ENOBUFS, the protocol's memory limit). Its raw
//!   prototype is `(int rc, struct sock *sk)` up to 6.9 and `(int rc, struct sock
//!   *sk, struct sk_buff *skb)` from 6.10 (BTF `btf_trace_udp_fail_queue_rcv_skb`):
//!   the raw tracepoint reads rc and sk by position on every kernel that has it,
//!   and the skb (the dropped datagram's source) when there is a third argument.
//! - The classic record has no socket pointer: up to 6.9 `rc, lport`; from 6.10
//!   `rc, sport, dport, family, saddr[28], daddr[28]` (sockaddr storage; sport is
//!   the datagram's source port). It is the fallback, keyed by local port.
//! - `sock:sock_exceed_buf_limit` (raw: `(struct sock *sk, struct proto *prot, long
//!   allocated, int kind)`, kind 0 send / 1 receive; 4.16+) when a socket hits the
//!   protocol's memory limits; counted for UDP sockets only.
//! - `struct sock` members from BTF: `sk_rcvbuf`, `sk_backlog.rmem_alloc`,
//!   `sk_drops` (+ `sk_drop_counters` -> `numa_drop_counters.drops{0,1}` on 6.18+),
//!   `sk_socket` -> `socket_alloc.vfs_inode.i_ino` (the inode /proc/PID/fd names);
//!   any of them ABSENT is reported unknown, never read wrong.
//!
//! These hooks run in softirq: the owner comes from `SOCKS` (recorded from process
//! context) or, for a socket that only ever receives, from the agent's /proc lookup
//! by inode.

use agent_common::{
    event::{AF_INET, AF_INET6, IPPROTO_UDP, Kind, UDP_QUEUE_PEERS, UdpQueueDrop, udpq_flags},
    kernel::errno::ENOMEM,
    layout::ABSENT,
    loss::slot,
};
use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::{map, raw_tracepoint, tracepoint},
    maps::{Array, LruHashMap, PerCpuArray},
    programs::{RawTracePointContext, TracePointContext},
};

use crate::{
    emit::{Ctx, Undelivered},
    maps::{SOCKS, count_lost},
    read::{self, Fail},
    sock, transport,
};

/// Socket -> its drop state (and the record it is emitted as). LRU: a socket that
/// stopped dropping makes room; the agent has its last state by then.
#[map]
pub static UDPQ: LruHashMap<u64, UdpQueueDrop> = LruHashMap::with_max_entries(4096, 0);

/// 1 once any socket has dropped a datagram: until then the receive hook leaves at
/// once (an array load) instead of looking the socket up in `UDPQ` on every receive.
#[map]
static UDPQ_ANY: Array<u32> = Array::with_max_entries(1, 0);

/// Never written: the zeroed value new entries are inserted from (a 320-byte
/// value does not belong on the 512-byte stack).
#[map]
static UDPQ_ZERO: PerCpuArray<UdpQueueDrop> = PerCpuArray::with_max_entries(1, 0);

const BPF_NOEXIST: u64 = 1;
/// Keys of the classic fallback, which has no socket pointer: this bit plus the
/// local port.
const PORT_KEY: u64 = 1 << 63;
const SK_MEM_SEND: i64 = 0;

/// One dropped datagram, as the hook saw it.
struct QueueDrop {
    /// Socket address, or `PORT_KEY | lport` (classic record).
    key: u64,
    /// The socket, 0 when the record has none.
    sk: u64,
    rc: i32,
    skb: u64,
    /// Source of the datagram (address, port, family), when the record carries it
    /// (classic, 6.10+); family 0 when not. Plain values, not `Option`s: a `None`
    /// leaves its payload uninitialized, and verifiers before 6.x refuse a program
    /// that copies uninitialized stack.
    peer: ([u8; 16], u16, u16),
    /// Local address and family, when the record carries them (classic, 6.10+).
    local: ([u8; 16], u16),
    lport: u16,
}

const NO_PEER: ([u8; 16], u16, u16) = ([0; 16], 0, 0);
const NO_LOCAL: ([u8; 16], u16) = ([0; 16], 0);

/// Drops for one socket can arrive on several CPUs at once: the counts must be
/// exact (they are compared with the kernel's own), so atomically. BPF has an
/// atomic add, not the compare-and-swap `AtomicU64::fetch_add` needs on this target.
#[cfg(target_arch = "bpf")]
#[inline(always)]
fn add(counter: *mut u64, n: u64) {
    use core::intrinsics::{AtomicOrdering, atomic_xadd};
    unsafe { atomic_xadd::<u64, u64, { AtomicOrdering::Relaxed }>(counter, n) };
}

/// Host builds exist for clippy only.
#[cfg(not(target_arch = "bpf"))]
#[inline(always)]
fn add(counter: *mut u64, n: u64) {
    unsafe { *counter += n };
}

/// The map entry for `key`, created (zeroed) when missing.
#[inline(always)]
fn entry(key: u64) -> Option<*mut UdpQueueDrop> {
    if let Some(p) = UDPQ.get_ptr_mut(&key) {
        return Some(p);
    }
    let zero = UDPQ_ZERO.get_ptr(0)?;
    // NOEXIST: when two CPUs race, one insert wins and both use its entry.
    let _ = UDPQ.insert(&key, unsafe { &*zero }, BPF_NOEXIST);
    if let Some(any) = UDPQ_ANY.get_ptr_mut(0) {
        unsafe { *any = 1 };
    }
    UDPQ.get_ptr_mut(&key)
}

/// Source address and port of the datagram in `skb`.
#[inline(always)]
fn skb_peer(skb: u64) -> Result<([u8; 16], u16, u16), Fail> {
    let head = read::kernel::<u64>(skb, lay!(kernel.skb_head))?;
    let nh = read::kernel::<u16>(skb, lay!(kernel.skb_network_header))?;
    let th = read::kernel::<u16>(skb, lay!(kernel.skb_transport_header))?;
    let ip = head + nh as u64;
    let v = unsafe { bpf_probe_read_kernel(ip as *const u8) }.map_err(|_| 1u32)? >> 4;
    let mut addr = [0u8; 16];
    let family = if v == 4 {
        let a = unsafe { bpf_probe_read_kernel((ip + 12) as *const [u8; 4]) }.map_err(|_| 1u32)?;
        addr[..4].copy_from_slice(&a);
        AF_INET
    } else if v == 6 {
        addr = unsafe { bpf_probe_read_kernel((ip + 8) as *const [u8; 16]) }.map_err(|_| 1u32)?;
        AF_INET6
    } else {
        return Err(1);
    };
    let port =
        unsafe { bpf_probe_read_kernel((head + th as u64) as *const u16) }.map_err(|_| 1u32)?;
    Ok((addr, u16::from_be(port), family))
}

/// Counts the datagram against its source in the entry's peer slots.
#[inline(always)]
fn count_peer(st: *mut UdpQueueDrop, peer: Option<([u8; 16], u16, u16)>) {
    let Some((addr, port, family)) = peer else {
        add(unsafe { &raw mut (*st).other_peer_drops }, 1);
        return;
    };
    unsafe { (*st).flags |= udpq_flags::HAS_PEERS };
    for i in 0..UDP_QUEUE_PEERS {
        let p = unsafe { &raw mut (*st).peers[i] };
        let used = unsafe { (*p).drops } != 0 || unsafe { (*p).family } != 0;
        if used {
            if unsafe { (*p).port } == port && unsafe { (*p).addr } == addr {
                add(unsafe { &raw mut (*p).drops }, 1);
                return;
            }
            continue;
        }
        unsafe {
            (*p).addr = addr;
            (*p).port = port;
            (*p).family = family;
        }
        add(unsafe { &raw mut (*p).drops }, 1);
        return;
    }
    add(unsafe { &raw mut (*st).other_peer_drops }, 1);
}

/// The socket's own drop count: `sk_drops`, plus the per-NUMA counters UDP uses
/// on 6.18+.
#[inline(always)]
fn sk_drops(sk: u64) -> Option<u32> {
    let mut n = read::kernel::<u32>(sk, lay!(kernel.sk_drops)).ok()?;
    let ndc = read::kernel_or::<u64>(sk, lay!(kernel.sk_drop_counters), 0);
    if ndc != 0 {
        n = n.wrapping_add(read::kernel_or::<u32>(ndc, lay!(kernel.ndc_drops0), 0));
        n = n.wrapping_add(read::kernel_or::<u32>(ndc, lay!(kernel.ndc_drops1), 0));
    }
    Some(n)
}

/// Inode of the socket's `struct socket` (what `/proc/PID/fd/N` links name).
#[inline(always)]
fn inode_of(sk: u64) -> u64 {
    let socket = read::kernel_or::<u64>(sk, lay!(kernel.sk_socket), 0);
    let off = lay!(kernel.socket_vfs_inode);
    if socket == 0 || off == ABSENT {
        return 0;
    }
    read::kernel_or::<u64>(socket + off as u64, lay!(kernel.inode_ino), 0)
}

/// Emits the entry when the rate bound allows (always for its first drop); counts
/// the suppressed emission otherwise.
#[inline(always)]
fn maybe_emit(ctx: Ctx, key: u64, sk: u64, st: *mut UdpQueueDrop, now: u64) {
    let last = unsafe { (*st).last_emit_ns };
    let interval = cfg!(udpq_interval_ms) as u64 * 1_000_000;
    if last != 0 && now.wrapping_sub(last) < interval {
        add(unsafe { &raw mut (*st).suppressed }, 1);
        count_lost(slot::UDP_QUEUE_RATE_BOUNDED);
        return;
    }
    unsafe { (*st).last_emit_ns = now };
    // What only changes rarely is read when a record goes out.
    if sk != 0 {
        if let Ok(flow) = sock::flow_of(sk) {
            unsafe { (*st).flow = flow };
        }
        // The reader (sock_recv_raw) first, else the recorded sender.
        if unsafe { (*st).owner.pid } == 0 {
            let owner = sock::owner_of(sk);
            if owner.pid != 0 {
                unsafe { (*st).owner = owner };
            }
        }
        let netns = sock::netns_of(sk);
        let rcvbuf = read::kernel_or::<i32>(sk, lay!(kernel.sk_rcvbuf), -1);
        unsafe {
            (*st).netns = netns;
            (*st).rcvbuf = rcvbuf;
            if (*st).inode == 0 {
                (*st).inode = inode_of(sk);
            }
        }
    }
    unsafe {
        (*st).header.kind = Kind::UdpQueueDrop as u16;
        (*st).header.len = size_of::<UdpQueueDrop>() as u16;
        (*st).header.cpu = bpf_get_smp_processor_id();
        (*st).header.ts_ns = now;
        (*st).header.sk = key;
    }
    match transport::output_from(ctx, st) {
        Ok(()) => {}
        Err(Undelivered::Full) => count_lost(slot::UDP_QUEUE),
        Err(Undelivered::Unreadable) => count_lost(slot::UDP_QUEUE_UNREADABLE),
    }
}

#[inline(always)]
fn on_drop(ctx: Ctx, d: QueueDrop) -> Result<u32, Fail> {
    if d.rc >= 0 || d.key == 0 {
        return Ok(0);
    }
    let now = unsafe { bpf_ktime_get_ns() };
    let Some(st) = entry(d.key) else {
        count_lost(slot::UDP_QUEUE);
        return Ok(0);
    };
    if d.rc == -ENOMEM {
        add(unsafe { &raw mut (*st).drops }, 1);
    } else {
        add(unsafe { &raw mut (*st).mem_drops }, 1);
    }
    unsafe {
        if (*st).first_ns == 0 {
            (*st).first_ns = now;
        }
        (*st).last_ns = now;
    }
    let peer = if d.peer.2 != 0 {
        Some(d.peer)
    } else if d.skb != 0 {
        skb_peer(d.skb).ok()
    } else {
        None
    };
    count_peer(st, peer);
    if d.sk != 0 {
        let queued = read::kernel_or::<i32>(d.sk, lay!(kernel.sk_rmem_alloc), -1);
        unsafe {
            (*st).queued = queued;
            if let Some(n) = sk_drops(d.sk) {
                (*st).sk_drops = n;
                (*st).flags |= udpq_flags::SK_DROPS;
            }
        }
    } else {
        unsafe {
            (*st).flags |= udpq_flags::NO_SOCK;
            (*st).flow.sport = d.lport;
            (*st).flow.protocol = IPPROTO_UDP;
            if d.local.1 != 0 {
                (*st).flow.saddr = d.local.0;
                (*st).flow.family = d.local.1;
            }
            (*st).queued = -1;
            (*st).rcvbuf = -1;
        }
    }
    if d.skb != 0 {
        let len = read::kernel_or::<u32>(d.skb, lay!(kernel.skb_len), 0);
        unsafe { (*st).last_len = len };
    }
    maybe_emit(ctx, d.key, d.sk, st, now);
    Ok(0)
}

/// `TP_PROTO(int rc, struct sock *sk, ...)`, positions checked against BTF by the
/// loader: kernels up to 6.9 (no skb argument, so no sources).
#[raw_tracepoint(tracepoint = "udp_fail_queue_rcv_skb")]
pub fn udp_queue_raw(ctx: RawTracePointContext) -> i32 {
    let rc: i64 = ctx.arg(0);
    let sk: u64 = ctx.arg(1);
    let d = QueueDrop {
        key: sk,
        sk,
        rc: rc as i32,
        skb: 0,
        peer: NO_PEER,
        local: NO_LOCAL,
        lport: 0,
    };
    match on_drop(ctx.as_ptr(), d) {
        Ok(r) | Err(r) => r as i32,
    }
}

/// The same, on kernels whose prototype has the skb (6.10+): also the sources.
#[raw_tracepoint(tracepoint = "udp_fail_queue_rcv_skb")]
pub fn udp_queue_raw_skb(ctx: RawTracePointContext) -> i32 {
    let rc: i64 = ctx.arg(0);
    let sk: u64 = ctx.arg(1);
    let skb: u64 = ctx.arg(2);
    let d = QueueDrop {
        key: sk,
        sk,
        rc: rc as i32,
        skb,
        peer: NO_PEER,
        local: NO_LOCAL,
        lport: 0,
    };
    match on_drop(ctx.as_ptr(), d) {
        Ok(r) | Err(r) => r as i32,
    }
}

/// The classic record: no socket pointer, so drops are keyed by local port.
#[tracepoint(category = "udp", name = "udp_fail_queue_rcv_skb")]
pub fn udp_fail_queue_rcv_skb(ctx: TracePointContext) -> u32 {
    match try_classic(&ctx) {
        Ok(r) | Err(r) => r,
    }
}

fn try_classic(ctx: &TracePointContext) -> Result<u32, Fail> {
    let tp = lay!(udpq_tp);
    let rc = read::tp::<i32>(ctx, tp.rc)?;
    let (lport, peer, local) = if tp.lport != ABSENT {
        (read::tp::<u16>(ctx, tp.lport)?, NO_PEER, NO_LOCAL)
    } else {
        // 6.10+: sport/saddr are the datagram's source, dport/daddr its destination
        // (this socket); the addresses as sockaddr_in (address at 4) or
        // sockaddr_in6 (at 8).
        let family = read::tp::<u16>(ctx, tp.family)?;
        let mut src = [0u8; 16];
        let mut dst = [0u8; 16];
        if family == AF_INET6 {
            src = read::tp::<[u8; 16]>(ctx, tp.saddr + 8)?;
            dst = read::tp::<[u8; 16]>(ctx, tp.daddr + 8)?;
        } else {
            src[..4].copy_from_slice(&read::tp::<[u8; 4]>(ctx, tp.saddr + 4)?);
            dst[..4].copy_from_slice(&read::tp::<[u8; 4]>(ctx, tp.daddr + 4)?);
        }
        let sport = read::tp::<u16>(ctx, tp.sport)?;
        (
            read::tp::<u16>(ctx, tp.dport)?,
            (src, sport, family),
            (dst, family),
        )
    };
    on_drop(
        ctx.as_ptr(),
        QueueDrop {
            key: PORT_KEY | lport as u64,
            sk: 0,
            rc,
            skb: 0,
            peer,
            local,
            lport,
        },
    )
}

/// `TP_PROTO(struct sock *sk, struct proto *prot, long allocated, int kind)`: a
/// socket hit the protocol's memory limit (send or receive side). UDP sockets only.
#[raw_tracepoint(tracepoint = "sock_exceed_buf_limit")]
pub fn sock_exceed_buf_raw(ctx: RawTracePointContext) -> i32 {
    let sk: u64 = ctx.arg(0);
    let kind: i64 = ctx.arg(3);
    match on_limit(ctx.as_ptr(), sk, kind) {
        Ok(r) | Err(r) => r as i32,
    }
}

#[inline(always)]
fn on_limit(ctx: Ctx, sk: u64, kind: i64) -> Result<u32, Fail> {
    if read::kernel::<u16>(sk, lay!(kernel.sk_protocol))? as u8 != IPPROTO_UDP {
        return Ok(0);
    }
    let Some(st) = entry(sk) else {
        count_lost(slot::UDP_QUEUE);
        return Ok(0);
    };
    unsafe {
        if kind as i32 == SK_MEM_SEND as i32 {
            (*st).send_limit = (*st).send_limit.wrapping_add(1);
        } else {
            (*st).recv_limit = (*st).recv_limit.wrapping_add(1);
        }
    }
    // Sends claim their socket: the sender is the owner.
    if kind == SK_MEM_SEND && SOCKS.get_ptr(&sk).is_none() {
        sock::claim(sk);
    }
    maybe_emit(ctx, sk, sk, st, unsafe { bpf_ktime_get_ns() });
    Ok(0)
}

/// `sock:sock_recv_length` (6.3+), `TP_PROTO(struct sock *sk, int ret, int flags)`:
/// the thread reading a socket that has dropped datagrams is its owner (a socket
/// that only receives is never claimed by the send path). Runs on every receive on
/// the host: an array load until some socket has dropped a datagram, then one
/// `UDPQ` lookup; nothing else unless the socket is in `UDPQ`.
#[raw_tracepoint(tracepoint = "sock_recv_length")]
pub fn sock_recv_raw(ctx: RawTracePointContext) -> i32 {
    if UDPQ_ANY.get(0).is_none_or(|any| *any == 0) {
        return 0;
    }
    let sk: u64 = ctx.arg(0);
    if let Some(st) = UDPQ.get_ptr_mut(&sk) {
        let tid = aya_ebpf::helpers::bpf_get_current_pid_tgid() as u32;
        if unsafe { (*st).owner.tid } != tid {
            unsafe { (*st).owner = sock::current_owner() };
        }
    }
    0
}
