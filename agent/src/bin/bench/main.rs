//! `sendsight-bench`: the measurements behind BENCHMARKS.md (run it with
//! `cargo xtask bench`). Every figure is a ratio taken in one run on one machine,
//! because absolute nanoseconds on shared VMs are noise:
//!
//! 1. per-program cost from the kernel's own BPF statistics (run_time / run_cnt),
//!    the agent's programs next to a floor program and bpftrace on the same
//!    tracepoints, under iperf3 loopback TCP and UDP load, plus retransmits;
//! 2. loopback TCP throughput with the agent running vs not, alternating;
//! 3. agent CPU time vs bpftrace's over the same load;
//! 4. the userspace pipeline on a synthetic recording (also: `cargo bench`);
//! 5. the highest send-error rate delivered with zero loss at the default ring,
//!    and counted loss above it with a tiny ring;
//! 6. memory: the engine's RSS with 100k sockets, kernel map memory at 100k.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    io::Write,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use aya::{
    programs::loaded_programs,
    sys::{Stats, enable_stats},
};
use floor::At;
use sendsight::{
    decode::encode,
    record::{Header as RecHeader, Recorder},
    synthetic,
};

mod floor;
mod tax;

fn sh(cmd: &str, args: &[&str]) -> anyhow::Result<String> {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .with_context(|| format!("running {cmd}"))?;
    if !out.status.success() {
        bail!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[derive(Clone, Copy, Default)]
struct Stat {
    ns: u64,
    cnt: u64,
}

fn snapshot() -> HashMap<u32, (String, Stat)> {
    loaded_programs()
        .filter_map(Result::ok)
        .map(|p| {
            (
                p.id(),
                (
                    p.name_as_str().unwrap_or("?").to_string(),
                    Stat {
                        ns: p.run_time().as_nanos() as u64,
                        cnt: p.run_count(),
                    },
                ),
            )
        })
        .collect()
}

fn ids() -> HashSet<u32> {
    snapshot().into_keys().collect()
}

/// Waits until at least `n` programs appeared that were not in `before`.
fn new_ids(before: &HashSet<u32>, n: usize) -> anyhow::Result<HashSet<u32>> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let now: HashSet<u32> = ids().difference(before).copied().collect();
        if now.len() >= n {
            std::thread::sleep(Duration::from_millis(300));
            return Ok(ids().difference(before).copied().collect());
        }
        if Instant::now() > deadline {
            bail!("only {} of {n} programs appeared", now.len());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|s| s.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 (1-based), i.e. 11 and 12 after ')'.
    (ticks(11) + ticks(12)) / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

fn rss_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn agent_bin() -> PathBuf {
    std::env::current_exe()
        .expect("current exe")
        .with_file_name("sendsight")
}

/// Starts the agent and returns once it says it is tracing (every program loaded and
/// attached): a timing must not overlap its start-up, whose verification is CPU work.
fn start_agent(args: &[&str]) -> anyhow::Result<Child> {
    use std::io::BufRead;
    let mut child = Command::new(agent_bin())
        .arg("run")
        .args(args)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("starting sendsight")?;
    let stderr = child.stderr.take().context("the agent's stderr")?;
    let (ready, wait) = std::sync::mpsc::channel();
    // Drains stderr for the agent's whole life (a full pipe would block it).
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            if line.starts_with("sendsight: tracing") {
                let _ = ready.send(());
            }
        }
    });
    wait.recv_timeout(Duration::from_secs(60))
        .context("the agent did not start tracing within 60 s")?;
    Ok(child)
}

fn stop(mut c: Child) {
    unsafe { libc::kill(c.id() as i32, libc::SIGINT) };
    let _ = c.wait();
}

/// iperf3 on loopback; returns bits per second.
fn iperf(udp: bool, secs: u32) -> anyhow::Result<f64> {
    let mut server = Command::new("iperf3")
        .args(["-s", "-1", "-p", "52011", "-B", "127.0.0.1"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("iperf3 (Debian's iperf3; `cargo xtask setup` installs it)")?;
    std::thread::sleep(Duration::from_millis(300));
    let t = secs.to_string();
    let mut args = vec!["-c", "127.0.0.1", "-p", "52011", "-t", &t, "-J"];
    if udp {
        args.extend(["-u", "-b", "4G", "-l", "1400"]);
    }
    let out = sh("iperf3", &args)?;
    let _ = server.wait();
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let bps = v["end"]["sum_received"]["bits_per_second"]
        .as_f64()
        .or_else(|| v["end"]["sum"]["bits_per_second"].as_f64())
        .unwrap_or(0.0);
    Ok(bps)
}

/// Removes a namespace of ours if it is there (a run killed before its cleanup).
fn del_netns(name: &str) {
    let _ = Command::new("ip")
        .args(["netns", "del", name])
        .stderr(Stdio::null())
        .status();
}

/// A pair of namespaces with every 7th data packet dropped: retransmits on demand.
struct Lossy;

impl Lossy {
    fn new() -> anyhow::Result<Self> {
        del_netns("ssb-c");
        del_netns("ssb-s");
        sh("ip", &["netns", "add", "ssb-c"])?;
        sh("ip", &["netns", "add", "ssb-s"])?;
        sh(
            "ip",
            &[
                "link", "add", "eth0", "netns", "ssb-c", "type", "veth", "peer", "name", "eth0",
                "netns", "ssb-s",
            ],
        )?;
        for (ns, a) in [("ssb-c", "198.18.250.2/24"), ("ssb-s", "198.18.250.1/24")] {
            sh("ip", &["-n", ns, "addr", "add", a, "dev", "eth0"])?;
            sh("ip", &["-n", ns, "link", "set", "eth0", "up"])?;
            sh("ip", &["-n", ns, "link", "set", "lo", "up"])?;
        }
        let mut nft = Command::new("ip")
            .args(["netns", "exec", "ssb-s", "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .spawn()?;
        nft.stdin.take().unwrap().write_all(
            b"table inet l { chain i { type filter hook input priority 0; policy accept;\n\
              tcp dport 5201 meta length > 200 numgen inc mod 7 == 0 drop; }\n}\n",
        )?;
        nft.wait()?;
        Ok(Lossy)
    }

    /// iperf3 through the lossy link for `secs`.
    fn run(&self, secs: u32) -> anyhow::Result<()> {
        let mut server = Command::new("ip")
            .args(["netns", "exec", "ssb-s", "iperf3", "-s", "-1", "-p", "5201"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        std::thread::sleep(Duration::from_millis(300));
        sh(
            "ip",
            &[
                "netns",
                "exec",
                "ssb-c",
                "iperf3",
                "-c",
                "198.18.250.1",
                "-p",
                "5201",
                "-t",
                &secs.to_string(),
            ],
        )?;
        let _ = server.wait();
        Ok(())
    }
}

impl Drop for Lossy {
    fn drop(&mut self) {
        del_netns("ssb-c");
        del_netns("ssb-s");
    }
}

const BPFTRACE: &str = r#"
tracepoint:sock:sock_send_length { @bytes[args->sk] = sum(args->ret); @calls[args->sk] = count(); }
tracepoint:net:netif_receive_skb { @rx = count(); }
tracepoint:tcp:tcp_retransmit_skb { printf("%d %d\n", args->sport, args->dport); }
"#;

struct Costs {
    rows: Vec<(String, String, f64, u64)>,
    agent_cpu: f64,
    bpftrace_cpu: f64,
}

fn program_costs(secs: u32) -> anyhow::Result<Costs> {
    // Only for this section: statistics add two clock reads to every program run,
    // which the timings of the other sections must not carry.
    let _stats = enable_stats(Stats::RunTime).context("enabling BPF run-time statistics")?;
    let before = ids();
    let agent = start_agent(&["--output", "file:/dev/null"])?;
    let agent_ids = new_ids(&before, 8)?;

    // The floors: one direct context load each, classic (the reference) and raw
    // (the same hooks the agent uses), attached alongside over the same load.
    let before = ids();
    let mut floor = floor::load()?;
    for (prog, at) in [
        ("floor_send", At::Classic("sock", "sock_send_length")),
        ("floor_rx", At::Classic("net", "netif_receive_skb")),
        ("floor_send_raw", At::Raw("sock_send_length")),
        ("floor_rx_raw", At::Raw("netif_receive_skb")),
    ] {
        floor::attach(&mut floor, prog, at)?;
    }
    let floor_ids = new_ids(&before, 4)?;

    let before = ids();
    let mut bt = Command::new("bpftrace")
        .args(["-e", BPFTRACE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("bpftrace (Debian's bpftrace; `cargo xtask setup` installs it)")?;
    let bt_ids = new_ids(&before, 3)?;

    let lossy = Lossy::new()?;
    let s0 = snapshot();
    let (a0, b0) = (cpu_seconds(agent.id()), cpu_seconds(bt.id()));
    iperf(false, secs)?;
    iperf(true, secs)?;
    lossy.run(secs)?;
    let s1 = snapshot();
    let (a1, b1) = (cpu_seconds(agent.id()), cpu_seconds(bt.id()));
    drop(lossy);
    let _ = bt.kill();
    let _ = bt.wait();
    drop(floor);
    stop(agent);

    let mut rows = Vec::new();
    for (owner, set) in [
        ("sendsight", &agent_ids),
        ("floor", &floor_ids),
        ("bpftrace", &bt_ids),
    ] {
        for id in set {
            let (Some((name, a)), Some((_, b))) = (s0.get(id), s1.get(id)) else {
                continue;
            };
            let cnt = b.cnt - a.cnt;
            let avg = if cnt > 0 {
                (b.ns - a.ns) as f64 / cnt as f64
            } else {
                0.0
            };
            rows.push((owner.to_string(), name.clone(), avg, cnt));
        }
    }
    rows.sort_by(|a, b| (&a.0, &a.1).cmp(&(&b.0, &b.1)));
    Ok(Costs {
        rows,
        agent_cpu: a1 - a0,
        bpftrace_cpu: b1 - b0,
    })
}

fn throughput(pairs: usize, secs: u32) -> anyhow::Result<Vec<(f64, f64)>> {
    let mut out = Vec::new();
    let with_agent = || -> anyhow::Result<f64> {
        let agent = start_agent(&["--output", "file:/dev/null"])?;
        let bps = iperf(false, secs)?;
        stop(agent);
        std::thread::sleep(Duration::from_millis(300));
        Ok(bps)
    };
    // ABBA: which side runs first alternates, so drift favours neither.
    for i in 0..pairs {
        let (with, without) = if i % 2 == 0 {
            let w = with_agent()?;
            (w, iperf(false, secs)?)
        } else {
            let wo = iperf(false, secs)?;
            (with_agent()?, wo)
        };
        out.push((with, without));
    }
    Ok(out)
}

/// Floods failing send() calls from `threads` threads for `secs`; returns attempts.
fn flood(threads: usize, secs: f64, per_thread_rate: Option<u64>) -> u64 {
    let stop = Arc::new(AtomicBool::new(false));
    let total = Arc::new(AtomicU64::new(0));
    let hs: Vec<_> = (0..threads)
        .map(|_| {
            let (stop, total) = (stop.clone(), total.clone());
            std::thread::spawn(move || {
                let s = unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0) };
                let buf = [0u8; 64];
                let start = Instant::now();
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    if let Some(rate) = per_thread_rate {
                        let due = (start.elapsed().as_secs_f64() * rate as f64) as u64;
                        if n >= due {
                            std::hint::spin_loop();
                            continue;
                        }
                    }
                    unsafe { libc::send(s, buf.as_ptr().cast(), 64, libc::MSG_NOSIGNAL) };
                    n += 1;
                }
                unsafe { libc::close(s) };
                total.fetch_add(n, Ordering::Relaxed);
            })
        })
        .collect();
    std::thread::sleep(Duration::from_secs_f64(secs));
    stop.store(true, Ordering::Relaxed);
    for h in hs {
        let _ = h.join();
    }
    total.load(Ordering::Relaxed)
}

/// Agent summary after a flood: (delivered send_error events, lost send_error).
fn flood_run(
    ring: Option<&str>,
    threads: usize,
    rate: Option<u64>,
) -> anyhow::Result<(u64, u64, u64, u64)> {
    let out = std::env::temp_dir().join(format!("sendsight-bench-{}.jsonl", std::process::id()));
    let _ = std::fs::remove_file(&out);
    let spec = format!("file:{}", out.display());
    let mut args = vec!["--output", spec.as_str(), "--events", "loss"];
    if let Some(r) = ring {
        args.extend(["--ring-bytes", r]);
    }
    let before = ids();
    let agent = start_agent(&args)?;
    new_ids(&before, 8)?;
    let pid = agent.id();
    let attempts = flood(threads, 2.0, rate);
    std::thread::sleep(Duration::from_millis(500));
    let hwm = rss_kib(pid, "VmHWM:");
    stop(agent);
    let text = std::fs::read_to_string(&out)?;
    let summary: serde_json::Value =
        serde_json::from_str(text.lines().last().context("no summary")?)?;
    let delivered = summary["events"]["send_error"].as_u64().unwrap_or(0);
    let lost = summary["lost"]["send_error"].as_u64().unwrap_or(0);
    let _ = std::fs::remove_file(&out);
    Ok((attempts, delivered, lost, hwm))
}

/// A recording with `sockets` distinct sockets (a retransmit and a send error each).
fn synthetic(path: &Path, sockets: u64, per_socket: u64) -> anyhow::Result<u64> {
    let mut r = Recorder::create(
        path,
        &RecHeader {
            agent_version: "bench".into(),
            kernel: "synthetic".into(),
            clock_offset_ns: 1_700_000_000_000_000_000,
            hz: Some(250),
            host: None,
        },
        0,
    )?;
    let mut n = 0;
    for i in 0..sockets {
        for k in 0..per_socket {
            let ts = 1_000_000 + (i * per_socket + k) * 1000;
            r.write(&encode(&synthetic::retransmit(i, k, ts)))?;
            n += 1;
            if k == per_socket - 1 {
                r.write(&encode(&synthetic::send_error(i, ts + 1)))?;
                n += 1;
            }
        }
    }
    r.flush()?;
    Ok(n)
}

/// Runs `sendsight replay` on `path`; returns (seconds, max RSS KiB).
fn replay_cost(path: &Path, extra: &[&str]) -> anyhow::Result<(f64, u64)> {
    let t = Instant::now();
    let child = Command::new(agent_bin())
        .arg("replay")
        .arg(path)
        .args(extra)
        .stdout(Stdio::null())
        .spawn()?;
    // wait4: this child's own peak RSS (RUSAGE_CHILDREN would be the max of all).
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let mut status = 0;
    let r = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut ru) };
    let secs = t.elapsed().as_secs_f64();
    if r < 0 || !libc::WIFEXITED(status) || libc::WEXITSTATUS(status) != 0 {
        bail!("replay failed: status {status}");
    }
    Ok((secs, ru.ru_maxrss as u64))
}

/// Kernel memory of the agent's maps (fdinfo memlock), by map name.
fn map_memory(pid: u32) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
        return out;
    };
    for e in dir.flatten() {
        let info = std::fs::read_to_string(e.path()).unwrap_or_default();
        let get = |k: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(k))
                .map(|v| v.trim().to_string())
        };
        if let (Some(ty), Some(mem)) = (get("map_type:"), get("memlock:")) {
            let id = get("map_id:").unwrap_or_default();
            *out.entry(format!("type {ty} (id {id})")).or_default() +=
                mem.parse::<u64>().unwrap_or(0);
        }
    }
    out
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() -> anyhow::Result<()> {
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmarks load eBPF programs and create namespaces: run as root");
    }
    let quick = std::env::args().any(|a| a == "--quick");
    if std::env::args().any(|a| a == "--tax-only") {
        // The kernel matrix runs this inside a guest (`cargo xtask vmtest --bench-tax`).
        print!("{}", tax::guest_table()?);
        return Ok(());
    }
    if let Some(path) = std::env::args().skip_while(|a| a != "--synthetic").nth(1) {
        // Just write a recording (for profiling `sendsight replay`): the pipeline one,
        // or with `--sockets N` the memory one (N sockets, one event each).
        let n = match std::env::args().skip_while(|a| a != "--sockets").nth(1) {
            Some(n) => synthetic(Path::new(&path), n.parse()?, 1)?,
            None => synthetic(Path::new(&path), 20_000, 50)?,
        };
        eprintln!("wrote {n} events to {path}");
        return Ok(());
    }
    let secs = if quick { 2 } else { 5 };
    let mut md = String::new();
    let kernel = sendsight::system::kernel_release();
    md += &format!(
        "Machine: {} cores, kernel {kernel}, {}. Load: iperf3 loopback TCP {secs} s + UDP \
         {secs} s, then TCP through a veth pair dropping every 7th data packet for {secs} s.\n\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        if quick { "quick mode" } else { "full mode" }
    );

    eprintln!("bench: 1/6 per-program cost (BPF stats)...");
    let c = program_costs(secs)?;
    md += "### 1. Per-program cost (kernel BPF statistics, ns per run)\n\n\
           | owner | program | ns/run | runs |\n|---|---|---:|---:|\n";
    for (o, n, avg, cnt) in &c.rows {
        md += &format!("| {o} | {n} | {avg:.1} | {cnt} |\n");
    }
    let find = |owner: &str, prefix: &str| {
        c.rows
            .iter()
            .find(|r| r.0 == owner && r.1.starts_with(prefix))
            .map(|r| r.2)
            .unwrap_or(f64::NAN)
    };
    let exact = |owner: &str, name: &str| {
        c.rows
            .iter()
            .find(|r| r.0 == owner && r.1 == name)
            .map(|r| r.2)
            .unwrap_or(f64::NAN)
    };
    let floor_rx = exact("floor", "floor_rx");
    let floor_send = exact("floor", "floor_send");
    let floor_rx_raw = exact("floor", "floor_rx_raw");
    let floor_send_raw = exact("floor", "floor_send_raw");
    // The receive hook under whichever variant the kernel took (tp_btf, raw, classic).
    let rx = find("sendsight", "netif_rx_");
    let send = find("sendsight", "sock_send_raw");
    let rt = find("sendsight", "retransmit_raw").min(find("sendsight", "tcp_retransmit_"));
    let bt_rows: Vec<&(String, String, f64, u64)> =
        c.rows.iter().filter(|r| r.0 == "bpftrace").collect();
    md += &format!(
        "\nRatios to the floor (classic tracepoint, one direct load): receive hook \
         **{:.2}x**, send path **{:.2}x** (target <= 1.3x each). To the raw floor (the same \
         raw tracepoint, one direct load): receive {:.2}x, send {:.2}x. bpftrace programs: \
         {}.\n\n",
        rx / floor_rx,
        send / floor_send,
        rx / floor_rx_raw,
        send / floor_send_raw,
        bt_rows
            .iter()
            .map(|r| format!("{} {:.1} ns ({} runs)", r.1, r.2, r.3))
            .collect::<Vec<_>>()
            .join("; ")
    );
    md += &format!(
        "Per-program ratios to bpftrace are read off the table by matching run counts \
         (send: same count as sock_send_length; rx: as netif_receive_skb; retransmit: as \
         tcp_retransmit_skb). Retransmit path: {rt:.1} ns/run.\n\n"
    );
    md += &format!(
        "### 3. Agent CPU vs bpftrace over the same load\n\nsendsight {:.2} s CPU, bpftrace \
         {:.2} s CPU: ratio **{:.2}x**.\n\n",
        c.agent_cpu,
        c.bpftrace_cpu,
        c.agent_cpu / c.bpftrace_cpu.max(1e-9)
    );

    eprintln!("bench: 1b/6 syscall tax (nothing / floor / agent, alternating)...");
    let rounds = tax::measure(
        if quick { 5 } else { 7 },
        &tax::Attached::ALL,
        tax::Calls::HOST,
    )?;
    md += "### 1b. Syscall tax: ns per call, nothing / floor / agent attached\n\n\
           | round | getppid: nothing | floor | agent | 64 B UDP send: nothing | floor | agent |\n\
           |---|---:|---:|---:|---:|---:|---:|\n";
    for (i, r) in rounds.iter().enumerate() {
        md += &format!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.0} | {:.0} | {:.0} |\n",
            i + 1,
            r.null_ns[0],
            r.null_ns[1],
            r.null_ns[2],
            r.udp_ns[0],
            r.udp_ns[1],
            r.udp_ns[2]
        );
    }
    type Column = fn(&tax::Round) -> &[f64];
    let col = |f: Column, i: usize| median(rounds.iter().map(|r| f(r)[i]).collect());
    let (null, udp): (Column, Column) = (|r| &r.null_ns, |r| &r.udp_ns);
    let tax_ratio = median(
        rounds
            .iter()
            .map(|r| (r.null_ns[2] - r.null_ns[0]) / (r.null_ns[1] - r.null_ns[0]))
            .collect(),
    );
    let udp_ratio = median(rounds.iter().map(|r| r.udp_ns[2] / r.udp_ns[0]).collect());
    md += &format!(
        "| median | {:.1} | {:.1} | {:.1} | {:.0} | {:.0} | {:.0} |\n\n\
         Added cost on an unrelated syscall, agent / floor: **{tax_ratio:.2}x** (median of the \
         rounds' ratios; target <= 1.2x). 64-byte UDP send with the agent / without: \
         **{udp_ratio:.3}** (target <= 1.05). The floor is `syscalls:sys_exit_sendto` with one \
         direct load: any syscall tracepoint sends every syscall through the kernel's \
         tracing slow path. {rounds_n} rounds, alternating the order; BPF statistics off.\n\n",
        col(null, 0),
        col(null, 1),
        col(null, 2),
        col(udp, 0),
        col(udp, 1),
        col(udp, 2),
        rounds_n = rounds.len(),
    );

    eprintln!("bench: 2/6 throughput with vs without the agent...");
    let pairs = throughput(5, secs)?;
    md += "### 2. Loopback TCP throughput, agent running vs not (alternating, ABBA; the agent fully started first)\n\n\
           | pair | with agent (Gbit/s) | without (Gbit/s) | ratio |\n|---|---:|---:|---:|\n";
    let mut ratios = Vec::new();
    for (i, (w, wo)) in pairs.iter().enumerate() {
        ratios.push(w / wo);
        md += &format!(
            "| {} | {:.2} | {:.2} | {:.3} |\n",
            i + 1,
            w / 1e9,
            wo / 1e9,
            w / wo
        );
    }
    md += &format!(
        "\nMedian ratio **{:.3}** (target >= 0.98).\n\n",
        median(ratios)
    );

    eprintln!("bench: 4/6 userspace pipeline (replay of a synthetic recording)...");
    let dir = std::env::temp_dir().join(format!("sendsight-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let big = dir.join("pipeline.ssrec");
    let n = synthetic(&big, 20_000, 50)?;
    let (t, _) = replay_cost(&big, &[])?;
    md += &format!(
        "### 4. Userspace pipeline (decode + correlate + JSON)\n\n`sendsight replay` of a \
         synthetic recording of {n} events (20k sockets, retransmits and send errors, \
         output to /dev/null): {t:.2} s, **{:.2} M events/s** on one core (target >= 1.5 M/s). \
         The divan harness (`cargo bench -p sendsight --bench pipeline`) measures the same \
         loop in-process.\n\n",
        n as f64 / t / 1e6
    );

    eprintln!("bench: 5/6 loss under a send-error flood...");
    md += "### 5. Send-error flood: delivered vs lost\n\n| ring | generator | attempts (2 s) | attempts/s | delivered | lost | agent peak RSS |\n|---|---|---:|---:|---:|---:|---:|\n";
    for (ring, threads, rate, label) in [
        (None, 1, Some(100_000u64), "1 thread at 100k/s"),
        (None, 1, None, "1 thread, max speed"),
        (None, 2, None, "2 threads, max speed"),
        (Some("4096"), 2, None, "2 threads, max speed"),
    ] {
        let (attempts, delivered, lost, hwm) = flood_run(ring, threads, rate)?;
        md += &format!(
            "| {} | {label} | {attempts} | {:.0} | {delivered} | {lost} | {:.1} MiB |\n",
            ring.map(|r| format!("{r} B"))
                .unwrap_or("default 1 MiB".into()),
            attempts as f64 / 2.0,
            hwm as f64 / 1024.0
        );
    }
    md += "\n(delivered + lost = attempts when every failure is accounted for.)\n\n";

    eprintln!("bench: 6/6 memory at 100k sockets...");
    let mem = dir.join("100k.ssrec");
    synthetic(&mem, 100_000, 1)?;
    let (_, rss) = replay_cost(&mem, &[])?;
    let before = ids();
    let agent = start_agent(&["--output", "file:/dev/null", "--max-sockets", "100000"])?;
    new_ids(&before, 8)?;
    let maps = map_memory(agent.id());
    let live_rss = rss_kib(agent.id(), "VmRSS:");
    stop(agent);
    md += &format!(
        "### 6. Memory\n\nEngine holding 100,000 sockets (replay of a synthetic recording, \
         100k distinct sockets): peak RSS **{:.1} MiB** (target <= 64 MiB). Live agent with \
         `--max-sockets 100000`: RSS {:.1} MiB; kernel map memory (fdinfo memlock): {}; \
         total {:.1} MiB.\n",
        rss as f64 / 1024.0,
        live_rss as f64 / 1024.0,
        maps.iter()
            .map(|(k, v)| format!("{k}: {:.1} MiB", *v as f64 / 1048576.0))
            .collect::<Vec<_>>()
            .join(", "),
        maps.values().sum::<u64>() as f64 / 1048576.0
    );
    let _ = std::fs::remove_dir_all(&dir);
    println!("{md}");
    Ok(())
}
