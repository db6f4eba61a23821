//! The pinned toolchain recipe (see README "Toolchain"). One place per fact: the
//! nightly here must match agent/build.rs, and the userspace channel must match
//! rust-toolchain.toml (a unit test checks both).

/// Userspace toolchain (aya 0.16 needs rustc >= 1.98).
pub const STABLE: &str = "1.99.1";
/// Nightly for the eBPF crate (`-Z build-std`); its LLVM major (22) must match
/// bpf-linker's. Nightlies from October 2026 on use LLVM 23.
pub const EBPF_NIGHTLY: &str = "nightly-2026-07-20";
pub const BPF_LINKER_VERSION: &str = "0.13.0";
pub const LLVM_PREFIX: &str = "/usr/lib/llvm-22";

/// Debian packages: to build bpf-linker against LLVM 22, and what the end-to-end
/// tests run (ip, nft, setpriv, sysctl).
pub const APT_PACKAGES: &[&str] = &[
    "llvm-22-dev",
    "libpolly-22-dev",
    "libzstd-dev",
    "zlib1g-dev",
    "iproute2",
    "nftables",
    "util-linux",
    "procps",
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pins_agree_across_files() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let toml = std::fs::read_to_string(root.join("rust-toolchain.toml")).unwrap();
        assert!(toml.contains(&format!("channel = \"{STABLE}\"")), "rust-toolchain.toml");
        let build = std::fs::read_to_string(root.join("agent/build.rs")).unwrap();
        assert!(build.contains(&format!("\"{EBPF_NIGHTLY}\"")), "agent/build.rs");
    }
}
