//! `cargo xtask build`: the agent with its embedded eBPF object.

use crate::cmd;

pub fn build(release: bool) -> anyhow::Result<()> {
    let mut c = cmd::cargo();
    c.args(["build", "--package", "sendsight"]);
    if release {
        c.arg("--release");
    }
    // Nothing on stdout: `cargo xtask run` hands it to the agent.
    cmd::run_quiet_stdout(&mut c)
}
