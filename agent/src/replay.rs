//! `sendsight replay FILE`: the recorded raw events through the same decoder and
//! engine, deterministically (time comes from the events). No privileges needed.

use std::{io::Write, path::Path};

use crate::{
    clock::WallClock,
    engine::Limits,
    output::json::Units,
    pipeline::Pipeline,
    record::{Reader, RecordError},
};

/// Replays `path`, writing lines to `out`. Returns the number of records.
pub fn replay(path: &Path, limits: Limits, out: &mut impl Write) -> anyhow::Result<u64> {
    let mut reader = Reader::open(path)?;
    replay_from(&mut reader, limits, out)
}

pub fn replay_from<R: std::io::Read>(
    reader: &mut Reader<R>,
    limits: Limits,
    out: &mut impl Write,
) -> anyhow::Result<u64> {
    if let Some(h) = &reader.header.host {
        crate::system::host::set(h.clone());
    }
    let clock = WallClock::with_offset(reader.header.clock_offset_ns);
    let mut pipe = Pipeline::new(
        clock,
        Units {
            hz: reader.header.hz,
        },
        limits,
        Default::default(),
    );
    let mut n = 0u64;
    let (mut first, mut last) = (None, 0u64);
    // Lines are handed to `out` in blocks: one copy into its buffer per block, not
    // per line.
    const BLOCK: usize = 1 << 16;
    let mut lines = Vec::with_capacity(BLOCK + 4096);
    loop {
        let rec = match reader.next_record() {
            Ok(Some(r)) => r,
            Ok(None) => break,
            Err(e @ (RecordError::Truncated { .. } | RecordError::Frame { .. })) => {
                eprintln!("sendsight: warning: {e}; replayed what came before");
                break;
            }
            Err(e) => {
                let _ = out.write_all(&lines);
                return Err(e.into());
            }
        };
        n += 1;
        let ts = pipe.record(rec, &mut lines);
        if let Some(ts) = ts {
            first.get_or_insert(ts);
            last = last.max(ts);
            // Time passes with the events: idle sockets are forgotten as live.
            pipe.engine.tick(ts);
        }
        if lines.len() >= BLOCK {
            match out.write_all(&lines) {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => return Ok(n),
                r => r?,
            }
            lines.clear();
        }
    }
    let first = first.unwrap_or(0);
    lines.extend(pipe.summary_line((last.saturating_sub(first)) as f64 / 1e9, last));
    match out.write_all(&lines).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => return Err(e.into()),
        _ => {}
    }
    eprintln!("{}", pipe.stderr_summary());
    Ok(n)
}
