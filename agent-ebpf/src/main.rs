//! sendsight's kernel side: one module per probe family, all feeding one ring buffer.
//! The programs collect facts; every judgement happens in the agent.
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
mod udp_queue;
