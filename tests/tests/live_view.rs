//! The text view live: the real agent in a pseudo-terminal, with real traffic that
//! produces a verdict (the forged too-big of the verdict suite, `spoofed_ptb`):
//! on a terminal it shows the text view (the verdict rendered, no JSON), in colour
//! unless NO_COLOR is set; piped, JSON lines only.

use std::{
    fs::File,
    io::{BufRead, BufReader, Read},
    os::fd::{FromRawFd, OwnedFd},
    process::{Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use sendsight_tests::{
    Agent, Topology,
    agent::{binary, signal_and_wait},
    require_root, scenarios,
};

/// A pseudo-terminal of `cols` columns: (master, slave).
fn openpty(cols: u16) -> (OwnedFd, OwnedFd) {
    let (mut master, mut slave) = (-1, -1);
    let ws = libc::winsize {
        ws_row: 40,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    let r = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            &ws,
        )
    };
    assert_eq!(r, 0, "openpty: {}", std::io::Error::last_os_error());
    unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) }
}

/// Runs `sendsight run` with stdout on a terminal while a forged too-big arrives;
/// returns what the terminal showed.
fn run_on_a_tty(net: u8, env: &[(&str, &str)]) -> String {
    require_root();
    let topo = Topology::direct(net);
    let (master, slave) = openpty(100);
    let mut cmd = Command::new(binary());
    cmd.args(["run", "--duration", "60s"])
        .stdin(Stdio::null())
        .stdout(Stdio::from(slave))
        .stderr(Stdio::piped());
    for var in ["NO_COLOR", "CLICOLOR_FORCE", "CLICOLOR", "COLUMNS"] {
        cmd.env_remove(var);
    }
    cmd.env("TERM", "xterm-256color").envs(env.iter().copied());
    let mut child = cmd.spawn().expect("spawn sendsight");
    // Our copy of the slave end goes with the Command: then the terminal reads EOF
    // (EIO) once the agent exits.
    drop(cmd);
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if line.contains("sendsight: tracing") {
                let _ = tx.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    let tty_reader = std::thread::spawn(move || {
        let mut f = File::from(master);
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            match f.read(&mut chunk) {
                Ok(0) | Err(_) => break, // EIO: the last writer closed the terminal
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
        buf
    });
    if rx.recv_timeout(Duration::from_secs(60)).is_err() {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "the agent did not start tracing; stderr:\n{}",
            err_reader.join().unwrap()
        );
    }
    scenarios::forge_too_big(&topo);
    std::thread::sleep(Duration::from_millis(500));
    let status = signal_and_wait(&mut child, libc::SIGINT);
    let stderr = err_reader.join().unwrap();
    assert!(status.success(), "agent failed ({status}): {stderr}");
    let shown = tty_reader.join().unwrap();
    String::from_utf8(shown).expect("the text view is UTF-8")
}

fn assert_text_view(shown: &str) {
    assert!(
        shown.contains("VERDICT") && shown.contains("spoofed_ptb"),
        "no verdict on the terminal:\n{shown}"
    );
    assert!(shown.contains("advice:"), "{shown}");
    assert!(shown.contains("── summary"), "{shown}");
    assert!(shown.contains(" on kernel "), "no start line:\n{shown}");
    for l in shown.lines() {
        assert!(
            !l.trim_start_matches('\r').starts_with('{') && !l.contains("\"schema\""),
            "JSON on the terminal: {l}"
        );
    }
}

#[test]
fn terminal_shows_the_text_view_in_colour() {
    let shown = run_on_a_tty(100, &[]);
    assert_text_view(&shown);
    assert!(shown.contains('\x1b'), "no colour on a terminal:\n{shown}");
}

#[test]
fn terminal_with_no_color_has_no_escape_codes() {
    let shown = run_on_a_tty(101, &[("NO_COLOR", "1")]);
    assert_text_view(&shown);
    assert!(!shown.contains('\x1b'), "ESC with NO_COLOR set:\n{shown:?}");
}

#[test]
fn piped_output_is_json_lines_only() {
    require_root();
    let topo = Topology::direct(102);
    // Agent::start parses every stdout line as JSON and fails on anything else.
    let mut agent = Agent::start(&[]);
    scenarios::forge_too_big(&topo);
    std::thread::sleep(Duration::from_millis(500));
    let out = agent.stop();
    assert!(out.status.success(), "{}", out.stderr);
    assert!(
        out.of_type("verdict")
            .iter()
            .any(|v| v["verdict"] == "spoofed_ptb"),
        "no spoofed_ptb verdict line"
    );
    assert_eq!(out.lines.last().unwrap()["type"], "summary");
}
