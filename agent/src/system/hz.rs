//! The kernel's HZ, to turn jiffies (icsk_rto) into milliseconds. Read from the
//! running kernel's config (/proc/config.gz, else /boot/config-<release>).

use std::io::Read as _;

pub fn kernel_hz() -> Option<u32> {
    let text = config_text()?;
    text.lines()
        .find_map(|l| l.strip_prefix("CONFIG_HZ="))
        .and_then(|v| v.trim().parse().ok())
}

fn config_text() -> Option<String> {
    if let Ok(gz) = std::fs::File::open("/proc/config.gz") {
        let mut s = String::new();
        if flate2::read::GzDecoder::new(gz)
            .read_to_string(&mut s)
            .is_ok()
        {
            return Some(s);
        }
    }
    std::fs::read_to_string(format!("/boot/config-{}", super::kernel_release())).ok()
}
