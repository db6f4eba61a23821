//! Beyond PMTUD: ephemeral-port exhaustion, and large UDP datagrams (IKE on port
//! 500) through a router with a smaller MTU, with and without ICMP filtered.

use std::{
    net::{SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use sendsight_tests::{Agent, Topology, require_root, scenarios::ips, socket_sends_seen};
use serde_json::Value;

fn verdicts<'a>(lines: &'a [Value], name: &str, peer: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|l| l["type"] == "verdict" && l["verdict"] == name && l["peer"]["ip"] == peer)
        .collect()
}

#[test]
fn narrow_port_range_is_exhausted() {
    require_root();
    let topo = Topology::direct(90);
    topo.client
        .sysctl("net.ipv4.ip_local_port_range", "40000 40009");
    topo.client.sysctl("net.ipv4.tcp_tw_reuse", "0");
    let (_, server_ip) = ips(&topo, false);
    let server = SocketAddr::new(server_ip, 8080);
    let (tx, rx) = std::sync::mpsc::channel();
    // The server reads to EOF and closes after the client: the client side holds
    // each port in TIME_WAIT.
    let srv = topo.server.run("ss-churn-srv", move || {
        let l = TcpListener::bind(server).unwrap();
        l.set_nonblocking(true).unwrap();
        tx.send(()).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            match l.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    let _ = std::io::copy(&mut s, &mut std::io::sink());
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    rx.recv().unwrap();
    let mut agent = Agent::start(&[]);
    let failures = topo
        .client
        .run("ss-churn", move || {
            let mut failures = Vec::new();
            for _ in 0..25 {
                match TcpStream::connect_timeout(&server, Duration::from_secs(2)) {
                    Ok(s) => {
                        let _ = s.shutdown(std::net::Shutdown::Both);
                        drop(s);
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => {
                        failures.push(e.raw_os_error().unwrap_or(0));
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
            }
            // A real client lives on; the agent reads its namespace's view while
            // judging, so stay around until it has.
            std::thread::sleep(Duration::from_millis(500));
            failures
        })
        .join()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let out = agent.stop();
    drop(srv);
    assert!(
        failures
            .iter()
            .filter(|e| **e == libc::EADDRNOTAVAIL)
            .count()
            >= 3,
        "the 10-port range should have run out: {failures:?}"
    );
    let peer = server_ip.to_string();
    let errors: Vec<&Value> = out
        .of_type("connect_error")
        .into_iter()
        .filter(|l| l["peer"]["ip"] == peer)
        .collect();
    assert!(errors.len() >= 3, "connect errors: {errors:?}");
    for e in &errors {
        assert_eq!(e["errno_name"], "EADDRNOTAVAIL", "{e}");
        assert_eq!(e["syscall"], "connect", "{e}");
        assert_eq!(e["peer"]["port"], 8080, "{e}");
        assert_eq!(e["process"]["comm"], "ss-churn", "{e}");
    }
    let v = verdicts(&out.lines, "ephemeral_ports_exhausted", &peer);
    assert!(!v.is_empty(), "no ephemeral_ports_exhausted verdict");
    let ev = &v[0]["evidence"];
    println!("{}", v[0]);
    assert_eq!(ev["ip_local_port_range"], "40000 40009", "{ev}");
    assert_eq!(ev["ephemeral_ports"], 10, "{ev}");
    assert!(
        ev["time_wait_to_destination"].as_u64().unwrap() >= 5,
        "{ev}"
    );
    assert!(v[0]["advice"].as_str().unwrap().contains("tcp_tw_reuse"));
}

/// Sends `n` datagrams of `size` bytes to server:500 (IKE) with DF set, `gap` apart;
/// returns the local address and the errnos of failed sends.
fn ike_sender(topo: &Topology, size: usize, n: usize, gap: Duration) -> (SocketAddr, Vec<i32>) {
    let (client_ip, server_ip) = ips(topo, false);
    let server = SocketAddr::new(server_ip, 500);
    let (tx, rx) = std::sync::mpsc::channel();
    let _srv = topo.server.run("ss-ike-srv", move || {
        let s = UdpSocket::bind(server).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        tx.send(()).unwrap();
        let mut buf = [0u8; 2048];
        let deadline = Instant::now() + Duration::from_secs(8);
        while Instant::now() < deadline {
            let _ = s.recv(&mut buf);
        }
    });
    rx.recv().unwrap();
    topo.client
        .run("ss-ike", move || {
            let s = UdpSocket::bind(SocketAddr::new(client_ip, 0)).unwrap();
            s.connect(server).unwrap();
            let val: libc::c_int = libc::IP_PMTUDISC_DO;
            unsafe {
                libc::setsockopt(
                    s.as_raw_fd(),
                    libc::IPPROTO_IP,
                    libc::IP_MTU_DISCOVER,
                    (&val as *const libc::c_int).cast(),
                    4,
                )
            };
            let buf = vec![0x5au8; size];
            let mut errs = Vec::new();
            for _ in 0..n {
                if let Err(e) = s.send(&buf) {
                    errs.push(e.raw_os_error().unwrap_or(0));
                }
                std::thread::sleep(gap);
            }
            (s.local_addr().unwrap(), errs)
        })
        .join()
        .unwrap()
}

#[test]
fn ike_datagrams_over_a_smaller_mtu() {
    require_root();
    let topo = Topology::routed(91, 1400);
    let (_, server_ip) = ips(&topo, false);
    let mut agent = Agent::start(&[]);
    let (local, errs) = ike_sender(&topo, 1472, 4, Duration::from_millis(200));
    std::thread::sleep(Duration::from_millis(300));
    let out = agent.stop();
    assert!(
        errs.contains(&libc::EMSGSIZE),
        "the learned MTU should refuse 1472 bytes: {errs:?}"
    );
    let peer = server_ip.to_string();
    let ours = |t: &str| -> Vec<&Value> {
        out.of_type(t)
            .into_iter()
            .filter(|l| l["local"]["port"] == local.port() && l["peer"]["ip"] == peer)
            .collect()
    };
    let sends = ours("udp_send");
    // Datagrams sent are seen at the socket layer only (6.3+); EMSGSIZE and the
    // too-big still make the verdict without them.
    if socket_sends_seen(&out) {
        assert!(!sends.is_empty(), "no udp_send for the 1472-byte datagrams");
        assert_eq!(sends[0]["bytes"], 1472);
        assert_eq!(sends[0]["service"], "ike");
    } else {
        assert!(
            sends.is_empty(),
            "udp_send without the tracepoint: {sends:?}"
        );
    }
    let too_big: Vec<&Value> = ours("icmp_too_big")
        .into_iter()
        .filter(|l| l["source"] == "received")
        .collect();
    assert!(!too_big.is_empty(), "no too-big quoting the UDP flow");
    assert_eq!(too_big[0]["mtu"], 1400);
    assert_eq!(too_big[0]["protocol"], "udp");
    let emsgsize = ours("send_error");
    assert!(
        emsgsize.iter().any(|l| l["errno_name"] == "EMSGSIZE"),
        "{emsgsize:?}"
    );
    let v = verdicts(&out.lines, "udp_path_mtu", &peer);
    assert!(!v.is_empty(), "no udp_path_mtu verdict");
    let last = v.last().unwrap();
    println!("{last}");
    assert_eq!(last["confidence"], "high");
    assert_eq!(last["evidence"]["service"], "ike");
    assert_eq!(last["evidence"]["path_mtu"], 1400);
    assert!(last["advice"].as_str().unwrap().contains("IKE"));
    // UDP too-big messages for a real flow are never called forged.
    assert!(verdicts(&out.lines, "spoofed_ptb", &peer).is_empty());
}

#[test]
fn ike_datagrams_with_icmp_filtered() {
    require_root();
    let topo = Topology::routed(92, 1400);
    topo.router.as_ref().unwrap().filter_too_big();
    let (_, server_ip) = ips(&topo, false);
    let mut agent = Agent::start(&[]);
    // Two seconds of sends: large datagrams are reported once per socket per second.
    let (local, errs) = ike_sender(&topo, 1472, 5, Duration::from_millis(550));
    std::thread::sleep(Duration::from_millis(300));
    let out = agent.stop();
    assert!(
        errs.is_empty(),
        "nothing tells the sender: no EMSGSIZE expected, got {errs:?}"
    );
    let peer = server_ip.to_string();
    let received = out
        .of_type("icmp_too_big")
        .into_iter()
        .filter(|l| l["source"] == "received" && l["local"]["port"] == local.port())
        .count();
    assert_eq!(
        received, 0,
        "the filter should have eaten every too-big message"
    );
    let v = verdicts(&out.lines, "udp_path_mtu", &peer);
    if !socket_sends_seen(&out) {
        // Nothing fails and nothing comes back: the large datagrams themselves are
        // the evidence, and without the socket layer's tracepoint (before 6.3) they
        // are unseen. No verdict then, and certainly no false one.
        assert!(v.is_empty(), "a verdict from no evidence: {v:?}");
        assert!(out.of_type("udp_send").is_empty());
        return;
    }
    assert!(!v.is_empty(), "no udp_path_mtu verdict without ICMP");
    let last = v.last().unwrap();
    println!("{last}");
    assert_eq!(last["evidence"]["too_big_received"], 0);
    assert_eq!(last["evidence"]["emsgsize"], 0);
    assert!(last["evidence"]["large_datagrams"].as_u64().unwrap() >= 2);
    // The router is a namespace of this host: its (filtered) frag-needed was seen
    // being generated, which makes the case certain.
    assert!(
        last["evidence"]["too_big_generated_on_this_host"]
            .as_u64()
            .unwrap()
            >= 1
    );
    assert_eq!(last["confidence"], "high");
}
