//! Builds agent-ebpf for the BPF target with the pinned nightly (via aya-build) and
//! leaves the object in OUT_DIR for `include_bytes_aligned!`.
//!
//! Without bpf-linker (a plain `cargo check`/`clippy` on a machine that never ran
//! `cargo xtask setup`) the build still succeeds with an empty object, and the
//! binary refuses to run with a message saying how to build it properly.
use std::{env, fs, path::PathBuf};

use anyhow::{Context as _, anyhow};
use aya_build::Toolchain;

/// Keep in sync with xtask/src/toolchain.rs (EBPF_NIGHTLY): setup installs this one.
const EBPF_NIGHTLY: &str = "nightly-2026-07-20";

fn main() -> anyhow::Result<()> {
    let out_dir = PathBuf::from(env::var_os("OUT_DIR").context("OUT_DIR not set")?);
    let object = out_dir.join("agent-ebpf");
    println!("cargo::rerun-if-env-changed=SENDSIGHT_SKIP_EBPF");
    let skip = env::var_os("SENDSIGHT_SKIP_EBPF").is_some_and(|v| v == "1");
    let linker = which::which("bpf-linker");
    if skip || linker.is_err() {
        let why = if skip {
            "SENDSIGHT_SKIP_EBPF=1".to_string()
        } else {
            "bpf-linker is not on PATH (run `cargo xtask setup`)".to_string()
        };
        println!(
            "cargo::warning=not building the eBPF object: {why}; the binary will refuse to run"
        );
        fs::write(&object, b"").context("writing empty eBPF placeholder")?;
        for other in ["agent-ebpf-floor", "agent-ebpf-perf"] {
            fs::write(out_dir.join(other), b"").context("writing empty eBPF placeholder")?;
        }
        return Ok(());
    }

    let cargo_metadata::Metadata { packages, .. } = cargo_metadata::MetadataCommand::new()
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    let ebpf = packages
        .into_iter()
        .find(|p| p.name.as_str() == "agent-ebpf")
        .ok_or_else(|| anyhow!("agent-ebpf package not found in the workspace"))?;
    let root = ebpf
        .manifest_path
        .parent()
        .ok_or_else(|| anyhow!("no parent for {}", ebpf.manifest_path))?;
    aya_build::build_ebpf(
        [aya_build::Package {
            name: "agent-ebpf",
            root_dir: root.as_str(),
            ..Default::default()
        }],
        Toolchain::Custom(EBPF_NIGHTLY),
    )
}
