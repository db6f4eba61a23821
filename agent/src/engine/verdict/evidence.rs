//! The facts each verdict rests on, one type per verdict kind. Serialized as the
//! line's `evidence` object (field names are part of the output format: see
//! schema/verdict.schema.json); the advice is rendered from them at the edge.

use std::net::IpAddr;

use schemars::{JsonSchema, Schema, SchemaGenerator, json_schema};
use serde::{Serialize, Serializer};

use super::Kind;

/// An errno that prints as its name ("ECONNRESET").
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ErrnoName(pub i32);

impl Serialize for ErrnoName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&crate::system::errno::name(self.0))
    }
}

impl JsonSchema for ErrnoName {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "errno_name".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        crate::schema::errno_name_inline()
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum Evidence {
    PmtudBlackhole(Blackhole),
    PmtudOk(PmtudOk),
    BlackholeRecovered(Recovered),
    PacketLoss(Loss),
    PathDown(PathDown),
    Stall(Stall),
    Disconnect(Disconnect),
    SpoofedPtb(Spoofed),
    SendError(SendErrorFacts),
    EphemeralPortsExhausted(PortsExhausted),
    BindConflict(BindConflict),
    UdpPathMtu(UdpPathMtu),
    UdpQueueOverflow(UdpQueueOverflow),
}

impl Evidence {
    pub fn kind(&self) -> Kind {
        match self {
            Evidence::PmtudBlackhole(_) => Kind::PmtudBlackhole,
            Evidence::PmtudOk(_) => Kind::PmtudOk,
            Evidence::BlackholeRecovered(_) => Kind::BlackholeRecovered,
            Evidence::PacketLoss(_) => Kind::PacketLoss,
            Evidence::PathDown(_) => Kind::PathDown,
            Evidence::Stall(_) => Kind::Stall,
            Evidence::Disconnect(_) => Kind::Disconnect,
            Evidence::SpoofedPtb(_) => Kind::SpoofedPtb,
            Evidence::SendError(_) => Kind::SendError,
            Evidence::EphemeralPortsExhausted(_) => Kind::EphemeralPortsExhausted,
            Evidence::BindConflict(_) => Kind::BindConflict,
            Evidence::UdpPathMtu(_) => Kind::UdpPathMtu,
            Evidence::UdpQueueOverflow(_) => Kind::UdpQueueOverflow,
        }
    }
}

/// Where the too-big messages that should have shrunk the packets were lost.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum FilteredAt {
    /// None came back: filtered on the path (or never sent).
    Path,
    /// They reached this host (its receive hook saw them) and TCP never applied
    /// them: dropped by this host's own input filtering.
    ThisHost,
}

#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct Blackhole {
    pub rto_retransmits: u32,
    pub full_size_retransmits: u32,
    pub seg_len: u32,
    pub mss: u32,
    /// The full packet size: the socket's path MTU, else MSS + default headers.
    pub packet_size: u32,
    pub filtered_at: FilteredAt,
    /// Too-big messages for this flow that reached this host and were not applied.
    pub too_big_received: u32,
    pub too_big_mtu: Option<u32>,
    pub too_big_router: Option<IpAddr>,
    pub bytes_acked: u64,
    pub segments_delivered: u32,
    #[schemars(range(min = 0))]
    pub avg_delivered_segment: Option<f64>,
    pub backoff: u8,
    #[schemars(range(min = 0))]
    pub stuck_ms: f64,
    pub snd_queue: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct PmtudOk {
    pub mtu: u32,
    pub router: IpAddr,
    pub mss_before: Option<u32>,
    pub mss_after: u32,
    #[schemars(range(min = 0))]
    pub ms_to_adapt: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RecoveredBy {
    Acknowledged,
    #[serde(rename = "congestion state back to open")]
    CongestionOpen,
}

#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct Recovered {
    #[schemars(range(min = 0))]
    pub stuck_ms: f64,
    pub mss_before: u32,
    pub mss_after: u32,
    pub rto_retransmits: u32,
    pub recovered_by: RecoveredBy,
}

#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct Loss {
    /// Retransmissions within the window (`window_s`).
    pub retransmits: u64,
    pub retransmitted_segments: u64,
    /// Retransmitted segments the peer reported it already had (DSACK; before 5.10
    /// the kernel counts DSACK blocks): reordering or an early timer, not loss. The
    /// retransmissions they stand for do not count toward the verdict.
    pub reported_duplicate_segments: u64,
    /// Retransmissions too recent for the peer's report to have come back: not
    /// judged yet (the verdict's count is `retransmits` less these and the
    /// reported ones).
    pub awaiting_report: u64,
    pub rto: u64,
    pub fast: u64,
    pub tlp: u64,
    pub seg_len_min: u32,
    pub seg_len_max: u32,
    pub progress_between_retransmits: u32,
    pub window_s: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct PathDown {
    pub rto_retransmits: u32,
    pub backoff: u8,
    #[schemars(range(min = 0))]
    pub stuck_ms: f64,
    pub acknowledged_during_stall: u32,
    /// How the connection ended; null while the stall goes on.
    pub ended_with: Option<ErrnoName>,
    /// Full-size segments at this MSS were delivered earlier on this socket: the
    /// path carried them, so this is not a black hole.
    pub full_size_delivered: bool,
    /// Small segments retransmitted in the stall: they are lost too.
    pub small_lost: u32,
}

#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct Stall {
    pub rto_retransmits: u32,
    pub backoff: u8,
    pub snd_queue_start: u32,
    pub snd_queue_now: u32,
    #[schemars(range(min = 0))]
    pub stuck_ms: f64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum DisconnectCause {
    Timeout,
    Reset,
}

#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct Disconnect {
    pub cause: DisconnectCause,
    pub errno_name: ErrnoName,
    #[schemars(range(min = 0))]
    pub idle_ms: f64,
    pub retransmits_before: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SpoofReason {
    /// No socket in the kernel has the quoted flow.
    NoSuchSocket,
    /// The quoted sequence was already acknowledged when the message came, and the
    /// kernel did not act on it.
    AlreadyAcknowledged { snd_una: u32 },
    /// The quoted sequence lies beyond anything the socket has written, and the
    /// kernel did not act on it.
    NeverSent { write_seq: u32 },
}

impl JsonSchema for SpoofReason {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "spoof_reason".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "minLength": 1,
            "description": "Why the message cannot be genuine, in words.",
        })
    }
}

impl Serialize for SpoofReason {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(&match self {
            SpoofReason::NoSuchSocket => "no socket in the kernel has the quoted flow".to_string(),
            SpoofReason::AlreadyAcknowledged { snd_una } => format!(
                "the quoted sequence number was already acknowledged (snd_una {snd_una}) and \
                 the kernel did not act on the message"
            ),
            SpoofReason::NeverSent { write_seq } => format!(
                "the quoted sequence number lies beyond anything the socket has written \
                 (write_seq {write_seq}) and the kernel did not act on the message"
            ),
        })
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct Spoofed {
    pub reason: SpoofReason,
    pub mtu: u32,
    pub router: IpAddr,
    pub quoted_seq: u32,
}

/// How many of a socket's latest retransmits a send_error verdict lists.
pub const RECENT_RETRANSMITS: usize = 5;

#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct RecentRetransmit {
    #[schemars(range(min = 0))]
    pub ago_ms: f64,
    #[schemars(schema_with = "crate::schema::retransmit_kind")]
    pub kind: &'static str,
    pub seg_len: u32,
    pub backoff: u8,
}

/// What explains a failed send: the socket's latest verdict, else the errno's usual
/// meaning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(untagged)]
pub enum LikelyCause {
    Verdict(Kind),
    MessageTooBig(MessageTooBig),
}

/// Serializes as "message_larger_than_path_mtu".
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MessageTooBig;

impl JsonSchema for MessageTooBig {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "message_too_big".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"const": "message_larger_than_path_mtu"})
    }
}

impl Serialize for MessageTooBig {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str("message_larger_than_path_mtu")
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct SendErrorFacts {
    pub errno: i32,
    pub errno_name: ErrnoName,
    pub meaning: &'static str,
    pub likely_cause: Option<LikelyCause>,
    pub prior_verdicts: Vec<Kind>,
    /// The socket's latest retransmits, newest first.
    #[schemars(length(max = RECENT_RETRANSMITS))]
    pub recent_retransmits: Vec<RecentRetransmit>,
    pub rto_retransmits: u32,
    #[schemars(range(min = 0))]
    pub stuck_ms: Option<f64>,
    pub too_big_received: usize,
    pub last_too_big_mtu: Option<u32>,
    /// Not printed: the advice names the router.
    #[serde(skip)]
    pub last_too_big_router: Option<IpAddr>,
    pub snd_queue: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct PortsExhausted {
    pub destination: String,
    pub errno_name: ErrnoName,
    pub failures_in_window: usize,
    pub window_s: u64,
    pub failures_total: u64,
    /// Host facts, added live at the edge (`crate::system::sysinfo::enrich`); absent in
    /// replays.
    #[serde(flatten)]
    pub host: Option<PortsHostFacts>,
}

#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct PortsHostFacts {
    pub time_wait_to_destination: Option<u64>,
    pub ip_local_port_range: Option<String>,
    pub ephemeral_ports: Option<u32>,
}

#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct BindConflict {
    /// The address and port bind() asked for.
    pub address: String,
    pub errno_name: ErrnoName,
    pub failures: u64,
    pub window_s: u64,
}

#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct UdpPathMtu {
    pub largest_datagram: u32,
    pub large_datagrams: u32,
    pub emsgsize: u32,
    pub too_big_received: u32,
    pub path_mtu: Option<u32>,
    pub router: Option<IpAddr>,
    pub too_big_generated_on_this_host: u32,
    #[schemars(schema_with = "crate::schema::service_or_null")]
    pub service: Option<&'static str>,
    /// Which of the rule's grounds made the verdict.
    #[serde(skip)]
    pub ground: UdpGround,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UdpGround {
    Emsgsize,
    TooBigReceived,
    GeneratedHereNoneBack,
    NoneBack,
}

/// A source of datagrams a socket dropped, and how many of its datagrams.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, JsonSchema)]
pub struct PeerDrops {
    pub ip: IpAddr,
    pub port: u16,
    pub dropped: u64,
}

/// A socket dropped datagrams because its receive queue was full (one episode:
/// from the first drop to a second without any).
#[derive(Clone, Debug, PartialEq, Serialize, JsonSchema)]
pub struct UdpQueueOverflow {
    /// Datagrams dropped at the full queue in this episode: what the kernel counts
    /// as `Udp: RcvbufErrors` (`Udp6: RcvbufErrors`), for this socket alone.
    pub dropped: u64,
    /// Other enqueue failures (the protocol's memory limit: `MemErrors`).
    pub memory_drops: u64,
    /// From the episode's first drop to its last so far.
    #[schemars(range(min = 0))]
    pub duration_s: f64,
    /// The episode is over: a second passed without a drop (or the run ended).
    pub ended: bool,
    /// `SO_RCVBUF` as the kernel applies it (twice what was asked), bytes.
    pub rcvbuf: Option<u32>,
    /// Bytes in the receive queue (truesize) at the last drop.
    pub queued: Option<u32>,
    /// The socket's own drop counter, since it was created (`sk_drops`, what `ss
    /// -m` shows as `d`).
    pub socket_drops: Option<u32>,
    /// Size of the last dropped datagram (IP and UDP headers included).
    pub last_datagram_bytes: Option<u32>,
    /// The first sources of dropped datagrams, most dropped first.
    #[schemars(length(max = agent_common::event::UDP_QUEUE_PEERS))]
    pub top_peers: Vec<PeerDrops>,
    /// Drops from other sources (or whose source could not be read).
    pub other_peers_dropped: u64,
    /// `sock:sock_exceed_buf_limit` hits of the socket in this episode.
    pub memory_limit_hits: u32,
    /// `udp_queue_drop` records the kernel did not emit for this socket in this
    /// episode (rate bound); the counts above include their drops.
    pub records_suppressed: u64,
    /// "ike" (500/4500), "dns" (53), "syslog" (514), "quic" (443).
    #[schemars(schema_with = "crate::schema::service_or_null")]
    pub service: Option<&'static str>,
}
