//! decode -> engine -> JSON, shared by `run` (live) and `replay` (recorded), so
//! both produce the same lines from the same records.

use std::{collections::BTreeMap, sync::Arc};

use crate::{
    clock::WallClock,
    decode::{self, Event},
    engine::{Emit, Engine, Limits},
    filter::{Filter, RateLimit},
    ledger::{Ledger, Source},
    metrics::Metrics,
    output::json::{self, SummaryBody, Units},
};

/// What shapes the output (not the engine's view).
#[derive(Default)]
pub struct Shaping {
    pub filter: Filter,
    /// Lines per socket per type per second; 0: no limit.
    pub rate_limit: u32,
    pub metrics: Option<Arc<Metrics>>,
    /// Adds facts about the live host to verdicts (none in replays).
    pub enrich: Option<fn(&mut crate::engine::Verdict)>,
    /// The agent's own endpoints: connections to them are its own doing, never
    /// traced (a scrape would otherwise move the very counters it reads).
    pub own: Own,
}

/// The agent's own endpoints, in its own network namespace.
#[derive(Clone, Debug, Default)]
pub struct Own {
    /// The agent's network namespace (inode); 0: unknown (then nothing is own).
    pub netns: u32,
    /// Where it listens (`--metrics`): matched on a socket's local end.
    pub listen: Vec<std::net::SocketAddr>,
    /// Where it connects (a TCP collector, resolved at start): matched on the peer end.
    pub peers: Vec<std::net::SocketAddr>,
}

impl Own {
    fn is_empty(&self) -> bool {
        self.netns == 0 || (self.listen.is_empty() && self.peers.is_empty())
    }
}

/// Events delivered, indexed by record kind (a failed connect or bind in a slot of
/// its own): a map keyed by name cost a string comparison per level per event.
#[derive(Default)]
struct EventCounts {
    by_kind: [u64; 32],
    connect_error: u64,
}

impl EventCounts {
    fn add(&mut self, event: &Event) {
        match event {
            Event::SendError(e) if decode::is_connect_or_bind(e) => self.connect_error += 1,
            e => self.by_kind[usize::from(e.kind() as u16) % 32] += 1,
        }
    }

    fn total(&self) -> u64 {
        self.by_kind.iter().sum::<u64>() + self.connect_error
    }

    /// As the summary line prints them: the types seen, by name.
    fn by_name(&self) -> BTreeMap<&'static str, u64> {
        let mut m = BTreeMap::new();
        for kind in agent_common::event::Kind::ALL {
            let n = self.by_kind[usize::from(kind as u16) % 32];
            if n > 0 {
                *m.entry(decode::kind_name(kind)).or_default() += n;
            }
        }
        if self.connect_error > 0 {
            *m.entry("connect_error").or_default() += self.connect_error;
        }
        m
    }
}

pub struct Pipeline {
    pub clock: WallClock,
    pub units: Units,
    pub engine: Engine,
    /// Events delivered, by line type (see [`EventCounts`]).
    counts: EventCounts,
    pub verdicts: BTreeMap<&'static str, u64>,
    /// Everything lost, by source.
    pub ledger: Ledger,
    first_decode_error: Option<String>,
    filter: Filter,
    pub rate: RateLimit,
    pub metrics: Option<Arc<Metrics>>,
    enrich: Option<fn(&mut crate::engine::Verdict)>,
    own: Own,
    sockets: json::Sockets,
    /// The engine's output for one event, kept for its allocation.
    emits: Vec<Emit>,
    /// Over perf buffers: their own lost-sample count (`SummaryBody::perf_buffer_lost`).
    pub perf_buffer_lost: Option<u64>,
}

impl Pipeline {
    pub fn new(clock: WallClock, units: Units, limits: Limits, shaping: Shaping) -> Self {
        Self {
            clock,
            units,
            engine: Engine::new(limits),
            counts: EventCounts::default(),
            verdicts: BTreeMap::new(),
            ledger: Ledger::new(shaping.metrics.clone()),
            first_decode_error: None,
            filter: shaping.filter,
            rate: RateLimit::new(shaping.rate_limit),
            metrics: shaping.metrics,
            enrich: shaping.enrich,
            own: shaping.own,
            sockets: json::Sockets::new(),
            emits: Vec::new(),
            perf_buffer_lost: None,
        }
    }

    /// One raw record in; its lines appended to `out` (newline-terminated JSON).
    /// Appending into one buffer, rather than a Vec per line, is most of what makes
    /// the pipeline fast.
    /// Returns the event's kernel timestamp when it decoded.
    pub fn record(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Option<u64> {
        match decode::decode(bytes) {
            Ok(Event::LossReport(r)) => {
                let ts = r.header.ts_ns;
                // An unknown slot (a newer agent's recording, or corruption) is
                // counted by the ledger as undecodable.
                self.ledger.set(Source::Kernel(r.slot), r.total);
                self.report_loss(ts, out);
                Some(ts)
            }
            Ok(Event::ClockStep(c)) => {
                self.clock = WallClock::with_offset(c.offset_ns as i128);
                Some(c.header.ts_ns)
            }
            Ok(event) if event.is_internal() => {
                let ts = event.header().ts_ns;
                self.engine.on_event(event);
                Some(ts)
            }
            Ok(event) => {
                let ts = event.header().ts_ns;
                // A move to CLOSE may carry the error the socket died of (kernels
                // without an error-report hook): that report goes first, while the
                // engine still holds the socket open.
                if let Event::SocketState(st) = &event
                    && let Some(err) = st.error()
                {
                    self.event(Event::SocketError(err), out);
                }
                self.event(event, out);
                Some(ts)
            }
            Err(e) => {
                if self.first_decode_error.is_none() {
                    eprintln!(
                        "sendsight: warning: undecodable record ({e}); counting further ones"
                    );
                    self.first_decode_error = Some(e.to_string());
                }
                self.ledger.add(Source::Decode, 1);
                None
            }
        }
    }

    /// One decoded event through the engine; its lines appended to `out`.
    fn event(&mut self, event: Event, out: &mut Vec<u8>) {
        self.counts.add(&event);
        if let Some(m) = &self.metrics {
            m.event(event.kind_name());
        }
        let mut emits = std::mem::take(&mut self.emits);
        self.engine.on_event_into(event, &mut emits);
        for mut e in emits.drain(..) {
            if let (Emit::Verdict(v), Some(enrich)) = (&mut e, self.enrich) {
                enrich(v);
            }
            if let Emit::Verdict(v) = &e {
                *self.verdicts.entry(v.kind().name()).or_default() += 1;
                if let Some(m) = &self.metrics {
                    m.verdict(v.kind().name());
                }
            }
            if !self.filter.allows(&e) {
                continue;
            }
            if !self.rate.admit(&e) {
                continue;
            }
            self.sockets.emit_into(out, &self.clock, self.units, &e);
        }
        self.emits = emits;
    }

    /// Whether a raw record is about a connection to one of the agent's own
    /// endpoints (the live run drops those before recording them).
    pub fn is_own(&self, bytes: &[u8]) -> bool {
        if self.own.is_empty() {
            return false;
        }
        let Ok(event) = decode::decode(bytes) else {
            return false;
        };
        let Some(flow) = event.flow() else {
            return false;
        };
        // Records without a namespace (error reports, congestion changes) are
        // matched by their flow alone.
        if event.netns().is_some_and(|n| n != self.own.netns) {
            return false;
        }
        let f = crate::net::canonical(flow);
        let local = (crate::net::local_ip(&f), f.sport);
        let peer = (crate::net::peer_ip(&f), f.dport);
        // Our listener: a socket whose local end it is (an accepted connection), or
        // a local client's socket whose peer it is (a scraper on this host).
        let listens = self.own.listen.iter().any(|a| {
            let ip = a.ip().to_canonical();
            let served = local.1 == a.port() && (ip.is_unspecified() || ip == local.0);
            let scraping = peer.1 == a.port()
                && (ip == peer.0 || (ip.is_unspecified() && peer.0.is_loopback()));
            served || scraping
        });
        let connects = self
            .own
            .peers
            .iter()
            .any(|a| peer.1 == a.port() && a.ip().to_canonical() == peer.0);
        listens || connects
    }

    /// The question the engine needs the kernel to answer before this raw record,
    /// if any (see `Engine::question`). Only too-big records are decoded for it.
    pub fn question(&self, bytes: &[u8]) -> Option<agent_common::event::SockLookup> {
        let kind = u16::from_ne_bytes([*bytes.first()?, *bytes.get(1)?]);
        if kind != agent_common::event::Kind::IcmpTooBig as u16 {
            return None;
        }
        self.engine.question(&decode::decode(bytes).ok()?)
    }

    pub fn send_verdicts_rate_limited(&self) -> u64 {
        // Only sockets still tracked are counted; evicted ones took theirs along.
        self.engine.sockets.suppressed_total()
    }
}

impl Pipeline {
    /// `loss` lines for every source grown since the last report (when `--events`
    /// admits them; the metric moves either way), stamped `mono_ns`.
    pub fn report_loss(&mut self, mono_ns: u64, out: &mut Vec<u8>) {
        self.ledger
            .set(Source::SocketsEvicted, self.engine.sockets.evicted);
        self.ledger.set(Source::RateLimited, self.rate.dropped);
        let lines = self.filter.allows_type("loss");
        self.ledger.report(&self.clock, mono_ns, lines, out);
    }

    /// The `summary` line (after a last [`Pipeline::report_loss`]).
    pub fn summary_line(&mut self, duration_s: f64, mono_ns: u64) -> Vec<u8> {
        let mut out = Vec::new();
        self.report_loss(mono_ns, &mut out);
        json::line_into(
            &mut out,
            "summary",
            &self.clock.rfc3339(mono_ns),
            self.clock.unix_ns(mono_ns),
            SummaryBody {
                duration_s,
                events_total: self.counts.total(),
                events: self.counts.by_name(),
                lost_total: self.ledger.lost_total(),
                lost: self.ledger.summary(),
                sockets_seen: self.engine.sockets.seen,
                verdicts: self.verdicts.clone(),
                send_verdicts_rate_limited: self.send_verdicts_rate_limited(),
                perf_buffer_lost: self.perf_buffer_lost,
            },
        );
        out
    }

    /// The one-line summary for stderr: where the operator still sees what was lost
    /// when the output itself is what failed.
    pub fn stderr_summary(&self) -> String {
        format!(
            "sendsight: summary: {} events, {} verdicts, {}",
            self.counts.total(),
            self.verdicts.values().sum::<u64>(),
            self.ledger.describe()
        )
    }
}

#[cfg(test)]
mod tests {
    use agent_common::{
        event::{ClockStep, CongState, Header, LossReport},
        loss::slot,
    };

    use super::*;
    use crate::decode::encode;

    fn cong(ts: u64) -> Vec<u8> {
        encode(&CongState {
            header: Header::new::<CongState>(0, ts, 1),
            ..CongState::default()
        })
    }

    fn lines(out: &[u8]) -> Vec<serde_json::Value> {
        out.split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect()
    }

    #[test]
    fn a_clock_step_rebases_later_timestamps_only() {
        let mut p = Pipeline::new(
            WallClock::with_offset(1_000),
            Units { hz: None },
            Limits::default(),
            Shaping::default(),
        );
        let mut out = Vec::new();
        p.record(&cong(5_000_000_000), &mut out);
        let step = ClockStep {
            header: Header::new::<ClockStep>(0, 5_500_000_000, 0),
            offset_ns: 3_600_000_000_000,
        };
        p.record(&encode(&step), &mut out);
        p.record(&cong(6_000_000_000), &mut out);
        let l = lines(&out);
        assert_eq!(l.len(), 2, "the step itself prints nothing");
        assert_eq!(l[0]["ts_ns"], 5_000_001_000i64);
        assert_eq!(l[1]["ts_ns"], 3_606_000_000_000i64);
    }

    /// A move to CLOSE carrying `sk_err` (no error-report hook on the kernel) is the
    /// error report first, then the state change; without it, only the change.
    #[test]
    fn a_close_carrying_its_error_is_reported_as_one() {
        use agent_common::event::{Flow, SocketState};
        let mut p = Pipeline::new(
            WallClock::with_offset(0),
            Units { hz: None },
            Limits::default(),
            Shaping::default(),
        );
        let close = |sport: u16, sk_err: u8| {
            encode(&SocketState {
                header: Header::new::<SocketState>(0, 7_000, 0x10 + sport as u64),
                flow: Flow {
                    saddr: [10, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                    daddr: [10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
                    sport,
                    dport: 80,
                    family: 2,
                    protocol: 6,
                    state: 7,
                },
                old_state: 1,
                new_state: 7,
                sk_err,
                ..SocketState::default()
            })
        };
        let mut out = Vec::new();
        p.record(&close(40000, 104), &mut out);
        p.record(&close(40001, 0), &mut out);
        let l = lines(&out);
        let kinds: Vec<(&str, u64)> = l
            .iter()
            .filter(|l| l["type"] != "verdict")
            .map(|l| {
                (
                    l["type"].as_str().unwrap(),
                    l["local"]["port"].as_u64().unwrap(),
                )
            })
            .collect();
        assert_eq!(
            kinds,
            [
                ("socket_error", 40000),
                ("socket_state", 40000),
                ("socket_state", 40001)
            ],
            "{l:?}"
        );
        let err = &l.iter().find(|l| l["type"] == "socket_error").unwrap();
        assert_eq!(err["errno_name"], "ECONNRESET", "{err}");
        assert_eq!(
            p.counts.total(),
            3,
            "the error report is counted as an event"
        );
    }

    #[test]
    fn a_loss_report_becomes_the_ledger_total() {
        let mut p = Pipeline::new(
            WallClock::with_offset(0),
            Units { hz: None },
            Limits::default(),
            Shaping::default(),
        );
        let mut out = Vec::new();
        for total in [3, 7] {
            let r = LossReport {
                header: Header::new::<LossReport>(0, 1, 0),
                slot: slot::RETRANSMIT,
                _reserved: 0,
                total,
            };
            p.record(&encode(&r), &mut out);
        }
        let l = lines(&out);
        assert_eq!(l.len(), 2);
        assert_eq!(
            (l[1]["lost"].as_u64(), l[1]["total"].as_u64()),
            (Some(4), Some(7))
        );
        assert_eq!(p.ledger.total(Source::Kernel(slot::RETRANSMIT)), 7);
    }
}
