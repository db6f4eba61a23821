//! Stalls: runs of RTO retransmissions without progress. The episode is opened and
//! fed here; from it, `stall` (clogged: the application keeps queueing) and the live
//! `path_down` (nothing gets through, and it is not the packet size).

use agent_common::event::Retransmit;

use super::{
    Confidence, Ctx, Verdict,
    evidence::{Evidence, PathDown, Stall},
    ms, pmtud,
};
use crate::engine::timeline::{Episode, Timeline};

/// The kernel's tcp_retries1 (default 3): after this many RTOs it starts doubting
/// the route. The live path-down verdict comes no later.
pub const PATH_DOWN_MEDIUM_AT: u32 = 3;
/// Twice the RTOs (with backoff, ~12 s at the minimum RTO): sure by now.
pub const PATH_DOWN_HIGH_AT: u32 = 6;

/// The kernel's TCP_RTO_MIN: no retransmission timer fires sooner after another
/// (routes and sysctls may lower it; a new timeout also shows as a higher backoff).
const RTO_MIN_NS: u64 = 200_000_000;

/// Counts a retransmission in loss state into the socket's episode (opening it);
/// returns a copy of the episode as it now stands. Only a new timeout counts (the
/// first, a higher backoff, or the minimum RTO later): after a path MTU reduction
/// the kernel also enters loss state and resends everything in flight at once
/// (`tcp_simple_retransmit`), which is one recovery, not several timeouts (seen on
/// 6.1 as a false `path_down` for a healthy path).
pub fn note_rto(t: &mut Timeline, e: &Retransmit) -> Episode {
    let ts = e.header.ts_ns;
    let fresh = t.episode.is_none();
    let ep = t.episode.get_or_insert_with(|| {
        Box::new(Episode {
            start_ns: e.header.ts_ns,
            snd_una: e.snd_una,
            mss: e.mss,
            rto: 0,
            full_size: 0,
            small: 0,
            bytes_acked: e.bytes_acked,
            delivered: e.delivered,
            snd_queue_start: e.snd_queue,
            snd_queue_last: e.snd_queue,
            backoff: e.backoff,
            mss_low: e.mss,
            blackhole: None,
            path_down: None,
            stall_reported: false,
            first_seg_len: e.seg_len,
            last_timeout_ns: ts,
        })
    });
    ep.snd_queue_last = e.snd_queue;
    ep.mss_low = ep.mss_low.min(e.mss);
    let timeout =
        fresh || e.backoff > ep.backoff || ts.saturating_sub(ep.last_timeout_ns) >= RTO_MIN_NS;
    if !timeout {
        return (**ep).clone();
    }
    ep.rto += 1;
    ep.backoff = e.backoff;
    ep.last_timeout_ns = ts;
    if e.mss == ep.mss {
        if e.seg_len >= ep.mss && e.seg_len >= pmtud::MIN_FULL_SIZE {
            ep.full_size += 1;
        } else {
            ep.small += 1;
        }
    }
    (**ep).clone()
}

/// Clogged: RTOs while the application keeps queueing.
pub fn clogged(t: &mut Timeline, c: &Ctx, e: &Retransmit, ep: &Episode, out: &mut Vec<Verdict>) {
    if ep.rto < 2
        || ep.stall_reported
        || ep.snd_queue_last <= ep.snd_queue_start.saturating_add(ep.mss.max(1))
    {
        return;
    }
    if let Some(x) = t.episode.as_mut() {
        x.stall_reported = true;
    }
    let ts = e.header.ts_ns;
    let v = c.verdict(
        t,
        ts,
        Confidence::Medium,
        Evidence::Stall(Stall {
            rto_retransmits: ep.rto,
            backoff: e.backoff,
            snd_queue_start: ep.snd_queue_start,
            snd_queue_now: ep.snd_queue_last,
            stuck_ms: ms(ts.saturating_sub(ep.start_ns)),
        }),
    );
    out.push(v);
}

/// The path is down, said while the stall goes on (default kernel timeouts take ~15
/// minutes to give up): nothing acknowledged through `PATH_DOWN_MEDIUM_AT` RTOs, and
/// the size is not the cause (full-size segments got through earlier, or small ones
/// are lost too).
pub fn path_down_live(t: &mut Timeline, at: super::AtRto, out: &mut Vec<Verdict>) {
    let super::AtRto {
        c,
        e,
        ep,
        established,
    } = at;
    let full_size_delivered = pmtud::full_size_delivered(ep);
    // A socket that has been losing and recovering segments gets more patience: on
    // a lossy path (10% loss) three timeouts in a row happen now and then, six do not.
    let lossy = t.loss_reported.is_some() || t.loss_window.progressed >= 2;
    let first_at = if lossy {
        PATH_DOWN_HIGH_AT
    } else {
        PATH_DOWN_MEDIUM_AT
    };
    if !established
        || ep.rto < first_at
        || ep.blackhole.is_some()
        || !(full_size_delivered || ep.small > 0)
        || e.delivered != ep.delivered
    {
        return;
    }
    let Some(confidence) =
        super::raise_in_episode(t, ep.rto >= PATH_DOWN_HIGH_AT, |x| &mut x.path_down)
    else {
        return;
    };
    let ts = e.header.ts_ns;
    let v = c.verdict(
        t,
        ts,
        confidence,
        Evidence::PathDown(PathDown {
            rto_retransmits: ep.rto,
            backoff: e.backoff,
            stuck_ms: ms(ts.saturating_sub(ep.start_ns)),
            acknowledged_during_stall: 0,
            ended_with: None,
            full_size_delivered,
            small_lost: ep.small,
        }),
    );
    out.push(v);
}
