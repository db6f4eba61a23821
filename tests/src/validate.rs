//! Every JSON line the agent prints in the end-to-end suite is validated against
//! the line schemas: every line of every `Agent` run, of every replay and of every
//! sink a test reads, not a sample. The schemas are the agent's own
//! (`sendsight::schema`, generated from the types that print the lines), the same
//! as the checked-in schema/*.schema.json (the agent's unit test fails otherwise),
//! so this also works where the source tree is not (the kernel matrix's guests). A line that fails (or names a type with no
//! schema) fails the test that printed it, with the line and the errors.
//!
//! Each test process counts what it validated and writes the tally to
//! `target/schema-validated/<binary>-<pid>.txt` ("<lines> <failures>"), so that
//! `cargo xtask test` can close with the suite's total.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::{
        Mutex, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
};

use jsonschema::Validator;
use serde_json::Value;

static VALIDATED: AtomicU64 = AtomicU64::new(0);
static FAILED: AtomicU64 = AtomicU64::new(0);

/// The schemas, by the line type each one's `type` const names.
pub fn validators() -> &'static BTreeMap<String, Validator> {
    static S: OnceLock<BTreeMap<String, Validator>> = OnceLock::new();
    S.get_or_init(|| {
        sendsight::schema::all()
            .into_iter()
            .map(|(t, schema)| {
                let v = jsonschema::options()
                    .with_draft(jsonschema::Draft::Draft202012)
                    .should_validate_formats(true)
                    .build(&schema)
                    .unwrap_or_else(|e| panic!("the {t} schema: {e}"));
                (t.to_string(), v)
            })
            .collect()
    })
}

/// Validates one line: Err with every error (and the line) when it does not match
/// the schema of its `type`. Counted either way.
pub fn check(line: &Value) -> Result<(), String> {
    let r = match line["type"].as_str() {
        None => Err(format!("a line without a type: {line}")),
        Some(t) => match validators().get(t) {
            None => Err(format!("no schema for line type {t:?}: {line}")),
            Some(v) => {
                let errs: Vec<String> = v
                    .iter_errors(line)
                    .map(|e| format!("at {:?}: {e}", e.instance_path().to_string()))
                    .collect();
                if errs.is_empty() {
                    Ok(())
                } else {
                    Err(format!(
                        "{t} line fails its schema (schema/{t}.schema.json):\n    {}\n  line: {line}",
                        errs.join("\n    ")
                    ))
                }
            }
        },
    };
    VALIDATED.fetch_add(1, Ordering::Relaxed);
    if r.is_err() {
        FAILED.fetch_add(1, Ordering::Relaxed);
    }
    r
}

/// Validates every line, then panics naming the failures (at most 20 shown).
pub fn assert_valid(origin: &str, lines: &[Value]) {
    let errors: Vec<String> = lines.iter().filter_map(|l| check(l).err()).collect();
    write_tally();
    if !errors.is_empty() {
        let shown: Vec<&String> = errors.iter().take(20).collect();
        panic!(
            "{origin}: {} of {} line(s) fail the schemas:\n{}",
            errors.len(),
            lines.len(),
            shown
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .join("\n")
        );
    }
}

/// Parses the agent's JSON lines (one object per line) and validates each.
pub fn parse_lines(origin: &str, text: &str) -> Vec<Value> {
    let lines: Vec<Value> = text
        .lines()
        .map(|l| {
            serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("{origin}: a non-JSON line ({e}): {l}"))
        })
        .collect();
    assert_valid(origin, &lines);
    lines
}

/// Lines validated (and failed) by this process so far.
pub fn counts() -> (u64, u64) {
    (
        VALIDATED.load(Ordering::Relaxed),
        FAILED.load(Ordering::Relaxed),
    )
}

/// Where the tallies go: `$CARGO_TARGET_DIR` or the workspace's target/.
pub fn tally_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"))
        .join("schema-validated")
}

/// Writes this process's running tally (overwritten: the last write holds the total).
fn write_tally() {
    // This module's own tests make failing lines on purpose: not the suite's.
    if cfg!(test) {
        return;
    }
    // One writer at a time, so a later write never holds an older count.
    static WRITING: Mutex<()> = Mutex::new(());
    let _w = WRITING.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tally_dir();
    if std::fs::create_dir_all(&dir).is_err() {
        return;
    }
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.file_name()?.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "test".into());
    let (n, failed) = counts();
    let _ = std::fs::write(
        dir.join(format!("{exe}-{}.txt", std::process::id())),
        format!("{n} {failed}\n"),
    );
}

#[cfg(test)]
mod tests {
    use sendsight::output::json::{LossBody, line};

    use super::*;

    fn loss_line() -> Value {
        let bytes = line(
            "loss",
            "2026-11-29T22:00:00.123456789Z",
            1_795_996_800_123_456_789,
            LossBody {
                source: "decode",
                lost: 2,
                total: 5,
            },
        );
        serde_json::from_slice(&bytes).unwrap()
    }

    #[test]
    fn a_line_the_agent_makes_passes_and_a_changed_one_fails_with_the_line() {
        assert_eq!(check(&loss_line()), Ok(()));
        let mut extra = loss_line();
        extra["surprise"] = Value::from(1);
        let err = check(&extra).unwrap_err();
        assert!(
            err.contains("loss.schema.json") && err.contains("surprise"),
            "{err}"
        );
        let mut source = loss_line();
        source["source"] = Value::from("nowhere");
        assert!(check(&source).is_err(), "an unknown loss source");
        let mut kind = loss_line();
        kind["type"] = Value::from("no_such_type");
        assert!(check(&kind).unwrap_err().contains("no schema"));
        let (validated, failed) = counts();
        assert!(validated >= 4 && failed >= 3, "{validated} {failed}");
    }

    #[test]
    #[should_panic(expected = "1 of 2 line(s) fail the schemas")]
    fn a_failing_line_fails_the_run() {
        let mut bad = loss_line();
        bad["lost"] = Value::from(0);
        assert_valid("a test run", &[loss_line(), bad]);
    }
}
