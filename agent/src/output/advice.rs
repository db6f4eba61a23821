//! What to do about a verdict: the `advice` text, rendered from the typed evidence
//! at the output edge (the engine never builds strings for people).

use agent_common::{
    event::AF_INET6,
    kernel::errno::{ECOMM, EMSGSIZE, ETIMEDOUT},
};

use crate::{
    engine::{
        Verdict,
        verdict::evidence::{
            Evidence, FilteredAt, LikelyCause, RecoveredBy, SendErrorFacts, UdpGround,
            UdpQueueOverflow,
        },
    },
    net,
    system::errno,
};

pub fn advice(v: &Verdict) -> String {
    let flow = net::canonical(&v.flow);
    let peer = net::peer_ip(&flow);
    let v6 = flow.family == AF_INET6;
    let (icmp_name, icmp_rule) = if v6 {
        ("packet-too-big", "ICMPv6 type 2 (packet too big)")
    } else {
        (
            "fragmentation-needed",
            "ICMP type 3 code 4 (fragmentation needed)",
        )
    };
    let fixes_here = "or on this host: sysctl net.ipv4.tcp_mtu_probing=1 (the kernel then \
                      searches for a size that fits, after 3 RTOs), or clamp the MSS \
                      (iptables/nft 'tcp option maxseg size set rt mtu', or `ip route ... \
                      advmss 1360`). Packets of 1280 bytes fit IPv6's minimum MTU.";
    match &v.evidence {
        Evidence::PmtudBlackhole(b) => match b.filtered_at {
            FilteredAt::Path => format!(
                "{}-byte packets to {peer} vanish and no ICMP {icmp_name} comes back, while \
                 small packets pass: a router on the path has a smaller MTU and its too-big \
                 messages are filtered. Fix on the path: allow {icmp_rule} through firewalls; \
                 {fixes_here}",
                b.packet_size
            ),
            FilteredAt::ThisHost => format!(
                "{}-byte packets to {peer} vanish. {} too-big message(s) from {} (MTU {}) \
                 reached this host but TCP never applied them (the MSS stayed {}): this \
                 host's own input filtering drops them before TCP sees them — a firewall \
                 INPUT rule or policy that drops ICMP (firewalld, iptables/nftables), \
                 conntrack marking them INVALID, or rp_filter. Allow {icmp_rule} (conntrack \
                 RELATED) in this host's input chain; meanwhile {}",
                b.packet_size,
                b.too_big_received,
                b.too_big_router
                    .map(|r| r.to_string())
                    .unwrap_or_else(|| "a router".into()),
                b.too_big_mtu.unwrap_or(0),
                b.mss,
                fixes_here.trim_start_matches("or on this host: ")
            ),
        },
        Evidence::PmtudOk(o) => format!(
            "path MTU discovery works: {} reported MTU {}, the socket lowered its MSS to {} \
             and resent. Nothing to fix.",
            o.router, o.mtu, o.mss_after
        ),
        Evidence::BlackholeRecovered(r) => {
            if r.mss_after < r.mss_before {
                format!(
                    "data flows again with MSS {} (was {}): {} found a size that fits, after \
                     {} ms stuck. The black hole is still on the path: fix it there (let ICMP \
                     type 3 code 4 / ICMPv6 type 2 through, or clamp the MSS) so other \
                     connections do not pay the same delay.",
                    r.mss_after,
                    r.mss_before,
                    match r.recovered_by {
                        RecoveredBy::Acknowledged | RecoveredBy::CongestionOpen =>
                            "the kernel's MTU probing (or a route change)",
                    },
                    r.stuck_ms as u64
                )
            } else {
                "data flows again at the same MSS: the path changed or the filter went away."
                    .to_string()
            }
        }
        Evidence::PacketLoss(_) => "segments of all sizes are being lost and recovered while \
             data still flows: congestion or a lossy link, not PMTUD. Check interface errors \
             and drops along the path (ethtool -S, ip -s link), queue drops, and the \
             retransmission rate (nstat TcpRetransSegs)."
            .to_string(),
        Evidence::PathDown(p) => {
            let why = if p.full_size_delivered {
                "full-size segments got through earlier on this connection, so it is not the \
                 packet size"
            } else {
                "small segments are lost too, so it is not the packet size"
            };
            match p.ended_with {
                Some(_) => format!(
                    "nothing was acknowledged for {} ms, through {} retransmission timeouts, \
                     until the connection timed out: the peer {peer} is dead or unreachable \
                     (routing, firewall, host down); {why}. Check reachability from this \
                     host (ping, ip route get {peer}) and the peer's health.",
                    p.stuck_ms as u64, p.rto_retransmits
                ),
                None => format!(
                    "nothing has been acknowledged for {} ms, through {} retransmission \
                     timeouts, and the stall goes on: the peer {peer} is dead or unreachable \
                     (routing, firewall, host down); {why}. With default timeouts \
                     (tcp_retries2=15) the application hears of it only after ~15 minutes: \
                     check reachability (ping, ip route get {peer}) and the peer's health now, \
                     and consider TCP_USER_TIMEOUT or application timeouts.",
                    p.stuck_ms as u64, p.rto_retransmits
                ),
            }
        }
        Evidence::Stall(_) => "the socket is clogged: retransmission timeouts keep firing \
             while the application keeps writing; sends will block or fail until the path \
             recovers."
            .to_string(),
        Evidence::Disconnect(d) => {
            if d.errno_name.0 == ETIMEDOUT {
                "the connection was cut off while idle (keepalive or user timeout): a \
                 middlebox (NAT, firewall, load balancer) probably dropped its state. Use \
                 keepalives shorter than the middlebox's idle timeout."
                    .to_string()
            } else {
                "the peer (or a middlebox on its behalf) reset the connection: check the \
                 peer's logs, its listen backlog, and idle timeouts on the path."
                    .to_string()
            }
        }
        Evidence::SpoofedPtb(_) => "a too-big message that no live connection can have \
             caused: off-path or forged. It is not used as evidence. If many arrive, someone \
             may be trying to shrink your path MTU: consider rate-limiting ICMP at the edge."
            .to_string(),
        Evidence::SendError(s) => send_error(s),
        Evidence::EphemeralPortsExhausted(p) => format!(
            "connect() to {} fails with {}: no local port is free for this destination, \
             usually because closed connections hold them in TIME_WAIT. Reuse connections \
             (keep-alive, pooling), widen net.ipv4.ip_local_port_range, or let the kernel \
             reuse TIME_WAIT ports for new outgoing connections (net.ipv4.tcp_tw_reuse=1).",
            p.destination,
            errno::name(p.errno_name.0)
        ),
        Evidence::BindConflict(b) => format!(
            "bind() to {} fails with {}: another socket already holds that address and \
             port (a second instance of the service, a stale process, or a port another \
             service uses). Find the holder (ss -ltnup 'sport = :{}'), stop it or move one \
             of them; SO_REUSEADDR only helps against sockets in TIME_WAIT.",
            b.address,
            errno::name(b.errno_name.0),
            v.flow.sport
        ),
        Evidence::UdpPathMtu(u) => {
            let what = match u.ground {
                UdpGround::Emsgsize => {
                    "the kernel refuses datagrams larger than the path MTU (EMSGSIZE)"
                }
                UdpGround::TooBigReceived => {
                    "a router reported a smaller path MTU for these datagrams"
                }
                UdpGround::GeneratedHereNoneBack => {
                    "a router on this host generated too-big messages for these datagrams, \
                     and none came back: they are filtered"
                }
                UdpGround::NoneBack => {
                    "large datagrams keep going out and no too-big message ever comes back: \
                     if the path MTU is smaller, they vanish silently (or are fragmented, and \
                     fragments are often dropped)"
                }
            };
            let ike = u.service == Some("ike");
            format!(
                "{what}. {}Send datagrams that fit the path (IPv4: MTU - 28 bytes of headers), \
                 enable the protocol's own fragmentation{}, and let ICMP type 3 code 4 / \
                 ICMPv6 type 2 through on the path.",
                if ike {
                    "IKE: negotiations with large messages (certificates) time out or are \
                     dropped. "
                } else {
                    ""
                },
                if ike {
                    " (IKEv2 fragmentation, RFC 7383)"
                } else {
                    ""
                }
            )
        }
        Evidence::UdpQueueOverflow(q) => udp_queue(v, q),
    }
}

/// A socket that drops datagrams at its full receive queue.
fn udp_queue(v: &Verdict, q: &UdpQueueOverflow) -> String {
    let port = v.flow.sport;
    let who = v
        .owner
        .map(|o| {
            let comm = String::from_utf8_lossy(&o.comm)
                .trim_end_matches('\0')
                .to_string();
            format!("{comm} (pid {})", o.pid)
        })
        .unwrap_or_else(|| format!("the process behind UDP port {port}"));
    let buf = match (q.rcvbuf, q.queued) {
        (Some(b), Some(n)) => format!(" (receive buffer {b} bytes, {n} queued at the last drop)"),
        (Some(b), None) => format!(" (receive buffer {b} bytes)"),
        _ => String::new(),
    };
    let mut text = format!(
        "The receive queue of UDP port {port} was full{buf}: the kernel dropped {} \
         datagram(s) in {} s before {who} read them, and counts them only host-wide \
         (nstat {counter}). The sender sees silence, retransmits, and times out. \
         {who_} is not reading fast enough: check its threads and load (a blocked or \
         single-threaded receive loop, CPU saturation, a slow backend); give the socket \
         a larger buffer (SO_RCVBUF, capped by sysctl net.core.rmem_max; \
         net.core.rmem_default for sockets that do not ask) to ride out bursts.",
        q.dropped,
        q.duration_s,
        counter = if net::canonical(&v.flow).family == AF_INET6 {
            "Udp6RcvbufErrors"
        } else {
            "Udp RcvbufErrors"
        },
        // A comm stays as the kernel spells it; the stand-in starts a sentence.
        who_ = if v.owner.is_some() {
            who.clone()
        } else {
            format!("The process behind UDP port {port}")
        },
    );
    if q.memory_drops > 0 || q.memory_limit_hits > 0 {
        text.push_str(
            " Some drops hit the protocol's memory limit instead (sysctl net.ipv4.udp_mem): \
             the host is short of UDP memory overall.",
        );
    }
    match q.service {
        Some("ike") => text.push_str(
            " IKE: negotiations time out under load (Windows names this \
             ERROR_IPSEC_IKE_QUEUE_DROP_MM). Check the daemon's own limits too: \
             strongSwan charon.threads, charon.ikesa_limit / init_limit_half_open and the \
             job queue (swanctl --stats), Libreswan's half-open and DDoS-cookie limits \
             (ipsec.conf ddos-mode, max-halfopen-ike); a flood of IKE_SA_INIT from few \
             peers (top_peers) may be an attack: cookies or a rate limit help.",
        ),
        Some("dns") => text.push_str(
            " DNS: clients retry and fail over; raise the resolver's receive threads \
             (e.g. unbound num-threads/so-rcvbuf, BIND -U, dnsmasq) as well as the buffer.",
        ),
        Some("syslog") => text.push_str(
            " syslog: dropped messages are lost for good (UDP has no retry); raise the \
             daemon's receive buffer (rsyslog imudp RcvBufSize) or move senders to TCP/RELP.",
        ),
        Some("quic") => text.push_str(
            " QUIC: loss here looks like congestion to the peers and slows every \
             connection; scale the receive path (more sockets with SO_REUSEPORT, GRO).",
        ),
        _ => {}
    }
    text
}

fn send_error(s: &SendErrorFacts) -> String {
    let name = errno::name(s.errno);
    let meaning = s.meaning;
    let likely = s.likely_cause.map(|c| match c {
        LikelyCause::Verdict(k) => k.name(),
        LikelyCause::MessageTooBig(_) => "message_larger_than_path_mtu",
    });
    match (s.errno, likely) {
        (ECOMM, Some(v)) => format!(
            "ECOMM ({meaning}) ends this socket's story of {v}: fix that and this error goes \
             away."
        ),
        (ECOMM, None) => format!(
            "ECOMM ({meaning}) with no network trouble seen on this socket: it was most \
             likely produced before the network stack (a seccomp or LSM policy, or a driver) \
             — check the process's seccomp filter and security modules."
        ),
        (EMSGSIZE, _) => format!(
            "{name}: the datagram is bigger than the path MTU the kernel knows ({}); send \
             smaller datagrams or let the kernel fragment (IP_PMTUDISC_WANT).",
            match (s.last_too_big_mtu, s.last_too_big_router) {
                (Some(mtu), Some(router)) => format!("{mtu} from {router}"),
                _ => "the interface MTU".into(),
            }
        ),
        (_, Some(v)) => format!("{name} ({meaning}): most likely the end of this socket's {v}."),
        (_, None) => {
            format!("{name} ({meaning}): no network trouble was seen on this socket before it.")
        }
    }
}
