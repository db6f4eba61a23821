//! `sendsight schema [TYPE]`: the line schemas from the binary, the same as the
//! checked-in schema/*.schema.json, without privileges or the source tree.

use std::{path::PathBuf, process::Command};

use sendsight::schema::{LineType, file_name};
use serde_json::Value;

fn schema(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_sendsight"))
        .arg("schema")
        .args(args)
        .output()
        .expect("runs sendsight")
}

fn checked_in(t: LineType) -> Value {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../schema")
        .join(file_name(t));
    serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

#[test]
fn all_schemas_by_type_equal_the_checked_in_files() {
    let out = schema(&[]);
    assert!(out.status.success(), "{out:?}");
    let all: Value = serde_json::from_slice(&out.stdout).expect("one JSON object");
    let all = all.as_object().unwrap();
    assert_eq!(all.len(), LineType::ALL.len());
    for t in LineType::ALL {
        assert_eq!(all[t.name()], checked_in(t), "{}", t.name());
    }
}

#[test]
fn one_type_and_the_list() {
    let out = schema(&["verdict"]);
    assert!(out.status.success(), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v, checked_in(LineType::Verdict));

    let out = schema(&["--list"]);
    assert!(out.status.success(), "{out:?}");
    let list = String::from_utf8(out.stdout).unwrap();
    assert_eq!(list.lines().count(), LineType::ALL.len(), "{list}");
    for t in LineType::ALL {
        assert!(
            list.lines()
                .any(|l| l.split_whitespace().next() == Some(t.name())),
            "{list}"
        );
    }
}

#[test]
fn an_unknown_type_is_one_line_and_exit_2() {
    let out = schema(&["retransmits"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.contains("unknown line type \"retransmits\"") && err.contains("retransmit,"),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}
