//! `sendsight run`: load, attach, stream lines until the duration ends or a signal
//! arrives, then detach, drain, and print the summary.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use agent_common::loss::{SLOT_NAMES, slot};
use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    clock::WallClock,
    decode,
    engine::{Engine, Limits},
    ingest::Ingest,
    output::{
        json::{self, LossBody, StartBody, SummaryBody, Units},
        sink::{SinkError, Stdout},
    },
    probes::{self, Options},
};

#[derive(Clone, Debug)]
pub struct RunConfig {
    pub duration: Option<Duration>,
    pub probes: Options,
    pub limits: Limits,
    /// How often kernel loss counters are polled for `loss` lines.
    pub loss_interval: Duration,
}

/// Why the run ended, for the exit path.
enum Stop {
    Duration,
    Signal(&'static str),
    OutputClosed,
}

struct Ledger {
    kernel_reported: [u64; slot::COUNT as usize],
    decode_errors: u64,
    decode_reported: u64,
}

struct State {
    clock: WallClock,
    units: Units,
    engine: Engine,
    out: Stdout,
    counts: BTreeMap<&'static str, u64>,
    ledger: Ledger,
}

impl State {
    fn handle(&mut self, bytes: &[u8]) -> Result<(), SinkError> {
        match decode::decode(bytes) {
            Ok(event) => {
                *self.counts.entry(event.kind_name()).or_default() += 1;
                let a = self.engine.on_event(event);
                let line = json::event(&self.clock, self.units, &a);
                self.out.push(&line)
            }
            Err(e) => {
                if self.ledger.decode_errors == 0 {
                    eprintln!(
                        "sendsight: warning: undecodable record ({e}); counting further ones"
                    );
                }
                self.ledger.decode_errors += 1;
                Ok(())
            }
        }
    }

    fn now(&self) -> (String, i128) {
        let mono = WallClock::monotonic_now();
        (self.clock.rfc3339(mono), self.clock.unix_ns(mono))
    }

    /// Emits a `loss` line for every source whose count grew since the last report.
    fn report_loss(&mut self, kernel: [u64; slot::COUNT as usize]) -> Result<(), SinkError> {
        let (ts, ts_ns) = self.now();
        for (i, total) in kernel.iter().enumerate() {
            let before = self.ledger.kernel_reported[i];
            if *total > before {
                let line = json::line(
                    "loss",
                    &ts,
                    ts_ns,
                    LossBody {
                        source: SLOT_NAMES[i],
                        lost: total - before,
                        total: *total,
                    },
                );
                self.out.push(&line)?;
                self.ledger.kernel_reported[i] = *total;
            }
        }
        if self.ledger.decode_errors > self.ledger.decode_reported {
            let line = json::line(
                "loss",
                &ts,
                ts_ns,
                LossBody {
                    source: "decode",
                    lost: self.ledger.decode_errors - self.ledger.decode_reported,
                    total: self.ledger.decode_errors,
                },
            );
            self.out.push(&line)?;
            self.ledger.decode_reported = self.ledger.decode_errors;
        }
        self.out.flush()
    }
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

pub async fn run(cfg: RunConfig) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut loaded = probes::load(cfg.probes)?;
    let clock = WallClock::from_system();
    let hz = crate::hz::kernel_hz();
    let mut state = State {
        clock,
        units: Units { hz },
        engine: Engine::new(cfg.limits),
        out: Stdout::default(),
        counts: BTreeMap::new(),
        ledger: Ledger {
            kernel_reported: [0; slot::COUNT as usize],
            decode_errors: 0,
            decode_reported: 0,
        },
    };

    for p in &loaded.report {
        eprintln!(
            "sendsight: probe {:<13} {:<11} {}{}{}",
            p.probe,
            format!("{:?}", p.state).to_lowercase(),
            p.attach,
            if p.note.is_empty() { "" } else { ": " },
            p.note
        );
    }
    if !loaded.core_ok() {
        anyhow::bail!(
            "this kernel lacks what sendsight needs for its core job (retransmits and send              errors); see `sendsight check`"
        );
    }
    let kernel = kernel_release();
    let tracefs = loaded.tracefs.root().display().to_string();
    {
        let (ts, ts_ns) = state.now();
        let start = json::line(
            "start",
            &ts,
            ts_ns,
            StartBody {
                version: env!("CARGO_PKG_VERSION"),
                kernel: &kernel,
                tracefs: &tracefs,
                hz,
                probes: &loaded.report,
            },
        );
        state.out.push(&start)?;
        state.out.flush().ok();
    }

    let events = loaded.events.take().context("ring buffer already taken")?;
    let mut ingest = Ingest::new(events).context("registering the ring buffer with tokio")?;
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let deadline = cfg.duration.map(|d| tokio::time::Instant::now() + d);
    let mut ticker = tokio::time::interval(cfg.loss_interval);
    eprintln!(
        "sendsight: tracing{}; stop with Ctrl-C",
        cfg.duration
            .map(|d| format!(" for {}", humantime::format_duration(d)))
            .unwrap_or_default()
    );

    let stop = loop {
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            batch = ingest.ready() => {
                let batch = batch.context("waiting on the ring buffer")?;
                let mut failed = None;
                batch.drain(|bytes| {
                    if failed.is_none() && let Err(e) = state.handle(bytes) {
                        failed = Some(e);
                    }
                });
                match failed.map_or_else(|| state.out.flush(), Err) {
                    Ok(()) => {}
                    Err(SinkError::Closed) => break Stop::OutputClosed,
                    Err(e) => return Err(e.into()),
                }
            }
            _ = ticker.tick() => {
                let lost = loaded.lost_counts();
                match state.report_loss(lost) {
                    Ok(()) => {}
                    Err(SinkError::Closed) => break Stop::OutputClosed,
                    Err(e) => return Err(e.into()),
                }
            }
            _ = sleep => break Stop::Duration,
            _ = sigint.recv() => break Stop::Signal("SIGINT"),
            _ = sigterm.recv() => break Stop::Signal("SIGTERM"),
        }
    };

    // A second signal while we wind down means "now".
    tokio::spawn(async move {
        tokio::select! {
            _ = sigint.recv() => {},
            _ = sigterm.recv() => {},
        }
        eprintln!("sendsight: second signal, exiting immediately");
        std::process::exit(130);
    });

    loaded.detach();
    if let Stop::OutputClosed = stop {
        eprintln!("sendsight: output closed by its reader; detached and stopping");
        return Ok(());
    }
    let mut failed = None;
    ingest.drain_now(|bytes| {
        if failed.is_none()
            && let Err(e) = state.handle(bytes)
        {
            failed = Some(e);
        }
    });
    let lost = loaded.lost_counts();
    let end = state.report_loss(lost);
    let mut lost_map = BTreeMap::new();
    for (i, n) in lost.iter().enumerate() {
        if *n > 0 || i == slot::RETRANSMIT as usize {
            lost_map.insert(SLOT_NAMES[i].to_string(), *n);
        }
    }
    lost_map.insert("decode".to_string(), state.ledger.decode_errors);
    lost_map.insert("sockets_evicted".to_string(), state.engine.sockets.evicted);
    let (ts, ts_ns) = state.now();
    let summary = json::line(
        "summary",
        &ts,
        ts_ns,
        SummaryBody {
            duration_s: started.elapsed().as_secs_f64(),
            events_total: state.counts.values().sum(),
            events: state.counts.clone(),
            lost_total: lost_map.values().sum(),
            lost: lost_map,
            sockets_seen: state.engine.sockets.seen,
        },
    );
    let r = failed
        .map_or(end, Err)
        .and_then(|()| state.out.push(&summary))
        .and_then(|()| state.out.flush());
    match r {
        Ok(()) | Err(SinkError::Closed) => {}
        Err(e) => return Err(e.into()),
    }
    let why = match stop {
        Stop::Duration => "duration over".to_string(),
        Stop::Signal(s) => format!("{s} received"),
        Stop::OutputClosed => unreachable!("returned above"),
    };
    eprintln!("sendsight: {why}; all programs detached");
    Ok(())
}
