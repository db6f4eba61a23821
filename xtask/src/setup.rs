//! Installs what the build and the tests need, when missing. Each step checks
//! first, so a second run is quick and installs nothing.

use std::time::Instant;

use anyhow::{Context as _, bail};

use crate::{cmd, toolchain::*};

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
        cmd::run(cmd::command("rustup").args([
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
        cmd::run(cmd::command("rustup").args([
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

fn ensure_apt() -> anyhow::Result<()> {
    ensure_packages(APT_PACKAGES)
}

/// Installs the Debian packages of `list` that are missing (one apt-get run).
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
    cmd::run(cmd::command("apt-get").args(["update", "-q"]))?;
    cmd::run(
        cmd::command("apt-get")
            .args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive"),
    )
}

fn ensure_bpf_linker() -> anyhow::Result<()> {
    let have = cmd::output("bpf-linker", &["--version"]).unwrap_or_default();
    if have.contains(BPF_LINKER_VERSION) {
        return Ok(());
    }
    say(&format!(
        "building bpf-linker {BPF_LINKER_VERSION} against LLVM 22 ({LLVM_PREFIX}); about a minute"
    ));
    cmd::run(
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
    cmd::run(cmd::command("cargo").args([
        &format!("+{STABLE}"),
        "install",
        "cargo-fuzz",
        "--version",
        CARGO_FUZZ_VERSION,
        "--locked",
    ]))
    .context("installing cargo-fuzz")
}

pub fn setup() -> anyhow::Result<()> {
    let t = Instant::now();
    ensure_rust()?;
    ensure_apt()?;
    ensure_bpf_linker()?;
    ensure_cargo_fuzz()?;
    say(&format!("ready ({:.1} s)", t.elapsed().as_secs_f64()));
    Ok(())
}
