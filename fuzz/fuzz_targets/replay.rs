//! Arbitrary bytes as a recording (`run --record` / `sendsight replay`): the reader
//! must reject a bad magic, header or frame with an error (never panic), and the
//! replay of whatever it reads must print only well-formed JSON lines.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sendsight::{engine::Limits, record::Reader, replay::replay_from};

fuzz_target!(|data: &[u8]| {
    let Ok(mut reader) = Reader::new(data, "fuzz.ssrec".into()) else {
        return;
    };
    // Small tables, so eviction and path-group limits are reached too.
    let limits = Limits {
        max_sockets: 8,
        idle_ns: 5_000_000_000,
        max_paths: 4,
    };
    let mut out = Vec::new();
    if replay_from(&mut reader, limits, &mut out).is_err() {
        return;
    }
    for line in out.split_inclusive(|&b| b == b'\n') {
        assert_eq!(line.last(), Some(&b'\n'), "every line ends with a newline");
        let v: serde_json::Value = serde_json::from_slice(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(line)));
        assert_ne!(v["type"], "internal_error", "{v}");
    }
});
