//! `tcp_retransmit_skb`: one record per retransmitted skb, with the socket's
//! congestion and timer state at that moment. The raw tracepoint is preferred: it
//! does not hold the per-CPU `bpf_prog_active` under which classic programs skip
//! each other (a retransmit in a softirq interrupting another classic program was
//! lost); the classic record is the fallback.
//!
//! Not fexit on `__tcp_retransmit_skb` (which would give the return code on kernels
//! whose tracepoint has no `err`): its callers in the same file may inline it, and a
//! trampoline sees only the out-of-line calls. Debian's 6.1 guest showed 1 record for
//! 490 retransmitted segments.

use agent_common::{
    event::{AF_INET6, Flow, IPPROTO_TCP, Retransmit, retransmit_flags, retransmit_kind},
    kernel::ca_state::{TCP_CA_LOSS, TCP_CA_RECOVERY},
    layout::ABSENT,
};
use aya_ebpf::{
    EbpfContext as _,
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};

use crate::{
    emit::emit,
    read::{self, Fail},
    sock,
};

#[tracepoint(category = "tcp", name = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb(ctx: TracePointContext) -> u32 {
    match try_retransmit(&ctx) {
        Ok(r) | Err(r) => r,
    }
}

fn try_retransmit(ctx: &TracePointContext) -> Result<u32, Fail> {
    emit::<Retransmit>(
        ctx.as_ptr(),
        0,
        0,
        #[inline(always)]
        |ev| {
            let sk = read::tp::<u64>(ctx, lay!(retransmit_tp.skaddr))?;
            ev.header.sk = sk;
            let family = if lay!(retransmit_tp.family) != ABSENT {
                read::tp::<u16>(ctx, lay!(retransmit_tp.family))?
            } else {
                read::kernel::<u16>(sk, lay!(kernel.sk_family))?
            };
            let mut flow = Flow {
                sport: read::tp::<u16>(ctx, lay!(retransmit_tp.sport))?,
                dport: read::tp::<u16>(ctx, lay!(retransmit_tp.dport))?,
                family,
                protocol: IPPROTO_TCP,
                state: read::tp::<i32>(ctx, lay!(retransmit_tp.state))? as u8,
                ..Flow::default()
            };
            if family == AF_INET6 {
                flow.saddr = read::tp::<[u8; 16]>(ctx, lay!(retransmit_tp.saddr_v6))?;
                flow.daddr = read::tp::<[u8; 16]>(ctx, lay!(retransmit_tp.daddr_v6))?;
            } else {
                let s = read::tp::<[u8; 4]>(ctx, lay!(retransmit_tp.saddr))?;
                let d = read::tp::<[u8; 4]>(ctx, lay!(retransmit_tp.daddr))?;
                flow.saddr[..4].copy_from_slice(&s);
                flow.daddr[..4].copy_from_slice(&d);
            }
            ev.flow = flow;

            if lay!(retransmit_tp.err) != ABSENT {
                ev.err = read::tp::<i32>(ctx, lay!(retransmit_tp.err))?;
                ev.flags |= retransmit_flags::HAS_ERR;
            }
            let skb = read::tp::<u64>(ctx, lay!(retransmit_tp.skbaddr))?;
            fill_facts(ev, sk, skb);
            Ok(())
        },
    );
    Ok(0)
}

/// `TP_PROTO(const struct sock *sk, const struct sk_buff *skb[, int err])` by
/// position (checked against BTF by the loader; `err` where the classic record has
/// it, the same kernel's tracepoint).
#[raw_tracepoint(tracepoint = "tcp_retransmit_skb")]
pub fn retransmit_raw(ctx: RawTracePointContext) -> i32 {
    let sk: u64 = ctx.arg(0);
    let skb: u64 = ctx.arg(1);
    emit::<Retransmit>(
        ctx.as_ptr(),
        sk,
        0,
        #[inline(always)]
        |ev| {
            ev.flow = sock::flow_of(sk)?;
            ev.flow.protocol = IPPROTO_TCP;
            if lay!(retransmit_tp.err) != ABSENT {
                let err: i64 = ctx.arg(2);
                ev.err = err as i32;
                ev.flags |= retransmit_flags::HAS_ERR;
            }
            fill_facts(ev, sk, skb);
            Ok(())
        },
    );
    0
}

/// What both hooks read from the skb and the socket.
#[inline(always)]
fn fill_facts(ev: &mut Retransmit, sk: u64, skb: u64) {
    match skb_facts(skb) {
        Ok((segs, len, seg_len, seq)) => {
            ev.segs = segs;
            ev.len = len;
            ev.seg_len = seg_len;
            ev.seq = seq;
        }
        Err(_) => {
            ev.segs = 1;
            ev.flags |= retransmit_flags::NO_SKB;
        }
    }
    if sock_facts(ev, sk).is_err() {
        ev.flags |= retransmit_flags::NO_SOCK;
    }
    // Softirq: the current task is whoever was interrupted; the owner is what
    // the send path recorded.
    ev.owner = sock::owner_of(sk);
    ev.netns = sock::netns_of(sk);
}

#[inline(always)]
fn skb_facts(skb: u64) -> Result<(u32, u32, u32, u32), Fail> {
    let len = read::kernel::<u32>(skb, lay!(kernel.skb_len))?;
    let cb = lay!(kernel.skb_cb);
    if cb == ABSENT {
        return Err(1);
    }
    let segs = read::kernel::<u16>(skb, cb.wrapping_add(lay!(kernel.tcb_gso_segs)))? as u32;
    let gso_size = read::kernel::<u16>(skb, cb.wrapping_add(lay!(kernel.tcb_gso_size)))? as u32;
    let seq = read::kernel::<u32>(skb, cb.wrapping_add(lay!(kernel.tcb_seq)))?;
    // A non-GSO skb can carry pcount 0 before tcp_set_skb_tso_segs ran; it is
    // still one segment on the wire.
    let segs = if segs == 0 { 1 } else { segs };
    let seg_len = if segs > 1 && gso_size > 0 {
        gso_size
    } else {
        len
    };
    Ok((segs, len, seg_len, seq))
}

#[inline(always)]
fn sock_facts(ev: &mut Retransmit, sk: u64) -> Result<(), Fail> {
    ev.mss = read::kernel::<u32>(sk, lay!(kernel.tp_mss_cache))?;
    ev.pmtu = read::kernel_or::<u32>(sk, lay!(kernel.icsk_pmtu_cookie), 0);
    ev.rto_jiffies = read::kernel_or::<u32>(sk, lay!(kernel.icsk_rto), 0);
    let write_seq = read::kernel::<u32>(sk, lay!(kernel.tp_write_seq))?;
    let snd_una = read::kernel::<u32>(sk, lay!(kernel.tp_snd_una))?;
    ev.snd_queue = write_seq.wrapping_sub(snd_una);
    ev.snd_una = snd_una;
    ev.delivered = read::kernel_or::<u32>(sk, lay!(kernel.tp_delivered), 0);
    ev.bytes_acked = read::kernel_or::<u64>(sk, lay!(kernel.tp_bytes_acked), 0);
    ev.srtt_us = read::kernel_or::<u32>(sk, lay!(kernel.tp_srtt_us), 0) >> 3;
    ev.cwnd = read::kernel_or::<u32>(sk, lay!(kernel.tp_snd_cwnd), 0);
    ev.dsacks = read::kernel_or::<u32>(sk, lay!(kernel.tp_dsack_dups), 0) as u8;
    ev.backoff = read::kernel_or::<u8>(sk, lay!(kernel.icsk_backoff), 0);
    ev.ca_state = read::kernel_or::<u8>(sk, lay!(kernel.icsk_ca_state), 0) & 0x1f;
    let pending = read::kernel_or::<u8>(sk, lay!(kernel.icsk_pending), 0);
    // Recovery before the probe timer: the kernel retransmits the first lost segment
    // of a recovery while the loss-probe timer is still the pending one (it re-arms
    // after), and it schedules probes only in Open or CWR.
    ev.kind = if ev.ca_state == TCP_CA_LOSS {
        retransmit_kind::RTO
    } else if ev.ca_state == TCP_CA_RECOVERY {
        retransmit_kind::FAST
    } else if pending as u32 == cfg!(icsk_time_loss_probe) && lay!(kernel.icsk_pending) != ABSENT {
        retransmit_kind::TLP
    } else {
        retransmit_kind::OTHER
    };
    Ok(())
}
