//! Nothing is lost silently: with a deliberately tiny ring buffer and a flood of
//! send failures, every failure is either delivered or counted as lost; over the
//! ring, or over perf buffers (the transport of kernels without the ring buffer).
//!
//! Its own test binary, so no other test's send errors share the window (cargo runs
//! test binaries one after another); its two floods take turns (one lock): each
//! agent sees the whole host, and would count the other's flood as its own loss.

use std::{os::fd::AsRawFd, sync::Mutex, time::Duration};

use sendsight_tests::{Agent, Topology, agent::Output, require_root};

/// The transport the environment asks for (`SENDSIGHT_TRANSPORT`: the kernel-matrix
/// runner runs this binary once with each), else the kernel's default.
#[test]
fn delivered_plus_lost_equals_failures() {
    flood(&[], 20);
}

/// Perf buffers forced, whatever the environment says: the flag wins over it.
#[test]
fn perf_buffers_delivered_plus_lost_equals_failures() {
    let out = flood(&["--transport", "perf"], 21);
    assert_eq!(out.of_type("start")[0]["transport"]["kind"], "perf");
    // The buffers' own lost-sample count is reported next to the programs'.
    // The buffers' own count is a cross-check in the summary, never added to the
    // programs' (it can only be lower: a buffer reports losses with its next sample).
    let buffers = out.summary()["perf_buffer_lost"].as_u64();
    // Every kind's: the buffers count every record lost, not only send errors.
    let programs = out.summary()["lost_total"].as_u64().unwrap_or(0);
    assert!(
        buffers.is_some_and(|b| b <= programs),
        "perf_buffer_lost {buffers:?} vs the programs' {programs}"
    );
    let cross = out.stderr.lines().find(|l| l.contains("perf buffers: "));
    println!("{}", cross.unwrap_or_default());
    assert!(
        cross.is_some(),
        "no perf cross-check line in:\n{}",
        out.stderr
    );
}

fn flood(extra: &[&str], net: u8) -> Output {
    static SERIAL: Mutex<()> = Mutex::new(());
    // A flood that failed its asserts poisons the lock; the other still runs.
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    require_root();
    let topo = Topology::direct(net);
    // 4096 bytes: about thirty records (with perf buffers: one page per CPU); the
    // flood overruns it many times over.
    let mut args = vec!["--ring-bytes", "4096"];
    args.extend_from_slice(extra);
    let mut agent = Agent::start(&args);
    const FAILURES: u64 = 100_000;
    let tid = topo
        .client
        .run("ss-flood", || {
            // send() on a TCP socket that never connected: EPIPE, in the socket layer,
            // as fast as the kernel can say it.
            let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
            assert!(s >= 0);
            let buf = [0u8; 64];
            for _ in 0..FAILURES {
                let r =
                    unsafe { libc::send(s, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
                assert_eq!(r, -1);
            }
            let tid = unsafe { libc::gettid() } as u64;
            let _ = std::fs::File::open("/dev/null").map(|f| f.as_raw_fd());
            unsafe { libc::close(s) };
            tid
        })
        .join()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let out = agent.stop();
    assert!(out.status.success(), "{}", out.stderr);
    let delivered = out
        .of_type("send_error")
        .iter()
        .filter(|l| l["process"]["tid"] == tid)
        .count() as u64;
    let summary = out.summary();
    let lost = summary["lost"]["send_error"].as_u64().unwrap_or(0);
    let loss_lines: u64 = out
        .of_type("loss")
        .iter()
        .filter(|l| l["source"] == "send_error")
        .map(|l| l["lost"].as_u64().unwrap())
        .sum();
    let transport = &out.of_type("start")[0]["transport"];
    println!(
        "transport={} failures={FAILURES} delivered={delivered} lost={lost} (loss lines sum \
         {loss_lines})",
        transport["kind"]
    );
    assert!(lost > 0, "a 4 KiB ring should have overflowed");
    assert!(delivered > 0, "some events should have been delivered");
    assert_eq!(
        delivered + lost,
        FAILURES,
        "every failure delivered or counted"
    );
    assert_eq!(loss_lines, lost, "loss lines add up to the summary's count");
    out
}
