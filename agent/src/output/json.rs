//! The JSON line vocabulary. Every line: `schema`, `type`, `ts` (RFC 3339, UTC, ns)
//! and `ts_ns` (the same instant as Unix-epoch nanoseconds), then the type's body.

use std::{collections::BTreeMap, net::IpAddr, sync::OnceLock};

use agent_common::event::{
    Flow, Owner, icmp_source, retransmit_flags, send_flags, send_source, udpq_flags,
};
use schemars::JsonSchema;
use serde::Serialize;

use super::{SCHEMA, fields::Fields};
use crate::{
    clock::{SecondCache, WallClock},
    decode::Event,
    engine::{
        Annotated, Emit, PathLine, Verdict,
        path::PathEvidence,
        verdict::{Confidence, Evidence, Kind},
    },
    net,
    system::errno,
};

/// The envelope every line shares; the body's fields follow at the same level.
#[derive(Serialize, JsonSchema)]
pub struct Line<'a, B: Serialize> {
    #[schemars(schema_with = "crate::schema::schema_version")]
    pub schema: &'static str,
    #[serde(rename = "type")]
    #[schemars(schema_with = "crate::schema::line_type")]
    pub kind: &'static str,
    /// RFC 3339, UTC, nanoseconds.
    #[schemars(
        extend("format" = "date-time"),
        regex(pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{9}Z$")
    )]
    pub ts: &'a str,
    /// The same instant as Unix-epoch nanoseconds.
    #[schemars(extend("x-otel" = "Timestamp"))]
    pub ts_ns: i128,
    /// Who is speaking: the host's name and boot id (a replay prints the recorded
    /// host's).
    pub host: &'static crate::system::host::Host,
    /// Version of the sendsight binary that printed the line.
    #[schemars(length(min = 1), extend("x-otel" = "service.version"))]
    pub agent_version: &'static str,
    #[serde(flatten)]
    pub body: B,
}

pub fn line<B: Serialize>(kind: &'static str, ts: &str, ts_ns: i128, body: B) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    line_into(&mut out, kind, ts, ts_ns, body);
    out
}

/// Appends one line to `out` (no allocation of its own).
pub fn line_into<B: Serialize>(
    out: &mut Vec<u8>,
    kind: &'static str,
    ts: &str,
    ts_ns: i128,
    body: B,
) {
    let start = out.len();
    let mut w = Fields::new(out);
    envelope(&mut w, kind, ts.as_bytes(), ts_ns);
    let r = w.serde(&body);
    drop(w);
    finish(out, start, r);
}

/// The fields of [`Line`] before the body's, with `host` serialized once. `ts`
/// comes from the clock's formatting (digits and punctuation: no escapes).
#[inline]
fn envelope(w: &mut Fields, kind: &'static str, ts: &[u8], ts_ns: i128) {
    static TAIL: OnceLock<Vec<u8>> = OnceLock::new();
    // The host is fixed once read (a replay sets the recorded one before).
    let tail = TAIL.get_or_init(|| {
        let mut tail = Vec::new();
        let mut w = Fields::new(&mut tail);
        w.key("host");
        w.serde_value(crate::system::host::get());
        w.str("agent_version", env!("CARGO_PKG_VERSION"));
        drop(w);
        tail
    });
    w.raw(b"{\"schema\":");
    w.name_value(SCHEMA);
    w.name("type", kind);
    w.key("ts");
    w.raw(b"\"");
    w.raw(ts);
    w.raw(b"\"");
    // As i64 when it fits (always, short of a corrupt offset): i128 formatting is
    // several times slower.
    match i64::try_from(ts_ns) {
        Ok(ns) => w.int("ts_ns", ns),
        Err(_) => w.big_int("ts_ns", ts_ns),
    }
    w.raw(tail);
}

fn finish(out: &mut Vec<u8>, start: usize, r: Result<(), sonic_rs::Error>) {
    match r {
        Ok(()) => out.push(b'}'),
        Err(e) => {
            out.truncate(start);
            out.extend_from_slice(
                format!(
                    "{{\"schema\":\"{SCHEMA}\",\"type\":\"internal_error\",\"error\":\"{e}\"}}"
                )
                .as_bytes(),
            );
        }
    }
    out.push(b'\n');
}

/// One end of a flow.
#[derive(Serialize, JsonSchema, Clone, Debug, PartialEq, Eq)]
#[schemars(rename = "endpoint")]
pub struct Endpoint {
    pub ip: IpAddr,
    pub port: u16,
}

#[derive(Serialize, JsonSchema, Clone, PartialEq)]
pub struct FlowBody {
    #[schemars(schema_with = "crate::schema::family", extend("x-otel" = "network.type"))]
    pub family: &'static str,
    #[schemars(
        schema_with = "crate::schema::protocol",
        extend("x-otel" = "network.transport")
    )]
    pub protocol: &'static str,
    /// This host's end of the flow.
    #[schemars(extend("x-otel" = {"ip": "network.local.address", "port": "network.local.port"}))]
    pub local: Endpoint,
    /// The far end of the flow.
    #[schemars(extend("x-otel" = {"ip": "network.peer.address", "port": "network.peer.port"}))]
    pub peer: Endpoint,
    /// A well-known service recognised from the flow ("ike": UDP 500/4500).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "crate::schema::service")]
    pub service: Option<&'static str>,
}

impl From<&Flow> for FlowBody {
    fn from(f: &Flow) -> Self {
        FlowBody {
            family: net::family_name(f.family),
            protocol: net::protocol_name(f.protocol),
            local: Endpoint {
                ip: net::local_ip(f),
                port: f.sport,
            },
            peer: Endpoint {
                ip: net::peer_ip(f),
                port: f.dport,
            },
            service: net::service(f),
        }
    }
}

/// The process behind the socket: the caller for process-context events, the
/// socket's recorded owner for softirq ones.
#[derive(Serialize, JsonSchema, PartialEq)]
#[schemars(rename = "process")]
pub struct Process<'a> {
    /// Thread group id (what userspace calls the pid).
    #[schemars(extend("x-otel" = "process.pid"))]
    pub pid: u32,
    /// Thread id.
    #[schemars(extend("x-otel" = "thread.id"))]
    pub tid: u32,
    /// Thread name (kernel comm, at most 15 bytes).
    #[schemars(length(max = 64), extend("x-otel" = "thread.name"))]
    pub comm: std::borrow::Cow<'a, str>,
    /// cgroup v2 id (inode of the cgroup directory).
    pub cgroup_id: u64,
}

impl<'a> From<&'a Owner> for Process<'a> {
    fn from(o: &'a Owner) -> Self {
        let end = o.comm.iter().position(|&b| b == 0).unwrap_or(o.comm.len());
        Process {
            pid: o.pid,
            tid: o.tid,
            // from_utf8's ASCII fast path first: names are nearly always valid,
            // and the lossy decoder walks them chunk by chunk (per event line).
            comm: match std::str::from_utf8(&o.comm[..end]) {
                Ok(s) => std::borrow::Cow::Borrowed(s),
                Err(_) => String::from_utf8_lossy(&o.comm[..end]),
            },
            cgroup_id: o.cgroup,
        }
    }
}

/// Fields every socket event shares.
#[derive(Serialize, JsonSchema, PartialEq)]
pub struct SocketBody<'a> {
    /// Stable id of the socket for this run (null: no socket sendsight knows).
    pub sock: Option<u64>,
    #[serde(flatten)]
    pub flow: FlowBody,
    pub process: Option<Process<'a>>,
    /// Network namespace inode (absent when unknown).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u32")]
    pub netns: Option<u32>,
    /// What the fields above are made from: comparing these raw values is what
    /// lets [`Sockets`] reuse a line's socket part without comparing addresses and
    /// names field by field.
    #[serde(skip)]
    #[schemars(skip)]
    key: SockKey,
}

#[derive(Clone, Copy, PartialEq)]
struct SockKey {
    sock: Option<u64>,
    flow: Flow,
    owner: Option<Owner>,
    netns: u32,
}

fn socket_body<'a>(a: &'a Annotated, flow: &Flow, netns: u32) -> SocketBody<'a> {
    SocketBody {
        sock: a.sock,
        flow: FlowBody::from(flow),
        process: a.owner.as_ref().map(Process::from),
        netns: (netns != 0).then_some(netns),
        key: SockKey {
            sock: a.sock,
            flow: *flow,
            owner: a.owner,
            netns,
        },
    }
}

#[derive(Serialize, JsonSchema)]
pub struct RetransmitBody<'a> {
    #[serde(flatten)]
    pub socket: SocketBody<'a>,
    #[schemars(
        schema_with = "crate::schema::tcp_state",
        extend("x-otel" = "network.connection.state")
    )]
    pub state: &'static str,
    /// "rto", "fast", "tlp", "other".
    #[schemars(schema_with = "crate::schema::retransmit_kind")]
    pub kind: &'static str,
    /// Segments in the retransmitted skb (the kernel's counters count these).
    pub segs: u32,
    /// Payload bytes in the skb (null: the skb could not be read).
    pub bytes: Option<u32>,
    /// Bytes per segment (null: the skb could not be read).
    pub seg_len: Option<u32>,
    pub seq: Option<u32>,
    pub mss: Option<u32>,
    /// Path MTU the socket last synced to.
    pub pmtu: Option<u32>,
    #[schemars(range(min = 0))]
    pub rto_ms: Option<f64>,
    pub backoff: u8,
    /// Written but not yet acknowledged bytes.
    pub snd_queue: Option<u32>,
    pub srtt_us: Option<u32>,
    pub cwnd: Option<u32>,
    #[schemars(schema_with = "crate::schema::ca_state")]
    pub ca_state: &'static str,
    /// Transmit result, on kernels whose tracepoint reports it (absent otherwise).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "i32")]
    pub err: Option<i32>,
    #[schemars(extend("x-otel" = "cpu.logical_number"))]
    pub cpu: u32,
}

/// The hooks a send error can be seen by: the socket layer, the syscall exit.
pub const SEND_SOURCES: [&str; 2] = ["socket", "syscall"];

#[derive(Serialize, JsonSchema)]
pub struct SendErrorBody<'a> {
    #[serde(flatten)]
    pub socket: SocketBody<'a>,
    /// The TCP socket's state (null: not a TCP socket, or none known).
    #[schemars(
        schema_with = "crate::schema::tcp_state_or_null",
        extend("x-otel" = "network.connection.state")
    )]
    pub state: Option<&'static str>,
    pub errno: i32,
    #[schemars(
        schema_with = "crate::schema::errno_name",
        extend("x-otel" = "error.type")
    )]
    pub errno_name: std::borrow::Cow<'static, str>,
    #[schemars(schema_with = "crate::schema::errno_text")]
    pub errno_text: &'static str,
    /// Bytes the failing call asked to send, when known.
    pub bytes: Option<u32>,
    #[schemars(schema_with = "crate::schema::syscall_or_null")]
    pub syscall: Option<&'static str>,
    /// Which hooks saw it: "socket" (the socket layer), "syscall" (the syscall exit).
    #[schemars(schema_with = "crate::schema::send_sources")]
    pub source: &'static [&'static str],
}

/// Who sent a too-big message: this host got it, or this host (a router) sent it.
pub const ICMP_SOURCES: [&str; 2] = ["received", "sent"];

#[derive(Serialize, JsonSchema)]
pub struct IcmpBody<'a> {
    /// Stable id of the socket for this run (null: no socket sendsight knows).
    pub sock: Option<u64>,
    /// "received": this host got the message; "sent": this host (a router) sent it.
    #[schemars(schema_with = "crate::schema::icmp_source")]
    pub source: &'static str,
    /// Next-hop MTU reported (null when not known: locally sent messages).
    pub mtu: Option<u32>,
    /// Who sent the message (null for "sent").
    pub router: Option<IpAddr>,
    #[serde(flatten)]
    pub flow: FlowBody,
    /// TCP sequence number quoted in the message.
    pub seq: Option<u32>,
    pub process: Option<Process<'a>>,
    pub icmp_type: u8,
    pub icmp_code: u8,
    /// Network namespace inode (absent when unknown).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u32")]
    pub netns: Option<u32>,
    /// Interface the message came in on or left by (absent when unknown).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u32")]
    pub ifindex: Option<u32>,
}

#[derive(Serialize, JsonSchema)]
pub struct StateBody<'a> {
    #[serde(flatten)]
    pub socket: SocketBody<'a>,
    #[schemars(
        schema_with = "crate::schema::tcp_state",
        extend("x-otel" = "network.connection.state")
    )]
    pub old_state: &'static str,
    #[schemars(
        schema_with = "crate::schema::tcp_state",
        extend("x-otel" = "network.connection.state")
    )]
    pub new_state: &'static str,
}

#[derive(Serialize, JsonSchema)]
pub struct SocketErrorBody<'a> {
    /// Stable id of the socket for this run (null: no socket sendsight knows).
    pub sock: Option<u64>,
    #[serde(flatten)]
    pub flow: FlowBody,
    pub process: Option<Process<'a>>,
    pub errno: i32,
    #[schemars(
        schema_with = "crate::schema::errno_name",
        extend("x-otel" = "error.type")
    )]
    pub errno_name: std::borrow::Cow<'static, str>,
    #[schemars(schema_with = "crate::schema::errno_text")]
    pub errno_text: &'static str,
}

#[derive(Serialize, JsonSchema)]
pub struct UdpSendBody<'a> {
    #[serde(flatten)]
    pub socket: SocketBody<'a>,
    /// Payload bytes of the datagram.
    pub bytes: u32,
}

/// A peer in a `udp_queue_drop` line.
#[derive(Serialize, JsonSchema)]
#[schemars(rename = "peer_count")]
pub struct PeerCount {
    pub ip: IpAddr,
    pub port: u16,
    pub dropped: u64,
}

/// Who made a `udp_queue_drop` line: a program (`kernel`), or the agent reading the
/// kernel's map (`agent`).
pub const UDP_QUEUE_ORIGINS: [&str; 2] = ["kernel", "agent"];

#[derive(Serialize, JsonSchema)]
pub struct UdpQueueBody<'a> {
    #[serde(flatten)]
    pub socket: SocketBody<'a>,
    /// Datagrams dropped at the full receive queue (rc -ENOMEM: what the kernel counts
    /// as Udp RcvbufErrors) since the agent started (cumulative: the latest line is
    /// exact whatever was suppressed).
    pub dropped: u64,
    /// Other enqueue failures (the protocol's memory limit, MemErrors), cumulative.
    pub memory_drops: u64,
    /// The socket's own drop counter (sk_drops), since the socket was created.
    pub socket_drops: Option<u32>,
    /// sk_rcvbuf: the receive buffer limit in bytes.
    pub rcvbuf: Option<u32>,
    /// Bytes queued (sk_rmem_alloc) at the last drop.
    pub queued: Option<u32>,
    /// Size of the last dropped datagram, headers included.
    pub last_datagram_bytes: Option<u32>,
    /// The first sources of dropped datagrams, with their counts.
    #[schemars(length(max = agent_common::event::UDP_QUEUE_PEERS))]
    pub peers: Vec<PeerCount>,
    /// Drops from other sources, or whose source could not be read.
    pub other_peers_dropped: u64,
    /// sock_exceed_buf_limit hits, send and receive side, cumulative.
    pub send_limit_hits: u32,
    pub recv_limit_hits: u32,
    /// Records for this socket not emitted (rate bound), cumulative.
    pub suppressed: u64,
    /// `kernel` (a program emitted it), `agent` (read from the kernel's map by the
    /// agent: every second while counts change, and at the end of the run).
    #[schemars(schema_with = "crate::schema::udp_queue_origin")]
    pub origin: &'static str,
}

#[derive(Serialize, JsonSchema)]
pub struct CongBody<'a> {
    #[serde(flatten)]
    pub socket: SocketBody<'a>,
    #[schemars(schema_with = "crate::schema::ca_state")]
    pub ca_state: &'static str,
}

/// How to render kernel units.
#[derive(Clone, Copy, Debug)]
pub struct Units {
    /// Kernel HZ (jiffies per second), when known.
    pub hz: Option<u32>,
}

fn known<T: Copy>(ok: bool, v: T) -> Option<T> {
    ok.then_some(v)
}

#[derive(Serialize, JsonSchema)]
pub struct VerdictBody<'a> {
    pub verdict: Kind,
    /// Raised (and the verdict repeated) as evidence grows.
    pub confidence: Confidence,
    /// Stable id of the socket for this run (null: no socket sendsight knows).
    pub sock: Option<u64>,
    #[serde(flatten)]
    pub flow: FlowBody,
    pub process: Option<Process<'a>>,
    #[schemars(schema_with = "crate::schema::evidence_object")]
    pub evidence: &'a Evidence,
    /// What to do about it, in words.
    #[schemars(length(min = 1))]
    pub advice: &'a str,
}

#[derive(Serialize, JsonSchema)]
pub struct PathBody<'a> {
    #[schemars(schema_with = "crate::schema::path_verdict")]
    pub verdict: Kind,
    /// Destination prefix the sockets share (IPv4 /24, IPv6 /64).
    #[schemars(regex(pattern = r"^([0-9]{1,3}(\.[0-9]{1,3}){3}/24|[0-9a-f:]+/64)$"))]
    pub destination: &'a str,
    /// The sockets that reached it (at most 64 listed).
    #[schemars(length(min = 2, max = 64), extend("uniqueItems" = true))]
    pub sockets: &'a [u64],
    pub evidence: &'a PathEvidence,
}

pub fn verdict(out: &mut Vec<u8>, clock: &WallClock, v: &Verdict) {
    line_into(
        out,
        "verdict",
        &clock.rfc3339(v.ts_ns),
        clock.unix_ns(v.ts_ns),
        VerdictBody {
            verdict: v.kind(),
            confidence: v.confidence,
            sock: v.sock,
            flow: FlowBody::from(&v.flow),
            process: v.owner.as_ref().map(Process::from),
            evidence: &v.evidence,
            advice: &super::advice::advice(v),
        },
    )
}

pub fn path(out: &mut Vec<u8>, clock: &WallClock, p: &PathLine) {
    line_into(
        out,
        "path",
        &clock.rfc3339(p.ts_ns),
        clock.unix_ns(p.ts_ns),
        PathBody {
            verdict: p.verdict,
            destination: &p.destination,
            sockets: &p.sockets,
            evidence: &p.evidence,
        },
    )
}

/// Any engine output as a JSON line.
pub fn emit(clock: &WallClock, units: Units, e: &Emit) -> Vec<u8> {
    let mut out = Vec::with_capacity(512);
    Sockets::none().emit_into(&mut out, clock, units, e);
    out
}

/// Each recent socket's fields (sock, flow, process, netns) as written: the same on
/// every line about the socket, and a third of an event line. Direct-mapped by
/// socket id: a socket's events come in bursts.
pub struct Sockets {
    slots: Vec<Option<(SockKey, Vec<u8>)>>,
    /// The last second's date and time, for the lines' `ts`.
    second: SecondCache,
    /// The last `rto_ms` written (its bits, and its JSON): a socket's RTO rarely
    /// changes, and shortest-round-trip float formatting is not cheap.
    rto: Option<(u64, Vec<u8>)>,
}

impl Sockets {
    pub fn new() -> Self {
        Self {
            slots: (0..1024).map(|_| None).collect(),
            second: SecondCache::default(),
            rto: None,
        }
    }

    /// Remembers nothing (one-off lines).
    fn none() -> Self {
        Self {
            slots: Vec::new(),
            second: SecondCache::default(),
            rto: None,
        }
    }

    /// Appends any engine output as a JSON line to `out`.
    pub fn emit_into(&mut self, out: &mut Vec<u8>, clock: &WallClock, units: Units, e: &Emit) {
        match e {
            Emit::Event(a) => event(out, clock, units, a, self),
            Emit::Verdict(v) => verdict(out, clock, v),
            Emit::Path(p) => path(out, clock, p),
        }
    }

    #[inline]
    fn write(&mut self, w: &mut Fields, socket: &SocketBody) {
        if self.slots.is_empty() {
            return socket.write(w);
        }
        let i = (socket.sock.unwrap_or(0) % self.slots.len() as u64) as usize;
        if let Some((known, bytes)) = &self.slots[i]
            && *known == socket.key
        {
            return w.raw(bytes);
        }
        let mut bytes = self.slots[i].take().map(|(_, b)| b).unwrap_or_default();
        bytes.clear();
        socket.write(&mut Fields::new(&mut bytes));
        w.raw(&bytes);
        self.slots[i] = Some((socket.key, bytes));
    }

    #[inline]
    fn rto_ms(&mut self, w: &mut Fields, v: Option<f64>) -> Result<(), sonic_rs::Error> {
        let Some(ms) = v else {
            w.null("rto_ms");
            return Ok(());
        };
        if let Some((bits, json)) = &self.rto
            && *bits == ms.to_bits()
        {
            w.key("rto_ms");
            w.raw(json);
            return Ok(());
        }
        let mut json = self.rto.take().map(|(_, b)| b).unwrap_or_default();
        json.clear();
        sonic_rs::to_writer(&mut json, &ms)?;
        w.key("rto_ms");
        w.raw(&json);
        self.rto = Some((ms.to_bits(), json));
        Ok(())
    }
}

impl Default for Sockets {
    fn default() -> Self {
        Self::new()
    }
}

/// One event, annotated by the engine, as a JSON line.
fn event(out: &mut Vec<u8>, clock: &WallClock, units: Units, a: &Annotated, sockets: &mut Sockets) {
    let h = a.event.header();
    let stamp = clock.stamp_cached(h.ts_ns, &mut sockets.second);
    let mut line = EventLine {
        out,
        ts: stamp.as_bytes(),
        ts_ns: clock.unix_ns(h.ts_ns),
        sockets,
    };
    event_body(units, a, &mut line);
}

/// What becomes of an event's body: its line (the output), or, in the tests, also
/// serde's version of it to compare with.
trait Visit {
    fn body<B: Body>(&mut self, kind: &'static str, body: &B);
}

const LINE_RESERVE: usize = 2048;

struct EventLine<'a> {
    out: &'a mut Vec<u8>,
    ts: &'a [u8],
    ts_ns: i128,
    sockets: &'a mut Sockets,
}

impl Visit for EventLine<'_> {
    #[inline]
    fn body<B: Body>(&mut self, kind: &'static str, body: &B) {
        let start = self.out.len();
        let mut w = Fields::new(self.out);
        // More than any event line takes (about 700 bytes, the socket part and
        // the host included), so that no write in it grows the Vec.
        w.reserve(LINE_RESERVE);
        envelope(&mut w, kind, self.ts, self.ts_ns);
        let r = body.fields(&mut w, self.sockets);
        drop(w);
        finish(self.out, start, r);
    }
}

fn event_body(units: Units, a: &Annotated, v: &mut impl Visit) {
    let kind = a.event.kind_name();
    match &a.event {
        Event::Retransmit(e) => {
            let skb = e.flags & retransmit_flags::NO_SKB == 0;
            let sk = e.flags & retransmit_flags::NO_SOCK == 0;
            v.body(
                kind,
                &RetransmitBody {
                    socket: socket_body(a, &e.flow, e.netns),
                    state: net::tcp_state_name(e.flow.state),
                    kind: net::retransmit_kind_name(e.kind),
                    segs: e.segs,
                    bytes: known(skb, e.len),
                    seg_len: known(skb, e.seg_len),
                    seq: known(skb, e.seq),
                    mss: known(sk, e.mss),
                    pmtu: known(sk && e.pmtu != 0, e.pmtu),
                    rto_ms: units
                        .hz
                        .filter(|_| sk && e.rto_jiffies != 0)
                        .map(|hz| e.rto_jiffies as f64 * 1000.0 / hz as f64),
                    backoff: e.backoff,
                    snd_queue: known(sk, e.snd_queue),
                    srtt_us: known(sk, e.srtt_us),
                    cwnd: known(sk, e.cwnd),
                    ca_state: net::ca_state_name(e.ca_state),
                    err: (e.flags & retransmit_flags::HAS_ERR != 0).then_some(e.err),
                    cpu: e.header.cpu,
                },
            )
        }
        Event::SendError(e) => {
            let has_sock = e.flags & send_flags::NO_SOCK == 0;
            let source = match (
                e.source & send_source::SOCKET != 0,
                e.source & send_source::SYSCALL != 0,
            ) {
                (true, true) => &SEND_SOURCES[..],
                (true, false) => &SEND_SOURCES[..1],
                (false, true) => &SEND_SOURCES[1..],
                (false, false) => &[],
            };
            v.body(
                kind,
                &SendErrorBody {
                    socket: socket_body(a, &e.flow, e.netns),
                    state: (has_sock && e.flow.protocol == agent_common::event::IPPROTO_TCP)
                        .then(|| net::tcp_state_name(e.flow.state)),
                    errno: e.errno,
                    errno_name: errno::name(e.errno),
                    errno_text: errno::text(e.errno),
                    bytes: known(e.flags & send_flags::BYTES_KNOWN != 0, e.bytes),
                    syscall: net::syscall_name(e.syscall),
                    source,
                },
            )
        }
        Event::IcmpTooBig(e) => {
            let received = e.source == icmp_source::RECEIVED;
            v.body(
                kind,
                &IcmpBody {
                    sock: a.sock,
                    source: ICMP_SOURCES[if received { 0 } else { 1 }],
                    mtu: known(e.mtu != 0, e.mtu),
                    router: received.then(|| net::ip(e.quoted.family, &e.router)),
                    flow: FlowBody::from(&e.quoted),
                    seq: known(e.quoted.protocol == agent_common::event::IPPROTO_TCP, e.seq),
                    process: a.owner.as_ref().map(Process::from),
                    icmp_type: e.icmp_type,
                    icmp_code: e.icmp_code,
                    netns: known(e.netns != 0, e.netns),
                    ifindex: known(e.ifindex != 0, e.ifindex),
                },
            )
        }
        Event::SocketState(e) => v.body(
            kind,
            &StateBody {
                socket: socket_body(a, &e.flow, e.netns),
                old_state: net::tcp_state_name(e.old_state),
                new_state: net::tcp_state_name(e.new_state),
            },
        ),
        Event::SocketError(e) => v.body(
            kind,
            &SocketErrorBody {
                sock: a.sock,
                flow: FlowBody::from(&e.flow),
                process: a.owner.as_ref().map(Process::from),
                errno: e.errno,
                errno_name: errno::name(e.errno),
                errno_text: errno::text(e.errno),
            },
        ),
        // The agent's own record: never a line (the pipeline does not pass it here).
        Event::SockLookup(_) | Event::LossReport(_) | Event::ClockStep(_) => {}
        Event::UdpSend(e) => v.body(
            kind,
            &UdpSendBody {
                socket: socket_body(a, &e.flow, e.netns),
                bytes: e.bytes,
            },
        ),
        Event::UdpQueueDrop(e) => {
            let sock = e.flags & udpq_flags::NO_SOCK == 0;
            let size = |v: i32| (sock && v >= 0).then_some(v as u32);
            v.body(
                kind,
                &UdpQueueBody {
                    socket: socket_body(a, &e.flow, e.netns),
                    dropped: e.drops,
                    memory_drops: e.mem_drops,
                    socket_drops: known(e.flags & udpq_flags::SK_DROPS != 0, e.sk_drops),
                    rcvbuf: size(e.rcvbuf),
                    queued: size(e.queued),
                    last_datagram_bytes: known(e.last_len != 0, e.last_len),
                    peers: e
                        .peers
                        .iter()
                        .filter(|p| p.family != 0 && p.drops > 0)
                        .map(|p| PeerCount {
                            ip: net::ip(p.family, &p.addr),
                            port: p.port,
                            dropped: p.drops,
                        })
                        .collect(),
                    other_peers_dropped: e.other_peer_drops,
                    send_limit_hits: e.send_limit,
                    recv_limit_hits: e.recv_limit,
                    suppressed: e.suppressed,
                    origin: UDP_QUEUE_ORIGINS[usize::from(e.flags & udpq_flags::AGENT != 0)],
                },
            )
        }
        Event::CongState(e) => v.body(
            kind,
            &CongBody {
                socket: socket_body(a, &e.flow, 0),
                ca_state: net::ca_state_name(e.state),
            },
        ),
    }
}

#[derive(Serialize, JsonSchema)]
pub struct StartBody<'a> {
    /// Version of the agent.
    #[schemars(length(min = 1), extend("x-otel" = "service.version"))]
    pub version: &'static str,
    /// Kernel release (/proc/sys/kernel/osrelease).
    #[schemars(extend("x-otel" = "os.version"))]
    pub kernel: &'a str,
    /// Where tracefs is mounted.
    pub tracefs: &'a str,
    /// Kernel HZ (jiffies per second), when known.
    pub hz: Option<u32>,
    /// How records travel from the programs to the agent, and why that way.
    pub transport: &'a crate::probes::transport::Chosen,
    /// Each probe's state.
    #[schemars(length(min = 1))]
    pub probes: &'a [crate::probes::ProbeStatus],
}

#[derive(Serialize, JsonSchema)]
pub struct LossBody<'a> {
    /// Where the loss happened: a program's ring reservation, the decoder, a sink.
    #[schemars(schema_with = "crate::schema::loss_source")]
    pub source: &'a str,
    /// Events lost since the previous loss line for this source.
    #[schemars(range(min = 1))]
    pub lost: u64,
    /// Events lost from this source since start.
    #[schemars(range(min = 1))]
    pub total: u64,
}

#[derive(Serialize, JsonSchema)]
pub struct SummaryBody {
    #[schemars(range(min = 0))]
    pub duration_s: f64,
    /// Events delivered to the agent, by type.
    #[schemars(schema_with = "crate::schema::events_by_type")]
    pub events: BTreeMap<&'static str, u64>,
    pub events_total: u64,
    /// Events lost, by source (kernel reservations per program, decoder, sockets).
    #[schemars(schema_with = "crate::schema::lost_by_source")]
    pub lost: BTreeMap<String, u64>,
    pub lost_total: u64,
    pub sockets_seen: u64,
    /// Verdicts emitted, by name.
    #[schemars(schema_with = "crate::schema::verdicts_by_kind")]
    pub verdicts: BTreeMap<&'static str, u64>,
    /// send_error verdicts held back by the per-socket rate limit (1/s per errno);
    /// every send_error event is still printed.
    pub send_verdicts_rate_limited: u64,
    /// Over perf buffers only: the samples the buffers themselves reported lost (the
    /// kernel's count). A cross-check of the programs' count in `lost`, never added
    /// to it; it can be lower (a buffer reports its losses only with its next
    /// sample), not higher.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub perf_buffer_lost: Option<u64>,
}

/// The fields of an event line's body, written after the envelope's.
trait Body: Serialize {
    /// Appends `,"key":value` for each field. The default goes through serde; the
    /// bodies printed per event write theirs directly (see `fields`).
    fn fields(&self, w: &mut Fields, _: &mut Sockets) -> Result<(), sonic_rs::Error> {
        w.serde(self)
    }
}

impl Endpoint {
    fn write(&self, w: &mut Fields, key: &str) {
        w.key(key);
        w.raw(b"{\"ip\":");
        w.ip_value(self.ip);
        w.int("port", self.port);
        w.raw(b"}");
    }
}

impl FlowBody {
    fn write(&self, w: &mut Fields) {
        w.name("family", self.family);
        w.name("protocol", self.protocol);
        self.local.write(w, "local");
        self.peer.write(w, "peer");
        if let Some(service) = self.service {
            w.name("service", service);
        }
    }
}

fn write_process(w: &mut Fields, p: &Option<Process>) {
    let Some(p) = p else {
        return w.null("process");
    };
    w.key("process");
    w.raw(b"{\"pid\":");
    w.int_value(p.pid);
    w.int("tid", p.tid);
    w.str("comm", &p.comm);
    w.int("cgroup_id", p.cgroup_id);
    w.raw(b"}");
}

impl SocketBody<'_> {
    fn write(&self, w: &mut Fields) {
        w.opt_int("sock", self.sock);
        self.flow.write(w);
        write_process(w, &self.process);
        if let Some(netns) = self.netns {
            w.int("netns", netns);
        }
    }
}

impl Body for RetransmitBody<'_> {
    #[inline]
    fn fields(&self, w: &mut Fields, sockets: &mut Sockets) -> Result<(), sonic_rs::Error> {
        sockets.write(w, &self.socket);
        w.name("state", self.state);
        w.name("kind", self.kind);
        w.int("segs", self.segs);
        w.opt_int("bytes", self.bytes);
        w.opt_int("seg_len", self.seg_len);
        w.opt_int("seq", self.seq);
        w.opt_int("mss", self.mss);
        w.opt_int("pmtu", self.pmtu);
        sockets.rto_ms(w, self.rto_ms)?;
        w.int("backoff", self.backoff);
        w.opt_int("snd_queue", self.snd_queue);
        w.opt_int("srtt_us", self.srtt_us);
        w.opt_int("cwnd", self.cwnd);
        w.name("ca_state", self.ca_state);
        if let Some(err) = self.err {
            w.int("err", err);
        }
        w.int("cpu", self.cpu);
        Ok(())
    }
}

impl Body for SendErrorBody<'_> {
    #[inline]
    fn fields(&self, w: &mut Fields, sockets: &mut Sockets) -> Result<(), sonic_rs::Error> {
        sockets.write(w, &self.socket);
        w.opt_str("state", self.state);
        w.int("errno", self.errno);
        w.str("errno_name", &self.errno_name);
        w.str("errno_text", self.errno_text);
        w.opt_int("bytes", self.bytes);
        w.opt_str("syscall", self.syscall);
        w.key("source");
        w.raw(b"[");
        for (i, s) in self.source.iter().enumerate() {
            if i > 0 {
                w.raw(b",");
            }
            w.name_value(s);
        }
        w.raw(b"]");
        Ok(())
    }
}

impl Body for StateBody<'_> {
    #[inline]
    fn fields(&self, w: &mut Fields, sockets: &mut Sockets) -> Result<(), sonic_rs::Error> {
        sockets.write(w, &self.socket);
        w.name("old_state", self.old_state);
        w.name("new_state", self.new_state);
        Ok(())
    }
}

impl Body for UdpSendBody<'_> {
    #[inline]
    fn fields(&self, w: &mut Fields, sockets: &mut Sockets) -> Result<(), sonic_rs::Error> {
        sockets.write(w, &self.socket);
        w.int("bytes", self.bytes);
        Ok(())
    }
}

impl Body for CongBody<'_> {
    #[inline]
    fn fields(&self, w: &mut Fields, sockets: &mut Sockets) -> Result<(), sonic_rs::Error> {
        sockets.write(w, &self.socket);
        w.name("ca_state", self.ca_state);
        Ok(())
    }
}

impl Body for IcmpBody<'_> {}
impl Body for SocketErrorBody<'_> {}
impl Body for UdpQueueBody<'_> {}

#[cfg(test)]
mod tests {
    use std::mem::size_of;

    use agent_common::event::{
        CongState, IcmpTooBig, Kind as RecordKind, Retransmit, SendError, SocketError, SocketState,
        UdpQueueDrop, UdpSend,
    };
    use proptest::prelude::*;

    use super::*;
    use crate::decode;

    /// Each body written both ways: directly, and by serde from the `Line` the
    /// schema describes.
    #[derive(Default)]
    struct Both {
        fast: Vec<u8>,
        serde: Vec<u8>,
        sockets: Sockets,
    }

    const TS: &str = "2023-11-14T22:13:20.000000007Z";
    const TS_NS: i128 = 1_700_000_000_000_000_007;

    impl Visit for Both {
        fn body<B: Body>(&mut self, kind: &'static str, body: &B) {
            let mut line = EventLine {
                out: &mut self.fast,
                ts: TS.as_bytes(),
                ts_ns: TS_NS,
                sockets: &mut self.sockets,
            };
            line.body(kind, body);
            sonic_rs::to_writer(
                &mut self.serde,
                &Line {
                    schema: SCHEMA,
                    kind,
                    ts: TS,
                    ts_ns: TS_NS,
                    host: crate::system::host::get(),
                    agent_version: env!("CARGO_PKG_VERSION"),
                    body,
                },
            )
            .unwrap();
            self.serde.push(b'\n');
        }
    }

    /// A record of `kind` from arbitrary bytes (what a corrupt recording can hold).
    fn record(kind: RecordKind, size: usize, bytes: &[u8], family: u16) -> Option<Event> {
        let mut raw: Vec<u8> = bytes.iter().cycle().take(size).copied().collect();
        raw[..2].copy_from_slice(&(kind as u16).to_ne_bytes());
        raw[2..4].copy_from_slice(&(size as u16).to_ne_bytes());
        let mut event = decode::decode(&raw).ok()?;
        let flow = match &mut event {
            Event::Retransmit(e) => &mut e.flow,
            Event::SendError(e) => &mut e.flow,
            Event::SocketState(e) => &mut e.flow,
            Event::UdpSend(e) => &mut e.flow,
            Event::UdpQueueDrop(e) => &mut e.flow,
            Event::CongState(e) => &mut e.flow,
            Event::SocketError(e) => &mut e.flow,
            Event::IcmpTooBig(e) => &mut e.quoted,
            _ => return Some(event),
        };
        flow.family = family;
        Some(event)
    }

    proptest! {
        #[test]
        fn every_event_line_is_the_bytes_serde_writes(
            bytes in prop::collection::vec(any::<u8>(), 1..512),
            family in prop_oneof![Just(2u16), Just(10u16), any::<u16>()],
            sock in any::<Option<u64>>(),
            owner in any::<Option<(u32, u32, u64, [u8; 16])>>(),
            hz in prop::option::of(1u32..10_000),
        ) {
            for (kind, size) in [
                (RecordKind::Retransmit, size_of::<Retransmit>()),
                (RecordKind::SendError, size_of::<SendError>()),
                (RecordKind::IcmpTooBig, size_of::<IcmpTooBig>()),
                (RecordKind::SocketState, size_of::<SocketState>()),
                (RecordKind::SocketError, size_of::<SocketError>()),
                (RecordKind::UdpSend, size_of::<UdpSend>()),
                (RecordKind::UdpQueueDrop, size_of::<UdpQueueDrop>()),
                (RecordKind::CongState, size_of::<CongState>()),
            ] {
                let Some(event) = record(kind, size, &bytes, family) else {
                    continue;
                };
                let a = Annotated {
                    sock,
                    owner: owner.map(|(pid, tid, cgroup, comm)| Owner { pid, tid, cgroup, comm }),
                    netns: None,
                    event,
                };
                let mut both = Both::default();
                // Twice: the second from the socket's remembered fields.
                event_body(Units { hz }, &a, &mut both);
                event_body(Units { hz }, &a, &mut both);
                prop_assert_eq!(
                    String::from_utf8_lossy(&both.fast),
                    String::from_utf8_lossy(&both.serde)
                );
            }
        }
    }
}
