//! Generated kernel records: the load of the benchmarks (`benches/pipeline.rs` and
//! the `sendsight-bench` binary). Socket `i` is a TCP connection from
//! 198.18.x.y:1024+ to 198.19.0.z:443, owned by one of 50 processes; its records
//! are what the probes would put in the ring buffer (`decode::encode` them).

use agent_common::event::{Flow, Header, Kind, Owner, Retransmit, SendError, send_source};

/// The flow of socket `i` (established, IPv4).
pub fn flow(i: u64) -> Flow {
    let mut flow = Flow {
        sport: (i % 60000) as u16 + 1024,
        dport: 443,
        family: 2,
        protocol: 6,
        state: 1,
        ..Flow::default()
    };
    flow.saddr[..4].copy_from_slice(&[198, 18, (i >> 16) as u8, (i >> 8) as u8]);
    flow.daddr[..4].copy_from_slice(&[198, 19, 0, (i % 250) as u8]);
    flow
}

/// The process that owns socket `i`.
pub fn owner(i: u64) -> Owner {
    Owner {
        pid: 1000 + (i % 50) as u32,
        tid: 1000 + (i % 50) as u32,
        cgroup: 1,
        comm: *b"bench\0\0\0\0\0\0\0\0\0\0\0",
    }
}

/// The `k`th retransmit (one full segment; kinds in turn) on socket `i` at `ts_ns`.
pub fn retransmit(i: u64, k: u64, ts_ns: u64) -> Retransmit {
    Retransmit {
        header: Header {
            kind: Kind::Retransmit as u16,
            len: size_of::<Retransmit>() as u16,
            cpu: 0,
            ts_ns,
            sk: 0xffff_0000_0000_0000 + i * 4096,
        },
        flow: flow(i),
        owner: owner(i),
        segs: 1,
        len: 1448,
        seg_len: 1448,
        seq: k as u32 * 1448,
        mss: 1448,
        pmtu: 1500,
        rto_jiffies: 50,
        snd_queue: 65536,
        srtt_us: 100,
        cwnd: 10,
        kind: (k % 3) as u8,
        snd_una: k as u32 * 1448,
        delivered: 100,
        bytes_acked: 144_800,
        ..Retransmit::default()
    }
}

/// A failed send (EPIPE, 100 bytes, sendto) on socket `i` at `ts_ns`.
pub fn send_error(i: u64, ts_ns: u64) -> SendError {
    let rt = retransmit(i, 0, ts_ns);
    SendError {
        header: Header {
            kind: Kind::SendError as u16,
            len: size_of::<SendError>() as u16,
            ..rt.header
        },
        flow: rt.flow,
        owner: rt.owner,
        errno: 32,
        bytes: 100,
        syscall: 44,
        source: send_source::SOCKET | send_source::SYSCALL,
        ..SendError::default()
    }
}
