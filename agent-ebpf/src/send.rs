//! The send path. Two sources, one event per failure:
//!
//! - `sock:sock_send_length` (6.3+) sees every send in the socket layer: successes
//!   keep the socket's owner current in `SOCKS` (through this CPU's `LAST_SEND`, no
//!   helper call on a repeated send); a failure is parked in `PENDING` for its thread.
//! - the syscall exits see send-family syscalls fail, including errors returned
//!   before the socket layer (seccomp, bad fd, EFAULT): fexit on the send family's
//!   syscall functions plus seccomp's verdict where the kernel has trampolines (only
//!   those calls pay), else the raw `sys_exit` (every syscall, one compare for
//!   successes), else per syscall (`syscalls:sys_exit_<name>`). A failed send-family
//!   call emits the event, merged with the parked socket-layer facts when there are
//!   some.
//!
//! Without a syscall exit the socket layer emits directly; without `sock_send_length`
//! (kernels before 6.3) the syscall exit resolves the socket from the fd itself.
//! Everything but the success paths is out of line or behind them: on kernels before
//! 6.13 a program's whole call chain shares 512 bytes of stack.

use agent_common::{
    event::{AF_INET, AF_INET6, Owner, PendingSend, SendError, UdpSend, send_flags, send_source},
    layout::{ABSENT, SYS_EXIT_NR, SYS_EXIT_RET, send_slot},
    loss::slot,
};
use aya_ebpf::{
    EbpfContext as _,
    helpers::{
        bpf_get_current_pid_tgid, bpf_get_current_task, bpf_get_current_task_btf, bpf_ktime_get_ns,
        bpf_probe_read_kernel, bpf_probe_read_user, bpf_task_pt_regs,
    },
    macros::{fexit, raw_tracepoint, tracepoint},
    programs::{FExitContext, RawTracePointContext, TracePointContext},
};

use crate::{
    emit::{Ctx, emit},
    maps::{PENDING, SOCKS, count_lost},
    read::{self, Fail},
    sock,
};

use agent_common::kernel::errno::{
    EAGAIN, EALREADY, EINPROGRESS, EINTR, ERESTART_FIRST, ERESTART_LAST,
};
use agent_common::kernel::stat::{S_IFMT, S_IFSOCK};

#[tracepoint(category = "sock", name = "sock_send_length")]
pub fn sock_send_length(ctx: TracePointContext) -> u32 {
    match try_sock_send_length(&ctx) {
        Ok(r) | Err(r) => r,
    }
}

fn try_sock_send_length(ctx: &TracePointContext) -> Result<u32, Fail> {
    let ret = read::tp::<i32>(ctx, lay!(send_tp.ret))?;
    let sk = read::tp::<u64>(ctx, lay!(send_tp.sk))?;
    on_send(ctx.as_ptr(), sk, ret)
}

/// The same hook as a raw tracepoint: `TP_PROTO(struct sock *sk, int ret, int
/// flags)` read by position (checked against BTF by the loader), with no trace
/// record built by the kernel and no helper call to read it: the cheap variant,
/// preferred wherever it attaches.
#[raw_tracepoint(tracepoint = "sock_send_length")]
pub fn sock_send_raw(ctx: RawTracePointContext) -> i32 {
    let sk: u64 = ctx.arg(0);
    let ret: i64 = ctx.arg(1);
    match on_send(ctx.as_ptr(), sk, ret as i32) {
        Ok(r) | Err(r) => r as i32,
    }
}

#[inline(always)]
fn on_send(ctx: Ctx, sk: u64, ret: i32) -> Result<u32, Fail> {
    if ret >= 0 {
        // The hot path (every successful send on the host).
        if sock::sent_on(sk) && ret > cfg!(udp_large_bytes) as i32 {
            large_udp(ctx, sk, ret as u32);
        }
        return Ok(0);
    }
    send_failed(ctx, sk, ret)
}

/// Out of line (a BPF subprogram): the hot path above stays a few instructions in
/// one place instead of jumping across kilobytes of code it never runs.
#[inline(never)]
fn send_failed(ctx: Ctx, sk: u64, ret: i32) -> Result<u32, Fail> {
    let pid_tgid = bpf_get_current_pid_tgid();
    if (pid_tgid >> 32) as u32 == cfg!(self_tgid) {
        return Ok(0);
    }
    sock::claim(sk);
    let errno = -ret;
    // Kernel-internal restart codes: the call is restarted, not failed.
    if errno >= ERESTART_FIRST && errno <= ERESTART_LAST {
        return Ok(0);
    }
    // A full send buffer on a non-blocking socket: routine, not a failure.
    if errno == EAGAIN {
        return Ok(0);
    }
    let tid = pid_tgid as u32;
    if cfg!(sys_exit_attached) == 0 {
        socket_layer_error(ctx, sk, errno, 0);
        return Ok(0);
    }
    // A failure still parked for this thread never met its syscall exit (io_uring,
    // sendfile, kernel-internal sends): emit it now rather than overwrite it.
    if let Some(old) = unsafe { PENDING.get(&tid) } {
        let old = *old;
        socket_layer_error(ctx, old.sk, old.errno, old.ts_ns);
    }
    let pending = PendingSend {
        sk,
        ts_ns: unsafe { bpf_ktime_get_ns() },
        errno,
        _reserved: 0,
    };
    if PENDING.insert(&tid, &pending, 0).is_err() {
        count_lost(slot::PENDING_FULL);
        socket_layer_error(ctx, sk, errno, 0);
    }
    Ok(0)
}

#[raw_tracepoint(tracepoint = "sys_exit")]
pub fn sys_exit(ctx: RawTracePointContext) -> i32 {
    match try_sys_exit(&ctx) {
        Ok(r) | Err(r) => r as i32,
    }
}

fn try_sys_exit(ctx: &RawTracePointContext) -> Result<u32, Fail> {
    // Runs on every syscall exit in the system: successful ones leave here.
    let ret: i64 = ctx.arg(1);
    if ret >= 0 {
        return Ok(0);
    }
    let regs: u64 = ctx.arg(0);
    let nr = read::kernel::<u64>(regs, lay!(kernel.regs_nr))? as i32;
    failed_syscall(ctx.as_ptr(), regs, nr, ret)
}

/// The per-syscall variant, preferred: attached to `syscalls:sys_exit_<name>` for
/// the send family only, so it runs on no other syscall (those still take the
/// kernel's syscall-trace slow path while any syscall tracepoint is enabled, as
/// they do for any tool using one). The record has the number and the return
/// value; the arguments come from the caller's saved registers (`bpf_task_pt_regs`,
/// 5.15+: where that helper is missing the program fails to load and the raw
/// `sys_exit` is attached instead).
#[tracepoint(category = "syscalls", name = "sys_exit_sendto")]
pub fn sys_exit_call(ctx: TracePointContext) -> u32 {
    match try_sys_exit_call(&ctx) {
        Ok(r) | Err(r) => r,
    }
}

fn try_sys_exit_call(ctx: &TracePointContext) -> Result<u32, Fail> {
    // Direct loads at fixed offsets (checked by the loader): a helper call costs
    // more than the rest of this path.
    let ret: i64 = read::ctx_at(ctx, SYS_EXIT_RET);
    if ret >= 0 {
        return Ok(0);
    }
    let nr: i32 = read::ctx_at(ctx, SYS_EXIT_NR);
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as u64;
    failed_syscall(ctx.as_ptr(), regs, nr, ret)
}

/// The fexit variant, preferred where the kernel has BPF trampolines: one program
/// on each send-family syscall function (`__x64_sys_sendto(const struct pt_regs
/// *regs)` and its siblings; the loader picks the names from BTF), so only those
/// calls pay, and trampolines do not hold the per-CPU `bpf_prog_active` that makes
/// classic programs skip each other. Seccomp refuses a call before its function
/// runs: `secure_computing_exit` covers those.
macro_rules! syscall_fexit {
    ($($prog:ident => $slot:expr),+ $(,)?) => {$(
        #[fexit]
        pub fn $prog(ctx: FExitContext) -> i32 {
            let ret: i64 = ctx.arg(1);
            if ret >= 0 {
                return 0;
            }
            let calls: [i32; 8] = cfg!(send_syscalls);
            let regs: u64 = ctx.arg(0);
            match failed_syscall(ctx.as_ptr(), regs, calls[$slot], ret) {
                Ok(r) | Err(r) => r as i32,
            }
        }
    )+};
}

syscall_fexit! {
    fexit_sendto => send_slot::SENDTO,
    fexit_write => send_slot::WRITE,
    fexit_sendmsg => send_slot::SENDMSG,
    fexit_writev => send_slot::WRITEV,
    fexit_sendmmsg => send_slot::SENDMMSG,
    fexit_connect => send_slot::CONNECT,
    fexit_bind => send_slot::BIND,
}

/// `int __secure_computing(const struct seccomp_data *sd)` returns -1 when a filter
/// refused the call (its function never runs; the error the filter chose is already
/// in the caller's `ax`). Runs only for tasks under a seccomp filter (containers).
/// The caller's registers through `bpf_task_pt_regs` (5.15+; where the helper is
/// missing this program fails to load and the raw `sys_exit` serves instead).
#[fexit]
pub fn secure_computing_exit(ctx: FExitContext) -> i32 {
    seccomp_verdict(ctx.as_ptr(), ctx.arg(1))
}

/// The same for `int __secure_computing(void)` (6.14+): the return value comes first.
#[fexit]
pub fn secure_computing_exit_void(ctx: FExitContext) -> i32 {
    seccomp_verdict(ctx.as_ptr(), ctx.arg(0))
}

#[inline(always)]
fn seccomp_verdict(ctx: Ctx, verdict: i32) -> i32 {
    if verdict != -1 {
        return 0;
    }
    match try_refused(ctx) {
        Ok(r) | Err(r) => r as i32,
    }
}

#[inline(never)]
fn try_refused(ctx: Ctx) -> Result<u32, Fail> {
    let regs = unsafe { bpf_task_pt_regs(bpf_get_current_task_btf()) } as u64;
    let ret = read::kernel::<i64>(regs, lay!(kernel.regs_ret))?;
    if ret >= 0 {
        return Ok(0);
    }
    let nr = read::kernel::<u64>(regs, lay!(kernel.regs_nr))? as i32;
    failed_syscall(ctx, regs, nr, ret)
}

/// A send-family syscall `nr` returned `ret` < 0; `regs` are the caller's saved
/// registers (its arguments).
#[inline(always)]
fn failed_syscall(ctx: Ctx, regs: u64, nr: i32, ret: i64) -> Result<u32, Fail> {
    let mut which = usize::MAX;
    let calls: [i32; 8] = cfg!(send_syscalls);
    for (i, n) in calls.iter().enumerate() {
        if *n == nr && nr >= 0 {
            which = i;
        }
    }
    if which == usize::MAX {
        return Ok(0);
    }
    let pid_tgid = bpf_get_current_pid_tgid();
    if (pid_tgid >> 32) as u32 == cfg!(self_tgid) {
        return Ok(0);
    }
    let tid = pid_tgid as u32;
    let errno = (-ret) as i32;
    if errno >= ERESTART_FIRST && errno <= ERESTART_LAST {
        return Ok(0);
    }
    if which == send_slot::CONNECT || which == send_slot::BIND {
        return connect_or_bind(ctx, regs, which, nr, errno);
    }
    let parked = unsafe { PENDING.get(&tid) }.copied();
    if parked.is_some() {
        let _ = PENDING.remove(&tid);
    }
    let (sk, mut source) = match parked {
        Some(p) => (p.sk, send_source::SOCKET | send_source::SYSCALL),
        None => {
            let fd = read::kernel::<u64>(regs, lay!(kernel.regs_arg0))? as i64;
            match sk_of_fd(fd) {
                Ok(sk) => (sk, send_source::SYSCALL),
                // Not a socket (a failing write() to a file): not ours.
                Err(_) => return Ok(0),
            }
        }
    };
    if errno == EAGAIN {
        return Ok(0);
    }
    // A plain value, `BYTES_UNKNOWN` for none: with an `Option` LLVM loads the payload
    // before testing the tag, an uninitialized stack read 5.10's verifier refuses.
    let bytes = match which {
        send_slot::SENDTO | send_slot::WRITE => {
            read::kernel_or::<u64>(regs, lay!(kernel.regs_arg2), BYTES_UNKNOWN)
        }
        send_slot::SENDMSG => match read::kernel::<u64>(regs, lay!(kernel.regs_arg1)) {
            Ok(msg) => msghdr_len(msg).unwrap_or(BYTES_UNKNOWN),
            Err(_) => BYTES_UNKNOWN,
        },
        _ => BYTES_UNKNOWN,
    };
    if sk == 0 {
        source = send_source::SYSCALL;
    }
    send_error(ctx, sk, errno, bytes, nr, source, sock::current_owner(), 0);
    Ok(0)
}

/// A big datagram sent: a `UdpSend` record, once per socket per second. Out of
/// line like `send_failed`: the hot path's own frame stays small, so each slow path
/// fits the 512 bytes kernels before 6.13 allow for a whole call chain.
#[inline(never)]
fn large_udp(ctx: Ctx, sk: u64, bytes: u32) {
    let now_s = (unsafe { bpf_ktime_get_ns() } / 1_000_000_000) as u32;
    // The entry carries the once-per-second mark (LRU may have dropped it).
    sock::claim(sk);
    if let Some(info) = SOCKS.get_ptr_mut(&sk) {
        let info = unsafe { &mut *info };
        if info.udp_reported_s == now_s {
            return;
        }
        info.udp_reported_s = now_s;
    }
    emit::<UdpSend>(
        ctx,
        sk,
        0,
        #[inline(always)]
        |ev| {
            ev.flow = sock::flow_of(sk)?;
            ev.owner = sock::current_owner();
            ev.bytes = bytes;
            ev.netns = sock::netns_of(sk);
            Ok(())
        },
    );
}

/// A failed connect() or bind() on an IP socket: the address it asked for comes
/// from the user's sockaddr (the socket has no peer yet, or no port).
#[inline(always)]
fn connect_or_bind(ctx: Ctx, regs: u64, which: usize, nr: i32, errno: i32) -> Result<u32, Fail> {
    // Not failures: a non-blocking connect in progress, an interrupted call.
    if errno == EINPROGRESS || errno == EALREADY || errno == EINTR || errno == EAGAIN {
        return Ok(0);
    }
    let fd = read::kernel::<u64>(regs, lay!(kernel.regs_arg0))? as i64;
    let Ok(sk) = sk_of_fd(fd) else { return Ok(0) };
    let addr = read::kernel::<u64>(regs, lay!(kernel.regs_arg1))?;
    let family = unsafe { bpf_probe_read_user(addr as *const u16) }.map_err(|_| 1u32)?;
    if family != AF_INET && family != AF_INET6 {
        return Ok(0);
    }
    let port =
        u16::from_be(unsafe { bpf_probe_read_user((addr + 2) as *const u16) }.map_err(|_| 1u32)?);
    let mut ip = [0u8; 16];
    if family == AF_INET {
        let a = unsafe { bpf_probe_read_user((addr + 4) as *const [u8; 4]) }.map_err(|_| 1u32)?;
        ip[..4].copy_from_slice(&a);
    } else {
        ip = unsafe { bpf_probe_read_user((addr + 8) as *const [u8; 16]) }.map_err(|_| 1u32)?;
    }
    emit::<SendError>(
        ctx,
        sk,
        0,
        #[inline(always)]
        |ev| {
            if let Ok(flow) = sock::flow_of(sk) {
                ev.flow = flow;
            }
            ev.flow.family = family;
            if which == send_slot::CONNECT {
                ev.flow.daddr = ip;
                ev.flow.dport = port;
            } else {
                ev.flow.saddr = ip;
                ev.flow.sport = port;
            }
            ev.owner = sock::current_owner();
            ev.errno = errno;
            ev.syscall = nr;
            ev.source = send_source::SYSCALL;
            ev.netns = sock::netns_of(sk);
            Ok(())
        },
    );
    Ok(0)
}

/// Total length of a user `struct msghdr`'s iovec (first 8 entries).
#[inline(always)]
fn msghdr_len(msg: u64) -> Result<u64, Fail> {
    // struct msghdr { void *name; int namelen; struct iovec *iov; size_t iovlen; ... }:
    // userspace ABI, fixed on 64-bit Linux.
    let iov = unsafe { bpf_probe_read_user((msg + 16) as *const u64) }.map_err(|_| 1u32)?;
    let n = unsafe { bpf_probe_read_user((msg + 24) as *const u64) }.map_err(|_| 1u32)?;
    let mut total = 0u64;
    for i in 0..8u64 {
        if i >= n {
            break;
        }
        let len =
            unsafe { bpf_probe_read_user((iov + i * 16 + 8) as *const u64) }.map_err(|_| 1u32)?;
        total += len;
    }
    Ok(total)
}

/// The `struct sock` behind a file descriptor of the current task, if it is a socket.
#[inline(always)]
fn sk_of_fd(fd: i64) -> Result<u64, Fail> {
    if fd < 0 || lay!(kernel.fdt_fd) == ABSENT {
        return Err(1);
    }
    let task = unsafe { bpf_get_current_task() };
    let files = read::kernel::<u64>(task, lay!(kernel.task_files))?;
    let fdt = read::kernel::<u64>(files, lay!(kernel.files_fdt))?;
    let max = read::kernel::<u32>(fdt, lay!(kernel.fdt_max_fds))? as i64;
    if fd >= max {
        return Err(1);
    }
    let fds = read::kernel::<u64>(fdt, lay!(kernel.fdt_fd))?;
    let file = unsafe { bpf_probe_read_kernel((fds + (fd as u64) * 8) as *const u64) }
        .map_err(|_| 1u32)?;
    let inode = read::kernel::<u64>(file, lay!(kernel.file_inode))?;
    let mode = read::kernel::<u16>(inode, lay!(kernel.inode_mode))?;
    if mode & S_IFMT != S_IFSOCK {
        return Err(1);
    }
    let socket = read::kernel::<u64>(file, lay!(kernel.file_private_data))?;
    read::kernel::<u64>(socket, lay!(kernel.socket_sk))
}

/// `send_error`'s byte count when the call's arguments did not give one.
const BYTES_UNKNOWN: u64 = u64::MAX;

/// A failure seen only in the socket layer (no syscall exit to add its details).
#[inline(always)]
fn socket_layer_error(ctx: Ctx, sk: u64, errno: i32, ts_ns: u64) {
    send_error(
        ctx,
        sk,
        errno,
        BYTES_UNKNOWN,
        -1,
        send_source::SOCKET,
        sock::current_owner(),
        ts_ns,
    );
}

/// One send failure: the socket's flow (when it resolves), and what the caller knows.
#[inline(always)]
#[allow(
    clippy::too_many_arguments,
    reason = "inlined: the arguments are the caller's values, no call frame"
)]
fn send_error(
    ctx: Ctx,
    sk: u64,
    errno: i32,
    bytes: u64,
    syscall: i32,
    source: u32,
    owner: Owner,
    ts_ns: u64,
) {
    emit::<SendError>(
        ctx,
        sk,
        ts_ns,
        #[inline(always)]
        |ev| {
            match sock::flow_of(sk) {
                Ok(flow) => ev.flow = flow,
                Err(_) => ev.flags |= send_flags::NO_SOCK,
            }
            ev.owner = owner;
            ev.errno = errno;
            if bytes != BYTES_UNKNOWN {
                ev.bytes = bytes.min(u32::MAX as u64) as u32;
                ev.flags |= send_flags::BYTES_KNOWN;
            }
            ev.syscall = syscall;
            ev.source = source;
            ev.netns = sock::netns_of(sk);
            Ok(())
        },
    );
}
