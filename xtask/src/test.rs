//! `cargo xtask test`: every test. Unit tests run anywhere; the end-to-end suite
//! needs root and fails (never skips) without it. Then the kernel matrix: the
//! end-to-end tests again inside Debian's 5.10, 6.1 and 6.12 kernels under qemu
//! (`cargo xtask vmtest`), unless asked not to (`--no-vm`, SENDSIGHT_NO_VM=1).

use std::time::{Duration, Instant};

use anyhow::bail;

use crate::{build, cmd, fuzz, vmtest};

pub fn test(args: &[String], vm: bool) -> anyhow::Result<()> {
    // The end-to-end tests run the agent binary: build it (with its eBPF object).
    build::build(false)?;
    let t = Instant::now();
    // Each test process writes how many agent lines it validated against the
    // schemas (tests/src/validate.rs); start from none, sum them at the end.
    let tallies = cmd::root().join("target/schema-validated");
    let _ = std::fs::remove_dir_all(&tallies);
    let mut c = cmd::cargo();
    // Default members: agent-ebpf only builds for the BPF target.
    c.args(["test", "--no-fail-fast"]);
    c.args(args);
    // Host failures do not stop the matrix: CI reports both.
    let mut host = cmd::run(&mut c);
    eprintln!("{}", schema_tally(&tallies));
    // A short fuzz run of the decoder and the replay reader.
    if let Err(e) = fuzz::run(20) {
        host = match host {
            Ok(()) => Err(e),
            Err(h) => Err(h.context(format!("{e:#}"))),
        };
    }
    let host_s = t.elapsed().as_secs_f64();
    if !vm {
        eprintln!("xtask test: kernel matrix skipped (--no-vm / SENDSIGHT_NO_VM=1)");
        return host;
    }
    let runs = vmtest::run_matrix(&vmtest::Options {
        series: vmtest::SERIES.to_vec(),
        tests: vmtest::default_tests(),
        timeout: Duration::from_secs(vmtest::DEFAULT_TIMEOUT_S),
        bench_tax: false,
    });
    let check = vmtest::host_check();
    let runs = match runs {
        Ok(runs) => runs,
        Err(e) => {
            if let Err(h) = host {
                bail!("host tests: {h:#}\nkernel matrix: {e:#}");
            }
            return Err(e.context("kernel matrix"));
        }
    };
    vmtest::print_matrix(Some(&check), &runs);
    println!(
        "host tests: {} in {host_s:.0} s (cargo test, this kernel)",
        if host.is_ok() { "passed" } else { "FAILED" }
    );
    match (host, vmtest::verdict(&runs)) {
        (Ok(()), Ok(())) => Ok(()),
        (Err(h), Ok(())) => Err(h),
        (Ok(()), Err(v)) => Err(v),
        (Err(h), Err(v)) => bail!("host tests: {h:#}\n{v:#}"),
    }
}

/// The closing note on the suite's schema validation: every line of every agent
/// run, replay and sink the tests read, summed over the test processes.
fn schema_tally(dir: &std::path::Path) -> String {
    let (mut lines, mut failed, mut processes) = (0u64, 0u64, 0u64);
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let text = std::fs::read_to_string(entry.path()).unwrap_or_default();
        let mut n = text
            .split_whitespace()
            .map(|w| w.parse::<u64>().unwrap_or(0));
        lines += n.next().unwrap_or(0);
        failed += n.next().unwrap_or(0);
        processes += 1;
    }
    format!(
        "xtask test: schema: {lines} agent lines validated against schema/ \
         ({processes} test processes), {failed} failed"
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_schema_tally_sums_every_test_process() {
        let dir = std::env::temp_dir().join(format!("xtask-tally-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        assert!(super::schema_tally(&dir).contains(" 0 agent lines validated"));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("schema-1.txt"), "120 0\n").unwrap();
        std::fs::write(dir.join("verdicts-2.txt"), "30 2\n").unwrap();
        let note = super::schema_tally(&dir);
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(
            note.ends_with(
                "150 agent lines validated against schema/ (2 test processes), 2 failed"
            ),
            "{note}"
        );
    }
}
