//! The pinned toolchain recipe (see README "Toolchain"). One place per fact: the
//! nightly here must match agent/build.rs (a unit test checks it).
//!
//! Why the pin lives here and not in a root rust-toolchain.toml: machines of our
//! kind set RUSTUP_AUTO_INSTALL=0, so with a root pin the rustup proxy would refuse
//! to run `cargo xtask` at all until someone installed the pinned toolchain by hand.
//! Instead xtask builds with whatever stable is there, installs the pin in `setup`,
//! and runs every build as `cargo +STABLE`.

/// Userspace toolchain (aya 0.16 needs rustc >= 1.98).
pub const STABLE: &str = "1.99.1";
/// Nightly for the eBPF crate (`-Z build-std`); its LLVM major (22) must match
/// bpf-linker's. Nightlies from October 2026 on use LLVM 23.
pub const EBPF_NIGHTLY: &str = "nightly-2026-07-20";
pub const BPF_LINKER_VERSION: &str = "0.13.0";
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";
pub const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

/// Debian packages to build and run the agent: bpf-linker is built against LLVM 22
/// (`cargo xtask build`, `cargo xtask run`, and everything else).
pub const BUILD_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
];

/// What the end-to-end tests run (ip, nft, setpriv, sysctl, ping; rsyslog as a real
/// collector): `cargo xtask test`, `vmtest` (the guest gets these binaries) and
/// `bench` (its network namespaces).
pub const TEST_PACKAGES: &[&str] = &[
    "iproute2",
    "nftables",
    "util-linux",
    "procps",
    "iputils-ping",
    "rsyslog",
];

/// What `cargo xtask vmtest` (and `test` without --no-vm) needs to boot Debian's
/// kernels under qemu: busybox for the guest, xz for 6.12's modules, objcopy to strip
/// debug info off what goes into the initramfs.
pub const VM_PACKAGES: &[&str] = &["qemu-system-x86", "busybox-static", "xz-utils", "binutils"];

/// Only for `cargo xtask bench`: the peers and the load generator it measures
/// against (bpftrace pulls in a large LLVM; the tests do not need it).
pub const BENCH_PACKAGES: &[&str] = &["bpftrace", "iperf3"];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_agree_across_files() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
        let msrv = manifest
            .lines()
            .find_map(|l| l.strip_prefix("rust-version = "))
            .expect("workspace rust-version");
        let msrv = msrv.trim_matches('"');
        assert!(
            STABLE.starts_with(msrv.split('.').next().unwrap()),
            "{msrv} vs {STABLE}"
        );
        let build = std::fs::read_to_string(root.join("agent/build.rs")).unwrap();
        assert!(
            build.contains(&format!("\"{EBPF_NIGHTLY}\"")),
            "agent/build.rs"
        );
    }
}
