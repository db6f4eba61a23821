//! decode -> engine -> JSON, shared by `run` (live) and `replay` (recorded), so
//! both produce the same lines from the same records.

use std::{collections::BTreeMap, sync::Arc};

use crate::{
    clock::WallClock,
    decode,
    engine::{Emit, Engine, Limits},
    filter::{Filter, RateLimit},
    metrics::Metrics,
    output::json::{self, Units},
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
}

pub struct Pipeline {
    pub clock: WallClock,
    pub units: Units,
    pub engine: Engine,
    /// Events delivered, by type.
    pub counts: BTreeMap<&'static str, u64>,
    pub verdicts: BTreeMap<&'static str, u64>,
    pub decode_errors: u64,
    first_decode_error: Option<String>,
    filter: Filter,
    pub rate: RateLimit,
    pub metrics: Option<Arc<Metrics>>,
    enrich: Option<fn(&mut crate::engine::Verdict)>,
}

impl Pipeline {
    pub fn new(clock: WallClock, units: Units, limits: Limits, shaping: Shaping) -> Self {
        Self {
            clock,
            units,
            engine: Engine::new(limits),
            counts: BTreeMap::new(),
            verdicts: BTreeMap::new(),
            decode_errors: 0,
            first_decode_error: None,
            filter: shaping.filter,
            rate: RateLimit::new(shaping.rate_limit),
            metrics: shaping.metrics,
            enrich: shaping.enrich,
        }
    }

    /// One raw record in; its lines appended to `out` (newline-terminated JSON).
    /// Appending into one buffer, rather than a Vec per line, is most of what makes
    /// the pipeline fast.
    /// Returns the event's kernel timestamp when it decoded.
    pub fn record(&mut self, bytes: &[u8], out: &mut Vec<u8>) -> Option<u64> {
        match decode::decode(bytes) {
            Ok(event) if event.is_internal() => {
                let ts = event.header().ts_ns;
                self.engine.on_event(event);
                Some(ts)
            }
            Ok(event) => {
                let ts = event.header().ts_ns;
                *self.counts.entry(event.kind_name()).or_default() += 1;
                if let Some(m) = &self.metrics {
                    m.event(event.kind_name());
                }
                for mut e in self.engine.on_event(event) {
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
                        if let Some(m) = &self.metrics {
                            m.lost("rate_limited", 1);
                        }
                        continue;
                    }
                    json::emit_into(out, &self.clock, self.units, &e);
                }
                Some(ts)
            }
            Err(e) => {
                if self.first_decode_error.is_none() {
                    eprintln!(
                        "sendsight: warning: undecodable record ({e}); counting further ones"
                    );
                    self.first_decode_error = Some(e.to_string());
                }
                self.decode_errors += 1;
                if let Some(m) = &self.metrics {
                    m.lost("decode", 1);
                }
                None
            }
        }
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
    /// Whether `loss` lines pass the `--events` filter.
    pub fn allows_loss_lines(&self) -> bool {
        self.filter.allows_type("loss")
    }
}
