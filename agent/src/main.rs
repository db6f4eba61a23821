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
    #[arg(long, value_parser = parse_duration, allow_negative_numbers = true)]
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
        Command::Check { json } => {
            let report = sendsight::check::check(Options::default());
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
                },
                limits: Limits {
                    max_sockets: args.max_sockets as usize,
                    idle_ns: args.idle_timeout.as_nanos().min(u64::MAX as u128) as u64,
                    ..Limits::default()
                },
                loss_interval: Duration::from_secs(1),
                record: args.record,
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
