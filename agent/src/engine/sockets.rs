//! Socket identity. The kernel hands us `struct sock` addresses; we never print
//! those (they are kernel pointers, and reused after free). Each address gets a small
//! id, starting at 1, that stays the same for all events of that socket while tracked.
//! The table also remembers each socket's flow (to match ICMP messages and error
//! reports, which carry a flow but no socket) and its owner (for softirq events).

use std::collections::VecDeque;

// foldhash: SipHash was a tenth of the pipeline's time, several lookups per event.
// Seeded per table, so flows chosen by a remote peer cannot aim at one bucket.
use foldhash::{HashMap, HashMapExt};

use agent_common::event::{Flow, Owner};

use super::timeline::Timeline;

/// A flow as a lookup key (the state byte left out).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct FlowKey {
    pub family: u16,
    pub protocol: u8,
    pub saddr: [u8; 16],
    pub sport: u16,
    pub daddr: [u8; 16],
    pub dport: u16,
}

impl From<&Flow> for FlowKey {
    /// Keyed as the wire sees the flow: a v4-mapped AF_INET6 socket matches the
    /// AF_INET flow an IPv4 too-big message quotes.
    fn from(f: &Flow) -> Self {
        let f = &crate::net::canonical(f);
        FlowKey {
            family: f.family,
            protocol: f.protocol,
            saddr: f.saddr,
            sport: f.sport,
            daddr: f.daddr,
            dport: f.dport,
        }
    }
}

#[derive(Clone, Debug)]
pub struct Entry {
    pub id: u64,
    pub owner: Option<Owner>,
    /// When the socket reached CLOSE: kept a moment for late error reports.
    pub closed_at: Option<u64>,
    /// The flow (`timeline.flow`) is indexed in `by_flow` once known.
    pub timeline: Timeline,
}

impl Entry {
    fn flow_key(&self) -> Option<FlowKey> {
        (self.timeline.flow.family != 0).then(|| FlowKey::from(&self.timeline.flow))
    }
}

/// How long a closed socket is kept for late error reports.
pub const CLOSED_KEEP_NS: u64 = 2_000_000_000;

pub struct SocketTable {
    /// Boxed: the table's buckets are sized to powers of two, and empty buckets of
    /// ~300-byte entries were a third of the memory at 100k sockets.
    by_sk: HashMap<u64, Box<Entry>>,
    by_flow: HashMap<FlowKey, u64>,
    /// Insertion order, for evicting the oldest when full.
    order: VecDeque<u64>,
    next: u64,
    max: usize,
    /// Sockets forgotten because the table was full (a ledger entry).
    pub evicted: u64,
    /// Sockets ever seen.
    pub seen: u64,
    /// Closed sockets in the order they closed, kept for `CLOSED_KEEP_NS`.
    closed: VecDeque<(u64, u64)>,
    suppressed_gone: u64,
}

impl SocketTable {
    pub fn new(max: usize) -> Self {
        Self {
            by_sk: HashMap::new(),
            by_flow: HashMap::new(),
            order: VecDeque::new(),
            next: 1,
            max: max.max(1),
            evicted: 0,
            seen: 0,
            closed: VecDeque::new(),
            suppressed_gone: 0,
        }
    }

    /// The entry of socket `sk`, created if new.
    pub fn entry(&mut self, sk: u64) -> &mut Entry {
        if !self.by_sk.contains_key(&sk) {
            if self.by_sk.len() >= self.max {
                while let Some(old) = self.order.pop_front() {
                    if self.remove(old) {
                        self.evicted += 1;
                        break;
                    }
                }
            }
            let id = self.next;
            self.next += 1;
            self.seen += 1;
            self.by_sk.insert(
                sk,
                Box::new(Entry {
                    id,
                    owner: None,
                    closed_at: None,
                    timeline: Timeline::default(),
                }),
            );
            self.order.push_back(sk);
            // Forgotten sockets leave stale entries behind; compact so the queue stays
            // within a constant factor of the table.
            if self.order.len() > 2 * self.max {
                let by_sk = &self.by_sk;
                self.order.retain(|sk| by_sk.contains_key(sk));
            }
        }
        self.by_sk.get_mut(&sk).expect("just inserted")
    }

    pub fn id_for(&mut self, sk: u64) -> u64 {
        self.entry(sk).id
    }

    /// Records what an event told us about `sk`; returns its id and best owner.
    pub fn learn(&mut self, sk: u64, flow: &Flow, owner: &Owner) -> (u64, Option<Owner>) {
        let e = self.learn_entry(sk, flow, owner);
        (e.id, e.owner)
    }

    /// [`SocketTable::learn`], returning the entry (its id, best owner, timeline):
    /// the engine would otherwise look the socket up again.
    pub fn learn_entry(&mut self, sk: u64, flow: &Flow, owner: &Owner) -> &mut Entry {
        // Only an insertion that may evict or compact goes through `entry`; any
        // other takes one lookup below (contains_key then get_mut were two, per
        // event).
        if (self.by_sk.len() >= self.max || self.order.len() >= 2 * self.max)
            && !self.by_sk.contains_key(&sk)
        {
            self.entry(sk);
        }
        // Split: the entry stays borrowed while the flow index is updated.
        let Self {
            by_sk,
            by_flow,
            order,
            next,
            seen,
            ..
        } = self;
        // As `entry` inserts, short of eviction and compaction: the table has room
        // (checked above), and the queue stays within twice the cap after the push.
        let e = by_sk.entry(sk).or_insert_with(|| {
            let id = *next;
            *next += 1;
            *seen += 1;
            order.push_back(sk);
            Box::new(Entry {
                id,
                owner: None,
                closed_at: None,
                timeline: Timeline::default(),
            })
        });
        // Most events repeat the socket's flow: then its index entry is right as it
        // is, and canonicalizing both flows into keys is wasted.
        let same = {
            let old = &e.timeline.flow;
            (
                old.saddr,
                old.daddr,
                old.sport,
                old.dport,
                old.family,
                old.protocol,
            ) == (
                flow.saddr,
                flow.daddr,
                flow.sport,
                flow.dport,
                flow.family,
                flow.protocol,
            )
        };
        let old_flow = if same { None } else { e.flow_key() };
        e.timeline.flow = *flow;
        if owner.pid != 0 {
            e.owner = Some(*owner);
        }
        if !same && flow.family != 0 {
            let key = FlowKey::from(flow);
            if old_flow != Some(key) {
                if let Some(old) = old_flow {
                    by_flow.remove(&old);
                }
                by_flow.insert(key, sk);
            }
        }
        e
    }

    /// The socket (sk, id, owner) with this flow, if tracked.
    pub fn by_flow(&self, flow: &Flow) -> Option<(u64, u64, Option<Owner>)> {
        let sk = *self.by_flow.get(&FlowKey::from(flow))?;
        let e = self.by_sk.get(&sk)?;
        Some((sk, e.id, e.owner))
    }

    fn remove(&mut self, sk: u64) -> bool {
        match self.by_sk.remove(&sk) {
            Some(e) => {
                self.suppressed_gone += e.timeline.send_verdicts_suppressed;
                if let Some(f) = e.flow_key()
                    && self.by_flow.get(&f) == Some(&sk)
                {
                    self.by_flow.remove(&f);
                }
                true
            }
            None => false,
        }
    }

    /// send_error verdicts held back by rate limiting, over all sockets ever tracked.
    pub fn suppressed_total(&self) -> u64 {
        self.suppressed_gone
            + self
                .by_sk
                .values()
                .map(|e| e.timeline.send_verdicts_suppressed)
                .sum::<u64>()
    }

    pub fn get_mut(&mut self, sk: u64) -> Option<&mut Entry> {
        self.by_sk.get_mut(&sk).map(|e| &mut **e)
    }

    /// Forgets sockets with no event since `cutoff_ns`; returns how many.
    pub fn evict_idle(&mut self, cutoff_ns: u64) -> usize {
        let idle: Vec<u64> = self
            .by_sk
            .iter()
            .filter(|(_, e)| e.timeline.last_ns < cutoff_ns)
            .map(|(sk, _)| *sk)
            .collect();
        for sk in &idle {
            self.remove(*sk);
        }
        idle.len()
    }

    /// Forgets the socket now.
    pub fn forget(&mut self, sk: u64) {
        self.remove(sk);
    }

    /// The socket reached CLOSE: error reports still to come (a reset; timeouts on
    /// 6.10+ are reported after the state change) find it by its flow for
    /// `CLOSED_KEEP_NS`; any other event at its address is a new socket.
    pub fn close(&mut self, sk: u64, ts_ns: u64) {
        if let Some(e) = self.by_sk.get_mut(&sk) {
            e.closed_at = Some(ts_ns);
            self.closed.push_back((sk, ts_ns));
        }
        // Bounded like the table: a close storm forgets the oldest at once.
        while self.closed.len() > self.max {
            if let Some((old, at)) = self.closed.pop_front()
                && self
                    .by_sk
                    .get(&old)
                    .is_some_and(|e| e.closed_at == Some(at))
            {
                self.remove(old);
            }
        }
    }

    /// A closed socket at `sk` whose flow is not `flow`: the address was reused by a
    /// new socket. An event with the closed socket's own flow is late news of it (a
    /// writer blocked in send() hears of the timeout after the state went CLOSE; the
    /// kernel cannot reuse the address while that writer's fd holds the socket).
    pub fn reused(&self, sk: u64, flow: Option<&agent_common::event::Flow>) -> bool {
        if !self.is_closed(sk) {
            return false;
        }
        let same = |e: &Entry| {
            flow.is_some_and(|f| f.family != 0 && e.flow_key() == Some(FlowKey::from(f)))
        };
        !self.by_sk.get(&sk).map(|e| &**e).is_some_and(same)
    }

    pub fn is_closed(&self, sk: u64) -> bool {
        // Every closed socket is in `closed` (until forgotten): most of the time
        // none is, and the lookup is skipped.
        !self.closed.is_empty() && self.by_sk.get(&sk).is_some_and(|e| e.closed_at.is_some())
    }

    /// Forgets sockets closed more than `CLOSED_KEEP_NS` before `now_ns`.
    pub fn forget_closed(&mut self, now_ns: u64) {
        while let Some(&(sk, at)) = self.closed.front() {
            if now_ns.saturating_sub(at) <= CLOSED_KEEP_NS {
                break;
            }
            self.closed.pop_front();
            // Only if it is still that closed socket (not forgotten and reused).
            if self.by_sk.get(&sk).is_some_and(|e| e.closed_at == Some(at)) {
                self.remove(sk);
            }
        }
    }

    pub fn len(&self) -> usize {
        self.by_sk.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_sk.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_socket_same_id_new_after_forget() {
        let mut t = SocketTable::new(8);
        let a = t.id_for(0xa);
        assert_eq!(t.id_for(0xa), a);
        let b = t.id_for(0xb);
        assert_ne!(a, b);
        t.forget(0xa);
        assert_ne!(t.id_for(0xa), a);
    }

    #[test]
    fn closed_socket_hears_late_news_of_its_own_flow_only() {
        let mut t = SocketTable::new(8);
        let flow = |sport| Flow {
            sport,
            dport: 80,
            family: 2,
            ..Flow::default()
        };
        t.learn(0xa, &flow(1000), &Owner::default());
        assert!(!t.reused(0xa, Some(&flow(2000))), "open: never reused");
        t.close(0xa, 1);
        // A send that failed after the close (a writer blocked in send()).
        assert!(!t.reused(0xa, Some(&flow(1000))));
        // Another flow, or none: a new socket at the old address.
        assert!(t.reused(0xa, Some(&flow(2000))));
        assert!(t.reused(0xa, None));
        assert!(t.reused(0xa, Some(&Flow::default())));
    }

    #[test]
    fn bounded_with_flows() {
        let mut t = SocketTable::new(4);
        for sk in 0..100u64 {
            let flow = Flow {
                sport: sk as u16,
                family: 2,
                ..Flow::default()
            };
            t.learn(sk, &flow, &Owner::default());
            assert!(t.len() <= 4);
            assert!(t.by_flow.len() <= 4);
        }
        assert_eq!(t.evicted, 96);
    }

    #[test]
    fn finds_by_flow_and_keeps_owner() {
        let mut t = SocketTable::new(8);
        let flow = Flow {
            sport: 1,
            dport: 2,
            family: 2,
            protocol: 6,
            ..Flow::default()
        };
        let owner = Owner {
            pid: 7,
            ..Owner::default()
        };
        let (id, _) = t.learn(0xa, &flow, &owner);
        // A softirq event (no owner) keeps the one learned from process context.
        let (_, best) = t.learn(0xa, &flow, &Owner::default());
        assert_eq!(best.unwrap().pid, 7);
        assert_eq!(t.by_flow(&flow).map(|(_, id, _)| id), Some(id));
        t.forget(0xa);
        assert!(t.by_flow(&flow).is_none());
    }

    #[test]
    fn churn_keeps_order_bounded() {
        let mut t = SocketTable::new(4);
        for sk in 0..10_000 {
            t.id_for(sk);
            t.forget(sk);
            assert!(t.order.len() <= 8);
        }
        assert_eq!(t.evicted, 0);
    }
}
