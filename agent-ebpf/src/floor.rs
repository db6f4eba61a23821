//! Benchmark floors: the least a program on these tracepoints can do (read one field
//! at a loader-given offset, return). An object of their own (`agent-ebpf-floor`),
//! embedded only in `sendsight-bench`: the agent's object does not carry them. They
//! anchor the per-program cost ratios in BENCHMARKS.md.
#![no_std]
#![no_main]

#[macro_use]
#[path = "globals.rs"]
mod globals;
#[path = "runtime.rs"]
mod runtime;
// Only `read::tp` is used here.
#[allow(dead_code)]
#[path = "read.rs"]
mod read;

use aya_ebpf::{macros::tracepoint, programs::TracePointContext};

#[tracepoint(category = "sock", name = "sock_send_length")]
pub fn floor_send(ctx: TracePointContext) -> u32 {
    match read::tp::<i32>(&ctx, lay!(send_tp.ret)) {
        Ok(r) => r as u32 & 1,
        Err(r) => r,
    }
}

#[tracepoint(category = "net", name = "netif_receive_skb")]
pub fn floor_rx(ctx: TracePointContext) -> u32 {
    match read::tp::<u64>(&ctx, lay!(skb_tp.netif_skbaddr)) {
        Ok(r) => r as u32 & 1,
        Err(r) => r,
    }
}
