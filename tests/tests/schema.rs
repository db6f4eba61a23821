//! The JSON Schemas in `schema/` against what the agent really prints: live output
//! from the real agent while real traffic makes the kernel retransmit, fail sends and
//! send too-big ICMPs between namespaces, and the replay of every recorded fixture
//! (which hold verdicts of every kind). Every line must validate against the schema
//! for its `type`; the schemas forbid unknown fields, so a renamed or added field
//! fails here until `schema/` says so too (`cargo xtask schema` regenerates it from
//! the types). Here: the checked-in files themselves (valid, strict) and every line
//! type seen; every other test's lines are validated too (`sendsight_tests::validate`).
//!
//! Topologies use nets 50..=59.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::Command,
    sync::{Mutex, OnceLock},
    time::Duration,
};

use jsonschema::Validator;
use sendsight::{filter::EVENT_TYPES, schema::LineType};
use sendsight_tests::{
    Agent, Topology,
    agent::{Output, binary},
    require_root,
    scenarios::{self, free_tcp_port, ips},
    traffic,
};
use serde_json::Value;

/// The source tree: `$SENDSIGHT_SOURCE_DIR` where the tests run without it (the kernel
/// matrix's guests ship `schema/` and the fixtures there), else this workspace.
fn repo() -> PathBuf {
    std::env::var_os("SENDSIGHT_SOURCE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".."))
}

/// Every line type the agent prints, one schema file each (the agent's own list),
/// which covers every type `--events` selects.
fn types() -> Vec<&'static str> {
    let all: Vec<&'static str> = LineType::ALL.iter().map(|t| t.name()).collect();
    for t in EVENT_TYPES {
        assert!(
            all.contains(t),
            "--events accepts {t}, which is no line type"
        );
    }
    all
}

/// Every line type but `absent` (what a run cannot produce).
fn types_but(absent: &[&str]) -> Vec<&'static str> {
    types()
        .into_iter()
        .filter(|t| !absent.contains(t))
        .collect()
}

struct Schemas {
    by_type: BTreeMap<String, Validator>,
}

/// Loads `schema/<type>.schema.json` for every type: each must itself be a valid
/// draft 2020-12 schema. Formats (`ipv4`, `ipv6`, `date-time`) are asserted.
fn schemas() -> &'static Schemas {
    static S: OnceLock<Schemas> = OnceLock::new();
    S.get_or_init(|| {
        let dir = repo().join("schema");
        let mut by_type = BTreeMap::new();
        for t in types() {
            let path = dir.join(format!("{t}.schema.json"));
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            let schema: Value = serde_json::from_str(&text)
                .unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()));
            assert_eq!(
                schema["$schema"],
                "https://json-schema.org/draft/2020-12/schema",
                "{}",
                path.display()
            );
            if let Err(e) = jsonschema::meta::validate(&schema) {
                panic!("{}: not a valid JSON Schema: {e}", path.display());
            }
            assert_eq!(
                schema["properties"]["type"]["const"],
                t,
                "{}: its `type` const must be {t}",
                path.display()
            );
            let v = jsonschema::options()
                .with_draft(jsonschema::Draft::Draft202012)
                .should_validate_formats(true)
                .build(&schema)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            by_type.insert(t.to_string(), v);
        }
        let extra: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .filter(|n| n.ends_with(".schema.json"))
            .filter(|n| !types().iter().any(|t| *n == format!("{t}.schema.json")))
            .collect();
        assert!(
            extra.is_empty(),
            "schema files for no known type: {extra:?}"
        );
        Schemas { by_type }
    })
}

/// What validating a stream of lines found.
#[derive(Default)]
struct Report {
    /// Lines validated, by type (and by verdict name for verdict lines).
    seen: BTreeMap<String, u64>,
    errors: Vec<String>,
}

impl Report {
    fn check(&mut self, origin: &str, lines: &[Value]) {
        let s = schemas();
        for line in lines {
            let Some(t) = line["type"].as_str() else {
                self.errors
                    .push(format!("{origin}: line without a type: {line}"));
                continue;
            };
            let Some(v) = s.by_type.get(t) else {
                self.errors
                    .push(format!("{origin}: no schema for type {t:?}: {line}"));
                continue;
            };
            let errs: Vec<String> = v
                .iter_errors(line)
                .map(|e| format!("at {:?}: {e}", e.instance_path().to_string()))
                .collect();
            if errs.is_empty() {
                *self.seen.entry(t.to_string()).or_default() += 1;
                if let Some(name) = line["verdict"].as_str() {
                    *self.seen.entry(format!("{t}:{name}")).or_default() += 1;
                }
            } else if self.errors.len() < 40 {
                self.errors.push(format!(
                    "{origin}: {t} line fails its schema:\n    {}\n  line: {line}",
                    errs.join("\n    ")
                ));
            }
        }
    }

    fn assert_clean(&self) {
        println!("validated: {:?}", self.seen);
        assert!(
            self.errors.is_empty(),
            "{} schema violation(s):\n{}",
            self.errors.len(),
            self.errors.join("\n")
        );
    }

    fn assert_seen<'a>(&self, kinds: impl IntoIterator<Item = &'a str>) {
        let missing: Vec<&str> = kinds
            .into_iter()
            .filter(|k| !self.seen.contains_key(*k))
            .collect();
        assert!(
            missing.is_empty(),
            "no validated line of {missing:?}; seen {:?}",
            self.seen
        );
    }
}

fn parse_lines(origin: &str, stdout: &[u8]) -> Vec<Value> {
    sendsight_tests::validate::parse_lines(origin, &String::from_utf8_lossy(stdout))
}

fn fixtures() -> Vec<PathBuf> {
    let dir = repo().join("agent/tests/fixtures");
    let mut v: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .filter_map(|e| Some(e.ok()?.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "ssrec"))
        .collect();
    v.sort();
    assert!(!v.is_empty(), "no recordings in {}", dir.display());
    v
}

fn replay(path: &Path) -> Vec<Value> {
    let out = Command::new(binary())
        .arg("replay")
        .arg(path)
        .output()
        .expect("run sendsight replay");
    assert!(
        out.status.success(),
        "replay {} failed ({}): {}",
        path.display(),
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    parse_lines(&path.display().to_string(), &out.stdout)
}

#[test]
fn every_schema_is_valid_and_strict() {
    let s = schemas();
    assert_eq!(s.by_type.len(), types().len());
    // A real line, then the same line with one field renamed, one added, one
    // removed: the schema must refuse each.
    let lines = replay(&fixtures()[0]);
    let retransmit = lines
        .iter()
        .find(|l| l["type"] == "retransmit")
        .expect("a retransmit line in the first fixture")
        .clone();
    let v = &s.by_type["retransmit"];
    assert!(v.is_valid(&retransmit), "{retransmit}");
    let mut renamed = retransmit.clone();
    let seg_len = renamed.as_object_mut().unwrap().remove("seg_len").unwrap();
    renamed["segment_len"] = seg_len;
    assert!(
        !v.is_valid(&renamed),
        "a renamed field must fail: {renamed}"
    );
    let mut added = retransmit.clone();
    added["surprise"] = Value::from(1);
    assert!(!v.is_valid(&added), "an unknown field must fail: {added}");
    let mut removed = retransmit.clone();
    removed.as_object_mut().unwrap().remove("segs");
    assert!(
        !v.is_valid(&removed),
        "a missing field must fail: {removed}"
    );
    let mut bad_ts = retransmit.clone();
    bad_ts["ts"] = Value::from("2026-11-23T09:20:01.000123Z");
    assert!(
        !v.is_valid(&bad_ts),
        "ts needs 9 fractional digits: {bad_ts}"
    );
    let mut bad_ip = retransmit;
    bad_ip["peer"]["ip"] = Value::from("198.18.1");
    assert!(!v.is_valid(&bad_ip), "an address must be one: {bad_ip}");

    // A verdict's evidence is checked per verdict, down to its fields' values.
    let verdicts: Vec<Value> = fixtures()
        .iter()
        .flat_map(|f| replay(f))
        .filter(|l| l["type"] == "verdict")
        .collect();
    let v = &s.by_type["verdict"];
    let with_errno = verdicts
        .iter()
        .find(|l| l["evidence"]["errno_name"].is_string())
        .expect("a recorded verdict with an errno name in its evidence");
    assert!(v.is_valid(with_errno), "{with_errno}");
    let mut bad_errno = with_errno.clone();
    bad_errno["evidence"]["errno_name"] = Value::from("reset");
    assert!(
        !v.is_valid(&bad_errno),
        "an errno name must be one: {bad_errno}"
    );
    let other = verdicts
        .iter()
        .find(|l| l["verdict"] != with_errno["verdict"])
        .expect("a verdict of another kind");
    let mut swapped = with_errno.clone();
    swapped["evidence"] = other["evidence"].clone();
    assert!(
        !v.is_valid(&swapped),
        "{} evidence under a {} verdict must fail",
        other["verdict"],
        with_errno["verdict"]
    );
}

/// `sendsight replay` over every recorded fixture: verdicts of every kind.
#[test]
fn replayed_fixtures_match_the_schemas() {
    let mut report = Report::default();
    for f in fixtures() {
        let lines = replay(&f);
        assert!(
            lines.last().is_some_and(|l| l["type"] == "summary"),
            "{}: the summary must come last",
            f.display()
        );
        report.check(&f.display().to_string(), &lines);
    }
    report.assert_clean();
    // Line types no recorded scenario holds.
    let absent = ["start", "send_error", "connect_error", "udp_send", "loss"];
    report.assert_seen(types_but(&absent).into_iter().chain([
        "verdict:pmtud_blackhole",
        "verdict:pmtud_ok",
        "verdict:blackhole_recovered",
        "verdict:packet_loss",
        "verdict:path_down",
        "verdict:spoofed_ptb",
    ]));
}

/// Live tests run one at a time: the flood of one must not overrun the other's ring.
fn serial() -> std::sync::MutexGuard<'static, ()> {
    static M: Mutex<()> = Mutex::new(());
    M.lock().unwrap_or_else(|e| e.into_inner())
}

fn lossy_bulk(topo: &Topology, v6: bool) {
    let (_, server_ip) = ips(topo, v6);
    let port = free_tcp_port(&topo.server, server_ip);
    let server = SocketAddr::new(server_ip, port);
    topo.server
        .nft(&sendsight_tests::scenarios::drop_every_seventh_data_packet(
            port,
        ));
    let sink = traffic::sink_server(&topo.server, server, 1);
    let stream = topo
        .client
        .run("ss-schema-bulk", move || {
            traffic::send_bulk(server, 1 << 20, Duration::from_secs(60))
        })
        .join()
        .expect("bulk sender");
    let info = traffic::tcp_info(&stream);
    assert!(info.total_retrans > 0, "no retransmit: {info:?}");
    drop(stream);
    let _ = sink.join();
    topo.server
        .exec("nft", &["delete", "table", "inet", "loss"]);
}

fn stopped(mut agent: Agent) -> Output {
    std::thread::sleep(Duration::from_millis(300));
    let out = agent.stop();
    assert!(
        out.status.success(),
        "agent exited {}: {}",
        out.status,
        out.stderr
    );
    out
}

/// The real agent while the kernel retransmits (v4 and v6), receives and sends
/// too-big ICMPs, fails sends (reset, seccomp ECOMM, user timeout), and a UDP
/// server's receive queue overflows.
#[test]
fn live_output_matches_the_schemas() {
    require_root();
    let _serial = serial();
    let routed = Topology::routed(50, 1400);
    let direct = Topology::direct(51);
    let agent = Agent::start(&[]);

    lossy_bulk(&direct, false);
    lossy_bulk(&direct, true);
    scenarios::too_big_received(&routed, false);
    scenarios::too_big_received(&routed, true);
    scenarios::epipe_after_reset(&routed, false);
    scenarios::epipe_after_reset(&routed, true);
    scenarios::ecomm_via_seccomp(&routed, false);
    scenarios::etimedout_user_timeout(&direct, false);
    scenarios::udp_queue_overflow(&direct, 300);

    let out = stopped(agent);
    let mut report = Report::default();
    report.check("live", &out.lines);
    report.assert_clean();
    // Line types these scenarios do not make, and those whose probe this kernel
    // lacks (5.10 has no tcp_cong_state_set), as the run's start line says.
    let mut absent = vec!["connect_error", "udp_send", "path", "loss"];
    let unavailable = unavailable_line_types(&out.lines);
    println!("line types whose probe is unavailable here: {unavailable:?}");
    absent.extend(unavailable);
    report.assert_seen(types_but(&absent));
}

/// Line types named like a probe the start line reports unavailable because its
/// tracepoint does not exist on this kernel (a probe that failed to attach is no
/// excuse).
fn unavailable_line_types(lines: &[Value]) -> Vec<&'static str> {
    let start = lines
        .iter()
        .find(|l| l["type"] == "start")
        .expect("a start line");
    let probes = start["probes"].as_array().expect("the start line's probes");
    types()
        .into_iter()
        .filter(|t| {
            probes.iter().any(|p| {
                p["probe"] == *t
                    && p["state"] == "unavailable"
                    && p["note"]
                        .as_str()
                        .is_some_and(|n| n.contains("does not exist on this kernel"))
            })
        })
        .collect()
}

/// `loss` lines: a 4 KiB ring and a flood of send failures overrun it (as in
/// tests/tests/flood.rs). Also covers send errors on sockets that never connected.
#[test]
fn live_loss_lines_match_the_schema() {
    require_root();
    let _serial = serial();
    let topo = Topology::direct(52);
    let agent = Agent::start(&["--ring-bytes", "4096"]);
    topo.client
        .run("ss-schema-flood", || {
            // SAFETY: plain socket calls on a socket we own.
            let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
            assert!(s >= 0);
            let buf = [0u8; 64];
            for _ in 0..20_000 {
                let r =
                    unsafe { libc::send(s, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
                assert_eq!(r, -1);
            }
            unsafe { libc::close(s) };
        })
        .join()
        .unwrap();
    // Loss is polled every second: let one poll see it before stopping.
    std::thread::sleep(Duration::from_millis(1200));
    let out = stopped(agent);
    let mut report = Report::default();
    report.check("live (flood)", &out.lines);
    report.assert_clean();
    report.assert_seen(["start", "send_error", "loss", "summary"]);
}
