//! Booting a kernel under qemu and reading its serial console.

use std::{
    fs,
    io::{BufRead as _, BufReader, Write as _},
    path::Path,
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use super::{
    kernels::Kernel,
    report::{KernelRun, MARK, parse_console, to_marker},
    say, vm_dir,
};

pub(super) fn boot(k: &Kernel, initrd: &Path, timeout: Duration) -> KernelRun {
    let mut run = KernelRun::new(k.series.label, &format!("{} {}", k.package, k.version));
    let log_path = vm_dir().join(format!("{}.log", k.series.label));
    run.log = Some(log_path.clone());
    say(&format!(
        "booting {} under qemu (TCG, 2 vCPUs, 2 GiB), timeout {} s; console -> {}",
        k.release,
        timeout.as_secs(),
        log_path.display()
    ));
    let t0 = Instant::now();
    let mut c = Command::new("qemu-system-x86_64");
    c.args(["-accel", "tcg,thread=multi", "-cpu", "max", "-m", "2048"])
        .args(["-smp", "2", "-nographic", "-no-reboot", "-nic", "none"])
        .arg("-kernel")
        .arg(k.vmlinuz())
        .arg("-initrd")
        .arg(initrd)
        .args([
            "-append",
            "console=ttyS0 panic=-1 quiet loglevel=4 oops=panic",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match c.spawn() {
        Ok(c) => c,
        Err(e) => {
            run.errors.push(format!(
                "cannot start qemu-system-x86_64: {e} (`cargo xtask setup` installs qemu-system-x86)"
            ));
            return run;
        }
    };
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = match fs::File::create(&log_path) {
        Ok(f) => Arc::new(Mutex::new(f)),
        Err(e) => {
            run.errors.push(format!("{}: {e}", log_path.display()));
            let _ = child.kill();
            return run;
        }
    };
    let label = k.series.label;
    let mut readers = Vec::new();
    for (stream, is_err) in [
        (
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            false,
        ),
        (Box::new(child.stderr.take().unwrap()), true),
    ] {
        let lines = lines.clone();
        let log = log.clone();
        readers.push(std::thread::spawn(move || {
            let mut r = BufReader::new(stream);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let line = String::from_utf8_lossy(&buf)
                    .trim_end_matches(['\r', '\n'])
                    .replace('\r', "");
                let _ = writeln!(log.lock().unwrap(), "{line}");
                if is_err {
                    eprintln!("[{label} qemu] {line}");
                } else if let Some(i) = line.find(MARK) {
                    let m = &line[i + MARK.len()..];
                    if !m.starts_with("CHECK-JSON") {
                        eprintln!("[{label} +{:.0}s] {m}", t0.elapsed().as_secs_f64());
                    }
                }
                lines.lock().unwrap().push(line);
            }
        }));
    }
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) => {}
            Err(e) => {
                run.errors.push(format!("waiting for qemu: {e}"));
                break None;
            }
        }
        if t0.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            run.errors.push(format!(
                "TIMEOUT: the VM was still running after {} s (killed)",
                timeout.as_secs()
            ));
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    for r in readers {
        let _ = r.join();
    }
    run.wall_s = t0.elapsed().as_secs_f64();
    let lines = std::mem::take(&mut *lines.lock().unwrap());
    parse_console(&lines, &mut run);
    if let Some(s) = status
        && !s.success()
    {
        run.errors.push(format!("qemu exited {s}"));
    }
    if run.release.is_empty() {
        let tail: Vec<&str> = lines
            .iter()
            .rev()
            .take(30)
            .rev()
            .map(String::as_str)
            .collect();
        run.errors.push(format!(
            "the guest never reached its tests (no BOOTED marker); last console lines:\n    {}",
            tail.join("\n    ")
        ));
    } else if !lines.iter().any(|l| l.contains("SENDSIGHT-VMTEST-DONE")) && run.errors.is_empty() {
        run.errors
            .push("the guest stopped before its DONE marker".into());
    }
    // The output of each failed (or flaky) test, for the terminal (CI logs).
    for t in run.tests.iter().filter(|t| t.result != "PASS") {
        let begin = format!("{MARK}BEGIN {} ", to_marker(&t.name));
        if let Some(start) = lines.iter().position(|l| l.contains(&begin)) {
            eprintln!("---- {} on {}: {} ----", t.name, run.label, t.result);
            for l in lines[start + 1..]
                .iter()
                .take_while(|l| !l.contains(&format!("{MARK}RESULT")))
            {
                eprintln!("  {l}");
            }
        }
    }
    say(&format!(
        "{}: {} in {:.0} s",
        k.release,
        if run.passed() { "passed" } else { "FAILED" },
        run.wall_s
    ));
    run
}
