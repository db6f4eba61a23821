//! The agent runs without root: as nobody (uid 65534) with only the minimal
//! capability set, given as ambient capabilities, it attaches every probe root
//! attaches and reports a real retransmit exactly; with any one of those
//! capabilities taken away it refuses up front (exit 77) with one line naming it.
//!
//! The minimal set, found by running the agent under setpriv with smaller and smaller
//! sets (README, "Privileges"): CAP_BPF, CAP_PERFMON, and CAP_DAC_READ_SEARCH
//! because tracefs is mounted root-only (mode 0700). Mounting tracefs would also need
//! CAP_SYS_ADMIN: these tests mount it first, as a deployment should. Before 5.11
//! the kernel charges map memory to RLIMIT_MEMLOCK: there, with the 64 KiB limit
//! these tests give the agent (Linux's default before 5.16), the set also needs
//! CAP_SYS_RESOURCE; from 5.11 the same limit must not matter.
//!
//! Topologies use nets 60..=61.

use std::{
    net::SocketAddr,
    os::unix::{fs::PermissionsExt, process::CommandExt as _},
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use sendsight_tests::{
    Agent, Topology,
    agent::{Output, binary},
    require_root,
    scenarios::{free_tcp_port, ips},
    sh, traffic,
};
use serde_json::Value;

const NOBODY: u32 = 65534;
/// The memlock limit the agent gets (soft and hard): Linux's default before 5.16.
const MEMLOCK: u64 = 64 << 10;

/// Does this kernel charge map memory to RLIMIT_MEMLOCK (before 5.11)?
fn charges_memlock() -> bool {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let mut v = release
        .trim()
        .split(['.', '-'])
        .map(|p| p.parse::<u32>().unwrap_or(0));
    let (major, minor) = (v.next().unwrap_or(0), v.next().unwrap_or(0));
    (major, minor) < (5, 11)
}

/// The minimal set on this kernel, in setpriv's names (capabilities(7) without the
/// CAP_ prefix, lower case).
fn minimal() -> Vec<&'static str> {
    let mut set = vec!["bpf", "perfmon", "dac_read_search"];
    if charges_memlock() {
        set.push("sys_resource");
    }
    set
}

fn cap_number(name: &str) -> u32 {
    match name {
        "dac_read_search" => 2,
        "sys_resource" => 24,
        "perfmon" => 38,
        "bpf" => 39,
        _ => panic!("unknown capability {name}"),
    }
}

const TRACEFS: &str = "/sys/kernel/tracing";

/// The deployment's precondition: tracefs mounted (by root, at boot).
fn ensure_tracefs_mounted() {
    if !Path::new(TRACEFS).join("events").is_dir() {
        sh("mount", &["-t", "tracefs", "nodev", TRACEFS]);
    }
}

/// Can anyone but root look inside tracefs? (Then CAP_DAC_READ_SEARCH is not needed.)
fn tracefs_open_to_others() -> bool {
    std::fs::metadata(TRACEFS)
        .map(|m| m.permissions().mode() & 0o005 == 0o005)
        .unwrap_or(false)
}

/// A copy of the agent binary that nobody can execute, wherever the checkout lives
/// (a home directory may be closed to other users). Removed on drop.
struct NobodyBinary {
    dir: PathBuf,
    bin: PathBuf,
}

impl NobodyBinary {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("sendsight-caps-{}-{tag}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
        let bin = dir.join("sendsight");
        std::fs::copy(binary(), &bin).expect("copy the agent binary");
        std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
        NobodyBinary { dir, bin }
    }
}

impl Drop for NobodyBinary {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `setpriv` to nobody with exactly `caps` as inheritable, ambient and bounding sets:
/// after exec the agent's effective set is `caps` and nothing else, and its memlock
/// limit is [`MEMLOCK`].
fn as_nobody(bin: &Path, caps: &[&str], args: &[&str]) -> Command {
    let list: String = std::iter::once("-all".to_string())
        .chain(caps.iter().map(|c| format!("+{c}")))
        .collect::<Vec<_>>()
        .join(",");
    let mut c = Command::new("setpriv");
    c.arg(format!("--reuid={NOBODY}"))
        .arg(format!("--regid={NOBODY}"))
        .arg("--clear-groups")
        .arg(format!("--inh-caps={list}"))
        .arg(format!("--ambient-caps={list}"))
        .arg(format!("--bounding-set={list}"))
        .arg(bin)
        .args(args);
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        c.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: MEMLOCK,
                rlim_max: MEMLOCK,
            };
            if libc::setrlimit(libc::RLIMIT_MEMLOCK, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    c
}

/// `Uid:` and `CapEff:` of a running process.
fn identity(pid: u32) -> (String, u64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .unwrap_or_else(|| panic!("no {name} in /proc/{pid}/status"))
            .trim()
            .to_string()
    };
    let cap_eff = u64::from_str_radix(&field("CapEff:"), 16).unwrap();
    (field("Uid:"), cap_eff)
}

/// Probe -> state, as root's `sendsight check --json` sees this kernel.
fn probe_states_as_root() -> Vec<(String, String)> {
    let out = Command::new(binary())
        .args(["check", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "check as root failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).expect("check --json is JSON");
    states(&v["probes"])
}

fn states(probes: &Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = probes
        .as_array()
        .expect("a probes array")
        .iter()
        .map(|p| {
            (
                p["probe"].as_str().unwrap().to_string(),
                p["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn nobody_with_the_minimal_set_attaches_everything_and_sees_retransmits() {
    require_root();
    ensure_tracefs_mounted();
    let root_states = probe_states_as_root();
    let topo = Topology::direct(60);
    let (client_ip, server_ip) = ips(&topo, false);
    let port = free_tcp_port(&topo.server, server_ip);
    let server = SocketAddr::new(server_ip, port);
    topo.server
        .nft(&sendsight_tests::scenarios::drop_every_seventh_data_packet(
            port,
        ));

    let bin = NobodyBinary::new("minimal");
    let minimal = minimal();
    // setpriv execs the agent: the child's pid is the agent's.
    let mut agent = Agent::spawn(as_nobody(&bin.bin, &minimal, &["run"]), true);
    // It really is nobody, with exactly the minimal set in effect.
    let (uid, cap_eff) = identity(agent.pid());
    let want: u64 = minimal.iter().map(|c| 1u64 << cap_number(c)).sum();
    assert!(
        uid.split_whitespace().all(|u| u == NOBODY.to_string()),
        "Uid: {uid}"
    );
    assert_eq!(cap_eff, want, "CapEff {cap_eff:#x}, expected {want:#x}");

    let sink = traffic::sink_server(&topo.server, server, 1);
    let (stream, info, local) = topo
        .client
        .run("ss-caps-bulk", move || {
            let s = traffic::send_bulk(server, 2 << 20, Duration::from_secs(60));
            let info = traffic::tcp_info(&s);
            let local = s.local_addr().unwrap();
            (s, info, local)
        })
        .join()
        .expect("bulk sender");
    std::thread::sleep(Duration::from_millis(300));
    let Output {
        status,
        lines,
        stderr,
    } = agent.stop();
    drop(stream);
    let _ = sink.join();

    assert!(status.success(), "agent exited {status}: {stderr}");
    let start = lines
        .iter()
        .find(|l| l["type"] == "start")
        .expect("a start line");
    let ours = states(&start["probes"]);
    println!("probes as nobody: {ours:?}");
    assert_eq!(
        ours, root_states,
        "as nobody with {minimal:?} the probes must end up as they do for root"
    );
    // What a kernel lacks is unavailable for root too (compared above); the core
    // probes must be there on every kernel.
    for core in ["retransmit", "send_syscall"] {
        assert!(
            ours.iter().any(|(p, s)| p == core && s != "unavailable"),
            "{core} not attached as nobody: {ours:?}\n{stderr}"
        );
    }

    assert!(
        info.total_retrans > 0,
        "the nft rule caused no retransmit: {info:?}"
    );
    let mine: Vec<&Value> = lines
        .iter()
        .filter(|l| {
            l["type"] == "retransmit"
                && l["local"]["ip"] == client_ip.to_string()
                && l["local"]["port"] == local.port()
        })
        // Attempts the kernel refused before sending (err -EBUSY under load, -ENOMEM)
        // are reported with their err but not counted by the kernel (as in
        // retransmit.rs).
        .filter(|l| l["err"] != -16 && l["err"] != -12)
        .collect();
    let segs: u64 = mine.iter().map(|l| l["segs"].as_u64().unwrap()).sum();
    println!(
        "kernel total_retrans={} agent retransmit lines={} segs={segs}",
        info.total_retrans,
        mine.len()
    );
    assert_eq!(
        segs, info.total_retrans as u64,
        "the agent's retransmitted segments for {local} differ from the kernel's count"
    );
    for l in &mine {
        assert_eq!(l["peer"]["port"], port, "{l}");
        assert_eq!(l["process"]["comm"], "ss-caps-bulk", "{l}");
        assert!(
            l["mss"].as_u64().is_some(),
            "kernel memory was readable: {l}"
        );
    }
    let summary = lines
        .iter()
        .find(|l| l["type"] == "summary")
        .expect("a summary line");
    assert_eq!(summary["lost_total"], 0, "{summary}");
}

#[test]
fn one_capability_fewer_is_refused_naming_it() {
    require_root();
    ensure_tracefs_mounted();
    let bin = NobodyBinary::new("fewer");
    let minimal = minimal();
    for &missing in &minimal {
        let caps: Vec<&str> = minimal.iter().copied().filter(|c| *c != missing).collect();
        let out = as_nobody(&bin.bin, &caps, &["run", "--duration", "1s"])
            .output()
            .expect("setpriv (util-linux) is needed");
        let stderr = String::from_utf8_lossy(&out.stderr);
        if missing == "dac_read_search" && tracefs_open_to_others() {
            // Not needed where tracefs is mounted open to everyone.
            assert!(out.status.success(), "without {missing}: {out:?}");
            continue;
        }
        let lines: Vec<&str> = stderr.lines().collect();
        let name = format!("CAP_{}", missing.to_uppercase());
        println!("without {name}: {stderr}");
        assert_eq!(out.status.code(), Some(77), "without {name}: {out:?}");
        assert_eq!(
            lines.len(),
            1,
            "one line expected without {name}, got {lines:?}"
        );
        assert!(lines[0].contains("missing privileges"), "{lines:?}");
        assert!(
            lines[0].contains(&format!("lacks {name}")),
            "the line must name {name}: {lines:?}"
        );
        assert!(out.stdout.is_empty(), "nothing on stdout when refused");
    }
    // `check` tells the same story, and passes with the minimal set.
    let out = as_nobody(&bin.bin, &minimal, &["check"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "check with {minimal:?}: {text}{out:?}"
    );
    assert!(text.contains("capabilities  ok"), "{text}");
}
