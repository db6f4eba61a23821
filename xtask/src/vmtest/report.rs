//! What a kernel's run reported: the guest's console markers, `sendsight check
//! --json` (in the guest, or on the host).

use std::{path::PathBuf, process::Command, time::Instant};

use serde_json::Value;

use crate::cmd;

/// What starts every marker line the guest's /init prints on the console.
pub(super) const MARK: &str = "SENDSIGHT-VMTEST-";

#[derive(Clone, Debug)]
pub struct ProbeRow {
    pub probe: String,
    pub attach: String,
    pub state: String,
    pub note: String,
}

#[derive(Clone, Debug)]
pub struct TestRow {
    pub name: String,
    /// PASS, FLAKY (failed once, passed on the one retry), FAIL or TIMEOUT.
    pub result: String,
    pub secs: f64,
}

impl TestRow {
    /// OPEN rows (binaries a kernel does not run yet, with why) fail nothing.
    pub fn ok(&self) -> bool {
        self.result == "PASS" || self.result == "FLAKY" || self.result.starts_with("OPEN")
    }
}

#[derive(Debug)]
pub struct KernelRun {
    pub label: String,
    /// `uname -r` as the guest (or host) reported it.
    pub release: String,
    pub package: String,
    pub check_ok: Option<bool>,
    pub probes: Vec<ProbeRow>,
    pub missing_members: Vec<String>,
    pub tests: Vec<TestRow>,
    pub boot_s: Option<f64>,
    pub check_s: Option<f64>,
    pub tests_s: Option<f64>,
    pub wall_s: f64,
    /// Why this kernel failed as a whole (no boot, timeout, check error...).
    pub errors: Vec<String>,
    pub log: Option<PathBuf>,
}

impl KernelRun {
    pub(super) fn new(label: &str, package: &str) -> Self {
        KernelRun {
            label: label.into(),
            release: String::new(),
            package: package.into(),
            check_ok: None,
            probes: Vec::new(),
            missing_members: Vec::new(),
            tests: Vec::new(),
            boot_s: None,
            check_s: None,
            tests_s: None,
            wall_s: 0.0,
            errors: Vec::new(),
            log: None,
        }
    }

    pub fn passed(&self) -> bool {
        self.errors.is_empty() && self.check_ok == Some(true) && self.tests.iter().all(|t| t.ok())
    }
}

pub(super) fn parse_console(lines: &[String], run: &mut KernelRun) {
    let mut json: Option<String> = None;
    let mut booted_at = None;
    let mut first_test = None;
    let mut last_end = None;
    for line in lines {
        if let Some(j) = json.as_mut()
            && !line.contains(MARK)
        {
            j.push_str(line);
            j.push('\n');
            continue;
        }
        let Some(i) = line.find(MARK) else { continue };
        let f: Vec<&str> = line[i + MARK.len()..].split_whitespace().collect();
        let num = |s: Option<&&str>| s.and_then(|s| s.parse::<f64>().ok());
        match f.first().copied() {
            Some("BOOTED") => {
                run.release = f.get(1).unwrap_or(&"").to_string();
                booted_at = num(f.get(2));
                run.boot_s = booted_at;
            }
            Some("ERROR") => run.errors.push(f[1..].join(" ")),
            Some("CHECK-JSON-BEGIN") => json = Some(String::new()),
            Some("CHECK-JSON-END") => {
                let text = json.take().unwrap_or_default();
                if let (Some(b), Some(e)) = (booted_at, num(f.get(2))) {
                    run.check_s = Some(e - b);
                }
                match serde_json::from_str::<Value>(&text) {
                    Ok(v) => read_check(&v, run),
                    Err(e) => run.errors.push(format!(
                        "sendsight check --json (exit {}) printed no JSON ({e}): {}",
                        f.get(1).unwrap_or(&"?"),
                        text.trim()
                    )),
                }
            }
            Some("RESULT") if f.len() >= 5 => {
                let (s, e) = (num(f.get(3)).unwrap_or(0.0), num(f.get(4)).unwrap_or(0.0));
                first_test.get_or_insert(s);
                last_end = Some(e);
                run.tests.push(TestRow {
                    name: from_marker(f[1]),
                    result: f[2].to_string(),
                    secs: e - s,
                });
            }
            _ => {}
        }
    }
    if let (Some(s), Some(e)) = (first_test, last_end) {
        run.tests_s = Some(e - s);
    }
}

/// A test's name as the markers write it, `bin::test` or `bin::test[pass]` (one
/// word), as the tables show it: `bin::test [pass]`.
fn from_marker(name: &str) -> String {
    name.replacen('[', " [", 1)
}

/// The inverse of [`from_marker`].
pub(super) fn to_marker(name: &str) -> String {
    name.replacen(" [", "[", 1)
}

fn read_check(v: &Value, run: &mut KernelRun) {
    run.check_ok = v["ok"].as_bool();
    if run.release.is_empty() {
        run.release = v["kernel"].as_str().unwrap_or("").into();
    }
    if let Some(e) = v["error"].as_str() {
        run.errors.push(format!("sendsight check: {e}"));
    }
    for p in v["probes"].as_array().into_iter().flatten() {
        run.probes.push(ProbeRow {
            probe: p["probe"].as_str().unwrap_or("?").into(),
            attach: p["attach"].as_str().unwrap_or("?").into(),
            state: p["state"].as_str().unwrap_or("?").into(),
            note: p["note"].as_str().unwrap_or("").into(),
        });
    }
    run.missing_members = v["missing_members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m.as_str().map(str::to_string))
        .collect();
}

/// The host kernel's row: `sendsight check --json` run natively.
pub fn host_check() -> KernelRun {
    let mut run = KernelRun::new("host", "(this machine's kernel)");
    let t = Instant::now();
    let bin = cmd::root().join("target/debug/sendsight");
    match Command::new(&bin).args(["check", "--json"]).output() {
        Ok(out) => match serde_json::from_slice::<Value>(&out.stdout) {
            Ok(v) => read_check(&v, &mut run),
            Err(e) => run.errors.push(format!(
                "{} check --json: {e}: {}",
                bin.display(),
                String::from_utf8_lossy(&out.stderr)
            )),
        },
        Err(e) => run.errors.push(format!("{}: {e}", bin.display())),
    }
    run.check_s = Some(t.elapsed().as_secs_f64());
    run.wall_s = t.elapsed().as_secs_f64();
    run
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn console_markers() {
        let log = [
            "[    1.0] random kernel line",
            "SENDSIGHT-VMTEST-BOOTED 6.1.0-56-cloud-amd64 5.50",
            "SENDSIGHT-VMTEST-CHECK-JSON-BEGIN",
            "{",
            r#"  "kernel": "6.1.0-56-cloud-amd64", "ok": true, "missing_members": [],"#,
            r#"  "probes": [{"probe":"send_socket","attach":"tracepoint sock:sock_send_length","state":"unavailable","note":"x"}]"#,
            "}",
            "SENDSIGHT-VMTEST-CHECK-JSON-END 0 9.50",
            "SENDSIGHT-VMTEST-BEGIN cli::a 10.00",
            "SENDSIGHT-VMTEST-RESULT cli::a PASS 10.00 12.25",
            "SENDSIGHT-VMTEST-RESULT probes::b FAIL 12.25 20.25",
            "SENDSIGHT-VMTEST-RETRY verdicts::c 21.00",
            "SENDSIGHT-VMTEST-RESULT verdicts::c FLAKY 20.25 24.25",
            "SENDSIGHT-VMTEST-RESULT verdicts::c[perf] PASS 24.25 24.50",
            "SENDSIGHT-VMTEST-DONE 25.00",
        ]
        .map(String::from);
        let mut run = KernelRun::new("6.1", "pkg");
        parse_console(&log, &mut run);
        assert_eq!(run.release, "6.1.0-56-cloud-amd64");
        assert_eq!(run.boot_s, Some(5.5));
        assert_eq!(run.check_s, Some(4.0));
        assert_eq!(run.check_ok, Some(true));
        assert_eq!(run.probes.len(), 1);
        assert_eq!(run.probes[0].state, "unavailable");
        assert_eq!(run.tests.len(), 4);
        assert_eq!(run.tests[3].name, "verdicts::c [perf]");
        assert_eq!(to_marker(&run.tests[3].name), "verdicts::c[perf]");
        assert_eq!(run.tests[0].secs, 2.25);
        assert_eq!(run.tests[1].result, "FAIL");
        assert!(run.tests[2].ok(), "FLAKY passes, and shows");
        assert_eq!(run.tests_s, Some(14.5));
        assert!(run.errors.is_empty(), "{:?}", run.errors);
        assert!(!run.passed());
        run.tests.remove(1);
        assert!(run.passed());
    }
}
