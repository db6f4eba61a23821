//! The loss ledger: every counter of something the agent could not deliver, and the
//! only producer of what is said about them: `loss` lines, the summary's `lost`
//! map, the stderr summary and the `lost` metric. One set of numbers, so the four
//! always agree.
//!
//! Counters are totals since start. Kernel slots arrive as `LossReport` records
//! (so a recording carries them into its replay); the agent's own sources are set
//! by whoever counts them.

use std::{collections::BTreeMap, sync::Arc};

use agent_common::loss::{self, SLOT_NAMES, slot};

use crate::{clock::WallClock, metrics::Metrics, output::json};

/// Where something was lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Source {
    /// A program's `LOST` slot (`agent_common::loss::slot`).
    Kernel(u32),
    /// Records the decoder rejected.
    Decode,
    /// Sockets the engine forgot to stay within `--max-sockets` (their timelines).
    SocketsEvicted,
    /// Lines a sink could not deliver (full queue, disk full, collector gone).
    Sink,
    /// Lines held back by `--rate-limit`.
    RateLimited,
    /// Socket-layer send failures still waiting for their syscall exit when the
    /// agent stopped.
    SendParkedAtExit,
    /// Program runs the kernel skipped (`recursion_misses`: a program nesting in
    /// itself, or a classic one while another ran on the CPU): each an event unseen.
    ProgramRunsSkipped,
}

const AGENT: [Source; 6] = [
    Source::Decode,
    Source::SocketsEvicted,
    Source::Sink,
    Source::RateLimited,
    Source::SendParkedAtExit,
    Source::ProgramRunsSkipped,
];

impl Source {
    /// Every source, in the order lines and summaries list them.
    pub fn all() -> impl Iterator<Item = Source> {
        (0..slot::COUNT).map(Source::Kernel).chain(AGENT)
    }

    /// The `source` of `loss` lines, the key of the summary's `lost`, the metric label.
    pub fn name(self) -> &'static str {
        match self {
            Source::Kernel(s) => SLOT_NAMES.get(s as usize).copied().unwrap_or("kernel"),
            Source::Decode => "decode",
            Source::SocketsEvicted => "sockets_evicted",
            Source::Sink => "sink",
            Source::RateLimited => "rate_limited",
            Source::SendParkedAtExit => "send_error_parked",
            Source::ProgramRunsSkipped => "program_runs_skipped",
        }
    }

    /// Whether it counts lost events or lines (not so: `send_error_details`, events
    /// delivered without their syscall details).
    pub fn is_loss(self) -> bool {
        match self {
            Source::Kernel(s) => loss::is_event_loss(s),
            _ => true,
        }
    }

    /// Listed in every summary even at zero (the ones a reader looks for first).
    pub fn always_listed(self) -> bool {
        match self {
            Source::Kernel(s) => s <= slot::CONG_STATE,
            _ => true,
        }
    }

    /// Its counter; a kernel slot this agent does not know is counted as a record
    /// the decoder could not make sense of.
    fn index(self) -> usize {
        match self {
            Source::Kernel(s) if s < slot::COUNT => s as usize,
            Source::Kernel(_) => Source::Decode.index(),
            other => slot::COUNT as usize + AGENT.iter().position(|a| *a == other).unwrap_or(0),
        }
    }
}

const SOURCES: usize = slot::COUNT as usize + AGENT.len();

#[derive(Default)]
pub struct Ledger {
    totals: [u64; SOURCES],
    /// What `loss` lines (and the metric) have said so far.
    reported: [u64; SOURCES],
    metrics: Option<Arc<Metrics>>,
}

impl Ledger {
    pub fn new(metrics: Option<Arc<Metrics>>) -> Self {
        Self {
            metrics,
            ..Self::default()
        }
    }

    /// Sets a source's total since start (counters only grow: a smaller value, as
    /// from a reader that restarted, is ignored).
    pub fn set(&mut self, source: Source, total: u64) {
        if let Source::Kernel(s) = source
            && s >= slot::COUNT
        {
            return self.add(Source::Decode, 1);
        }
        let t = &mut self.totals[source.index()];
        *t = (*t).max(total);
    }

    pub fn add(&mut self, source: Source, n: u64) {
        let t = &mut self.totals[source.index()];
        *t = t.saturating_add(n);
    }

    pub fn total(&self, source: Source) -> u64 {
        self.totals[source.index()]
    }

    /// Lost events and lines, all sources that count losses.
    pub fn lost_total(&self) -> u64 {
        Source::all()
            .filter(|s| s.is_loss())
            .fold(0u64, |sum, s| sum.saturating_add(self.total(s)))
    }

    /// For every source grown since the last report: the metric moves, and, when
    /// `lines` (the `--events` filter admits `loss`), a `loss` line is appended.
    pub fn report(&mut self, clock: &WallClock, mono_ns: u64, lines: bool, out: &mut Vec<u8>) {
        for source in Source::all() {
            let i = source.index();
            let (total, before) = (self.totals[i], self.reported[i]);
            if total <= before {
                continue;
            }
            if let Some(m) = &self.metrics {
                m.lost(source.name(), total - before);
            }
            if lines {
                json::line_into(
                    out,
                    "loss",
                    &clock.rfc3339(mono_ns),
                    clock.unix_ns(mono_ns),
                    json::LossBody {
                        source: source.name(),
                        lost: total - before,
                        total,
                    },
                );
            }
            self.reported[i] = total;
        }
    }

    /// The summary's `lost` map.
    pub fn summary(&self) -> BTreeMap<String, u64> {
        Source::all()
            .filter(|s| s.always_listed() || self.total(*s) > 0)
            .map(|s| (s.name().to_string(), self.total(s)))
            .collect()
    }

    /// What the stderr summary says about losses: the total, then each source that
    /// lost something (all of them, in the summary's names).
    pub fn describe(&self) -> String {
        let parts: Vec<String> = Source::all()
            .filter(|s| self.total(*s) > 0)
            .map(|s| format!("{} {}", s.name(), self.total(s)))
            .collect();
        if parts.is_empty() {
            "lost 0".into()
        } else {
            format!("lost {} ({})", self.lost_total(), parts.join(", "))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_set_of_numbers() {
        let m = Arc::new(Metrics::default());
        let mut l = Ledger::new(Some(m.clone()));
        let clock = WallClock::with_offset(0);
        l.set(Source::Kernel(slot::UDP_SEND), 3);
        l.add(Source::Sink, 2);
        l.set(Source::Kernel(slot::PENDING_FULL), 5);
        let mut out = Vec::new();
        l.report(&clock, 1, true, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        assert!(text.contains(r#""source":"udp_send","lost":3,"total":3"#));
        // Not a loss of events: listed, not in the total.
        assert_eq!(l.lost_total(), 5);
        assert_eq!(l.summary()["udp_send"], 3);
        assert_eq!(l.summary()["retransmit"], 0);
        assert!(l.describe().contains("udp_send 3"), "{}", l.describe());
        let rendered = m.render();
        assert!(
            rendered.contains(r#"sendsight_lost_total{source="sink"} 2"#),
            "{rendered}"
        );
        // Lines off: the metric still moves.
        l.add(Source::Sink, 1);
        let mut out = Vec::new();
        l.report(&clock, 2, false, &mut out);
        assert!(out.is_empty());
        assert!(
            m.render()
                .contains(r#"sendsight_lost_total{source="sink"} 3"#)
        );
        // Totals never go back.
        l.set(Source::Kernel(slot::UDP_SEND), 1);
        assert_eq!(l.total(Source::Kernel(slot::UDP_SEND)), 3);
    }

    #[test]
    fn names_are_unique() {
        let mut names: Vec<_> = Source::all().map(Source::name).collect();
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n);
    }
}
