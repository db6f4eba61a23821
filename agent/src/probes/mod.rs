//! Deciding what to attach, and attaching it: tracefs and BTF resolution, loading the
//! embedded object with the resolved layout, attaching each program, and a report of
//! what happened to each probe (printed at start-up).

pub mod btf;
pub mod layout;
pub mod tracefs;

use agent_common::loss;
use aya::{
    Ebpf, EbpfLoader,
    maps::{MapData, PerCpuArray, RingBuf},
    programs::TracePoint,
};

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
    #[error("resolving kernel layouts: {0}")]
    Layout(#[from] layout::LayoutError),
    #[error("loading the eBPF object: {0}")]
    Load(#[from] aya::EbpfError),
    #[error("program {program}: {source}")]
    Program {
        program: &'static str,
        source: aya::programs::ProgramError,
    },
    #[error("map {0} missing from the eBPF object")]
    NoMap(&'static str),
    #[error("map {name}: {source}")]
    Map {
        name: &'static str,
        source: aya::maps::MapError,
    },
}

/// Tunables of the kernel side.
#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// EVENTS ring buffer size in bytes (power of two, multiple of the page size).
    pub ring_bytes: u32,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            ring_bytes: 1 << 20,
        }
    }
}

/// How one probe ended up.
#[derive(Clone, Debug)]
pub struct ProbeStatus {
    pub probe: &'static str,
    pub attach: String,
    pub attached: bool,
    pub note: String,
}

/// Loaded and attached programs plus the maps the agent reads. Dropping `ebpf`
/// detaches every program (aya's links are owned by it).
pub struct Loaded {
    pub ebpf: Ebpf,
    /// Taken by the ingest stage.
    pub events: Option<RingBuf<MapData>>,
    pub lost: PerCpuArray<MapData, u64>,
    pub report: Vec<ProbeStatus>,
    pub tracefs: tracefs::Found,
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

    /// Detach every program: after this no event is produced. The maps stay
    /// readable so the ring can be drained and the ledger read.
    pub fn detach(&mut self) {
        let names: Vec<String> = self.ebpf.programs().map(|(n, _)| n.to_string()).collect();
        for name in names {
            if let Some(p) = self.ebpf.program_mut(&name) {
                // Unloading also drops the program's links.
                let _ = match p {
                    aya::programs::Program::TracePoint(tp) => tp.unload(),
                    _ => Ok(()),
                };
            }
        }
    }
}

pub fn load(opts: Options) -> Result<Loaded, ProbeError> {
    if EBPF_OBJECT.is_empty() {
        return Err(ProbeError::NoObject);
    }
    let found = tracefs::ensure_mounted()?;
    let btf = btf::Btf::from_sys_fs()?;
    let layout = layout::resolve(found.root(), &btf)?;

    let mut ebpf = EbpfLoader::new()
        .override_global("LAYOUT", &layout, true)
        .map_max_entries("EVENTS", opts.ring_bytes)
        .load(EBPF_OBJECT)?;

    let mut report = Vec::new();
    attach_tracepoint(&mut ebpf, "tcp_retransmit_skb", "tcp", "tcp_retransmit_skb")?;
    report.push(ProbeStatus {
        probe: "retransmit",
        attach: "tracepoint tcp:tcp_retransmit_skb".into(),
        attached: true,
        note: if layout.retransmit_tp.err == agent_common::layout::ABSENT {
            "no err field on this kernel: failed retransmit attempts are not reported".into()
        } else {
            "with err field".into()
        },
    });

    let events = ebpf.take_map("EVENTS").ok_or(ProbeError::NoMap("EVENTS"))?;
    let events = RingBuf::try_from(events).map_err(|source| ProbeError::Map {
        name: "EVENTS",
        source,
    })?;
    let lost = ebpf.take_map("LOST").ok_or(ProbeError::NoMap("LOST"))?;
    let lost = PerCpuArray::try_from(lost).map_err(|source| ProbeError::Map {
        name: "LOST",
        source,
    })?;
    Ok(Loaded {
        ebpf,
        events: Some(events),
        lost,
        report,
        tracefs: found,
    })
}

fn attach_tracepoint(
    ebpf: &mut Ebpf,
    program: &'static str,
    group: &str,
    name: &str,
) -> Result<(), ProbeError> {
    let prog: &mut TracePoint = ebpf
        .program_mut(program)
        .ok_or(ProbeError::Program {
            program,
            source: aya::programs::ProgramError::UnexpectedProgramType,
        })?
        .try_into()
        .map_err(|source| ProbeError::Program { program, source })?;
    prog.load()
        .map_err(|source| ProbeError::Program { program, source })?;
    prog.attach(group, name)
        .map_err(|source| ProbeError::Program { program, source })?;
    Ok(())
}
