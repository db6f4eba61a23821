//! What every eBPF object needs besides its programs: a panic handler (for rustc; the
//! verifier rejects any program that could reach it) and the licence the kernel
//! checks before allowing GPL-only helpers.

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 4] = *b"GPL\0";
