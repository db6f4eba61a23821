//! The JSON line vocabulary. Every line: `schema`, `type`, `ts` (RFC 3339, UTC, ns)
//! and `ts_ns` (the same instant as Unix-epoch nanoseconds), then the type's body.

use std::{collections::BTreeMap, net::IpAddr};

use agent_common::event::{Flow, Retransmit, retransmit_flags};
use serde::Serialize;

use super::SCHEMA;
use crate::{clock::WallClock, net};

#[derive(Serialize)]
pub struct Line<'a, B: Serialize> {
    pub schema: &'static str,
    #[serde(rename = "type")]
    pub kind: &'static str,
    pub ts: &'a str,
    pub ts_ns: i128,
    #[serde(flatten)]
    pub body: B,
}

pub fn line<B: Serialize>(kind: &'static str, ts: &str, ts_ns: i128, body: B) -> Vec<u8> {
    let mut out = serde_json::to_vec(&Line {
        schema: SCHEMA,
        kind,
        ts,
        ts_ns,
        body,
    })
    .unwrap_or_else(|e| {
        format!("{{\"schema\":\"{SCHEMA}\",\"type\":\"internal_error\",\"error\":\"{e}\"}}")
            .into_bytes()
    });
    out.push(b'\n');
    out
}

#[derive(Serialize, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub ip: IpAddr,
    pub port: u16,
}

#[derive(Serialize)]
pub struct FlowBody {
    pub family: &'static str,
    pub protocol: &'static str,
    pub local: Endpoint,
    pub peer: Endpoint,
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
        }
    }
}

#[derive(Serialize)]
pub struct RetransmitBody {
    pub sock: u64,
    #[serde(flatten)]
    pub flow: FlowBody,
    pub state: &'static str,
    /// Segments in the retransmitted skb; the kernel's counters count these.
    pub segs: u32,
    /// Payload bytes in the skb.
    pub bytes: u32,
    pub seg_len: u32,
    /// Transmit result, when the kernel reports it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub err: Option<i32>,
    pub cpu: u32,
}

pub fn retransmit(clock: &WallClock, sock: u64, e: &Retransmit) -> Vec<u8> {
    let ts = clock.rfc3339(e.header.ts_ns);
    let known = e.flags & retransmit_flags::NO_SKB == 0;
    line(
        "retransmit",
        &ts,
        clock.unix_ns(e.header.ts_ns),
        RetransmitBody {
            sock,
            flow: FlowBody::from(&e.flow),
            state: net::tcp_state_name(e.flow.state),
            segs: e.segs,
            bytes: if known { e.len } else { 0 },
            seg_len: if known { e.seg_len } else { 0 },
            err: (e.flags & retransmit_flags::HAS_ERR != 0).then_some(e.err),
            cpu: e.header.cpu,
        },
    )
}

#[derive(Serialize)]
pub struct ProbeLine<'a> {
    pub probe: &'a str,
    pub attach: &'a str,
    pub attached: bool,
    pub note: &'a str,
}

#[derive(Serialize)]
pub struct StartBody<'a> {
    pub version: &'static str,
    pub kernel: &'a str,
    pub tracefs: &'a str,
    pub probes: Vec<ProbeLine<'a>>,
}

#[derive(Serialize)]
pub struct LossBody<'a> {
    /// Where the loss happened: a program's ring reservation, the decoder, a sink.
    pub source: &'a str,
    /// Events lost since the previous loss line for this source.
    pub lost: u64,
    /// Events lost from this source since start.
    pub total: u64,
}

#[derive(Serialize)]
pub struct SummaryBody {
    pub duration_s: f64,
    /// Events delivered to the agent, by type.
    pub events: BTreeMap<&'static str, u64>,
    pub events_total: u64,
    /// Events lost, by source (kernel reservations per program, decoder, sockets).
    pub lost: BTreeMap<String, u64>,
    pub lost_total: u64,
    pub sockets_seen: u64,
}
