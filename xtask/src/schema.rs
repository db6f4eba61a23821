//! `cargo xtask schema`: writes schema/<type>.schema.json, generated from the types
//! that serialize the lines (agent/src/schema.rs) by the agent's `sendsight-gen
//! schema`. The files are checked in; the agent's test `schema::tests` fails when
//! they differ from what the types generate.

use crate::cmd;

pub fn schema() -> anyhow::Result<()> {
    let dir = cmd::root().join("schema");
    cmd::run_quiet_stdout(
        cmd::cargo()
            .args([
                "run",
                "--quiet",
                "-p",
                "sendsight",
                "--bin",
                "sendsight-gen",
                "--",
            ])
            .arg("--schema")
            .arg(&dir)
            // The generator uses the agent's library only: no eBPF object needed.
            .env("SENDSIGHT_SKIP_EBPF", "1"),
    )?;
    eprintln!("xtask schema: wrote {}/*.schema.json", dir.display());
    Ok(())
}
