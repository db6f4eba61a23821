//! Names for the numbers the kernel hands us: address families, protocols, TCP states.
//! One place per fact.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use agent_common::event::{AF_INET, AF_INET6, Flow, IPPROTO_TCP, IPPROTO_UDP};

pub fn family_name(family: u16) -> &'static str {
    match family {
        AF_INET => "ipv4",
        AF_INET6 => "ipv6",
        _ => "unknown",
    }
}

pub fn protocol_name(protocol: u8) -> &'static str {
    match protocol {
        IPPROTO_TCP => "tcp",
        IPPROTO_UDP => "udp",
        _ => "unknown",
    }
}

/// Kernel `TCP_*` states (include/net/tcp_states.h), named without the prefix.
pub fn tcp_state_name(state: u8) -> &'static str {
    match state {
        1 => "ESTABLISHED",
        2 => "SYN_SENT",
        3 => "SYN_RECV",
        4 => "FIN_WAIT1",
        5 => "FIN_WAIT2",
        6 => "TIME_WAIT",
        7 => "CLOSE",
        8 => "CLOSE_WAIT",
        9 => "LAST_ACK",
        10 => "LISTEN",
        11 => "CLOSING",
        12 => "NEW_SYN_RECV",
        13 => "BOUND_INACTIVE",
        _ => "UNKNOWN",
    }
}

pub fn ip(family: u16, raw: &[u8; 16]) -> IpAddr {
    if family == AF_INET6 {
        IpAddr::V6(Ipv6Addr::from(*raw))
    } else {
        IpAddr::V4(Ipv4Addr::new(raw[0], raw[1], raw[2], raw[3]))
    }
}

pub fn local_ip(flow: &Flow) -> IpAddr {
    ip(flow.family, &flow.saddr)
}

pub fn peer_ip(flow: &Flow) -> IpAddr {
    ip(flow.family, &flow.daddr)
}

pub fn retransmit_kind_name(kind: u8) -> &'static str {
    use agent_common::event::retransmit_kind::*;
    match kind {
        RTO => "rto",
        FAST => "fast",
        TLP => "tlp",
        _ => "other",
    }
}

/// `icsk_ca_state` (enum tcp_ca_state).
pub fn ca_state_name(state: u8) -> &'static str {
    match state {
        0 => "open",
        1 => "disorder",
        2 => "cwr",
        3 => "recovery",
        4 => "loss",
        _ => "unknown",
    }
}

/// Send-family syscall names by this architecture's numbers.
pub fn syscall_name(nr: i32) -> Option<&'static str> {
    let nr = nr as libc::c_long;
    Some(match nr {
        libc::SYS_sendto => "sendto",
        libc::SYS_sendmsg => "sendmsg",
        libc::SYS_sendmmsg => "sendmmsg",
        libc::SYS_write => "write",
        libc::SYS_writev => "writev",
        libc::SYS_connect => "connect",
        libc::SYS_bind => "bind",
        _ => return None,
    })
}

/// Services recognised from a flow: IKE/IPsec NAT-T on UDP 500 and 4500.
pub fn service(flow: &Flow) -> Option<&'static str> {
    let ike = |p: u16| p == 500 || p == 4500;
    (flow.protocol == IPPROTO_UDP && (ike(flow.sport) || ike(flow.dport))).then_some("ike")
}
