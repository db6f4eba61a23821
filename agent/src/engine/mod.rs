//! The engine: events in, lines out. Pure and synchronous: it never touches the
//! system and takes its time from the events, so the same code serves live runs,
//! replays (same events, same verdicts, same order) and property tests.

pub mod path;
pub mod sockets;
pub mod timeline;
pub mod verdict;

use agent_common::{
    event::{Header, IPPROTO_TCP, IPPROTO_UDP, Owner, SockLookup, icmp_source, lookup_answer},
    kernel::tcp_state,
};

use crate::{decode::Event, net};
pub use path::PathLine;
pub use sockets::SocketTable;
pub use verdict::{Ports, Udp, UdpQueue, Verdict};

/// What the engine hands to the output stage for one event.
#[derive(Clone, Debug, PartialEq)]
pub struct Annotated {
    /// Small, stable per-socket id (see `SocketTable`); None when the event names
    /// no socket we know (an ICMP message quoting a flow we never saw).
    pub sock: Option<u64>,
    /// The process behind the socket, when known.
    pub owner: Option<Owner>,
    /// The network namespace: the record's, else the socket's (error reports and
    /// congestion changes carry none).
    pub netns: Option<u32>,
    pub event: Event,
}

/// One output line's worth.
#[derive(Clone, Debug, PartialEq)]
pub enum Emit {
    Event(Annotated),
    Verdict(Verdict),
    Path(PathLine),
}

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_sockets: usize,
    /// Forget a socket after this long without events.
    pub idle_ns: u64,
    /// Most (verdict, destination prefix) groups remembered.
    pub max_paths: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_sockets: 65_536,
            idle_ns: 300_000_000_000,
            max_paths: 4096,
        }
    }
}

pub struct Engine {
    pub sockets: SocketTable,
    pub paths: path::Paths,
    pub ports: Ports,
    pub udp: Udp,
    pub udp_queue: UdpQueue,
    /// The kernel's answer to the last `question`, for the event that follows it.
    lookup: Option<SockLookup>,
    limits: Limits,
    pub evicted_idle: u64,
    last_tick: u64,
}

impl Engine {
    pub fn new(limits: Limits) -> Self {
        Self {
            sockets: SocketTable::new(limits.max_sockets),
            paths: path::Paths::new(limits.max_paths),
            ports: Ports::default(),
            udp: Udp::default(),
            udp_queue: UdpQueue::default(),
            lookup: None,
            limits,
            evicted_idle: 0,
            last_tick: 0,
        }
    }

    /// Time passes (monotonic ns): forget idle sockets.
    pub fn tick(&mut self, now_ns: u64) {
        if now_ns.saturating_sub(self.last_tick) < 1_000_000_000 {
            return;
        }
        self.last_tick = now_ns;
        let cutoff = now_ns.saturating_sub(self.limits.idle_ns);
        self.evicted_idle += self.sockets.evict_idle(cutoff) as u64;
    }

    /// The question to put to the kernel before this event can be judged, if any: a
    /// too-big message quoting a TCP flow no tracked socket has (forged, or for a
    /// connection older than the agent?). The live run answers it (`sysinfo`) and
    /// feeds the answer in as a `SockLookup` record just before the event.
    pub fn question(&self, event: &Event) -> Option<SockLookup> {
        let Event::IcmpTooBig(e) = event else {
            return None;
        };
        if e.source != icmp_source::RECEIVED
            || e.quoted.protocol != IPPROTO_TCP
            || self.sockets.by_flow(&e.quoted).is_some()
        {
            return None;
        }
        Some(SockLookup {
            header: Header::new::<SockLookup>(0, e.header.ts_ns, 0),
            flow: e.quoted,
            netns: e.netns,
            answer: lookup_answer::UNKNOWN,
            _reserved: [0; 3],
        })
    }

    pub fn on_event(&mut self, event: Event) -> Vec<Emit> {
        let mut out = Vec::new();
        self.on_event_into(event, &mut out);
        out
    }

    /// [`Engine::on_event`] appending to `out`: the pipeline reuses one Vec rather
    /// than allocating one per event.
    pub fn on_event_into(&mut self, event: Event, out: &mut Vec<Emit>) {
        let mut verdicts = Vec::new();
        let ts = event.header().ts_ns;
        if let Event::SockLookup(l) = event {
            self.lookup = Some(l);
            return;
        }
        let lookup = self.lookup.take();
        self.sockets.forget_closed(ts);
        let t = &mut self.sockets;
        // An event other than a late report for a closed socket (an error report, a
        // too-big message, or anything with its own flow) is a new socket that
        // reuses its address.
        if !matches!(event, Event::SocketError(_) | Event::IcmpTooBig(_))
            && event.header().sk != 0
            && t.reused(
                event.header().sk,
                // A state change after CLOSE is always a new socket's.
                event
                    .flow()
                    .filter(|_| !matches!(event, Event::SocketState(_))),
            )
        {
            t.forget(event.header().sk);
        }
        // A flow with no peer port is a socket not connected (listening) or already
        // torn down (events trailing a close): nothing to judge, and no identity to
        // resurrect after `forget`.
        let unconnected = |f: &agent_common::event::Flow| f.dport == 0;
        // The socket's entry comes out of the match that learns it: a second
        // lookup for the timeline was a hash and a probe per event.
        let (sock, owner, sk, entry) = match &event {
            Event::Retransmit(e) if unconnected(&e.flow) => (None, None, None, None),
            Event::SocketState(e) if unconnected(&e.flow) => (None, None, None, None),
            Event::CongState(e) if unconnected(&e.flow) => (None, None, None, None),
            Event::SocketError(e) if unconnected(&e.flow) => (None, None, None, None),
            // Sockets that never connected: judged per destination, not tracked.
            Event::SendError(e) if crate::decode::is_connect_or_bind(e) => {
                (None, Some(e.owner), None, None)
            }
            Event::UdpSend(e) => {
                let en = t.learn_entry(e.header.sk, &e.flow, &e.owner);
                (Some(en.id), en.owner, Some(e.header.sk), Some(en))
            }
            Event::UdpQueueDrop(e) => {
                let en = t.learn_entry(e.header.sk, &e.flow, &e.owner);
                (Some(en.id), en.owner, Some(e.header.sk), Some(en))
            }
            Event::Retransmit(e) => {
                let en = t.learn_entry(e.header.sk, &e.flow, &e.owner);
                (Some(en.id), en.owner, Some(e.header.sk), Some(en))
            }
            Event::SendError(e) if e.header.sk != 0 => {
                let (en, o) = if e.flow.family != 0 {
                    let en = t.learn_entry(e.header.sk, &e.flow, &e.owner);
                    let o = en.owner;
                    (en, o)
                } else {
                    (t.entry(e.header.sk), Some(e.owner))
                };
                (Some(en.id), o, Some(e.header.sk), Some(en))
            }
            Event::SendError(e) => (None, Some(e.owner), None, None),
            Event::SocketState(e) => {
                let en = t.learn_entry(e.header.sk, &e.flow, &e.owner);
                (Some(en.id), en.owner, Some(e.header.sk), Some(en))
            }
            Event::CongState(e) => {
                let en = t.learn_entry(e.header.sk, &e.flow, &Owner::default());
                (Some(en.id), en.owner, Some(e.header.sk), Some(en))
            }
            Event::SocketError(e) => match t.by_flow(&e.flow) {
                Some((sk, id, o)) => (Some(id), o, Some(sk), t.get_mut(sk)),
                None => (None, None, None, None),
            },
            Event::IcmpTooBig(e) if e.source == icmp_source::RECEIVED => {
                match t.by_flow(&e.quoted) {
                    Some((sk, id, o)) => (Some(id), o, Some(sk), t.get_mut(sk)),
                    None => (None, None, None, None),
                }
            }
            Event::IcmpTooBig(_)
            | Event::SockLookup(_)
            | Event::LossReport(_)
            | Event::ClockStep(_) => (None, None, None, None),
        };
        let owner = owner.filter(|o| o.pid != 0);
        let ctx = verdict::Ctx { sock, owner };

        if let Some(entry) = entry {
            let tl = &mut entry.timeline;
            if let Some(netns) = event.netns() {
                tl.netns = netns;
            }
            match &event {
                Event::Retransmit(e) => verdict::on_retransmit(tl, &ctx, e, &mut verdicts),
                Event::CongState(e) => verdict::on_cong_state(tl, &ctx, e, &mut verdicts),
                Event::SendError(e) => {
                    verdict::send_error::on_send_error(tl, &ctx, e, &mut verdicts)
                }
                Event::SocketError(e) => verdict::on_socket_error(tl, &ctx, e, &mut verdicts),
                Event::IcmpTooBig(e) if e.quoted.protocol == IPPROTO_TCP => {
                    verdict::pmtud::on_too_big(tl, e, net::ip(e.quoted.family, &e.router))
                }
                Event::SocketState(e) if e.new_state == tcp_state::CLOSE => {
                    verdict::ending::on_close(tl, &ctx, ts, &mut verdicts)
                }
                _ => {}
            }
            tl.last_ns = ts;
        } else {
            match &event {
                // Only a TCP flow can be checked against what the kernel has: a
                // too-big quoting ICMP (`ping -M do`), UDP to an unconnected socket,
                // ESP or GRE is no forgery. A TCP one is forged only when the kernel
                // says no socket has the flow.
                Event::IcmpTooBig(e)
                    if e.source == icmp_source::RECEIVED
                        && e.quoted.protocol == IPPROTO_TCP
                        && lookup.is_some_and(|l| {
                            l.answer == lookup_answer::ABSENT
                                && l.flow == e.quoted
                                && l.netns == e.netns
                        }) =>
                {
                    let router = net::ip(e.quoted.family, &e.router);
                    verdicts.push(verdict::pmtud::forged_for_no_socket(&ctx, e, router));
                }
                Event::SendError(e) if !crate::decode::is_connect_or_bind(e) => {
                    let mut scratch = timeline::Timeline {
                        flow: e.flow,
                        ..Default::default()
                    };
                    verdict::send_error::on_send_error(&mut scratch, &ctx, e, &mut verdicts);
                }
                _ => {}
            }
        }
        // Per destination and per UDP flow.
        let more = match &event {
            Event::SendError(e) if crate::decode::is_connect_or_bind(e) => {
                self.ports.on_connect_error(&ctx, e)
            }
            Event::SendError(e) if e.flow.protocol == IPPROTO_UDP => {
                self.udp.on_send_error(&ctx, e)
            }
            Event::UdpSend(e) => self.udp.on_send(&ctx, e),
            Event::UdpQueueDrop(e) => self.udp_queue.on_record(&ctx, e),
            Event::IcmpTooBig(e) if e.quoted.protocol == IPPROTO_UDP => {
                self.udp.on_too_big(&ctx, e)
            }
            _ => None,
        };
        verdicts.extend(more);
        if let Event::SocketState(e) = &event
            && e.new_state == tcp_state::CLOSE
            && sock.is_some()
        {
            // Kept a moment: error reports come after the CLOSE state change (a
            // reset; timeouts on 6.10+) and must still reach the socket's verdict.
            self.sockets.close(e.header.sk, ts);
        }

        let netns = event.netns().or_else(|| {
            let sk = sk?;
            Some(self.sockets.get_mut(sk)?.timeline.netns).filter(|n| *n != 0)
        });
        out.push(Emit::Event(Annotated {
            sock,
            owner,
            netns,
            event,
        }));
        for v in verdicts {
            let path = match (&v.evidence, v.sock) {
                (verdict::Evidence::PmtudBlackhole(b), Some(id)) => {
                    self.paths.add(v.ts_ns, v.kind(), &v.flow, id, Some(b.mss))
                }
                (verdict::Evidence::PathDown(_), Some(id)) => {
                    self.paths.add(v.ts_ns, v.kind(), &v.flow, id, None)
                }
                _ => None,
            };
            out.push(Emit::Verdict(v));
            if let Some(p) = path {
                out.push(Emit::Path(p));
            }
        }
    }
}
