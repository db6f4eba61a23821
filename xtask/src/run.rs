//! `cargo xtask run -- <agent args>`: build optimized and trace this host.

use std::os::unix::process::CommandExt as _;

use crate::{build, cmd};

pub fn run(args: &[String]) -> anyhow::Result<()> {
    build::build(true)?;
    let bin = cmd::root().join("target/release/sendsight");
    let mut c = cmd::command(&bin);
    c.arg("run").args(args);
    // Replace xtask so signals (Ctrl-C, SIGTERM) reach the agent directly.
    let err = c.exec();
    Err(anyhow::anyhow!("cannot start {}: {err}", bin.display()))
}
