//! The userspace pipeline (decode + correlate + JSON) on generated events, with
//! divan: `cargo bench -p sendsight --bench pipeline`. Target: >= 1M events/s on one
//! core. Each iteration pushes 10,000 records through a fresh pipeline.

use sendsight::{
    clock::WallClock, decode::encode, engine::Limits, output::json::Units, pipeline::Pipeline,
    synthetic,
};

fn main() {
    divan::main();
}

const EVENTS: usize = 10_000;

/// 500 sockets in turn; every tenth record a send error, the rest retransmits.
fn records() -> Vec<Vec<u8>> {
    (0..EVENTS as u64)
        .map(|i| {
            let (sock, ts) = (i % 500, 1_000_000 + i * 1000);
            if i % 10 == 9 {
                encode(&synthetic::send_error(sock, ts))
            } else {
                encode(&synthetic::retransmit(sock, i, ts))
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
