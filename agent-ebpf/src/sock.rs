//! Socket facts shared by the programs: the flow of a `struct sock`, its network
//! namespace, and its owner (recorded from process context, looked up from softirq).

use agent_common::{
    event::{AF_INET6, Flow, IPPROTO_UDP, Owner, SockInfo},
    layout::{ABSENT, FlowTp},
};
use aya_ebpf::{
    helpers::{bpf_get_current_cgroup_id, bpf_get_current_comm, bpf_get_current_pid_tgid},
    programs::TracePointContext,
};

use crate::{
    maps::{LAST_SEND, LastSend, SOCKS},
    read::{self, Fail},
};

/// The flow of a socket, read from `struct sock_common`.
#[inline(always)]
pub fn flow_of(sk: u64) -> Result<Flow, Fail> {
    let family = read::kernel::<u16>(sk, lay!(kernel.sk_family))?;
    let mut flow = Flow {
        family,
        sport: match read::kernel::<u16>(sk, lay!(kernel.inet_sport)) {
            Ok(be) if be != 0 => u16::from_be(be),
            _ => read::kernel::<u16>(sk, lay!(kernel.sk_num))?,
        },
        dport: u16::from_be(read::kernel::<u16>(sk, lay!(kernel.sk_dport))?),
        protocol: read::kernel_or::<u16>(sk, lay!(kernel.sk_protocol), 0) as u8,
        state: read::kernel_or::<u8>(sk, lay!(kernel.sk_state), 0),
        ..Flow::default()
    };
    if family == AF_INET6 {
        flow.saddr = read::kernel::<[u8; 16]>(sk, lay!(kernel.sk_v6_rcv_saddr))?;
        flow.daddr = read::kernel::<[u8; 16]>(sk, lay!(kernel.sk_v6_daddr))?;
    } else {
        flow.saddr[..4].copy_from_slice(&read::kernel::<[u8; 4]>(sk, lay!(kernel.sk_rcv_saddr))?);
        flow.daddr[..4].copy_from_slice(&read::kernel::<[u8; 4]>(sk, lay!(kernel.sk_daddr))?);
    }
    Ok(flow)
}

/// Network namespace inode of a socket (0 when not resolvable).
#[inline(always)]
pub fn netns_of(sk: u64) -> u32 {
    let net = read::kernel_or::<u64>(sk, lay!(kernel.sk_net), 0);
    read::kernel_or::<u32>(net, lay!(kernel.net_inum), 0)
}

/// The calling thread, for events raised in process context.
#[inline(always)]
pub fn current_owner() -> Owner {
    let pid_tgid = bpf_get_current_pid_tgid();
    Owner {
        pid: (pid_tgid >> 32) as u32,
        tid: pid_tgid as u32,
        cgroup: unsafe { bpf_get_current_cgroup_id() },
        comm: bpf_get_current_comm().unwrap_or_default(),
    }
}

/// The recorded owner of a socket (zeroed when never seen in process context).
#[inline(always)]
pub fn owner_of(sk: u64) -> Owner {
    match unsafe { SOCKS.get(&sk) } {
        Some(info) => info.owner,
        None => Owner::default(),
    }
}

/// Records the caller as the socket's owner, if it is not already.
#[inline(always)]
pub fn claim(sk: u64) {
    let pid_tgid = bpf_get_current_pid_tgid();
    if let Some(info) = SOCKS.get_ptr_mut(&sk) {
        let info = unsafe { &mut *info };
        if info.owner.pid == (pid_tgid >> 32) as u32 && info.owner.tid == pid_tgid as u32 {
            return;
        }
        info.owner = current_owner();
        return;
    }
    let info = SockInfo {
        owner: current_owner(),
        netns: netns_of(sk),
        ..SockInfo::default()
    };
    let _ = SOCKS.insert(&sk, &info, 0);
}

/// Sends answered from `LAST_SEND` before the owner is claimed again: a socket
/// handed to another thread or process is attributed to it within this many sends
/// on a CPU, and a socket that took a closed one's address on another CPU's entry is
/// claimed within as many, at 1/64 of a claim's cost per send.
const RECLAIM_EVERY: u32 = 64;

/// A successful send on `sk`: keeps the socket's owner current (for the events it
/// raises later in softirq) and says whether it is UDP. The hot path of every send
/// on the host, where a helper call costs more than everything else: a repeated send
/// on this CPU's last socket is answered from `LAST_SEND` with none.
#[inline(always)]
pub fn sent_on(sk: u64) -> bool {
    let Some(last) = LAST_SEND.get_ptr_mut(0) else {
        return claim_sender(sk);
    };
    let last = unsafe { &mut *last };
    if last.sk == sk && last.hits < RECLAIM_EVERY {
        last.hits += 1;
        return last.udp != 0;
    }
    let udp = claim_sender(sk);
    *last = LastSend {
        sk,
        hits: 0,
        udp: udp as u32,
    };
    udp
}

/// The slow part of `sent_on`, out of line: claims `sk`, says whether it is UDP.
#[inline(never)]
fn claim_sender(sk: u64) -> bool {
    claim(sk);
    is_udp(sk)
}

/// A TCP socket closed: its owner is forgotten, and so is this CPU's `LAST_SEND`
/// if it is this socket (usually the CPU its last sender closes it on; a global
/// generation the hot path would check cost it a cold cache line per send).
#[inline(always)]
pub fn forget(sk: u64) {
    let _ = SOCKS.remove(&sk);
    if let Some(last) = LAST_SEND.get_ptr_mut(0)
        && unsafe { (*last).sk } == sk
    {
        unsafe { (*last).sk = 0 };
    }
}

#[inline(always)]
fn is_udp(sk: u64) -> bool {
    read::kernel_or::<u16>(sk, lay!(kernel.sk_protocol), 0) as u8 == IPPROTO_UDP
}

/// The flow fields of a `sock:`/`tcp:` tracepoint record.
#[inline(always)]
pub fn flow_from_tp(ctx: &TracePointContext, tp: &FlowTp, protocol: u8) -> Result<Flow, Fail> {
    let family = read::tp::<u16>(ctx, tp.family)?;
    let mut flow = Flow {
        family,
        sport: read::tp::<u16>(ctx, tp.sport)?,
        dport: read::tp::<u16>(ctx, tp.dport)?,
        protocol: if tp.protocol == ABSENT {
            protocol
        } else {
            read::tp::<u16>(ctx, tp.protocol)? as u8
        },
        ..Flow::default()
    };
    if family == AF_INET6 {
        flow.saddr = read::tp::<[u8; 16]>(ctx, tp.saddr_v6)?;
        flow.daddr = read::tp::<[u8; 16]>(ctx, tp.daddr_v6)?;
    } else {
        flow.saddr[..4].copy_from_slice(&read::tp::<[u8; 4]>(ctx, tp.saddr)?);
        flow.daddr[..4].copy_from_slice(&read::tp::<[u8; 4]>(ctx, tp.daddr)?);
    }
    Ok(flow)
}
