//! Builds the `Layout` table the programs read: tracepoint offsets from tracefs,
//! struct member offsets from BTF. Everything the programs touch is checked here
//! for existence and size; what a kernel lacks becomes `ABSENT` plus a note, and
//! the probe that needs it is reported degraded or unavailable, never silently wrong.

use std::path::Path;

use agent_common::layout::{ABSENT, FlowTp, KernelStructs, Layout, RetransmitTp, UdpqTp};

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

fn tp_opt(format: &Format, tp: &str, name: &str, size: u16) -> Result<u16, LayoutError> {
    match format.field(name) {
        Some(_) => tp_field(format, tp, name, size),
        None => Ok(ABSENT),
    }
}

pub fn member(btf: &Btf, strukt: &str, path: &str, size: u32) -> Result<u16, LayoutError> {
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

/// Resolution with a record of what is missing, for the probe report.
pub struct Resolver<'a> {
    pub btf: &'a Btf,
    pub missing: Vec<String>,
}

impl Resolver<'_> {
    /// A member the programs can do without: ABSENT (and noted) when missing.
    fn opt(&mut self, strukt: &str, path: &str, size: u32) -> u16 {
        match member(self.btf, strukt, path, size) {
            Ok(off) => off,
            Err(e) => {
                self.missing.push(e.to_string());
                ABSENT
            }
        }
    }

    /// The first of several candidate paths that exists (members move between
    /// kernel versions).
    fn first(&mut self, strukt: &str, paths: &[&str], size: u32) -> u16 {
        for p in paths {
            if let Ok(off) = member(self.btf, strukt, p, size) {
                return off;
            }
        }
        self.missing
            .push(format!("struct {strukt} has none of {}", paths.join(", ")));
        ABSENT
    }
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
        // Absent from older records (5.10): the family is then read from the socket.
        family: tp_opt(&f, TP, "family", 2)?,
        saddr: tp_field(&f, TP, "saddr", 4)?,
        daddr: tp_field(&f, TP, "daddr", 4)?,
        saddr_v6: tp_field(&f, TP, "saddr_v6", 16)?,
        daddr_v6: tp_field(&f, TP, "daddr_v6", 16)?,
        // Added in 6.x; older kernels only report successful retransmits.
        err: tp_opt(&f, TP, "err", 4)?,
        _reserved: 0,
    })
}

/// The shared flow fields of `group:name`, plus up to two extra fields.
pub fn flow_tp(
    root: &Path,
    group: &str,
    name: &str,
    skaddr: bool,
    extra1: Option<(&str, u16)>,
    extra2: Option<(&str, u16)>,
) -> Result<FlowTp, LayoutError> {
    let tp = format!("{group}:{name}");
    let f = tracefs::read_format(root, group, name)?;
    Ok(FlowTp {
        skaddr: if skaddr {
            tp_field(&f, &tp, "skaddr", 8)?
        } else {
            ABSENT
        },
        sport: tp_field(&f, &tp, "sport", 2)?,
        dport: tp_field(&f, &tp, "dport", 2)?,
        family: tp_field(&f, &tp, "family", 2)?,
        protocol: tp_opt(&f, &tp, "protocol", 2)?,
        saddr: tp_field(&f, &tp, "saddr", 4)?,
        daddr: tp_field(&f, &tp, "daddr", 4)?,
        saddr_v6: tp_field(&f, &tp, "saddr_v6", 16)?,
        daddr_v6: tp_field(&f, &tp, "daddr_v6", 16)?,
        extra1: match extra1 {
            Some((n, s)) => tp_field(&f, &tp, n, s)?,
            None => ABSENT,
        },
        extra2: match extra2 {
            Some((n, s)) => tp_field(&f, &tp, n, s)?,
            None => ABSENT,
        },
        _reserved: 0,
    })
}

pub fn send_tp(root: &Path) -> Result<(u16, u16), LayoutError> {
    const TP: &str = "sock:sock_send_length";
    let f = tracefs::read_format(root, "sock", "sock_send_length")?;
    Ok((tp_field(&f, TP, "sk", 8)?, tp_field(&f, TP, "ret", 4)?))
}

/// `syscalls:sys_exit_<name>`: `(__syscall_nr, ret)`. The syscall events share one
/// record layout; each is checked anyway (they are generated per syscall).
pub fn sys_exit_tp(root: &Path, name: &str) -> Result<(u16, u16), LayoutError> {
    let tp = format!("syscalls:sys_exit_{name}");
    let f = tracefs::read_format(root, "syscalls", &format!("sys_exit_{name}"))?;
    Ok((
        tp_field(&f, &tp, "__syscall_nr", 4)?,
        tp_field(&f, &tp, "ret", 8)?,
    ))
}

pub fn netif_tp(root: &Path) -> Result<u16, LayoutError> {
    let f = tracefs::read_format(root, "net", "netif_receive_skb")?;
    tp_field(&f, "net:netif_receive_skb", "skbaddr", 8)
}

pub fn icmp_send_tp(root: &Path) -> Result<(u16, u16, u16), LayoutError> {
    const TP: &str = "icmp:icmp_send";
    let f = tracefs::read_format(root, "icmp", "icmp_send")?;
    Ok((
        tp_field(&f, TP, "skbaddr", 8)?,
        tp_field(&f, TP, "type", 4)?,
        tp_field(&f, TP, "code", 4)?,
    ))
}

#[cfg(target_arch = "x86_64")]
fn regs(r: &mut Resolver) -> (u16, u16, u16, u16, u16) {
    (
        r.opt("pt_regs", "orig_ax", 8),
        r.opt("pt_regs", "di", 8),
        r.opt("pt_regs", "si", 8),
        r.opt("pt_regs", "dx", 8),
        r.opt("pt_regs", "ax", 8),
    )
}

#[cfg(target_arch = "aarch64")]
fn regs(r: &mut Resolver) -> (u16, u16, u16, u16, u16) {
    let base = r.opt("user_pt_regs", "regs", 31 * 8);
    let arg = |n: u16| if base == ABSENT { ABSENT } else { base + 8 * n };
    // x0 carries both the first argument and the return value on arm64.
    (
        r.opt("pt_regs", "syscallno", 4),
        arg(0),
        arg(1),
        arg(2),
        arg(0),
    )
}

pub fn kernel_structs(r: &mut Resolver) -> KernelStructs {
    let (regs_nr, regs_arg0, regs_arg1, regs_arg2, regs_ret) = regs(r);
    KernelStructs {
        skb_len: r.opt("sk_buff", "len", 4),
        skb_cb: r.opt("sk_buff", "cb", 48),
        skb_head: r.opt("sk_buff", "head", 8),
        skb_network_header: r.opt("sk_buff", "network_header", 2),
        skb_protocol: r.opt("sk_buff", "protocol", 2),
        skb_dev: r.opt("sk_buff", "dev", 8),
        skb_data: r.opt("sk_buff", "data", 8),
        tcb_seq: r.opt("tcp_skb_cb", "seq", 4),
        tcb_gso_segs: r.opt("tcp_skb_cb", "tcp_gso_segs", 2),
        tcb_gso_size: r.opt("tcp_skb_cb", "tcp_gso_size", 2),
        dev_ifindex: r.opt("net_device", "ifindex", 4),
        dev_net: r.opt("net_device", "nd_net.net", 8),
        sk_family: r.opt("sock", "__sk_common.skc_family", 2),
        sk_state: r.opt("sock", "__sk_common.skc_state", 1),
        sk_num: r.opt("sock", "__sk_common.skc_num", 2),
        inet_sport: r.opt("inet_sock", "inet_sport", 2),
        sk_dport: r.opt("sock", "__sk_common.skc_dport", 2),
        sk_rcv_saddr: r.opt("sock", "__sk_common.skc_rcv_saddr", 4),
        sk_daddr: r.opt("sock", "__sk_common.skc_daddr", 4),
        sk_v6_rcv_saddr: r.opt("sock", "__sk_common.skc_v6_rcv_saddr", 16),
        sk_v6_daddr: r.opt("sock", "__sk_common.skc_v6_daddr", 16),
        sk_net: r.opt("sock", "__sk_common.skc_net.net", 8),
        sk_protocol: r.opt("sock", "sk_protocol", 2),
        net_inum: r.opt("net", "ns.inum", 4),
        icsk_rto: r.opt("inet_connection_sock", "icsk_rto", 4),
        icsk_ca_state: r.opt("inet_connection_sock", "icsk_ca_state", 1),
        icsk_backoff: r.opt("inet_connection_sock", "icsk_backoff", 1),
        icsk_pending: r.opt("inet_connection_sock", "icsk_pending", 1),
        icsk_pmtu_cookie: r.opt("inet_connection_sock", "icsk_pmtu_cookie", 4),
        tp_mss_cache: r.opt("tcp_sock", "mss_cache", 4),
        tp_write_seq: r.opt("tcp_sock", "write_seq", 4),
        tp_snd_una: r.opt("tcp_sock", "snd_una", 4),
        tp_srtt_us: r.opt("tcp_sock", "srtt_us", 4),
        tp_snd_cwnd: r.first("tcp_sock", &["snd_cwnd"], 4),
        tp_delivered: r.opt("tcp_sock", "delivered", 4),
        tp_bytes_acked: r.opt("tcp_sock", "bytes_acked", 8),
        tp_dsack_dups: r.opt("tcp_sock", "dsack_dups", 4),
        task_files: r.opt("task_struct", "files", 8),
        files_fdt: r.opt("files_struct", "fdt", 8),
        fdt_fd: r.opt("fdtable", "fd", 8),
        fdt_max_fds: r.opt("fdtable", "max_fds", 4),
        file_inode: r.opt("file", "f_inode", 8),
        file_private_data: r.opt("file", "private_data", 8),
        inode_mode: r.opt("inode", "i_mode", 2),
        socket_sk: r.opt("socket", "sk", 8),
        regs_nr,
        regs_arg0,
        regs_arg1,
        regs_arg2,
        regs_ret,
        sk_rcvbuf: r.opt("sock", "sk_rcvbuf", 4),
        sk_rmem_alloc: r.opt("sock", "sk_backlog.rmem_alloc", 4),
        sk_drops: r.opt("sock", "sk_drops", 4),
        sk_err: r.opt("sock", "sk_err", 4),
        // 6.18+ only: not missing elsewhere, so not noted.
        sk_drop_counters: member(r.btf, "sock", "sk_drop_counters", 8).unwrap_or(ABSENT),
        ndc_drops0: member(r.btf, "numa_drop_counters", "drops0", 4).unwrap_or(ABSENT),
        ndc_drops1: member(r.btf, "numa_drop_counters", "drops1", 4).unwrap_or(ABSENT),
        sk_socket: r.opt("sock", "sk_socket", 8),
        // Only the offset: the inode is a large struct.
        socket_vfs_inode: match r.btf.member("socket_alloc", "vfs_inode") {
            Ok(m) => u16::try_from(m.offset).unwrap_or(ABSENT),
            Err(e) => {
                r.missing.push(e.to_string());
                ABSENT
            }
        },
        inode_ino: r.opt("inode", "i_ino", 8),
        skb_transport_header: r.opt("sk_buff", "transport_header", 2),
    }
}

/// `udp:udp_fail_queue_rcv_skb`, either layout (see `UdpqTp`); `old` says which.
pub fn udpq_tp(root: &Path) -> Result<(UdpqTp, bool), LayoutError> {
    const TP: &str = "udp:udp_fail_queue_rcv_skb";
    let f = tracefs::read_format(root, "udp", "udp_fail_queue_rcv_skb")?;
    let rc = tp_field(&f, TP, "rc", 4)?;
    if f.field("lport").is_some() {
        let mut t = agent_common::layout::Layout::UNRESOLVED.udpq_tp;
        t.rc = rc;
        t.lport = tp_field(&f, TP, "lport", 2)?;
        return Ok((t, true));
    }
    Ok((
        UdpqTp {
            rc,
            lport: ABSENT,
            sport: tp_field(&f, TP, "sport", 2)?,
            dport: tp_field(&f, TP, "dport", 2)?,
            family: tp_field(&f, TP, "family", 2)?,
            saddr: tp_field(&f, TP, "saddr", 28)?,
            daddr: tp_field(&f, TP, "daddr", 28)?,
            _reserved: 0,
        },
        false,
    ))
}

/// A layout with every tracepoint marked absent, for filling in probe by probe.
pub fn empty() -> Layout {
    Layout::UNRESOLVED
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEAD: &str = "name: udp_fail_queue_rcv_skb\nID: 1\nformat:\n\
        \tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;\n\
        \tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;\n\
        \tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;\n\
        \tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;\n\n";

    /// A tracefs root holding one `udp:udp_fail_queue_rcv_skb/format`.
    fn root_with(body: &str) -> std::path::PathBuf {
        static N: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let root = std::env::temp_dir().join(format!(
            "sendsight-udpq-{}-{}",
            std::process::id(),
            N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        ));
        let dir = root.join("events/udp/udp_fail_queue_rcv_skb");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("format"), format!("{HEAD}{body}")).unwrap();
        root
    }

    #[test]
    fn udp_queue_record_before_6_10_has_rc_and_lport() {
        let root = root_with(
            "\tfield:int rc;\toffset:8;\tsize:4;\tsigned:1;\n\
             \tfield:__u16 lport;\toffset:12;\tsize:2;\tsigned:0;\n\n\
             print fmt: \"rc=%d port=%hu\", REC->rc, REC->lport\n",
        );
        let (t, old) = udpq_tp(&root).unwrap();
        assert!(old);
        assert_eq!((t.rc, t.lport), (8, 12));
        assert_eq!([t.sport, t.dport, t.family, t.saddr, t.daddr], [ABSENT; 5]);
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn udp_queue_record_from_6_10_has_ports_family_and_addresses() {
        let root = root_with(
            "\tfield:int rc;\toffset:8;\tsize:4;\tsigned:1;\n\
             \tfield:__u16 sport;\toffset:12;\tsize:2;\tsigned:0;\n\
             \tfield:__u16 dport;\toffset:14;\tsize:2;\tsigned:0;\n\
             \tfield:__u16 family;\toffset:16;\tsize:2;\tsigned:0;\n\
             \tfield:__u8 saddr[28];\toffset:18;\tsize:28;\tsigned:0;\n\
             \tfield:__u8 daddr[28];\toffset:46;\tsize:28;\tsigned:0;\n\n",
        );
        let (t, old) = udpq_tp(&root).unwrap();
        assert!(!old);
        assert_eq!(
            [t.rc, t.lport, t.sport, t.dport, t.family, t.saddr, t.daddr],
            [8, ABSENT, 12, 14, 16, 18, 46]
        );
        let _ = std::fs::remove_dir_all(root);
    }

    #[test]
    fn udp_queue_record_without_rc_is_refused() {
        let root = root_with("\tfield:__u16 lport;\toffset:12;\tsize:2;\tsigned:0;\n");
        assert!(matches!(
            udpq_tp(&root),
            Err(LayoutError::MissingField { .. })
        ));
        let _ = std::fs::remove_dir_all(root);
    }

    /// This kernel (6.18): the raw prototypes the loader checks and the members the
    /// udp_queue programs read.
    #[test]
    fn udp_queue_hooks_and_members_on_the_running_kernel() {
        let btf = Btf::from_sys_fs().expect("the host kernel must have BTF");
        let args = btf.raw_tracepoint_args("udp_fail_queue_rcv_skb").unwrap();
        assert_eq!(&args[..2], ["int", "struct sock *"]);
        let limit = btf.raw_tracepoint_args("sock_exceed_buf_limit").unwrap();
        assert_eq!(
            (limit[0].as_str(), limit[3].as_str()),
            ("struct sock *", "int")
        );
        let mut r = Resolver {
            btf: &btf,
            missing: Vec::new(),
        };
        let k = kernel_structs(&mut r);
        for (name, off) in [
            ("sk_rcvbuf", k.sk_rcvbuf),
            ("sk_rmem_alloc", k.sk_rmem_alloc),
            ("sk_drops", k.sk_drops),
            ("sk_socket", k.sk_socket),
            ("socket_vfs_inode", k.socket_vfs_inode),
            ("inode_ino", k.inode_ino),
            ("skb_transport_header", k.skb_transport_header),
        ] {
            assert_ne!(off, ABSENT, "{name}");
        }
    }
}
