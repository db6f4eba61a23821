//! The verdict scenario suite: real kernel, real traffic through a router namespace,
//! the real agent. Each scenario asserts the exact set of verdicts for its flows and
//! that no other verdict appears; each replays its recording to the same verdicts.
//!
//! `SENDSIGHT_FIXTURES_DIR=dir` also saves each recording (and what it must replay
//! to) there: that is how agent/tests/fixtures/ is made.

use std::{
    io::Write,
    os::fd::AsRawFd,
    process::Command,
    time::{Duration, Instant},
};

use sendsight_tests::{
    Topology,
    recorded::{Scenario, first, verdicts_for},
    scenarios::{self, bulk_from, ips, server_addr, server_advertises_full_mss},
    traffic::{self, stuck_sender},
};
use serde_json::Value;

fn blackhole(name: &'static str, net: u8, v6: bool) {
    let topo = Topology::routed(net, 1400);
    server_advertises_full_mss(&topo, v6);
    topo.router.as_ref().unwrap().filter_too_big();
    let server = server_addr(&topo, v6);
    let scen = Scenario::start(name);
    let sink = traffic::sink_server(&topo.server, server, 2);
    // Two connections to one destination: the path line groups them.
    let a = stuck_sender(&topo, server, 200_000, Duration::from_millis(3600));
    let b = stuck_sender(&topo, server, 200_000, Duration::from_millis(3600));
    let traffic::Stuck {
        local,
        started_ns: started,
        ..
    } = a.join().unwrap();
    let _ = b.join().unwrap();
    drop(sink);
    let out = scen.finish(server.ip(), &["pmtud_blackhole"]);
    let ours = verdicts_for(&out.lines, server.ip());
    let v = ours
        .iter()
        .find(|v| v["local"]["port"] == local.port() && v["verdict"] == "pmtud_blackhole")
        .expect("verdict for the first connection");
    assert_eq!(v["evidence"]["too_big_received"], 0);
    // The router (a namespace of this host, but on the path) ate the too-big
    // messages: not this host's own firewall.
    assert_eq!(v["evidence"]["filtered_at"], "path", "{v}");
    assert!(v["advice"].as_str().unwrap().contains("tcp_mtu_probing"));
    assert_eq!(v["process"]["comm"], "ss-sender");
    // Latency: from the first (lost) full-size send to the verdict, against the
    // time of the kernel's third RTO retransmission on that socket.
    let latency_ms = (v["ts_ns"].as_i64().unwrap() as i128 - started) as f64 / 1e6;
    let rtos: Vec<i128> = out
        .of_type("retransmit")
        .iter()
        .filter(|r| r["local"]["port"] == local.port() && r["kind"] == "rto")
        .map(|r| r["ts_ns"].as_i64().unwrap() as i128)
        .collect();
    assert!(
        rtos.len() >= 3,
        "expected at least 3 RTOs in {name}, got {}",
        rtos.len()
    );
    let third_rto_ms = (rtos[2] - started) as f64 / 1e6;
    println!(
        "{name}: detection latency {latency_ms:.0} ms after the first full-size send; \
         the kernel's 3rd RTO came at {third_rto_ms:.0} ms (confidence {})",
        v["confidence"]
    );
    assert!(
        latency_ms < third_rto_ms,
        "verdict later than the kernel's 3-RTO threshold"
    );
    assert!(
        ours.iter()
            .any(|v| v["verdict"] == "pmtud_blackhole" && v["confidence"] == "high"),
        "confidence never upgraded"
    );
    let paths: Vec<&Value> = out
        .of_type("path")
        .into_iter()
        .filter(|p| {
            p["verdict"] == "pmtud_blackhole"
                && p["evidence"]["last_peer"] == server.ip().to_string()
        })
        .collect();
    assert!(!paths.is_empty(), "no path line grouping the two sockets");
    assert_eq!(paths[0]["sockets"].as_array().unwrap().len(), 2);
}

#[test]
fn ipv4_blackhole() {
    blackhole("blackhole_v4", 30, false);
}

#[test]
fn ipv6_blackhole() {
    blackhole("blackhole_v6", 31, true);
}

fn healthy(name: &'static str, net: u8, v6: bool) {
    let topo = Topology::routed(net, 1400);
    server_advertises_full_mss(&topo, v6);
    let server = server_addr(&topo, v6);
    let (client_ip, _) = ips(&topo, v6);
    let scen = Scenario::start(name);
    let sink = traffic::sink_server(&topo.server, server, 1);
    let c = topo.client.run("ss-healthy", move || {
        let s = bulk_from(client_ip, server, 300_000);
        traffic::tcp_info(&s)
    });
    let info = c.join().unwrap();
    let _ = sink.join();
    assert_eq!(info.pmtu, 1400, "the client should have learned MTU 1400");
    let out = scen.finish(server.ip(), &["pmtud_ok"]);
    let v = first(&verdicts_for(&out.lines, server.ip()), "pmtud_ok").clone();
    assert_eq!(v["evidence"]["mtu"], 1400);
    assert_eq!(v["evidence"]["mss_after"], info.snd_mss);
}

#[test]
fn ipv4_healthy_pmtud() {
    healthy("pmtud_ok_v4", 32, false);
}

#[test]
fn ipv6_healthy_pmtud() {
    healthy("pmtud_ok_v6", 33, true);
}

#[test]
fn random_loss_is_packet_loss() {
    let topo = Topology::direct(34);
    let server = server_addr(&topo, false);
    // 10% of every TCP packet, any size, both directions, on the receiver.
    topo.server.nft(
        "table inet lossy {
            chain input { type filter hook input priority 0; policy accept;
                meta l4proto tcp numgen random mod 10 == 0 counter drop; }
            chain output { type filter hook output priority 0; policy accept;
                meta l4proto tcp numgen random mod 10 == 0 counter drop; }
        }",
    );
    let (client_ip, _) = ips(&topo, false);
    let scen = Scenario::start("packet_loss");
    let sink = traffic::sink_server(&topo.server, server, 1);
    let c = topo.client.run("ss-lossy", move || {
        // At least 4 MB, for at least a second.
        let s = traffic::send_sustained(
            server,
            4 << 20,
            Duration::from_secs(1),
            Duration::from_secs(60),
        );
        let _ = client_ip;
        traffic::tcp_info(&s)
    });
    let info = c.join().unwrap();
    let _ = sink.join();
    assert!(info.total_retrans > 0);
    scen.finish(server.ip(), &["packet_loss"]);
}

#[test]
fn dead_peer_is_path_down() {
    let topo = Topology::direct(35);
    let server = server_addr(&topo, false);
    let scen = Scenario::start("path_down");
    let sink = traffic::sink_server(&topo.server, server, 1);
    let server_ns = topo.server.name.clone();
    let c = topo.client.run("ss-deadpeer", move || {
        let mut s = traffic::send_bulk(server, 1 << 20, Duration::from_secs(30));
        // A short user timeout: the connection dies 3 s after data stops being acked.
        let ms: libc::c_uint = 3000;
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_TCP,
                libc::TCP_USER_TIMEOUT,
                (&ms as *const libc::c_uint).cast(),
                4,
            )
        };
        // The peer vanishes: everything to and from it is dropped from now on.
        let ok = Command::new("ip")
            .args(["netns", "exec", &server_ns, "nft", "add table inet dead"])
            .status()
            .unwrap()
            .success()
            && Command::new("ip")
                .args([
                    "netns",
                    "exec",
                    &server_ns,
                    "nft",
                    "add chain inet dead in { type filter hook input priority 0; policy drop; }",
                ])
                .status()
                .unwrap()
                .success();
        assert!(ok, "could not cut the peer off");
        s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(&vec![1u8; 100_000]);
        let deadline = Instant::now() + Duration::from_secs(15);
        while Instant::now() < deadline && traffic::tcp_info(&s).state == 1 {
            std::thread::sleep(Duration::from_millis(50));
        }
        traffic::tcp_info(&s).state
    });
    let state = c.join().unwrap();
    drop(sink);
    assert_ne!(state, 1, "the connection should have timed out");
    let out = scen.finish(server.ip(), &["path_down"]);
    let v = first(&verdicts_for(&out.lines, server.ip()), "path_down").clone();
    assert!(
        v["evidence"]["rto_retransmits"].as_u64().unwrap() >= 2,
        "{v}"
    );
}

#[test]
fn blackhole_with_mtu_probing_recovers() {
    let topo = Topology::routed(36, 1400);
    server_advertises_full_mss(&topo, false);
    topo.router.as_ref().unwrap().filter_too_big();
    topo.client.sysctl("net.ipv4.tcp_mtu_probing", "1");
    let server = server_addr(&topo, false);
    let scen = Scenario::start("blackhole_recovered");
    let sink = traffic::sink_server(&topo.server, server, 1);
    let a = stuck_sender(&topo, server, 200_000, Duration::from_secs(12));
    let traffic::Stuck {
        local,
        started_ns: started,
        ..
    } = a.join().unwrap();
    drop(sink);
    let out = scen.finish(server.ip(), &["pmtud_blackhole", "blackhole_recovered"]);
    let ours = verdicts_for(&out.lines, server.ip());
    let bh = first(&ours, "pmtud_blackhole");
    let rec = first(&ours, "blackhole_recovered");
    let latency_ms = (bh["ts_ns"].as_i64().unwrap() as i128 - started) as f64 / 1e6;
    let recovered_ms = (rec["ts_ns"].as_i64().unwrap() as i128 - started) as f64 / 1e6;
    println!(
        "blackhole_recovered: black hole named {latency_ms:.0} ms after the first full-size \
         send; the kernel's MTU probing got data through at {recovered_ms:.0} ms \
         (stuck {} ms, MSS {} -> {})",
        rec["evidence"]["stuck_ms"], rec["evidence"]["mss_before"], rec["evidence"]["mss_after"]
    );
    assert!(
        bh["ts_ns"].as_i64() < rec["ts_ns"].as_i64(),
        "verdicts out of order"
    );
    assert!(latency_ms < recovered_ms);
    assert!(
        rec["evidence"]["mss_after"].as_u64() < rec["evidence"]["mss_before"].as_u64(),
        "{rec}"
    );
    assert_eq!(rec["local"]["port"], local.port());
}

#[test]
fn forged_too_big_is_spoofed_and_ignored() {
    let topo = Topology::direct(37);
    let server = server_addr(&topo, false);
    let (_, server_ip) = ips(&topo, false);
    let scen = Scenario::start("spoofed_ptb");
    // A healthy connection alongside: it must get no verdict.
    let sink = traffic::sink_server(&topo.server, server, 1);
    let c = topo.client.run("ss-normal", move || {
        let s = traffic::send_bulk(server, 200_000, Duration::from_secs(10));
        s.local_addr().unwrap()
    });
    let _normal = c.join().unwrap();
    let _ = sink.join();
    scenarios::forge_too_big(&topo);
    let out = scen.finish(server_ip, &["spoofed_ptb"]);
    let v = first(&verdicts_for(&out.lines, server_ip), "spoofed_ptb").clone();
    assert_eq!(v["local"]["port"], 40404, "{v}");
    assert_eq!(v["evidence"]["mtu"], 576);
}
