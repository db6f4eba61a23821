//! The tax on syscalls the agent does not care about, and on the sends it does: a
//! null syscall (`getppid`) and a 64-byte UDP send, each timed with nothing
//! attached, with the floor (a bare per-syscall tracepoint, `syscalls:sys_exit_sendto`
//! with one direct load: what any tool using syscall tracepoints costs, because the
//! kernel then sends every syscall through its tracing slow path) and with the
//! agent. Rounds alternate the order (N F A, A F N, ...) so drift hits all three.

use std::{
    fs::File,
    net::{Ipv4Addr, SocketAddrV4, UdpSocket},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use anyhow::{Context, bail};

use super::{At, del_netns, floor, ids, new_ids, sh, start_agent, stop};

const NS: &str = "ssb-tax";

#[derive(Clone, Copy)]
pub enum Attached {
    Nothing,
    Floor,
    /// The agent, with these extra flags (e.g. a forced attach method).
    Agent(&'static [&'static str]),
}

impl Attached {
    /// The host bench's three columns.
    pub const ALL: [Attached; 3] = [Attached::Nothing, Attached::Floor, Attached::Agent(&[])];
}

/// Calls timed per measurement.
#[derive(Clone, Copy)]
pub struct Calls {
    pub null: u64,
    pub sends: u64,
}

impl Calls {
    pub const HOST: Calls = Calls {
        null: 2_000_000,
        sends: 200_000,
    };
}

/// ns per call, indexed like the configurations measured.
pub struct Round {
    pub null_ns: Vec<f64>,
    pub udp_ns: Vec<f64>,
}

/// A namespace whose datagrams leave through the real IP output path and are
/// dropped by the device (a veth whose peer is down, a permanent neighbour entry):
/// no receiver, no ICMP, no receive path in the timing.
struct Sink;

impl Sink {
    fn new() -> anyhow::Result<Self> {
        del_netns(NS);
        sh("ip", &["netns", "add", NS])?;
        sh(
            "ip",
            &[
                "-n", NS, "link", "add", "v0", "type", "veth", "peer", "name", "v1",
            ],
        )?;
        sh(
            "ip",
            &["-n", NS, "addr", "add", "198.18.252.1/24", "dev", "v0"],
        )?;
        sh("ip", &["-n", NS, "link", "set", "v0", "up"])?;
        sh(
            "ip",
            &[
                "-n",
                NS,
                "neigh",
                "add",
                "198.18.252.2",
                "lladdr",
                "02:00:00:00:00:02",
                "dev",
                "v0",
                "nud",
                "permanent",
            ],
        )?;
        Ok(Sink)
    }

    /// ns per 64-byte send from a thread inside the namespace.
    fn send(&self, n: u64) -> anyhow::Result<f64> {
        std::thread::scope(|s| {
            s.spawn(|| -> anyhow::Result<f64> {
                let ns = File::open(format!("/run/netns/{NS}")).context("opening the netns")?;
                if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                    bail!("setns: {}", std::io::Error::last_os_error());
                }
                let sock = UdpSocket::bind("198.18.252.1:0")?;
                sock.connect(SocketAddrV4::new(Ipv4Addr::new(198, 18, 252, 2), 9))?;
                let buf = [0u8; 64];
                let t = Instant::now();
                for _ in 0..n {
                    sock.send(&buf)?;
                }
                Ok(t.elapsed().as_nanos() as f64 / n as f64)
            })
            .join()
            .map_err(|_| anyhow::anyhow!("the sending thread panicked"))?
        })
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        del_netns(NS);
    }
}

fn null_syscall(n: u64) -> f64 {
    let t = Instant::now();
    for _ in 0..n {
        unsafe { libc::syscall(libc::SYS_getppid) };
    }
    t.elapsed().as_nanos() as f64 / n as f64
}

/// What is attached while one measurement runs; dropped to detach.
enum Guard {
    None,
    Floor(#[allow(dead_code)] aya::Ebpf),
    Agent(std::process::Child),
}

fn attach(a: Attached) -> anyhow::Result<Guard> {
    Ok(match a {
        Attached::Nothing => Guard::None,
        Attached::Floor => {
            let mut f = floor::load()?;
            floor::attach(
                &mut f,
                "floor_sys_exit",
                At::Classic("syscalls", "sys_exit_sendto"),
            )?;
            Guard::Floor(f)
        }
        Attached::Agent(extra) => {
            let before = ids();
            let mut args = vec!["--output", "file:/dev/null"];
            args.extend_from_slice(extra);
            let agent = start_agent(&args)?;
            new_ids(&before, 8)?;
            Guard::Agent(agent)
        }
    })
}

/// `rounds` rounds over `configs`, the order reversed every other round.
pub fn measure(rounds: usize, configs: &[Attached], calls: Calls) -> anyhow::Result<Vec<Round>> {
    // Statistics add two clock reads to every program run: not what a host pays.
    let stats = std::fs::read_to_string("/proc/sys/kernel/bpf_stats_enabled").unwrap_or_default();
    if stats.trim() == "1" {
        bail!(
            "BPF statistics are on (sysctl kernel.bpf_stats_enabled=1): they would be timed \
             with the programs; turn them off first"
        );
    }
    let sink = Sink::new()?;
    let mut out = Vec::new();
    for r in 0..rounds {
        let mut round = Round {
            null_ns: vec![0.0; configs.len()],
            udp_ns: vec![0.0; configs.len()],
        };
        let mut order: Vec<usize> = (0..configs.len()).collect();
        if r % 2 == 1 {
            order.reverse();
        }
        for i in order {
            let guard = attach(configs[i])?;
            std::thread::sleep(Duration::from_millis(200));
            round.null_ns[i] = null_syscall(calls.null);
            round.udp_ns[i] = sink.send(calls.sends)?;
            if let Guard::Agent(a) = guard {
                stop(a);
            }
        }
        out.push(round);
    }
    Ok(out)
}

/// The syscall tax on this kernel as a markdown table: nothing attached, the floor,
/// the agent as it chooses, and the agent with its send-error hook forced onto the
/// raw `sys_exit` (what kernels without trampolines get). Meant for emulated
/// guests: fewer calls per timing, more rounds, ratios within each round.
pub fn guest_table() -> anyhow::Result<String> {
    const CONFIGS: [Attached; 4] = [
        Attached::Nothing,
        Attached::Floor,
        Attached::Agent(&[]),
        Attached::Agent(&["--attach", "send_syscall=raw-tracepoint"]),
    ];
    let arg = |name: &str, default: u64| -> anyhow::Result<u64> {
        match std::env::args().skip_while(|a| a != name).nth(1) {
            Some(v) => v.parse().with_context(|| format!("{name} {v:?}")),
            None => Ok(default),
        }
    };
    let rounds = arg("--rounds", 6)? as usize;
    let calls = Calls {
        null: arg("--calls", 200_000)?,
        sends: arg("--calls", 200_000)? / 10,
    };
    let kernel = sendsight::system::kernel_release();
    let rs = measure(rounds, &CONFIGS, calls)?;
    let mut md = format!(
        "Kernel {kernel}: ns per call; {} getppid and {} 64-byte UDP sends per timing; \
         {rounds} rounds, the order reversed every other round.\n\n\
         | round | getppid: nothing | floor | agent | agent, raw sys_exit | UDP send: nothing | floor | agent | agent, raw sys_exit |\n\
         |---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        calls.null, calls.sends
    );
    for (i, r) in rs.iter().enumerate() {
        md += &format!(
            "| {} | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} | {:.0} | {:.0} | {:.0} |\n",
            i + 1,
            r.null_ns[0],
            r.null_ns[1],
            r.null_ns[2],
            r.null_ns[3],
            r.udp_ns[0],
            r.udp_ns[1],
            r.udp_ns[2],
            r.udp_ns[3]
        );
    }
    let med = |f: &dyn Fn(&Round) -> f64| super::median(rs.iter().map(f).collect());
    md += &format!(
        "\nMedian of the rounds' ratios to nothing attached: getppid with the agent \
         **{:.3}**, with the agent on the raw sys_exit **{:.3}**, with the floor {:.3}; \
         UDP send with the agent **{:.3}**, on the raw sys_exit {:.3}.\n",
        med(&|r| r.null_ns[2] / r.null_ns[0]),
        med(&|r| r.null_ns[3] / r.null_ns[0]),
        med(&|r| r.null_ns[1] / r.null_ns[0]),
        med(&|r| r.udp_ns[2] / r.udp_ns[0]),
        med(&|r| r.udp_ns[3] / r.udp_ns[0]),
    );
    Ok(md)
}
