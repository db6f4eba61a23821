//! Can this process load and attach our programs? Checked up front so that a missing
//! capability is one clear sentence, not an EPERM from deep inside the loader.

use std::fs;

pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_PERFMON: u32 = 38;
pub const CAP_BPF: u32 = 39;

/// Effective capability set of this process, from /proc/self/status.
pub fn effective() -> std::io::Result<u64> {
    let status = fs::read_to_string("/proc/self/status")?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .ok_or_else(|| std::io::Error::other("no CapEff line in /proc/self/status"))
}

pub fn has(set: u64, cap: u32) -> bool {
    set & (1u64 << cap) != 0
}

/// `None` when we can load and attach tracing programs; otherwise why not.
pub fn missing_for_tracing(set: u64) -> Option<String> {
    if has(set, CAP_SYS_ADMIN) || (has(set, CAP_BPF) && has(set, CAP_PERFMON)) {
        return None;
    }
    let mut missing = Vec::new();
    if !has(set, CAP_BPF) {
        missing.push("CAP_BPF");
    }
    if !has(set, CAP_PERFMON) {
        missing.push("CAP_PERFMON");
    }
    Some(format!(
        "missing privileges: loading and attaching eBPF tracing programs needs CAP_BPF and \
         CAP_PERFMON (or CAP_SYS_ADMIN); this process lacks {} (effective set {set:#x}). \
         Run as root (sudo) or grant the capabilities",
        missing.join(" and ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bpf_and_perfmon_suffice() {
        assert_eq!(
            missing_for_tracing((1 << CAP_BPF) | (1 << CAP_PERFMON)),
            None
        );
        assert_eq!(missing_for_tracing(1 << CAP_SYS_ADMIN), None);
    }

    #[test]
    fn names_what_is_missing() {
        let why = missing_for_tracing(1 << CAP_BPF).unwrap();
        assert!(why.contains("lacks CAP_PERFMON"), "{why}");
        let why = missing_for_tracing(0).unwrap();
        assert!(why.contains("lacks CAP_BPF and CAP_PERFMON"), "{why}");
    }
}
