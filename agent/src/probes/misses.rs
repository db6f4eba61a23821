//! Program runs the kernel skipped: a program is not run when it would nest in
//! itself on a CPU, and a classic (perf) tracepoint or kprobe program is not run
//! while any other such program runs on that CPU (`bpf_prog_active`). The event it
//! would have seen is lost without a trace in its own counters; the kernel counts
//! each skip in the program's `recursion_misses` (5.12+), read here so the ledger
//! can report it.

use std::os::fd::{AsFd as _, AsRawFd as _, BorrowedFd};

use aya_obj::generated::{bpf_attr, bpf_cmd, bpf_prog_info};

/// The program's `recursion_misses`; None where the kernel's `bpf_prog_info` has no
/// such field (before 5.12) or the call fails.
pub fn recursion_misses(fd: BorrowedFd<'_>) -> Option<u64> {
    // SAFETY: plain-old-data UAPI structs; zero is their "nothing set" value.
    let mut info: bpf_prog_info = unsafe { std::mem::zeroed() };
    let mut attr: bpf_attr = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<bpf_prog_info>() as u32;
    // Writing a union's Copy field is safe; reading it back is not.
    attr.info.bpf_fd = fd.as_raw_fd() as u32;
    attr.info.info_len = size;
    attr.info.info = (&raw mut info) as u64;
    // SAFETY: BPF_OBJ_GET_INFO_BY_FD writes at most `info_len` bytes into `info`,
    // which outlives the call, and the kernel's length back into `attr`.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            bpf_cmd::BPF_OBJ_GET_INFO_BY_FD as libc::c_long,
            &raw mut attr,
            std::mem::size_of::<bpf_attr>(),
        )
    };
    // SAFETY: as above.
    let written = unsafe { attr.info.info_len } as usize;
    let needed = std::mem::offset_of!(bpf_prog_info, recursion_misses) + 8;
    (r == 0 && written >= needed).then_some(info.recursion_misses)
}

/// Sum over the loaded programs of `ebpf`; None when the kernel reports none.
pub fn total(ebpf: &aya::Ebpf) -> Option<u64> {
    let mut sum = None;
    for (_, p) in ebpf.programs() {
        if let Ok(fd) = p.fd()
            && let Some(n) = recursion_misses(fd.as_fd())
        {
            sum = Some(sum.unwrap_or(0) + n);
        }
    }
    sum
}
