//! The engine: events in, lines out. Pure and synchronous: it never touches the
//! system, so the same code serves live runs, replays and tests.

pub mod sockets;

use crate::decode::Event;

pub use sockets::SocketTable;

/// What the engine hands to the output stage for one event.
#[derive(Clone, Debug, PartialEq)]
pub struct Annotated {
    /// Small, stable per-socket id (see `SocketTable`).
    pub sock: u64,
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
        let sock = self.sockets.id_for(event.header().sk);
        Annotated { sock, event }
    }
}
