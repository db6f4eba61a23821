//! The short fuzz run `cargo xtask test` includes: each cargo-fuzz target (fuzz/)
//! for a few seconds from its seed corpus. A crash fails the run (libFuzzer exits
//! non-zero and leaves the input under fuzz/artifacts/).

use std::process::Stdio;

use anyhow::{Context as _, bail};

use crate::{cmd, toolchain::EBPF_NIGHTLY};

pub const TARGETS: &[&str] = &["decode", "replay"];

/// Runs every target for `secs`; returns (target, executions) pairs.
pub fn run(secs: u32) -> anyhow::Result<Vec<(&'static str, u64)>> {
    let mut out = Vec::new();
    for target in TARGETS {
        let o = cmd::command("cargo")
            .arg(format!("+{EBPF_NIGHTLY}"))
            .args([
                "fuzz",
                "run",
                target,
                "--",
                &format!("-max_total_time={secs}"),
            ])
            // The fuzz targets use the agent's library only: no eBPF object needed.
            .env("SENDSIGHT_SKIP_EBPF", "1")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .output()
            .with_context(|| format!("running cargo fuzz {target}"))?;
        let log = String::from_utf8_lossy(&o.stderr);
        if !o.status.success() {
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            bail!(
                "fuzz target {target} failed ({}):\n{}",
                o.status,
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        // libFuzzer ends with "Done N runs in S second(s)".
        let runs = log
            .lines()
            .rev()
            .find_map(|l| {
                l.split("Done ")
                    .nth(1)?
                    .split_whitespace()
                    .next()?
                    .parse()
                    .ok()
            })
            .unwrap_or(0);
        eprintln!("xtask test: fuzz {target}: {runs} executions in {secs} s, no crash");
        out.push((*target, runs));
    }
    Ok(out)
}
