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
mod send;
mod sock;
mod sockstate;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any program that could reach this; it exists for rustc.
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
