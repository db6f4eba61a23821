//! The end-to-end harness: real network namespaces joined by veth pairs, nftables
//! rules inside them, real sockets opened from threads that entered a namespace, and
//! the real `sendsight` binary running against the real kernel.
//!
//! Everything a test creates is torn down on drop, including when the test panics.
//! Addresses come from 198.18.0.0/15 (RFC 2544, benchmarking) and 2001:db8::/32
//! (documentation): never anything reachable outside the namespaces.
//!
//! Privileged by nature: a test that cannot create namespaces or load programs fails
//! with the reason; it is never skipped.

pub mod agent;
pub mod ledger;
pub mod netns;
pub mod recorded;
pub mod scenarios;
pub mod traffic;
pub mod validate;

pub use agent::Agent;
pub use netns::{Netns, Topology};

/// Fails the test with a clear message unless we run with the privileges the
/// end-to-end suite needs (root: netns, nftables, eBPF).
pub fn require_root() {
    let euid = unsafe { libc::geteuid() };
    assert_eq!(
        euid, 0,
        "end-to-end tests create network namespaces and load eBPF programs: run them as \
         root (`sudo cargo xtask test`); euid is {euid}"
    );
}

/// Now, in Unix-epoch nanoseconds (the agent's `ts_ns`).
pub fn unix_ns() -> i128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as i128
}

/// Runs a command to completion, panicking with its output when it fails.
pub fn sh(program: &str, args: &[&str]) -> String {
    let out = std::process::Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| {
            panic!("cannot run {program}: {e} (is it installed? `cargo xtask setup` installs it)")
        });
    assert!(
        out.status.success(),
        "{program} {} failed ({}):\n{}{}",
        args.join(" "),
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Does this kernel have the tracepoint? None when no tracefs is mounted to ask.
pub fn tracepoint_exists(group: &str, name: &str) -> Option<bool> {
    ["/sys/kernel/tracing", "/sys/kernel/debug/tracing"]
        .iter()
        .map(std::path::Path::new)
        .find(|root| root.join("events").is_dir())
        .map(|root| root.join("events").join(group).join(name).is_dir())
}

/// A probe's entry in the agent's `start` line.
pub fn started_probe<'a>(out: &'a agent::Output, probe: &str) -> &'a serde_json::Value {
    let start = out.of_type("start");
    assert_eq!(start.len(), 1, "one start line; stderr: {}", out.stderr);
    start[0]["probes"]
        .as_array()
        .expect("start line lists its probes")
        .iter()
        .find(|p| p["probe"] == probe)
        .unwrap_or_else(|| panic!("{probe} missing from the start line: {}", start[0]))
}

/// Whether the agent sees sends at the socket layer: the `sock:sock_send_length`
/// tracepoint (Linux 6.3+), the one source of successful sends (`udp_send`) and of
/// the "socket" source of send errors. On kernels without it (Debian's 5.10 and 6.1)
/// the agent must report `send_socket` unavailable; strict both ways: where the
/// tracepoint exists the agent must have attached it.
pub fn socket_sends_seen(out: &agent::Output) -> bool {
    let probe = started_probe(out, "send_socket");
    let state = probe["state"].as_str().unwrap_or("?");
    let exists = tracepoint_exists("sock", "sock_send_length");
    if exists == Some(false)
        || (exists.is_none()
            && probe["note"]
                .as_str()
                .is_some_and(|n| n.contains("does not exist")))
    {
        assert_eq!(state, "unavailable", "no sock_send_length here: {probe}");
        false
    } else {
        assert_ne!(
            state, "unavailable",
            "sock:sock_send_length exists but the agent did not attach it: {probe}"
        );
        true
    }
}
