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

/// The flow as the wire sees it: an AF_INET6 socket talking to an IPv4 peer
/// (`::ffff:a.b.c.d`, how dual-stack Java, Go and Node sockets run) sends IPv4
/// packets, gets IPv4 too-big messages quoting an AF_INET flow, and has IPv4
/// headers and prefixes. Matching, grouping and filtering use this form; lines
/// print the socket's own.
pub fn canonical(flow: &Flow) -> Flow {
    let mapped = |a: &[u8; 16]| a[..10].iter().all(|b| *b == 0) && a[10] == 0xff && a[11] == 0xff;
    if flow.family != AF_INET6
        || !mapped(&flow.daddr)
        || !(mapped(&flow.saddr) || flow.saddr == [0; 16])
    {
        return *flow;
    }
    let v4 = |a: &[u8; 16]| {
        let mut o = [0u8; 16];
        o[..4].copy_from_slice(&a[12..]);
        o
    };
    Flow {
        family: AF_INET,
        saddr: if flow.saddr == [0; 16] {
            [0; 16]
        } else {
            v4(&flow.saddr)
        },
        daddr: v4(&flow.daddr),
        ..*flow
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
    if flow.protocol != IPPROTO_UDP {
        return None;
    }
    let name = |p: u16| match p {
        500 | 4500 => Some("ike"),
        53 => Some("dns"),
        514 => Some("syslog"),
        443 => Some("quic"),
        _ => None,
    };
    name(flow.sport).or_else(|| name(flow.dport))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v4_mapped_flows_are_ipv4_on_the_wire() {
        let mut f = Flow {
            family: AF_INET6,
            protocol: IPPROTO_TCP,
            sport: 1,
            dport: 2,
            ..Flow::default()
        };
        f.saddr[10..].copy_from_slice(&[0xff, 0xff, 198, 18, 1, 2]);
        f.daddr[10..].copy_from_slice(&[0xff, 0xff, 198, 18, 1, 1]);
        let c = canonical(&f);
        assert_eq!(c.family, AF_INET);
        assert_eq!(peer_ip(&c).to_string(), "198.18.1.1");
        assert_eq!(local_ip(&c).to_string(), "198.18.1.2");
        assert_eq!((c.sport, c.dport), (1, 2));
        // A real IPv6 flow stays as it is.
        let mut g = f;
        g.daddr[0] = 0x20;
        assert_eq!(canonical(&g), g);
    }
}
