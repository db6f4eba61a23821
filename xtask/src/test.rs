//! `cargo xtask test`: every test. Unit tests run anywhere; the end-to-end suite
//! needs root and fails (never skips) without it.

use crate::{build, cmd};

pub fn test(args: &[String]) -> anyhow::Result<()> {
    // The end-to-end tests run the agent binary: build it (with its eBPF object).
    build::build(false)?;
    let mut c = cmd::cargo();
    // Default members: agent-ebpf only builds for the BPF target.
    c.args(["test", "--no-fail-fast"]);
    c.args(args);
    cmd::run(&mut c)
}
