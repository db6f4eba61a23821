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
//!   stands in for CAP_BPF + CAP_PERFMON, as on kernels before 5.8);
//! - CAP_SYS_RESOURCE: only before 5.11, where map memory is charged to
//!   RLIMIT_MEMLOCK, and only when the hard limit cannot hold the maps.

use std::{fs, io, path::Path};

pub const CAP_DAC_OVERRIDE: u32 = 1;
pub const CAP_DAC_READ_SEARCH: u32 = 2;
pub const CAP_SYS_ADMIN: u32 = 21;
pub const CAP_SYS_RESOURCE: u32 = 24;
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

/// Where this kernel charges BPF map memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Memlock {
    /// To the memory cgroup (5.11+): no limit of ours applies.
    NotCharged,
    /// To the user's RLIMIT_MEMLOCK (before 5.11). The loader raises the limit when
    /// a map is refused; beyond the hard limit that needs CAP_SYS_RESOURCE.
    Charged {
        /// The hard limit; None: unlimited.
        hard: Option<u64>,
        /// A floor of what the maps take: the event ring alone.
        need: u64,
    },
}

/// 5.11 moved map memory to the memory cgroup: the version is the fact (aya's
/// loader decides by it too).
pub fn memlock(need: u64) -> Memlock {
    use aya::util::KernelVersion;
    let charged = KernelVersion::current().map_or(true, |v| v < KernelVersion::new(5, 11, 0));
    if !charged {
        return Memlock::NotCharged;
    }
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct it is given.
    let hard = if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0
        || lim.rlim_max == libc::RLIM_INFINITY
    {
        None
    } else {
        Some(lim.rlim_max)
    };
    Memlock::Charged { hard, need }
}

/// Before 5.11: lifts the soft memlock limit to the hard one, which needs no
/// privilege (the loader itself only tries unlimited, which does). Returns the
/// limits in force afterwards (soft, hard; None: unlimited) for error messages.
pub fn raise_memlock_soft() -> (Option<u64>, Option<u64>) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct they are given.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) != 0 {
            return (None, None);
        }
        if lim.rlim_cur != lim.rlim_max {
            let raised = libc::rlimit {
                rlim_cur: lim.rlim_max,
                rlim_max: lim.rlim_max,
            };
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &raised) == 0 {
                lim = raised;
            }
        }
    }
    let finite = |v: libc::rlim_t| (v != libc::RLIM_INFINITY).then_some(v);
    (finite(lim.rlim_cur), finite(lim.rlim_max))
}

/// Debian and Ubuntu kernels (`CONFIG_SECURITY_PERF_EVENTS_RESTRICT`) default to
/// `kernel.perf_event_paranoid=3`, under which `perf_event_open`, and so every classic
/// tracepoint attach, needs CAP_SYS_ADMIN. Raw tracepoints and fexit do not go
/// through it. `None` when it does not apply.
pub fn perf_restricted(set: u64) -> Option<String> {
    let level: i32 = fs::read_to_string("/proc/sys/kernel/perf_event_paranoid")
        .ok()?
        .trim()
        .parse()
        .ok()?;
    perf_restricted_at(level, set)
}

fn perf_restricted_at(level: i32, set: u64) -> Option<String> {
    (level >= 3 && !has(set, CAP_SYS_ADMIN)).then(|| {
        format!(
            "kernel.perf_event_paranoid={level} lets only CAP_SYS_ADMIN attach classic \
             tracepoints (probes on one are unavailable; `sysctl kernel.perf_event_paranoid=2` \
             allows CAP_PERFMON)"
        )
    })
}

/// Bytes for people: 64 KiB, 1 MiB.
pub fn human_bytes(n: u64) -> String {
    if n >= 1 << 20 && n.is_multiple_of(1 << 20) {
        format!("{} MiB", n >> 20)
    } else if n >= 1 << 10 {
        format!("{} KiB", n >> 10)
    } else {
        format!("{n} bytes")
    }
}

/// `None` when we can load and attach tracing programs (`need`: bytes of map
/// memory at least, for kernels that charge it to RLIMIT_MEMLOCK); otherwise why not.
pub fn missing_for_tracing(set: u64, need: u64) -> Option<String> {
    // SAFETY: geteuid cannot fail.
    let euid = unsafe { libc::geteuid() };
    missing_for(set, &tracefs(), euid, memlock(need))
}

/// The rule, given the capability set, the state of tracefs, the effective uid and
/// where map memory is charged. One sentence naming every capability the process lacks.
pub fn missing_for(set: u64, tracefs: &Tracefs, euid: u32, memlock: Memlock) -> Option<String> {
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
    if let Memlock::Charged {
        hard: Some(hard),
        need,
    } = memlock
        && hard < need
    {
        needs.push(format!(
            "map memory, which this kernel (before 5.11) charges to RLIMIT_MEMLOCK, needs \
             more than its hard limit of {} here (the event ring alone takes {}): \
             CAP_SYS_RESOURCE, or the limit raised (systemd LimitMEMLOCK=infinity, ulimit -l \
             unlimited)",
            human_bytes(hard),
            human_bytes(need)
        ));
        if !has(set, CAP_SYS_RESOURCE) {
            missing.push("CAP_SYS_RESOURCE");
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
    const CGROUP: Memlock = Memlock::NotCharged;

    fn set(caps: &[u32]) -> u64 {
        caps.iter().map(|c| 1u64 << c).sum()
    }

    #[test]
    fn bpf_and_perfmon_suffice_when_tracefs_is_readable() {
        assert_eq!(
            missing_for(set(&[CAP_BPF, CAP_PERFMON]), READABLE, NOBODY, CGROUP),
            None
        );
        assert_eq!(
            missing_for(set(&[CAP_SYS_ADMIN]), READABLE, NOBODY, CGROUP),
            None
        );
    }

    #[test]
    fn names_what_is_missing() {
        let why = missing_for(set(&[CAP_BPF]), READABLE, NOBODY, CGROUP).unwrap();
        assert!(why.contains("lacks CAP_PERFMON"), "{why}");
        assert!(why.starts_with("missing privileges: "), "{why}");
        let why = missing_for(0, READABLE, NOBODY, CGROUP).unwrap();
        assert!(why.contains("lacks CAP_BPF and CAP_PERFMON"), "{why}");
        assert!(!why.contains('\n'), "one line: {why}");
    }

    #[test]
    fn root_only_tracefs_needs_dac_read_search() {
        let t = Tracefs::Unreadable("/sys/kernel/tracing".into());
        let why = missing_for(set(&[CAP_BPF, CAP_PERFMON]), &t, NOBODY, CGROUP).unwrap();
        assert!(why.contains("lacks CAP_DAC_READ_SEARCH"), "{why}");
        assert!(why.contains("/sys/kernel/tracing"), "{why}");
        let minimal = set(&[CAP_BPF, CAP_PERFMON, CAP_DAC_READ_SEARCH]);
        assert_eq!(missing_for(minimal, &t, NOBODY, CGROUP), None);
        assert_eq!(
            missing_for(
                set(&[CAP_BPF, CAP_PERFMON, CAP_DAC_OVERRIDE]),
                &t,
                NOBODY,
                CGROUP
            ),
            None
        );
        // CAP_SYS_ADMIN does not let one read a root-only directory.
        let why = missing_for(set(&[CAP_SYS_ADMIN]), &t, NOBODY, CGROUP).unwrap();
        assert!(why.contains("lacks CAP_DAC_READ_SEARCH"), "{why}");
        let why = missing_for(set(&[CAP_BPF, CAP_DAC_READ_SEARCH]), &t, NOBODY, CGROUP).unwrap();
        assert!(why.contains("lacks CAP_PERFMON"), "{why}");
        assert!(!why.contains("lacks CAP_PERFMON and"), "{why}");
    }

    #[test]
    fn unmounted_tracefs_needs_sys_admin() {
        let none = &Tracefs::NotMounted;
        let why = missing_for(set(&[CAP_BPF, CAP_PERFMON]), none, ROOT, CGROUP).unwrap();
        assert!(why.contains("lacks CAP_SYS_ADMIN"), "{why}");
        assert!(why.contains("mount -t tracefs"), "{why}");
        assert_eq!(missing_for(set(&[CAP_SYS_ADMIN]), none, ROOT, CGROUP), None);
        // Mounted by another user, it is still root's: reading it needs the DAC cap.
        let why = missing_for(set(&[CAP_SYS_ADMIN]), none, NOBODY, CGROUP).unwrap();
        assert!(why.contains("lacks CAP_DAC_READ_SEARCH"), "{why}");
        let enough = set(&[CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN, CAP_DAC_READ_SEARCH]);
        assert_eq!(missing_for(enough, none, NOBODY, CGROUP), None);
    }

    #[test]
    fn every_shortfall_in_one_sentence() {
        let t = Tracefs::Unreadable("/sys/kernel/tracing".into());
        let why = missing_for(0, &t, NOBODY, CGROUP).unwrap();
        assert!(
            why.contains("lacks CAP_BPF and CAP_PERFMON and CAP_DAC_READ_SEARCH"),
            "{why}"
        );
    }

    #[test]
    fn a_memlock_limit_below_the_ring_needs_sys_resource_before_5_11() {
        let minimal = set(&[CAP_BPF, CAP_PERFMON]);
        let small = Memlock::Charged {
            hard: Some(64 << 10),
            need: 1 << 20,
        };
        let why = missing_for(minimal, READABLE, NOBODY, small).unwrap();
        assert!(why.contains("lacks CAP_SYS_RESOURCE"), "{why}");
        assert!(why.contains("hard limit of 64 KiB"), "{why}");
        assert!(why.contains("takes 1 MiB"), "{why}");
        assert!(!why.contains('\n'), "one line: {why}");
        let with = set(&[CAP_BPF, CAP_PERFMON, CAP_SYS_RESOURCE]);
        assert_eq!(missing_for(with, READABLE, NOBODY, small), None);
        // A limit that holds the ring, or none: nothing more is needed.
        for hard in [Some(1 << 30), None] {
            let m = Memlock::Charged {
                hard,
                need: 1 << 20,
            };
            assert_eq!(missing_for(minimal, READABLE, NOBODY, m), None);
        }
        // Where the cgroup is charged the limit does not matter.
        assert_eq!(missing_for(minimal, READABLE, NOBODY, CGROUP), None);
    }

    #[test]
    fn a_restricted_perf_sysctl_is_said_unless_sys_admin() {
        let minimal = set(&[CAP_BPF, CAP_PERFMON]);
        let why = perf_restricted_at(3, minimal).unwrap();
        assert!(why.contains("perf_event_paranoid=3"), "{why}");
        assert!(why.contains("=2"), "{why}");
        assert_eq!(perf_restricted_at(2, minimal), None);
        assert_eq!(perf_restricted_at(3, set(&[CAP_SYS_ADMIN])), None);
    }
}
