//! `cargo xtask man [--out DIR]`: the man pages and shell completions, generated
//! from the agent's own command-line definition (agent/src/cli.rs) by its
//! `sendsight-gen` binary, so they cannot drift from the parser.

use std::path::Path;

use crate::{build, cmd};

pub fn man(out: &Path) -> anyhow::Result<()> {
    // Builds every binary of the package, sendsight-gen among them.
    build::build(false)?;
    let out = cmd::root().join(out);
    cmd::run_quiet_stdout(cmd::command(cmd::root().join("target/debug/sendsight-gen")).arg(&out))?;
    eprintln!(
        "xtask man: try `man {}`; completions for bash, zsh and fish in {}",
        out.join("man1/sendsight.1").display(),
        out.join("completions").display()
    );
    Ok(())
}
