//! `packet_loss`: segments of all sizes lost and recovered while data still flows:
//! congestion or a lossy link, not PMTUD. Judged over a window, so that a pooled
//! connection with an occasional loss over hours is not called lossy.

use agent_common::event::{Retransmit, retransmit_kind};

use super::{
    Confidence, Ctx, Kind, Reported, Verdict,
    evidence::{Evidence, Loss},
};
use crate::engine::timeline::{LossWindow, Timeline};

/// Retransmits (with progress) within the window before the verdict.
pub const MIN_RETRANSMITS: u64 = 3;
pub const HIGH_RETRANSMITS: u64 = 20;
pub const WINDOW_NS: u64 = 60_000_000_000;

/// Counts a retransmission into the socket's loss window (a new window when the
/// current one is over).
pub fn note(t: &mut Timeline, e: &Retransmit, progressed: bool) {
    let ts = e.header.ts_ns;
    let w = &mut t.loss_window;
    if w.retransmits == 0 || ts.saturating_sub(w.start_ns) > WINDOW_NS {
        *w = LossWindow {
            start_ns: ts,
            ..LossWindow::default()
        };
    } else if progressed {
        w.progressed += 1;
    }
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
    if w.progressed < 2 || w.retransmits < MIN_RETRANSMITS || pmtu_involved || stalled {
        return;
    }
    let confidence = if w.retransmits >= HIGH_RETRANSMITS {
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
