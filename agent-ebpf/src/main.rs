//! sendsight's kernel side: one module per probe family, all feeding one ring buffer.
//! The programs collect facts; every judgement happens in the agent.
#![no_std]
#![no_main]
// Closures handed to `emit` must be inlined: a separate BPF subprogram adds its own
// stack frame, and before 6.13 the verifier caps the combined frames at 512 bytes.
#![feature(stmt_expr_attributes)]

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
