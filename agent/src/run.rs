//! `sendsight run`: load, attach, stream lines until the duration ends or a signal
//! arrives, then detach, drain, and print the summary.

use std::{
    collections::BTreeMap,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use agent_common::{
    event::{UdpQueueDrop, kind, udpq_flags},
    loss::{SLOT_NAMES, slot},
};
use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    clock::WallClock,
    engine::Limits,
    ingest::Ingest,
    metrics::Metrics,
    output::{
        json::{self, LossBody, StartBody, SummaryBody, Units},
        sink::{self, Sink, SinkError},
    },
    pipeline::{Pipeline, Shaping},
    probes::{self, Options},
    record::{self, Recorder},
};

#[derive(Clone, Debug)]
pub struct RunConfig {
    pub duration: Option<Duration>,
    pub probes: Options,
    pub limits: Limits,
    /// How often kernel loss counters are polled for `loss` lines.
    pub loss_interval: Duration,
    /// Write the raw event stream here (for `sendsight replay`).
    pub record: Option<PathBuf>,
    pub output: sink::Spec,
    /// Bound of a network sink's queue, in bytes.
    pub queue_bytes: usize,
    pub filter: crate::filter::Filter,
    pub rate_limit: u32,
    /// Serve Prometheus metrics here.
    pub metrics: Option<std::net::SocketAddr>,
    /// Render stdout for people (`--format text`); other sinks stay JSON.
    pub text: Option<crate::output::text::Options>,
}

/// Why the run ended, for the exit path.
enum Stop {
    Duration,
    Signal(&'static str),
    OutputClosed,
}

struct State {
    pipe: Pipeline,
    out: Sink,
    sink_reported: u64,
    rate_reported: u64,
    recorder: Option<Recorder>,
    kernel_reported: [u64; slot::COUNT as usize],
    decode_reported: u64,
    /// First sink error while handling a batch (the batch goes on being counted).
    failed: Option<SinkError>,
    /// Lines of the record being handled.
    scratch: Vec<u8>,
    lookups: crate::sysinfo::SockLookups,
    owners: crate::sysinfo::OwnerLookups,
    /// Per socket of the kernel's UDPQ map: drops the stream has carried, and the
    /// last drop whose quiet second the agent has reported.
    udpq_seen: std::collections::HashMap<u64, (u64, u64)>,
}

impl State {
    fn handle(&mut self, bytes: &[u8]) {
        // The kernel's answer goes into the stream (and the recording) just before
        // the record that needed it.
        if let Some(q) = self.pipe.question(bytes) {
            let answer = self.lookups.answer(q);
            self.handle_one(&crate::decode::encode(&answer));
        }
        if bytes.get(..2) == Some(&kind::UDP_QUEUE_DROP.to_ne_bytes()[..])
            && let Ok(crate::decode::Event::UdpQueueDrop(mut e)) = crate::decode::decode(bytes)
        {
            let seen = self.udpq_seen.entry(e.header.sk).or_default();
            seen.0 = seen.0.max(e.drops.saturating_add(e.mem_drops));
            self.udp_queue(&mut e);
            return;
        }
        self.handle_one(bytes);
    }

    /// A receive-queue record: the owner from /proc when no program knew it (the
    /// socket never sent and no reader was seen yet), written into the record so
    /// the recording carries it and a replay agrees.
    fn udp_queue(&mut self, e: &mut UdpQueueDrop) {
        if e.owner.pid == 0
            && e.inode != 0
            && let Some(o) = self.owners.owner(e.inode)
        {
            e.owner = o;
            e.flags |= udpq_flags::OWNER_FROM_PROC;
        }
        self.handle_one(&crate::decode::encode(e));
    }

    /// Sends the kernel's latest per-socket drop state through the stream, for the
    /// sockets whose counts grew since the stream last carried them (the kernel's
    /// records are rate-bounded), whose drops stopped a second ago (the episode's
    /// end), and all of them at the end of the run (`last`).
    fn flush_udp_queue(
        &mut self,
        map: &aya::maps::HashMap<aya::maps::MapData, u64, UdpQueueDrop>,
        last: bool,
    ) {
        let now = WallClock::monotonic_now();
        let mut out = Vec::new();
        let mut present = std::collections::HashSet::new();
        for (sk, mut e) in map.iter().flatten() {
            present.insert(sk);
            let total = e.drops.saturating_add(e.mem_drops);
            if total == 0 {
                continue;
            }
            let seen = self.udpq_seen.entry(sk).or_default();
            let grew = total > seen.0;
            let quiet = now.saturating_sub(e.last_ns)
                >= crate::engine::verdict::udp_queue::QUIET_NS
                && seen.1 != e.last_ns;
            if !(grew || quiet || (last && seen.1 != e.last_ns)) {
                continue;
            }
            seen.0 = total;
            if quiet || last {
                seen.1 = e.last_ns;
            }
            e.header.kind = kind::UDP_QUEUE_DROP;
            e.header.len = size_of::<UdpQueueDrop>() as u16;
            e.header.ts_ns = now;
            e.header.sk = sk;
            e.flags |= udpq_flags::AGENT;
            if last {
                e.flags |= udpq_flags::FINAL;
            }
            out.push(e);
        }
        // Bounded by the map: sockets the kernel forgot are forgotten here too.
        self.udpq_seen.retain(|sk, _| present.contains(sk));
        // In the order of their last drops: the stream stays ordered by what happened.
        out.sort_by_key(|e| (e.last_ns, e.header.sk));
        for mut e in out {
            self.udp_queue(&mut e);
        }
    }

    fn handle_one(&mut self, bytes: &[u8]) {
        if let Some(r) = &mut self.recorder
            && let Err(e) = r.write(bytes)
        {
            eprintln!("sendsight: error: recording stopped: {e}");
            self.recorder = None;
        }
        self.scratch.clear();
        let _ = self.pipe.record(bytes, &mut self.scratch);
        if !self.scratch.is_empty()
            && self.failed.is_none()
            && let Err(e) = self.out.push(&self.scratch)
        {
            self.failed = Some(e);
        }
    }

    fn now(&self) -> (String, i128) {
        let mono = WallClock::monotonic_now();
        (self.pipe.clock.rfc3339(mono), self.pipe.clock.unix_ns(mono))
    }

    /// Emits a `loss` line for every source whose count grew since the last report.
    fn report_loss(&mut self, kernel: [u64; slot::COUNT as usize]) -> Result<(), SinkError> {
        let (ts, ts_ns) = self.now();
        for (i, total) in kernel.iter().enumerate() {
            let before = self.kernel_reported[i];
            if *total > before {
                if let Some(m) = &self.pipe.metrics {
                    m.lost(SLOT_NAMES[i], total - before);
                }
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
                self.kernel_reported[i] = *total;
            }
        }
        if !self.pipe.allows_loss_lines() {
            self.kernel_reported = kernel;
            self.decode_reported = self.pipe.decode_errors;
            return self.out.flush();
        }
        for (source, now, before) in [
            ("sink", self.out.dropped(), &mut self.sink_reported),
            (
                "rate_limited",
                self.pipe.rate.dropped,
                &mut self.rate_reported,
            ),
        ] {
            if now > *before {
                let line = json::line(
                    "loss",
                    &ts,
                    ts_ns,
                    LossBody {
                        source,
                        lost: now - *before,
                        total: now,
                    },
                );
                if let Some(m) = &self.pipe.metrics
                    && source == "sink"
                {
                    m.lost(source, now - *before);
                }
                *before = now;
                self.out.push(&line)?;
            }
        }
        let decode = self.pipe.decode_errors;
        if decode > self.decode_reported {
            let line = json::line(
                "loss",
                &ts,
                ts_ns,
                LossBody {
                    source: "decode",
                    lost: decode - self.decode_reported,
                    total: decode,
                },
            );
            self.out.push(&line)?;
            self.decode_reported = decode;
        }
        self.out.flush()
    }
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

pub fn summary_line(
    pipe: &Pipeline,
    lost: &[u64; slot::COUNT as usize],
    sink_dropped: u64,
    duration_s: f64,
    ts: &str,
    ts_ns: i128,
) -> Vec<u8> {
    let mut lost_map = BTreeMap::new();
    for (i, n) in lost.iter().enumerate() {
        if *n > 0 || i <= slot::CONG_STATE as usize {
            lost_map.insert(SLOT_NAMES[i].to_string(), *n);
        }
    }
    lost_map.insert("decode".to_string(), pipe.decode_errors);
    lost_map.insert("sockets_evicted".to_string(), pipe.engine.sockets.evicted);
    lost_map.insert("sink".to_string(), sink_dropped);
    lost_map.insert("rate_limited".to_string(), pipe.rate.dropped);
    json::line(
        "summary",
        ts,
        ts_ns,
        SummaryBody {
            duration_s,
            events_total: pipe.counts.values().sum(),
            events: pipe.counts.clone(),
            // Not events: details of a send failure emitted without its syscall, and
            // udp_queue_drop records held back by their rate bound (their counts
            // arrive with the next record).
            lost_total: lost_map
                .iter()
                .filter(|(k, _)| *k != "send_error_details" && *k != "udp_queue_rate_bounded")
                .map(|(_, v)| v)
                .sum(),
            lost: lost_map,
            sockets_seen: pipe.engine.sockets.seen,
            verdicts: pipe.verdicts.clone(),
            send_verdicts_rate_limited: pipe.send_verdicts_rate_limited(),
        },
    )
}

pub async fn run(cfg: RunConfig) -> anyhow::Result<()> {
    let started = Instant::now();
    // First of all: a SIGTERM right after the start line (a supervisor, a test)
    // must take the clean path, not the default action.
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut loaded = probes::load(cfg.probes.clone())?;
    let clock = WallClock::from_system();
    let hz = crate::hz::kernel_hz();
    let kernel = kernel_release();
    let host = crate::host::Host::from_system();
    crate::host::set(host.clone());
    let metrics = cfg.metrics.map(|_| Arc::new(Metrics::default()));
    if let (Some(addr), Some(m)) = (cfg.metrics, &metrics) {
        let server = crate::metrics::serve(addr, m.clone())
            .await
            .with_context(|| format!("--metrics {addr}: cannot listen"))?;
        tokio::spawn(server);
        eprintln!("sendsight: metrics on http://{addr}/metrics (health: /healthz)");
    }
    let out = match (cfg.text, &cfg.output) {
        (Some(opts), sink::Spec::Stdout) => Sink::stdout_text(opts),
        _ => Sink::open(&cfg.output, cfg.queue_bytes)?,
    };
    let recorder = match &cfg.record {
        Some(path) => Some(Recorder::create(
            path,
            &record::Header {
                agent_version: env!("CARGO_PKG_VERSION").into(),
                kernel: kernel.clone(),
                clock_offset_ns: clock.offset_ns(),
                hz,
                host: Some(host),
            },
        )?),
        None => None,
    };
    let mut state = State {
        pipe: Pipeline::new(
            clock,
            Units { hz },
            cfg.limits,
            Shaping {
                filter: cfg.filter.clone(),
                rate_limit: cfg.rate_limit,
                metrics,
                enrich: Some(crate::sysinfo::enrich),
            },
        ),
        out,
        sink_reported: 0,
        rate_reported: 0,
        scratch: Vec::with_capacity(4096),
        lookups: Default::default(),
        owners: Default::default(),
        udpq_seen: Default::default(),
        recorder,
        kernel_reported: [0; slot::COUNT as usize],
        decode_reported: 0,
        failed: None,
    };

    for p in &loaded.report {
        eprintln!(
            "sendsight: probe {:<15} {:<11} {}{}{}",
            p.probe,
            format!("{:?}", p.state).to_lowercase(),
            p.attach,
            if p.note.is_empty() { "" } else { ": " },
            p.note
        );
    }
    if !loaded.core_ok() {
        anyhow::bail!(
            "this kernel lacks what sendsight needs for its core job (retransmits and send \
             errors); see `sendsight check`"
        );
    }
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
    let deadline = cfg.duration.map(|d| tokio::time::Instant::now() + d);
    let mut ticker = tokio::time::interval(cfg.loss_interval);
    // The programs skip the wakeup for small amounts of data (it costs µs per
    // event); this poll bounds the latency of a quiet ring to 20 ms.
    let mut poll = tokio::time::interval(Duration::from_millis(20));
    poll.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
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
                batch.drain(|bytes| state.handle(bytes));
                match state.failed.take().map_or_else(|| state.out.flush(), Err) {
                    Ok(()) => {}
                    Err(SinkError::Closed) => break Stop::OutputClosed,
                    Err(e) => return Err(e.into()),
                }
            }
            _ = poll.tick() => {
                ingest.poll(|bytes| state.handle(bytes));
                match state.failed.take().map_or_else(|| state.out.flush(), Err) {
                    Ok(()) => {}
                    Err(SinkError::Closed) => break Stop::OutputClosed,
                    Err(e) => return Err(e.into()),
                }
            }
            _ = ticker.tick() => {
                state.pipe.engine.tick(WallClock::monotonic_now());
                // What the ring holds first: the map read is newer than any of it.
                ingest.poll(|bytes| state.handle(bytes));
                state.flush_udp_queue(&loaded.udpq, false);
                if let Some(e) = state.failed.take() {
                    match e {
                        SinkError::Closed => break Stop::OutputClosed,
                        e => return Err(e.into()),
                    }
                }
                if let Some(m) = &state.pipe.metrics {
                    m.sockets.set(state.pipe.engine.sockets.len() as i64);
                }
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
    ingest.drain_now(|bytes| state.handle(bytes));
    state.flush_udp_queue(&loaded.udpq, true);
    if let Some(r) = &mut state.recorder
        && let Err(e) = r.flush()
    {
        eprintln!("sendsight: error: {e}");
    }
    let lost = loaded.lost_counts();
    let end = state.report_loss(lost);
    let (ts, ts_ns) = state.now();
    let summary = summary_line(
        &state.pipe,
        &lost,
        state.out.dropped(),
        started.elapsed().as_secs_f64(),
        &ts,
        ts_ns,
    );
    let r = state
        .failed
        .take()
        .map_or(end, Err)
        .and_then(|()| state.out.push(&summary))
        .and_then(|()| state.out.flush());
    state.out.close(Duration::from_secs(2)).await;
    match r {
        Ok(()) | Err(SinkError::Closed) => {}
        Err(e) => return Err(e.into()),
    }
    // Also on stderr: when the output itself is what failed (disk full, collector
    // gone), this is where the operator still sees what was lost.
    let sink_lost = state.out.dropped();
    eprintln!(
        "sendsight: summary: {} events, {} verdicts, lost: kernel {}, decode {}, sink {}, \
         rate-limited {}",
        state.pipe.counts.values().sum::<u64>(),
        state.pipe.verdicts.values().sum::<u64>(),
        lost.iter().take(slot::CONG_STATE as usize + 1).sum::<u64>(),
        state.pipe.decode_errors,
        sink_lost,
        state.pipe.rate.dropped
    );
    let why = match stop {
        Stop::Duration => "duration over".to_string(),
        Stop::Signal(s) => format!("{s} received"),
        Stop::OutputClosed => unreachable!("returned above"),
    };
    eprintln!("sendsight: {why}; all programs detached");
    Ok(())
}
