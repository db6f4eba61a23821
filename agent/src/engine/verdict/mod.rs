//! Verdicts: the judgement of what is happening to a socket (or a destination, or a
//! UDP flow), as typed values. One rule per file; every rule is pure: facts in,
//! verdicts out, times from the events. Names and advice text are rendered only at
//! the output edge (`output::json`, `output::advice`).

pub mod ending;
pub mod evidence;
pub mod loss;
pub mod pmtud;
pub mod ports;
pub mod send_error;
pub mod stall;
pub mod udp;
pub mod udp_queue;

use agent_common::{
    event::{
        AF_INET6, CongState, Flow, Owner, Retransmit, SocketError, retransmit_flags,
        retransmit_kind,
    },
    kernel::{
        ca_state,
        errno::{EBUSY, ENOMEM},
        tcp_state,
    },
};
use evidence::RecoveredBy;
use serde::Serialize;

pub use evidence::Evidence;
pub use ports::Ports;
pub use udp::Udp;
pub use udp_queue::UdpQueue;

use super::timeline::{Timeline, seq_after};

/// Every verdict the engine can reach. The order is the order `VerdictLog` lists them
/// in and is part of no format: only the names are.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "verdict_kind")]
pub enum Kind {
    EphemeralPortsExhausted,
    BindConflict,
    UdpPathMtu,
    UdpQueueOverflow,
    PmtudBlackhole,
    PmtudOk,
    BlackholeRecovered,
    PacketLoss,
    PathDown,
    Stall,
    Disconnect,
    SpoofedPtb,
    SendError,
}

impl Kind {
    pub const ALL: [Kind; 13] = [
        Kind::EphemeralPortsExhausted,
        Kind::BindConflict,
        Kind::UdpPathMtu,
        Kind::UdpQueueOverflow,
        Kind::PmtudBlackhole,
        Kind::PmtudOk,
        Kind::BlackholeRecovered,
        Kind::PacketLoss,
        Kind::PathDown,
        Kind::Stall,
        Kind::Disconnect,
        Kind::SpoofedPtb,
        Kind::SendError,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            Kind::EphemeralPortsExhausted => "ephemeral_ports_exhausted",
            Kind::BindConflict => "bind_conflict",
            Kind::UdpPathMtu => "udp_path_mtu",
            Kind::UdpQueueOverflow => "udp_queue_overflow",
            Kind::PmtudBlackhole => "pmtud_blackhole",
            Kind::PmtudOk => "pmtud_ok",
            Kind::BlackholeRecovered => "blackhole_recovered",
            Kind::PacketLoss => "packet_loss",
            Kind::PathDown => "path_down",
            Kind::Stall => "stall",
            Kind::Disconnect => "disconnect",
            Kind::SpoofedPtb => "spoofed_ptb",
            Kind::SendError => "send_error",
        }
    }

    pub fn from_name(name: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.name() == name)
    }
}

/// How sure the engine is. Ordered: a verdict is repeated only when this rises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Confidence {
    Low,
    Medium,
    High,
}

impl Confidence {
    pub const fn name(self) -> &'static str {
        match self {
            Confidence::Low => "low",
            Confidence::Medium => "medium",
            Confidence::High => "high",
        }
    }
}

/// A confidence already reported: `raise` says whether `to` is news.
pub trait Reported {
    fn raise(&mut self, to: Confidence) -> bool;
}

impl Reported for Option<Confidence> {
    fn raise(&mut self, to: Confidence) -> bool {
        if self.is_some_and(|c| c >= to) {
            return false;
        }
        *self = Some(to);
        true
    }
}

/// An episode's verdict at Medium, or High when `high`, if it raises what the episode
/// already said in `slot` (None: said already, at that confidence or more).
pub(crate) fn raise_in_episode(
    t: &mut crate::engine::timeline::Timeline,
    high: bool,
    slot: impl FnOnce(&mut crate::engine::timeline::Episode) -> &mut Option<Confidence>,
) -> Option<Confidence> {
    let confidence = if high {
        Confidence::High
    } else {
        Confidence::Medium
    };
    slot(t.episode.as_mut()?)
        .raise(confidence)
        .then_some(confidence)
}

#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub ts_ns: u64,
    pub sock: Option<u64>,
    pub flow: Flow,
    pub owner: Option<Owner>,
    pub confidence: Confidence,
    /// What the verdict rests on; its variant is the verdict's kind.
    pub evidence: Evidence,
    /// Network namespace of the socket (0: unknown).
    pub netns: u32,
}

impl Verdict {
    pub fn kind(&self) -> Kind {
        self.evidence.kind()
    }
}

/// Who a verdict is about: the socket's id and owner, when known.
pub struct Ctx {
    pub sock: Option<u64>,
    pub owner: Option<Owner>,
}

impl Ctx {
    /// A verdict about this context's socket, as `t` knows it.
    pub fn verdict(
        &self,
        t: &mut Timeline,
        ts_ns: u64,
        confidence: Confidence,
        evidence: Evidence,
    ) -> Verdict {
        t.verdicts.push(evidence.kind());
        Verdict {
            ts_ns,
            sock: self.sock,
            flow: t.flow,
            owner: self.owner,
            confidence,
            evidence,
            netns: t.netns,
        }
    }
}

/// A retransmission of a tracked socket, through every rule that watches them.
pub fn on_retransmit(t: &mut Timeline, c: &Ctx, e: &Retransmit, out: &mut Vec<Verdict>) {
    let ts = e.header.ts_ns;
    // Every record carries the socket's current MSS, refused attempts included: the
    // record that shows the stall ending may be the first with the lowered MSS.
    if let Some(ep) = t.episode.as_mut()
        && e.mss > 0
    {
        ep.mss_low = ep.mss_low.min(e.mss);
    }
    // An attempt refused before anything was sent (-EBUSY: the previous copy is
    // still in the host's queue; -ENOMEM) is retried by the kernel and not counted by
    // it: it is not a retransmission to judge.
    if e.flags & retransmit_flags::HAS_ERR != 0 && (e.err == -EBUSY || e.err == -ENOMEM) {
        return;
    }
    // Progress since the stall began ends it.
    if let Some(ep) = t.episode.as_deref()
        && seq_after(e.snd_una, ep.snd_una)
    {
        end_stall(t, c, ts, RecoveredBy::Acknowledged, out);
    }
    pmtud::judge_too_big(t, c, e, out);
    let progressed = t.note_retransmit(e);
    loss::note(t, e, progressed);
    if e.kind == retransmit_kind::RTO {
        let ep = stall::note_rto(t, e);
        let established = matches!(
            t.flow.state,
            tcp_state::ESTABLISHED | tcp_state::CLOSE_WAIT | tcp_state::FIN_WAIT1
        );
        let mut at = AtRto {
            c,
            e,
            ep: &ep,
            established,
        };
        pmtud::blackhole(t, at, out);
        stall::clogged(t, c, e, &ep, out);
        let now = t.episode.as_deref().cloned().unwrap_or_else(|| ep.clone());
        at.ep = &now;
        stall::path_down_live(t, at, out);
    }
    loss::judge(t, c, e, out);
}

/// An RTO retransmission as the stall rules see it: the event, the stall episode that
/// already counts it, and whether the socket is in a data-carrying state.
#[derive(Clone, Copy)]
pub struct AtRto<'a> {
    pub c: &'a Ctx,
    pub e: &'a Retransmit,
    pub ep: &'a crate::engine::timeline::Episode,
    pub established: bool,
}

/// The end of a stall: progress was seen (or recovery signalled).
fn end_stall(t: &mut Timeline, c: &Ctx, ts: u64, how: RecoveredBy, out: &mut Vec<Verdict>) {
    if let Some(ep) = t.episode.take() {
        pmtud::recovered(t, c, ts, &ep, how, out);
    }
}

pub fn on_cong_state(t: &mut Timeline, c: &Ctx, e: &CongState, out: &mut Vec<Verdict>) {
    if e.state == ca_state::OPEN && t.episode.is_some() {
        end_stall(t, c, e.header.ts_ns, RecoveredBy::CongestionOpen, out);
    }
}

/// An error reported on the socket: it gave up (ETIMEDOUT) or was reset.
pub fn on_socket_error(t: &mut Timeline, c: &Ctx, e: &SocketError, out: &mut Vec<Verdict>) {
    ending::ended(t, c, e.header.ts_ns, e.errno, out);
}

/// Milliseconds with microsecond precision, for evidence.
pub fn ms(ns: u64) -> f64 {
    (ns as f64 / 1e6 * 1000.0).round() / 1000.0
}

/// IP + TCP headers without options: a segment of MSS `m` fits an MTU when
/// `m <= mtu - base_headers` (the MSS already leaves room for the options in use,
/// timestamps or none: Windows peers turn them off).
pub fn base_headers(flow: &Flow) -> u32 {
    if crate::net::canonical(flow).family == AF_INET6 {
        40 + 20
    } else {
        20 + 20
    }
}

/// Headers with the timestamp option Linux uses by default: the fallback for the
/// packet size when the socket's path MTU is not known.
pub fn default_headers(flow: &Flow) -> u32 {
    base_headers(flow) + 12
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_have_unique_names_that_round_trip() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_name(k.name()), Some(k));
            assert_eq!(
                serde_json::to_value(k).unwrap(),
                serde_json::json!(k.name())
            );
        }
    }

    #[test]
    fn confidence_is_only_raised() {
        let mut r: Option<Confidence> = None;
        assert!(r.raise(Confidence::Medium));
        assert!(!r.raise(Confidence::Medium));
        assert!(!r.raise(Confidence::Low));
        assert!(r.raise(Confidence::High));
        assert!(!r.raise(Confidence::Medium));
    }
}
