//! Operability: sinks (file with rotation, a real rsyslog over TCP, a collector that
//! is gone), filters, metrics, a closed stdout, and bad input with precise messages.

use std::{
    io::{BufRead, BufReader, Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

use sendsight_tests::{
    Agent, Topology,
    agent::binary,
    require_root,
    scenarios::{self, ips},
    traffic,
};
use serde_json::Value;

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sendsight-op-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Some events of every common kind on a fresh direct topology.
fn make_traffic(net: u8) -> Topology {
    let topo = Topology::direct(net);
    let f = scenarios::epipe_after_reset(&topo, false);
    assert!(f.errno > 0);
    topo
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn lines_of(path: &Path) -> Vec<Value> {
    sendsight_tests::validate::parse_lines(
        &path.display().to_string(),
        &std::fs::read_to_string(path).unwrap_or_default(),
    )
}

#[test]
fn file_sink_is_private_and_rotates() {
    require_root();
    let dir = tmpdir("file");
    let path = dir.join("out.jsonl");
    let spec = format!("file:{}", path.display());
    let mut agent = Agent::start_expecting(
        &[
            "--output",
            &spec,
            "--rotate-bytes",
            "4096",
            "--rotate-keep",
            "3",
        ],
        false,
    );
    let _topo = make_traffic(70);
    let _topo2 = make_traffic(71);
    let out = agent.stop();
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        out.lines.is_empty(),
        "stdout must stay empty with a file output"
    );
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let rotated = dir.join("out.jsonl.1");
    assert!(
        rotated.exists(),
        "no rotation at 4 KiB: {:?}",
        std::fs::read_dir(&dir).unwrap().collect::<Vec<_>>()
    );
    assert!(
        !dir.join("out.jsonl.4").exists(),
        "keeps 3 old files at most"
    );
    let mut all = Vec::new();
    for i in (1..=3).rev() {
        all.extend(lines_of(&dir.join(format!("out.jsonl.{i}"))));
    }
    all.extend(lines_of(&path));
    assert_eq!(all.last().unwrap()["type"], "summary");
    assert!(all.iter().any(|l| l["type"] == "send_error"));
}

#[test]
fn full_disk_is_a_clear_error_and_counted_loss() {
    require_root();
    let dir = tmpdir("full");
    // An 8 KiB tmpfs: a dozen lines fill it.
    let ok = Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=8k", "tmpfs"])
        .arg(&dir)
        .status()
        .unwrap()
        .success();
    assert!(ok, "cannot mount a small tmpfs");
    let path = dir.join("out.jsonl");
    let spec = format!("file:{}", path.display());
    let mut agent = Agent::start_expecting(&["--output", &spec], false);
    let _t = make_traffic(72);
    let _t2 = make_traffic(73);
    let _t3 = make_traffic(74);
    let out = agent.stop();
    let _ = Command::new("umount").arg(&dir).status();
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        out.stderr.contains("No space left on device")
            && out.stderr.contains("dropped and counted"),
        "{}",
        out.stderr
    );
    let summary = out
        .stderr
        .lines()
        .find(|l| l.contains("sendsight: summary"))
        .unwrap();
    let sink = sendsight_tests::ledger::from_stderr(&out.stderr)
        .get("sink")
        .copied()
        .unwrap_or(0);
    assert!(sink > 0, "{summary}");
}

struct Rsyslog {
    child: Child,
    out: PathBuf,
}

impl Rsyslog {
    fn start(dir: &Path, port: u16) -> Self {
        let out = dir.join("received.jsonl");
        let conf = dir.join("rsyslog.conf");
        std::fs::write(
            &conf,
            format!(
                r#"global(workDirectory="{dir}" maxMessageSize="64k")
module(load="imtcp")
template(name="raw" type="string" string="%rawmsg%\n")
ruleset(name="sendsight") {{
    action(type="omfile" file="{out}" template="raw")
}}
input(type="imtcp" address="127.0.0.1" port="{port}" ruleset="sendsight")
"#,
                dir = dir.display(),
                out = out.display()
            ),
        )
        .unwrap();
        let child = Command::new("rsyslogd")
            .args(["-n", "-f"])
            .arg(&conf)
            .arg("-i")
            .arg(dir.join("rsyslogd.pid"))
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("rsyslogd (Debian's rsyslog; `cargo xtask setup` installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "rsyslogd did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Rsyslog { child, out }
    }
}

impl Drop for Rsyslog {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn rsyslog_receives_every_line_in_order() {
    require_root();
    let dir = tmpdir("rsyslog");
    let port = free_port();
    let rsyslog = Rsyslog::start(&dir, port);
    let spec = format!("tcp:127.0.0.1:{port}");
    let mut agent = Agent::start_expecting(&["--output", &spec], false);
    let _t = make_traffic(75);
    let out = agent.stop();
    assert!(out.status.success(), "{}", out.stderr);
    // rsyslog writes asynchronously: wait for the summary to land.
    let deadline = Instant::now() + Duration::from_secs(10);
    let lines = loop {
        let l = lines_of(&rsyslog.out);
        if l.last().is_some_and(|v| v["type"] == "summary") || Instant::now() > deadline {
            break l;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!lines.is_empty(), "rsyslog wrote nothing");
    assert_eq!(lines[0]["type"], "start", "first line");
    let summary = lines.last().unwrap();
    assert_eq!(summary["type"], "summary", "last line");
    // Intact and complete: every event the agent counted is a line, once.
    let events: u64 = lines
        .iter()
        .filter(|l| {
            !["start", "summary", "loss", "verdict", "path"].contains(&l["type"].as_str().unwrap())
        })
        .count() as u64;
    assert_eq!(
        events,
        summary["events_total"].as_u64().unwrap(),
        "events lost or duplicated in transit"
    );
    assert_eq!(summary["lost"]["sink"], 0);
    // In order: event timestamps never go backwards within one CPU's stream.
    for l in &lines {
        assert_eq!(l["schema"], "sendsight/1");
        assert!(l["host"]["name"].as_str().is_some() && l["host"]["boot_id"].as_str().is_some());
    }
}

#[test]
fn gone_collector_never_blocks_and_drops_are_counted() {
    require_root();
    let port = free_port(); // nothing listens there
    let spec = format!("tcp:127.0.0.1:{port}");
    let mut agent = Agent::start_expecting(&["--output", &spec, "--queue-bytes", "65536"], false);
    let _t = make_traffic(76);
    let _t2 = make_traffic(77);
    let t = Instant::now();
    let out = agent.stop();
    assert!(
        t.elapsed() < Duration::from_secs(10),
        "exit blocked on the collector"
    );
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        out.stderr.contains("queueing (bounded) and retrying"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr
            .contains("not delivered to the collector at exit"),
        "{}",
        out.stderr
    );
}

#[test]
fn filters_shape_the_output() {
    require_root();
    let topo = Topology::direct(78);
    let (_, server_ip) = ips(&topo, false);
    let mut agent = Agent::start(&[
        "--cidr",
        &format!("{server_ip}/32"),
        "--events",
        "send_error,verdict",
    ]);
    let f = scenarios::epipe_after_reset(&topo, false);
    let _other = make_traffic(79);
    let out = agent.stop();
    let body: Vec<&Value> = out
        .lines
        .iter()
        .filter(|l| l["type"] != "start" && l["type"] != "summary")
        .collect();
    assert!(!body.is_empty());
    for l in &body {
        assert!(l["type"] == "send_error" || l["type"] == "verdict", "{l}");
        assert!(
            l["peer"]["ip"] == server_ip.to_string() || l["local"]["ip"] == server_ip.to_string(),
            "outside the CIDR: {l}"
        );
    }
    assert!(body.iter().any(|l| l["process"]["tid"] == f.tid));
}

#[test]
fn metrics_endpoint_counts_events() {
    require_root();
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let mut agent = Agent::start(&["--metrics", &addr.to_string()]);
    let _t = make_traffic(80);
    std::thread::sleep(Duration::from_millis(300));
    let get = |path: &str| {
        let mut s = TcpStream::connect(addr).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut body = String::new();
        s.read_to_string(&mut body).unwrap();
        body
    };
    let health = get("/healthz");
    assert!(
        health.starts_with("HTTP/1.1 200") && health.ends_with("ok\n"),
        "{health}"
    );
    let metrics = get("/metrics");
    agent.stop();
    assert!(
        metrics.contains("sendsight_events_total{type=\"send_error\"}"),
        "{metrics}"
    );
    assert!(
        metrics.contains("sendsight_verdicts_total{verdict=\"send_error\"}"),
        "{metrics}"
    );
}

#[test]
fn closed_stdout_exits_cleanly() {
    require_root();
    let mut child = Command::new(binary())
        .arg("run")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert!(first.contains("\"type\":\"start\""));
    // The reader is gone (like `sendsight run | head -1`); the next lines fail.
    let _t = make_traffic(81);
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "agent kept running with its stdout closed"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let mut err = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut err)
        .unwrap();
    assert!(status.success(), "{status}: {err}");
    assert!(err.contains("output closed by its reader"), "{err}");
}

/// One line on stderr, this exit code, this text.
fn bad(args: &[&str], code: i32, needle: &str) {
    let out = Command::new(binary()).args(args).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(code), "{args:?}: {err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(lines.len(), 1, "{args:?}: one error line expected: {err}");
    assert!(lines[0].contains(needle), "{args:?}: {err}");
}

#[test]
fn bad_input_is_explained() {
    require_root();
    bad(&["run", "--cidr", "10.0.0.0/33"], 2, "is not a CIDR");
    bad(
        &["run", "--events", "retransmits"],
        2,
        "unknown event type \"retransmits\"",
    );
    bad(&["run", "--duration", "-3s"], 2, "duration");
    bad(&["run", "--output", "udp:1.2.3.4"], 2, "is not an output");
    bad(&["run", "--output", "tcp:localhost"], 2, "HOST:PORT");
    bad(
        &["run", "--metrics", "nowhere"],
        2,
        "invalid socket address",
    );
    bad(
        &["run", "--output", "file:/nonexistent-dir/x.jsonl"],
        1,
        "/nonexistent-dir/x.jsonl: No such file or directory",
    );
    bad(
        &["run", "--btf", "/nonexistent.btf"],
        1,
        "cannot read BTF at /nonexistent.btf",
    );
    // check reports on stdout (it is its output), and still exits non-zero.
    let out = Command::new(binary())
        .args(["check", "--btf", "/etc/hostname"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("malformed BTF") && text.contains("NOT OK"),
        "{text}"
    );
    bad(&["replay", "/etc/hostname"], 1, "not a sendsight recording");
    bad(
        &["replay", "/nonexistent.ssrec"],
        1,
        "No such file or directory",
    );
}

#[test]
fn unmounted_tracefs_without_mount_rights_is_explained() {
    require_root();
    // A private mount namespace without tracefs, and no CAP_SYS_ADMIN to mount it.
    let out = Command::new("unshare")
        .args(["-m", "--propagation", "private", "sh", "-c"])
        .arg(format!(
            "umount /sys/kernel/tracing 2>/dev/null; umount /sys/kernel/debug/tracing 2>/dev/null; \
             umount /sys/kernel/debug 2>/dev/null; \
             exec setpriv --inh-caps=-sys_admin --bounding-set=-sys_admin {} run --duration 1s",
            binary().display()
        ))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    // Refused up front (77), naming the capability and the command that fixes it.
    assert_eq!(out.status.code(), Some(77), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("CAP_SYS_ADMIN") && err.contains("mount -t tracefs nodev /sys/kernel/tracing"),
        "{err}"
    );
}

#[test]
fn rate_limit_counts_what_it_drops() {
    require_root();
    let topo = Topology::direct(82);
    let (_, server_ip) = ips(&topo, false);
    let server = SocketAddr::new(server_ip, 5301);
    topo.server.nft(
        "table inet loss { chain input { type filter hook input priority 0; policy accept;
            tcp dport 5301 meta length > 200 numgen inc mod 5 == 0 drop; }
        }",
    );
    let started = Instant::now();
    let mut agent = Agent::start(&["--rate-limit", "3", "--events", "retransmit,loss"]);
    let sink = traffic::sink_server(&topo.server, server, 1);
    let c = topo.client.run("ss-ratelimit", move || {
        let s = traffic::send_bulk(server, 4 << 20, Duration::from_secs(30));
        (traffic::tcp_info(&s), s.local_addr().unwrap())
    });
    let (info, local) = c.join().unwrap();
    let _ = sink.join();
    std::thread::sleep(Duration::from_millis(300));
    let out = agent.stop();
    let ours = out
        .of_type("retransmit")
        .iter()
        .filter(|l| l["local"]["port"] == local.port())
        .count() as u64;
    let summary = out.summary();
    let limited = summary["lost"]["rate_limited"].as_u64().unwrap();
    assert!(info.total_retrans > 10, "{info:?}");
    assert!(limited > 0, "nothing rate-limited: {summary}");
    // The limit over the run's whole length (from before the agent's start): the
    // transfer takes about a second natively, many under emulation.
    let secs = started.elapsed().as_secs() + 1;
    assert!(
        ours <= 3 * secs,
        "{ours} lines passed a 3/s limit in a {secs} s run"
    );
}
