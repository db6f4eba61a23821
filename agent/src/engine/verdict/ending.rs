//! How a connection ended: `path_down` (a stall that never moved, ending in a
//! timeout or a close) and `disconnect` (a reset, or a timeout while idle).

use agent_common::kernel::errno::{ECONNRESET, EPIPE, ETIMEDOUT};

use super::{
    Confidence, Ctx, Reported, Verdict,
    evidence::{Disconnect, DisconnectCause, ErrnoName, Evidence, PathDown},
    ms, pmtud,
};
use crate::engine::timeline::Timeline;

/// The socket gave up (ETIMEDOUT) or was reset (ECONNRESET, EPIPE).
pub fn ended(t: &mut Timeline, c: &Ctx, ts: u64, err: i32, out: &mut Vec<Verdict>) {
    if t.ended_reported {
        return;
    }
    match (err, t.episode.clone()) {
        (ETIMEDOUT, Some(ep)) if ep.blackhole.is_none() => {
            t.ended_reported = true;
            let Some(x) = t.episode.as_mut() else { return };
            if !x.path_down.raise(Confidence::High) {
                return;
            }
            let v = c.verdict(
                t,
                ts,
                Confidence::High,
                Evidence::PathDown(PathDown {
                    rto_retransmits: ep.rto,
                    backoff: ep.backoff,
                    stuck_ms: ms(ts.saturating_sub(ep.start_ns)),
                    acknowledged_during_stall: 0,
                    ended_with: Some(ErrnoName(err)),
                    full_size_delivered: pmtud::full_size_delivered(&ep),
                    small_lost: ep.small,
                }),
            );
            out.push(v);
        }
        (ETIMEDOUT | ECONNRESET | EPIPE, None) => {
            t.ended_reported = true;
            let idle = ts.saturating_sub(t.last_ns);
            let v = c.verdict(
                t,
                ts,
                Confidence::Medium,
                Evidence::Disconnect(Disconnect {
                    cause: if err == ETIMEDOUT {
                        DisconnectCause::Timeout
                    } else {
                        DisconnectCause::Reset
                    },
                    errno_name: ErrnoName(err),
                    idle_ms: ms(idle),
                    retransmits_before: t.total_retransmits,
                }),
            );
            out.push(v);
        }
        _ => {}
    }
}

/// The socket closed: a stall still open at close is a dead path.
pub fn on_close(t: &mut Timeline, c: &Ctx, ts: u64, out: &mut Vec<Verdict>) {
    if t.episode.as_ref().is_some_and(|ep| ep.rto >= 2) {
        ended(t, c, ts, ETIMEDOUT, out);
    }
}
