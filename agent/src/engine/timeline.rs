//! Per-socket timeline: the bounded history the verdicts are judged from.

use std::collections::VecDeque;

use agent_common::event::{Flow, Retransmit};

/// How many of each kind of fact a socket keeps (older ones fall off).
pub const KEEP_RETRANSMITS: usize = 8;
pub const KEEP_TOO_BIG: usize = 8;

/// Kept compact (32 bytes): a socket keeps [`KEEP_RETRANSMITS`] of these, and the
/// agent may track 100k sockets.
#[derive(Clone, Debug, PartialEq)]
pub struct RetransmitFact {
    pub ts_ns: u64,
    pub seq: u32,
    pub seg_len: u32,
    pub snd_queue: u32,
    pub mss: u16,
    pub segs: u16,
    pub kind: u8,
    pub backoff: u8,
}

/// Names of the verdicts, in the order `VerdictLog` lists them.
pub const VERDICT_NAMES: [&str; 11] = [
    "ephemeral_ports_exhausted",
    "udp_path_mtu",
    "pmtud_blackhole",
    "pmtud_ok",
    "blackhole_recovered",
    "packet_loss",
    "path_down",
    "stall",
    "disconnect",
    "spoofed_ptb",
    "send_error",
];

/// Which verdicts a socket has had, and the latest one other than send_error: a
/// bitmask instead of a list (bounded, no allocation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VerdictLog {
    seen: u16,
    last: Option<u8>,
}

impl VerdictLog {
    fn index(name: &str) -> Option<usize> {
        VERDICT_NAMES.iter().position(|n| *n == name)
    }

    pub fn push(&mut self, name: &'static str) {
        if let Some(i) = Self::index(name) {
            self.seen |= 1 << i;
            if name != "send_error" {
                self.last = Some(i as u8);
            }
        }
    }

    pub fn has(&self, name: &str) -> bool {
        Self::index(name).is_some_and(|i| self.seen & (1 << i) != 0)
    }

    /// Verdicts other than send_error, in `VERDICT_NAMES` order.
    pub fn prior(&self) -> Vec<&'static str> {
        VERDICT_NAMES
            .iter()
            .enumerate()
            .filter(|(i, n)| **n != "send_error" && self.seen & (1 << i) != 0)
            .map(|(_, n)| *n)
            .collect()
    }

    /// The latest verdict other than send_error.
    pub fn last(&self) -> Option<&'static str> {
        self.last.map(|i| VERDICT_NAMES[i as usize])
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct TooBigFact {
    pub ts_ns: u64,
    pub mtu: u32,
    pub router: String,
    /// The socket's MSS when the message arrived (to see it shrink afterwards).
    pub mss_before: u32,
}

/// A stall: from the first RTO retransmission with no progress, until progress.
#[derive(Clone, Debug, PartialEq)]
pub struct Episode {
    pub start_ns: u64,
    pub snd_una: u32,
    pub mss: u32,
    pub rto: u32,
    pub full_size: u32,
    pub small: u32,
    pub bytes_acked: u64,
    pub delivered: u32,
    pub snd_queue_start: u32,
    pub snd_queue_last: u32,
    pub backoff: u8,
    /// Lowest MSS seen during the episode (MTU probing lowers it).
    pub mss_low: u32,
    /// Confidence of the black-hole verdict already emitted, if any.
    pub blackhole: Option<&'static str>,
    pub stall_reported: bool,
    pub first_seg_len: u32,
}

#[derive(Clone, Debug, Default, PartialEq)]
pub struct Timeline {
    pub flow: Flow,
    pub netns: u32,
    pub last_ns: u64,
    pub retransmits: VecDeque<RetransmitFact>,
    pub too_big: VecDeque<TooBigFact>,
    pub episode: Option<Box<Episode>>,
    /// Latest known send window: [snd_una, snd_una + snd_queue] (from retransmits).
    pub window: Option<(u32, u32)>,
    pub last_mss: u32,
    pub total_retransmits: u64,
    pub total_segs: u64,
    pub rto: u64,
    pub fast: u64,
    pub tlp: u64,
    pub min_seg: u32,
    pub max_seg: u32,
    /// snd_una advanced between two retransmits at least once.
    pub progressed: u32,
    pub last_snd_una: Option<u32>,
    /// Verdicts emitted on this socket.
    pub verdicts: VerdictLog,
    pub loss_reported: Option<&'static str>,
    pub pmtud_ok_reported: bool,
    pub ended_reported: bool,
    /// Last send_error verdict per errno (errno, ts; errno 0: free slot), for rate
    /// limiting.
    pub last_send_verdict: [(i32, u64); 2],
    /// send_error verdicts held back by the rate limit (the events are all printed).
    pub send_verdicts_suppressed: u64,
}

/// Did `now` move past `then` in sequence space (mod 2^32)?
pub fn seq_after(now: u32, then: u32) -> bool {
    (now.wrapping_sub(then) as i32) > 0
}

impl Timeline {
    pub fn note_retransmit(&mut self, e: &Retransmit) {
        let f = RetransmitFact {
            ts_ns: e.header.ts_ns,
            kind: e.kind,
            seq: e.seq,
            seg_len: e.seg_len,
            segs: e.segs.min(u16::MAX as u32) as u16,
            mss: e.mss.min(u16::MAX as u32) as u16,
            backoff: e.backoff,
            snd_queue: e.snd_queue,
        };
        if self.retransmits.len() == KEEP_RETRANSMITS {
            self.retransmits.pop_front();
        }
        if self.retransmits.capacity() == 0 {
            // Most sockets retransmit rarely: start small rather than at 4.
            self.retransmits.reserve_exact(1);
        }
        self.retransmits.push_back(f);
        self.total_retransmits += 1;
        self.total_segs += e.segs as u64;
        if self.min_seg == 0 || e.seg_len < self.min_seg {
            self.min_seg = e.seg_len;
        }
        self.max_seg = self.max_seg.max(e.seg_len);
        if let Some(prev) = self.last_snd_una
            && seq_after(e.snd_una, prev)
        {
            self.progressed += 1;
        }
        self.last_snd_una = Some(e.snd_una);
        self.window = Some((e.snd_una, e.snd_una.wrapping_add(e.snd_queue)));
        self.last_mss = e.mss;
    }

    pub fn note_too_big(&mut self, f: TooBigFact) {
        if self.too_big.len() == KEEP_TOO_BIG {
            self.too_big.pop_front();
        }
        self.too_big.push_back(f);
    }

    pub fn verdict(&mut self, name: &'static str) {
        self.verdicts.push(name);
    }

    /// Bytes per delivered segment so far: well under the MSS means no full-size
    /// segment has been getting through.
    pub fn avg_delivered(bytes_acked: u64, delivered: u32) -> Option<f64> {
        (delivered > 1).then(|| bytes_acked as f64 / delivered as f64)
    }
}
