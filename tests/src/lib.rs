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
