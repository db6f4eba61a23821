//! The engine: events in, lines out. Pure and synchronous: it never touches the
//! system and takes its time from the events, so the same code serves live runs,
//! replays (same events, same verdicts, same order) and property tests.

pub mod path;
pub mod ports;
pub mod sockets;
pub mod timeline;
pub mod udp;
pub mod verdict;

use agent_common::event::{Owner, icmp_source};

use crate::{decode::Event, net};
pub use path::PathLine;
pub use sockets::SocketTable;
pub use verdict::Verdict;

/// TCP_CLOSE
const TCP_CLOSE: u8 = 7;

/// What the engine hands to the output stage for one event.
#[derive(Clone, Debug, PartialEq)]
pub struct Annotated {
    /// Small, stable per-socket id (see `SocketTable`); None when the event names
    /// no socket we know (an ICMP message quoting a flow we never saw).
    pub sock: Option<u64>,
    /// The process behind the socket, when known.
    pub owner: Option<Owner>,
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
    pub ports: ports::Ports,
    pub udp: udp::Udp,
    limits: Limits,
    pub evicted_idle: u64,
    last_tick: u64,
}

impl Engine {
    pub fn new(limits: Limits) -> Self {
        Self {
            sockets: SocketTable::new(limits.max_sockets),
            paths: path::Paths::new(limits.max_paths),
            ports: ports::Ports::default(),
            udp: udp::Udp::default(),
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

    pub fn on_event(&mut self, event: Event) -> Vec<Emit> {
        let mut verdicts = Vec::new();
        let ts = event.header().ts_ns;
        let t = &mut self.sockets;
        // A flow with no peer port is a socket not connected (listening) or already
        // torn down (events trailing a close): nothing to judge, and no identity to
        // resurrect after `forget`.
        let unconnected = |f: &agent_common::event::Flow| f.dport == 0;
        let (sock, owner, sk) = match &event {
            Event::Retransmit(e) if unconnected(&e.flow) => (None, None, None),
            Event::SocketState(e) if unconnected(&e.flow) => (None, None, None),
            Event::CongState(e) if unconnected(&e.flow) => (None, None, None),
            Event::SocketError(e) if unconnected(&e.flow) => (None, None, None),
            // Sockets that never connected: judged per destination, not tracked.
            Event::SendError(e) if crate::decode::is_connect_or_bind(e) => {
                (None, Some(e.owner), None)
            }
            Event::UdpSend(e) => {
                let (id, o) = t.learn(e.header.sk, &e.flow, &e.owner);
                (Some(id), o, Some(e.header.sk))
            }
            Event::Retransmit(e) => {
                let (id, o) = t.learn(e.header.sk, &e.flow, &e.owner);
                (Some(id), o, Some(e.header.sk))
            }
            Event::SendError(e) if e.header.sk != 0 => {
                let (id, o) = if e.flow.family != 0 {
                    t.learn(e.header.sk, &e.flow, &e.owner)
                } else {
                    let en = t.entry(e.header.sk);
                    (en.id, Some(e.owner))
                };
                (Some(id), o, Some(e.header.sk))
            }
            Event::SendError(e) => (None, Some(e.owner), None),
            Event::SocketState(e) => {
                let (id, o) = t.learn(e.header.sk, &e.flow, &e.owner);
                (Some(id), o, Some(e.header.sk))
            }
            Event::CongState(e) => {
                let (id, o) = t.learn(e.header.sk, &e.flow, &Owner::default());
                (Some(id), o, Some(e.header.sk))
            }
            Event::SocketError(e) => match t.by_flow(&e.flow) {
                Some((sk, id, o)) => (Some(id), o, Some(sk)),
                None => (None, None, None),
            },
            Event::IcmpTooBig(e) if e.source == icmp_source::RECEIVED => {
                match t.by_flow(&e.quoted) {
                    Some((sk, id, o)) => (Some(id), o, Some(sk)),
                    None => (None, None, None),
                }
            }
            Event::IcmpTooBig(_) => (None, None, None),
        };
        let owner = owner.filter(|o| o.pid != 0);
        let ctx = verdict::Ctx { sock, owner };

        if let Some(sk) = sk
            && let Some(entry) = self.sockets.get_mut(sk)
        {
            let tl = &mut entry.timeline;
            let netns = match &event {
                Event::Retransmit(e) => e.netns,
                Event::SendError(e) => e.netns,
                Event::SocketState(e) => e.netns,
                _ => 0,
            };
            if netns != 0 {
                tl.netns = netns;
            }
            match &event {
                Event::Retransmit(e) => verdict::on_retransmit(tl, &ctx, e, &mut verdicts),
                Event::CongState(e) => verdict::on_cong_state(tl, &ctx, e, &mut verdicts),
                Event::SendError(e) => verdict::on_send_error(tl, &ctx, e, &mut verdicts),
                Event::SocketError(e) => verdict::on_socket_error(tl, &ctx, e, &mut verdicts),
                Event::IcmpTooBig(e) => {
                    let router = net::ip(e.quoted.family, &e.router).to_string();
                    verdict::on_too_big(tl, &ctx, e, router, &mut verdicts)
                }
                Event::SocketState(e) if e.new_state == TCP_CLOSE => {
                    verdict::on_close(tl, &ctx, ts, &mut verdicts)
                }
                Event::SocketState(_) | Event::UdpSend(_) => {}
            }
            tl.last_ns = ts;
        } else {
            match &event {
                // UDP has no sequence window: a too-big for an unknown UDP flow cannot
                // be told from a real one, so it is evidence (below), not forgery.
                Event::IcmpTooBig(e) if e.quoted.protocol == agent_common::event::IPPROTO_UDP => {}
                Event::SendError(e) if crate::decode::is_connect_or_bind(e) => {}
                Event::IcmpTooBig(e) if e.source == icmp_source::RECEIVED => {
                    let router = net::ip(e.quoted.family, &e.router).to_string();
                    verdicts.push(verdict::spoofed(
                        &ctx,
                        e,
                        &router,
                        "medium",
                        "no tracked socket has the quoted flow".into(),
                    ));
                }
                Event::SendError(e) => {
                    let mut scratch = timeline::Timeline {
                        flow: e.flow,
                        ..Default::default()
                    };
                    verdict::on_send_error(&mut scratch, &ctx, e, &mut verdicts);
                }
                _ => {}
            }
        }
        // Per destination and per UDP flow.
        let more = match &event {
            Event::SendError(e) if crate::decode::is_connect_or_bind(e) => {
                self.ports.on_connect_error(&ctx, e)
            }
            Event::SendError(e) if e.flow.protocol == agent_common::event::IPPROTO_UDP => {
                self.udp.on_send_error(&ctx, e)
            }
            Event::UdpSend(e) => self.udp.on_send(&ctx, e),
            Event::IcmpTooBig(e) if e.quoted.protocol == agent_common::event::IPPROTO_UDP => {
                self.udp.on_too_big(&ctx, e)
            }
            _ => None,
        };
        verdicts.extend(more);
        if let Event::SocketState(e) = &event
            && e.new_state == TCP_CLOSE
            && sock.is_some()
        {
            self.sockets.forget(e.header.sk);
        }

        let mut out = Vec::with_capacity(1 + verdicts.len());
        out.push(Emit::Event(Annotated { sock, owner, event }));
        for v in verdicts {
            let path = match (v.verdict, v.sock) {
                ("pmtud_blackhole", Some(id)) => {
                    self.paths
                        .add(v.ts_ns, v.verdict, &v.flow, id, v.evidence["mss"].as_u64())
                }
                ("path_down", Some(id)) => self.paths.add(v.ts_ns, v.verdict, &v.flow, id, None),
                _ => None,
            };
            out.push(Emit::Verdict(v));
            if let Some(p) = path {
                out.push(Emit::Path(p));
            }
        }
        out
    }
}
