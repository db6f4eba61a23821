//! Per-socket timeline: the bounded history the verdicts are judged from.

use std::collections::VecDeque;

use std::net::IpAddr;

use agent_common::event::{Flow, Retransmit};

use super::verdict::{Confidence, Kind};

/// How many of each kind of fact a socket keeps (older ones fall off).
pub const KEEP_RETRANSMITS: usize = 8;
pub const KEEP_TOO_BIG: usize = 8;
pub const TOO_BIG_EXPIRY_NS: u64 = 600_000_000_000;

/// Retransmissions counted over a window, so that a long-lived pooled connection
/// with an occasional loss over hours is not "lossy".
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LossWindow {
    pub start_ns: u64,
    pub retransmits: u64,
    pub segs: u64,
    pub rto: u64,
    pub fast: u64,
    pub tlp: u64,
    pub min_seg: u32,
    pub max_seg: u32,
    /// snd_una advanced between two retransmits of the window.
    pub progressed: u32,
    /// Retransmitted segments of the window the peer reported it already had
    /// (DSACK; `tcp_sock.dsack_dups` counts segments from 5.10, DSACK blocks
    /// before): they were not lost. At most `segs`.
    pub spurious_segs: u64,
    /// Retransmissions too recent for the peer's report to have come back, counted
    /// in two buckets of one wait each (`recent` since `recent_start_ns`, and the
    /// bucket before it): an overestimate, the safe side.
    pub recent_start_ns: u64,
    pub recent: u64,
    pub recent_before: u64,
    /// The last smoothed RTT a record read (one whose socket was unreadable has none).
    pub srtt_us: u32,
    /// The longest wait for reports so far in the window: the buckets' length.
    pub wait_ns: u64,
}

impl LossWindow {
    /// Counts a retransmission at `ts` into the recent buckets, each as long as the
    /// longest wait of the window (the wait grows with the RTT; never shrinking it
    /// keeps a bucket from being dropped early, though a bucket dropped before the
    /// RTT grew is not counted again).
    pub fn note_recent(&mut self, ts: u64, wait: u64) {
        self.wait_ns = self.wait_ns.max(wait);
        let width = self.wait_ns;
        let age = ts.saturating_sub(self.recent_start_ns);
        if self.recent == 0 || age >= width {
            self.recent_before = if self.recent != 0 && age < 2 * width {
                self.recent
            } else {
                0
            };
            self.recent_start_ns = ts;
            self.recent = 0;
        }
        self.recent += 1;
    }

    /// Retransmissions the peer reported as duplicates, in retransmission events
    /// (its report counts segments; an event may hold several).
    pub fn spurious(&self) -> u64 {
        if self.segs == 0 {
            return 0;
        }
        // u128: a recording can claim any number of segments per record.
        (u128::from(self.spurious_segs.min(self.segs)) * u128::from(self.retransmits)
            / u128::from(self.segs)) as u64
    }

    /// Retransmissions that repaired a loss: those the peer could have reported as
    /// duplicates by now and did not, not counting the recent ones (their report
    /// comes a round trip later, with a later record). An estimate that leans low:
    /// reports that came in for recent retransmissions are subtracted too, and the
    /// peer's count also holds duplicates the network made.
    pub fn needed(&self) -> u64 {
        self.retransmits
            .saturating_sub(self.recent + self.recent_before)
            .saturating_sub(self.spurious())
    }
}

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

/// Which verdicts a socket has had, and the latest one other than send_error: a
/// bitmask instead of a list (bounded, no allocation).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VerdictLog {
    seen: u16,
    last: Option<Kind>,
}

const _: () = assert!(Kind::ALL.len() <= 16);

impl VerdictLog {
    pub fn push(&mut self, kind: Kind) {
        self.seen |= 1 << kind as u16;
        if kind != Kind::SendError {
            self.last = Some(kind);
        }
    }

    pub fn has(&self, kind: Kind) -> bool {
        self.seen & (1 << kind as u16) != 0
    }

    /// Verdicts other than send_error, in `Kind::ALL` order.
    pub fn prior(&self) -> Vec<Kind> {
        Kind::ALL
            .into_iter()
            .filter(|k| *k != Kind::SendError && self.has(*k))
            .collect()
    }

    /// The latest verdict other than send_error.
    pub fn last(&self) -> Option<Kind> {
        self.last
    }
}

/// What became of a too-big message quoting this socket's flow, judged from what
/// the socket did next (the kernel's truth: its MSS and path MTU).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TooBigFate {
    /// Nothing retransmitted since it came.
    Pending,
    /// The socket's MSS (or path MTU) shrank to fit: the kernel applied it.
    Applied,
    /// The socket kept sending too-big segments after it: it reached this host's
    /// receive hook and never reached TCP (this host's input filtering).
    NotApplied,
    /// The kernel did not act on it and it quoted data outside what the socket sent.
    Forged,
}

#[derive(Clone, Debug, PartialEq)]
pub struct TooBigFact {
    pub ts_ns: u64,
    pub mtu: u32,
    pub router: IpAddr,
    /// The TCP sequence number the message quotes.
    pub seq: u32,
    /// The quoted sequence was already acknowledged when the message came (by the
    /// socket's last known snd_una, which only grows).
    pub acked_already: bool,
    /// The socket's MSS when the message arrived (to see it shrink afterwards).
    pub mss_before: u32,
    pub fate: TooBigFate,
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
    pub blackhole: Option<Confidence>,
    /// Confidence of the live path-down verdict already emitted, if any.
    pub path_down: Option<Confidence>,
    pub stall_reported: bool,
    pub first_seg_len: u32,
    /// When the last retransmission timeout counted in `rto` fired.
    pub last_timeout_ns: u64,
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
    pub last_snd_una: Option<u32>,
    /// The socket's DSACK count (low byte) and the time of the record that carried
    /// it: the newest record read so far.
    pub last_dsacks: Option<(u8, u64)>,
    /// Verdicts emitted on this socket.
    pub verdicts: VerdictLog,
    pub loss_reported: Option<Confidence>,
    /// Retransmissions in the current loss window (see `loss`).
    pub loss_window: LossWindow,
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
    /// Returns whether snd_una moved on since the previous retransmit (progress).
    pub fn note_retransmit(&mut self, e: &Retransmit) -> bool {
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
        let progressed = self
            .last_snd_una
            .is_some_and(|prev| seq_after(e.snd_una, prev));
        self.last_snd_una = Some(e.snd_una);
        self.window = Some((e.snd_una, e.snd_una.wrapping_add(e.snd_queue)));
        self.last_mss = e.mss;
        progressed
    }

    pub fn note_too_big(&mut self, f: TooBigFact) {
        if self.too_big.len() == KEEP_TOO_BIG {
            self.too_big.pop_front();
        }
        self.too_big.push_back(f);
    }

    /// Too-big facts older than this are forgotten: the kernel's learned path MTU
    /// expires too (net.ipv4.route.mtu_expires, 600 s).
    pub fn expire_too_big(&mut self, now_ns: u64) {
        while self
            .too_big
            .front()
            .is_some_and(|f| now_ns.saturating_sub(f.ts_ns) > TOO_BIG_EXPIRY_NS)
        {
            self.too_big.pop_front();
        }
    }

    /// Bytes per delivered segment so far: well under the MSS means no full-size
    /// segment has been getting through.
    pub fn avg_delivered(bytes_acked: u64, delivered: u32) -> Option<f64> {
        (delivered > 1).then(|| bytes_acked as f64 / delivered as f64)
    }
}
