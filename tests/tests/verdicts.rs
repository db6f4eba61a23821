//! The verdict scenario suite: real kernel, real traffic through a router namespace,
//! the real agent. Each scenario asserts the exact set of verdicts for its flows and
//! that no other verdict appears; each replays its recording to the same verdicts.
//!
//! `SENDSIGHT_FIXTURES_DIR=dir` also saves each recording (and what it must replay
//! to) there: that is how agent/tests/fixtures/ is made.

use std::{
    collections::BTreeSet,
    io::Write,
    net::{IpAddr, SocketAddr, TcpStream},
    os::fd::AsRawFd,
    path::PathBuf,
    process::Command,
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use sendsight_tests::{
    Agent, Topology,
    agent::{Output, binary},
    require_root,
    scenarios::{self, bulk_from, ips, server_advertises_full_mss},
    traffic,
};
use serde_json::{Value, json};

fn unix_ns() -> i128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i128
}

struct Scenario {
    name: &'static str,
    agent: Agent,
    record: PathBuf,
}

impl Scenario {
    fn start(name: &'static str) -> Self {
        require_root();
        let record =
            std::env::temp_dir().join(format!("sendsight-{name}-{}.ssrec", std::process::id()));
        let agent = Agent::start(&["--record", record.to_str().unwrap()]);
        Scenario {
            name,
            agent,
            record,
        }
    }

    /// Stops the agent; checks the replay matches; returns the live output.
    fn finish(mut self, peer: IpAddr, expected: &[&str]) -> Output {
        std::thread::sleep(Duration::from_millis(300));
        let out = self.agent.stop();
        assert!(
            out.status.success(),
            "{}: agent failed: {}",
            self.name,
            out.stderr
        );
        if let Some(dir) = std::env::var_os("SENDSIGHT_TEST_DUMP") {
            let mut f =
                std::fs::File::create(PathBuf::from(dir).join(format!("{}.jsonl", self.name)))
                    .unwrap();
            for l in &out.lines {
                writeln!(f, "{l}").unwrap();
            }
        }
        let live = judgements(&out.lines);
        let replay = Command::new(binary())
            .arg("replay")
            .arg(&self.record)
            .output()
            .unwrap();
        assert!(
            replay.status.success(),
            "replay failed: {}",
            String::from_utf8_lossy(&replay.stderr)
        );
        let replayed: Vec<Value> = String::from_utf8_lossy(&replay.stdout)
            .lines()
            .map(|l| serde_json::from_str(l).expect("replay prints JSON"))
            .collect();
        assert_eq!(
            live,
            judgements(&replayed),
            "{}: the replay of the recording reached different verdicts",
            self.name
        );
        let ours = verdicts_for(&out.lines, peer);
        for v in &ours {
            println!("{}", v);
        }
        let got: BTreeSet<&str> = ours
            .iter()
            .map(|v| v["verdict"].as_str().unwrap())
            .collect();
        let want: BTreeSet<&str> = expected.iter().copied().collect();
        assert_eq!(got, want, "{}: verdicts for peer {peer}", self.name);
        if let Some(dir) = std::env::var_os("SENDSIGHT_FIXTURES_DIR") {
            let dir = PathBuf::from(dir);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::copy(&self.record, dir.join(format!("{}.ssrec", self.name))).unwrap();
            let expect = json!({ "peer": peer.to_string(), "verdicts": expected });
            std::fs::File::create(dir.join(format!("{}.expect.json", self.name)))
                .unwrap()
                .write_all(serde_json::to_string_pretty(&expect).unwrap().as_bytes())
                .unwrap();
        }
        let _ = std::fs::remove_file(&self.record);
        out
    }
}

/// Verdict and path lines, the part of the output a replay must reproduce.
fn judgements(lines: &[Value]) -> Vec<Value> {
    lines
        .iter()
        .filter(|l| l["type"] == "verdict" || l["type"] == "path")
        .cloned()
        .collect()
}

/// Verdicts about the client side's flows to `peer`. (The server's own sockets get
/// verdicts too: e.g. `disconnect` when a scenario aborts the client with a reset.)
fn verdicts_for(lines: &[Value], peer: IpAddr) -> Vec<Value> {
    let p = peer.to_string();
    lines
        .iter()
        .filter(|l| l["type"] == "verdict" && l["peer"]["ip"] == p)
        .cloned()
        .collect()
}

fn first<'a>(lines: &'a [Value], verdict: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["verdict"] == verdict)
        .unwrap_or_else(|| panic!("no {verdict} verdict"))
}

/// A client connection that writes `bytes` without blocking forever (the path may
/// be a black hole), from a thread in the client namespace.
fn stuck_sender(
    topo: &Topology,
    v6: bool,
    to: SocketAddr,
    bytes: usize,
    hold: Duration,
) -> std::thread::JoinHandle<(SocketAddr, i128)> {
    let (client_ip, _) = ips(topo, v6);
    topo.client.run("ss-sender", move || {
        let s = TcpStream::connect_timeout(&to, Duration::from_secs(5)).expect("connect");
        let _ = client_ip;
        s.set_write_timeout(Some(hold)).unwrap();
        let local = s.local_addr().unwrap();
        let started = unix_ns();
        let buf = vec![0x42u8; bytes];
        let mut w = &s;
        let _ = w.write_all(&buf);
        let deadline = Instant::now() + hold;
        while Instant::now() < deadline {
            if traffic::tcp_info(&s).unacked == 0 {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Abort (RST): the connection is not left to time out on its own.
        let linger = libc::linger {
            l_onoff: 1,
            l_linger: 0,
        };
        unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_LINGER,
                (&linger as *const libc::linger).cast(),
                size_of::<libc::linger>() as u32,
            )
        };
        (local, started)
    })
}

fn server_addr(topo: &Topology, v6: bool) -> SocketAddr {
    let (_, server_ip) = ips(topo, v6);
    SocketAddr::new(server_ip, scenarios::free_tcp_port(&topo.server, server_ip))
}

fn blackhole(name: &'static str, net: u8, v6: bool) {
    let topo = Topology::routed(net, 1400);
    server_advertises_full_mss(&topo, v6);
    topo.router.as_ref().unwrap().filter_too_big();
    let server = server_addr(&topo, v6);
    let scen = Scenario::start(name);
    let sink = traffic::sink_server(&topo.server, server, 2);
    // Two connections to one destination: the path line groups them.
    let a = stuck_sender(&topo, v6, server, 200_000, Duration::from_millis(2600));
    let b = stuck_sender(&topo, v6, server, 200_000, Duration::from_millis(2600));
    let (local, started) = a.join().unwrap();
    let _ = b.join().unwrap();
    drop(sink);
    let out = scen.finish(server.ip(), &["pmtud_blackhole"]);
    let ours = verdicts_for(&out.lines, server.ip());
    let v = ours
        .iter()
        .find(|v| v["local"]["port"] == local.port() && v["verdict"] == "pmtud_blackhole")
        .expect("verdict for the first connection");
    assert_eq!(v["evidence"]["too_big_received"], 0);
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
        let s = traffic::send_bulk(server, 4 << 20, Duration::from_secs(60));
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
    let a = stuck_sender(&topo, false, server, 200_000, Duration::from_secs(12));
    let (local, started) = a.join().unwrap();
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
