//! `packet_loss`: segments of all sizes lost and recovered while data still flows:
//! congestion or a lossy link, not PMTUD. Judged over a window, so that a pooled
//! connection with an occasional loss over hours is not called lossy.
//!
//! Retransmissions the peer reports as duplicates (DSACK) are not losses: packets
//! reordered past the kernel's tolerance, or a tail-loss probe of data that had
//! arrived. The thresholds count the others.

use agent_common::event::{Retransmit, retransmit_flags, retransmit_kind};

use super::{
    Confidence, Ctx, Kind, Reported, Verdict,
    evidence::{Evidence, Loss},
};
use crate::engine::timeline::{LossWindow, Timeline};

/// Retransmits (with progress) within the window before the verdict, not counting
/// those reported as duplicates or too recent to tell (see `LossWindow::needed`).
pub const MIN_RETRANSMITS: u64 = 3;
pub const HIGH_RETRANSMITS: u64 = 20;
pub const WINDOW_NS: u64 = 60_000_000_000;
/// How long the peer gets to report a retransmission as a duplicate: two smoothed
/// round trips (the late original may come last) plus the kernel's minimum
/// retransmission timeout (TCP_RTO_MIN). A copy held up longer than that would have
/// made the kernel's own timer fire; reordering is shorter. A shorter wait (2 ms)
/// held on this host, but not under emulation, where a reordered packet's report
/// came after 11 more retransmissions.
pub const ANSWER_WAIT_NS: u64 = 200_000_000;

/// Counts a retransmission into the socket's loss window (a new window when the
/// current one is over).
pub fn note(t: &mut Timeline, e: &Retransmit, progressed: bool) {
    let ts = e.header.ts_ns;
    // DSACKs since the previous record answer that retransmission and those before
    // it. Only a newer record counts: records can arrive out of order (the perf
    // transport drains CPU by CPU); one whose socket was unreadable carries none.
    let mut dsacked = 0;
    let readable = e.flags & retransmit_flags::NO_SOCK == 0;
    if readable {
        match t.last_dsacks {
            Some((_, last_ts)) if ts < last_ts => {}
            Some((prev, _)) => {
                dsacked = u64::from(e.dsacks.wrapping_sub(prev));
                t.last_dsacks = Some((e.dsacks, ts));
            }
            None => t.last_dsacks = Some((e.dsacks, ts)),
        }
    }
    let srtt_us = if readable {
        e.srtt_us
    } else {
        t.loss_window.srtt_us
    };
    let wait = 2 * u64::from(srtt_us) * 1000 + ANSWER_WAIT_NS;
    let w = &mut t.loss_window;
    if w.retransmits == 0 || ts.saturating_sub(w.start_ns) > WINDOW_NS {
        *w = LossWindow {
            start_ns: ts,
            ..LossWindow::default()
        };
    } else {
        if progressed {
            w.progressed += 1;
        }
        w.spurious_segs = (w.spurious_segs + dsacked).min(w.segs);
    }
    w.note_recent(ts, wait);
    w.srtt_us = srtt_us;
    w.retransmits += 1;
    w.segs += u64::from(e.segs);
    match e.kind {
        retransmit_kind::RTO => w.rto += 1,
        retransmit_kind::FAST => w.fast += 1,
        retransmit_kind::TLP => w.tlp += 1,
        _ => {}
    }
    if w.min_seg == 0 || e.seg_len < w.min_seg {
        w.min_seg = e.seg_len;
    }
    w.max_seg = w.max_seg.max(e.seg_len);
}

pub fn judge(t: &mut Timeline, c: &Ctx, e: &Retransmit, out: &mut Vec<Verdict>) {
    let pmtu_involved = t.pmtud_ok_reported
        || !t.too_big.is_empty()
        || t.verdicts.has(Kind::PmtudBlackhole)
        || t.verdicts.has(Kind::PmtudOk)
        || t.verdicts.has(Kind::BlackholeRecovered)
        || t.episode.as_ref().is_some_and(|ep| ep.blackhole.is_some());
    // Loss means recovering: acknowledgements moved on between retransmits more
    // than once (a single tail-loss probe answered before the peer died is not a
    // lossy path), and never judged from inside a stall that has not moved.
    let stalled = t.episode.as_ref().is_some_and(|ep| ep.rto >= 2);
    let w = t.loss_window;
    let needed = w.needed();
    if w.progressed < 2 || needed < MIN_RETRANSMITS || pmtu_involved || stalled {
        return;
    }
    let confidence = if needed >= HIGH_RETRANSMITS {
        Confidence::High
    } else {
        Confidence::Medium
    };
    if !t.loss_reported.raise(confidence) {
        return;
    }
    let v = c.verdict(
        t,
        e.header.ts_ns,
        confidence,
        Evidence::PacketLoss(Loss {
            retransmits: w.retransmits,
            retransmitted_segments: w.segs,
            reported_duplicate_segments: w.spurious_segs,
            awaiting_report: w.recent + w.recent_before,
            rto: w.rto,
            fast: w.fast,
            tlp: w.tlp,
            seg_len_min: w.min_seg,
            seg_len_max: w.max_seg,
            progress_between_retransmits: w.progressed,
            window_s: WINDOW_NS / 1_000_000_000,
        }),
    );
    out.push(v);
}
