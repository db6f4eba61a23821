//! Datagrams dropped at a full socket receive queue (`udp_queue_overflow`): the
//! daemon behind a UDP socket (IKE, DNS, syslog, QUIC, RADIUS) does not read as
//! fast as datagrams arrive, the queue (`SO_RCVBUF`) fills, and the kernel drops
//! the rest, counting them only host-wide (`Udp: RcvbufErrors`).
//!
//! The kernel keeps cumulative per-socket counts and emits them at a bounded rate
//! (`udp_queue_drop`); the agent adds the latest state from the kernel's map every
//! second and at the end of the run. The rule cuts the counts into episodes: an
//! episode opens with the first drop after a quiet second and ends at a record
//! showing a second without drops (or the run's end). Medium when the episode
//! opens (the socket is dropping now), high when it ends, with the exact count.

use std::collections::{HashMap, VecDeque};

use agent_common::event::{UDP_QUEUE_PEERS, UdpPeer, UdpQueueDrop, udpq_flags};

use super::{
    Confidence, Ctx, Reported, Verdict,
    evidence::{Evidence, PeerDrops, UdpQueueOverflow},
};
use crate::net;

/// Sockets remembered (oldest forgotten first).
const MAX_SOCKETS: usize = 4096;
/// A second without a drop ends an episode.
pub const QUIET_NS: u64 = 1_000_000_000;

/// Cumulative counts at some point (kernel counters never go down).
#[derive(Clone, Copy, Default, Debug)]
struct Counts {
    drops: u64,
    mem_drops: u64,
    suppressed: u64,
    limit_hits: u32,
    other_peers: u64,
    peers: [UdpPeer; UDP_QUEUE_PEERS],
}

impl Counts {
    fn of(e: &UdpQueueDrop) -> Self {
        Counts {
            drops: e.drops,
            mem_drops: e.mem_drops,
            suppressed: e.suppressed,
            limit_hits: e.send_limit.wrapping_add(e.recv_limit),
            other_peers: e.other_peer_drops,
            peers: e.peers,
        }
    }

    fn dropped(&self) -> u64 {
        self.drops.saturating_add(self.mem_drops)
    }
}

struct Episode {
    base: Counts,
    first_ns: u64,
    reported: Option<Confidence>,
}

#[derive(Default)]
struct SockDrops {
    /// The counts of the last record (the base of the next episode).
    last: Counts,
    /// Its time: a record older than that (a kernel record the agent's read of the
    /// map overtook) brings nothing new.
    last_ts: u64,
    episode: Option<Episode>,
}

#[derive(Default)]
pub struct UdpQueue {
    socks: HashMap<u64, SockDrops>,
    order: VecDeque<u64>,
}

impl UdpQueue {
    pub fn len(&self) -> usize {
        self.socks.len()
    }

    pub fn is_empty(&self) -> bool {
        self.socks.is_empty()
    }

    fn sock(&mut self, sk: u64) -> &mut SockDrops {
        if !self.socks.contains_key(&sk) {
            if self.socks.len() >= MAX_SOCKETS
                && let Some(old) = self.order.pop_front()
            {
                self.socks.remove(&old);
            }
            self.order.push_back(sk);
        }
        self.socks.entry(sk).or_default()
    }

    pub fn on_record(&mut self, c: &Ctx, e: &UdpQueueDrop) -> Option<Verdict> {
        let now = Counts::of(e);
        let s = self.sock(e.header.sk);
        if e.header.ts_ns < s.last_ts {
            return None;
        }
        s.last_ts = e.header.ts_ns;
        // The kernel's counters only grow, unless its LRU map dropped the socket's
        // entry and began again from zero: count from zero then.
        if now.drops < s.last.drops || now.mem_drops < s.last.mem_drops {
            s.last = Counts::default();
            if let Some(ep) = s.episode.as_mut() {
                ep.base = Counts::default();
            }
        }
        let grew = now.dropped() > s.last.dropped();
        if grew && s.episode.is_none() {
            s.episode = Some(Episode {
                base: s.last,
                // The record that opens an episode is normally the kernel's, at
                // the first drop itself.
                first_ns: if s.last.dropped() == 0 && e.first_ns != 0 {
                    e.first_ns
                } else {
                    e.last_ns
                },
                reported: None,
            });
        }
        s.last = now;
        let ep = s.episode.as_mut()?;
        let ended = e.flags & udpq_flags::FINAL != 0
            || e.header.ts_ns.saturating_sub(e.last_ns) >= QUIET_NS;
        let confidence = if ended {
            Confidence::High
        } else {
            Confidence::Medium
        };
        let fresh = ep.reported.raise(confidence);
        let verdict = fresh.then(|| verdict(c, e, ep, &now, ended));
        if ended {
            s.episode = None;
        }
        verdict
    }
}

/// Seconds with microsecond precision.
fn seconds(ns: u64) -> f64 {
    (ns as f64 / 1e3).round() / 1e6
}

fn verdict(c: &Ctx, e: &UdpQueueDrop, ep: &Episode, now: &Counts, ended: bool) -> Verdict {
    let mut top: Vec<PeerDrops> = now
        .peers
        .iter()
        .filter(|p| p.family != 0)
        .map(|p| {
            let before = ep
                .base
                .peers
                .iter()
                .find(|b| b.family == p.family && b.addr == p.addr && b.port == p.port)
                .map_or(0, |b| b.drops);
            PeerDrops {
                ip: net::ip(p.family, &p.addr),
                port: p.port,
                dropped: p.drops.saturating_sub(before),
            }
        })
        .filter(|p| p.dropped > 0)
        .collect();
    top.sort_by_key(|p| std::cmp::Reverse(p.dropped));
    let known = |ok: bool, v: i32| (ok && v >= 0).then_some(v as u32);
    let has_sock = e.flags & udpq_flags::NO_SOCK == 0;
    Verdict {
        ts_ns: e.header.ts_ns,
        sock: c.sock,
        flow: e.flow,
        owner: c.owner,
        confidence: if ended {
            Confidence::High
        } else {
            Confidence::Medium
        },
        evidence: Evidence::UdpQueueOverflow(UdpQueueOverflow {
            dropped: now.drops.saturating_sub(ep.base.drops),
            memory_drops: now.mem_drops.saturating_sub(ep.base.mem_drops),
            duration_s: seconds(e.last_ns.saturating_sub(ep.first_ns)),
            ended,
            rcvbuf: known(has_sock, e.rcvbuf),
            queued: known(has_sock, e.queued),
            socket_drops: (e.flags & udpq_flags::SK_DROPS != 0).then_some(e.sk_drops),
            last_datagram_bytes: (e.last_len != 0).then_some(e.last_len),
            top_peers: top,
            other_peers_dropped: now.other_peers.saturating_sub(ep.base.other_peers),
            memory_limit_hits: now.limit_hits.saturating_sub(ep.base.limit_hits),
            records_suppressed: now.suppressed.saturating_sub(ep.base.suppressed),
            service: net::service(&e.flow),
        }),
        netns: e.netns,
    }
}

#[cfg(test)]
mod tests {
    use agent_common::event::{AF_INET, Flow, Header, IPPROTO_UDP, Kind};

    use super::*;

    const SK: u64 = 0xffff_8880_0000_1000;
    const S: u64 = 1_000_000_000;

    fn record(ts: u64, drops: u64, last_ns: u64, flags: u32) -> UdpQueueDrop {
        let mut e = UdpQueueDrop {
            header: Header {
                kind: Kind::UdpQueueDrop as u16,
                len: size_of::<UdpQueueDrop>() as u16,
                ts_ns: ts,
                sk: SK,
                ..Header::default()
            },
            flow: Flow {
                family: AF_INET,
                protocol: IPPROTO_UDP,
                sport: 500,
                ..Flow::default()
            },
            drops,
            first_ns: 10 * S,
            last_ns,
            rcvbuf: 4608,
            queued: 4352,
            sk_drops: drops as u32,
            flags: flags | udpq_flags::SK_DROPS | udpq_flags::HAS_PEERS,
            ..UdpQueueDrop::default()
        };
        e.flow.saddr[..4].copy_from_slice(&[198, 18, 140, 2]);
        e.peers[0] = UdpPeer {
            addr: [198, 18, 141, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
            port: 40000,
            family: AF_INET,
            drops,
            ..UdpPeer::default()
        };
        e
    }

    fn ctx() -> Ctx {
        Ctx {
            sock: Some(1),
            owner: None,
        }
    }

    fn overflow(v: &Verdict) -> &UdpQueueOverflow {
        match &v.evidence {
            Evidence::UdpQueueOverflow(o) => o,
            other => panic!("not udp_queue_overflow: {other:?}"),
        }
    }

    #[test]
    fn medium_at_the_first_drop_high_with_the_exact_count_when_quiet() {
        let mut q = UdpQueue::default();
        let v = q.on_record(&ctx(), &record(10 * S, 1, 10 * S, 0)).unwrap();
        assert_eq!(v.confidence, Confidence::Medium);
        assert_eq!(overflow(&v).dropped, 1);
        assert_eq!(overflow(&v).service, Some("ike"));
        // The agent's read of the map while drops go on: no news.
        let mut e = record(10 * S + S / 2, 600, 10 * S + S / 3, udpq_flags::AGENT);
        e.suppressed = 40;
        assert!(q.on_record(&ctx(), &e).is_none());
        // A second later, quiet: the episode ends with the final count.
        let mut e = record(11 * S + S / 2, 737, 10 * S + S / 3, udpq_flags::AGENT);
        e.suppressed = 41;
        let v = q.on_record(&ctx(), &e).unwrap();
        assert_eq!(v.confidence, Confidence::High);
        let o = overflow(&v);
        assert_eq!(o.dropped, 737);
        assert!(o.ended);
        assert_eq!(o.records_suppressed, 41);
        assert_eq!(o.rcvbuf, Some(4608));
        assert_eq!(o.socket_drops, Some(737));
        assert_eq!(o.top_peers.len(), 1);
        assert_eq!(o.top_peers[0].dropped, 737);
        assert_eq!(o.top_peers[0].ip.to_string(), "198.18.141.2");
        assert!((o.duration_s - 0.333).abs() < 0.001, "{}", o.duration_s);
        // Nothing new: nothing said.
        assert!(
            q.on_record(
                &ctx(),
                &record(13 * S, 737, 10 * S + S / 3, udpq_flags::FINAL)
            )
            .is_none()
        );
    }

    #[test]
    fn a_second_episode_counts_from_where_the_first_ended() {
        let mut q = UdpQueue::default();
        q.on_record(&ctx(), &record(10 * S, 1, 10 * S, 0)).unwrap();
        q.on_record(&ctx(), &record(12 * S, 50, 10 * S, udpq_flags::AGENT))
            .unwrap();
        let v = q.on_record(&ctx(), &record(20 * S, 51, 20 * S, 0)).unwrap();
        assert_eq!(v.confidence, Confidence::Medium);
        assert_eq!(overflow(&v).dropped, 1);
        let v = q
            .on_record(&ctx(), &record(21 * S, 60, 20 * S, udpq_flags::FINAL))
            .unwrap();
        assert_eq!(v.confidence, Confidence::High);
        assert_eq!(overflow(&v).dropped, 10);
        assert_eq!(overflow(&v).top_peers[0].dropped, 10);
        assert!(overflow(&v).duration_s.abs() < 1e-9);
    }

    #[test]
    fn the_end_of_the_run_ends_the_episode_and_limit_hits_alone_say_nothing() {
        let mut q = UdpQueue::default();
        let mut e = record(10 * S, 0, 0, 0);
        e.send_limit = 3;
        e.peers = Default::default();
        assert!(q.on_record(&ctx(), &e).is_none());
        q.on_record(&ctx(), &record(11 * S, 2, 11 * S, 0)).unwrap();
        let v = q
            .on_record(
                &ctx(),
                &record(11 * S + 1, 3, 11 * S + 1, udpq_flags::FINAL),
            )
            .unwrap();
        assert_eq!(v.confidence, Confidence::High);
        assert_eq!(overflow(&v).dropped, 3);
    }

    #[test]
    fn counters_that_start_again_from_zero_are_counted_from_zero() {
        let mut q = UdpQueue::default();
        q.on_record(&ctx(), &record(10 * S, 100, 10 * S, 0))
            .unwrap();
        q.on_record(&ctx(), &record(12 * S, 100, 10 * S, udpq_flags::AGENT))
            .unwrap();
        // The kernel's LRU map forgot the socket; its new entry counts from 1.
        let v = q.on_record(&ctx(), &record(20 * S, 1, 20 * S, 0)).unwrap();
        assert_eq!(overflow(&v).dropped, 1);
    }

    #[test]
    fn a_kernel_record_overtaken_by_the_agents_read_brings_nothing() {
        let mut q = UdpQueue::default();
        let v = q
            .on_record(
                &ctx(),
                &record(10 * S + 5, 394, 10 * S + 4, udpq_flags::AGENT),
            )
            .unwrap();
        assert_eq!(overflow(&v).dropped, 394);
        assert!(q.on_record(&ctx(), &record(10 * S, 1, 10 * S, 0)).is_none());
        let v = q
            .on_record(&ctx(), &record(12 * S, 996, 10 * S + 9, udpq_flags::AGENT))
            .unwrap();
        assert_eq!(overflow(&v).dropped, 996);
    }

    #[test]
    fn memory_drops_count_apart_and_unknown_sizes_stay_unknown() {
        let mut q = UdpQueue::default();
        let mut e = record(10 * S, 0, 10 * S, udpq_flags::NO_SOCK);
        e.mem_drops = 4;
        e.rcvbuf = -1;
        e.queued = -1;
        let v = q.on_record(&ctx(), &e).unwrap();
        let o = overflow(&v);
        assert_eq!((o.dropped, o.memory_drops), (0, 4));
        assert_eq!((o.rcvbuf, o.queued), (None, None));
    }
}
