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
