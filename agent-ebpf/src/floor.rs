//! Benchmark floors: the cheapest program that sees each event the agent hooks,
//! reading one field at a constant offset from its context with a direct load (no
//! helper), as bpftrace's `if (args->len == 1)` does. An object of its own
//! (`agent-ebpf-floor`), embedded only in `sendsight-bench`: the agent's object does
//! not carry it. The offsets are compiled in, so the bench checks them against the
//! running kernel's tracefs before attaching (`FLOOR_FIELDS` there); the classic
//! ones are the reference, the raw ones the same hooks the agent uses.
#![no_std]
#![no_main]

#[path = "runtime.rs"]
mod runtime;
// Only `read::ctx_at` is used here.
#[allow(dead_code)]
#[path = "read.rs"]
mod read;

use aya_ebpf::{
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};
use read::ctx_at as at;

/// `sock:sock_send_length`'s `ret` (int at 20).
#[tracepoint(category = "sock", name = "sock_send_length")]
pub fn floor_send(ctx: TracePointContext) -> u32 {
    (at::<i32>(&ctx, 20) == 1) as u32
}

/// `net:netif_receive_skb`'s `len` (unsigned int at 16).
#[tracepoint(category = "net", name = "netif_receive_skb")]
pub fn floor_rx(ctx: TracePointContext) -> u32 {
    (at::<u32>(&ctx, 16) == 1) as u32
}

/// `syscalls:sys_exit_<name>`'s `ret` (long at 16): the bare per-syscall tracepoint.
#[tracepoint(category = "syscalls", name = "sys_exit_sendto")]
pub fn floor_sys_exit(ctx: TracePointContext) -> u32 {
    (at::<i64>(&ctx, 16) == 1) as u32
}

/// Raw `sock_send_length`: `ret`, the second argument.
#[raw_tracepoint(tracepoint = "sock_send_length")]
pub fn floor_send_raw(ctx: RawTracePointContext) -> i32 {
    (at::<u64>(&ctx, 8) == 1) as i32
}

/// Raw `netif_receive_skb`: the skb pointer, the only argument.
#[raw_tracepoint(tracepoint = "netif_receive_skb")]
pub fn floor_rx_raw(ctx: RawTracePointContext) -> i32 {
    (at::<u64>(&ctx, 0) == 1) as i32
}
