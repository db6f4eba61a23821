use which::which;

/// The eBPF binary is linked by `bpf-linker`, which cargo does not know about: rebuild
/// when the linker on PATH changes (a new LLVM means new codegen).
fn main() {
    if let Ok(linker) = which("bpf-linker") {
        println!("cargo:rerun-if-changed={}", linker.display());
    }
}
