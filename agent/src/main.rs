//! The `sendsight` command line. Everything else lives in the library.

mod cli;

use std::{io::IsTerminal as _, process::ExitCode, time::Duration};

use clap::Parser;
use cli::{Cli, Command, Format};
use sendsight::{
    engine::Limits,
    output::text::{self, TextWriter},
    privileges,
    probes::{Options, transport},
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

/// An error and its causes on one line, each said once: a cause whose text the
/// message already contains (an error that prints its source) is not repeated.
fn say_once(e: &anyhow::Error) -> String {
    let mut msg = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if msg.contains(&text) {
            continue;
        }
        if !msg.is_empty() {
            msg.push_str(": ");
        }
        msg.push_str(&text);
    }
    msg
}

/// Missing capabilities are one line and exit 77, before anything is attempted.
/// `ring_bytes`: the event ring asked for (kernels before 5.11 charge it to
/// RLIMIT_MEMLOCK).
fn refuse_without_privileges(ring_bytes: u32) -> Option<ExitCode> {
    match privileges::effective() {
        Ok(caps) => privileges::missing_for_tracing(caps, ring_bytes.into()).map(|why| {
            eprintln!("sendsight: error: {why}");
            ExitCode::from(exit::NOPERM)
        }),
        Err(e) => {
            eprintln!("sendsight: warning: cannot read capabilities ({e}); trying anyway");
            None
        }
    }
}

/// `sendsight schema [TYPE]`: the line schemas, generated from the types that print
/// the lines (no privileges needed).
fn schema(line_type: Option<&str>, list: bool) -> ExitCode {
    use sendsight::schema::{self, LineType};
    if list {
        for t in LineType::ALL {
            println!("{:<14} {}", t.name(), t.description());
        }
        return ExitCode::SUCCESS;
    }
    let value = match line_type {
        None => serde_json::to_value(schema::all()).unwrap_or_default(),
        Some(name) => match LineType::from_name(name) {
            Some(t) => schema::for_type(t),
            None => {
                let known: Vec<&str> = LineType::ALL.iter().map(|t| t.name()).collect();
                eprintln!(
                    "sendsight: error: unknown line type {name:?}; known: {}",
                    known.join(", ")
                );
                return ExitCode::from(exit::USAGE);
            }
        },
    };
    println!(
        "{}",
        serde_json::to_string_pretty(&value).unwrap_or_default()
    );
    ExitCode::SUCCESS
}

/// The transport asked for: the flag, else `SENDSIGHT_TRANSPORT`; a bad value of
/// the variable is a usage error (the flag's are clap's).
fn transport_request(flag: Option<transport::Want>) -> Result<transport::Request, ExitCode> {
    transport::Request::new(flag, std::env::var_os(transport::ENV).as_deref()).map_err(|e| {
        eprintln!("sendsight: error: {e}");
        ExitCode::from(exit::USAGE)
    })
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => return usage_error(e),
    };
    if let Command::Schema { line_type, list } = &cli.command {
        return schema(line_type.as_deref(), *list);
    }
    if let Command::Replay { file, format } = &cli.command {
        let stdout = std::io::stdout();
        let text = format.resolve(stdout.is_terminal()) == Format::Text;
        let out = std::io::BufWriter::new(stdout.lock());
        let r = if text {
            let mut out = TextWriter::new(out, text::Options::for_stdout());
            sendsight::replay::replay(file, Limits::default(), &mut out)
        } else {
            let mut out = out;
            sendsight::replay::replay(file, Limits::default(), &mut out)
        };
        return match r {
            Ok(_) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("sendsight: error: {}", say_once(&e));
                ExitCode::from(exit::FAILURE)
            }
        };
    }
    let ring_bytes = match &cli.command {
        Command::Run(args) => args.ring_bytes,
        _ => Options::default().ring_bytes,
    };
    if let Some(code) = refuse_without_privileges(ring_bytes) {
        return code;
    }
    match cli.command {
        Command::Replay { .. } | Command::Schema { .. } => unreachable!("handled above"),
        Command::Check {
            json,
            btf,
            transport,
            attach,
        } => {
            let transport = match transport_request(transport) {
                Ok(t) => t,
                Err(code) => return code,
            };
            let report = sendsight::check::check(Options {
                btf,
                transport,
                force: attach.force,
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
            let text = match (args.format.format, &args.output) {
                (Some(Format::Text), sendsight::output::sink::Spec::Stdout) | (None, _) => {
                    args.format.resolve(std::io::stdout().is_terminal()) == Format::Text
                }
                (Some(Format::Text), _) => {
                    eprintln!(
                        "sendsight: error: --format text is for stdout; --output sinks are \
                         JSON (see sendsight --help)"
                    );
                    return ExitCode::from(exit::USAGE);
                }
                (Some(Format::Json), _) => false,
            };
            let cfg = RunConfig {
                text: text.then(text::Options::for_stdout),
                duration: args.duration,
                probes: Options {
                    ring_bytes: args.ring_bytes,
                    transport: match transport_request(args.transport) {
                        Ok(t) => t,
                        Err(code) => return code,
                    },
                    max_sockets: args.max_sockets.min(u32::MAX as u64) as u32,
                    btf: args.btf.clone(),
                    too_big_per_cpu_s: args.too_big_rate,
                    force: args.attach.force.clone(),
                },
                limits: Limits {
                    max_sockets: args.max_sockets as usize,
                    idle_ns: args.idle_timeout.as_nanos().min(u64::MAX as u128) as u64,
                    ..Limits::default()
                },
                loss_interval: Duration::from_secs(1),
                record: args.record,
                record_max_bytes: args.record_max_bytes,
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
                    eprintln!("sendsight: error: {}", say_once(&e));
                    ExitCode::from(exit::FAILURE)
                }
            }
        }
    }
}
