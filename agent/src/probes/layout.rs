//! Builds the `Layout` table the programs read: tracepoint offsets from tracefs,
//! struct member offsets from BTF. Everything the programs touch is checked here
//! for existence and size, so a kernel that moved or resized something is reported
//! at start-up instead of producing wrong numbers.

use std::path::Path;

use agent_common::layout::{ABSENT, KernelStructs, Layout, RetransmitTp};

use super::{
    btf::{Btf, BtfError},
    tracefs::{self, Format, TracefsError},
};

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error(transparent)]
    Tracefs(#[from] TracefsError),
    #[error(transparent)]
    Btf(#[from] BtfError),
    #[error("{tracepoint}: field {field} is missing from this kernel's record layout")]
    MissingField { tracepoint: String, field: String },
    #[error("{what} is {got} bytes on this kernel; sendsight reads {want}")]
    Size { what: String, got: u32, want: u32 },
}

fn tp_field(format: &Format, tp: &str, name: &str, size: u16) -> Result<u16, LayoutError> {
    let f = format
        .field(name)
        .ok_or_else(|| LayoutError::MissingField {
            tracepoint: tp.into(),
            field: name.into(),
        })?;
    if f.size != size {
        return Err(LayoutError::Size {
            what: format!("{tp} field {name}"),
            got: f.size.into(),
            want: size.into(),
        });
    }
    Ok(f.offset)
}

fn member(btf: &Btf, strukt: &str, path: &str, size: u32) -> Result<u16, LayoutError> {
    let m = btf.member(strukt, path)?;
    if m.size != size {
        return Err(LayoutError::Size {
            what: format!("{strukt}.{path}"),
            got: m.size,
            want: size,
        });
    }
    u16::try_from(m.offset).map_err(|_| LayoutError::Size {
        what: format!("offset of {strukt}.{path}"),
        got: m.offset,
        want: u16::MAX as u32,
    })
}

pub fn retransmit_tp(root: &Path) -> Result<RetransmitTp, LayoutError> {
    const TP: &str = "tcp:tcp_retransmit_skb";
    let f = tracefs::read_format(root, "tcp", "tcp_retransmit_skb")?;
    Ok(RetransmitTp {
        skbaddr: tp_field(&f, TP, "skbaddr", 8)?,
        skaddr: tp_field(&f, TP, "skaddr", 8)?,
        state: tp_field(&f, TP, "state", 4)?,
        sport: tp_field(&f, TP, "sport", 2)?,
        dport: tp_field(&f, TP, "dport", 2)?,
        family: tp_field(&f, TP, "family", 2)?,
        saddr: tp_field(&f, TP, "saddr", 4)?,
        daddr: tp_field(&f, TP, "daddr", 4)?,
        saddr_v6: tp_field(&f, TP, "saddr_v6", 16)?,
        daddr_v6: tp_field(&f, TP, "daddr_v6", 16)?,
        // Added in 6.x; older kernels only report successful retransmits.
        err: match f.field("err") {
            Some(_) => tp_field(&f, TP, "err", 4)?,
            None => ABSENT,
        },
        _reserved: 0,
    })
}

pub fn kernel_structs(btf: &Btf) -> Result<KernelStructs, LayoutError> {
    Ok(KernelStructs {
        skb_len: member(btf, "sk_buff", "len", 4)?,
        skb_cb: member(btf, "sk_buff", "cb", 48)?,
        tcb_gso_segs: member(btf, "tcp_skb_cb", "tcp_gso_segs", 2)?,
        tcb_gso_size: member(btf, "tcp_skb_cb", "tcp_gso_size", 2)?,
    })
}

pub fn resolve(root: &Path, btf: &Btf) -> Result<Layout, LayoutError> {
    Ok(Layout {
        retransmit_tp: retransmit_tp(root)?,
        kernel: kernel_structs(btf)?,
    })
}
