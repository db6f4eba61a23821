//! The command line's definition: parsed by `sendsight` (main.rs), and turned into
//! the man page and shell completions by `sendsight-gen` (bin/gen.rs, run by
//! `cargo xtask man`), so the documentation cannot drift from the parser.

use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};

#[derive(Parser, Debug)]
#[command(
    name = "sendsight",
    version,
    about = "Live diagnosis of failing sends: TCP retransmits, send errors, PMTUD black holes",
    long_about = None
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

// Parsed once per process: the size of the run arguments does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Trace this host: a readable view on a terminal, one JSON object per line
    /// otherwise (see --format).
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
        /// The transport to check: auto, ring or perf (as `run --transport`).
        /// Overrides SENDSIGHT_TRANSPORT. [default: auto]
        #[arg(long, value_enum, value_name = "TRANSPORT")]
        transport: Option<sendsight::probes::transport::Want>,
        #[command(flatten)]
        attach: AttachArg,
    },
    /// Run the engine over a recording made with `run --record` (no privileges
    /// needed): the same verdicts, in the same order, as the live run.
    Replay {
        /// The recording.
        file: std::path::PathBuf,
        #[command(flatten)]
        format: FormatArg,
    },
    /// Print the JSON Schemas of the lines (draft 2020-12): with no TYPE, one JSON
    /// object of every line type's schema, by type; with TYPE, that type's schema.
    /// The same files as schema/ in the source tree, generated from the same types.
    Schema {
        /// A line type (start, retransmit, verdict, ...); `--list` names them all.
        #[arg(value_name = "TYPE", conflicts_with = "list")]
        line_type: Option<String>,
        /// Name every line type, one a line, with what it says.
        #[arg(long)]
        list: bool,
    },
}

/// How stdout is written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// For people: one line per event, verdicts as blocks with evidence and advice
    /// wrapped to the terminal, a summary at the end. Colour unless NO_COLOR is set
    /// or stdout is not a terminal.
    Text,
    /// One JSON object per line (the schema in schema/), for machines.
    Json,
}

#[derive(clap::Args, Debug)]
pub struct FormatArg {
    /// Output format on stdout. Default: text when stdout is a terminal, json
    /// otherwise. --output sinks other than stdout are always JSON.
    #[arg(long, value_enum, value_name = "FORMAT")]
    pub format: Option<Format>,
}

impl FormatArg {
    /// The format asked for, or the default for this stdout.
    pub fn resolve(&self, stdout_is_terminal: bool) -> Format {
        self.format.unwrap_or(if stdout_is_terminal {
            Format::Text
        } else {
            Format::Json
        })
    }
}

#[derive(clap::Args, Debug)]
pub struct RunArgs {
    /// Stop after this long (e.g. 30s, 5m, 1h30m; a bare number is seconds).
    /// Default: run until SIGINT or SIGTERM.
    #[arg(long, value_parser = parse_duration, allow_hyphen_values = true)]
    pub duration: Option<Duration>,
    /// Size of the kernel ring buffer in bytes: a power of two, at least 4096. With
    /// perf buffers, their total: split evenly over the online CPUs, each rounded
    /// down to a power of two pages (at least one page).
    #[arg(long, default_value_t = 1 << 20, value_parser = parse_ring_bytes)]
    pub ring_bytes: u32,
    /// How records reach the agent: the BPF ring buffer (5.8+), perf buffers (one per
    /// CPU; older kernels), or auto: the ring where the kernel has it. Overrides
    /// SENDSIGHT_TRANSPORT. [default: auto]
    #[arg(long, value_enum, value_name = "TRANSPORT")]
    pub transport: Option<sendsight::probes::transport::Want>,
    /// Also write the raw event stream to this file, for `sendsight replay`: a new
    /// file (an existing one or a symbolic link there is refused), mode 0600, with
    /// no kernel addresses in it.
    #[arg(long, value_name = "FILE")]
    pub record: Option<std::path::PathBuf>,
    /// Rotate the recording to FILE.1 when it reaches this many bytes (0: never; else
    /// at least 1 MiB).
    #[arg(long, default_value_t = 1 << 30, value_name = "BYTES", value_parser = parse_record_max)]
    pub record_max_bytes: u64,
    /// Forget a socket after this long without events (e.g. 5m).
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub idle_timeout: Duration,
    /// Where lines go: stdout, file:PATH (appended, 0600, rotated by size),
    /// unix:PATH or tcp:HOST:PORT (a collector such as rsyslog, Vector, Fluent Bit).
    #[arg(long, default_value = "stdout", value_name = "SINK")]
    pub output: sendsight::output::sink::Spec,
    #[command(flatten)]
    pub format: FormatArg,
    /// Rotate a file output when it reaches this many bytes.
    #[arg(long, default_value_t = 100 << 20, value_parser = clap::value_parser!(u64).range(4096..))]
    pub rotate_bytes: u64,
    /// Old files kept by rotation.
    #[arg(long, default_value_t = 5)]
    pub rotate_keep: u32,
    /// Bound of a network output's queue while the collector is slow or away; lines
    /// beyond it are dropped and counted.
    #[arg(long, default_value_t = 8 << 20, value_parser = clap::value_parser!(u64).range(65536..=(1u64 << 32)))]
    pub queue_bytes: u64,
    /// Only sockets of these processes (repeat or comma-separate).
    #[arg(long, value_delimiter = ',')]
    pub pid: Vec<u32>,
    /// Only sockets of processes with this command name (comm).
    #[arg(long, value_delimiter = ',')]
    pub comm: Vec<String>,
    /// Only sockets of processes in these cgroups (cgroup v2 id).
    #[arg(long, value_delimiter = ',')]
    pub cgroup: Vec<u64>,
    /// Only sockets in these network namespaces (inode number, as in /proc/PID/ns/net).
    #[arg(long, value_delimiter = ',')]
    pub netns: Vec<u32>,
    /// Only flows with this local or peer port.
    #[arg(long, value_delimiter = ',')]
    pub port: Vec<u16>,
    /// Only flows whose local or peer address is in this CIDR.
    #[arg(long, value_delimiter = ',', value_parser = sendsight::filter::parse_cidr)]
    pub cidr: Vec<ipnet::IpNet>,
    /// Only these line types (comma-separated): retransmit, send_error, icmp_too_big,
    /// socket_state, socket_error, cong_state, verdict, path, loss.
    #[arg(long, value_parser = sendsight::filter::parse_events)]
    pub events: Option<std::collections::BTreeSet<String>>,
    /// At most this many lines per socket and type per second, verdicts included;
    /// lines about no known socket (too-big messages anyone can send) share one
    /// budget per type. The rest are counted as `rate_limited` loss; 0: no limit.
    #[arg(long, default_value_t = 0)]
    pub rate_limit: u32,
    /// Serve Prometheus metrics (and /healthz) on this address, e.g. 127.0.0.1:9464.
    #[arg(long, value_name = "ADDR")]
    pub metrics: Option<std::net::SocketAddr>,
    /// BTF file to use instead of /sys/kernel/btf/vmlinux.
    #[arg(long, value_name = "FILE")]
    pub btf: Option<std::path::PathBuf>,
    /// Too-big messages recorded per CPU per second at most (anyone on the network
    /// can send them); the rest are counted as `icmp_too_big_bounded`. They never
    /// take more than half of the ring whatever this says.
    #[arg(long, default_value_t = 5000, value_parser = clap::value_parser!(u32).range(1..))]
    pub too_big_rate: u32,
    /// Most sockets tracked at once; the oldest is forgotten (and counted) beyond.
    #[arg(long, default_value_t = 65_536, value_parser = clap::value_parser!(u64).range(1..=10_000_000))]
    pub max_sockets: u64,
    #[command(flatten)]
    pub attach: AttachArg,
}

/// Forcing attach methods (`run` and `check` alike).
#[derive(clap::Args, Debug, Clone, Default)]
pub struct AttachArg {
    /// Attach PROBE only by METHOD (fexit, tp-btf, raw-tracepoint, tracepoint)
    /// instead of the best this kernel offers, e.g. `retransmit=tracepoint`;
    /// comma-separated or repeated. A probe the kernel offers no such method for is
    /// unavailable, and says so. Probes: those `sendsight check` lists.
    #[arg(
        long = "attach",
        value_name = "PROBE=METHOD",
        env = "SENDSIGHT_ATTACH",
        value_delimiter = ',',
        value_parser = clap::builder::ValueParser::new(str::parse::<sendsight::probes::table::Force>)
    )]
    pub force: Vec<sendsight::probes::table::Force>,
}

pub fn parse_duration(s: &str) -> Result<Duration, String> {
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

pub fn parse_ring_bytes(s: &str) -> Result<u32, String> {
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

fn parse_record_max(s: &str) -> Result<u64, String> {
    let n: u64 = s.parse().map_err(|e| format!("{e}"))?;
    if n != 0 && n < sendsight::record::MIN_MAX_BYTES {
        return Err(format!(
            "{n} bytes is too small for a recording: 0 (no cap) or at least {}",
            sendsight::record::MIN_MAX_BYTES
        ));
    }
    Ok(n)
}
