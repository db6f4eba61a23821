//! sendsight's kernel side: one module per probe family, all feeding one ring buffer.
//! The programs collect facts; every judgement happens in the agent.
//!
//! This root builds the ring buffer object (`agent-ebpf`); `perf.rs` builds the same
//! programs over perf buffers (`agent-ebpf-perf`) for kernels without ring buffers.
//! Two objects, not one with both maps: aya creates every map of an object and
//! fails when one cannot be created, so the older kernels need an object with no
//! ring buffer in it. Keep the module lists of the two roots the same.
#![no_std]
#![no_main]
// Atomic adds for the exact per-socket drop counters (udp_queue.rs).
// (Host builds, for clippy only, never run, do without.)
#![cfg_attr(target_arch = "bpf", allow(internal_features))]
#![cfg_attr(target_arch = "bpf", feature(core_intrinsics))]

#[macro_use]
mod globals;
mod emit;
mod icmp;
mod maps;
mod read;
mod retransmit;
mod runtime;
mod send;
mod sock;
mod sockstate;
#[path = "transport/ring.rs"]
mod transport;
mod udp_queue;
