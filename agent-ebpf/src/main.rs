//! sendsight's kernel side: one module per probe family, all feeding one ring buffer.
//! The programs collect facts; every judgement happens in the agent.
#![no_std]
#![no_main]

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
