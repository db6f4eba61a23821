//! `sendsight run`: load, attach, stream lines until the duration ends or a signal
//! arrives, then detach, drain, and print the summary.

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use agent_common::{
    event::{ClockStep, Header, Kind, LossReport, UdpQueueDrop, udpq_flags},
    loss::slot,
};
use anyhow::Context as _;
use tokio::signal::unix::{SignalKind, signal};

use crate::{
    clock::WallClock,
    engine::Limits,
    ingest::Ingest,
    ledger::Source,
    metrics::Metrics,
    output::{
        json::{self, StartBody, Units},
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
    /// Rotate the recording beyond this many bytes (0: never).
    pub record_max_bytes: u64,
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
    /// Writing the output failed (not a reader that went away): the run ends with
    /// this error, after the stderr summary.
    OutputFailed(SinkError),
    /// Waiting on the transport failed.
    Transport(std::io::Error),
}

struct State {
    pipe: Pipeline,
    out: Sink,
    recorder: Option<Recorder>,
    /// Kernel loss counters as last put into the stream.
    kernel_seen: [u64; slot::COUNT as usize],
    /// First sink error while handling a batch (the batch goes on being counted).
    failed: Option<SinkError>,
    /// Lines of the record being handled.
    scratch: Vec<u8>,
    lookups: crate::system::sysinfo::SockLookups,
    /// The output is gone (closed or failed): lines are counted, not written.
    dead: bool,
    /// Lines never handed to the output (after it failed).
    unprinted: u64,
    owners: crate::system::sysinfo::OwnerLookups,
    /// Per socket of the kernel's UDPQ map: drops the stream has carried, and the
    /// last drop whose quiet second the agent has reported.
    udpq_seen: std::collections::HashMap<u64, (u64, u64)>,
}

/// A wall-clock step (NTP, `date -s`) larger than this re-bases the timestamps
/// (`ClockStep`). NTP daemons step at 128 ms and more, slew below; a smaller move is
/// more likely the two clock reads being preempted apart.
const CLOCK_STEP_NS: i128 = 100_000_000;

impl State {
    fn handle(&mut self, bytes: &[u8]) {
        // The kernel's answer goes into the stream (and the recording) just before
        // the record that needed it.
        if let Some(q) = self.pipe.question(bytes) {
            let answer = self.lookups.answer(q);
            self.handle_one(&crate::decode::encode(&answer));
        }
        if bytes.get(..2) == Some(&(Kind::UdpQueueDrop as u16).to_ne_bytes()[..])
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
            // The program counts a socket's first drop, then fills in its flow, owner
            // and header and emits it: until the header is there, the entry is half
            // written and its first record is on its way through the ring.
            if total == 0 || e.header.kind != Kind::UdpQueueDrop as u16 {
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
            e.header = Header::new::<UdpQueueDrop>(0, now, sk);
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
        // The agent's own connections are neither traced nor recorded (a replay
        // then agrees with the live run).
        if self.pipe.is_own(bytes) {
            return;
        }
        if let Some(r) = &mut self.recorder
            && let Err(e) = r.write(bytes)
        {
            eprintln!("sendsight: error: recording stopped: {e}");
            self.recorder = None;
        }
        self.scratch.clear();
        let _ = self.pipe.record(bytes, &mut self.scratch);
        self.push_scratch();
    }

    /// The lines of the record just handled go out; when the output has failed
    /// (or is gone), they are counted instead.
    fn push_scratch(&mut self) {
        if self.scratch.is_empty() {
            return;
        }
        if self.dead || self.failed.is_some() {
            self.unprinted += sink::lines_in(&self.scratch);
        } else if let Err(e) = self.out.push(&self.scratch) {
            self.unprinted += sink::lines_in(&self.scratch);
            self.failed = Some(e);
        }
    }

    /// Lines the output did not take: its own count, and what was never handed to it.
    fn sink_lost(&self) -> u64 {
        self.out.dropped() + self.unprinted
    }

    fn now(&self) -> (String, i128) {
        let mono = WallClock::monotonic_now();
        (self.pipe.clock.rfc3339(mono), self.pipe.clock.unix_ns(mono))
    }

    /// The agent's bookkeeping, on the ticker: kernel loss counters that grew go
    /// into the stream as `LossReport` records (recorded, so a replay's ledger says
    /// the same), a stepped wall clock as a `ClockStep`; then `loss` lines for
    /// every source that grew.
    fn bookkeeping(&mut self, kernel: [u64; slot::COUNT as usize]) -> Result<(), SinkError> {
        let now = WallClock::monotonic_now();
        let offset = WallClock::from_system().offset_ns();
        if (offset - self.pipe.clock.offset_ns()).abs() > CLOCK_STEP_NS {
            let step = ClockStep {
                header: Header::new::<ClockStep>(0, now, 0),
                offset_ns: offset as i64,
            };
            self.handle_one(&crate::decode::encode(&step));
        }
        for (i, total) in kernel.iter().enumerate() {
            if *total > self.kernel_seen[i] {
                let report = LossReport {
                    header: Header::new::<LossReport>(0, now, 0),
                    slot: i as u32,
                    _reserved: 0,
                    total: *total,
                };
                self.handle_one(&crate::decode::encode(&report));
                self.kernel_seen[i] = *total;
            }
        }
        self.pipe.ledger.set(Source::Sink, self.sink_lost());
        self.scratch.clear();
        self.pipe.report_loss(now, &mut self.scratch);
        self.push_scratch();
        match self.failed.take() {
            Some(e) => Err(e),
            None => self.out.flush(),
        }
    }
}

/// The agent's own endpoints: the metrics listener, a TCP collector (its name
/// resolved now).
fn own_endpoints(cfg: &RunConfig) -> crate::pipeline::Own {
    use std::net::ToSocketAddrs;
    crate::pipeline::Own {
        netns: crate::system::own_netns(),
        listen: cfg.metrics.into_iter().collect(),
        peers: match &cfg.output {
            sink::Spec::Tcp(a) => a.to_socket_addrs().map(|i| i.collect()).unwrap_or_default(),
            _ => Vec::new(),
        },
    }
}

pub async fn run(cfg: RunConfig) -> anyhow::Result<()> {
    let started = Instant::now();
    // First of all: a SIGTERM right after the start line (a supervisor, a test)
    // must take the clean path, not the default action.
    let mut sigint = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    let mut sigterm = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut loaded = probes::load(cfg.probes.clone())?;
    // Loading parsed the kernel's BTF (megabytes, freed now): give the heap back rather
    // than carry it as resident memory for the agent's whole life.
    #[cfg(target_env = "gnu")]
    unsafe {
        libc::malloc_trim(0);
    }
    let clock = WallClock::from_system();
    let hz = crate::system::hz::kernel_hz();
    let kernel = crate::system::kernel_release();
    let host = crate::system::host::Host::from_system();
    crate::system::host::set(host.clone());
    let metrics = cfg.metrics.map(|_| Arc::new(Metrics::default()));
    if let (Some(addr), Some(m)) = (cfg.metrics, &metrics) {
        crate::metrics::spawn(addr, m.clone())
            .with_context(|| format!("--metrics {addr}: cannot listen"))?;
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
            cfg.record_max_bytes,
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
                enrich: Some(crate::system::sysinfo::enrich),
                own: own_endpoints(&cfg),
            },
        ),
        out,
        scratch: Vec::with_capacity(4096),
        lookups: Default::default(),
        owners: Default::default(),
        udpq_seen: Default::default(),
        recorder,
        kernel_seen: [0; slot::COUNT as usize],
        failed: None,
        dead: false,
        unprinted: 0,
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
                transport: &loaded.transport,
                probes: &loaded.report,
            },
        );
        state.out.push(&start)?;
        state.out.flush().ok();
    }

    let events = loaded.events.take().context("transport already taken")?;
    eprintln!(
        "sendsight: transport {} ({}){}",
        loaded.transport.kind.name(),
        loaded.transport.why,
        match &events {
            probes::Events::Ring(_) => String::new(),
            probes::Events::Perf { buffers, pages, .. } => {
                format!(", {pages} page(s) per CPU on {} CPUs", buffers.len())
            }
        }
    );
    let mut ingest = Ingest::new(events).context("registering the transport with tokio")?;
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
        let written = tokio::select! {
            batch = ingest.ready() => {
                match batch {
                    Ok(batch) => {
                        batch.drain(|bytes| state.handle(bytes));
                        state.failed.take().map_or_else(|| state.out.flush(), Err)
                    }
                    Err(e) => break Stop::Transport(e),
                }
            }
            _ = poll.tick() => {
                ingest.poll(|bytes| state.handle(bytes));
                state.failed.take().map_or_else(|| state.out.flush(), Err)
            }
            _ = ticker.tick() => {
                state.pipe.engine.tick(WallClock::monotonic_now());
                // What the ring holds first: the map read is newer than any of it.
                ingest.poll(|bytes| state.handle(bytes));
                state.flush_udp_queue(&loaded.udpq, false);
                if let Some(m) = &state.pipe.metrics {
                    m.sockets.set(state.pipe.engine.sockets.len() as i64);
                }
                if let Some(n) = loaded.skipped_runs() {
                    state.pipe.ledger.set(Source::ProgramRunsSkipped, n);
                }
                state.bookkeeping(loaded.lost_counts())
            }
            _ = sleep => break Stop::Duration,
            _ = sigint.recv() => break Stop::Signal("SIGINT"),
            _ = sigterm.recv() => break Stop::Signal("SIGTERM"),
        };
        match written {
            Ok(()) => {}
            Err(SinkError::Closed) => break Stop::OutputClosed,
            Err(e) => break Stop::OutputFailed(e),
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

    // The last read of what the kernel skipped: after `detach` the programs are gone.
    if let Some(n) = loaded.skipped_runs() {
        state.pipe.ledger.set(Source::ProgramRunsSkipped, n);
    }
    loaded.detach();
    // Programs already running when the links went finish on their own: give them
    // a moment before the last drain and the last read of the counters.
    tokio::time::sleep(Duration::from_millis(20)).await;
    // What is still parked never meets its syscall exit now (the maps outlive the
    // programs; nothing moves them any more).
    let parked = loaded.pending_count();
    let writable = matches!(stop, Stop::Duration | Stop::Signal(_) | Stop::Transport(_));
    // The output gone, what is left is still judged, recorded and counted.
    state.dead = !writable;
    ingest.drain_now(|bytes| state.handle(bytes));
    state.flush_udp_queue(&loaded.udpq, true);
    state.pipe.ledger.set(Source::SendParkedAtExit, parked);
    let end = state.bookkeeping(loaded.lost_counts());
    let end = if writable { end } else { Ok(()) };
    if let Some(r) = &mut state.recorder
        && let Err(e) = r.flush()
    {
        eprintln!("sendsight: error: {e}");
    }
    state.pipe.perf_buffer_lost = ingest.transport_lost();
    let mono = WallClock::monotonic_now();
    let summary = state
        .pipe
        .summary_line(started.elapsed().as_secs_f64(), mono);
    let r = end
        .and_then(|()| {
            if writable {
                state.out.push(&summary)
            } else {
                Ok(())
            }
        })
        .and_then(|()| state.out.flush());
    state.out.close(Duration::from_secs(2)).await;
    // What the close could not deliver is in the stderr summary (the summary line
    // itself may be what was lost).
    state.pipe.ledger.set(Source::Sink, state.sink_lost());
    eprintln!("{}", state.pipe.stderr_summary());
    if let Some(buffers) = ingest.transport_lost() {
        eprintln!(
            "sendsight: {}",
            perf_cross_check(buffers, &loaded.lost_counts())
        );
    }
    let why = match stop {
        Stop::Duration => "duration over".to_string(),
        Stop::Signal(s) => format!("{s} received"),
        Stop::OutputClosed => "output closed by its reader".to_string(),
        Stop::OutputFailed(e) => {
            eprintln!("sendsight: all programs detached");
            return Err(e.into());
        }
        Stop::Transport(e) => {
            eprintln!("sendsight: all programs detached");
            return Err(anyhow::Error::new(e).context("waiting on the transport"));
        }
    };
    match r {
        Ok(()) | Err(SinkError::Closed) => {}
        Err(e) => return Err(e.into()),
    }
    eprintln!("sendsight: {why}; all programs detached");
    Ok(())
}

/// The perf buffers' own count of lost samples next to the programs' count of
/// outputs that found no room. The ledger has only the programs' count (per record
/// kind, so exact per kind); the buffers' is a cross-check, never added to it. The
/// programs' count can be higher (a fourth nested program on one CPU, a full
/// `UDPQ` state map are counted in the same slots), never lower.
fn perf_cross_check(buffers: u64, kernel: &[u64; slot::COUNT as usize]) -> String {
    let programs: u64 = [
        slot::RETRANSMIT,
        slot::SEND_ERROR,
        slot::ICMP,
        slot::SOCKET_STATE,
        slot::SOCKET_ERROR,
        slot::CONG_STATE,
        slot::UDP_SEND,
        slot::UDP_QUEUE,
    ]
    .iter()
    .map(|&s| kernel[s as usize])
    .sum();
    let verdict = match buffers.cmp(&programs) {
        std::cmp::Ordering::Equal => "equal",
        std::cmp::Ordering::Less => {
            "they differ: a buffer reports its losses only with its next sample, and the \
             programs also count nesting and UDP state-map refusals there"
        }
        std::cmp::Ordering::Greater => {
            "they differ: the buffers lost more than the programs counted, the loss \
             figures are short by the difference"
        }
    };
    format!(
        "perf buffers: {buffers} samples lost (the kernel's count); the programs counted \
         {programs} outputs without room (the ledger's count): {verdict}"
    )
}
