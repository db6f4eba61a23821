//! The `sendsight` command line. Everything else lives in the library.

use std::{process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use sendsight::{
    engine::Limits,
    privileges,
    probes::Options,
    run::{RunConfig, run},
};

/// Exit codes, documented in the README.
mod exit {
    /// Runtime failure (kernel, BTF, tracefs, output).
    pub const FAILURE: u8 = 1;
    /// Bad command line.
    pub const USAGE: u8 = 2;
    /// Missing privileges (sysexits EX_NOPERM).
    pub const NOPERM: u8 = 77;
}

#[derive(Parser, Debug)]
#[command(
    name = "sendsight",
    version,
    about = "Live diagnosis of failing sends: TCP retransmits, send errors, PMTUD black holes",
    long_about = None
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Trace this host and print one JSON object per line on stdout.
    Run(RunArgs),
    /// Report what this kernel allows: each probe attached, degraded or unavailable
    /// (and why), kernel version, BTF, tracefs, capabilities. Exit 1 when the core job
    /// (retransmits and send errors) cannot be done here.
    Check {
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
        /// BTF file to use instead of /sys/kernel/btf/vmlinux.
        #[arg(long, value_name = "FILE")]
        btf: Option<std::path::PathBuf>,
    },
    /// Run the engine over a recording made with `run --record` (no privileges
    /// needed): the same verdicts, in the same order, as the live run.
    Replay {
        /// The recording.
        file: std::path::PathBuf,
    },
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Stop after this long (e.g. 30s, 5m, 1h30m; a bare number is seconds).
    /// Default: run until SIGINT or SIGTERM.
    #[arg(long, value_parser = parse_duration, allow_hyphen_values = true)]
    duration: Option<Duration>,
    /// Size of the kernel ring buffer in bytes: a power of two, at least 4096.
    #[arg(long, default_value_t = 1 << 20, value_parser = parse_ring_bytes)]
    ring_bytes: u32,
    /// Also write the raw event stream to this file, for `sendsight replay`.
    #[arg(long, value_name = "FILE")]
    record: Option<std::path::PathBuf>,
    /// Forget a socket after this long without events (e.g. 5m).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    idle_timeout: Duration,
    /// Where lines go: stdout, file:PATH (appended, 0600, rotated by size),
    /// unix:PATH or tcp:HOST:PORT (a collector such as rsyslog, Vector, Fluent Bit).
    #[arg(long, default_value = "stdout", value_name = "SINK")]
    output: sendsight::output::sink::Spec,
    /// Rotate a file output when it reaches this many bytes.
    #[arg(long, default_value_t = 100 << 20, value_parser = clap::value_parser!(u64).range(4096..))]
    rotate_bytes: u64,
    /// Old files kept by rotation.
    #[arg(long, default_value_t = 5)]
    rotate_keep: u32,
    /// Bound of a network output's queue while the collector is slow or away; lines
    /// beyond it are dropped and counted.
    #[arg(long, default_value_t = 8 << 20, value_parser = clap::value_parser!(u64).range(65536..=(1u64 << 32)))]
    queue_bytes: u64,
    /// Only sockets of these processes (repeat or comma-separate).
    #[arg(long, value_delimiter = ',')]
    pid: Vec<u32>,
    /// Only sockets of processes with this command name (comm).
    #[arg(long, value_delimiter = ',')]
    comm: Vec<String>,
    /// Only sockets of processes in these cgroups (cgroup v2 id).
    #[arg(long, value_delimiter = ',')]
    cgroup: Vec<u64>,
    /// Only sockets in these network namespaces (inode number, as in /proc/PID/ns/net).
    #[arg(long, value_delimiter = ',')]
    netns: Vec<u32>,
    /// Only flows with this local or peer port.
    #[arg(long, value_delimiter = ',')]
    port: Vec<u16>,
    /// Only flows whose local or peer address is in this CIDR.
    #[arg(long, value_delimiter = ',', value_parser = sendsight::filter::parse_cidr)]
    cidr: Vec<ipnet::IpNet>,
    /// Only these line types (comma-separated): retransmit, send_error, icmp_too_big,
    /// socket_state, socket_error, cong_state, verdict, path, loss.
    #[arg(long, value_parser = sendsight::filter::parse_events)]
    events: Option<std::collections::BTreeSet<String>>,
    /// At most this many lines per socket and type per second (the rest counted as
    /// `rate_limited` loss); 0: no limit.
    #[arg(long, default_value_t = 0)]
    rate_limit: u32,
    /// Serve Prometheus metrics (and /healthz) on this address, e.g. 127.0.0.1:9464.
    #[arg(long, value_name = "ADDR")]
    metrics: Option<std::net::SocketAddr>,
    /// BTF file to use instead of /sys/kernel/btf/vmlinux.
    #[arg(long, value_name = "FILE")]
    btf: Option<std::path::PathBuf>,
    /// Most sockets tracked at once; the oldest is forgotten (and counted) beyond.
    #[arg(long, default_value_t = 65_536, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    max_sockets: u64,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = if let Ok(secs) = s.parse::<f64>() {
        if !secs.is_finite() || secs < 0.0 {
            return Err(format!("{s:?} is not a non-negative duration"));
        }
        Duration::from_secs_f64(secs)
    } else {
        humantime::parse_duration(s)
            .map_err(|e| format!("{s:?} is not a duration ({e}); use e.g. 30s, 5m, 1h"))?
    };
    if d.is_zero() {
        return Err("duration must be greater than zero".into());
    }
    Ok(d)
}

fn parse_ring_bytes(s: &str) -> Result<u32, String> {
    let n: u32 = s
        .parse()
        .map_err(|_| format!("{s:?} is not a byte count"))?;
    if n < 4096 || !n.is_power_of_two() {
        return Err(format!(
            "{n} must be a power of two of at least 4096 (the kernel's rule)"
        ));
    }
    Ok(n)
}

/// Clap's own errors are several lines; keep ours to one (the reason) plus a hint.
fn usage_error(e: clap::Error) -> ExitCode {
    use clap::error::ErrorKind;
    if matches!(
        e.kind(),
        ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand
    ) {
        let _ = e.print();
        return if e.kind() == ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand {
            ExitCode::from(exit::USAGE)
        } else {
            ExitCode::SUCCESS
        };
    }
    let rendered = e.render().to_string();
    let reason = rendered
        .lines()
        .next()
        .unwrap_or("bad command line")
        .trim_start_matches("error: ");
    eprintln!("sendsight: error: {reason} (see sendsight --help)");
    ExitCode::from(exit::USAGE)
}

/// Missing capabilities are one line and exit 77, before anything is attempted.
fn refuse_without_privileges() -> Option<ExitCode> {
    match privileges::effective() {
        Ok(caps) => privileges::missing_for_tracing(caps).map(|why| {
            eprintln!("sendsight: error: {why}");
            ExitCode::from(exit::NOPERM)
        }),
        Err(e) => {
            eprintln!("sendsight: warning: cannot read capabilities ({e}); trying anyway");
            None
        }
    }
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return usage_error(e),
    };
    if let Command::Replay { file } = &cli.command {
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        return match sendsight::replay::replay(file, Limits::default(), &mut out) {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sendsight: error: {e:#}");
                ExitCode::from(exit::FAILURE)
            }
        };
    }
    if let Some(code) = refuse_without_privileges() {
        return code;
    }
    match cli.command {
        Command::Replay { .. } => unreachable!("handled above"),
        Command::Check { json, btf } => {
            let report = sendsight::check::check(Options {
                btf,
                ..Options::default()
            });
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&report).unwrap_or_default()
                );
            } else {
                print!("{}", sendsight::check::render_text(&report));
            }
            if report.ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(exit::FAILURE)
            }
        }
        Command::Run(args) => {
            let cfg = RunConfig {
                duration: args.duration,
                probes: Options {
                    ring_bytes: args.ring_bytes,
                    max_sockets: args.max_sockets.min(u32::MAX as u64) as u32,
                    btf: args.btf.clone(),
                },
                limits: Limits {
                    max_sockets: args.max_sockets as usize,
                    idle_ns: args.idle_timeout.as_nanos().min(u64::MAX as u128) as u64,
                    ..Limits::default()
                },
                loss_interval: Duration::from_secs(1),
                record: args.record,
                output: match args.output {
                    sendsight::output::sink::Spec::File { path, .. } => {
                        sendsight::output::sink::Spec::File {
                            path,
                            max_bytes: args.rotate_bytes,
                            keep: args.rotate_keep,
                        }
                    }
                    other => other,
                },
                queue_bytes: args.queue_bytes as usize,
                filter: sendsight::filter::Filter {
                    pids: args.pid,
                    comms: args.comm,
                    cgroups: args.cgroup,
                    netns: args.netns,
                    ports: args.port,
                    cidrs: args.cidr,
                    events: args.events,
                },
                rate_limit: args.rate_limit,
                metrics: args.metrics,
            };
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("sendsight: error: starting the runtime: {e}");
                    return ExitCode::from(exit::FAILURE);
                }
            };
            match rt.block_on(run(cfg)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("sendsight: error: {e:#}");
                    ExitCode::from(exit::FAILURE)
                }
            }
        }
    }
}
