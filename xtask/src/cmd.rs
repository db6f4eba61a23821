//! Running commands with their output visible and failures explained.

use std::{ffi::OsStr, path::PathBuf, process::Command};

use anyhow::{Context as _, bail};

/// The workspace root (xtask lives one level below it).
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask has a parent")
        .to_path_buf()
}

/// `$CARGO_HOME/bin`, where rustup and cargo install put their binaries.
pub fn cargo_bin() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .unwrap_or_else(|| PathBuf::from("/root/.cargo"))
        .join("bin")
}

/// PATH with cargo's bin directory first, so bpf-linker is found by the eBPF build
/// even when the caller's PATH lacks it.
pub fn path_env() -> std::ffi::OsString {
    let mut dirs = vec![cargo_bin()];
    if let Some(p) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&p));
    }
    std::env::join_paths(dirs).expect("PATH entries are valid")
}

pub fn command(program: impl AsRef<OsStr>) -> Command {
    let mut c = Command::new(program);
    c.env("PATH", path_env()).current_dir(root());
    // Set by the cargo/rustup that started xtask; they would pin children to the
    // caller's toolchain instead of ours.
    for var in ["RUSTUP_TOOLCHAIN", "RUSTC", "RUSTDOC", "CARGO"] {
        c.env_remove(var);
    }
    c
}

/// `cargo +STABLE`: the pinned userspace toolchain, whatever the caller's default.
pub fn cargo() -> Command {
    let mut c = command("cargo");
    c.arg(format!("+{}", crate::toolchain::STABLE));
    c
}

pub fn run(cmd: &mut Command) -> anyhow::Result<()> {
    let desc = format!("{cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {desc}"))?;
    if !status.success() {
        bail!("{desc} failed: {status}");
    }
    Ok(())
}

/// As `run`, with the child's stdout sent to our stderr: for installers and builds
/// ahead of a command whose stdout is the agent's (`cargo xtask run ... | jq`).
pub fn run_quiet_stdout(cmd: &mut Command) -> anyhow::Result<()> {
    cmd.stdout(std::process::Stdio::from(std::io::stderr()));
    run(cmd)
}

/// Output of a command that succeeded, or None (missing program or failure).
pub fn output(program: &str, args: &[&str]) -> Option<String> {
    let out = command(program).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}
