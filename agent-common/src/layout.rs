//! Where things are in the running kernel's memory, and what the programs are told
//! about their environment.
//!
//! Rust eBPF gets no CO-RE relocations from the compiler, so no offset is compiled in:
//! the agent resolves tracepoint record layouts from tracefs `format` files and kernel
//! struct member offsets from BTF at start-up, and hands this table to the programs as
//! a read-only global (`LAYOUT`), frozen before verification. A field the running
//! kernel lacks is [`ABSENT`], and the programs skip what depends on it.

/// Marks a field the running kernel does not have.
pub const ABSENT: u16 = u16::MAX;

/// Offsets into the `tcp:tcp_retransmit_skb` tracepoint record.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetransmitTp {
    pub skbaddr: u16,
    pub skaddr: u16,
    pub state: u16,
    pub sport: u16,
    pub dport: u16,
    pub family: u16,
    pub saddr: u16,
    pub daddr: u16,
    pub saddr_v6: u16,
    pub daddr_v6: u16,
    /// [`ABSENT`] on kernels before the `err` field was added.
    pub err: u16,
    pub _reserved: u16,
}

/// The flow fields several `sock:`/`tcp:` tracepoints share, plus the extras each
/// one has (`ABSENT` where a tracepoint has no such field).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FlowTp {
    pub skaddr: u16,
    pub sport: u16,
    pub dport: u16,
    pub family: u16,
    pub protocol: u16,
    pub saddr: u16,
    pub daddr: u16,
    pub saddr_v6: u16,
    pub daddr_v6: u16,
    /// inet_sock_set_state: oldstate (int); inet_sk_error_report: error (int);
    /// tcp_cong_state_set: cong_state (u8).
    pub extra1: u16,
    /// inet_sock_set_state: newstate (int).
    pub extra2: u16,
    pub _reserved: u16,
}

/// `sock:sock_send_length` (6.3+).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SendTp {
    pub sk: u16,
    pub ret: u16,
}

/// `syscalls:sys_exit_<name>`: `__syscall_nr` (int) and `ret` (long), the one
/// record layout every syscall event has had since they appeared (2.6.33). The
/// program that runs on every send reads them with direct context loads, which need
/// offsets fixed in the instruction; the loader checks them in tracefs and attaches
/// the raw `sys_exit` instead where they differ.
pub const SYS_EXIT_NR: u16 = 8;
pub const SYS_EXIT_RET: u16 = 16;

/// `net:netif_receive_skb` and `icmp:icmp_send`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SkbTp {
    pub netif_skbaddr: u16,
    pub icmp_send_skbaddr: u16,
    pub icmp_send_type: u16,
    pub icmp_send_code: u16,
}

/// `udp:udp_fail_queue_rcv_skb`, the classic record (the fallback when the raw
/// tracepoint cannot be used). Two layouts exist: up to 6.9 `rc` and `lport` (the
/// local port); from 6.10 `rc`, `sport`/`dport` (the datagram's source and
/// destination ports), `family`, and `saddr`/`daddr` as 28-byte sockaddr storage.
/// Neither carries the socket pointer.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpqTp {
    pub rc: u16,
    /// Old layout only.
    pub lport: u16,
    pub sport: u16,
    pub dport: u16,
    pub family: u16,
    pub saddr: u16,
    pub daddr: u16,
    pub _reserved: u16,
}

/// Member offsets of kernel structs, from BTF. Offsets into `struct sock` are
/// relative to the socket pointer (tcp_sock, inet_connection_sock and inet_sock all
/// start with it).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KernelStructs {
    // struct sk_buff
    pub skb_len: u16,
    pub skb_cb: u16,
    pub skb_head: u16,
    pub skb_network_header: u16,
    pub skb_protocol: u16,
    pub skb_dev: u16,
    /// `sk_buff.data`: at netif_receive_skb, the network header.
    pub skb_data: u16,
    // struct tcp_skb_cb (inside skb->cb)
    pub tcb_seq: u16,
    pub tcb_gso_segs: u16,
    pub tcb_gso_size: u16,
    // struct net_device
    pub dev_ifindex: u16,
    pub dev_net: u16,
    // struct sock / sock_common
    pub sk_family: u16,
    pub sk_state: u16,
    pub sk_num: u16,
    /// `inet_sock.inet_sport` (network order): unlike `skc_num`, kept after the
    /// socket is unhashed on close, so errors after a reset still name the port.
    pub inet_sport: u16,
    pub sk_dport: u16,
    pub sk_rcv_saddr: u16,
    pub sk_daddr: u16,
    pub sk_v6_rcv_saddr: u16,
    pub sk_v6_daddr: u16,
    pub sk_net: u16,
    pub sk_protocol: u16,
    // struct net
    pub net_inum: u16,
    // struct inet_connection_sock (via tcp_sock)
    pub icsk_rto: u16,
    /// The byte holding the `icsk_ca_state:5` bitfield (low bits).
    pub icsk_ca_state: u16,
    pub icsk_backoff: u16,
    pub icsk_pending: u16,
    pub icsk_pmtu_cookie: u16,
    // struct tcp_sock
    pub tp_mss_cache: u16,
    pub tp_write_seq: u16,
    pub tp_snd_una: u16,
    pub tp_srtt_us: u16,
    pub tp_snd_cwnd: u16,
    pub tp_delivered: u16,
    pub tp_bytes_acked: u16,
    /// `tcp_sock.dsack_dups` (4.19+): segments the peer reported receiving twice
    /// (5.10+; DSACK blocks before).
    pub tp_dsack_dups: u16,
    // fd -> socket: task_struct.files -> files_struct.fdt -> fdtable.fd[fd] ->
    // file.private_data (struct socket) -> socket.sk; file.f_inode -> inode.i_mode
    pub task_files: u16,
    pub files_fdt: u16,
    pub fdt_fd: u16,
    pub fdt_max_fds: u16,
    pub file_inode: u16,
    pub file_private_data: u16,
    pub inode_mode: u16,
    pub socket_sk: u16,
    // struct pt_regs: the syscall number and arguments at sys_exit
    pub regs_nr: u16,
    pub regs_arg0: u16,
    pub regs_arg1: u16,
    pub regs_arg2: u16,
    /// The syscall's return value (`ax`): read where the hook sees no return value
    /// of its own (a call seccomp refused, seen at `__secure_computing`'s exit).
    pub regs_ret: u16,
    // Receive-queue drops (udp_queue.rs)
    /// `sock.sk_rcvbuf` (int)
    pub sk_rcvbuf: u16,
    /// `sock.sk_backlog.rmem_alloc` (atomic_t): bytes in the receive queue.
    pub sk_rmem_alloc: u16,
    /// `sock.sk_drops` (atomic_t)
    pub sk_drops: u16,
    /// `sock.sk_err` (int): what `inet_sk_error_report` reports.
    pub sk_err: u16,
    /// `sock.sk_drop_counters` (6.18+: per-NUMA drop counters UDP adds to sk_drops).
    pub sk_drop_counters: u16,
    pub ndc_drops0: u16,
    pub ndc_drops1: u16,
    /// `sock.sk_socket`, then the inode of the socket: `socket_alloc.vfs_inode`
    /// (relative to the struct socket) and `inode.i_ino`.
    pub sk_socket: u16,
    pub socket_vfs_inode: u16,
    pub inode_ino: u16,
    /// `sk_buff.transport_header`: the UDP header's offset from `head`.
    pub skb_transport_header: u16,
}

#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    pub retransmit_tp: RetransmitTp,
    pub set_state_tp: FlowTp,
    pub error_report_tp: FlowTp,
    pub cong_state_tp: FlowTp,
    pub send_tp: SendTp,
    pub skb_tp: SkbTp,
    pub kernel: KernelStructs,
    pub udpq_tp: UdpqTp,
}

const fn flow_absent() -> FlowTp {
    FlowTp {
        skaddr: ABSENT,
        sport: ABSENT,
        dport: ABSENT,
        family: ABSENT,
        protocol: ABSENT,
        saddr: ABSENT,
        daddr: ABSENT,
        saddr_v6: ABSENT,
        daddr_v6: ABSENT,
        extra1: ABSENT,
        extra2: ABSENT,
        _reserved: 0,
    }
}

impl Layout {
    /// Everything absent: what the programs see if the loader forgot to fill it in,
    /// which makes them emit nothing rather than read garbage.
    pub const UNRESOLVED: Layout = Layout {
        retransmit_tp: RetransmitTp {
            skbaddr: ABSENT,
            skaddr: ABSENT,
            state: ABSENT,
            sport: ABSENT,
            dport: ABSENT,
            family: ABSENT,
            saddr: ABSENT,
            daddr: ABSENT,
            saddr_v6: ABSENT,
            daddr_v6: ABSENT,
            err: ABSENT,
            _reserved: 0,
        },
        set_state_tp: flow_absent(),
        error_report_tp: flow_absent(),
        cong_state_tp: flow_absent(),
        send_tp: SendTp {
            sk: ABSENT,
            ret: ABSENT,
        },
        skb_tp: SkbTp {
            netif_skbaddr: ABSENT,
            icmp_send_skbaddr: ABSENT,
            icmp_send_type: ABSENT,
            icmp_send_code: ABSENT,
        },
        kernel: KernelStructs {
            skb_len: ABSENT,
            skb_cb: ABSENT,
            skb_head: ABSENT,
            skb_network_header: ABSENT,
            skb_protocol: ABSENT,
            skb_dev: ABSENT,
            skb_data: ABSENT,
            tcb_seq: ABSENT,
            tcb_gso_segs: ABSENT,
            tcb_gso_size: ABSENT,
            dev_ifindex: ABSENT,
            dev_net: ABSENT,
            sk_family: ABSENT,
            sk_state: ABSENT,
            sk_num: ABSENT,
            inet_sport: ABSENT,
            sk_dport: ABSENT,
            sk_rcv_saddr: ABSENT,
            sk_daddr: ABSENT,
            sk_v6_rcv_saddr: ABSENT,
            sk_v6_daddr: ABSENT,
            sk_net: ABSENT,
            sk_protocol: ABSENT,
            net_inum: ABSENT,
            icsk_rto: ABSENT,
            icsk_ca_state: ABSENT,
            icsk_backoff: ABSENT,
            icsk_pending: ABSENT,
            icsk_pmtu_cookie: ABSENT,
            tp_mss_cache: ABSENT,
            tp_write_seq: ABSENT,
            tp_snd_una: ABSENT,
            tp_srtt_us: ABSENT,
            tp_snd_cwnd: ABSENT,
            tp_delivered: ABSENT,
            tp_bytes_acked: ABSENT,
            tp_dsack_dups: ABSENT,
            task_files: ABSENT,
            files_fdt: ABSENT,
            fdt_fd: ABSENT,
            fdt_max_fds: ABSENT,
            file_inode: ABSENT,
            file_private_data: ABSENT,
            inode_mode: ABSENT,
            socket_sk: ABSENT,
            regs_nr: ABSENT,
            regs_arg0: ABSENT,
            regs_arg1: ABSENT,
            regs_arg2: ABSENT,
            regs_ret: ABSENT,
            sk_rcvbuf: ABSENT,
            sk_rmem_alloc: ABSENT,
            sk_drops: ABSENT,
            sk_err: ABSENT,
            sk_drop_counters: ABSENT,
            ndc_drops0: ABSENT,
            ndc_drops1: ABSENT,
            sk_socket: ABSENT,
            socket_vfs_inode: ABSENT,
            inode_ino: ABSENT,
            skb_transport_header: ABSENT,
        },
        udpq_tp: UdpqTp {
            rc: ABSENT,
            lport: ABSENT,
            sport: ABSENT,
            dport: ABSENT,
            family: ABSENT,
            saddr: ABSENT,
            daddr: ABSENT,
            _reserved: 0,
        },
    };
}

/// What the programs are told about the run (read-only global `CONFIG`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// The agent's own tgid: its writes are never reported (no feedback loops when
    /// stdout is a socket).
    pub self_tgid: u32,
    /// 1 when the syscall-exit hook is attached: socket-layer send failures then wait
    /// in PENDING for it instead of being emitted at once.
    pub sys_exit_attached: u32,
    /// Send-family syscall numbers on this architecture, in [`send_slot`] order
    /// (-1: not on this architecture).
    pub send_syscalls: [i32; 8],
    /// Value of `icsk_pending` meaning "loss probe timer" (ICSK_TIME_LOSS_PROBE).
    pub icsk_time_loss_probe: u32,
    /// Wake the reader only when this many bytes wait in the ring (it also polls on
    /// a short timer): a wakeup per event costs microseconds per event.
    pub wakeup_bytes: u32,
    /// A UDP datagram of more payload bytes than this is reported (`udp_send`), at
    /// most once per socket per second.
    pub udp_large_bytes: u32,
    /// Network-sourced records (too-big messages) each CPU may emit per second;
    /// the rest are counted in `loss::slot::ICMP_BOUNDED`.
    pub net_events_per_cpu_s: u32,
    /// Receive-queue drops: at most one `udp_queue_drop` record per socket per this
    /// many milliseconds (the first drop is always emitted).
    pub udpq_interval_ms: u32,
    /// 1 when no error-report hook exists (before 5.14): a TCP socket's `sk_err` is
    /// then read as it moves to CLOSE, where the kernel's error paths (tcp_reset,
    /// tcp_write_err) have already set it.
    pub errors_at_close: u32,
}

impl Config {
    pub const DEFAULT: Config = Config {
        self_tgid: 0,
        sys_exit_attached: 0,
        send_syscalls: [-1; 8],
        icsk_time_loss_probe: 5,
        wakeup_bytes: 0,
        udp_large_bytes: 1400,
        net_events_per_cpu_s: 5000,
        udpq_interval_ms: 100,
        errors_at_close: 0,
    };
}

/// Positions in `Config::send_syscalls`; the position says where the byte count is.
pub mod send_slot {
    /// `sendto(fd, buf, len, ...)`: length in the third argument.
    pub const SENDTO: usize = 0;
    /// `write(fd, buf, count)`: length in the third argument.
    pub const WRITE: usize = 1;
    /// `sendmsg(fd, msg, flags)`: length is the sum of the user iovec.
    pub const SENDMSG: usize = 2;
    pub const WRITEV: usize = 3;
    pub const SENDMMSG: usize = 4;
    /// `connect(fd, addr, len)`: not a send, but where ephemeral ports run out.
    pub const CONNECT: usize = 5;
    /// `bind(fd, addr, len)`
    pub const BIND: usize = 6;
}

const _: () = assert!(core::mem::size_of::<FlowTp>() == 24);
const _: () = assert!(core::mem::size_of::<KernelStructs>() == 122);
const _: () = assert!(core::mem::size_of::<UdpqTp>() == 16);
const _: () = assert!(core::mem::size_of::<Layout>() == 24 * 4 + 4 + 8 + 122 + 16);
const _: () = assert!(core::mem::size_of::<Config>() == 64);

#[cfg(feature = "user")]
mod pod {
    // SAFETY: repr(C) structs of integers only, no padding (sizes asserted above).
    unsafe impl aya::Pod for super::Layout {}
    unsafe impl aya::Pod for super::RetransmitTp {}
    unsafe impl aya::Pod for super::FlowTp {}
    unsafe impl aya::Pod for super::SendTp {}
    unsafe impl aya::Pod for super::SkbTp {}
    unsafe impl aya::Pod for super::KernelStructs {}
    unsafe impl aya::Pod for super::UdpqTp {}
    unsafe impl aya::Pod for super::Config {}
}
