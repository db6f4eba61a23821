//! Arbitrary bytes as one ring-buffer record: the decoder must reject what it cannot
//! read (never panic), and whatever it accepts must go through a fresh engine and
//! the JSON renderer as well-formed lines.
#![no_main]

use libfuzzer_sys::fuzz_target;
use sendsight::{
    clock::WallClock,
    decode,
    engine::{Engine, Limits},
    output::json::{self, Units},
};

fuzz_target!(|data: &[u8]| {
    let Ok(event) = decode::decode(data) else {
        return;
    };
    let mut engine = Engine::new(Limits::default());
    // A realistic realtime-minus-monotonic offset (2026), as a live run would have.
    let clock = WallClock::with_offset(1_795_000_000_000_000_000);
    for emit in engine.on_event(event) {
        for units in [Units { hz: Some(250) }, Units { hz: None }] {
            check_line(&json::emit(&clock, units, &emit));
        }
    }
});

fn check_line(line: &[u8]) {
    assert_eq!(line.last(), Some(&b'\n'), "a line ends with a newline");
    assert!(
        !line[..line.len() - 1].contains(&b'\n'),
        "one line is one line: {}",
        String::from_utf8_lossy(line)
    );
    let v: serde_json::Value = serde_json::from_slice(line)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(line)));
    assert_ne!(v["type"], "internal_error", "{v}");
    assert_eq!(v["schema"], "sendsight/1", "{v}");
}
