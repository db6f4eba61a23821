//! Signals and lifecycle: SIGTERM detaches every program (none of ours stays loaded),
//! flushes and prints the summary; a second signal exits at once.
//! Its own test binary: no other agent may be running while programs are counted.

use std::time::{Duration, Instant};

use sendsight_tests::{Agent, require_root};

/// Names of our programs as the kernel lists them (truncated to 15 characters).
const OURS: &[&str] = &[
    "sock_send_raw",
    "netif_rx_raw",
    "tcp_retransmit_",
    "sock_send_lengt",
    "sys_exit",
    "sys_exit_call",
    "netif_rx_btf",
    "netif_receive_s",
    "icmp_send",
    "inet_sock_set_s",
    "inet_sk_error_r",
    "tcp_cong_state_",
    "retransmit_raw",
    "set_state_raw",
    "error_report_ra",
    "cong_state_raw",
    "fexit_sendto",
    "fexit_write",
    "fexit_sendmsg",
    "fexit_writev",
    "fexit_sendmmsg",
    "fexit_connect",
    "fexit_bind",
    "secure_computin",
];

/// The fewest of `OURS` any kernel of the matrix attaches (Debian's 5.10: the raw
/// retransmit, sys_exit and inet_sock_set_state, and netif_receive_skb's tp_btf):
/// what shows the counting sees the agent's programs at all.
const MIN_LOADED: usize = 4;

/// IDs of loaded programs with our names. Another agent on the machine (an
/// operator's, or a leftover of another suite) may have some: compare IDs, not names.
fn loaded_ours() -> std::collections::BTreeSet<u32> {
    aya::programs::loaded_programs()
        .filter_map(|p| p.ok())
        .filter(|p| p.name_as_str().is_some_and(|n| OURS.contains(&n)))
        .map(|p| p.id())
        .collect()
}

#[test]
fn sigterm_detaches_everything_and_second_signal_is_immediate() {
    require_root();
    let before = loaded_ours();
    let mut agent = Agent::start(&[]);
    let during: std::collections::BTreeSet<u32> =
        loaded_ours().difference(&before).copied().collect();
    assert!(
        during.len() >= MIN_LOADED,
        "expected our programs loaded while running, got {during:?}"
    );
    let out = agent.stop_with(libc::SIGTERM);
    assert!(out.status.success(), "{}", out.stderr);
    assert_eq!(out.lines.last().unwrap()["type"], "summary");
    assert!(
        out.stderr
            .contains("SIGTERM received; all programs detached"),
        "{}",
        out.stderr
    );
    // Detached before the summary; freed by the kernel right after (RCU).
    let ours_left = |set: &std::collections::BTreeSet<u32>| -> Vec<u32> {
        loaded_ours().intersection(set).copied().collect()
    };
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ours_left(&during).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let after = ours_left(&during);
    assert!(after.is_empty(), "still loaded after SIGTERM: {after:?}");

    // Two signals back to back: the second one does not wait for the clean path.
    // Sent once the agent says it is tracing (its signal handling is in place by then):
    // counting its programs instead raced its start-up under emulation.
    let before = loaded_ours();
    let mut agent = Agent::start(&[]);
    let second: std::collections::BTreeSet<u32> =
        loaded_ours().difference(&before).copied().collect();
    assert!(
        second.len() >= MIN_LOADED,
        "expected our programs loaded while running, got {second:?}"
    );
    unsafe { libc::kill(agent.pid() as i32, libc::SIGINT) };
    let t = Instant::now();
    let out = agent.stop_with(libc::SIGINT);
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    assert!(
        matches!(out.status.code(), Some(0) | Some(130)),
        "{}: {}",
        out.status,
        out.stderr
    );
    // Exiting closed every link and program fd; the kernel frees them after an RCU
    // grace period, so allow it a moment.
    let deadline = Instant::now() + Duration::from_secs(5);
    while !ours_left(&second).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(
        ours_left(&second).is_empty(),
        "still loaded after two signals: {:?}",
        ours_left(&second)
    );
}
