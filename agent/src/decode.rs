//! Ring-buffer bytes to typed events. Every record is length-checked against its
//! header and its kind's size before a single field is read: a truncated, unknown or
//! mismatched record is a typed error that the caller counts, never a panic.

use agent_common::event::{
    ClockStep, CongState, Flow, Header, IcmpTooBig, Kind, LossReport, Owner, Record, Retransmit,
    SendError, SockLookup, SocketError, SocketState, UdpQueueDrop, UdpSend,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    Retransmit(Retransmit),
    SendError(SendError),
    IcmpTooBig(IcmpTooBig),
    SocketState(SocketState),
    SocketError(SocketError),
    CongState(CongState),
    UdpSend(UdpSend),
    /// Boxed: twice any other record's size, and rare (one per socket per second),
    /// while every event is moved several times on its way to a line.
    UdpQueueDrop(Box<UdpQueueDrop>),
    /// The agent's own records, consumed, never printed: a kernel answer (for the
    /// engine), the kernel's loss counters and a wall-clock step (for the pipeline).
    SockLookup(SockLookup),
    LossReport(LossReport),
    ClockStep(ClockStep),
}

/// `f` applied to the record inside, whatever its type (for what every record has).
macro_rules! each {
    ($e:expr, $r:ident => $body:expr) => {
        match $e {
            Event::Retransmit($r) => $body,
            Event::SendError($r) => $body,
            Event::IcmpTooBig($r) => $body,
            Event::SocketState($r) => $body,
            Event::SocketError($r) => $body,
            Event::CongState($r) => $body,
            Event::UdpSend($r) => $body,
            Event::UdpQueueDrop(boxed) => {
                let $r = &**boxed;
                $body
            }
            Event::SockLookup($r) => $body,
            Event::LossReport($r) => $body,
            Event::ClockStep($r) => $body,
        }
    };
}

impl Event {
    pub fn header(&self) -> &Header {
        each!(self, r => r.header())
    }

    /// The record's bytes, as the kernel (or the agent) wrote them.
    pub fn encode(&self) -> Vec<u8> {
        each!(self, r => encode(r))
    }

    pub fn kind(&self) -> Kind {
        each!(self, r => record_kind(r))
    }

    /// The flow the event is about (for a too-big message: the quoted one).
    pub fn flow(&self) -> Option<&Flow> {
        match self {
            Event::Retransmit(e) => Some(&e.flow),
            Event::SendError(e) => Some(&e.flow),
            Event::IcmpTooBig(e) => Some(&e.quoted),
            Event::SocketState(e) => Some(&e.flow),
            Event::SocketError(e) => Some(&e.flow),
            Event::CongState(e) => Some(&e.flow),
            Event::UdpSend(e) => Some(&e.flow),
            Event::UdpQueueDrop(e) => Some(&e.flow),
            Event::SockLookup(e) => Some(&e.flow),
            Event::LossReport(_) | Event::ClockStep(_) => None,
        }
    }

    /// The process the record names (the caller, or the socket's recorded owner).
    pub fn owner(&self) -> Option<&Owner> {
        match self {
            Event::Retransmit(e) => Some(&e.owner),
            Event::SendError(e) => Some(&e.owner),
            Event::SocketState(e) => Some(&e.owner),
            Event::UdpSend(e) => Some(&e.owner),
            Event::UdpQueueDrop(e) => Some(&e.owner),
            _ => None,
        }
        .filter(|o| o.pid != 0)
    }

    /// The network namespace (inode) the event happened in, where the record says.
    pub fn netns(&self) -> Option<u32> {
        match self {
            Event::Retransmit(e) => Some(e.netns),
            Event::SendError(e) => Some(e.netns),
            Event::IcmpTooBig(e) => Some(e.netns),
            Event::SocketState(e) => Some(e.netns),
            Event::UdpSend(e) => Some(e.netns),
            Event::UdpQueueDrop(e) => Some(e.netns),
            Event::SockLookup(e) => Some(e.netns),
            Event::SocketError(_)
            | Event::CongState(_)
            | Event::LossReport(_)
            | Event::ClockStep(_) => None,
        }
        .filter(|n| *n != 0)
    }

    /// Records the agent consumes but never prints: its own kernel answers, and
    /// kernel-internal restart codes (ERESTARTSYS and friends), which the kernel turns
    /// into a restarted call (or EINTR) before user space sees them.
    pub fn is_internal(&self) -> bool {
        match self {
            e if e.kind().is_agent_made() => true,
            Event::SendError(e) => agent_common::kernel::errno::is_restart(e.errno),
            _ => false,
        }
    }

    /// Name of the event's kind, as used in `type` and in the ledger. A failed
    /// connect()/bind() travels as a send-error record but is its own line type.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Event::SendError(e) if is_connect_or_bind(e) => "connect_error",
            e => kind_name(e.kind()),
        }
    }
}

fn record_kind<R: Record>(_: &R) -> Kind {
    R::KIND
}

/// The line type of each record kind (a failed connect()/bind() aside).
pub const fn kind_name(kind: Kind) -> &'static str {
    match kind {
        Kind::Retransmit => "retransmit",
        Kind::SendError => "send_error",
        Kind::IcmpTooBig => "icmp_too_big",
        Kind::SocketState => "socket_state",
        Kind::SocketError => "socket_error",
        Kind::CongState => "cong_state",
        Kind::UdpSend => "udp_send",
        Kind::SockLookup => "sock_lookup",
        Kind::LossReport => "loss_report",
        Kind::ClockStep => "clock_step",
        Kind::UdpQueueDrop => "udp_queue_drop",
    }
}

/// Whether a send-error record is a failed connect() or bind().
pub fn is_connect_or_bind(e: &SendError) -> bool {
    let nr = e.syscall as libc::c_long;
    nr == libc::SYS_connect || nr == libc::SYS_bind
}

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {got} bytes is shorter than the {need}-byte header")]
    ShortHeader { got: usize, need: usize },
    #[error("unknown record kind {0}")]
    UnknownKind(u16),
    #[error("record kind {kind} claims {claimed} bytes but its type is {expected} bytes")]
    KindSize {
        kind: u16,
        claimed: usize,
        expected: usize,
    },
    #[error("record kind {kind} claims {claimed} bytes but only {got} arrived")]
    Truncated {
        kind: u16,
        claimed: usize,
        got: usize,
    },
}

fn read<T: aya::Pod>(bytes: &[u8]) -> T {
    debug_assert!(bytes.len() >= size_of::<T>());
    // SAFETY: callers check the length; T is a repr(C) Pod type for which any bit
    // pattern is valid; read_unaligned copes with any alignment.
    unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) }
}

fn body<T: Record + aya::Pod>(bytes: &[u8], header: &Header) -> Result<T, DecodeError> {
    let expected = size_of::<T>();
    let claimed = header.len as usize;
    if claimed != expected {
        return Err(DecodeError::KindSize {
            kind: header.kind,
            claimed,
            expected,
        });
    }
    if bytes.len() < claimed {
        return Err(DecodeError::Truncated {
            kind: header.kind,
            claimed,
            got: bytes.len(),
        });
    }
    Ok(read::<T>(bytes))
}

pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    if bytes.len() < size_of::<Header>() {
        return Err(DecodeError::ShortHeader {
            got: bytes.len(),
            need: size_of::<Header>(),
        });
    }
    let header: Header = read(bytes);
    let Some(kind) = Kind::from_u16(header.kind) else {
        return Err(DecodeError::UnknownKind(header.kind));
    };
    match kind {
        Kind::Retransmit => body(bytes, &header).map(Event::Retransmit),
        Kind::SendError => body(bytes, &header).map(Event::SendError),
        Kind::IcmpTooBig => body(bytes, &header).map(Event::IcmpTooBig),
        Kind::SocketState => body(bytes, &header).map(Event::SocketState),
        Kind::SocketError => body(bytes, &header).map(Event::SocketError),
        Kind::CongState => body(bytes, &header).map(Event::CongState),
        Kind::UdpSend => body(bytes, &header).map(Event::UdpSend),
        Kind::SockLookup => body(bytes, &header).map(Event::SockLookup),
        Kind::LossReport => body(bytes, &header).map(Event::LossReport),
        Kind::ClockStep => body(bytes, &header).map(Event::ClockStep),
        Kind::UdpQueueDrop => body(bytes, &header).map(|r| Event::UdpQueueDrop(Box::new(r))),
    }
}

/// The bytes of a record, as the kernel would write them (for the agent's own
/// records, tests and replay).
pub fn encode<R: Record + aya::Pod>(record: &R) -> Vec<u8> {
    // SAFETY: Pod types are repr(C) without padding (sizes asserted in agent-common):
    // every byte is initialized.
    unsafe { core::slice::from_raw_parts((record as *const R).cast::<u8>(), size_of::<R>()) }
        .to_vec()
}

#[cfg(test)]
mod tests {
    use agent_common::event::Flow;

    use super::*;

    fn retransmit() -> Retransmit {
        Retransmit {
            header: Header::new::<Retransmit>(1, 42, 0xffff_0000_1234),
            flow: Flow {
                sport: 40000,
                dport: 5201,
                family: 2,
                protocol: 6,
                state: 1,
                ..Flow::default()
            },
            segs: 2,
            len: 2896,
            seg_len: 1448,
            ..Retransmit::default()
        }
    }

    #[test]
    fn round_trips_every_kind() {
        let r = retransmit();
        assert_eq!(decode(&encode(&r)), Ok(Event::Retransmit(r)));
        let s = SendError {
            header: Header::new::<SendError>(0, 1, 2),
            errno: 70,
            ..SendError::default()
        };
        assert_eq!(decode(&encode(&s)), Ok(Event::SendError(s)));
        let i = IcmpTooBig {
            header: Header::new::<IcmpTooBig>(0, 1, 0),
            mtu: 1400,
            ..IcmpTooBig::default()
        };
        assert_eq!(decode(&encode(&i)), Ok(Event::IcmpTooBig(i)));
        let mut q = UdpQueueDrop {
            header: Header::new::<UdpQueueDrop>(0, 1, 2),
            drops: 7,
            ..UdpQueueDrop::default()
        };
        q.peers[1].drops = 3;
        assert_eq!(decode(&encode(&q)), Ok(Event::UdpQueueDrop(Box::new(q))));
    }

    #[test]
    fn rejects_short_unknown_truncated() {
        let bytes = encode(&retransmit());
        assert!(matches!(
            decode(&bytes[..10]),
            Err(DecodeError::ShortHeader { .. })
        ));
        assert!(matches!(
            decode(&bytes[..40]),
            Err(DecodeError::Truncated { .. })
        ));
        let mut unknown = bytes.clone();
        unknown[0] = 0xee;
        assert!(matches!(decode(&unknown), Err(DecodeError::UnknownKind(_))));
        let mut lying = bytes;
        lying[2] = 7;
        assert!(matches!(decode(&lying), Err(DecodeError::KindSize { .. })));
    }

    #[test]
    fn never_panics_on_any_prefix_of_noise() {
        let noise: Vec<u8> = (0..512u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        for n in 0..noise.len() {
            let _ = decode(&noise[..n]);
        }
    }
}
