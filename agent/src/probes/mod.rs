//! Deciding what to attach, and attaching it: tracefs and BTF resolution, loading the
//! embedded object with the resolved layout, attaching each program where the
//! kernel allows, and a report of what happened to each probe (`sendsight check`,
//! and the `start` line of `run`).

pub mod btf;
pub mod layout;
pub mod tracefs;

use agent_common::{
    event::PendingSend,
    layout::{ABSENT, Config, Layout, send_slot},
    loss,
};
use aya::{
    Ebpf, EbpfLoader,
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::{RawTracePoint, TracePoint},
};
use serde::Serialize;

use crate::EBPF_OBJECT;

#[derive(Debug, thiserror::Error)]
pub enum ProbeError {
    #[error(
        "this sendsight binary was built without its eBPF object (bpf-linker was missing \
         at build time); build it with `cargo xtask build`"
    )]
    NoObject,
    #[error(transparent)]
    Tracefs(#[from] tracefs::TracefsError),
    #[error(transparent)]
    Btf(#[from] btf::BtfError),
    #[error("loading the eBPF object: {0}")]
    Load(aya::EbpfError),
    #[error("map {0} missing from the eBPF object")]
    NoMap(&'static str),
    #[error("map {name}: {error}")]
    Map {
        name: &'static str,
        error: aya::maps::MapError,
    },
}

/// Tunables of the kernel side.
#[derive(Clone, Debug)]
pub struct Options {
    /// EVENTS ring buffer size in bytes (power of two, multiple of the page size).
    pub ring_bytes: u32,
    /// Entries of the kernel's socket -> owner/counters map.
    pub max_sockets: u32,
    /// BTF to use instead of /sys/kernel/btf/vmlinux (e.g. from BTFHub for kernels
    /// built without CONFIG_DEBUG_INFO_BTF).
    pub btf: Option<std::path::PathBuf>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            ring_bytes: 1 << 20,
            max_sockets: 65_536,
            btf: None,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "probe_state")]
pub enum State {
    Attached,
    /// Attached, with a documented gap (a field this kernel lacks).
    Degraded,
    /// Not attached; `note` says why and what covers for it.
    Unavailable,
}

/// How one probe ended up.
#[derive(Clone, Debug, Serialize, schemars::JsonSchema)]
#[schemars(rename = "probe_status")]
pub struct ProbeStatus {
    #[schemars(length(min = 1))]
    pub probe: &'static str,
    /// Where it attaches, e.g. `tracepoint tcp:tcp_retransmit_skb`.
    pub attach: String,
    pub state: State,
    /// Why degraded or unavailable; empty when attached.
    pub note: String,
}

/// Loaded and attached programs plus the maps the agent reads.
pub struct Loaded {
    /// Dropping it detaches and unloads every program (aya owns the links).
    ebpf: Option<Ebpf>,
    /// Taken by the ingest stage.
    pub events: Option<RingBuf<MapData>>,
    pub lost: PerCpuArray<MapData, u64>,
    /// Socket-layer send failures waiting for their syscall exit, per thread.
    pub pending: HashMap<MapData, u32, PendingSend>,
    pub report: Vec<ProbeStatus>,
    pub tracefs: tracefs::Found,
    /// Kernel struct members this kernel lacks (each degrades some field).
    pub missing_members: Vec<String>,
}

impl Loaded {
    /// Per-slot loss counts, summed over CPUs.
    pub fn lost_counts(&self) -> [u64; loss::slot::COUNT as usize] {
        let mut out = [0u64; loss::slot::COUNT as usize];
        for (slot, total) in out.iter_mut().enumerate() {
            if let Ok(per_cpu) = self.lost.get(&(slot as u32), 0) {
                *total = per_cpu.iter().sum();
            }
        }
        out
    }

    /// Send failures still parked for their syscall exit (at exit: never delivered).
    pub fn pending_count(&self) -> u64 {
        self.pending.keys().filter(|k| k.is_ok()).count() as u64
    }

    /// Detach every program: after this no event is produced. The maps stay
    /// readable so the ring can be drained and the ledger read.
    pub fn detach(&mut self) {
        self.ebpf.take();
    }

    /// Is the core job (retransmits, and send errors from some source) covered?
    pub fn core_ok(&self) -> bool {
        let up = |p: &str| {
            self.report
                .iter()
                .any(|s| s.probe == p && s.state != State::Unavailable)
        };
        up("retransmit") && (up("send_syscall") || up("send_socket"))
    }
}

/// Send-family syscalls of this architecture, in `send_slot` order.
fn send_syscalls() -> [i32; 8] {
    let mut s = [-1i32; 8];
    s[send_slot::SENDTO] = libc::SYS_sendto as i32;
    s[send_slot::WRITE] = libc::SYS_write as i32;
    s[send_slot::SENDMSG] = libc::SYS_sendmsg as i32;
    s[send_slot::WRITEV] = libc::SYS_writev as i32;
    s[send_slot::SENDMMSG] = libc::SYS_sendmmsg as i32;
    s[send_slot::CONNECT] = libc::SYS_connect as i32;
    s[send_slot::BIND] = libc::SYS_bind as i32;
    s
}

/// One probe of the plan: what it needs, how it attaches.
struct Plan {
    probe: &'static str,
    program: &'static str,
    kind: Kind,
    /// Why it cannot be attached, decided before loading (missing tracepoint, layout).
    blocked: Option<String>,
    /// A gap to report when attached.
    degraded: Option<String>,
    /// Said when it is unavailable: what covers for it.
    fallback: &'static str,
    /// Another way to attach the same probe, tried when the first fails.
    alternative: Option<(&'static str, Kind)>,
}

enum Kind {
    Tracepoint(&'static str, &'static str),
    Raw(&'static str),
}

impl Kind {
    fn describe(&self) -> String {
        match self {
            Kind::Tracepoint(g, n) => format!("tracepoint {g}:{n}"),
            Kind::Raw(n) => format!("raw_tracepoint {n}"),
        }
    }
}

pub fn load(opts: Options) -> Result<Loaded, ProbeError> {
    if EBPF_OBJECT.is_empty() {
        return Err(ProbeError::NoObject);
    }
    let found = tracefs::ensure_mounted()?;
    let root = found.root().to_path_buf();
    let btf = match &opts.btf {
        Some(p) => btf::Btf::from_file(p)?,
        None => btf::Btf::from_sys_fs()?,
    };
    let mut resolver = layout::Resolver {
        btf: &btf,
        missing: Vec::new(),
    };
    let mut lay: Layout = layout::empty();
    lay.kernel = layout::kernel_structs(&mut resolver);
    let k = lay.kernel;

    let mut plans = Vec::new();
    let tp_missing = |g: &str, n: &str| {
        (!tracefs::exists(&root, g, n))
            .then(|| format!("tracepoint {g}:{n} does not exist on this kernel"))
    };

    // Retransmits: the core signal.
    let mut p = Plan {
        probe: "retransmit",
        program: "tcp_retransmit_skb",
        kind: Kind::Tracepoint("tcp", "tcp_retransmit_skb"),
        blocked: tp_missing("tcp", "tcp_retransmit_skb"),
        degraded: None,
        fallback: "none: retransmits cannot be observed on this kernel",
        alternative: None,
    };
    if p.blocked.is_none() {
        match layout::retransmit_tp(&root) {
            Ok(t) => {
                lay.retransmit_tp = t;
                let mut gaps = Vec::new();
                if t.err == ABSENT {
                    gaps.push("no err field: failed retransmit attempts are not reported");
                }
                if k.skb_cb == ABSENT || k.tcb_gso_segs == ABSENT {
                    gaps.push("skb layout unknown: segs assumed 1, sizes unknown");
                }
                if k.tp_mss_cache == ABSENT || k.tp_write_seq == ABSENT {
                    gaps.push("tcp_sock layout unknown: mss/queue unknown");
                }
                if k.icsk_pending == ABSENT {
                    gaps.push("icsk_pending unknown: TLP reported as other");
                }
                if !gaps.is_empty() {
                    p.degraded = Some(gaps.join("; "));
                }
            }
            Err(e) => p.blocked = Some(e.to_string()),
        }
    }
    plans.push(p);

    // Send errors, socket layer (6.3+). Raw tracepoint first (no trace record, no
    // helper per argument: this runs on every send), when BTF confirms the argument
    // positions the program reads; the classic tracepoint otherwise.
    let raw_send = btf
        .raw_tracepoint_args("sock_send_length")
        .is_some_and(|a| a.len() >= 2 && a[0] == "struct sock *" && a[1] == "int");
    let classic_send = (
        "sock_send_length",
        Kind::Tracepoint("sock", "sock_send_length"),
    );
    let (program, kind, alternative) = if raw_send {
        (
            "sock_send_raw",
            Kind::Raw("sock_send_length"),
            Some(classic_send),
        )
    } else {
        (classic_send.0, classic_send.1, None)
    };
    let mut p = Plan {
        probe: "send_socket",
        program,
        kind,
        blocked: tp_missing("sock", "sock_send_length"),
        degraded: None,
        fallback: "send errors come from the syscall exits only; no per-socket send counters",
        alternative,
    };
    if p.blocked.is_none() {
        match layout::send_tp(&root) {
            Ok(t) => lay.send_tp = t,
            Err(e) => p.blocked = Some(e.to_string()),
        }
    }
    plans.push(p);

    // Send errors, syscall boundary (all kernels with BTF).
    let fd_walk = [
        k.task_files,
        k.files_fdt,
        k.fdt_fd,
        k.fdt_max_fds,
        k.file_inode,
        k.file_private_data,
        k.inode_mode,
        k.socket_sk,
        k.regs_nr,
        k.regs_arg0,
    ];
    plans.push(Plan {
        probe: "send_syscall",
        program: "sys_exit",
        kind: Kind::Raw("sys_exit"),
        blocked: fd_walk
            .contains(&ABSENT)
            .then(|| "fd -> socket or pt_regs layout unknown in BTF".to_string()),
        degraded: None,
        fallback: "errors returned before the socket layer (seccomp, EBADF) are not seen",
        alternative: None,
    });

    // Received too-big messages: every received packet passes here, so the raw
    // tracepoint again when BTF confirms its single `struct sk_buff *` argument.
    let raw_rx = btf
        .raw_tracepoint_args("netif_receive_skb")
        .is_some_and(|a| a.first().is_some_and(|t| t == "struct sk_buff *"));
    let classic_rx = (
        "netif_receive_skb",
        Kind::Tracepoint("net", "netif_receive_skb"),
    );
    let (program, kind, alternative) = if raw_rx {
        (
            "netif_rx_raw",
            Kind::Raw("netif_receive_skb"),
            Some(classic_rx),
        )
    } else {
        (classic_rx.0, classic_rx.1, None)
    };
    let mut p = Plan {
        probe: "icmp_rx",
        program,
        kind,
        blocked: tp_missing("net", "netif_receive_skb"),
        degraded: None,
        fallback: "received too-big messages are not seen",
        alternative,
    };
    // len, protocol and data within one 128-byte read is the fast path; elsewhere the
    // program reads them one by one.
    if [k.skb_data, k.skb_protocol, k.skb_len].contains(&ABSENT) {
        p.blocked = Some("sk_buff layout unknown in BTF".into());
    }
    if p.blocked.is_none() {
        match layout::netif_tp(&root) {
            Ok(off) => lay.skb_tp.netif_skbaddr = off,
            Err(e) => p.blocked = Some(e.to_string()),
        }
    }
    plans.push(p);

    // Locally generated too-big messages (hosts that route).
    let mut p = Plan {
        probe: "icmp_tx",
        program: "icmp_send",
        kind: Kind::Tracepoint("icmp", "icmp_send"),
        blocked: tp_missing("icmp", "icmp_send"),
        degraded: Some("IPv4 only; the MTU is not in the tracepoint record".into()),
        fallback: "frag-needed messages this host sends are not seen",
        alternative: None,
    };
    if p.blocked.is_none() {
        match layout::icmp_send_tp(&root) {
            Ok((skb, ty, code)) => {
                lay.skb_tp.icmp_send_skbaddr = skb;
                lay.skb_tp.icmp_send_type = ty;
                lay.skb_tp.icmp_send_code = code;
            }
            Err(e) => p.blocked = Some(e.to_string()),
        }
    }
    plans.push(p);

    // Socket context.
    let mut p = Plan {
        probe: "socket_state",
        program: "inet_sock_set_state",
        kind: Kind::Tracepoint("sock", "inet_sock_set_state"),
        blocked: tp_missing("sock", "inet_sock_set_state"),
        degraded: None,
        fallback: "no state changes; owners are learned from sends only",
        alternative: None,
    };
    if p.blocked.is_none() {
        match layout::flow_tp(
            &root,
            "sock",
            "inet_sock_set_state",
            true,
            Some(("oldstate", 4)),
            Some(("newstate", 4)),
        ) {
            Ok(t) => lay.set_state_tp = t,
            Err(e) => p.blocked = Some(e.to_string()),
        }
    }
    plans.push(p);

    let mut p = Plan {
        probe: "socket_error",
        program: "inet_sk_error_report",
        kind: Kind::Tracepoint("sock", "inet_sk_error_report"),
        blocked: tp_missing("sock", "inet_sk_error_report"),
        degraded: None,
        fallback: "socket errors are seen only when a send returns them",
        alternative: None,
    };
    if p.blocked.is_none() {
        match layout::flow_tp(
            &root,
            "sock",
            "inet_sk_error_report",
            false,
            Some(("error", 4)),
            None,
        ) {
            Ok(t) => lay.error_report_tp = t,
            Err(e) => p.blocked = Some(e.to_string()),
        }
    }
    plans.push(p);

    let mut p = Plan {
        probe: "cong_state",
        program: "tcp_cong_state_set",
        kind: Kind::Tracepoint("tcp", "tcp_cong_state_set"),
        blocked: tp_missing("tcp", "tcp_cong_state_set"),
        degraded: None,
        fallback: "congestion state is read from the socket at each retransmit instead",
        alternative: None,
    };
    if p.blocked.is_none() {
        match layout::flow_tp(
            &root,
            "tcp",
            "tcp_cong_state_set",
            true,
            Some(("cong_state", 1)),
            None,
        ) {
            Ok(t) => lay.cong_state_tp = t,
            Err(e) => p.blocked = Some(e.to_string()),
        }
    }
    plans.push(p);

    let sys_exit_planned = plans
        .iter()
        .any(|p| p.probe == "send_syscall" && p.blocked.is_none());
    let config = Config {
        self_tgid: std::process::id(),
        sys_exit_attached: sys_exit_planned as u32,
        send_syscalls: send_syscalls(),
        wakeup_bytes: opts.ring_bytes / 8,
        ..Config::DEFAULT
    };

    let mut ebpf = EbpfLoader::new()
        .override_global("LAYOUT", &lay, true)
        .override_global("CONFIG", &config, true)
        .map_max_entries("EVENTS", opts.ring_bytes)
        .map_max_entries("SOCKS", opts.max_sockets)
        .load(EBPF_OBJECT)
        .map_err(ProbeError::Load)?;

    let mut report = Vec::new();
    for plan in plans {
        let attach = plan.kind.describe();
        let status = match &plan.blocked {
            Some(why) => ProbeStatus {
                probe: plan.probe,
                attach,
                state: State::Unavailable,
                note: format!("{why}; fallback: {}", plan.fallback),
            },
            None => match attach_one(&mut ebpf, plan.program, &plan.kind).or_else(|first| {
                match &plan.alternative {
                    Some((program, kind)) => attach_one(&mut ebpf, program, kind)
                        .map(|_| {
                            Some(format!(
                                "{} failed ({first}); attached as {}",
                                plan.kind.describe(),
                                kind.describe()
                            ))
                        })
                        .map_err(|second| format!("{first}; then {second}")),
                    None => Err(first),
                }
            }) {
                Ok(Some(note)) => ProbeStatus {
                    probe: plan.probe,
                    attach: plan
                        .alternative
                        .as_ref()
                        .map(|a| a.1.describe())
                        .unwrap_or(attach),
                    state: State::Degraded,
                    note,
                },
                Ok(None) => ProbeStatus {
                    probe: plan.probe,
                    attach,
                    state: if plan.degraded.is_some() {
                        State::Degraded
                    } else {
                        State::Attached
                    },
                    note: plan.degraded.unwrap_or_default(),
                },
                Err(e) => ProbeStatus {
                    probe: plan.probe,
                    attach,
                    state: State::Unavailable,
                    note: format!("{e}; fallback: {}", plan.fallback),
                },
            },
        };
        report.push(status);
    }

    let events = ebpf.take_map("EVENTS").ok_or(ProbeError::NoMap("EVENTS"))?;
    let events = RingBuf::try_from(events).map_err(|error| ProbeError::Map {
        name: "EVENTS",
        error,
    })?;
    let lost = ebpf.take_map("LOST").ok_or(ProbeError::NoMap("LOST"))?;
    let lost = PerCpuArray::try_from(lost).map_err(|error| ProbeError::Map {
        name: "LOST",
        error,
    })?;
    let pending = ebpf
        .take_map("PENDING")
        .ok_or(ProbeError::NoMap("PENDING"))?;
    let pending = HashMap::try_from(pending).map_err(|error| ProbeError::Map {
        name: "PENDING",
        error,
    })?;
    Ok(Loaded {
        ebpf: Some(ebpf),
        events: Some(events),
        lost,
        pending,
        report,
        tracefs: found,
        missing_members: resolver.missing,
    })
}

fn attach_one(ebpf: &mut Ebpf, program: &str, kind: &Kind) -> Result<Option<String>, String> {
    let prog = ebpf
        .program_mut(program)
        .ok_or_else(|| format!("program {program} missing from the eBPF object"))?;
    match kind {
        Kind::Tracepoint(group, name) => {
            let tp: &mut TracePoint = prog.try_into().map_err(|e| format!("{e}"))?;
            tp.load().map_err(|e| format!("loading {program}: {e}"))?;
            tp.attach(group, name)
                .map_err(|e| format!("attaching {program}: {e}"))?;
        }
        Kind::Raw(name) => {
            let tp: &mut RawTracePoint = prog.try_into().map_err(|e| format!("{e}"))?;
            tp.load().map_err(|e| format!("loading {program}: {e}"))?;
            tp.attach(name)
                .map_err(|e| format!("attaching {program}: {e}"))?;
        }
    }
    Ok(None)
}
