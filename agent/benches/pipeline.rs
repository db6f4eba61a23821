//! The userspace pipeline (decode + correlate + JSON) on generated events, with
//! divan: `cargo bench -p sendsight --bench pipeline`. Target: >= 1M events/s on one
//! core. Each iteration pushes 10,000 records through a fresh pipeline.

use agent_common::event::{Flow, Header, Kind, Owner, Retransmit, SendError, send_source};
use sendsight::{
    clock::WallClock, decode::encode, engine::Limits, output::json::Units, pipeline::Pipeline,
};

fn main() {
    divan::main();
}

const EVENTS: usize = 10_000;

fn records() -> Vec<Vec<u8>> {
    (0..EVENTS as u64)
        .map(|i| {
            let sock = i % 500;
            let mut flow = Flow {
                sport: 1024 + sock as u16,
                dport: 443,
                family: 2,
                protocol: 6,
                state: 1,
                ..Flow::default()
            };
            flow.saddr[..4].copy_from_slice(&[198, 18, 0, 2]);
            flow.daddr[..4].copy_from_slice(&[198, 19, 0, (sock % 250) as u8]);
            let header = Header {
                kind: Kind::Retransmit as u16,
                len: size_of::<Retransmit>() as u16,
                cpu: 0,
                ts_ns: 1_000_000 + i * 1000,
                sk: 0xffff_0000_0000_0000 + sock * 4096,
            };
            let owner = Owner {
                pid: 4242,
                tid: 4242,
                cgroup: 1,
                comm: *b"bench\0\0\0\0\0\0\0\0\0\0\0",
            };
            if i % 10 == 9 {
                encode(&SendError {
                    header: Header {
                        kind: Kind::SendError as u16,
                        len: size_of::<SendError>() as u16,
                        ..header
                    },
                    flow,
                    owner,
                    errno: 32,
                    bytes: 100,
                    syscall: 44,
                    source: send_source::SOCKET | send_source::SYSCALL,
                    ..SendError::default()
                })
            } else {
                encode(&Retransmit {
                    header,
                    flow,
                    owner,
                    segs: 1,
                    len: 1448,
                    seg_len: 1448,
                    seq: i as u32 * 1448,
                    mss: 1448,
                    pmtu: 1500,
                    rto_jiffies: 50,
                    snd_queue: 65536,
                    kind: (i % 3) as u8,
                    snd_una: i as u32 * 1448,
                    delivered: 100,
                    bytes_acked: 144_800,
                    ..Retransmit::default()
                })
            }
        })
        .collect()
}

#[divan::bench(sample_count = 20)]
fn decode_correlate_json(bencher: divan::Bencher) {
    let recs = records();
    bencher
        .counter(divan::counter::ItemsCount::new(EVENTS))
        .bench_local(|| {
            let mut pipe = Pipeline::new(
                WallClock::with_offset(1_700_000_000_000_000_000),
                Units { hz: Some(250) },
                Limits::default(),
                Default::default(),
            );
            let mut out = Vec::with_capacity(1 << 20);
            let mut bytes = 0usize;
            for r in &recs {
                pipe.record(r, &mut out);
                bytes += out.len();
                out.clear();
            }
            bytes
        });
}
