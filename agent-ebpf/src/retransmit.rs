//! `tcp:tcp_retransmit_skb`: one record per retransmitted skb.

use agent_common::{
    event::{AF_INET6, Flow, Header, IPPROTO_TCP, Retransmit, kind, retransmit_flags},
    layout::ABSENT,
    loss::slot,
};
use aya_ebpf::{
    helpers::{bpf_get_smp_processor_id, bpf_ktime_get_ns},
    macros::tracepoint,
    programs::TracePointContext,
};

use crate::{
    maps::{EVENTS, LAYOUT, count_lost},
    read::{self, Fail},
};

#[tracepoint(category = "tcp", name = "tcp_retransmit_skb")]
pub fn tcp_retransmit_skb(ctx: TracePointContext) -> u32 {
    match try_retransmit(&ctx) {
        Ok(r) | Err(r) => r,
    }
}

fn try_retransmit(ctx: &TracePointContext) -> Result<u32, Fail> {
    let layout = LAYOUT.load();
    let tp = layout.retransmit_tp;

    let Some(mut entry) = EVENTS.reserve::<Retransmit>(0) else {
        count_lost(slot::RETRANSMIT);
        return Ok(0);
    };
    // Build in place in the reservation: no stack copy of the record.
    let ev = entry.write(Retransmit::default());

    let filled = (|| -> Result<(), Fail> {
        ev.header = Header {
            kind: kind::RETRANSMIT,
            len: core::mem::size_of::<Retransmit>() as u16,
            cpu: unsafe { bpf_get_smp_processor_id() },
            ts_ns: unsafe { bpf_ktime_get_ns() },
            sk: read::tp::<u64>(ctx, tp.skaddr)?,
        };
        let family = read::tp::<u16>(ctx, tp.family)?;
        let mut flow = Flow {
            sport: read::tp::<u16>(ctx, tp.sport)?,
            dport: read::tp::<u16>(ctx, tp.dport)?,
            family,
            protocol: IPPROTO_TCP,
            state: read::tp::<i32>(ctx, tp.state)? as u8,
            ..Flow::default()
        };
        if family == AF_INET6 {
            flow.saddr = read::tp::<[u8; 16]>(ctx, tp.saddr_v6)?;
            flow.daddr = read::tp::<[u8; 16]>(ctx, tp.daddr_v6)?;
        } else {
            let s = read::tp::<[u8; 4]>(ctx, tp.saddr)?;
            let d = read::tp::<[u8; 4]>(ctx, tp.daddr)?;
            flow.saddr[..4].copy_from_slice(&s);
            flow.daddr[..4].copy_from_slice(&d);
        }
        ev.flow = flow;

        if tp.err != ABSENT {
            ev.err = read::tp::<i32>(ctx, tp.err)?;
            ev.flags |= retransmit_flags::HAS_ERR;
        }

        let k = layout.kernel;
        let skb = read::tp::<u64>(ctx, tp.skbaddr)?;
        let skb_facts = (|| -> Result<(u32, u32, u32), Fail> {
            let len = read::kernel::<u32>(skb, k.skb_len)?;
            let cb = k.skb_cb;
            if cb == ABSENT {
                return Err(1);
            }
            let segs = read::kernel::<u16>(skb, cb.wrapping_add(k.tcb_gso_segs))? as u32;
            let gso_size = read::kernel::<u16>(skb, cb.wrapping_add(k.tcb_gso_size))? as u32;
            // A non-GSO skb can carry pcount 0 before tcp_set_skb_tso_segs ran; it is
            // still one segment on the wire.
            let segs = if segs == 0 { 1 } else { segs };
            let seg_len = if segs > 1 && gso_size > 0 {
                gso_size
            } else {
                len
            };
            Ok((segs, len, seg_len))
        })();
        match skb_facts {
            Ok((segs, len, seg_len)) => {
                ev.segs = segs;
                ev.len = len;
                ev.seg_len = seg_len;
            }
            Err(_) => {
                ev.segs = 1;
                ev.flags |= retransmit_flags::NO_SKB;
            }
        }
        Ok(())
    })();

    match filled {
        Ok(()) => entry.submit(0),
        Err(_) => entry.discard(0),
    }
    Ok(0)
}
