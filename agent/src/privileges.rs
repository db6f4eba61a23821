//! Can this process load and attach our programs? Checked up front so that a missing
//! capability is one clear sentence, not an EPERM from deep inside the loader.
//!
//! What each capability is for (measured as uid 65534 with ambient capabilities, see
//! tests/tests/capabilities.rs and the README's "Privileges"):
//! - CAP_BPF: create the maps, load the programs;
//! - CAP_PERFMON: tracing program types, reading kernel memory from them, attaching
//!   to tracepoints (perf events);
//! - CAP_DAC_READ_SEARCH: only when tracefs is not readable by this user (it is
//!   mounted mode 0700, root's, by default): the agent reads its tracepoints' record
//!   formats and ids there;
//! - CAP_SYS_ADMIN: only when tracefs is not mounted at all, to mount it (it also
//!   stands in for CAP_BPF + CAP_PERFMON, as on kernels before 5.8).

use std::{fs, io, path::Path};

pub const CAP_DAC_OVERRIDE: u32 = 1;
pub const CAP_DAC_READ_SEARCH: u32 = 2;
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

/// What this process can do with tracefs, as far as permissions go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Tracefs {
    /// Mounted, and its `events` directory can be read.
    Readable,
    /// Mounted at this path, but this user may not look inside (EACCES).
    Unreadable(String),
    /// Mounted nowhere we look: it has to be mounted.
    NotMounted,
}

/// Where tracefs may be, in the order `probes::tracefs` looks.
const TRACEFS: [&str; 2] = [
    crate::probes::tracefs::MOUNT_POINT,
    "/sys/kernel/debug/tracing",
];

/// Looks at tracefs the way the loader will.
pub fn tracefs() -> Tracefs {
    let mut denied = None;
    for root in TRACEFS {
        match fs::metadata(Path::new(root).join("events")) {
            Ok(m) if m.is_dir() => return Tracefs::Readable,
            Err(e) if e.kind() == io::ErrorKind::PermissionDenied => {
                denied.get_or_insert(root);
            }
            _ => {}
        }
    }
    match denied {
        Some(root) => Tracefs::Unreadable(root.to_string()),
        None => Tracefs::NotMounted,
    }
}

/// `None` when we can load and attach tracing programs; otherwise why not.
pub fn missing_for_tracing(set: u64) -> Option<String> {
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    missing_for(set, &tracefs(), euid)
}

/// The rule, given the capability set, the state of tracefs and the effective uid.
/// One sentence naming every capability the process lacks.
pub fn missing_for(set: u64, tracefs: &Tracefs, euid: u32) -> Option<String> {
    let dac = has(set, CAP_DAC_READ_SEARCH) || has(set, CAP_DAC_OVERRIDE);
    let mut needs = vec!["CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN)".to_string()];
    let mut missing = Vec::new();
    if !has(set, CAP_SYS_ADMIN) {
        if !has(set, CAP_BPF) {
            missing.push("CAP_BPF");
        }
        if !has(set, CAP_PERFMON) {
            missing.push("CAP_PERFMON");
        }
    }
    match tracefs {
        Tracefs::Readable => {}
        Tracefs::Unreadable(root) => {
            needs.push(format!(
                "reading tracefs at {root}, which this user may not (mounted root-only), needs \
                 CAP_DAC_READ_SEARCH"
            ));
            if !dac {
                missing.push("CAP_DAC_READ_SEARCH");
            }
        }
        Tracefs::NotMounted => {
            needs.push(format!(
                "mounting tracefs, which is not mounted, needs CAP_SYS_ADMIN (or mount it \
                 first: mount -t tracefs nodev {})",
                TRACEFS[0]
            ));
            if !has(set, CAP_SYS_ADMIN) {
                missing.push("CAP_SYS_ADMIN");
            }
            // A fresh tracefs is root's, mode 0700: another user then needs to read it.
            if euid != 0 {
                needs.push(
                    "reading it then, as a user other than root, needs CAP_DAC_READ_SEARCH"
                        .to_string(),
                );
                if !dac {
                    missing.push("CAP_DAC_READ_SEARCH");
                }
            }
        }
    }
    if missing.is_empty() {
        return None;
    }
    Some(format!(
        "missing privileges: loading and attaching eBPF tracing programs needs {}; this \
         process lacks {} (effective set {set:#x}). Run as root (sudo) or grant the \
         capabilities",
        needs.join("; "),
        missing.join(" and ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const READABLE: &Tracefs = &Tracefs::Readable;
    const ROOT: u32 = 0;
    const NOBODY: u32 = 65534;

    fn set(caps: &[u32]) -> u64 {
        caps.iter().map(|c| 1u64 << c).sum()
    }

    #[test]
    fn bpf_and_perfmon_suffice_when_tracefs_is_readable() {
        assert_eq!(
            missing_for(set(&[CAP_BPF, CAP_PERFMON]), READABLE, NOBODY),
            None
        );
        assert_eq!(missing_for(set(&[CAP_SYS_ADMIN]), READABLE, NOBODY), None);
    }

    #[test]
    fn names_what_is_missing() {
        let why = missing_for(set(&[CAP_BPF]), READABLE, NOBODY).unwrap();
        assert!(why.contains("lacks CAP_PERFMON"), "{why}");
        assert!(why.starts_with("missing privileges: "), "{why}");
        let why = missing_for(0, READABLE, NOBODY).unwrap();
        assert!(why.contains("lacks CAP_BPF and CAP_PERFMON"), "{why}");
        assert!(!why.contains('\n'), "one line: {why}");
    }

    #[test]
    fn root_only_tracefs_needs_dac_read_search() {
        let t = Tracefs::Unreadable("/sys/kernel/tracing".into());
        let why = missing_for(set(&[CAP_BPF, CAP_PERFMON]), &t, NOBODY).unwrap();
        assert!(why.contains("lacks CAP_DAC_READ_SEARCH"), "{why}");
        assert!(why.contains("/sys/kernel/tracing"), "{why}");
        let minimal = set(&[CAP_BPF, CAP_PERFMON, CAP_DAC_READ_SEARCH]);
        assert_eq!(missing_for(minimal, &t, NOBODY), None);
        assert_eq!(
            missing_for(set(&[CAP_BPF, CAP_PERFMON, CAP_DAC_OVERRIDE]), &t, NOBODY),
            None
        );
        // CAP_SYS_ADMIN does not let one read a root-only directory.
        let why = missing_for(set(&[CAP_SYS_ADMIN]), &t, NOBODY).unwrap();
        assert!(why.contains("lacks CAP_DAC_READ_SEARCH"), "{why}");
        let why = missing_for(set(&[CAP_BPF, CAP_DAC_READ_SEARCH]), &t, NOBODY).unwrap();
        assert!(why.contains("lacks CAP_PERFMON"), "{why}");
        assert!(!why.contains("lacks CAP_PERFMON and"), "{why}");
    }

    #[test]
    fn unmounted_tracefs_needs_sys_admin() {
        let none = &Tracefs::NotMounted;
        let why = missing_for(set(&[CAP_BPF, CAP_PERFMON]), none, ROOT).unwrap();
        assert!(why.contains("lacks CAP_SYS_ADMIN"), "{why}");
        assert!(why.contains("mount -t tracefs"), "{why}");
        assert_eq!(missing_for(set(&[CAP_SYS_ADMIN]), none, ROOT), None);
        // Mounted by another user, it is still root's: reading it needs the DAC cap.
        let why = missing_for(set(&[CAP_SYS_ADMIN]), none, NOBODY).unwrap();
        assert!(why.contains("lacks CAP_DAC_READ_SEARCH"), "{why}");
        let enough = set(&[CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, CAP_DAC_READ_SEARCH]);
        assert_eq!(missing_for(enough, none, NOBODY), None);
    }

    #[test]
    fn every_shortfall_in_one_sentence() {
        let t = Tracefs::Unreadable("/sys/kernel/tracing".into());
        let why = missing_for(0, &t, NOBODY).unwrap();
        assert!(
            why.contains("lacks CAP_BPF and CAP_PERFMON and CAP_DAC_READ_SEARCH"),
            "{why}"
        );
    }
}
