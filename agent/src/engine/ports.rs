//! Ephemeral-port exhaustion: connect() failing with EADDRNOTAVAIL (no free local
//! port towards that destination, typically all held in TIME_WAIT) or EADDRINUSE,
//! counted per destination. Facts about the host (TIME_WAIT count, the port range
//! in force) are added at the edge, live, by `crate::sysinfo`.

use std::collections::{HashMap, VecDeque};

use agent_common::event::SendError;
use serde_json::json;

use super::verdict::{Ctx, Verdict};
use crate::{errno, net};

const EADDRINUSE: i32 = 98;
const EADDRNOTAVAIL: i32 = 99;
/// Failures within this window that make the verdict.
const WINDOW_NS: u64 = 10_000_000_000;
const MEDIUM_AT: usize = 3;
const HIGH_AT: usize = 10;
/// Most destinations remembered.
const MAX_DESTINATIONS: usize = 4096;

#[derive(Default)]
struct Dest {
    failures: VecDeque<u64>,
    total: u64,
    reported: Option<&'static str>,
}

#[derive(Default)]
pub struct Ports {
    dests: HashMap<([u8; 16], u16, u16, u32), Dest>,
}

impl Ports {
    pub fn len(&self) -> usize {
        self.dests.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dests.is_empty()
    }

    pub fn on_connect_error(&mut self, c: &Ctx, e: &SendError) -> Option<Verdict> {
        if e.errno != EADDRNOTAVAIL && e.errno != EADDRINUSE {
            return None;
        }
        let key = (e.flow.daddr, e.flow.dport, e.flow.family, e.netns);
        if !self.dests.contains_key(&key) && self.dests.len() >= MAX_DESTINATIONS {
            // Forget the quietest destination rather than grow.
            if let Some(k) = self
                .dests
                .iter()
                .min_by_key(|(_, d)| d.failures.back().copied().unwrap_or(0))
                .map(|(k, _)| *k)
            {
                self.dests.remove(&k);
            }
        }
        let d = self.dests.entry(key).or_default();
        let ts = e.header.ts_ns;
        d.total += 1;
        d.failures.push_back(ts);
        while d
            .failures
            .front()
            .is_some_and(|t| ts.saturating_sub(*t) > WINDOW_NS)
        {
            d.failures.pop_front();
        }
        d.failures.truncate(64);
        let n = d.failures.len();
        let confidence = match n {
            _ if n >= HIGH_AT => "high",
            _ if n >= MEDIUM_AT => "medium",
            _ => return None,
        };
        if d.reported == Some(confidence) || d.reported == Some("high") {
            return None;
        }
        d.reported = Some(confidence);
        let peer = net::peer_ip(&e.flow);
        Some(Verdict {
            ts_ns: ts,
            sock: c.sock,
            flow: e.flow,
            owner: c.owner,
            verdict: "ephemeral_ports_exhausted",
            confidence,
            evidence: json!({
                "destination": format!("{peer}:{}", e.flow.dport),
                "errno_name": errno::name(e.errno),
                "failures_in_window": n,
                "window_s": WINDOW_NS / 1_000_000_000,
                "failures_total": d.total,
            }),
            advice: format!(
                "connect() to {peer}:{} fails with {}: no local port is free for this \
                 destination, usually because closed connections hold them in TIME_WAIT. \
                 Reuse connections (keep-alive, pooling), widen \
                 net.ipv4.ip_local_port_range, or let the kernel reuse TIME_WAIT ports for \
                 new outgoing connections (net.ipv4.tcp_tw_reuse=1).",
                e.flow.dport,
                errno::name(e.errno)
            ),
            netns: e.netns,
        })
    }
}
