//! Runs the real `sendsight` binary and collects its JSON lines.

use std::{
    io::{BufRead, BufReader},
    path::PathBuf,
    process::{Child, Command, ExitStatus, Stdio},
    sync::{Arc, Mutex, mpsc},
    thread::JoinHandle,
    time::{Duration, Instant},
};

use serde_json::Value;

/// The agent binary under test: `$SENDSIGHT_BIN`, else the workspace's debug build.
pub fn binary() -> PathBuf {
    if let Some(p) = std::env::var_os("SENDSIGHT_BIN") {
        return p.into();
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let bin = target.join("debug/sendsight");
    assert!(
        bin.exists(),
        "agent binary not found at {}: run the suite with `cargo xtask test` (which builds \
         it), or set SENDSIGHT_BIN",
        bin.display()
    );
    bin
}

pub struct Agent {
    /// What was run, for messages.
    what: String,
    child: Option<Child>,
    lines: Arc<Mutex<Vec<Value>>>,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
}

/// What a finished run printed.
pub struct Output {
    pub lines: Vec<Value>,
    pub stderr: String,
    pub status: std::process::ExitStatus,
}

impl Output {
    pub fn of_type(&self, kind: &str) -> Vec<&Value> {
        self.lines.iter().filter(|l| l["type"] == kind).collect()
    }

    pub fn summary(&self) -> &Value {
        let s = self.of_type("summary");
        assert_eq!(
            s.len(),
            1,
            "expected one summary line; stderr:\n{}",
            self.stderr
        );
        s[0]
    }
}

impl Agent {
    /// Starts `sendsight run <args>` and waits until it reports its probes attached.
    pub fn start(args: &[&str]) -> Agent {
        Self::start_expecting(args, true)
    }

    /// Starts the agent; with `stdout_lines` false (output sent elsewhere), waits for
    /// the attach message on stderr instead of the `start` line.
    pub fn start_expecting(args: &[&str], stdout_lines: bool) -> Agent {
        Self::start_env(args, stdout_lines, &[])
    }

    /// As [`Agent::start_expecting`], with extra environment variables for the agent.
    pub fn start_env(args: &[&str], stdout_lines: bool, envs: &[(&str, &str)]) -> Agent {
        let mut cmd = Command::new(binary());
        cmd.arg("run").args(args).envs(envs.iter().copied());
        Self::spawn(cmd, stdout_lines)
    }

    /// Starts `cmd`: `sendsight run ...`, or a wrapper that execs it (setpriv), so
    /// that the child's pid is the agent's. Waits as `start_expecting` does.
    pub fn spawn(mut cmd: Command, stdout_lines: bool) -> Agent {
        let what = format!("{cmd:?}");
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {:?}: {e}", cmd.get_program()));
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(String::new()));
        let (started_tx, started_rx) = mpsc::channel();
        let started_tx_err = started_tx.clone();
        let out = child.stdout.take().unwrap();
        let l2 = lines.clone();
        let r1 = std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("agent printed a non-JSON line ({e}): {line}"));
                if v["type"] == "start" {
                    let _ = started_tx.send(());
                }
                l2.lock().unwrap().push(v);
            }
        });
        let err = child.stderr.take().unwrap();
        let e2 = stderr.clone();
        let started_tx2 = started_tx_err;
        let r2 = std::thread::spawn(move || {
            for line in BufReader::new(err).lines() {
                let Ok(line) = line else { break };
                if !stdout_lines && line.contains("sendsight: tracing") {
                    let _ = started_tx2.send(());
                }
                let mut s = e2.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let mut agent = Agent {
            what,
            child: Some(child),
            lines,
            stderr,
            readers: vec![r1, r2],
        };
        if started_rx.recv_timeout(Duration::from_secs(60)).is_err() {
            let out = agent.stop();
            panic!(
                "sendsight did not report its probes attached within 60 s ({}); stderr:\n{}",
                out.status, out.stderr
            );
        }
        agent
    }

    /// SIGINT, then wait for a clean exit (the summary comes last).
    pub fn stop(&mut self) -> Output {
        self.stop_with(libc::SIGINT)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Sends `signal`, then waits for the agent to exit. Every line it printed is
    /// validated against the schemas (`crate::validate`): a line that does not match
    /// fails the test here.
    pub fn stop_with(&mut self, signal: i32) -> Output {
        let mut child = self.child.take().expect("agent already stopped");
        let status = signal_and_wait(&mut child, signal);
        for r in self.readers.drain(..) {
            let _ = r.join();
        }
        let lines = std::mem::take(&mut *self.lines.lock().unwrap());
        crate::validate::assert_valid(&self.what, &lines);
        Output {
            lines,
            stderr: std::mem::take(&mut *self.stderr.lock().unwrap()),
            status,
        }
    }
}

/// Sends `signal` to the agent `child`, then waits for it to exit: 30 s at most,
/// else it is killed and the test fails.
pub fn signal_and_wait(child: &mut Child, signal: i32) -> ExitStatus {
    unsafe { libc::kill(child.id() as i32, signal) };
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let s = child.wait().unwrap();
            panic!("sendsight did not exit within 30 s of signal {signal} (killed: {s})");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            for r in self.readers.drain(..) {
                let _ = r.join();
            }
            // Never stopped: what it printed is validated all the same (unless the
            // test is failing already).
            if !std::thread::panicking() {
                let lines = std::mem::take(&mut *self.lines.lock().unwrap());
                crate::validate::assert_valid(&self.what, &lines);
            }
        }
    }
}
