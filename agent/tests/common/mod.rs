//! What the integration tests share: the recorded scenarios in tests/fixtures.

use std::path::PathBuf;

/// Every recording (`*.ssrec`) in tests/fixtures, sorted: the scenario suite's (at
/// least 8 of them).
pub fn fixtures() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "ssrec"))
        .collect();
    v.sort();
    assert!(
        v.len() >= 8,
        "expected the scenario recordings in {}, found {}",
        dir.display(),
        v.len()
    );
    v
}
