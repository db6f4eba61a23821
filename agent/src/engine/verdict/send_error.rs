//! `send_error`: every failed send, explained with the socket's recent history. At
//! most one verdict per socket and errno per second (the events are all printed).

use agent_common::{
    event::SendError,
    kernel::errno::{ECONNRESET, EMSGSIZE, EPIPE, ETIMEDOUT},
};

use super::{
    Confidence, Ctx, Kind, Verdict, ending,
    evidence::{ErrnoName, Evidence, LikelyCause, MessageTooBig, RecentRetransmit, SendErrorFacts},
    ms,
};
use crate::{engine::timeline::Timeline, net, system::errno};

pub const INTERVAL_NS: u64 = 1_000_000_000;

pub fn on_send_error(t: &mut Timeline, c: &Ctx, e: &SendError, out: &mut Vec<Verdict>) {
    let ts = e.header.ts_ns;
    if let Some(slot) = t.last_send_verdict.iter_mut().find(|(n, _)| *n == e.errno) {
        if ts.saturating_sub(slot.1) < INTERVAL_NS {
            t.send_verdicts_suppressed += 1;
            return;
        }
        slot.1 = ts;
    } else {
        // A free slot, else the one used longest ago.
        let slot = t
            .last_send_verdict
            .iter_mut()
            .min_by_key(|(n, at)| (*n != 0, *at))
            .expect("two slots");
        *slot = (e.errno, ts);
    }
    if matches!(e.errno, ETIMEDOUT | ECONNRESET | EPIPE) {
        // The send is often the first to hear of it: judge the ending now.
        ending::ended(t, c, ts, e.errno, out);
    }
    let prior = t.verdicts.prior();
    let likely = t
        .verdicts
        .last()
        .map(LikelyCause::Verdict)
        .or(match e.errno {
            ETIMEDOUT => Some(LikelyCause::Verdict(Kind::PathDown)),
            ECONNRESET | EPIPE => Some(LikelyCause::Verdict(Kind::Disconnect)),
            EMSGSIZE => Some(LikelyCause::MessageTooBig(MessageTooBig)),
            _ => None,
        });
    let recent = t
        .retransmits
        .iter()
        .rev()
        .take(super::evidence::RECENT_RETRANSMITS)
        .map(|r| RecentRetransmit {
            ago_ms: ms(ts.saturating_sub(r.ts_ns)),
            kind: net::retransmit_kind_name(r.kind),
            seg_len: r.seg_len,
            backoff: r.backoff,
        })
        .collect();
    t.verdicts.push(Kind::SendError);
    out.push(Verdict {
        ts_ns: ts,
        sock: c.sock,
        flow: if e.flow.family != 0 { e.flow } else { t.flow },
        owner: c.owner,
        confidence: if likely.is_some() {
            Confidence::High
        } else {
            Confidence::Medium
        },
        evidence: Evidence::SendError(SendErrorFacts {
            errno: e.errno,
            errno_name: ErrnoName(e.errno),
            meaning: errno::text(e.errno),
            likely_cause: likely,
            prior_verdicts: prior,
            recent_retransmits: recent,
            rto_retransmits: t.episode.as_ref().map(|ep| ep.rto).unwrap_or(0),
            stuck_ms: t
                .episode
                .as_ref()
                .map(|ep| ms(ts.saturating_sub(ep.start_ns))),
            too_big_received: t.too_big.len(),
            last_too_big_mtu: t.too_big.back().map(|tb| tb.mtu),
            last_too_big_router: t.too_big.back().map(|tb| tb.router),
            snd_queue: t.retransmits.back().map(|r| r.snd_queue),
        }),
        netns: t.netns,
    });
}
