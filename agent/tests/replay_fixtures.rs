//! Recordings of the real scenario suite (tests/tests/verdicts.rs, saved with
//! SENDSIGHT_FIXTURES_DIR) replayed without privileges: each must reach exactly the
//! verdicts it reached live, twice in a row identically.

mod common;

use std::collections::BTreeSet;

use sendsight::{engine::Limits, record::Reader, replay::replay_from};
use serde_json::Value;

fn replay(bytes: &[u8]) -> Vec<u8> {
    let mut reader = Reader::new(bytes, "fixture".into()).expect("valid recording");
    let mut out = Vec::new();
    replay_from(&mut reader, Limits::default(), &mut out).expect("replays");
    out
}

#[test]
fn every_scenario_replays_to_its_verdicts() {
    for path in common::fixtures() {
        let bytes = std::fs::read(&path).unwrap();
        let expect: Value = serde_json::from_slice(
            &std::fs::read(path.with_extension("expect.json")).expect("expect file"),
        )
        .unwrap();
        let out = replay(&bytes);
        assert_eq!(
            out,
            replay(&bytes),
            "{}: replay is not deterministic",
            path.display()
        );
        let lines: Vec<Value> = String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let got: BTreeSet<String> = lines
            .iter()
            .filter(|l| l["type"] == "verdict" && l["peer"]["ip"] == expect["peer"])
            .map(|l| l["verdict"].as_str().unwrap().to_string())
            .collect();
        let want: BTreeSet<String> = expect["verdicts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|v| v.as_str().unwrap().to_string())
            .collect();
        assert_eq!(got, want, "{}", path.display());
        assert_eq!(lines.last().unwrap()["type"], "summary");
    }
}

#[test]
fn truncated_recording_replays_what_came_before() {
    let path = &common::fixtures()[0];
    let bytes = std::fs::read(path).unwrap();
    for cut in [bytes.len() - 1, bytes.len() / 2, 200] {
        let out = replay(&bytes[..cut]);
        let text = String::from_utf8(out).unwrap();
        assert!(
            text.lines()
                .last()
                .unwrap()
                .contains("\"type\":\"summary\"")
        );
    }
}
