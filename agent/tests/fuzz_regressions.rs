//! Inputs the fuzzers in `fuzz/` (cargo-fuzz: `decode`, `replay`) found to crash the
//! agent, minimized, kept as regression tests. An `#[ignore]`d test is a crash that
//! is not fixed yet: fix it, then drop the `#[ignore]` so it stays fixed.

use agent_common::event::{CongState, Flow, Header, Kind};
use sendsight::{decode, engine::Limits, record::Reader, replay::replay_from};

/// A recording: magic, JSON header, then u32-length frames (see `record.rs`).
fn recording(header_json: &str, records: &[Vec<u8>]) -> Vec<u8> {
    let mut out = sendsight::record::MAGIC.to_vec();
    out.extend_from_slice(&(header_json.len() as u32).to_le_bytes());
    out.extend_from_slice(header_json.as_bytes());
    for r in records {
        out.extend_from_slice(&(r.len() as u32).to_le_bytes());
        out.extend_from_slice(r);
    }
    out
}

/// The smallest record that decodes: a congestion-state change at `ts_ns`.
fn cong_state(ts_ns: u64) -> Vec<u8> {
    decode::encode(&CongState {
        header: Header {
            kind: Kind::CongState as u16,
            len: size_of::<CongState>() as u16,
            cpu: 0,
            ts_ns,
            sk: 1,
        },
        flow: Flow::default(),
        state: 0,
        _reserved: [0; 7],
    })
}

/// Replays `bytes`; a corrupt recording may be an error, never a panic.
fn replay(bytes: &[u8]) -> Result<String, String> {
    let mut reader = Reader::new(bytes, "regression.ssrec".into()).map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    replay_from(&mut reader, Limits::default(), &mut out).map_err(|e| e.to_string())?;
    Ok(String::from_utf8(out).expect("lines are UTF-8"))
}

/// Found by `cargo fuzz run replay` (minimized by hand): a recording whose header
/// claims a realtime-minus-monotonic offset near i128::MAX. `WallClock::unix_ns`
/// (`mono_ns as i128 + offset_ns`, agent/src/clock.rs) overflows on the first
/// event: "attempt to add with overflow" in debug builds (`sendsight replay` of a
/// debug build exits 101); release builds wrap and print a wrong `ts_ns`.
/// The offset of a real recording is about 1.8e18 (2026); anything beyond a few
/// centuries is corruption that the reader could reject, or the clock could saturate.
#[test]
fn huge_clock_offset_in_a_recording_header_does_not_panic() {
    let header = format!(
        r#"{{"agent_version":"","kernel":"","clock_offset_ns":{},"hz":null}}"#,
        i128::MAX
    );
    let bytes = recording(&header, &[cong_state(1)]);
    // Whatever the fix (reject the header, or saturate), no panic, and no line with
    // a wrapped-around timestamp.
    match replay(&bytes) {
        Err(e) => assert!(e.contains("header"), "{e}"),
        Ok(lines) => {
            for l in lines.lines() {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                assert!(v["ts_ns"].as_i64().is_none_or(|ns| ns >= 0), "{l}");
            }
        }
    }
}

/// The same header with a sane offset replays fine: the test above is about the
/// offset, not about the record.
#[test]
fn sane_clock_offset_replays() {
    let header =
        r#"{"agent_version":"","kernel":"","clock_offset_ns":1795424206733974977,"hz":null}"#;
    let lines = replay(&recording(header, &[cong_state(1)])).unwrap();
    let first: serde_json::Value = serde_json::from_str(lines.lines().next().unwrap()).unwrap();
    assert_eq!(first["type"], "cong_state");
    assert_eq!(first["ts_ns"], 1795424206733974978i64);
}
