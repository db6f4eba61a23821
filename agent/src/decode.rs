//! Ring-buffer bytes to typed events. Every record is length-checked against its
//! header and its kind's size before a single field is read: a truncated, unknown or
//! mismatched record is a typed error that the caller counts, never a panic.

use agent_common::event::{
    CongState, Flow, Header, IcmpTooBig, Retransmit, SendError, SockLookup, SocketError,
    SocketState, UdpQueueDrop, UdpSend, kind,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    Retransmit(Retransmit),
    SendError(SendError),
    IcmpTooBig(IcmpTooBig),
    SocketState(SocketState),
    SocketError(SocketError),
    CongState(CongState),
    UdpSend(UdpSend),
    UdpQueueDrop(UdpQueueDrop),
    /// The agent's own record: a kernel answer, consumed by the engine, never printed.
    SockLookup(SockLookup),
}

impl Event {
    pub fn header(&self) -> &Header {
        match self {
            Event::Retransmit(e) => &e.header,
            Event::SendError(e) => &e.header,
            Event::IcmpTooBig(e) => &e.header,
            Event::SocketState(e) => &e.header,
            Event::SocketError(e) => &e.header,
            Event::CongState(e) => &e.header,
            Event::UdpSend(e) => &e.header,
            Event::UdpQueueDrop(e) => &e.header,
            Event::SockLookup(e) => &e.header,
        }
    }

    /// The flow the event is about (for a too-big message: the quoted one).
    pub fn flow(&self) -> &Flow {
        match self {
            Event::Retransmit(e) => &e.flow,
            Event::SendError(e) => &e.flow,
            Event::IcmpTooBig(e) => &e.quoted,
            Event::SocketState(e) => &e.flow,
            Event::SocketError(e) => &e.flow,
            Event::CongState(e) => &e.flow,
            Event::UdpSend(e) => &e.flow,
            Event::UdpQueueDrop(e) => &e.flow,
            Event::SockLookup(e) => &e.flow,
        }
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
            Event::SocketError(_) | Event::CongState(_) => None,
        }
    }

    /// Records the agent consumes but never prints: its own kernel answers, and
    /// kernel-internal restart codes (ERESTARTSYS and friends), which the kernel turns
    /// into a restarted call (or EINTR) before user space sees them.
    pub fn is_internal(&self) -> bool {
        match self {
            Event::SockLookup(_) => true,
            Event::SendError(e) => agent_common::kernel::errno::is_restart(e.errno),
            _ => false,
        }
    }

    /// Name of the event's kind, as used in `type` and in the ledger. A failed
    /// connect()/bind() travels as a send-error record but is its own line type.
    pub fn kind_name(&self) -> &'static str {
        match self {
            Event::Retransmit(_) => "retransmit",
            Event::SendError(e) if is_connect_or_bind(e) => "connect_error",
            Event::SendError(_) => "send_error",
            Event::IcmpTooBig(_) => "icmp_too_big",
            Event::SocketState(_) => "socket_state",
            Event::SocketError(_) => "socket_error",
            Event::CongState(_) => "cong_state",
            Event::UdpSend(_) => "udp_send",
            Event::UdpQueueDrop(_) => "udp_queue_drop",
            Event::SockLookup(_) => "sock_lookup",
        }
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

fn read<T: Copy>(bytes: &[u8]) -> T {
    debug_assert!(bytes.len() >= size_of::<T>());
    // SAFETY: callers check the length; T is a repr(C) Pod type for which any bit
    // pattern is valid; read_unaligned copes with any alignment.
    unsafe { core::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) }
}

fn body<T: Copy>(bytes: &[u8], header: &Header) -> Result<T, DecodeError> {
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
    match header.kind {
        kind::RETRANSMIT => body(bytes, &header).map(Event::Retransmit),
        kind::SEND_ERROR => body(bytes, &header).map(Event::SendError),
        kind::ICMP_TOO_BIG => body(bytes, &header).map(Event::IcmpTooBig),
        kind::SOCKET_STATE => body(bytes, &header).map(Event::SocketState),
        kind::SOCKET_ERROR => body(bytes, &header).map(Event::SocketError),
        kind::CONG_STATE => body(bytes, &header).map(Event::CongState),
        kind::UDP_SEND => body(bytes, &header).map(Event::UdpSend),
        kind::SOCK_LOOKUP => body(bytes, &header).map(Event::SockLookup),
        kind::UDP_QUEUE_DROP => body(bytes, &header).map(Event::UdpQueueDrop),
        other => Err(DecodeError::UnknownKind(other)),
    }
}

/// The bytes of a record, as the kernel would write them (for tests and replay).
pub fn encode<T: Copy>(record: &T) -> Vec<u8> {
    // SAFETY: T is a padding-free repr(C) Pod (asserted in agent-common).
    unsafe { core::slice::from_raw_parts((record as *const T).cast::<u8>(), size_of::<T>()) }
        .to_vec()
}

#[cfg(test)]
mod tests {
    use agent_common::event::Flow;

    use super::*;

    fn retransmit() -> Retransmit {
        Retransmit {
            header: Header {
                kind: kind::RETRANSMIT,
                len: size_of::<Retransmit>() as u16,
                cpu: 1,
                ts_ns: 42,
                sk: 0xffff_0000_1234,
            },
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
        let mut s = SendError::default();
        s.header.kind = kind::SEND_ERROR;
        s.header.len = size_of::<SendError>() as u16;
        s.errno = 70;
        assert_eq!(decode(&encode(&s)), Ok(Event::SendError(s)));
        let mut i = IcmpTooBig::default();
        i.header.kind = kind::ICMP_TOO_BIG;
        i.header.len = size_of::<IcmpTooBig>() as u16;
        i.mtu = 1400;
        assert_eq!(decode(&encode(&i)), Ok(Event::IcmpTooBig(i)));
        let mut q = UdpQueueDrop::default();
        q.header.kind = kind::UDP_QUEUE_DROP;
        q.header.len = size_of::<UdpQueueDrop>() as u16;
        q.drops = 7;
        q.peers[1].drops = 3;
        assert_eq!(decode(&encode(&q)), Ok(Event::UdpQueueDrop(q)));
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
