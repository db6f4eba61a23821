//! The agent's programs over perf buffers (`agent-ebpf-perf`): the object loaded on
//! kernels without the BPF ring buffer (before 5.8), or when the perf transport is
//! forced. The same modules as `main.rs` (see there why two objects), but the
//! transport; keep the two module lists the same.
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
#[path = "transport/perf.rs"]
mod transport;
mod udp_queue;
