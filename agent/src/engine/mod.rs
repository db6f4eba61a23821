//! The engine: events in, lines out. Pure and synchronous: it never touches the
//! system, so the same code serves live runs, replays and tests.

pub mod sockets;

use agent_common::event::Owner;

use crate::decode::Event;

pub use sockets::SocketTable;

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

#[derive(Clone, Copy, Debug)]
pub struct Limits {
    pub max_sockets: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_sockets: 65_536,
        }
    }
}

pub struct Engine {
    pub sockets: SocketTable,
}

impl Engine {
    pub fn new(limits: Limits) -> Self {
        Self {
            sockets: SocketTable::new(limits.max_sockets),
        }
    }

    pub fn on_event(&mut self, event: Event) -> Annotated {
        let t = &mut self.sockets;
        let (sock, owner) = match &event {
            Event::Retransmit(e) => {
                let (id, o) = t.learn(e.header.sk, &e.flow, &e.owner);
                (Some(id), o)
            }
            Event::SendError(e) if e.header.sk != 0 => {
                let (id, o) = t.learn(e.header.sk, &e.flow, &e.owner);
                (Some(id), o)
            }
            Event::SendError(e) => (None, Some(e.owner)),
            Event::SocketState(e) => {
                let (id, o) = t.learn(e.header.sk, &e.flow, &e.owner);
                if e.new_state == TCP_CLOSE {
                    t.forget(e.header.sk);
                }
                (Some(id), o)
            }
            Event::CongState(e) => {
                let (id, o) = t.learn(e.header.sk, &e.flow, &Owner::default());
                (Some(id), o)
            }
            Event::SocketError(e) => match t.by_flow(&e.flow) {
                Some((_, id, o)) => (Some(id), o),
                None => (None, None),
            },
            Event::IcmpTooBig(e) => match t.by_flow(&e.quoted) {
                Some((_, id, o)) => (Some(id), o),
                None => (None, None),
            },
        };
        Annotated {
            sock,
            owner: owner.filter(|o| o.pid != 0),
            event,
        }
    }
}
