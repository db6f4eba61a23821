//! The text view (`sendsight replay --format text`) of every recording in
//! tests/fixtures, with NO_COLOR and 100 columns, against the checked-in
//! `NAME.text` beside it. When the rendering or the engine's verdicts change on
//! purpose, regenerate them all with
//!
//!     SENDSIGHT_BLESS=1 cargo +1.99.1 test -p sendsight --test text_golden
//!
//! and review the diff.

mod common;

use std::{
    path::Path,
    process::{Command, Output},
};

fn replay(file: &Path, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sendsight"));
    c.arg("replay").args(args).arg(file);
    for var in ["NO_COLOR", "CLICOLOR_FORCE", "CLICOLOR", "COLUMNS", "TERM"] {
        c.env_remove(var);
    }
    c.envs(env.iter().copied());
    let out = c.output().expect("runs sendsight");
    assert!(
        out.status.success(),
        "{}: {}",
        file.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn golden_text(file: &Path) -> String {
    let out = replay(
        file,
        &["--format", "text"],
        &[("NO_COLOR", "1"), ("COLUMNS", "100")],
    );
    String::from_utf8(out.stdout).expect("UTF-8")
}

#[test]
fn text_view_of_every_fixture_matches_its_golden() {
    let bless = std::env::var_os("SENDSIGHT_BLESS").is_some_and(|v| v == "1");
    let all = common::fixtures();
    let mut stale = Vec::new();
    for file in &all {
        let got = golden_text(file);
        let golden = file.with_extension("text");
        if bless {
            std::fs::write(&golden, &got).unwrap();
            continue;
        }
        let want = std::fs::read_to_string(&golden).unwrap_or_else(|e| {
            panic!(
                "{}: {e}; create it with SENDSIGHT_BLESS=1 cargo +1.99.1 test -p sendsight \
                 --test text_golden",
                golden.display()
            )
        });
        if got != want {
            let first = got
                .lines()
                .zip(want.lines())
                .position(|(a, b)| a != b)
                .unwrap_or(got.lines().count().min(want.lines().count()));
            stale.push(format!(
                "{} differs from line {}:\n  got:  {:?}\n  want: {:?}",
                golden.display(),
                first + 1,
                got.lines().nth(first).unwrap_or("<end>"),
                want.lines().nth(first).unwrap_or("<end>")
            ));
        }
    }
    assert!(
        stale.is_empty(),
        "{}\n(on purpose? SENDSIGHT_BLESS=1 cargo +1.99.1 test -p sendsight --test text_golden)",
        stale.join("\n")
    );
}

#[test]
fn text_view_shows_verdicts_and_no_json() {
    for file in common::fixtures() {
        let text = golden_text(&file);
        assert!(text.contains("▶ VERDICT "), "{}", file.display());
        assert!(text.contains("── summary"), "{}", file.display());
        assert!(
            !text.lines().any(|l| l.starts_with('{')),
            "{}: JSON in the text view",
            file.display()
        );
        for l in text.lines() {
            assert!(
                !(l.starts_with("    ") || l.starts_with("       ")) || l.chars().count() <= 100,
                "{}: block line wider than 100 columns: {l:?}",
                file.display()
            );
        }
    }
}

#[test]
fn piped_replay_is_json_lines_by_default() {
    let file = &common::fixtures()[0];
    let out = replay(file, &[], &[]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.lines().count() > 3);
    for l in text.lines() {
        let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
        assert!(v["type"].is_string());
    }
}

#[test]
fn no_color_wins_over_forced_colour() {
    let file = &common::fixtures()[0];
    let forced = replay(file, &["--format", "text"], &[("CLICOLOR_FORCE", "1")]);
    assert!(forced.stdout.contains(&0x1b), "CLICOLOR_FORCE: no colour");
    let both = replay(
        file,
        &["--format", "text"],
        &[("CLICOLOR_FORCE", "1"), ("NO_COLOR", "1")],
    );
    assert!(!both.stdout.contains(&0x1b), "NO_COLOR: ESC bytes");
    // Not a terminal, nothing forced: plain.
    let piped = replay(file, &["--format", "text"], &[]);
    assert!(!piped.stdout.contains(&0x1b), "piped: ESC bytes");
}

#[test]
fn errors_say_a_thing_once() {
    let out = Command::new(env!("CARGO_BIN_EXE_sendsight"))
        .args(["replay", "/nonexistent/recording.ssrec"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        err.matches("No such file or directory").count(),
        1,
        "{err:?}"
    );
    assert!(err.contains("/nonexistent/recording.ssrec"), "{err:?}");
}

#[test]
fn version_and_format_on_the_command_line() {
    let out = Command::new(env!("CARGO_BIN_EXE_sendsight"))
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8(out.stdout).unwrap(),
        format!("sendsight {}\n", env!("CARGO_PKG_VERSION"))
    );
    let out = Command::new(env!("CARGO_BIN_EXE_sendsight"))
        .args(["run", "--format", "yaml"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let out = Command::new(env!("CARGO_BIN_EXE_sendsight"))
        .args(["run", "--format", "text", "--output", "file:/tmp/x.jsonl"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "text is for stdout only");
}

#[test]
fn man_page_and_completions_are_generated() {
    let dir = std::env::temp_dir().join(format!("sendsight-gen-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_sendsight-gen"))
        .arg(&dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let man = std::fs::read_to_string(dir.join("man1/sendsight.1")).unwrap();
    assert!(man.contains(".TH sendsight"), "{man}");
    let run = std::fs::read_to_string(dir.join("man1/sendsight-run.1")).unwrap();
    assert!(run.contains("format"), "{run}");
    for f in ["sendsight.bash", "_sendsight", "sendsight.fish"] {
        let c = std::fs::read_to_string(dir.join("completions").join(f)).unwrap();
        assert!(c.contains("--format"), "{f}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
