//! Local ports. `ephemeral_ports_exhausted`: connect() finds no free local port
//! towards a destination (EADDRNOTAVAIL, typically all held in TIME_WAIT), or bind()
//! to port 0 finds none at all; counted per destination. `bind_conflict`: bind() to
//! a given port that another socket holds (EADDRINUSE), a different problem with a
//! different fix. Facts about the host (TIME_WAIT count, the port range in force)
//! are added at the edge, live, by `crate::system::sysinfo`.

use std::collections::{HashMap, VecDeque};

use agent_common::{
    event::SendError,
    kernel::errno::{EADDRINUSE, EADDRNOTAVAIL},
};

use super::{
    Confidence, Ctx, Reported, Verdict,
    evidence::{BindConflict, ErrnoName, Evidence, PortsExhausted},
};
use crate::net;

/// Failures within this window that make the verdict.
const WINDOW_NS: u64 = 10_000_000_000;
const MEDIUM_AT: usize = 3;
const HIGH_AT: usize = 10;
/// Most destinations (or bound addresses) remembered.
const MAX_KEYS: usize = 4096;

#[derive(Default)]
struct Failures {
    times: VecDeque<u64>,
    total: u64,
    reported: Option<Confidence>,
    /// When the last verdict was made (bind conflicts: one per window).
    reported_at: u64,
}

impl Failures {
    fn note(&mut self, ts: u64) -> usize {
        self.total += 1;
        self.times.push_back(ts);
        while self
            .times
            .front()
            .is_some_and(|t| ts.saturating_sub(*t) > WINDOW_NS)
        {
            self.times.pop_front();
        }
        self.times.truncate(64);
        self.times.len()
    }
}

type Key = ([u8; 16], u16, u16, u32);

#[derive(Default)]
pub struct Ports {
    dests: HashMap<Key, Failures>,
    binds: HashMap<Key, Failures>,
}

/// `map[key]`, forgetting the quietest key rather than growing past `MAX_KEYS`.
fn slot(map: &mut HashMap<Key, Failures>, key: Key) -> &mut Failures {
    if !map.contains_key(&key)
        && map.len() >= MAX_KEYS
        && let Some(k) = map
            .iter()
            .min_by_key(|(_, d)| d.times.back().copied().unwrap_or(0))
            .map(|(k, _)| *k)
    {
        map.remove(&k);
    }
    map.entry(key).or_default()
}

impl Ports {
    pub fn len(&self) -> usize {
        self.dests.len() + self.binds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn on_connect_error(&mut self, c: &Ctx, e: &SendError) -> Option<Verdict> {
        let bind = e.syscall as libc::c_long == libc::SYS_bind;
        match (bind, e.errno) {
            (true, EADDRINUSE) if e.flow.sport != 0 => self.bind_conflict(c, e),
            // bind() to port 0: no ephemeral port free at all.
            (true, EADDRINUSE) => self.exhausted(c, e),
            (false, EADDRNOTAVAIL | EADDRINUSE) => self.exhausted(c, e),
            _ => None,
        }
    }

    fn exhausted(&mut self, c: &Ctx, e: &SendError) -> Option<Verdict> {
        let flow = net::canonical(&e.flow);
        let key = (flow.daddr, flow.dport, flow.family, e.netns);
        let d = slot(&mut self.dests, key);
        let n = d.note(e.header.ts_ns);
        let confidence = match n {
            _ if n >= HIGH_AT => Confidence::High,
            _ if n >= MEDIUM_AT => Confidence::Medium,
            _ => return None,
        };
        if !d.reported.raise(confidence) {
            return None;
        }
        Some(Verdict {
            ts_ns: e.header.ts_ns,
            sock: c.sock,
            flow: e.flow,
            owner: c.owner,
            confidence,
            evidence: Evidence::EphemeralPortsExhausted(PortsExhausted {
                destination: format!("{}:{}", net::peer_ip(&flow), flow.dport),
                errno_name: ErrnoName(e.errno),
                failures_in_window: n,
                window_s: WINDOW_NS / 1_000_000_000,
                failures_total: d.total,
                host: None,
            }),
            netns: e.netns,
        })
    }

    fn bind_conflict(&mut self, c: &Ctx, e: &SendError) -> Option<Verdict> {
        let flow = net::canonical(&e.flow);
        let key = (flow.saddr, flow.sport, flow.family, e.netns);
        let ts = e.header.ts_ns;
        let d = slot(&mut self.binds, key);
        d.note(ts);
        // One verdict per address and window: a service retrying in a loop is one
        // conflict, not thousands.
        if d.reported.is_some() && ts.saturating_sub(d.reported_at) < WINDOW_NS {
            return None;
        }
        d.reported = Some(Confidence::High);
        d.reported_at = ts;
        Some(Verdict {
            ts_ns: ts,
            sock: c.sock,
            flow: e.flow,
            owner: c.owner,
            confidence: Confidence::High,
            evidence: Evidence::BindConflict(BindConflict {
                address: std::net::SocketAddr::new(net::local_ip(&flow), flow.sport).to_string(),
                errno_name: ErrnoName(e.errno),
                failures: d.total,
                window_s: WINDOW_NS / 1_000_000_000,
            }),
            netns: e.netns,
        })
    }
}
