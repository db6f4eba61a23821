//! Offset-based reads. Offsets come from `LAYOUT` (resolved by the agent on the
//! running kernel), so every read goes through a probe-read helper and a missing
//! field (`ABSENT`) is an error, not a read at offset 65535.

use agent_common::layout::ABSENT;
use aya_ebpf::{EbpfContext, helpers::bpf_probe_read_kernel, programs::TracePointContext};

/// Error type of the programs: the value returned to the kernel.
pub type Fail = u32;

/// A field of the tracepoint record. Through a helper: the offset is a runtime
/// value (from LAYOUT) and the verifier only allows direct context loads at offsets
/// encoded in the instruction. The hot paths use raw tracepoints instead.
#[inline(always)]
pub fn tp<T>(ctx: &TracePointContext, offset: u16) -> Result<T, Fail> {
    if offset == ABSENT {
        return Err(1);
    }
    unsafe { ctx.read_at::<T>(offset as usize) }.map_err(|_| 1)
}

/// A field of the context at an offset fixed at compile time: a direct load, no
/// helper (the verifier checks it lies within the context).
#[inline(always)]
pub fn ctx_at<T: Copy>(ctx: &impl EbpfContext, offset: u16) -> T {
    unsafe { *(ctx.as_ptr() as *const u8).add(offset as usize).cast::<T>() }
}

#[inline(always)]
pub fn kernel<T>(base: u64, offset: u16) -> Result<T, Fail> {
    if offset == ABSENT || base == 0 {
        return Err(1);
    }
    unsafe { bpf_probe_read_kernel((base + offset as u64) as *const T) }.map_err(|_| 1)
}

/// Like [`kernel`], with a default for fields this kernel lacks or reads that fail.
#[inline(always)]
pub fn kernel_or<T>(base: u64, offset: u16, default: T) -> T {
    kernel(base, offset).unwrap_or(default)
}
