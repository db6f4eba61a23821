//! Output filters (`--pid`, `--comm`, `--cgroup`, `--netns`, `--port`, `--cidr`,
//! `--events`) and per-socket rate limiting. They shape what is printed; the engine
//! still sees every event, so verdicts stay right whatever is filtered out.

use std::collections::{BTreeSet, HashMap};

use agent_common::event::{Flow, Owner};
use ipnet::IpNet;

use crate::{engine::Emit, net};

/// Line types `--events` accepts.
pub const EVENT_TYPES: &[&str] = &[
    "retransmit",
    "send_error",
    "connect_error",
    "udp_send",
    "udp_queue_drop",
    "icmp_too_big",
    "socket_state",
    "socket_error",
    "cong_state",
    "verdict",
    "path",
    "loss",
];

#[derive(Clone, Debug, Default)]
pub struct Filter {
    pub pids: Vec<u32>,
    pub comms: Vec<String>,
    pub cgroups: Vec<u64>,
    pub netns: Vec<u32>,
    pub ports: Vec<u16>,
    pub cidrs: Vec<IpNet>,
    /// None: every type.
    pub events: Option<BTreeSet<String>>,
}

pub fn parse_events(s: &str) -> Result<BTreeSet<String>, String> {
    let mut set = BTreeSet::new();
    for t in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        if !EVENT_TYPES.contains(&t) {
            return Err(format!(
                "unknown event type {t:?}; known: {}",
                EVENT_TYPES.join(", ")
            ));
        }
        set.insert(t.to_string());
    }
    if set.is_empty() {
        return Err("no event type given".into());
    }
    Ok(set)
}

pub fn parse_cidr(s: &str) -> Result<IpNet, String> {
    s.parse::<IpNet>()
        .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| format!("{s:?} is not a CIDR (e.g. 10.0.0.0/8, 2001:db8::/32) or an IP"))
}

fn comm_of(o: &Owner) -> &str {
    let end = o.comm.iter().position(|&b| b == 0).unwrap_or(o.comm.len());
    std::str::from_utf8(&o.comm[..end]).unwrap_or("")
}

impl Filter {
    pub fn allows_type(&self, kind: &str) -> bool {
        self.events.as_ref().is_none_or(|s| s.contains(kind))
    }

    fn allows_parts(&self, owner: Option<&Owner>, flow: Option<&Flow>, netns: Option<u32>) -> bool {
        if !self.pids.is_empty() && !owner.is_some_and(|o| self.pids.contains(&o.pid)) {
            return false;
        }
        if !self.comms.is_empty()
            && !owner.is_some_and(|o| self.comms.iter().any(|c| c == comm_of(o)))
        {
            return false;
        }
        if !self.cgroups.is_empty() && !owner.is_some_and(|o| self.cgroups.contains(&o.cgroup)) {
            return false;
        }
        if !self.netns.is_empty() && !netns.is_some_and(|n| self.netns.contains(&n)) {
            return false;
        }
        if !self.ports.is_empty()
            && !flow.is_some_and(|f| self.ports.contains(&f.sport) || self.ports.contains(&f.dport))
        {
            return false;
        }
        if !self.cidrs.is_empty()
            && !flow.is_some_and(|f| {
                // A v4-mapped address is matched by an IPv4 prefix.
                let f = &net::canonical(f);
                let (l, p) = (net::local_ip(f), net::peer_ip(f));
                self.cidrs.iter().any(|c| c.contains(&l) || c.contains(&p))
            })
        {
            return false;
        }
        true
    }

    pub fn allows(&self, e: &Emit) -> bool {
        match e {
            Emit::Event(a) => {
                if !self.allows_type(a.event.kind_name()) {
                    return false;
                }
                self.allows_parts(a.owner.as_ref(), a.event.flow(), a.netns)
            }
            Emit::Verdict(v) => {
                self.allows_type("verdict")
                    && self.allows_parts(
                        v.owner.as_ref(),
                        Some(&v.flow),
                        (v.netns != 0).then_some(v.netns),
                    )
            }
            Emit::Path(_) => self.allows_type("path"),
        }
    }
}

/// At most `per_second` lines of one type (event type or verdict kind) per socket
/// per second; the rest are dropped and counted.
pub struct RateLimit {
    per_second: u32,
    windows: HashMap<(u64, &'static str, u8), (u64, u32)>,
    pub dropped: u64,
}

impl RateLimit {
    pub fn new(per_second: u32) -> Self {
        Self {
            per_second,
            windows: HashMap::new(),
            dropped: 0,
        }
    }

    /// Whether this event line may go out.
    pub fn admit(&mut self, e: &Emit) -> bool {
        if self.per_second == 0 {
            return true;
        }
        // Lines about no known socket (too-big messages quoting flows nobody has:
        // anyone on the network can send those) share one budget per type.
        // A verdict's raise (medium -> high) has its own budget: it is never held
        // back by the lower confidence said a moment before.
        let (sock, kind, level, ts_ns) = match e {
            Emit::Event(a) => (
                a.sock.unwrap_or(0),
                a.event.kind_name(),
                0,
                a.event.header().ts_ns,
            ),
            Emit::Verdict(v) => (
                v.sock.unwrap_or(0),
                v.kind().name(),
                v.confidence as u8 + 1,
                v.ts_ns,
            ),
            Emit::Path(_) => return true,
        };
        let second = ts_ns / 1_000_000_000;
        if self.windows.len() > 100_000 {
            // Bounded: old windows are worthless after their second.
            self.windows.retain(|_, (s, _)| *s >= second);
        }
        let w = self
            .windows
            .entry((sock, kind, level))
            .or_insert((second, 0));
        if w.0 != second {
            *w = (second, 0);
        }
        w.1 += 1;
        if w.1 > self.per_second {
            self.dropped += 1;
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses() {
        assert!(parse_events("retransmit,verdict").is_ok());
        assert!(
            parse_events("retransmits")
                .unwrap_err()
                .contains("unknown event type")
        );
        assert!(parse_cidr("10.0.0.0/8").is_ok());
        assert!(parse_cidr("2001:db8::1").is_ok());
        assert!(
            parse_cidr("10.0.0.0/33")
                .unwrap_err()
                .contains("not a CIDR")
        );
    }
}
