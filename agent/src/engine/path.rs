//! Path grouping: when several sockets to one destination prefix reach the same
//! verdict, say it once for the path.

use std::collections::{BTreeSet, HashMap};

use std::net::IpAddr;

use agent_common::event::{AF_INET6, Flow};
use serde::Serialize;

use super::verdict::Kind;
use crate::net;

/// IPv4 /24 and IPv6 /64: the granularity at which paths usually share a router
/// (a v4-mapped peer is an IPv4 one).
pub fn prefix(flow: &Flow) -> String {
    let flow = &net::canonical(flow);
    if flow.family == AF_INET6 {
        let a = &flow.daddr;
        let mut p = [0u8; 16];
        p[..8].copy_from_slice(&a[..8]);
        format!("{}/64", std::net::Ipv6Addr::from(p))
    } else {
        let a = &flow.daddr;
        format!("{}.{}.{}.0/24", a[0], a[1], a[2])
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct PathLine {
    pub ts_ns: u64,
    pub verdict: Kind,
    pub destination: String,
    pub sockets: Vec<u64>,
    pub evidence: PathEvidence,
}

#[derive(Clone, Debug, PartialEq, Serialize, schemars::JsonSchema)]
pub struct PathEvidence {
    #[schemars(range(min = 2))]
    pub sockets_affected: usize,
    pub mss: Option<u32>,
    pub last_peer: IpAddr,
}

/// The verdicts said once for a path (the only values of a `path` line's `verdict`).
pub const PATH_VERDICTS: [super::verdict::Kind; 2] = [
    super::verdict::Kind::PmtudBlackhole,
    super::verdict::Kind::PathDown,
];

/// Bounded: at most `max` (verdict, prefix) groups, each with at most 64 sockets listed.
pub struct Paths {
    groups: HashMap<(Kind, String), BTreeSet<u64>>,
    max: usize,
}

impl Paths {
    pub fn new(max: usize) -> Self {
        Self {
            groups: HashMap::new(),
            max,
        }
    }

    /// A socket reached `verdict`; returns a path line when its group just grew past one.
    pub fn add(
        &mut self,
        ts_ns: u64,
        verdict: Kind,
        flow: &Flow,
        sock: u64,
        mss: Option<u32>,
    ) -> Option<PathLine> {
        debug_assert!(
            PATH_VERDICTS.contains(&verdict),
            "{verdict:?} has no path line"
        );
        let key = (verdict, prefix(flow));
        if !self.groups.contains_key(&key) && self.groups.len() >= self.max {
            return None;
        }
        let set = self.groups.entry(key.clone()).or_default();
        if set.len() >= 64 || !set.insert(sock) {
            return None;
        }
        (set.len() >= 2).then(|| PathLine {
            ts_ns,
            verdict,
            destination: key.1.clone(),
            sockets: set.iter().copied().collect(),
            evidence: PathEvidence {
                sockets_affected: set.len(),
                mss,
                last_peer: net::peer_ip(flow),
            },
        })
    }

    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn is_empty(&self) -> bool {
        self.groups.is_empty()
    }
}
