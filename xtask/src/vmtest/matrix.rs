//! The matrix as markdown tables: probes by kernel, tests by kernel, timings.

use std::fs;

use super::{report::KernelRun, vm_dir};

fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect();
        format!("| {} |\n", s.join(" | "))
    };
    let mut out = line(header.to_vec());
    out += &format!(
        "|{}|\n",
        w.iter()
            .map(|n| "-".repeat(n + 2))
            .collect::<Vec<_>>()
            .join("|")
    );
    for r in rows {
        out += &line(r.iter().map(String::as_str).collect());
    }
    out
}

/// Verifier logs span lines; a table cell or list item cannot.
fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" / ")
        .replace('|', "/")
}

fn secs(s: Option<f64>) -> String {
    s.map_or("-".into(), |s| format!("{s:.0} s"))
}

/// The matrix as markdown tables (what the README's "Kernel matrix" shows).
pub fn render(host: Option<&KernelRun>, runs: &[KernelRun]) -> String {
    let all: Vec<&KernelRun> = host.into_iter().chain(runs.iter()).collect();
    let kname = |r: &KernelRun| {
        if r.release.is_empty() {
            r.label.clone()
        } else if r.label == "host" {
            format!("{} (host)", r.release)
        } else {
            r.release.clone()
        }
    };
    let mut out = String::new();
    // Probes: one row per probe, one column per kernel, "state: attach method";
    // the notes (why degraded or unavailable, and the fallback) below.
    let mut probes: Vec<String> = Vec::new();
    for r in &all {
        for p in &r.probes {
            if !probes.contains(&p.probe) {
                probes.push(p.probe.clone());
            }
        }
    }
    let header: Vec<String> = std::iter::once("probe".to_string())
        .chain(all.iter().map(|r| kname(r)))
        .collect();
    let mut rows = Vec::new();
    for probe in &probes {
        let mut row = vec![probe.clone()];
        for r in &all {
            row.push(match r.probes.iter().find(|p| &p.probe == probe) {
                Some(p) => format!("{}: {}", p.state, p.attach),
                None if r.probes.is_empty() => "NO REPORT".into(),
                None => "-".into(),
            });
        }
        rows.push(row);
    }
    out += &table(
        &header.iter().map(String::as_str).collect::<Vec<_>>(),
        &rows,
    );
    let mut notes = String::new();
    for r in &all {
        for p in r.probes.iter().filter(|p| !p.note.is_empty()) {
            notes += &format!(
                "- {} {} ({}): {}\n",
                kname(r),
                p.probe,
                p.state,
                one_line(&p.note)
            );
        }
        if r.probes.is_empty()
            && let Some(e) = r.errors.first()
        {
            notes += &format!("- {}: no probe report: {}\n", kname(r), one_line(e));
        }
    }
    if !notes.is_empty() {
        out += "\n";
        out += &notes;
    }

    // Tests: one row per test, one column per kernel.
    let mut names: Vec<String> = Vec::new();
    for r in runs {
        for t in &r.tests {
            if !names.contains(&t.name) {
                names.push(t.name.clone());
            }
        }
    }
    if !runs.is_empty() {
        let header: Vec<String> = std::iter::once("test".to_string())
            .chain(runs.iter().map(kname))
            .collect();
        let mut rows = Vec::new();
        for n in &names {
            let mut row = vec![n.clone()];
            for r in runs {
                row.push(
                    r.tests
                        .iter()
                        .find(|t| &t.name == n)
                        .map_or("not run".into(), |t| {
                            format!("{} ({:.0} s)", t.result, t.secs)
                        }),
                );
            }
            rows.push(row);
        }
        out += "\n";
        out += &table(
            &header.iter().map(String::as_str).collect::<Vec<_>>(),
            &rows,
        );
        let mut rows = Vec::new();
        for r in runs {
            let passed = r.tests.iter().filter(|t| t.ok()).count();
            rows.push(vec![
                kname(r),
                r.package.clone(),
                secs(r.boot_s),
                secs(r.check_s),
                secs(r.tests_s),
                format!("{:.0} s", r.wall_s),
                format!("{passed}/{}", r.tests.len()),
                if r.passed() { "PASS" } else { "FAIL" }.into(),
            ]);
        }
        out += "\n";
        out += &table(
            &[
                "kernel", "package", "boot", "check", "tests", "total", "passed", "result",
            ],
            &rows,
        );
    }
    out
}

pub fn print_matrix(host: Option<&KernelRun>, runs: &[KernelRun]) {
    let text = render(host, runs);
    println!(
        "\nKernel matrix (guests under qemu TCG, 2 vCPUs; host row: `sendsight check` only)\n"
    );
    println!("{text}");
    for r in host.into_iter().chain(runs.iter()) {
        if !r.missing_members.is_empty() {
            println!(
                "{}: kernel struct members not found: {}",
                r.label,
                r.missing_members.join(", ")
            );
        }
        for e in &r.errors {
            println!("{}: ERROR {e}", r.label);
        }
    }
    let _ = fs::write(vm_dir().join("matrix.md"), text);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vmtest::report::{ProbeRow, TestRow};

    #[test]
    fn matrix_pivots_probes_by_kernel() {
        let mut vm = KernelRun::new("6.1", "pkg 1");
        vm.release = "6.1.0-56-cloud-amd64".into();
        vm.probes.push(ProbeRow {
            probe: "send_syscall".into(),
            attach: "raw_tracepoint sys_exit".into(),
            state: "unavailable".into(),
            note: "Verifier output: too large\nstack depth 400+320".into(),
        });
        vm.tests.push(TestRow {
            name: "cli::a".into(),
            result: "FLAKY".into(),
            secs: 3.0,
        });
        let mut dead = KernelRun::new("6.12", "pkg 2");
        dead.errors.push("TIMEOUT: the VM was still running".into());
        let text = render(None, &[vm, dead]);
        assert!(
            text.contains("| probe        | 6.1.0-56-cloud-amd64"),
            "{text}"
        );
        assert!(
            text.contains("unavailable: raw_tracepoint sys_exit"),
            "{text}"
        );
        assert!(text.contains("NO REPORT"), "{text}");
        assert!(
            text.contains("(unavailable): Verifier output: too large / stack depth 400+320"),
            "{text}"
        );
        assert!(text.contains("FLAKY (3 s)"), "{text}");
        assert!(text.contains("no probe report: TIMEOUT"), "{text}");
    }
}
