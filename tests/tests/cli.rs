//! Bad input gets one clear line and a non-zero exit, before anything is loaded.

use std::process::{Command, Output};

use sendsight_tests::agent::binary;

fn stderr_lines(out: &Output) -> Vec<String> {
    String::from_utf8_lossy(&out.stderr)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn unknown_flag_is_one_line_and_exit_2() {
    let out = Command::new(binary())
        .args(["run", "--no-such-flag"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "one line expected, got {lines:?}");
    assert!(
        lines[0].contains("unexpected argument '--no-such-flag'"),
        "{lines:?}"
    );
    assert!(out.stdout.is_empty(), "nothing on stdout for a usage error");
}

#[test]
fn bad_values_are_explained() {
    for (args, needle) in [
        (&["run", "--duration", "soon"][..], "is not a duration"),
        (&["run", "--duration", "-5"][..], "duration"),
        (&["run", "--ring-bytes", "5000"][..], "power of two"),
    ] {
        let out = Command::new(binary()).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}: {out:?}");
        let lines = stderr_lines(&out);
        assert_eq!(lines.len(), 1, "{args:?}: {lines:?}");
        assert!(lines[0].contains(needle), "{args:?}: {lines:?}");
    }
}

#[test]
fn unprivileged_run_is_refused_with_the_reason() {
    sendsight_tests::require_root();
    // Drop to nobody with no capabilities at all, as an unprivileged user would run it.
    let out = Command::new("setpriv")
        .args([
            "--reuid=65534",
            "--regid=65534",
            "--clear-groups",
            "--inh-caps=-all",
            "--bounding-set=-all",
        ])
        .arg(binary())
        .args(["run", "--duration", "1s"])
        .output()
        .expect("setpriv (util-linux) is needed");
    assert_eq!(out.status.code(), Some(77), "{out:?}");
    let lines = stderr_lines(&out);
    assert_eq!(lines.len(), 1, "one line expected, got {lines:?}");
    assert!(lines[0].contains("missing privileges"), "{lines:?}");
    assert!(lines[0].contains("CAP_BPF"), "{lines:?}");
    assert!(out.stdout.is_empty());
}
