//! Deciding what to attach, and attaching it: tracefs and BTF resolution, loading the
//! embedded object with the resolved layout, attaching each program where the
//! kernel allows, and a report of what happened to each probe (`sendsight check`,
//! and the `start` line of `run`).

pub mod btf;
pub mod layout;
pub mod misses;
pub mod table;
pub mod tracefs;
pub mod transport;

use agent_common::{
    event::{PendingSend, UdpQueueDrop},
    layout::{Config, Layout, send_slot},
    loss,
};
use aya::{
    Ebpf, EbpfLoader,
    maps::{
        HashMap, MapData, PerCpuArray, PerfEventArray, RingBuf,
        perf::{PerfBufferError, PerfEventArrayBuffer},
    },
    programs::{BtfTracePoint, FExit, RawTracePoint, TracePoint},
};
use serde::Serialize;

use crate::{EBPF_OBJECT, EBPF_OBJECT_PERF, privileges};
use transport::{Chosen, Transport};

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
    #[error(
        "loading the eBPF object: {error}; this kernel (before 5.11) charges map memory to \
         RLIMIT_MEMLOCK, here {soft} (hard {hard}), and raising it beyond the hard limit \
         needs CAP_SYS_RESOURCE: grant it, or raise the limit (systemd \
         LimitMEMLOCK=infinity, ulimit -l unlimited), or shrink --ring-bytes/--max-sockets"
    )]
    Memlock {
        error: Box<aya::EbpfError>,
        soft: String,
        hard: String,
    },
    #[error("map {0} missing from the eBPF object")]
    NoMap(&'static str),
    #[error("map {name}: {error}")]
    Map {
        name: &'static str,
        error: aya::maps::MapError,
    },
    #[error("listing the online CPUs ({path}): {error}")]
    OnlineCpus {
        path: &'static str,
        error: std::io::Error,
    },
    #[error("perf buffer of CPU {cpu}: {error}")]
    PerfBuffer { cpu: u32, error: PerfBufferError },
}

/// Tunables of the kernel side.
#[derive(Clone, Debug)]
pub struct Options {
    /// EVENTS ring buffer size in bytes (power of two, multiple of the page size);
    /// with perf buffers, their total (`transport::perf_pages`).
    pub ring_bytes: u32,
    /// The transport asked for (`--transport`, `SENDSIGHT_TRANSPORT`).
    pub transport: transport::Request,
    /// Entries of the kernel's socket -> owner/counters map.
    pub max_sockets: u32,
    /// BTF to use instead of /sys/kernel/btf/vmlinux (e.g. from BTFHub for kernels
    /// built without CONFIG_DEBUG_INFO_BTF).
    pub btf: Option<std::path::PathBuf>,
    /// Too-big records (anyone on the network can send those) each CPU may emit
    /// per second; the rest are counted.
    pub too_big_per_cpu_s: u32,
    /// Probes forced to one attach method (`--attach`).
    pub force: Vec<table::Force>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            ring_bytes: 1 << 20,
            transport: transport::Request::default(),
            max_sockets: 65_536,
            too_big_per_cpu_s: Config::DEFAULT.net_events_per_cpu_s,
            btf: None,
            force: Vec::new(),
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

/// Where the programs' records arrive (`transport`).
pub enum Events {
    Ring(RingBuf<MapData>),
    /// One buffer per online CPU. The array is kept with them: dropping it clears
    /// its entries, and the programs' output would fail from then on.
    Perf {
        array: PerfEventArray<MapData>,
        buffers: Vec<PerfEventArrayBuffer>,
        pages: usize,
    },
}

/// Loaded and attached programs plus the maps the agent reads.
pub struct Loaded {
    /// Dropping it detaches and unloads every program (aya owns the links).
    ebpf: Option<Ebpf>,
    /// The transport in use and why.
    pub transport: Chosen,
    /// Taken by the ingest stage.
    pub events: Option<Events>,
    pub lost: PerCpuArray<MapData, u64>,
    /// Socket-layer send failures waiting for their syscall exit, per thread.
    pub pending: HashMap<MapData, u32, PendingSend>,
    /// Receive-queue drop state per socket (`udp_queue_drop`), read by the agent to
    /// send the latest counts through the stream.
    pub udpq: HashMap<MapData, u64, UdpQueueDrop>,
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

    /// Program runs the kernel skipped so far (`recursion_misses`, 5.12+: None
    /// before, and after `detach`).
    pub fn skipped_runs(&self) -> Option<u64> {
        self.ebpf.as_ref().and_then(misses::total)
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

pub fn load(opts: Options) -> Result<Loaded, ProbeError> {
    let chosen = transport::choose(opts.transport, transport::kernel_has_ring);
    let object = match chosen.kind {
        Transport::Ring => EBPF_OBJECT,
        Transport::Perf => EBPF_OBJECT_PERF,
    };
    if object.is_empty() {
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
    let mut env = table::Env {
        root: &root,
        btf: &btf,
        kernel: lay.kernel,
        lay: &mut lay,
    };
    let mut plans: Vec<table::Plan> = table::PROBES.iter().map(|p| p.plan(&mut env)).collect();
    for f in &opts.force {
        for p in plans.iter_mut().filter(|p| p.probe == f.probe) {
            p.force(f.way);
        }
    }

    // The socket-layer program parks failures for the syscall exit only when that
    // hook is really there: if it is planned but fails to load or attach, everything
    // is loaded again with the parking off (the setting is frozen at load).
    // BTF-typed programs are verified against the kernel's own BTF (aya's parse of
    // it; the one above is the agent's reader for offsets).
    let typed = TypedBtf::new(opts.btf.as_deref());
    // Before 5.11 maps are charged to RLIMIT_MEMLOCK: use what the hard limit allows
    // (the loader's own retry asks for unlimited, which needs CAP_SYS_RESOURCE).
    let memlock = privileges::memlock(opts.ring_bytes.into());
    if memlock != privileges::Memlock::NotCharged {
        privileges::raise_memlock_soft();
    }
    let mut attempt = 0;
    let (ebpf, report) = loop {
        attempt += 1;
        let sys_exit_planned = plans
            .iter()
            .any(|p| p.probe == "send_syscall" && p.blocked.is_none());
        let errors_at_close = errors_at_close(&plans, &lay);
        let config = Config {
            errors_at_close: errors_at_close as u32,
            self_tgid: std::process::id(),
            sys_exit_attached: sys_exit_planned as u32,
            send_syscalls: send_syscalls(),
            wakeup_bytes: opts.ring_bytes / 8,
            net_events_per_cpu_s: opts.too_big_per_cpu_s,
            ..Config::DEFAULT
        };
        let mut loader = EbpfLoader::new();
        loader
            .override_global("LAYOUT", &lay, true)
            .override_global("CONFIG", &config, true)
            .map_max_entries("SOCKS", opts.max_sockets);
        // A perf event array has one entry per CPU (aya sizes it); its buffers are
        // sized when they are opened, below.
        if chosen.kind == Transport::Ring {
            loader.map_max_entries("EVENTS", opts.ring_bytes);
        }
        let mut ebpf = loader.load(object).map_err(|error| {
            // A map refused for memory, where that memory is the user's memlock limit.
            let refused = matches!(
                &error,
                aya::EbpfError::MapError(aya::maps::MapError::CreateError { io_error, .. })
                    if io_error.raw_os_error() == Some(libc::EPERM)
            );
            // Only a finite hard limit can be what refused it (an LSM can refuse too).
            match memlock {
                privileges::Memlock::Charged { hard: Some(_), .. } if refused => {
                    let (soft, hard) = privileges::raise_memlock_soft();
                    let say =
                        |v: Option<u64>| v.map_or("unlimited".into(), privileges::human_bytes);
                    ProbeError::Memlock {
                        error: Box::new(error),
                        soft: say(soft),
                        hard: say(hard),
                    }
                }
                _ => ProbeError::Load(error),
            }
        })?;
        let report: Vec<ProbeStatus> = plans.iter().map(|p| attach(&mut ebpf, p, &typed)).collect();
        // Planned, yet failed to attach, and other programs behave otherwise without
        // them: those go again with the probe blocked.
        let failed: Vec<&ProbeStatus> = report
            .iter()
            .filter(|r| r.state == State::Unavailable)
            .filter(|r| {
                (r.probe == "send_syscall" && sys_exit_planned)
                    || (r.probe == "socket_error" && !errors_at_close)
            })
            .filter(|r| {
                plans
                    .iter()
                    .any(|p| p.probe == r.probe && p.blocked.is_none())
            })
            .collect();
        if failed.is_empty() || attempt > 1 {
            break (ebpf, report);
        }
        let blocked: Vec<(&'static str, String)> = failed
            .iter()
            .map(|r| {
                let why = r.note.split("; fallback:").next().unwrap_or(&r.note);
                (r.probe, why.to_string())
            })
            .collect();
        drop(ebpf);
        for (probe, why) in blocked {
            for p in plans.iter_mut().filter(|p| p.probe == probe) {
                p.blocked = Some(why.clone());
            }
        }
    };
    let mut report = report;
    if errors_at_close(&plans, &lay) {
        errors_from_socket_state(&mut report);
    }
    let mut ebpf = ebpf;

    let events = ebpf.take_map("EVENTS").ok_or(ProbeError::NoMap("EVENTS"))?;
    let map_error = |error| ProbeError::Map {
        name: "EVENTS",
        error,
    };
    let events = match chosen.kind {
        Transport::Ring => Events::Ring(RingBuf::try_from(events).map_err(map_error)?),
        Transport::Perf => {
            let mut array = PerfEventArray::try_from(events).map_err(map_error)?;
            let cpus = aya::util::online_cpus()
                .map_err(|(path, error)| ProbeError::OnlineCpus { path, error })?;
            // SAFETY: sysconf has no preconditions.
            let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(1) as usize;
            let pages = transport::perf_pages(opts.ring_bytes, cpus.len(), page);
            let mut buffers = Vec::with_capacity(cpus.len());
            for cpu in cpus {
                let buffer = PerfEventArrayBuffer::open(cpu, pages)
                    .map_err(|error| ProbeError::PerfBuffer { cpu, error })?;
                array.set(cpu, &buffer).map_err(map_error)?;
                buffers.push(buffer);
            }
            Events::Perf {
                array,
                buffers,
                pages,
            }
        }
    };
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
    let udpq = ebpf.take_map("UDPQ").ok_or(ProbeError::NoMap("UDPQ"))?;
    let udpq = HashMap::try_from(udpq).map_err(|error| ProbeError::Map {
        name: "UDPQ",
        error,
    })?;
    Ok(Loaded {
        ebpf: Some(ebpf),
        transport: chosen,
        events: Some(events),
        lost,
        pending,
        udpq,
        report,
        tracefs: found,
        missing_members: resolver.missing,
    })
}

/// Attaches a planned probe by its first method that works; says how it went.
/// aya's BTF for loading BTF-typed programs, parsed on first use.
struct TypedBtf<'a> {
    path: Option<&'a std::path::Path>,
    btf: std::cell::OnceCell<Result<aya::Btf, String>>,
}

impl<'a> TypedBtf<'a> {
    fn new(path: Option<&'a std::path::Path>) -> Self {
        TypedBtf {
            path,
            btf: std::cell::OnceCell::new(),
        }
    }

    fn get(&self) -> Result<&aya::Btf, String> {
        self.btf
            .get_or_init(|| {
                match self.path {
                    Some(p) => aya::Btf::parse_file(p, aya::Endianness::default()),
                    None => aya::Btf::from_sys_fs(),
                }
                .map_err(|e| format!("parsing BTF for typed programs: {e}"))
            })
            .as_ref()
            .map_err(Clone::clone)
    }
}

/// No error-report hook, but the state-change one and `sk_err` in BTF: the
/// state-change program then reads the error a socket dies of.
fn errors_at_close(plans: &[table::Plan], lay: &Layout) -> bool {
    let blocked = |name: &str| plans.iter().any(|p| p.probe == name && p.blocked.is_some());
    let planned = |name: &str| plans.iter().any(|p| p.probe == name && p.blocked.is_none());
    blocked("socket_error")
        && planned("socket_state")
        && lay.kernel.sk_err != agent_common::layout::ABSENT
}

/// `socket_error`'s status when the state-change program carries it.
fn errors_from_socket_state(report: &mut [ProbeStatus]) {
    let state_attached = report
        .iter()
        .any(|r| r.probe == "socket_state" && r.state != State::Unavailable);
    let Some(r) = report.iter_mut().find(|r| r.probe == "socket_error") else {
        return;
    };
    if !state_attached {
        return;
    }
    let why = r
        .note
        .split("; fallback:")
        .next()
        .unwrap_or(&r.note)
        .to_string();
    r.attach = "sk_err when a TCP socket moves to CLOSE (socket_state's program)".into();
    r.state = State::Degraded;
    r.note = format!(
        "{why}; the error a TCP socket dies of (reset, timeout, refused connect) is read \
         as it closes; errors a socket survives (UDP, soft errors) are not seen"
    );
}

fn attach(ebpf: &mut Ebpf, plan: &table::Plan, btf: &TypedBtf) -> ProbeStatus {
    let first = plan
        .methods
        .first()
        .map(|m| m.kind.describe())
        .unwrap_or_default();
    let status = |attach: String, state: State, note: String| ProbeStatus {
        probe: plan.probe,
        attach,
        state,
        note,
    };
    if let Some(why) = &plan.blocked {
        let note = format!("{why}; fallback: {}", plan.fallback);
        return status(first, State::Unavailable, note);
    }
    // A kernel that refuses BPF trampolines outright (no verifier log: the program
    // type is not there) does not offer fexit: choosing the next method is then not
    // a degradation, only said. Any other failure is.
    let mut failures: Vec<String> = Vec::new();
    let mut not_offered: Vec<String> = Vec::new();
    for method in &plan.methods {
        let (gap, info) = match &method.note {
            Some(table::Note::Gap(g)) => (Some(g.as_str()), None),
            Some(table::Note::Info(i)) => (None, Some(i.as_str())),
            None => (None, None),
        };
        let gaps: Vec<&str> = plan.degraded.as_deref().into_iter().chain(gap).collect();
        match attach_one(ebpf, method.program, &method.kind, btf) {
            Ok(()) if failures.is_empty() => {
                let (state, note) = if gaps.is_empty() {
                    let info = info.or(plan.info.as_deref()).unwrap_or_default();
                    (State::Attached, info.to_string())
                } else {
                    (State::Degraded, gaps.join("; "))
                };
                let note = if not_offered.is_empty() {
                    note
                } else {
                    let why = format!("{}: {}", not_offered.join("; "), method.kind.describe());
                    if note.is_empty() {
                        why
                    } else {
                        format!("{why}; {note}")
                    }
                };
                return status(method.kind.describe(), state, note);
            }
            Ok(()) => {
                let mut note = format!(
                    "{first} failed ({}); attached as {}",
                    failures.join("; then "),
                    method.kind.describe()
                );
                for g in gaps {
                    note += &format!("; {g}");
                }
                return status(method.kind.describe(), State::Degraded, note);
            }
            Err(Failure::NotOffered(e)) => not_offered.push(e),
            Err(Failure::Failed(e)) => failures.push(e),
        }
    }
    failures.extend(not_offered);
    let note = format!("{}; fallback: {}", failures.join("; then "), plan.fallback);
    status(first, State::Unavailable, note)
}

/// Why a method did not attach.
enum Failure {
    /// The kernel does not have this kind of program at all.
    NotOffered(String),
    Failed(String),
}

impl From<String> for Failure {
    fn from(e: String) -> Self {
        Failure::Failed(e)
    }
}

fn attach_one(
    ebpf: &mut Ebpf,
    program: &str,
    kind: &table::Kind,
    btf: &TypedBtf,
) -> Result<(), Failure> {
    if let table::Kind::Fexit(targets) = kind {
        return attach_fexits(ebpf, targets, btf);
    }
    let prog = ebpf
        .program_mut(program)
        .ok_or_else(|| format!("program {program} missing from the eBPF object"))?;
    match kind {
        table::Kind::Tracepoint(group, name) => {
            let tp: &mut TracePoint = prog.try_into().map_err(|e| format!("{e}"))?;
            tp.load().map_err(|e| format!("loading {program}: {e}"))?;
            tp.attach(group, name)
                .map_err(|e| format!("attaching {program}: {e}"))?;
        }
        table::Kind::Raw(name) => {
            let tp: &mut RawTracePoint = prog.try_into().map_err(|e| format!("{e}"))?;
            tp.load().map_err(|e| format!("loading {program}: {e}"))?;
            tp.attach(name)
                .map_err(|e| format!("attaching {program}: {e}"))?;
        }
        table::Kind::Typed(name) => {
            let tp: &mut BtfTracePoint = prog.try_into().map_err(|e| format!("{e}"))?;
            tp.load(name, btf.get()?)
                .map_err(|e| format!("loading {program}: {e}"))?;
            tp.attach()
                .map_err(|e| format!("attaching {program}: {e}"))?;
        }
        table::Kind::Fexit(_) => unreachable!("attached by attach_fexits"),
        table::Kind::SyscallExits(names) => {
            let tp: &mut TracePoint = prog.try_into().map_err(|e| format!("{e}"))?;
            tp.load().map_err(|e| format!("loading {program}: {e}"))?;
            let mut links = Vec::new();
            for name in names {
                match tp.attach("syscalls", &format!("sys_exit_{name}")) {
                    Ok(link) => links.push(link),
                    Err(e) => {
                        // All or none: the fallback must not report a failure twice.
                        for link in links {
                            let _ = tp.detach(link);
                        }
                        return Err(format!("attaching {program} to sys_exit_{name}: {e}").into());
                    }
                }
            }
        }
    }
    Ok(())
}

/// fexit programs, all or none: those attached before a failure are detached again.
fn attach_fexits(
    ebpf: &mut Ebpf,
    targets: &[(&'static str, String)],
    btf: &TypedBtf,
) -> Result<(), Failure> {
    let mut done: Vec<(&str, aya::programs::fexit::FExitLinkId)> = Vec::new();
    let mut result = Ok(());
    for (program, func) in targets {
        let r = (|| {
            let btf = btf.get()?;
            let prog: &mut FExit = ebpf
                .program_mut(program)
                .ok_or_else(|| format!("program {program} missing from the eBPF object"))?
                .try_into()
                .map_err(|e| format!("{e}"))?;
            prog.load(func, btf).map_err(|e| match &e {
                aya::programs::ProgramError::LoadError {
                    io_error,
                    verifier_log,
                } if verifier_log.to_string().trim().is_empty() => Failure::NotOffered(format!(
                    "fexit not offered by this kernel ({program} on {func}: {io_error})"
                )),
                _ => Failure::Failed(format!("loading {program} on {func}: {e}")),
            })?;
            prog.attach()
                .map_err(|e| Failure::Failed(format!("attaching {program} on {func}: {e}")))
        })();
        match r {
            Ok(link) => done.push((program, link)),
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    if result.is_err() {
        for (program, link) in done {
            if let Some(Ok(p)) = ebpf.program_mut(program).map(<&mut FExit>::try_from) {
                let _ = p.detach(link);
            }
        }
    }
    result
}
