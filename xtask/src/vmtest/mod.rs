//! `cargo xtask vmtest [--kernel 5.10|6.1|6.12|all]`: the kernel matrix. Boots Debian's
//! cloud kernels under qemu (software emulation: TCG), runs `sendsight check` and
//! the end-to-end suite inside, and prints kernel x probe x attach x state plus
//! per-test results and the time each kernel took.
//!
//! Everything comes from Debian's package registry and is cached under
//! `target/vmtest/`: the kernel packages (`apt-get download` + `dpkg-deb -x`, once per
//! package version), then per run an initramfs (a newc cpio written here, gzip'd)
//! holding busybox, the release agent, the test binaries, the host tools they run
//! (ip, nft, ss, ping, setpriv, unshare, sysctl, rsyslogd, dash) with their shared
//! libraries, and the kernel modules the tests need (veth, nf_tables...,
//! dependency order from each module's own `.modinfo`: the package has no
//! modules.dep, depmod runs at install time).
//!
//! The guest's /init prints `SENDSIGHT-VMTEST-*` markers on the serial console;
//! the whole console goes to `target/vmtest/<kernel>.log`.
//!
//! In order of a run: [`kernels`] (which Debian kernels, downloaded and unpacked),
//! [`modules`] (the kernel modules the guest loads), [`initramfs`] (building it),
//! [`boot`](mod@boot) (qemu and its console), [`report`] (what the guest reported) and
//! [`matrix`] (the tables).

mod boot;
mod initramfs;
mod kernels;
mod matrix;
mod modules;
mod report;

use std::{
    collections::BTreeMap,
    fs,
    path::{Path, PathBuf},
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::Value;

use self::{
    boot::boot,
    initramfs::{common_tree, runs_file, write_initramfs},
    kernels::obtain_kernel,
};
pub use self::{
    kernels::{SERIES, Series, series},
    matrix::print_matrix,
    report::{KernelRun, host_check},
};
use crate::{build, cmd};

fn say(msg: &str) {
    eprintln!("xtask vmtest: {msg}");
}

/// Test binaries run in the guest by default: every one in tests/tests, read from
/// the directory so that a new file is never left out of the matrix.
pub fn default_tests() -> Vec<String> {
    let dir = cmd::root().join("tests/tests");
    let mut names: Vec<String> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            name.strip_suffix(".rs").map(str::to_string)
        })
        .collect();
    names.sort();
    names
}

/// A second run of some test binaries with extra environment in the guest (the agents
/// the tests spawn inherit it); its results are rows of their own, `bin::test [name]`.
pub struct Pass {
    pub name: &'static str,
    pub env: &'static [(&'static str, &'static str)],
    pub tests: &'static [&'static str],
}

/// The passes after the plain run; one line each.
pub const PASSES: &[Pass] = &[Pass {
    name: "perf",
    env: &[("SENDSIGHT_TRANSPORT", "perf")],
    tests: &["flood", "verdicts"],
}];

/// Per-kernel limit on the whole boot-check-test-poweroff (the whole suite and its
/// passes took 806 s on 5.10 and 1176 s on 6.12 under TCG, see the README), with room
/// for a few retries; and per test inside (the slowest takes about 45 s under TCG).
pub const DEFAULT_TIMEOUT_S: u64 = 1500;
const PER_TEST_TIMEOUT_S: u64 = 120;

pub struct Options {
    pub series: Vec<Series>,
    pub tests: Vec<String>,
    pub timeout: Duration,
    /// The syscall tax inside each guest instead of the tests.
    pub bench_tax: bool,
}

/// What /init runs for `--bench-tax` (its `@bench` line): rounds alternate the order
/// of the four configurations; fewer calls per timing than on the host (emulation).
const BENCH_TAX: &str = "@bench --tax-only --rounds 6 --calls 100000\n";

fn vm_dir() -> PathBuf {
    cmd::root().join("target/vmtest")
}

/// Runs the matrix and prints it; Err when any kernel failed in any way.
pub fn vmtest(opts: &Options) -> anyhow::Result<()> {
    let runs = run_matrix(opts)?;
    if opts.bench_tax {
        return bench_tables(&runs);
    }
    let host = host_check();
    print_matrix(Some(&host), &runs);
    verdict(&runs)
}

/// Err naming every kernel that failed.
pub fn verdict(runs: &[KernelRun]) -> anyhow::Result<()> {
    let failed: Vec<String> = runs
        .iter()
        .filter(|r| !r.passed())
        .map(|r| {
            let mut why = r.errors.clone();
            if r.check_ok == Some(false) {
                why.push("check says NOT OK".into());
            }
            let bad: Vec<&str> = r
                .tests
                .iter()
                .filter(|t| !t.ok())
                .map(|t| t.name.as_str())
                .collect();
            if !bad.is_empty() {
                why.push(format!("failed: {}", bad.join(", ")));
            }
            format!(
                "{} ({}): {}; log {}",
                r.label,
                r.package,
                why.join("; "),
                r.log
                    .as_ref()
                    .map_or("none".into(), |p| p.display().to_string())
            )
        })
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        bail!("kernel matrix failed:\n  {}", failed.join("\n  "))
    }
}

/// Builds everything, then boots each kernel in turn.
pub fn run_matrix(opts: &Options) -> anyhow::Result<Vec<KernelRun>> {
    let dir = vm_dir();
    fs::create_dir_all(&dir)?;
    // One run at a time per target dir: runs share the stage, initramfs and logs.
    let _lock = lock(&dir.join(".lock"))?;
    // Kernels first: a missing kernel fails before minutes of building.
    let mut kernels = Vec::new();
    for s in &opts.series {
        kernels
            .push(obtain_kernel(s).with_context(|| format!("cannot obtain a {} kernel", s.label))?);
    }
    // The debug build for the host's row; the release build for the guests: under
    // emulation the debug agent's start-up (BTF parsing) costs seconds per agent.
    build::build(false)?;
    build::build(true)?;
    let tests = build_test_binaries(&opts.tests)?;
    let common = common_tree(&dir, &tests).context("preparing the initramfs contents")?;
    let mut runs = Vec::new();
    for k in &kernels {
        let t = Instant::now();
        let initrd = dir.join(format!("initramfs-{}.cpio.gz", k.series.label));
        let tree = k
            .module_tree(&dir.join(format!("modules-{}", k.series.label)))
            .with_context(|| format!("kernel modules of {}", k.package))?;
        let names: Vec<&str> = tests
            .iter()
            .map(|(n, _)| n.as_str())
            .filter(|n| !k.series.open.iter().any(|(o, _)| o == n))
            .collect();
        let runs_text = if opts.bench_tax {
            BENCH_TAX.to_string()
        } else {
            runs_file(&names, PASSES)
        };
        write_initramfs(&initrd, &common, &tree, &runs_text)?;
        say(&format!(
            "initramfs for {} ready ({} MiB, {:.1} s)",
            k.release,
            fs::metadata(&initrd)?.len() >> 20,
            t.elapsed().as_secs_f64()
        ));
        let mut run = boot(k, &initrd, opts.timeout);
        for (bin, why) in k.series.open {
            if tests.iter().any(|(n, _)| n == bin) {
                run.tests.push(report::TestRow {
                    name: format!("{bin}::*"),
                    result: format!("OPEN: {why}"),
                    secs: 0.0,
                });
            }
        }
        runs.push(run);
    }
    Ok(runs)
}

/// The tax tables the guests printed (between the BENCH markers of each console
/// log), shown and written to target/vmtest/tax-<kernel>.md; Err for a guest that
/// printed none.
fn bench_tables(runs: &[KernelRun]) -> anyhow::Result<()> {
    let mut missing = Vec::new();
    for r in runs {
        let log = r
            .log
            .as_ref()
            .and_then(|p| fs::read(p).ok())
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default();
        let table: Vec<&str> = log
            .lines()
            .skip_while(|l| !l.contains("SENDSIGHT-VMTEST-BENCH-BEGIN"))
            .skip(1)
            .take_while(|l| !l.contains("SENDSIGHT-VMTEST-BENCH-END"))
            .collect();
        if table.iter().any(|l| l.starts_with("Median")) {
            let text = table.join("\n");
            println!("\n## {} ({})\n\n{text}", r.label, r.release);
            fs::write(vm_dir().join(format!("tax-{}.md", r.label)), text + "\n")?;
        } else {
            missing.push(format!(
                "{}: no table (log {})",
                r.label,
                r.log
                    .as_ref()
                    .map_or("none".into(), |p| p.display().to_string())
            ));
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        bail!(
            "the syscall tax was not measured:\n  {}",
            missing.join("\n  ")
        )
    }
}

/// An exclusive flock on `path`, held until the file is dropped; waits (saying so)
/// while another run holds it.
fn lock(path: &Path) -> anyhow::Result<fs::File> {
    use std::os::fd::AsRawFd as _;
    let f = fs::File::create(path).with_context(|| format!("{}", path.display()))?;
    // SAFETY: flock on a file descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        say(&format!(
            "waiting for another vmtest run in this target dir ({})",
            path.display()
        ));
        // SAFETY: as above.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            bail!(
                "flock {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(f)
}

/// Builds the end-to-end test binaries; (name, executable) of the selected ones.
fn build_test_binaries(selected: &[String]) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut c = cmd::cargo();
    c.args([
        "test",
        "-p",
        "sendsight-tests",
        "--no-run",
        "--message-format=json",
    ]);
    c.stdout(Stdio::piped());
    let out = c
        .output()
        .context("cargo test -p sendsight-tests --no-run")?;
    if !out.status.success() {
        bail!("building the end-to-end tests failed: {}", out.status);
    }
    let mut found = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if v["reason"] != "compiler-artifact" || v["target"]["kind"] != serde_json::json!(["test"])
        {
            continue;
        }
        if let (Some(name), Some(exe)) = (v["target"]["name"].as_str(), v["executable"].as_str()) {
            found.insert(name.to_string(), PathBuf::from(exe));
        }
    }
    let mut out = Vec::new();
    for name in selected {
        let exe = found.get(name).with_context(|| {
            format!(
                "no end-to-end test binary {name:?} (have: {})",
                found.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })?;
        out.push((name.clone(), exe.clone()));
    }
    Ok(out)
}
