//! The perf event array transport, for kernels without the BPF ring buffer (before
//! 5.8: early RHEL 8, Ubuntu 20.04's 5.4). One buffer per CPU, so records keep
//! their order within a CPU only (the ring keeps it across CPUs); a record
//! cannot be filled in place, so it is built in a per-CPU scratch value (the
//! 512-byte stack has no room for the larger ones) and copied out by
//! `bpf_perf_event_output`, which needs the program's context (hence `Ctx` through
//! `emit`). A full buffer is a failed output: counted per record kind by the caller,
//! exactly as a failed ring reservation is; the kernel also counts it in the
//! buffer, which the agent reads as a cross-check.

use aya_ebpf::{
    bindings::BPF_F_CURRENT_CPU,
    helpers::bpf_perf_event_output,
    macros::map,
    maps::{PerCpuArray, PerfEventArray},
};

use crate::emit::{Ctx, Undelivered};

/// All events, all programs: one buffer per CPU, opened by the agent (the loader
/// sizes the array to the possible CPUs).
#[map]
pub static EVENTS: PerfEventArray<u8> = PerfEventArray::new(0);

/// Largest record a scratch slot holds (`UdpQueueDrop` is the largest, ~330
/// bytes; `emit` checks each record type at compile time).
pub const SCRATCH_BYTES: usize = 512;

/// Nesting levels per CPU: a program interrupted on its CPU (by a softirq's
/// program, by an NMI) must not have its half-built record overwritten; three is
/// what the kernel itself allows for nested `bpf_perf_event_output` (task, softirq,
/// hard irq/NMI). Deeper nesting is counted as a full buffer.
const LEVELS: u32 = 3;

#[repr(C, align(8))]
pub struct Scratch([u8; SCRATCH_BYTES]);

/// Per CPU: one record under construction per nesting level.
#[map]
static SCRATCH: PerCpuArray<Scratch> = PerCpuArray::with_max_entries(LEVELS, 0);

/// Per CPU: nesting levels in use.
#[map]
static NEST: PerCpuArray<u32> = PerCpuArray::with_max_entries(1, 0);

/// A scratch slot holding one record being built.
pub struct Slot<R> {
    rec: *mut R,
    nest: *mut u32,
}

impl<R: Default> Slot<R> {
    #[inline(always)]
    pub fn reserve() -> Option<Self> {
        const { assert!(size_of::<R>() <= SCRATCH_BYTES && align_of::<R>() <= 8) };
        let nest = NEST.get_ptr_mut(0)?;
        // Claimed before use and released after: a program interrupting this one
        // between the two steps finds the next level, and gives it back before it
        // returns, so the count is right again when this one resumes.
        let level = unsafe { *nest };
        if level >= LEVELS {
            return None;
        }
        let rec = SCRATCH.get_ptr_mut(level)?;
        unsafe { *nest = level + 1 };
        Some(Self {
            rec: rec.cast(),
            nest,
        })
    }

    #[inline(always)]
    pub fn init(&mut self) -> &mut R {
        unsafe {
            self.rec.write(R::default());
            &mut *self.rec
        }
    }

    /// Copies the record into this CPU's buffer; `Err` when it has no room.
    #[inline(always)]
    pub fn submit(self, ctx: Ctx) -> Result<(), ()> {
        let r = output_from(ctx, self.rec).map_err(|_| ());
        self.release();
        r
    }

    #[inline(always)]
    pub fn discard(self) {
        self.release();
    }

    #[inline(always)]
    fn release(self) {
        unsafe { *self.nest -= 1 };
    }
}

/// Sends a finished record from memory the verifier knows the size of (a map
/// value, a scratch slot): the helper copies it.
#[inline(always)]
pub fn output_from<R>(ctx: Ctx, src: *const R) -> Result<(), Undelivered> {
    // The aya wrapper drops the helper's result; the loss count needs it.
    // `PerfEventArray` is `repr(transparent)` over its map definition, so its
    // address is the map's.
    let map = core::ptr::from_ref(&EVENTS).cast_mut().cast();
    let r = unsafe {
        bpf_perf_event_output(
            ctx,
            map,
            BPF_F_CURRENT_CPU,
            src.cast_mut().cast(),
            size_of::<R>() as u64,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(Undelivered::Full)
    }
}

/// Is there room for network-sourced records? A perf buffer cannot be asked how
/// full it is; the per-CPU budget (`maps::net_budget`) is the only bound, and each
/// CPU has a buffer of its own, so a flood on one CPU fills only that one.
#[inline(always)]
pub fn room_for_net() -> bool {
    true
}
