//! Names for the numbers the kernel hands us: address families, protocols, TCP states.
//! One place per fact.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use agent_common::event::{AF_INET, AF_INET6, Flow, IPPROTO_TCP, IPPROTO_UDP};

// The names below are printed in the lines: each table is the one source of a
// field's values, for the functions that print them and for the schemas
// (`crate::schema`), so a schema's `enum` cannot miss a value the agent prints.

/// Every `family` a line can carry.
pub const FAMILIES: [&str; 3] = ["ipv4", "ipv6", "unknown"];

pub fn family_name(family: u16) -> &'static str {
    FAMILIES[match family {
        AF_INET => 0,
        AF_INET6 => 1,
        _ => 2,
    }]
}

/// Every `protocol` a line can carry.
pub const PROTOCOLS: [&str; 3] = ["tcp", "udp", "unknown"];

pub fn protocol_name(protocol: u8) -> &'static str {
    PROTOCOLS[match protocol {
        IPPROTO_TCP => 0,
        IPPROTO_UDP => 1,
        _ => 2,
    }]
}

/// Kernel `TCP_*` states (include/net/tcp_states.h), named without the prefix,
/// indexed by the kernel's number less one; the last is for any other number.
pub const TCP_STATES: [&str; 14] = [
    "ESTABLISHED",
    "SYN_SENT",
    "SYN_RECV",
    "FIN_WAIT1",
    "FIN_WAIT2",
    "TIME_WAIT",
    "CLOSE",
    "CLOSE_WAIT",
    "LAST_ACK",
    "LISTEN",
    "CLOSING",
    "NEW_SYN_RECV",
    "BOUND_INACTIVE",
    "UNKNOWN",
];

pub fn tcp_state_name(state: u8) -> &'static str {
    let last = TCP_STATES.len() - 1;
    match state as usize {
        n @ 1..=13 => TCP_STATES[n - 1],
        _ => TCP_STATES[last],
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

/// Every retransmit `kind`.
pub const RETRANSMIT_KINDS: [&str; 4] = ["rto", "fast", "tlp", "other"];

pub fn retransmit_kind_name(kind: u8) -> &'static str {
    use agent_common::event::retransmit_kind::*;
    RETRANSMIT_KINDS[match kind {
        RTO => 0,
        FAST => 1,
        TLP => 2,
        _ => 3,
    }]
}

/// `icsk_ca_state` (enum tcp_ca_state), indexed by the kernel's number; the last is
/// for any other number.
pub const CA_STATES: [&str; 6] = ["open", "disorder", "cwr", "recovery", "loss", "unknown"];

pub fn ca_state_name(state: u8) -> &'static str {
    CA_STATES[(state as usize).min(CA_STATES.len() - 1)]
}

/// The send-family calls a `send_error` line names.
pub const SEND_SYSCALLS: [&str; 5] = ["sendto", "sendmsg", "sendmmsg", "write", "writev"];
/// The calls a `connect_error` line names.
pub const CONNECT_SYSCALLS: [&str; 2] = ["connect", "bind"];

/// Send-family (and connect/bind) syscall names by this architecture's numbers.
pub fn syscall_name(nr: i32) -> Option<&'static str> {
    let nr = nr as libc::c_long;
    Some(match nr {
        libc::SYS_sendto => SEND_SYSCALLS[0],
        libc::SYS_sendmsg => SEND_SYSCALLS[1],
        libc::SYS_sendmmsg => SEND_SYSCALLS[2],
        libc::SYS_write => SEND_SYSCALLS[3],
        libc::SYS_writev => SEND_SYSCALLS[4],
        libc::SYS_connect => CONNECT_SYSCALLS[0],
        libc::SYS_bind => CONNECT_SYSCALLS[1],
        _ => return None,
    })
}

/// Every `service` a flow can be recognised as.
pub const SERVICES: [&str; 4] = ["ike", "dns", "syslog", "quic"];

/// Services recognised from a UDP flow by either port: IKE/IPsec NAT-T (500, 4500),
/// DNS (53), syslog (514), QUIC (443).
pub fn service(flow: &Flow) -> Option<&'static str> {
    if flow.protocol != IPPROTO_UDP {
        return None;
    }
    let name = |p: u16| match p {
        500 | 4500 => Some(SERVICES[0]),
        53 => Some(SERVICES[1]),
        514 => Some(SERVICES[2]),
        443 => Some(SERVICES[3]),
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
