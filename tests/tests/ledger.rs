//! The loss ledger, end to end: for every source of loss the agent has (a program's
//! full ring, the engine's socket cap, the rate limit, a sink, the decoder, the
//! bound on network-sourced too-big messages), the `loss` lines, the summary, the
//! stderr summary and `/metrics` say the same numbers; also with `--events`
//! excluding `loss` lines, and in the replay of a recording that had losses.
//!
//! The runs here are serialized (one lock): each agent sees the whole host, and a
//! concurrent flood would move one agent's counters between its scrape and its exit.

use std::{
    io::Read,
    os::unix::net::UnixListener,
    path::{Path, PathBuf},
    process::Command,
    sync::Mutex,
    time::Duration,
};

use sendsight_tests::{
    Agent, Topology,
    agent::{Output, binary},
    ledger::{self, Losses},
    require_root, scenarios,
};
use serde_json::Value;

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

/// `sockets` unconnected TCP sockets, each failing `per_socket` sends (EPIPE in the
/// socket layer), round robin, from the client namespace.
fn send_error_flood(topo: &Topology, sockets: usize, per_socket: usize) {
    topo.client
        .run("ss-ledger", move || {
            let fds: Vec<i32> = (0..sockets)
                .map(|_| unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) })
                .collect();
            assert!(fds.iter().all(|fd| *fd >= 0));
            let buf = [0u8; 64];
            for _ in 0..per_socket {
                for fd in &fds {
                    let r = unsafe {
                        libc::send(*fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL)
                    };
                    assert_eq!(r, -1);
                }
            }
            for fd in fds {
                unsafe { libc::close(fd) };
            }
        })
        .join()
        .unwrap();
}

fn scrape(addr: std::net::SocketAddr) -> Losses {
    ledger::from_metrics(&ledger::http_get(addr, "/metrics"))
}

/// Stops the agent once its last loss report is out (quiet for over the 1 s loss
/// interval), with `/metrics` read just before. The agent sees the whole host: it is
/// stopped right after two scrapes a loss interval apart agree (nothing else on the
/// host moved its counters in between).
fn stop_quiet(mut agent: Agent, metrics: std::net::SocketAddr) -> (Output, Losses) {
    std::thread::sleep(Duration::from_millis(2500));
    let mut m = scrape(metrics);
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(1200));
        let again = scrape(metrics);
        if again == m {
            break;
        }
        m = again;
    }
    let out = agent.stop();
    assert!(out.status.success(), "agent failed:\n{}", out.stderr);
    (out, m)
}

fn replay(path: &Path) -> (Vec<Value>, String) {
    let out = Command::new(binary())
        .args(["replay", "--format", "json"])
        .arg(path)
        .output()
        .expect("run replay");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let lines = sendsight_tests::validate::parse_lines(
        &format!("replay of {}", path.display()),
        &String::from_utf8(out.stdout).unwrap(),
    );
    (lines, String::from_utf8(out.stderr).unwrap())
}

fn kernel_only(l: &Losses) -> Losses {
    const AGENT: [&str; 6] = [
        "decode",
        "sockets_evicted",
        "sink",
        "rate_limited",
        "send_error_parked",
        "program_runs_skipped",
    ];
    l.iter()
        .filter(|(k, _)| !AGENT.contains(&k.as_str()))
        .map(|(k, v)| (k.clone(), *v))
        .collect()
}

fn temp(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("sendsight-ledger-{name}-{}", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

#[test]
fn every_source_agrees_live_and_in_replay() {
    require_root();
    let _serial = serial();
    let topo = Topology::direct(130);
    let metrics = ledger::free_port();
    let record = temp("rec");
    let agent = Agent::start(&[
        "--ring-bytes",
        "4096",
        "--rate-limit",
        "3",
        "--max-sockets",
        "16",
        "--metrics",
        &metrics.to_string(),
        "--record",
        record.to_str().unwrap(),
    ]);
    send_error_flood(&topo, 40, 500);
    let sent = scenarios::forge_too_big_flood(&topo, 200_000, Duration::from_secs(3));
    let (out, m) = stop_quiet(agent, metrics);

    let lines = ledger::from_lines(&out.lines);
    let summary = ledger::from_summary(out.summary());
    let stderr = ledger::from_stderr(&out.stderr);
    println!("too-big sent {sent}\nloss lines {lines:?}\nsummary    {summary:?}");
    println!("stderr     {stderr:?}\nmetrics    {m:?}");
    for source in [
        "send_error",
        "rate_limited",
        "sockets_evicted",
        "icmp_too_big_bounded",
    ] {
        assert!(
            summary.get(source).copied().unwrap_or(0) > 0,
            "the run should have lost something to {source}: {summary:?}"
        );
    }
    assert_eq!(lines, summary, "loss lines vs summary");
    assert_eq!(stderr, summary, "stderr summary vs summary");
    assert_eq!(m, summary, "/metrics vs summary");

    // The replay: the kernel's losses come back from the recording; its own ledger
    // (no rate limit, no socket cap there) agrees with itself.
    let (rlines, rstderr) = replay(&record);
    let rsummary = ledger::from_summary(
        rlines
            .iter()
            .find(|l| l["type"] == "summary")
            .expect("replay summary"),
    );
    println!("replay     {rsummary:?}");
    assert_eq!(
        kernel_only(&rsummary),
        kernel_only(&summary),
        "replay vs live"
    );
    assert_eq!(ledger::from_lines(&rlines), rsummary, "replay loss lines");
    assert_eq!(ledger::from_stderr(&rstderr), rsummary, "replay stderr");
    assert_eq!(
        out.summary()["lost_total"],
        summary
            .iter()
            .filter(|(k, _)| *k != "send_error_details")
            .map(|(_, v)| v)
            .sum::<u64>()
    );

    // A recording with a frame the decoder rejects: the replay counts it.
    let mut bytes = std::fs::read(&record).unwrap();
    let garbage = [0xeeu8; 40];
    bytes.extend_from_slice(&(garbage.len() as u32).to_le_bytes());
    bytes.extend_from_slice(&garbage);
    let bad = temp("bad");
    std::fs::write(&bad, &bytes).unwrap();
    let (blines, bstderr) = replay(&bad);
    let bsummary = ledger::from_summary(blines.iter().find(|l| l["type"] == "summary").unwrap());
    assert_eq!(bsummary.get("decode"), Some(&1), "{bsummary:?}");
    assert_eq!(ledger::from_lines(&blines), bsummary);
    assert_eq!(ledger::from_stderr(&bstderr), bsummary);
    let _ = std::fs::remove_file(&record);
    let _ = std::fs::remove_file(&bad);
}

#[test]
fn without_loss_lines_the_rest_still_agree() {
    require_root();
    let _serial = serial();
    let topo = Topology::direct(131);
    let metrics = ledger::free_port();
    let agent = Agent::start(&[
        "--ring-bytes",
        "4096",
        "--rate-limit",
        "3",
        "--events",
        "send_error,verdict",
        "--metrics",
        &metrics.to_string(),
    ]);
    send_error_flood(&topo, 8, 2000);
    let (out, m) = stop_quiet(agent, metrics);
    assert!(
        out.of_type("loss").is_empty(),
        "--events left loss lines out"
    );
    let summary = ledger::from_summary(out.summary());
    println!("summary {summary:?}\nmetrics {m:?}");
    assert!(
        summary.get("send_error").copied().unwrap_or(0) > 0,
        "{summary:?}"
    );
    assert!(
        summary.get("rate_limited").copied().unwrap_or(0) > 0,
        "{summary:?}"
    );
    assert_eq!(ledger::from_stderr(&out.stderr), summary);
    assert_eq!(m, summary);
}

#[test]
fn a_slow_collector_losses_agree() {
    require_root();
    let _serial = serial();
    let topo = Topology::direct(132);
    let metrics = ledger::free_port();
    let sock = temp("collector.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    // Reads nothing for 3 s (the agent's queue fills and drops), then everything.
    let collector = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().unwrap();
        std::thread::sleep(Duration::from_secs(3));
        let mut all = String::new();
        conn.read_to_string(&mut all).unwrap();
        all
    });
    let agent = Agent::start_expecting(
        &[
            "--output",
            &format!("unix:{}", sock.display()),
            "--queue-bytes",
            "65536",
            "--metrics",
            &metrics.to_string(),
        ],
        false,
    );
    send_error_flood(&topo, 1, 20_000);
    std::thread::sleep(Duration::from_secs(3));
    let (out, m) = stop_quiet(agent, metrics);
    let received: Vec<Value> =
        sendsight_tests::validate::parse_lines("the collector's lines", &collector.join().unwrap());
    let summary = received
        .iter()
        .find(|l| l["type"] == "summary")
        .expect("the summary reached the collector");
    let summary = ledger::from_summary(summary);
    println!("summary {summary:?}\nmetrics {m:?}");
    assert!(summary.get("sink").copied().unwrap_or(0) > 0, "{summary:?}");
    // Loss lines about the sink are themselves lines the full queue may drop: the
    // last one that arrived carries the total.
    assert_eq!(ledger::last_totals(&received)["sink"], summary["sink"]);
    assert_eq!(ledger::from_stderr(&out.stderr), summary);
    assert_eq!(m, summary);
    let _ = std::fs::remove_file(&sock);
}

#[test]
fn a_failing_stdout_still_gets_the_stderr_summary() {
    require_root();
    // /dev/full: every write fails with ENOSPC (not a reader that went away).
    let full = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/full")
        .unwrap();
    let out = Command::new(binary())
        .args(["run", "--duration", "3s", "--format", "json"])
        .stdout(full)
        .output()
        .expect("run sendsight");
    let err = String::from_utf8_lossy(&out.stderr);
    println!("{err}");
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert!(
        err.lines().any(|l| l.starts_with("sendsight: summary:")),
        "the stderr summary is printed on a failed output too:\n{err}"
    );
}
