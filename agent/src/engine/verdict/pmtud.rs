//! Path MTU discovery: too-big messages and what the socket did with them
//! (`pmtud_ok`, `spoofed_ptb`), the black hole (`pmtud_blackhole`: full-size
//! segments vanish, and either no too-big comes back or it reaches this host and is
//! never applied) and its end (`blackhole_recovered`).
//!
//! A too-big message is judged by the kernel's own reaction, seen at the socket's
//! next retransmission: its MSS or path MTU shrank to fit (applied), or it did not
//! (dropped before TCP: this host's firewall, rp_filter, conntrack), or it did not and
//! the message quoted data the socket never had in flight (forged). A snapshot of the
//! send window alone is no judge: it goes stale as the socket sends on.

use std::net::IpAddr;

use agent_common::event::{IcmpTooBig, Retransmit, retransmit_kind};

use super::{
    Confidence, Ctx, Verdict, base_headers, default_headers,
    evidence::{
        Blackhole, Evidence, FilteredAt, PmtudOk, Recovered, RecoveredBy, SpoofReason, Spoofed,
    },
    ms,
};
use crate::engine::timeline::{Episode, Timeline, TooBigFact, TooBigFate, seq_after};

/// A retransmitted segment at least this big, and the socket's full MSS, counts as
/// "full-size" (a PMTUD black hole only eats packets bigger than the path MTU).
pub const MIN_FULL_SIZE: u32 = 576;
/// Delivered bytes per segment below this fraction of the MSS: only small segments
/// ever got through.
pub const SMALL_DELIVERY_RATIO: f64 = 0.75;

/// A received too-big message quoting a tracked TCP socket: kept as a fact, judged
/// at the socket's next retransmission.
pub fn on_too_big(t: &mut Timeline, e: &IcmpTooBig, router: IpAddr) {
    t.expire_too_big(e.header.ts_ns);
    let acked_already = t.window.is_some_and(|(una, _)| seq_after(una, e.seq));
    t.note_too_big(TooBigFact {
        ts_ns: e.header.ts_ns,
        mtu: e.mtu,
        router,
        seq: e.seq,
        acked_already,
        mss_before: t.last_mss,
        fate: TooBigFate::Pending,
    });
}

/// Whether the socket, as this retransmit shows it, fits the message's MTU.
fn applied(t: &Timeline, f: &TooBigFact, e: &Retransmit) -> bool {
    let fits_mss = f.mtu > base_headers(&t.flow) && e.mss <= f.mtu - base_headers(&t.flow);
    fits_mss || (e.pmtu != 0 && e.pmtu <= f.mtu)
}

/// Judges the too-big messages that came before this retransmit: forged ones are
/// said so, an applied one that shrank the MSS is healthy PMTUD.
pub fn judge_too_big(t: &mut Timeline, c: &Ctx, e: &Retransmit, out: &mut Vec<Verdict>) {
    let ts = e.header.ts_ns;
    t.expire_too_big(ts);
    let write_seq = e.snd_una.wrapping_add(e.snd_queue);
    let mut newly_applied: Option<TooBigFact> = None;
    let mut forged = Vec::new();
    for i in 0..t.too_big.len() {
        let f = &t.too_big[i];
        if f.ts_ns > ts || matches!(f.fate, TooBigFate::Applied | TooBigFate::Forged) {
            continue;
        }
        // Forged: it quoted data already acknowledged, or data never written.
        let fate = if applied(t, f, e) {
            TooBigFate::Applied
        } else if f.acked_already || (e.snd_queue != 0 && seq_after(f.seq, write_seq)) {
            TooBigFate::Forged
        } else {
            TooBigFate::NotApplied
        };
        let f = &mut t.too_big[i];
        f.fate = fate;
        match fate {
            TooBigFate::Applied => newly_applied = Some(f.clone()),
            TooBigFate::Forged => forged.push((
                f.clone(),
                if f.acked_already {
                    SpoofReason::AlreadyAcknowledged {
                        snd_una: t.window.map(|w| w.0).unwrap_or(e.snd_una),
                    }
                } else {
                    SpoofReason::NeverSent { write_seq }
                },
            )),
            _ => {}
        }
    }
    for (f, reason) in forged {
        out.push(Verdict {
            ts_ns: ts,
            sock: c.sock,
            flow: t.flow,
            owner: c.owner,
            confidence: Confidence::High,
            evidence: Evidence::SpoofedPtb(Spoofed {
                reason,
                mtu: f.mtu,
                router: f.router,
                quoted_seq: f.seq,
            }),
            netns: t.netns,
        });
        t.verdicts.push(super::Kind::SpoofedPtb);
    }
    // Healthy PMTUD: the kernel applied a message and the MSS shrank.
    if let Some(f) = newly_applied
        && !t.pmtud_ok_reported
        && e.mss > 0
    {
        let before = f.mss_before.max(t.last_mss);
        if before == 0 || e.mss < before {
            t.pmtud_ok_reported = true;
            let v = c.verdict(
                t,
                ts,
                Confidence::High,
                Evidence::PmtudOk(PmtudOk {
                    mtu: f.mtu,
                    router: f.router,
                    mss_before: (before != 0).then_some(before),
                    mss_after: e.mss,
                    ms_to_adapt: ms(ts.saturating_sub(f.ts_ns)),
                }),
            );
            out.push(v);
        }
    }
}

/// Too-big messages that reached this host and were not applied, if none was.
fn not_applied(t: &Timeline) -> Option<(u32, &TooBigFact)> {
    if t.too_big.iter().any(|f| f.fate == TooBigFate::Applied) {
        return None;
    }
    let mut n = 0;
    let mut last = None;
    for f in t
        .too_big
        .iter()
        .filter(|f| f.fate == TooBigFate::NotApplied)
    {
        n += 1;
        last = Some(f);
    }
    last.map(|f| (n, f))
}

/// The black-hole rule, at an RTO retransmission of a stall (`ep` already counts it):
/// full-size segments retransmitted, nothing small among them, only small segments
/// ever delivered, and no too-big message applied.
pub fn blackhole(t: &mut Timeline, at: super::AtRto, out: &mut Vec<Verdict>) {
    let super::AtRto {
        c,
        e,
        ep,
        established,
    } = at;
    if !(established && ep.rto >= 2 && ep.small == 0 && ep.full_size >= 2 && ep.mss == e.mss) {
        return;
    }
    if !size_bound(ep, e) || recovered_past_a_hole(t, ep) {
        return;
    }
    let applied = t.too_big.iter().any(|f| f.fate == TooBigFate::Applied);
    if applied {
        return;
    }
    // `judge_too_big` ran first: every message before this retransmit is judged.
    let filtered = not_applied(t).map(|(n, f)| (n, f.mtu, f.router));
    // Only the handshake ever delivered: a path that died right then looks the same
    // from here as a black hole, so never more than medium.
    let only_handshake = ep.delivered <= 1;
    let Some(confidence) =
        super::raise_in_episode(t, ep.rto >= 3 && !only_handshake, |x| &mut x.blackhole)
    else {
        return;
    };
    let ts = e.header.ts_ns;
    let packet_size = if e.pmtu != 0 {
        e.pmtu
    } else {
        ep.mss.saturating_add(default_headers(&t.flow))
    };
    let evidence = Evidence::PmtudBlackhole(Blackhole {
        rto_retransmits: ep.rto,
        full_size_retransmits: ep.full_size,
        seg_len: e.seg_len,
        mss: ep.mss,
        packet_size,
        filtered_at: if filtered.is_some() {
            FilteredAt::ThisHost
        } else {
            FilteredAt::Path
        },
        too_big_received: filtered.map(|f| f.0).unwrap_or(0),
        too_big_mtu: filtered.map(|f| f.1),
        too_big_router: filtered.map(|f| f.2),
        bytes_acked: ep.bytes_acked,
        segments_delivered: ep.delivered,
        avg_delivered_segment: Timeline::avg_delivered(ep.bytes_acked, ep.delivered)
            .map(f64::round),
        backoff: e.backoff,
        stuck_ms: ms(ts.saturating_sub(ep.start_ns)),
        snd_queue: e.snd_queue,
    });
    let v = c.verdict(t, ts, confidence, evidence);
    out.push(v);
}

/// Only small segments were ever delivered, and nothing during the stall: the size
/// of the segments is what the path refuses.
pub fn size_bound(ep: &Episode, e: &Retransmit) -> bool {
    // Segments delivered but not cumulatively acknowledged are SACKed data past a
    // hole: the path carries full-size segments, this is loss (random loss made
    // exactly this look like a black hole). So is anything delivered during the
    // stall itself.
    let sacked_past_hole = ep.delivered > 2 && ep.bytes_acked < u64::from(ep.mss);
    let delivered_in_stall = e.delivered != ep.delivered;
    !sacked_past_hole
        && !delivered_in_stall
        && Timeline::avg_delivered(ep.bytes_acked, ep.delivered)
            .is_none_or(|a| a < SMALL_DELIVERY_RATIO * ep.mss as f64)
}

/// A fast retransmit at this MSS (duplicate ACKs or SACKs: segments past a hole
/// arrived) with full segments' worth of data acknowledged: the path carries this
/// size, and the stall is loss. (Random loss made two RTOs in a row of full-size
/// segments look like a black hole: SACKed segments count in `delivered` but not in
/// `bytes_acked`, which drags the average delivered size down.)
fn recovered_past_a_hole(t: &Timeline, ep: &Episode) -> bool {
    ep.bytes_acked >= 2 * u64::from(ep.mss)
        && t.retransmits
            .iter()
            .any(|r| r.kind == retransmit_kind::FAST && u32::from(r.mss) == ep.mss)
}

/// Full-size segments at this MSS were delivered earlier on this socket.
pub fn full_size_delivered(ep: &Episode) -> bool {
    Timeline::avg_delivered(ep.bytes_acked, ep.delivered)
        .is_some_and(|a| a >= SMALL_DELIVERY_RATIO * ep.mss as f64)
}

/// The end of a stall that was a black hole: data flows again.
pub fn recovered(
    t: &mut Timeline,
    c: &Ctx,
    ts_ns: u64,
    ep: &Episode,
    how: RecoveredBy,
    out: &mut Vec<Verdict>,
) {
    if ep.blackhole.is_none() {
        return;
    }
    let mss_after = ep.mss_low.min(t.last_mss);
    let v = c.verdict(
        t,
        ts_ns,
        Confidence::High,
        Evidence::BlackholeRecovered(Recovered {
            stuck_ms: ms(ts_ns.saturating_sub(ep.start_ns)),
            mss_before: ep.mss,
            mss_after,
            rto_retransmits: ep.rto,
            recovered_by: how,
        }),
    );
    out.push(v);
}

/// A too-big message quoting a TCP flow that no socket in the kernel has.
pub fn forged_for_no_socket(c: &Ctx, e: &IcmpTooBig, router: IpAddr) -> Verdict {
    Verdict {
        ts_ns: e.header.ts_ns,
        sock: c.sock,
        flow: e.quoted,
        owner: c.owner,
        confidence: Confidence::High,
        evidence: Evidence::SpoofedPtb(Spoofed {
            reason: SpoofReason::NoSuchSocket,
            mtu: e.mtu,
            router,
            quoted_seq: e.seq,
        }),
        netns: e.netns,
    }
}
