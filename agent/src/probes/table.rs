//! The probes, one entry each: the tracepoint it watches, its attach methods in order
//! of preference, how its layout is resolved on this kernel (and what that says
//! about whether it can run, and with which gaps), and what covers for it when it
//! cannot. `load` walks this table; `check` and the `start` line report the outcome.

use std::path::Path;

use agent_common::layout::{ABSENT, KernelStructs, Layout, SYS_EXIT_NR, SYS_EXIT_RET};

use super::{btf::Btf, layout, tracefs};

/// How a program attaches.
pub enum Kind {
    Tracepoint(&'static str, &'static str),
    Raw(&'static str),
    /// A BTF-typed tracepoint (`tp_btf`): arguments are typed pointers the program
    /// reads with direct loads.
    Typed(&'static str),
    /// One program on `syscalls:sys_exit_<name>` for each of these names.
    SyscallExits(Vec<&'static str>),
    /// fexit programs on kernel functions (BPF trampolines): `(program, function)`,
    /// all or none.
    Fexit(Vec<(&'static str, String)>),
}

impl Kind {
    pub fn describe(&self) -> String {
        match self {
            Kind::Tracepoint(g, n) => format!("tracepoint {g}:{n}"),
            Kind::Raw(n) => format!("raw_tracepoint {n}"),
            Kind::Typed(n) => format!("tp_btf {n}"),
            Kind::SyscallExits(names) => {
                format!("tracepoints syscalls:sys_exit_{{{}}}", names.join(","))
            }
            Kind::Fexit(f) => {
                let names: Vec<&str> = f.iter().map(|(_, func)| func.as_str()).collect();
                format!("fexit {}", names.join(","))
            }
        }
    }

    pub fn way(&self) -> Way {
        match self {
            Kind::Tracepoint(..) | Kind::SyscallExits(_) => Way::Tracepoint,
            Kind::Raw(_) => Way::RawTracepoint,
            Kind::Typed(_) => Way::TpBtf,
            Kind::Fexit(_) => Way::Fexit,
        }
    }
}

/// Attach methods by family, as `--attach PROBE=WAY` names them.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Way {
    /// BPF trampolines on kernel functions (5.5+ with BTF).
    Fexit,
    /// BTF-typed tracepoints.
    TpBtf,
    RawTracepoint,
    /// Classic (perf) tracepoints.
    Tracepoint,
}

impl Way {
    pub fn name(self) -> &'static str {
        match self {
            Way::Fexit => "fexit",
            Way::TpBtf => "tp-btf",
            Way::RawTracepoint => "raw-tracepoint",
            Way::Tracepoint => "tracepoint",
        }
    }
}

/// `--attach PROBE=WAY` (and `SENDSIGHT_ATTACH`): one probe forced to one family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Force {
    pub probe: &'static str,
    pub way: Way,
}

impl std::str::FromStr for Force {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        use clap::ValueEnum as _;
        let (probe, way) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: expected PROBE=METHOD, e.g. retransmit=tracepoint"))?;
        let probe = PROBES
            .iter()
            .find(|p| p.name == probe.trim())
            .map(|p| p.name)
            .ok_or_else(|| {
                let names: Vec<&str> = PROBES.iter().map(|p| p.name).collect();
                format!("no probe {probe:?} (probes: {})", names.join(", "))
            })?;
        let way = Way::from_str(way.trim(), true).map_err(|_| {
            let ways: Vec<&str> = Way::value_variants().iter().map(|w| w.name()).collect();
            format!("no attach method {way:?} (methods: {})", ways.join(", "))
        })?;
        Ok(Force { probe, way })
    }
}

/// The send family (and connect, bind) by the names of their syscall events.
pub const SEND_SYSCALLS: &[&str] = &[
    "sendto", "write", "sendmsg", "writev", "sendmmsg", "connect", "bind",
];

/// One way to attach a probe: the program in the object, and where it goes.
pub struct Method {
    pub program: &'static str,
    pub kind: Kind,
    /// Said when this method is the one attached: what it lacks that another would
    /// give (a gap), or why it was chosen.
    pub note: Option<Note>,
}

/// What a probe's resolver sees: the running kernel's tracefs and BTF, the struct
/// layout already resolved, and the layout the programs will get (it fills its part).
pub struct Env<'a> {
    pub root: &'a Path,
    pub btf: &'a Btf,
    pub kernel: KernelStructs,
    pub lay: &'a mut Layout,
}

/// What a resolver says about a probe that can run.
#[derive(Clone)]
pub enum Note {
    /// A documented gap: the probe runs degraded.
    Gap(String),
    /// Which variant or layout was chosen (attached, no gap).
    Info(String),
}

/// The resolver's answer: can it run (else why not), and with which note.
pub type Resolved = Result<Option<Note>, String>;

pub struct Probe {
    pub name: &'static str,
    /// The tracepoint it needs; absent on this kernel: not attachable.
    pub tracepoint: (&'static str, &'static str),
    /// Attach methods, preferred first (given this kernel's BTF and layout).
    pub methods: fn(&Env) -> Vec<Method>,
    pub resolve: fn(&mut Env) -> Resolved,
    /// Said when it is unavailable: what covers for it.
    pub fallback: &'static str,
}

/// A probe's plan on this kernel, before loading.
pub struct Plan {
    pub probe: &'static str,
    pub methods: Vec<Method>,
    /// Why it cannot be attached (missing tracepoint, layout).
    pub blocked: Option<String>,
    /// A gap to report when attached.
    pub degraded: Option<String>,
    /// Said when attached without a gap.
    pub info: Option<String>,
    pub fallback: &'static str,
}

impl Probe {
    /// Whether it can run here (Retis's `can_run`: and if not, why not).
    pub fn plan(&self, env: &mut Env) -> Plan {
        let (group, name) = self.tracepoint;
        let (blocked, note) = if !tracefs::exists(env.root, group, name) {
            (
                Some(format!(
                    "tracepoint {group}:{name} does not exist on this kernel"
                )),
                None,
            )
        } else {
            match (self.resolve)(env) {
                Ok(note) => (None, note),
                Err(why) => (Some(why), None),
            }
        };
        let (degraded, info) = match note {
            Some(Note::Gap(g)) => (Some(g), None),
            Some(Note::Info(i)) => (None, Some(i)),
            None => (None, None),
        };
        Plan {
            probe: self.name,
            methods: (self.methods)(env),
            blocked,
            degraded,
            info,
            fallback: self.fallback,
        }
    }
}

impl Plan {
    /// Keeps only the methods of `way` (a forced `--attach`); none: blocked, saying
    /// what this kernel offers instead.
    pub fn force(&mut self, way: Way) {
        let offered: Vec<&str> = self.methods.iter().map(|m| m.kind.way().name()).collect();
        self.methods.retain(|m| m.kind.way() == way);
        if self.methods.is_empty() && self.blocked.is_none() {
            self.blocked = Some(format!(
                "--attach {}={}: not offered for it on this kernel (offered: {})",
                self.probe,
                way.name(),
                if offered.is_empty() {
                    "none".into()
                } else {
                    offered.join(", ")
                }
            ));
        }
    }
}

fn classic(program: &'static str, group: &'static str, name: &'static str) -> Vec<Method> {
    vec![Method {
        program,
        kind: Kind::Tracepoint(group, name),
        note: None,
    }]
}

/// The raw tracepoint first (no trace record built, no helper per argument: for the
/// hooks that run on every send or every received packet) when BTF confirms the
/// argument types the program reads by position; the classic tracepoint after it.
fn raw_then_classic(
    btf: &Btf,
    raw: (&'static str, &'static str),
    args: &[&str],
    classic_program: &'static str,
    group: &'static str,
) -> Vec<Method> {
    let (raw_program, tracepoint) = raw;
    let confirmed = btf
        .raw_tracepoint_args(tracepoint)
        .is_some_and(|a| a.len() >= args.len() && a.iter().zip(args).all(|(x, y)| x == y));
    let mut m = Vec::new();
    if confirmed {
        m.push(Method {
            program: raw_program,
            kind: Kind::Raw(tracepoint),
            note: None,
        });
    }
    m.extend(classic(classic_program, group, tracepoint));
    m
}

/// The layout of a `sock:`/`tcp:` tracepoint carrying a flow (with `skaddr` when
/// `has_sk`) and up to two more fields `(name, size)`.
type Extra = Option<(&'static str, u16)>;
fn flow_layout(
    root: &Path,
    (group, name): (&str, &str),
    has_sk: bool,
    (extra1, extra2): (Extra, Extra),
) -> Result<agent_common::layout::FlowTp, String> {
    layout::flow_tp(root, group, name, has_sk, extra1, extra2).map_err(|e| e.to_string())
}

fn gaps(list: Vec<&str>) -> Option<Note> {
    (!list.is_empty()).then(|| Note::Gap(list.join("; ")))
}

pub const PROBES: &[Probe] = &[
    // Retransmits: the core signal.
    Probe {
        name: "retransmit",
        tracepoint: ("tcp", "tcp_retransmit_skb"),
        methods: |env| {
            // The raw tracepoint reads `err` by position: only where the kernel's
            // prototype and record agree on having it.
            let err = layout::retransmit_tp(env.root).is_ok_and(|t| t.err != ABSENT);
            let args: &[&str] = if err {
                &["const struct sock *", "const struct sk_buff *", "int"]
            } else {
                &["const struct sock *", "const struct sk_buff *"]
            };
            let exact = env
                .btf
                .raw_tracepoint_args("tcp_retransmit_skb")
                .is_some_and(|a| a.len() == args.len());
            let mut m = raw_then_classic(
                env.btf,
                ("retransmit_raw", "tcp_retransmit_skb"),
                args,
                "tcp_retransmit_skb",
                "tcp",
            );
            if !exact && m.len() > 1 {
                m.remove(0);
            }
            let mut missing = Vec::new();
            if !err {
                missing.push("no err field: failed retransmit attempts are not reported");
            }
            // The peer's duplicate reports that tell reordering from loss (4.19+).
            if env.kernel.tp_dsack_dups == ABSENT {
                missing.push(
                    "no tcp_sock.dsack_dups: retransmissions the peer reports as \
                     duplicates (reordering) count as losses",
                );
            }
            let gap = gaps(missing);
            for method in &mut m {
                method.note = gap.clone();
            }
            m
        },
        resolve: |env| {
            let t = layout::retransmit_tp(env.root).map_err(|e| e.to_string())?;
            env.lay.retransmit_tp = t;
            let k = env.kernel;
            let mut g = Vec::new();
            if k.skb_cb == ABSENT || k.tcb_gso_segs == ABSENT {
                g.push("skb layout unknown: segs assumed 1, sizes unknown");
            }
            if k.tp_mss_cache == ABSENT || k.tp_write_seq == ABSENT {
                g.push("tcp_sock layout unknown: mss/queue unknown");
            }
            if k.icsk_pending == ABSENT {
                g.push("icsk_pending unknown: TLP reported as other");
            }
            Ok(gaps(g))
        },
        fallback: "none: retransmits cannot be observed on this kernel",
    },
    // Send errors, socket layer (6.3+): runs on every send.
    Probe {
        name: "send_socket",
        tracepoint: ("sock", "sock_send_length"),
        methods: |env| {
            raw_then_classic(
                env.btf,
                ("sock_send_raw", "sock_send_length"),
                &["struct sock *", "int"],
                "sock_send_length",
                "sock",
            )
        },
        resolve: |env| {
            let (sk, ret) = layout::send_tp(env.root).map_err(|e| e.to_string())?;
            env.lay.send_tp.sk = sk;
            env.lay.send_tp.ret = ret;
            Ok(None)
        },
        fallback: "send errors come from the syscall exits only",
    },
    // Send errors, syscall boundary (all kernels with BTF).
    Probe {
        name: "send_syscall",
        tracepoint: ("raw_syscalls", "sys_exit"),
        methods: |env| {
            // The raw tracepoint first, although it runs on every syscall exit: the
            // per-syscall events are classic (perf) tracepoints, and while a classic
            // program runs on a CPU the kernel skips every other classic program there
            // (`bpf_prog_active`), so a retransmit handled in a softirq that interrupts
            // a send's exit went unseen (the retransmit e2e test caught 45 segments
            // missing in 1 run of 3 with two agents). They stay the fallback.
            let mut m = Vec::new();
            let fexits = syscall_fexits(env.btf);
            if let Ok(f) = fexits.clone() {
                m.push(Method {
                    program: f[0].0,
                    kind: Kind::Fexit(f),
                    note: Some(Note::Info(
                        "fexit on the send family's syscall functions and seccomp's verdict: \
                         no other syscall pays"
                            .into(),
                    )),
                });
            }
            m.push(Method {
                program: "sys_exit",
                kind: Kind::Raw("sys_exit"),
                note: Some(Note::Info(format!(
                    "{}raw sys_exit: one compare on every syscall exit (the per-syscall events \
                     would hide the classic probes' events from the softirqs they interrupt)",
                    fexits.err().map(|e| format!("{e}; ")).unwrap_or_default()
                ))),
            });
            if sys_exits_layout(env.root) == Ok((SYS_EXIT_NR, SYS_EXIT_RET)) {
                m.push(Method {
                    program: "sys_exit_call",
                    kind: Kind::SyscallExits(SEND_SYSCALLS.to_vec()),
                    note: None,
                });
            }
            m
        },
        resolve: |env| {
            let k = env.kernel;
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
            if fd_walk.contains(&ABSENT) {
                return Err("fd -> socket or pt_regs layout unknown in BTF".into());
            }
            Ok(None)
        },
        fallback: "errors returned before the socket layer (seccomp, EBADF) are not seen",
    },
    // Received too-big messages: every received packet passes here.
    Probe {
        name: "icmp_rx",
        tracepoint: ("net", "netif_receive_skb"),
        methods: |env| {
            let raw = raw_then_classic(
                env.btf,
                ("netif_rx_raw", "netif_receive_skb"),
                &["struct sk_buff *"],
                "netif_receive_skb",
                "net",
            );
            // Typed first, where the raw prototype was confirmed (the same argument)
            // and the kernel accepts it (else the raw one).
            let mut m = Vec::new();
            if raw.len() > 1 {
                m.push(Method {
                    program: "netif_rx_btf",
                    kind: Kind::Typed("netif_receive_skb"),
                    note: None,
                });
            }
            m.extend(raw);
            m
        },
        resolve: |env| {
            let k = env.kernel;
            if [k.skb_data, k.skb_protocol, k.skb_len].contains(&ABSENT) {
                return Err("sk_buff layout unknown in BTF".into());
            }
            env.lay.skb_tp.netif_skbaddr = layout::netif_tp(env.root).map_err(|e| e.to_string())?;
            Ok(None)
        },
        fallback: "received too-big messages are not seen",
    },
    // Locally generated too-big messages (hosts that route).
    Probe {
        name: "icmp_tx",
        tracepoint: ("icmp", "icmp_send"),
        methods: |_| classic("icmp_send", "icmp", "icmp_send"),
        resolve: |env| {
            let (skb, ty, code) = layout::icmp_send_tp(env.root).map_err(|e| e.to_string())?;
            env.lay.skb_tp.icmp_send_skbaddr = skb;
            env.lay.skb_tp.icmp_send_type = ty;
            env.lay.skb_tp.icmp_send_code = code;
            Ok(Some(Note::Gap(
                "IPv4 only; the MTU is not in the tracepoint record".into(),
            )))
        },
        fallback: "frag-needed messages this host sends are not seen",
    },
    // Socket context.
    Probe {
        name: "socket_state",
        tracepoint: ("sock", "inet_sock_set_state"),
        methods: |env| {
            raw_then_classic(
                env.btf,
                ("set_state_raw", "inet_sock_set_state"),
                &["const struct sock *", "const int", "const int"],
                "inet_sock_set_state",
                "sock",
            )
        },
        resolve: |env| {
            let tp = ("sock", "inet_sock_set_state");
            let fields = (Some(("oldstate", 4)), Some(("newstate", 4)));
            env.lay.set_state_tp = flow_layout(env.root, tp, true, fields)?;
            Ok(None)
        },
        fallback: "no state changes; owners are learned from sends only",
    },
    Probe {
        name: "socket_error",
        tracepoint: ("sock", "inet_sk_error_report"),
        methods: |env| {
            // The raw variant reads the error from the socket.
            let mut m = raw_then_classic(
                env.btf,
                ("error_report_raw", "inet_sk_error_report"),
                &["const struct sock *"],
                "inet_sk_error_report",
                "sock",
            );
            if env.kernel.sk_err == ABSENT && m.len() > 1 {
                m.remove(0);
            }
            m
        },
        resolve: |env| {
            let tp = ("sock", "inet_sk_error_report");
            env.lay.error_report_tp = flow_layout(env.root, tp, false, (Some(("error", 4)), None))?;
            Ok(None)
        },
        fallback: "socket errors are seen only when a send returns them",
    },
    Probe {
        name: "cong_state",
        tracepoint: ("tcp", "tcp_cong_state_set"),
        methods: |env| {
            raw_then_classic(
                env.btf,
                ("cong_state_raw", "tcp_cong_state_set"),
                &["struct sock *", "const u8"],
                "tcp_cong_state_set",
                "tcp",
            )
        },
        resolve: |env| {
            let tp = ("tcp", "tcp_cong_state_set");
            env.lay.cong_state_tp =
                flow_layout(env.root, tp, true, (Some(("cong_state", 1)), None))?;
            Ok(None)
        },
        fallback: "congestion state is read from the socket at each retransmit instead",
    },
    // Datagrams dropped at a full receive queue (agent-ebpf/src/udp_queue.rs has
    // the contract).
    Probe {
        name: "udp_queue",
        tracepoint: ("udp", "udp_fail_queue_rcv_skb"),
        methods: udp_queue_methods,
        resolve: udp_queue_resolve,
        fallback: "datagrams dropped at full receive queues are only counted host-wide \
                   (nstat Udp RcvbufErrors)",
    },
    // `sock:sock_exceed_buf_limit` as a raw tracepoint (the classic record names no
    // socket): UDP sockets hitting the protocol's memory limits.
    Probe {
        name: "udp_mem_limit",
        tracepoint: ("sock", "sock_exceed_buf_limit"),
        methods: |_| {
            vec![Method {
                program: "sock_exceed_buf_raw",
                kind: Kind::Raw("sock_exceed_buf_limit"),
                note: None,
            }]
        },
        resolve: |env| {
            let raw = env
                .btf
                .raw_tracepoint_args("sock_exceed_buf_limit")
                .is_some_and(|a| a.len() >= 4 && a[0] == "struct sock *" && a[3] == "int");
            if !raw {
                return Err(
                    "BTF has no (struct sock *, struct proto *, long, int) prototype \
                            for sock_exceed_buf_limit (the classic record names no socket)"
                        .into(),
                );
            }
            Ok(None)
        },
        fallback: "memory-limit hits are not counted per socket (queue drops still are)",
    },
    // The reader of a receive-only socket: its owner, in process context.
    Probe {
        name: "udp_queue_owner",
        tracepoint: ("sock", "sock_recv_length"),
        methods: |_| {
            vec![Method {
                program: "sock_recv_raw",
                kind: Kind::Raw("sock_recv_length"),
                note: None,
            }]
        },
        resolve: |env| {
            let recv = env
                .btf
                .raw_tracepoint_args("sock_recv_length")
                .is_some_and(|a| a.len() >= 2 && a[0] == "struct sock *" && a[1] == "int");
            if !recv {
                return Err(
                    "raw tracepoint sock_recv_length (6.3+) missing or with another prototype"
                        .into(),
                );
            }
            Ok(None)
        },
        fallback: "owners of receive-only sockets are looked up in /proc (the process, \
                   not the reading thread)",
    },
];

/// The syscall functions' prefix on this architecture (`__x64_sys_sendto`).
#[cfg(target_arch = "x86_64")]
const SYSCALL_FN_PREFIX: &str = "__x64_sys_";
#[cfg(target_arch = "aarch64")]
const SYSCALL_FN_PREFIX: &str = "__arm64_sys_";

/// Does BTF have `func` with these parameter types (fexit programs read them by
/// position)?
fn fexit_fits(btf: &Btf, func: &str, params: &[&str]) -> bool {
    btf.func_proto(func).is_some_and(|p| {
        p.len() == params.len() + 1 && p[1..].iter().zip(params).all(|(a, b)| a == b)
    })
}

/// The send family's syscall functions (each `(const struct pt_regs *)`) and
/// seccomp's verdict, `(program, function)`; Err: why not on this kernel.
fn syscall_fexits(btf: &Btf) -> Result<Vec<(&'static str, String)>, String> {
    const PROGRAMS: [&str; 7] = [
        "fexit_sendto",
        "fexit_write",
        "fexit_sendmsg",
        "fexit_writev",
        "fexit_sendmmsg",
        "fexit_connect",
        "fexit_bind",
    ];
    // A call seccomp refused is read from the task's saved registers.
    if btf.func_proto("bpf_task_pt_regs").is_none() {
        return Err(
            "fexit unused: no bpf_task_pt_regs helper (5.15+) to see the calls \
                    seccomp refuses"
                .into(),
        );
    }
    let mut f = Vec::new();
    for (program, call) in PROGRAMS.iter().zip(SEND_SYSCALLS) {
        let func = format!("{SYSCALL_FN_PREFIX}{call}");
        if !fexit_fits(btf, &func, &["const struct pt_regs *"]) {
            return Err(format!(
                "fexit unused: no {func}(const struct pt_regs *) in BTF"
            ));
        }
        f.push((*program, func));
    }
    // `(const struct seccomp_data *sd)` until 6.14, `(void)` since: the return value
    // follows the arguments, so each shape has its program.
    let seccomp = if fexit_fits(btf, "__secure_computing", &["const struct seccomp_data *"]) {
        "secure_computing_exit"
    } else if fexit_fits(btf, "__secure_computing", &[]) {
        "secure_computing_exit_void"
    } else {
        return Err("fexit unused: __secure_computing has an unknown prototype".into());
    };
    f.push((seccomp, "__secure_computing".into()));
    Ok(f)
}

/// The one record layout of the send family's `sys_exit_<name>` events (`Err`:
/// some are missing or disagree; the raw `sys_exit` serves then).
fn sys_exits_layout(root: &Path) -> Result<(u16, u16), String> {
    let mut found = None;
    for name in SEND_SYSCALLS {
        let l = layout::sys_exit_tp(root, name).map_err(|e| e.to_string())?;
        if found.is_some_and(|f| f != l) {
            return Err(format!(
                "syscalls:sys_exit_{name} has another record layout"
            ));
        }
        found = Some(l);
    }
    found.ok_or_else(|| "no send-family syscall events".into())
}

/// `udp:udp_fail_queue_rcv_skb`'s variants on this kernel: the raw tracepoint when
/// BTF confirms `(int rc, struct sock *sk, ...)` (`skb`: with the skb, 6.10+, which
/// gives the sources). `SENDSIGHT_UDPQ_CLASSIC=1` forces the classic record (how the
/// fallback is tested on a kernel that does not need it).
fn udp_queue_variant(env: &Env) -> (bool, bool) {
    let k = env.kernel;
    let args = env.btf.raw_tracepoint_args("udp_fail_queue_rcv_skb");
    let raw = args
        .as_ref()
        .is_some_and(|a| a.len() >= 2 && a[0] == "int" && a[1] == "struct sock *")
        && std::env::var_os("SENDSIGHT_UDPQ_CLASSIC").is_none_or(|v| v != "1");
    let skb = raw
        && args
            .as_ref()
            .is_some_and(|a| a.len() >= 3 && a[2] == "struct sk_buff *")
        && ![k.skb_head, k.skb_network_header, k.skb_transport_header].contains(&ABSENT);
    (raw, skb)
}

fn udp_queue_methods(env: &Env) -> Vec<Method> {
    let (raw, skb) = udp_queue_variant(env);
    let classic_ok = layout::udpq_tp(env.root).is_ok();
    let mut m = Vec::new();
    if skb {
        m.push(Method {
            program: "udp_queue_raw_skb",
            kind: Kind::Raw("udp_fail_queue_rcv_skb"),
            note: None,
        });
    } else if raw {
        m.push(Method {
            program: "udp_queue_raw",
            kind: Kind::Raw("udp_fail_queue_rcv_skb"),
            note: None,
        });
    }
    if classic_ok || m.is_empty() {
        m.extend(classic(
            "udp_fail_queue_rcv_skb",
            "udp",
            "udp_fail_queue_rcv_skb",
        ));
    }
    m
}

fn udp_queue_resolve(env: &mut Env) -> Resolved {
    let (raw, skb) = udp_queue_variant(env);
    let k = env.kernel;
    let mut classic_note = String::new();
    match layout::udpq_tp(env.root) {
        Ok((t, old)) => {
            env.lay.udpq_tp = t;
            classic_note = format!(
                "classic record ({} layout): no socket pointer, drops keyed by local port; \
                 owner, buffer and queue unknown{}",
                if old {
                    "rc, lport"
                } else {
                    "rc, sport, dport, family, saddr, daddr"
                },
                if old {
                    "; sources unknown; IPv6 drops not reported (before 6.10)"
                } else {
                    ""
                }
            );
        }
        // The raw tracepoint does not need the record.
        Err(e) if !raw => return Err(e.to_string()),
        Err(_) => {}
    }
    let mut g: Vec<String> = Vec::new();
    if k.sk_rcvbuf == ABSENT || k.sk_rmem_alloc == ABSENT {
        g.push("sock buffer layout unknown: rcvbuf/queue unknown".into());
    }
    if k.sk_drops == ABSENT {
        g.push("sk_drops unknown: no cross-check with the socket's own counter".into());
    }
    if k.sk_socket == ABSENT || k.socket_vfs_inode == ABSENT || k.inode_ino == ABSENT {
        g.push("socket inode unknown: owners of receive-only sockets unknown".into());
    }
    let info = if skb {
        "prototype (rc, sk, skb): per socket, with sources".to_string()
    } else {
        if raw {
            g.push(
                "prototype (rc, sk) without the skb (before 6.10): sources unknown; IPv6 drops \
                 not reported (the IPv6 path fires this tracepoint from 6.10 on)"
                    .into(),
            );
        } else {
            g.push(classic_note);
        }
        String::new()
    };
    Ok(if g.is_empty() {
        (!info.is_empty()).then_some(Note::Info(info))
    } else {
        let gap = g.join("; ");
        Some(Note::Gap(if info.is_empty() {
            gap
        } else {
            format!("{info}; {gap}")
        }))
    })
}
