//! `cargo xtask bench [--quick]`: the measurements behind BENCHMARKS.md. Setup
//! installs its peers (bpftrace, iperf3) first; this builds optimized, runs `sendsight-bench` (agent/
//! src/bin/bench.rs) and the divan pipeline benchmark. Benchmarks are commands, not
//! tests: nothing here fails because the machine was slow.

use crate::cmd;

pub fn bench(quick: bool) -> anyhow::Result<()> {
    cmd::run(cmd::cargo().args(["build", "--release", "--package", "sendsight", "--bins"]))?;
    let mut c = cmd::command(cmd::root().join("target/release/sendsight-bench"));
    if quick {
        c.arg("--quick");
    }
    cmd::run(&mut c)?;
    cmd::run(cmd::cargo().args(["bench", "--package", "sendsight", "--bench", "pipeline"]))
}
