//! decode -> engine -> JSON, shared by `run` (live) and `replay` (recorded), so
//! both produce the same lines from the same records.

use std::collections::BTreeMap;

use crate::{
    clock::WallClock,
    decode,
    engine::{Emit, Engine, Limits},
    output::json::{self, Units},
};

pub struct Pipeline {
    pub clock: WallClock,
    pub units: Units,
    pub engine: Engine,
    /// Events delivered, by type.
    pub counts: BTreeMap<&'static str, u64>,
    pub verdicts: BTreeMap<&'static str, u64>,
    pub decode_errors: u64,
    first_decode_error: Option<String>,
}

impl Pipeline {
    pub fn new(clock: WallClock, units: Units, limits: Limits) -> Self {
        Self {
            clock,
            units,
            engine: Engine::new(limits),
            counts: BTreeMap::new(),
            verdicts: BTreeMap::new(),
            decode_errors: 0,
            first_decode_error: None,
        }
    }

    /// One raw record in; its lines appended to `out` (newline-terminated JSON).
    pub fn record(&mut self, bytes: &[u8], out: &mut impl FnMut(Vec<u8>)) {
        match decode::decode(bytes) {
            Ok(event) => {
                *self.counts.entry(event.kind_name()).or_default() += 1;
                for e in self.engine.on_event(event) {
                    if let Emit::Verdict(v) = &e {
                        *self.verdicts.entry(v.verdict).or_default() += 1;
                    }
                    out(json::emit(&self.clock, self.units, &e));
                }
            }
            Err(e) => {
                if self.first_decode_error.is_none() {
                    eprintln!(
                        "sendsight: warning: undecodable record ({e}); counting further ones"
                    );
                    self.first_decode_error = Some(e.to_string());
                }
                self.decode_errors += 1;
            }
        }
    }

    pub fn send_verdicts_rate_limited(&self) -> u64 {
        // Only sockets still tracked are counted; evicted ones took theirs along.
        self.engine.sockets.suppressed_total()
    }
}
