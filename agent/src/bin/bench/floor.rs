//! The floor programs (agent-ebpf/src/floor.rs): the cheapest program that sees each
//! event, one direct load at a compiled-in offset. Those offsets are checked against
//! the running kernel's tracefs before anything is loaded.

use anyhow::{Context, bail};
use aya::{
    Ebpf, EbpfLoader,
    programs::{RawTracePoint, TracePoint},
};
use sendsight::probes::tracefs;

/// The floor programs' object, built with the agent's (see agent/build.rs).
static OBJECT: &[u8] = aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agent-ebpf-floor"));

/// What the classic floors read: (group, event, field, offset, size).
const FIELDS: &[(&str, &str, &str, u16, u16)] = &[
    ("sock", "sock_send_length", "ret", 20, 4),
    ("net", "netif_receive_skb", "len", 16, 4),
    ("syscalls", "sys_exit_sendto", "ret", 16, 8),
];

/// Where a floor program goes.
pub enum At {
    Classic(&'static str, &'static str),
    Raw(&'static str),
}

/// Loads the floor object after checking its offsets on this kernel.
pub fn load() -> anyhow::Result<Ebpf> {
    let root = match tracefs::ensure_mounted()? {
        tracefs::Found::AlreadyMounted(p) | tracefs::Found::MountedByUs(p) => p,
    };
    for (group, event, field, offset, size) in FIELDS {
        let f = tracefs::read_format(&root, group, event)?;
        let got = f
            .field(field)
            .with_context(|| format!("{group}:{event} has no field {field}"))?;
        if (got.offset, got.size) != (*offset, *size) {
            bail!(
                "{group}:{event}.{field} is at {}+{} on this kernel, the floor program reads \
                 {offset}+{size}: adjust agent-ebpf/src/floor.rs",
                got.offset,
                got.size
            );
        }
    }
    Ok(EbpfLoader::new().load(OBJECT)?)
}

/// Loads and attaches `program` at `at`.
pub fn attach(ebpf: &mut Ebpf, program: &str, at: At) -> anyhow::Result<()> {
    let p = ebpf.program_mut(program).context(program.to_string())?;
    match at {
        At::Classic(group, event) => {
            let p: &mut TracePoint = p.try_into()?;
            p.load()?;
            p.attach(group, event)?;
        }
        At::Raw(event) => {
            let p: &mut RawTracePoint = p.try_into()?;
            p.load()?;
            p.attach(event)?;
        }
    }
    Ok(())
}
