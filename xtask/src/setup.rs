//! Installs what a command needs, when missing, and nothing more: `run`/`build`
//! get the toolchains, LLVM and bpf-linker; test, kernel-matrix and benchmark tools
//! come only with `test`, `vmtest` and `bench`. Each step checks first, so a second
//! run is quick and installs nothing.
//!
//! stdout is left to the command that follows (`cargo xtask run ... | jq`): setup
//! says what it does on stderr, and the installers' own output goes there too. It
//! never removes a package the machine has: apt is asked first what an install
//! would do, and refused the removals (`--no-remove`).

use std::time::Instant;

use anyhow::{Context as _, bail};

use crate::{cmd, toolchain::*};

/// What setup prepares for: each command asks for what it needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Purpose {
    /// Build and run the agent: toolchains, LLVM, bpf-linker.
    Run,
    /// `cargo xtask test --no-vm`: + the end-to-end tools and cargo-fuzz.
    HostTest,
    /// `cargo xtask test`: + qemu and busybox for the kernel matrix.
    Test,
    /// `cargo xtask vmtest`: the build, the end-to-end tools and qemu.
    Vmtest,
    /// `cargo xtask bench`: the build, the network tools, bpftrace and iperf3.
    Bench,
    /// Everything any command needs.
    All,
}

impl Purpose {
    /// The Debian packages it needs.
    pub fn packages(self) -> Vec<&'static str> {
        let mut v = BUILD_PACKAGES.to_vec();
        let (test, vm, bench) = match self {
            Purpose::Run => (false, false, false),
            Purpose::HostTest => (true, false, false),
            Purpose::Test | Purpose::Vmtest => (true, true, false),
            Purpose::Bench => (true, false, true),
            Purpose::All => (true, true, true),
        };
        if test {
            v.extend(TEST_PACKAGES);
        }
        if vm {
            v.extend(VM_PACKAGES);
        }
        if bench {
            v.extend(BENCH_PACKAGES);
        }
        v
    }

    fn fuzz(self) -> bool {
        matches!(self, Purpose::HostTest | Purpose::Test | Purpose::All)
    }
}

fn say(msg: &str) {
    eprintln!("xtask setup: {msg}");
}

fn toolchain_installed(name: &str) -> bool {
    cmd::output("rustup", &["toolchain", "list"])
        .is_some_and(|l| l.lines().any(|t| t.starts_with(&format!("{name}-"))))
}

fn has_component(toolchain: &str, component: &str) -> bool {
    cmd::output(
        "rustup",
        &["component", "list", "--installed", "--toolchain", toolchain],
    )
    .is_some_and(|l| l.lines().any(|c| c.starts_with(component)))
}

fn ensure_rust() -> anyhow::Result<()> {
    if cmd::output("rustup", &["--version"]).is_none() {
        bail!(
            "rustup is not installed; sendsight pins its toolchains with rustup: install it \
             from https://rustup.rs and re-run"
        );
    }
    if !toolchain_installed(STABLE) || !has_component(STABLE, "clippy") {
        say(&format!(
            "installing Rust {STABLE} (userspace toolchain) with clippy, rustfmt"
        ));
        cmd::run_quiet_stdout(cmd::command("rustup").args([
            "toolchain",
            "install",
            STABLE,
            "--profile",
            "minimal",
            "-c",
            "clippy",
            "-c",
            "rustfmt",
        ]))?;
    }
    if !toolchain_installed(EBPF_NIGHTLY) || !has_component(EBPF_NIGHTLY, "rust-src") {
        say(&format!(
            "installing {EBPF_NIGHTLY} with rust-src (eBPF toolchain)"
        ));
        cmd::run_quiet_stdout(cmd::command("rustup").args([
            "toolchain",
            "install",
            EBPF_NIGHTLY,
            "--profile",
            "minimal",
            "-c",
            "rust-src",
        ]))?;
    }
    Ok(())
}

fn apt_installed(pkg: &str) -> bool {
    cmd::output("dpkg-query", &["-W", "-f=${Status}", pkg])
        .is_some_and(|s| s.trim() == "install ok installed")
}

/// Installs the Debian packages of `list` that are missing (one apt-get run),
/// removing nothing: when apt would have to remove an installed package (another
/// version of qemu, say), it stops and says which instead.
pub fn ensure_packages(list: &[&str]) -> anyhow::Result<()> {
    let missing: Vec<&str> = list.iter().copied().filter(|p| !apt_installed(p)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    if unsafe { libc::geteuid() } != 0 {
        bail!(
            "Debian packages missing: {}; run `sudo cargo xtask setup` (or install them) once",
            missing.join(" ")
        );
    }
    say(&format!(
        "installing Debian packages: {}",
        missing.join(" ")
    ));
    // The package lists of a fresh machine may predate llvm-22 in bookworm-security.
    cmd::run_quiet_stdout(cmd::command("apt-get").args(["update", "-q"]))?;
    let install = |simulate: bool| {
        let mut c = cmd::command("apt-get");
        c.args([
            "install",
            "-y",
            "-q",
            "--no-install-recommends",
            "--no-remove",
        ]);
        if simulate {
            c.arg("--simulate");
        }
        c.args(&missing).env("DEBIAN_FRONTEND", "noninteractive");
        c
    };
    // Ask first, to name what is in the way (apt's own refusal under --no-remove
    // does not say).
    let plan = install(true)
        .output()
        .context("cannot start apt-get --simulate")?;
    let plan_text = String::from_utf8_lossy(&plan.stdout);
    let removals = removals(&plan_text);
    if !removals.is_empty() {
        bail!(
            "installing {} would remove {} (installed on this machine, probably from another \
             Debian suite); setup never removes packages: remove or replace them yourself, or \
             install versions of {} that fit, then re-run",
            missing.join(" "),
            removals.join(" "),
            missing.join(" ")
        );
    }
    cmd::run_quiet_stdout(&mut install(false))
}

/// Packages an `apt-get --simulate` plan removes (`Remv NAME [VERSION]` lines).
pub fn removals(plan: &str) -> Vec<String> {
    plan.lines()
        .filter_map(|l| l.strip_prefix("Remv "))
        .filter_map(|rest| rest.split_whitespace().next())
        .map(str::to_string)
        .collect()
}

fn ensure_bpf_linker() -> anyhow::Result<()> {
    let have = cmd::output("bpf-linker", &["--version"]).unwrap_or_default();
    if have.contains(BPF_LINKER_VERSION) {
        return Ok(());
    }
    say(&format!(
        "building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 ({LLVM_PREFIX}); about a minute"
    ));
    cmd::run_quiet_stdout(
        cmd::command("cargo")
            .args([
                &format!("+{STABLE}"),
                "install",
                "bpf-linker",
                "--version",
                BPF_LINKER_VERSION,
                "--locked",
                "--force",
                "--no-default-features",
                "--features",
                "llvm-22",
            ])
            // bpf-linker's build looks for libLLVM under LLVM_PREFIX, llvm-sys for
            // llvm-config under LLVM_SYS_221_PREFIX; Debian keeps both there.
            .env("LLVM_PREFIX", LLVM_PREFIX)
            .env("LLVM_SYS_221_PREFIX", LLVM_PREFIX),
    )
    .context("installing bpf-linker")
}

fn ensure_cargo_fuzz() -> anyhow::Result<()> {
    if cmd::output("cargo", &[&format!("+{EBPF_NIGHTLY}"), "fuzz", "--version"]).is_some() {
        return Ok(());
    }
    say("installing cargo-fuzz (the fuzz run in `cargo xtask test`); about a minute");
    cmd::run_quiet_stdout(cmd::command("cargo").args([
        &format!("+{STABLE}"),
        "install",
        "cargo-fuzz",
        "--version",
        CARGO_FUZZ_VERSION,
        "--locked",
    ]))
    .context("installing cargo-fuzz")
}

pub fn setup(purpose: Purpose) -> anyhow::Result<()> {
    let t = Instant::now();
    ensure_rust()?;
    ensure_packages(&purpose.packages())?;
    ensure_bpf_linker()?;
    if purpose.fuzz() {
        ensure_cargo_fuzz()?;
    }
    say(&format!("ready ({:.1} s)", t.elapsed().as_secs_f64()));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_needs_no_test_tools() {
        let run = Purpose::Run.packages();
        for p in TEST_PACKAGES
            .iter()
            .chain(VM_PACKAGES)
            .chain(BENCH_PACKAGES)
        {
            assert!(!run.contains(p), "{p}");
        }
        assert!(!Purpose::Run.fuzz());
        assert!(!Purpose::HostTest.packages().contains(&"qemu-system-x86"));
        assert!(Purpose::Test.packages().contains(&"qemu-system-x86"));
        assert!(Purpose::All.packages().contains(&"iperf3"));
    }

    #[test]
    fn removals_in_a_simulated_plan() {
        let plan = "NOTE: This is only a simulation!\n\
            Remv qemu-utils [1:10.0.2+ds-2+deb13u1~bpo12+1]\n\
            Inst qemu-system-x86 (1:7.2+dfsg-7+deb12u18+b3 Debian:12.13/stable [amd64])\n\
            Conf qemu-system-x86 (1:7.2+dfsg-7+deb12u18+b3 Debian:12.13/stable [amd64])\n";
        assert_eq!(removals(plan), vec!["qemu-utils".to_string()]);
        assert!(removals("Inst a (1)\nConf a (1)\n").is_empty());
    }
}
