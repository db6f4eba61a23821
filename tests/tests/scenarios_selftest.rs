//! The scenarios themselves, without the agent: each must make the real kernel fail
//! a send (or send a too-big ICMP) the way it promises, and report the facts right.

use std::{
    net::{IpAddr, SocketAddr},
    time::Instant,
};

use sendsight_tests::{
    Topology, require_root,
    scenarios::{self, SendFailure, errno_name},
};

fn ips(topo: &Topology, v6: bool) -> (IpAddr, IpAddr) {
    let (c, s) = if v6 {
        (&topo.addrs.client6, &topo.addrs.server6)
    } else {
        (&topo.addrs.client4, &topo.addrs.server4)
    };
    (c.parse().unwrap(), s.parse().unwrap())
}

/// What a scenario promises about its failing send.
struct Expect {
    errnos: &'static [i32],
    comm: &'static str,
    protocol: &'static str,
    bytes: usize,
}

fn check(what: &str, topo: &Topology, v6: bool, f: &SendFailure, expect: Expect) {
    let Expect {
        errnos,
        comm,
        protocol,
        bytes,
    } = expect;
    println!("{what}: {} {f:?}", errno_name(f.errno));
    let (client, server) = ips(topo, v6);
    assert!(
        errnos.contains(&f.errno),
        "{what}: errno {}, expected one of {errnos:?}",
        errno_name(f.errno)
    );
    assert_eq!(f.local.ip(), client, "{what}: {f:?}");
    assert_ne!(f.local.port(), 0, "{what}: {f:?}");
    assert_eq!(f.peer.ip(), server, "{what}: {f:?}");
    assert_ne!(f.peer.port(), 0, "{what}: {f:?}");
    assert_eq!(f.pid, std::process::id(), "{what}: {f:?}");
    assert_ne!(f.tid, f.pid, "{what}: sent from a thread of its own: {f:?}");
    assert_eq!(f.comm, comm, "{what}: {f:?}");
    assert_eq!(f.protocol, protocol, "{what}: {f:?}");
    assert_eq!(f.bytes, bytes, "{what}: {f:?}");
    assert_eq!(f.syscall, "sendto", "{what}: {f:?}");
}

fn timed<T>(what: &str, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let r = f();
    println!("{what}: took {:?}", t.elapsed());
    r
}

fn epipe(net: u8, v6: bool) {
    require_root();
    let topo = Topology::direct(net);
    let f = timed("epipe_after_reset", || {
        scenarios::epipe_after_reset(&topo, v6)
    });
    check(
        "epipe_after_reset",
        &topo,
        v6,
        &f,
        Expect {
            errnos: &[libc::EPIPE, libc::ECONNRESET],
            comm: "ss-epipe",
            protocol: "tcp",
            bytes: 512,
        },
    );
}

#[test]
fn epipe_after_reset_v4() {
    epipe(40, false);
}

#[test]
fn epipe_after_reset_v6() {
    epipe(41, true);
}

fn emsgsize(net: u8, v6: bool) {
    require_root();
    let topo = Topology::routed(net, 1400);
    let f = timed("emsgsize_udp", || scenarios::emsgsize_udp(&topo, v6));
    check(
        "emsgsize_udp",
        &topo,
        v6,
        &f,
        Expect {
            errnos: &[libc::EMSGSIZE],
            comm: "ss-emsgsize",
            protocol: "udp",
            bytes: 1450,
        },
    );
}

#[test]
fn emsgsize_udp_v4() {
    emsgsize(42, false);
}

#[test]
fn emsgsize_udp_v6() {
    emsgsize(43, true);
}

fn etimedout(net: u8, v6: bool) {
    require_root();
    let topo = Topology::direct(net);
    let f = timed("etimedout_user_timeout", || {
        scenarios::etimedout_user_timeout(&topo, v6)
    });
    check(
        "etimedout_user_timeout",
        &topo,
        v6,
        &f,
        Expect {
            errnos: &[libc::ETIMEDOUT],
            comm: "ss-etimedout",
            protocol: "tcp",
            bytes: 100,
        },
    );
}

#[test]
fn etimedout_user_timeout_v4() {
    etimedout(44, false);
}

#[test]
fn etimedout_user_timeout_v6() {
    etimedout(45, true);
}

#[test]
fn ecomm_via_seccomp_v4() {
    require_root();
    let topo = Topology::direct(46);
    let f = timed("ecomm_via_seccomp", || {
        scenarios::ecomm_via_seccomp(&topo, false)
    });
    check(
        "ecomm_via_seccomp",
        &topo,
        false,
        &f,
        Expect {
            errnos: &[70],
            comm: "ss-ecomm",
            protocol: "tcp",
            bytes: 64,
        },
    );
    // The filter was on that thread only: other threads still send (on the client
    // namespace's loopback).
    topo.client
        .run("ss-after", || {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            s.send_to(b"x", s.local_addr().unwrap())
                .expect("sendto from another thread after the scenario (filter leaked?)");
        })
        .join()
        .unwrap();
}

fn too_big(net: u8, v6: bool) {
    require_root();
    let topo = Topology::routed(net, 1400);
    let t = timed("too_big_received", || {
        scenarios::too_big_received(&topo, v6)
    });
    println!("too_big_received: {t:?}");
    let (client, server) = ips(&topo, v6);
    let router: IpAddr = if v6 {
        topo.addrs.router_client6.parse().unwrap()
    } else {
        topo.addrs.router_client4.parse().unwrap()
    };
    assert_eq!(t.local.ip(), client, "{t:?}");
    assert_eq!(t.peer.ip(), server, "{t:?}");
    assert_ne!(t.peer, SocketAddr::new(server, 0), "{t:?}");
    assert_eq!(t.router, router, "{t:?}");
    assert_eq!(t.mtu, 1400, "{t:?}");
}

#[test]
fn too_big_received_v4() {
    too_big(47, false);
}

#[test]
fn too_big_received_v6() {
    too_big(48, true);
}
