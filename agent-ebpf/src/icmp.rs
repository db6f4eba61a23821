//! ICMP "fragmentation needed" (IPv4 type 3 code 4) and ICMPv6 "packet too big"
//! (type 2): received ones, found in the receive path (there is no tracepoint for
//! them), and locally generated ones (`icmp:icmp_send`, on hosts that route).
//!
//! `net:netif_receive_skb` fires for every received packet in every namespace, so
//! the program leaves as early as it can: first on the ethertype, then on the IP
//! protocol, before touching anything else.

use agent_common::{
    event::{AF_INET, AF_INET6, IPPROTO_TCP, IcmpTooBig, icmp_source},
    loss::slot,
};
use aya_ebpf::{
    EbpfContext as _,
    helpers::{bpf_ktime_get_ns, bpf_probe_read_kernel},
    macros::{btf_tracepoint, raw_tracepoint, tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext, TracePointContext},
};

use crate::{
    emit::{Ctx, emit},
    maps::{count_lost, net_budget},
    read::{self, Fail},
};

const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86dd;
const IPPROTO_ICMP: u8 = 1;
const IPPROTO_ICMPV6: u8 = 58;
const ICMP_DEST_UNREACH: u8 = 3;
const ICMP_FRAG_NEEDED: u8 = 4;
const ICMPV6_PKT_TOOBIG: u8 = 2;

/// Emits a too-big record within the bound on network-sourced records (see
/// `maps::net_budget`); over it, counts it. The closure must be `#[inline(always)]`.
#[inline(always)]
fn emit_bounded(ctx: Ctx, fill: impl FnOnce(&mut IcmpTooBig) -> Result<(), Fail>) {
    let now = unsafe { bpf_ktime_get_ns() };
    if net_budget(now) {
        emit::<IcmpTooBig>(ctx, 0, now, fill);
    } else {
        count_lost(slot::ICMP_BOUNDED);
    }
}

#[inline(always)]
fn bytes<const N: usize>(addr: u64) -> Result<[u8; N], Fail> {
    unsafe { bpf_probe_read_kernel(addr as *const [u8; N]) }.map_err(|_| 1)
}

#[tracepoint(category = "net", name = "netif_receive_skb")]
pub fn netif_receive_skb(ctx: TracePointContext) -> u32 {
    match try_receive(&ctx) {
        Ok(r) | Err(r) => r,
    }
}

fn try_receive(ctx: &TracePointContext) -> Result<u32, Fail> {
    on_receive(
        ctx.as_ptr(),
        read::tp::<u64>(ctx, lay!(skb_tp.netif_skbaddr))?,
    )
}

/// Raw-tracepoint variant, `TP_PROTO(struct sk_buff *skb)`: no trace record, no
/// helper to read the argument. Preferred wherever it attaches.
#[raw_tracepoint(tracepoint = "netif_receive_skb")]
pub fn netif_rx_raw(ctx: RawTracePointContext) -> i32 {
    match on_receive(ctx.as_ptr(), ctx.arg(0)) {
        Ok(r) | Err(r) => r as i32,
    }
}

/// The BTF-typed variant, preferred where the kernel allows it: the skb's fields are
/// direct loads (the verifier checks each offset against BTF; they are constants to
/// it, from the frozen LAYOUT), so a packet that is not a candidate costs no helper
/// call at all, and a small IP packet one (its protocol byte).
#[btf_tracepoint(function = "netif_receive_skb")]
pub fn netif_rx_btf(ctx: BtfTracePointContext) -> i32 {
    let skb: u64 = ctx.arg(0);
    // One field of LAYOUT at a time: `lay!` loads are volatile, a whole struct
    // would be read field by field.
    let off = lay!(kernel.skb_len);
    let len: u32 = unsafe { btf_field(skb, off) };
    if !(56..=1280).contains(&len) {
        return 0;
    }
    let off = lay!(kernel.skb_protocol);
    let proto = u16::from_be(unsafe { btf_field(skb, off) });
    if proto != ETH_P_IP && proto != ETH_P_IPV6 {
        return 0;
    }
    let off = lay!(kernel.skb_data);
    let ip: u64 = unsafe { btf_field(skb, off) };
    match on_candidate(ctx.as_ptr(), skb, len, proto, ip) {
        Ok(r) | Err(r) => r as i32,
    }
}

/// A field of a BTF-typed kernel pointer: a direct load.
#[inline(always)]
unsafe fn btf_field<T: Copy>(base: u64, offset: u16) -> T {
    unsafe { *((base + offset as u64) as *const T) }
}

/// A too-big message is IP + ICMP header + the quoted IP header and 8 bytes, and at
/// most 576 (IPv4) / 1280 (IPv6) bytes long; bulk data is longer, IPv4 ACKs are
/// shorter: the length dismisses most packets first.
#[inline(always)]
fn on_receive(ctx: Ctx, skb: u64) -> Result<u32, Fail> {
    let len = read::kernel::<u32>(skb, lay!(kernel.skb_len))?;
    if !(56..=1280).contains(&len) {
        return Ok(0);
    }
    // Then the ethertype and the data pointer, in one read when they sit within 32
    // bytes of each other (6.18), else two (6.1: 180 and 208).
    let base = lay!(kernel.skb_protocol);
    let blk = bytes::<32>(skb + base as u64)?;
    let proto = u16::from_be_bytes([blk[0], blk[1]]);
    if proto != ETH_P_IP && proto != ETH_P_IPV6 {
        return Ok(0);
    }
    let rel = lay!(kernel.skb_data).wrapping_sub(base) as usize;
    // At netif_receive_skb, data points at the network header.
    let ip = if rel <= 24 {
        let mut d = [0u8; 8];
        d.copy_from_slice(&blk[rel..rel + 8]);
        u64::from_le_bytes(d)
    } else {
        read::kernel::<u64>(skb, lay!(kernel.skb_data))?
    };
    on_candidate(ctx, skb, len, proto, ip)
}

/// An IP packet of a too-big message's length; `ip` is its network header.
#[inline(always)]
fn on_candidate(ctx: Ctx, skb: u64, len: u32, proto: u16, ip: u64) -> Result<u32, Fail> {
    // The exact bounds per family (IPv6 ACKs, 72 bytes, get here).
    let fits = match proto {
        ETH_P_IP => (56..=576).contains(&len),
        ETH_P_IPV6 => (96..=1280).contains(&len),
        _ => false,
    };
    if !fits {
        return Ok(0);
    }
    // Decide with a few small reads whether this is a too-big message at all; only
    // then reserve ring space and fill the record in place (the stack is 512 bytes).
    let (icmp, h) = if proto == ETH_P_IP {
        let vi = bytes::<10>(ip)?;
        if vi[9] != IPPROTO_ICMP {
            return Ok(0);
        }
        let icmp = ip + ((vi[0] & 0x0f) as u64) * 4;
        let h = bytes::<8>(icmp)?;
        if h[0] != ICMP_DEST_UNREACH || h[1] != ICMP_FRAG_NEEDED {
            return Ok(0);
        }
        (icmp, h)
    } else {
        let nh = bytes::<10>(ip)?;
        if nh[6] != IPPROTO_ICMPV6 {
            return Ok(0);
        }
        let icmp = ip + 40;
        let h = bytes::<8>(icmp)?;
        if h[0] != ICMPV6_PKT_TOOBIG {
            return Ok(0);
        }
        (icmp, h)
    };
    emit_bounded(
        ctx,
        #[inline(always)]
        |ev| {
            ev.icmp_type = h[0];
            ev.icmp_code = h[1];
            ev.source = icmp_source::RECEIVED;
            let quoted = icmp + 8;
            if proto == ETH_P_IP {
                ev.mtu = u16::from_be_bytes([h[6], h[7]]) as u32;
                fill_v4(ev, ip, quoted)?;
            } else {
                ev.mtu = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
                fill_v6(ev, ip, quoted)?;
            }
            device_facts(ev, skb);
            Ok(())
        },
    );
    Ok(0)
}

#[inline(always)]
fn fill_v4(ev: &mut IcmpTooBig, ip: u64, quoted: u64) -> Result<(), Fail> {
    ev.router[..4].copy_from_slice(&bytes::<4>(ip + 12)?);
    let q = bytes::<20>(quoted)?;
    ev.quoted.family = AF_INET;
    ev.quoted.protocol = q[9];
    ev.quoted.saddr[..4].copy_from_slice(&q[12..16]);
    ev.quoted.daddr[..4].copy_from_slice(&q[16..20]);
    quoted_l4(ev, quoted + ((q[0] & 0x0f) as u64) * 4);
    Ok(())
}

#[inline(always)]
fn fill_v6(ev: &mut IcmpTooBig, ip: u64, quoted: u64) -> Result<(), Fail> {
    ev.router = bytes::<16>(ip + 8)?;
    ev.quoted.family = AF_INET6;
    ev.quoted.protocol = bytes::<8>(quoted)?[6];
    ev.quoted.saddr = bytes::<16>(quoted + 8)?;
    ev.quoted.daddr = bytes::<16>(quoted + 24)?;
    quoted_l4(ev, quoted + 40);
    Ok(())
}

/// Ports (and the TCP sequence number) of the quoted packet: the first 8 bytes of
/// its transport header, which ICMP guarantees to carry.
#[inline(always)]
fn quoted_l4(ev: &mut IcmpTooBig, l4: u64) {
    if let Ok(h) = bytes::<8>(l4) {
        ev.quoted.sport = u16::from_be_bytes([h[0], h[1]]);
        ev.quoted.dport = u16::from_be_bytes([h[2], h[3]]);
        if ev.quoted.protocol == IPPROTO_TCP {
            ev.seq = u32::from_be_bytes([h[4], h[5], h[6], h[7]]);
        }
    }
}

#[inline(always)]
fn device_facts(ev: &mut IcmpTooBig, skb: u64) {
    let dev = read::kernel_or::<u64>(skb, lay!(kernel.skb_dev), 0);
    ev.ifindex = read::kernel_or::<u32>(dev, lay!(kernel.dev_ifindex), 0);
    let net = read::kernel_or::<u64>(dev, lay!(kernel.dev_net), 0);
    ev.netns = read::kernel_or::<u32>(net, lay!(kernel.net_inum), 0);
}

#[tracepoint(category = "icmp", name = "icmp_send")]
pub fn icmp_send(ctx: TracePointContext) -> u32 {
    match try_icmp_send(&ctx) {
        Ok(r) | Err(r) => r,
    }
}

fn try_icmp_send(ctx: &TracePointContext) -> Result<u32, Fail> {
    let ty = read::tp::<i32>(ctx, lay!(skb_tp.icmp_send_type))?;
    let code = read::tp::<i32>(ctx, lay!(skb_tp.icmp_send_code))?;
    if ty != ICMP_DEST_UNREACH as i32 || code != ICMP_FRAG_NEEDED as i32 {
        return Ok(0);
    }
    let skb = read::tp::<u64>(ctx, lay!(skb_tp.icmp_send_skbaddr))?;
    // The packet that did not fit: its header is the flow the ICMP will quote.
    let head = read::kernel::<u64>(skb, lay!(kernel.skb_head))?;
    let ip = head + read::kernel::<u16>(skb, lay!(kernel.skb_network_header))? as u64;
    emit_bounded(
        ctx.as_ptr(),
        #[inline(always)]
        |ev| {
            ev.icmp_type = ty as u8;
            ev.icmp_code = code as u8;
            ev.source = icmp_source::SENT;
            // The quoted header is the packet's own header; the "router" is this host,
            // which the agent fills in from the device (mtu unknown: icmp_send's info
            // argument is not in the record).
            fill_v4(ev, ip, ip)?;
            ev.router = [0; 16];
            device_facts(ev, skb);
            Ok(())
        },
    );
    Ok(0)
}
