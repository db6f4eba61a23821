//! A verdict scenario run under the real agent with `--record`, shared by the
//! scenario suites (`tests/tests/verdicts.rs`, `tests/tests/field.rs`).
//!
//! A scenario asserts the exact verdicts for its sockets (name, confidences in
//! order: a verdict is repeated only when its confidence is raised), that nothing
//! else was said about any flow within the topology's address ranges, and that the
//! recording replays to the same verdict and path lines.
//!
//! `SENDSIGHT_FIXTURES_DIR=dir` also saves each passing recording (and what it must
//! replay to) there: that is how agent/tests/fixtures/ is made.
//! `SENDSIGHT_TEST_DUMP=dir` saves every live output line of each scenario there.

use std::{
    collections::BTreeSet,
    io::Write,
    net::{IpAddr, SocketAddr},
    path::PathBuf,
    process::Command,
    time::Duration,
};

use serde_json::{Value, json};

use crate::{
    Agent, Topology,
    agent::{Output, binary},
    netns::canonical_ip,
    require_root,
};

pub struct Scenario {
    name: &'static str,
    agent: Agent,
    record: PathBuf,
}

/// A stopped scenario: the live output, and the recording to replay.
pub struct Finished {
    pub name: &'static str,
    pub out: Output,
    record: PathBuf,
}

impl Scenario {
    /// Starts the agent (recording) for scenario `name`. Fails without root.
    pub fn start(name: &'static str) -> Self {
        Self::start_env(name, &[])
    }

    /// As [`Scenario::start`], with extra environment variables for the agent.
    pub fn start_env(name: &'static str, envs: &[(&str, &str)]) -> Self {
        require_root();
        let record =
            std::env::temp_dir().join(format!("sendsight-{name}-{}.ssrec", std::process::id()));
        // A recording is never written over an existing file.
        let _ = std::fs::remove_file(&record);
        let agent = Agent::start_env(&["--record", record.to_str().unwrap()], true, envs);
        Scenario {
            name,
            agent,
            record,
        }
    }

    /// Stops the agent (after a short grace period for the last events).
    pub fn stop(mut self) -> Finished {
        std::thread::sleep(Duration::from_millis(300));
        let out = self.agent.stop();
        assert!(
            out.status.success(),
            "{}: agent failed: {}",
            self.name,
            out.stderr
        );
        if let Some(dir) = std::env::var_os("SENDSIGHT_TEST_DUMP") {
            let mut f =
                std::fs::File::create(PathBuf::from(dir).join(format!("{}.jsonl", self.name)))
                    .unwrap();
            for l in &out.lines {
                writeln!(f, "{l}").unwrap();
            }
        }
        Finished {
            name: self.name,
            out,
            record: self.record.clone(),
        }
    }

    /// Stops the agent; checks the replay matches and that the set of verdict names
    /// about flows to `peer` is `expected`; returns the live output.
    pub fn finish(self, peer: IpAddr, expected: &[&str]) -> Output {
        let f = self.stop();
        f.check_replay();
        let ours = verdicts_for(&f.out.lines, peer);
        for v in &ours {
            println!("{v}");
        }
        let got: BTreeSet<&str> = ours
            .iter()
            .map(|v| v["verdict"].as_str().unwrap())
            .collect();
        let want: BTreeSet<&str> = expected.iter().copied().collect();
        assert_eq!(got, want, "{}: verdicts for peer {peer}", f.name);
        f.save_fixture(json!({ "peer": peer.to_string(), "verdicts": expected }));
        f.into_output()
    }
}

impl Finished {
    /// The verdict and path lines of a replay of the recording equal the live ones.
    pub fn check_replay(&self) {
        let replay = Command::new(binary())
            .arg("replay")
            .arg(&self.record)
            .output()
            .unwrap();
        assert!(
            replay.status.success(),
            "{}: replay failed: {}",
            self.name,
            String::from_utf8_lossy(&replay.stderr)
        );
        let replayed = crate::validate::parse_lines(
            &format!("replay of {}", self.record.display()),
            &String::from_utf8_lossy(&replay.stdout),
        );
        assert_eq!(
            judgements(&self.out.lines),
            judgements(&replayed),
            "{}: the replay of the recording reached different verdicts",
            self.name
        );
    }

    /// Prints every verdict and path line within `topo`'s ranges, asserts them with
    /// [`assert_verdicts`], checks the replay, saves the fixture; returns the output.
    pub fn expect(self, topo: &Topology, expected: &[Expect]) -> Output {
        print_judgements(self.name, &self.out, topo);
        let seen = assert_verdicts(&self.out, topo, expected);
        self.check_replay();
        // What agent/tests/replay_fixtures.rs checks: the set of verdict names about
        // flows to one peer (the first expected socket's peer, else the server);
        // `exact` is this suite's full expectation.
        let peer = expected
            .first()
            .and_then(|(sel, name, _)| {
                seen.iter()
                    .find(|l| l["verdict"] == *name && sel.matches(l))
                    .map(|l| l["peer"]["ip"].clone())
            })
            .unwrap_or_else(|| json!(topo.addrs.server4));
        let names: BTreeSet<&str> = self
            .out
            .lines
            .iter()
            .filter(|l| l["type"] == "verdict" && l["peer"]["ip"] == peer)
            .map(|l| l["verdict"].as_str().unwrap())
            .collect();
        let exact: Vec<Value> = expected
            .iter()
            .map(|(sel, name, conf)| {
                json!({"socket": format!("{sel:?}"), "verdict": name, "confidences": conf})
            })
            .collect();
        self.save_fixture(json!({ "peer": peer, "verdicts": names, "exact": exact }));
        self.into_output()
    }

    fn save_fixture(&self, expect: Value) {
        if let Some(dir) = std::env::var_os("SENDSIGHT_FIXTURES_DIR") {
            let dir = PathBuf::from(dir);
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::copy(&self.record, dir.join(format!("{}.ssrec", self.name))).unwrap();
            std::fs::File::create(dir.join(format!("{}.expect.json", self.name)))
                .unwrap()
                .write_all(serde_json::to_string_pretty(&expect).unwrap().as_bytes())
                .unwrap();
        }
    }

    pub fn into_output(self) -> Output {
        let _ = std::fs::remove_file(&self.record);
        self.out
    }
}

/// Verdict and path lines, the part of the output a replay must reproduce.
pub fn judgements(lines: &[Value]) -> Vec<Value> {
    lines
        .iter()
        .filter(|l| l["type"] == "verdict" || l["type"] == "path")
        .cloned()
        .collect()
}

/// Verdicts about flows to `peer` (either spelling of an IPv4 peer).
pub fn verdicts_for(lines: &[Value], peer: IpAddr) -> Vec<Value> {
    lines
        .iter()
        .filter(|l| l["type"] == "verdict" && line_ip(&l["peer"]) == Some(canonical_ip(peer)))
        .cloned()
        .collect()
}

/// The first line of `verdict` among `lines`.
pub fn first<'a>(lines: &'a [Value], verdict: &str) -> &'a Value {
    lines
        .iter()
        .find(|l| l["verdict"] == verdict)
        .unwrap_or_else(|| panic!("no {verdict} verdict"))
}

/// `{ip, port}` of a line's `local`/`peer`, IPv4-mapped addresses as IPv4.
pub fn line_ip(end: &Value) -> Option<IpAddr> {
    end["ip"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .map(canonical_ip)
}

fn line_addr(end: &Value) -> Option<SocketAddr> {
    Some(SocketAddr::new(line_ip(end)?, end["port"].as_u64()? as u16))
}

/// Which socket an expectation is about.
#[derive(Clone, Copy, Debug)]
pub enum Sel {
    /// By local address and port (IPv4-mapped or plain: both match an IPv4 address).
    Local(SocketAddr),
    /// By local and peer address (e.g. one accepted socket of a listener).
    Flow(SocketAddr, SocketAddr),
}

impl Sel {
    pub fn matches(&self, line: &Value) -> bool {
        let canon = |a: SocketAddr| SocketAddr::new(canonical_ip(a.ip()), a.port());
        let local = line_addr(&line["local"]);
        match *self {
            Sel::Local(l) => local == Some(canon(l)),
            Sel::Flow(l, p) => {
                local == Some(canon(l)) && line_addr(&line["peer"]) == Some(canon(p))
            }
        }
    }
}

/// One expected verdict: which socket, which verdict, its confidences in order.
pub type Expect<'a> = (Sel, &'a str, &'a [&'a str]);

/// Verdict lines about any flow within `topo`'s address ranges (local or peer).
pub fn verdicts_in(out: &Output, topo: &Topology) -> Vec<Value> {
    out.lines
        .iter()
        .filter(|l| l["type"] == "verdict" && in_range(l, topo))
        .cloned()
        .collect()
}

/// Whether a line is about this test: an address within the topology's ranges,
/// and not from a namespace of someone else (a concurrent run of the same test
/// binary, or of another checkout's suite, uses the same addresses in its own
/// namespaces). Lines without a `netns` count as ours.
fn in_range(l: &Value, topo: &Topology) -> bool {
    let addr = [&l["local"], &l["peer"]]
        .iter()
        .any(|e| line_ip(e).is_some_and(|ip| topo.addrs.owns(ip)));
    addr && l["netns"]
        .as_u64()
        .is_none_or(|ns| ns == 0 || topo.netns_inodes().contains(&ns))
}

/// Whether a line came from one of `topo`'s namespaces (or carries none).
pub fn from_topology(l: &Value, topo: &Topology) -> bool {
    l["netns"]
        .as_u64()
        .is_none_or(|ns| ns == 0 || topo.netns_inodes().contains(&ns))
}

/// The project's standard verdict assertion: for each `(socket, verdict,
/// confidences)` the verdict lines about that socket with that name have exactly
/// those confidences, in that order (so `&["medium", "high"]` means two lines;
/// `&[]` means none); and every verdict line within `topo`'s ranges is one of
/// them: nothing else was said about any socket or unknown flow of the test.
/// Returns the verdict lines within the ranges.
pub fn assert_verdicts(out: &Output, topo: &Topology, expected: &[Expect]) -> Vec<Value> {
    let ours = verdicts_in(out, topo);
    let mut problems = Vec::new();
    for (sel, name, want) in expected {
        let got: Vec<&str> = ours
            .iter()
            .filter(|l| l["verdict"] == *name && sel.matches(l))
            .map(|l| l["confidence"].as_str().unwrap_or("?"))
            .collect();
        if got != *want {
            problems.push(format!(
                "{name} for {sel:?}: confidences {got:?}, expected {want:?}"
            ));
        }
    }
    let unexpected: Vec<String> = ours
        .iter()
        .filter(|l| {
            !expected
                .iter()
                .any(|(sel, name, _)| l["verdict"] == *name && sel.matches(l))
        })
        .map(brief)
        .collect();
    if !unexpected.is_empty() {
        problems.push(format!(
            "{} verdict line(s) nobody expected within the test's ranges:\n  {}",
            unexpected.len(),
            capped(&unexpected)
        ));
    }
    assert!(
        problems.is_empty(),
        "verdicts differ from the contract:\n{}",
        problems.join("\n")
    );
    ours
}

/// At most 12 lines, and how many were left out.
fn capped(lines: &[String]) -> String {
    const MAX: usize = 12;
    let mut s = lines
        .iter()
        .take(MAX)
        .cloned()
        .collect::<Vec<_>>()
        .join("\n  ");
    if lines.len() > MAX {
        s.push_str(&format!("\n  ... and {} more", lines.len() - MAX));
    }
    s
}

/// No `spoofed_ptb` anywhere in the run's output (a healthy case: every too-big
/// message was real).
pub fn assert_no_spoofed(out: &Output) {
    let spoofed: Vec<String> = out
        .lines
        .iter()
        .filter(|l| l["type"] == "verdict" && l["verdict"] == "spoofed_ptb")
        .map(brief)
        .collect();
    assert!(
        spoofed.is_empty(),
        "{} spoofed_ptb line(s) in a run whose too-big messages were all real:\n  {}",
        spoofed.len(),
        capped(&spoofed)
    );
}

/// One line: verdict, confidence, flow, owner, evidence.
pub fn brief(l: &Value) -> String {
    format!(
        "{} {} {}:{} -> {}:{} comm={} evidence={} advice={}",
        l["verdict"].as_str().unwrap_or("?"),
        l["confidence"].as_str().unwrap_or("?"),
        l["local"]["ip"].as_str().unwrap_or("?"),
        l["local"]["port"],
        l["peer"]["ip"].as_str().unwrap_or("?"),
        l["peer"]["port"],
        l["process"]["comm"],
        l["evidence"],
        l["advice"],
    )
}

/// Prints the verdict and path lines within `topo`'s ranges.
pub fn print_judgements(name: &str, out: &Output, topo: &Topology) {
    let ours = verdicts_in(out, topo);
    println!(
        "[{name}] {} verdict line(s) within the test's ranges:",
        ours.len()
    );
    for l in ours.iter().take(30) {
        println!("[{name}]   {}", brief(l));
    }
    if ours.len() > 30 {
        println!("[{name}]   ... and {} more", ours.len() - 30);
    }
    // For the post-mortem of a failure: what was said elsewhere, and what was lost.
    let others: Vec<&Value> = out
        .lines
        .iter()
        .filter(|l| l["type"] == "verdict" && !in_range(l, topo))
        .collect();
    println!(
        "[{name}] {} verdict line(s) outside the ranges",
        others.len()
    );
    for l in others.iter().take(10) {
        println!("[{name}]   elsewhere: {} netns={}", brief(l), l["netns"]);
    }
    for l in out.of_type("loss") {
        println!("[{name}]   loss {l}");
    }
    for p in out.of_type("path") {
        if p["sockets"]
            .as_array()
            .is_some_and(|s| s.iter().any(|s| in_range(s, topo)))
            || p["destination"].as_str().is_some_and(|d| {
                d.split('/')
                    .next()
                    .and_then(|ip| ip.parse().ok())
                    .is_some_and(|ip| topo.addrs.owns(ip))
            })
        {
            println!("[{name}]   path {p}");
        }
    }
}
