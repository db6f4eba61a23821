//! Socket context: state changes, error reports, congestion-state changes. Each as a
//! raw tracepoint where BTF confirms the prototype (arguments by position, the flow
//! read from the socket), the classic record otherwise: a classic program is skipped
//! while another classic program runs on the CPU (`bpf_prog_active`), and these fire
//! in softirqs that interrupt the send path.

use agent_common::{
    event::{CongState, IPPROTO_TCP, SocketError, SocketState},
    kernel::tcp_state::{CLOSE as TCP_CLOSE, SYN_SENT as TCP_SYN_SENT},
};
use aya_ebpf::{
    EbpfContext as _,
    macros::{raw_tracepoint, tracepoint},
    programs::{RawTracePointContext, TracePointContext},
};

use crate::{
    emit::{Ctx, emit},
    read::{self, Fail},
    sock,
};

#[tracepoint(category = "sock", name = "inet_sock_set_state")]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    match try_set_state(&ctx) {
        Ok(r) | Err(r) => r,
    }
}

fn try_set_state(ctx: &TracePointContext) -> Result<u32, Fail> {
    let tp = lay!(set_state_tp);
    let protocol = read::tp::<u16>(ctx, tp.protocol)? as u8;
    if protocol != IPPROTO_TCP {
        return Ok(0);
    }
    let sk = read::tp::<u64>(ctx, tp.skaddr)?;
    let old = read::tp::<i32>(ctx, tp.extra1)? as u8;
    let new = read::tp::<i32>(ctx, tp.extra2)? as u8;
    state_changed(ctx.as_ptr(), sk, old, new, || {
        sock::flow_from_tp(ctx, &tp, IPPROTO_TCP)
    })
}

/// `TP_PROTO(const struct sock *sk, const int oldstate, const int newstate)`.
#[raw_tracepoint(tracepoint = "inet_sock_set_state")]
pub fn set_state_raw(ctx: RawTracePointContext) -> i32 {
    let sk: u64 = ctx.arg(0);
    let old: u64 = ctx.arg(1);
    let new: u64 = ctx.arg(2);
    if read::kernel_or::<u16>(sk, lay!(kernel.sk_protocol), 0) as u8 != IPPROTO_TCP {
        return 0;
    }
    match state_changed(ctx.as_ptr(), sk, old as u8, new as u8, || sock::flow_of(sk)) {
        Ok(r) | Err(r) => r as i32,
    }
}

#[inline(always)]
fn state_changed(
    ctx: Ctx,
    sk: u64,
    old: u8,
    new: u8,
    flow: impl FnOnce() -> Result<agent_common::event::Flow, Fail>,
) -> Result<u32, Fail> {
    // connect() moves CLOSE -> SYN_SENT in the caller's context: the earliest
    // moment the owner is known, before the first send.
    if new == TCP_SYN_SENT {
        sock::claim(sk);
    }
    emit::<SocketState>(
        ctx,
        sk,
        0,
        #[inline(always)]
        |ev| {
            ev.flow = flow()?;
            ev.flow.protocol = IPPROTO_TCP;
            ev.flow.state = new;
            ev.old_state = old;
            ev.new_state = new;
            ev.owner = sock::owner_of(sk);
            ev.netns = sock::netns_of(sk);
            // Without an error-report hook, the error a socket dies of: the paths
            // that kill it (reset, retransmission timeout, refused connect) set it
            // before the move to CLOSE.
            if new == TCP_CLOSE && cfg!(errors_at_close) != 0 {
                ev.sk_err = read::kernel_or::<i32>(sk, lay!(kernel.sk_err), 0) as u8;
            }
            Ok(())
        },
    );
    // A closed socket's owner must not outlive it: the next socket at this
    // address would be attributed to this one's process.
    if new == TCP_CLOSE {
        sock::forget(sk);
    }
    Ok(0)
}

#[tracepoint(category = "sock", name = "inet_sk_error_report")]
pub fn inet_sk_error_report(ctx: TracePointContext) -> u32 {
    match try_error_report(&ctx) {
        Ok(r) | Err(r) => r,
    }
}

fn try_error_report(ctx: &TracePointContext) -> Result<u32, Fail> {
    let tp = lay!(error_report_tp);
    emit::<SocketError>(
        ctx.as_ptr(),
        0,
        0,
        #[inline(always)]
        |ev| {
            ev.flow = sock::flow_from_tp(ctx, &tp, 0)?;
            ev.errno = read::tp::<i32>(ctx, tp.extra1)?;
            Ok(())
        },
    );
    Ok(0)
}

/// `TP_PROTO(const struct sock *sk)`: the error is the socket's `sk_err`, as the
/// classic record has it.
#[raw_tracepoint(tracepoint = "inet_sk_error_report")]
pub fn error_report_raw(ctx: RawTracePointContext) -> i32 {
    let sk: u64 = ctx.arg(0);
    emit::<SocketError>(
        ctx.as_ptr(),
        sk,
        0,
        #[inline(always)]
        |ev| {
            ev.flow = sock::flow_of(sk)?;
            ev.errno = read::kernel::<i32>(sk, lay!(kernel.sk_err))?;
            Ok(())
        },
    );
    0
}

/// `TP_PROTO(struct sock *sk, const u8 ca_state)`.
#[raw_tracepoint(tracepoint = "tcp_cong_state_set")]
pub fn cong_state_raw(ctx: RawTracePointContext) -> i32 {
    let sk: u64 = ctx.arg(0);
    let state: u64 = ctx.arg(1);
    emit::<CongState>(
        ctx.as_ptr(),
        sk,
        0,
        #[inline(always)]
        |ev| {
            ev.flow = sock::flow_of(sk)?;
            ev.flow.protocol = IPPROTO_TCP;
            ev.state = state as u8;
            Ok(())
        },
    );
    0
}

#[tracepoint(category = "tcp", name = "tcp_cong_state_set")]
pub fn tcp_cong_state_set(ctx: TracePointContext) -> u32 {
    match try_cong_state(&ctx) {
        Ok(r) | Err(r) => r,
    }
}

fn try_cong_state(ctx: &TracePointContext) -> Result<u32, Fail> {
    let tp = lay!(cong_state_tp);
    emit::<CongState>(
        ctx.as_ptr(),
        0,
        0,
        #[inline(always)]
        |ev| {
            ev.header.sk = read::tp::<u64>(ctx, tp.skaddr)?;
            ev.flow = sock::flow_from_tp(ctx, &tp, IPPROTO_TCP)?;
            ev.state = read::tp::<u8>(ctx, tp.extra1)?;
            Ok(())
        },
    );
    Ok(0)
}
