//! Verdicts: the judgement, from a socket's timeline, of what is happening to it.
//! Every rule here is pure: facts in, verdicts out, times from the events.

use agent_common::event::{
    CongState, Flow, IcmpTooBig, Owner, Retransmit, SendError, SocketError, retransmit_kind,
};
use serde_json::{Value, json};

use super::timeline::{Episode, Timeline, TooBigFact, seq_after};
use crate::{errno, net};

#[derive(Clone, Debug, PartialEq)]
pub struct Verdict {
    pub ts_ns: u64,
    pub sock: Option<u64>,
    pub flow: Flow,
    pub owner: Option<Owner>,
    pub verdict: &'static str,
    pub confidence: &'static str,
    pub evidence: Value,
    pub advice: String,
    /// Network namespace of the socket (0: unknown).
    pub netns: u32,
}

/// A retransmitted segment at least this big, and the socket's full MSS, counts as
/// "full-size" (a PMTUD black hole only eats packets bigger than the path MTU).
const MIN_FULL_SIZE: u32 = 576;
/// Delivered bytes per segment below this fraction of the MSS: only small segments
/// ever got through.
const SMALL_DELIVERY_RATIO: f64 = 0.75;
/// Retransmits (with progress) before the loss verdict.
const LOSS_MIN_RETRANSMITS: u64 = 3;
const LOSS_HIGH_RETRANSMITS: u64 = 20;
/// One send_error verdict per socket and errno per this long; the rest are counted.
pub const SEND_VERDICT_INTERVAL_NS: u64 = 1_000_000_000;

const TCP_ESTABLISHED: u8 = 1;
const TCP_CLOSE_WAIT: u8 = 8;
const TCP_FIN_WAIT1: u8 = 4;
const ETIMEDOUT: i32 = 110;
const ECONNRESET: i32 = 104;
const EPIPE: i32 = 32;
const EMSGSIZE: i32 = 90;
const ECOMM: i32 = 70;
const CA_OPEN: u8 = 0;

pub struct Ctx {
    pub sock: Option<u64>,
    pub owner: Option<Owner>,
}

fn verdict(
    t: &mut Timeline,
    c: &Ctx,
    ts_ns: u64,
    name: &'static str,
    confidence: &'static str,
    evidence: Value,
    advice: String,
) -> Verdict {
    t.verdict(name);
    Verdict {
        ts_ns,
        sock: c.sock,
        flow: t.flow,
        owner: c.owner,
        verdict: name,
        confidence,
        evidence,
        advice,
        netns: t.netns,
    }
}

fn ms(ns: u64) -> f64 {
    (ns as f64 / 1e6 * 1000.0).round() / 1000.0
}

fn too_big_valid(t: &Timeline) -> Option<&TooBigFact> {
    t.too_big.back()
}

fn header_bytes(flow: &Flow) -> u32 {
    // IP + TCP headers, with the timestamp option Linux uses by default.
    if flow.family == agent_common::event::AF_INET6 {
        40 + 20 + 12
    } else {
        20 + 20 + 12
    }
}

/// The end of a stall: progress was seen (or recovery signalled).
fn end_episode(t: &mut Timeline, c: &Ctx, ts_ns: u64, how: &str, out: &mut Vec<Verdict>) {
    let Some(ep) = t.episode.take() else { return };
    if ep.blackhole.is_some() {
        let mss_after = ep.mss_low.min(t.last_mss);
        out.push(verdict(
            t,
            c,
            ts_ns,
            "blackhole_recovered",
            "high",
            json!({
                "stuck_ms": ms(ts_ns.saturating_sub(ep.start_ns)),
                "mss_before": ep.mss,
                "mss_after": mss_after,
                "rto_retransmits": ep.rto,
                "recovered_by": how,
            }),
            if mss_after < ep.mss {
                format!(
                    "data flows again with MSS {mss_after} (was {}): the kernel's MTU probing \
                     (or a route change) found a size that fits, after {} ms stuck. The black \
                     hole is still on the path: fix it there (let ICMP type 3 code 4 / ICMPv6 \
                     type 2 through, or clamp the MSS) so other connections do not pay the \
                     same delay.",
                    ep.mss,
                    ms(ts_ns.saturating_sub(ep.start_ns)) as u64
                )
            } else {
                "data flows again at the same MSS: the path changed or the filter went away."
                    .to_string()
            },
        ));
    }
}

pub fn on_retransmit(t: &mut Timeline, c: &Ctx, e: &Retransmit, out: &mut Vec<Verdict>) {
    let ts = e.header.ts_ns;
    // Every record carries the socket's current MSS, refused attempts included: the
    // record that shows the stall ending may be the first with the lowered MSS.
    if let Some(ep) = t.episode.as_mut()
        && e.mss > 0
    {
        ep.mss_low = ep.mss_low.min(e.mss);
    }
    // An attempt refused before anything was sent (-EBUSY: the previous copy is
    // still in the host's queue; -ENOMEM) is retried by the kernel and not counted by
    // it: it is not a retransmission to judge.
    if e.flags & agent_common::event::retransmit_flags::HAS_ERR != 0
        && (e.err == -16 || e.err == -12)
    {
        return;
    }
    // Progress since the stall began ends it.
    if let Some(ep) = &t.episode
        && seq_after(e.snd_una, ep.snd_una)
    {
        end_episode(t, c, ts, "acknowledged", out);
    }
    let mss_before = t.last_mss;
    t.note_retransmit(e);
    if e.kind == retransmit_kind::TLP {
        t.tlp += 1;
    } else if e.kind == retransmit_kind::FAST {
        t.fast += 1;
    }

    // Healthy PMTUD: a too-big message arrived and the MSS shrank to fit it (from
    // its earlier value when one was seen, else at least to what the MTU allows).
    if !t.pmtud_ok_reported
        && let Some(tb) = too_big_valid(t).cloned()
        && e.mss > 0
    {
        let before = tb.mss_before.max(mss_before);
        let fits = tb.mtu > header_bytes(&t.flow) && e.mss <= tb.mtu - header_bytes(&t.flow);
        if fits && (before == 0 || e.mss < before) {
            t.pmtud_ok_reported = true;
            out.push(verdict(
                t,
                c,
                ts,
                "pmtud_ok",
                "high",
                json!({
                    "mtu": tb.mtu,
                    "router": tb.router,
                    "mss_before": (before != 0).then_some(before),
                    "mss_after": e.mss,
                    "ms_to_adapt": ms(ts.saturating_sub(tb.ts_ns)),
                }),
                format!(
                    "path MTU discovery works: {} reported MTU {}, the socket lowered its \
                     MSS to {} and resent. Nothing to fix.",
                    tb.router, tb.mtu, e.mss
                ),
            ));
        }
    }

    if e.kind == retransmit_kind::RTO {
        t.rto += 1;
        if t.episode.is_none() {
            t.episode = Some(Box::new(Episode {
                start_ns: ts,
                snd_una: e.snd_una,
                mss: e.mss,
                rto: 0,
                full_size: 0,
                small: 0,
                bytes_acked: e.bytes_acked,
                delivered: e.delivered,
                snd_queue_start: e.snd_queue,
                snd_queue_last: e.snd_queue,
                backoff: e.backoff,
                mss_low: e.mss,
                blackhole: None,
                stall_reported: false,
                first_seg_len: e.seg_len,
            }));
        }
        let too_big = !t.too_big.is_empty();
        let state = t.flow.state;
        let ep = t.episode.as_mut().expect("set above");
        ep.rto += 1;
        ep.backoff = e.backoff;
        ep.snd_queue_last = e.snd_queue;
        ep.mss_low = ep.mss_low.min(e.mss);
        if e.mss == ep.mss {
            if e.seg_len >= ep.mss && e.seg_len >= MIN_FULL_SIZE {
                ep.full_size += 1;
            } else {
                ep.small += 1;
            }
        }
        let established = matches!(state, TCP_ESTABLISHED | TCP_CLOSE_WAIT | TCP_FIN_WAIT1);
        let avg = Timeline::avg_delivered(ep.bytes_acked, ep.delivered);
        // Segments delivered but not cumulatively acknowledged are SACKed data past a
        // hole: the path carries full-size segments, this is loss (random loss made
        // exactly this look like a black hole). So is anything delivered during the
        // stall itself.
        let sacked_past_hole = ep.delivered > 2 && ep.bytes_acked < u64::from(ep.mss);
        let delivered_in_stall = e.delivered != ep.delivered;
        let size_bound = !sacked_past_hole
            && !delivered_in_stall
            && match avg {
                None => true,
                Some(a) => a < SMALL_DELIVERY_RATIO * ep.mss as f64,
            };
        let ep = ep.clone();
        // PMTUD black hole: full-size segments retransmitted on RTO, nothing small
        // among them, no too-big message, and only small segments ever delivered.
        if established
            && ep.rto >= 2
            && ep.small == 0
            && ep.full_size >= 2
            && !too_big
            && size_bound
        {
            let confidence = if ep.rto >= 3 { "high" } else { "medium" };
            if ep.blackhole != Some(confidence) && ep.mss == e.mss {
                if let Some(x) = t.episode.as_mut() {
                    x.blackhole = Some(confidence);
                }
                let hdr = header_bytes(&t.flow);
                out.push(verdict(
                    t,
                    c,
                    ts,
                    "pmtud_blackhole",
                    confidence,
                    json!({
                        "rto_retransmits": ep.rto,
                        "full_size_retransmits": ep.full_size,
                        "seg_len": e.seg_len,
                        "mss": ep.mss,
                        "packet_size": ep.mss.saturating_add(hdr),
                        "too_big_received": 0,
                        "bytes_acked": ep.bytes_acked,
                        "segments_delivered": ep.delivered,
                        "avg_delivered_segment": avg.map(|a| a.round()),
                        "backoff": e.backoff,
                        "stuck_ms": ms(ts.saturating_sub(ep.start_ns)),
                        "snd_queue": e.snd_queue,
                    }),
                    format!(
                        "{}-byte packets to {} vanish and no ICMP {} comes back, while small \
                         packets pass: a router on the path has a smaller MTU and its \
                         too-big messages are filtered. Fix on the path: allow {} through \
                         firewalls; or on this host: sysctl net.ipv4.tcp_mtu_probing=1 (the \
                         kernel then searches for a size that fits, after 3 RTOs), or clamp \
                         the MSS (iptables/nft 'tcp option maxseg size set rt mtu', or `ip \
                         route ... advmss 1360`). Packets of 1280 bytes fit IPv6's minimum MTU.",
                        ep.mss.saturating_add(hdr),
                        net::peer_ip(&t.flow),
                        if t.flow.family == agent_common::event::AF_INET6 {
                            "packet-too-big"
                        } else {
                            "fragmentation-needed"
                        },
                        if t.flow.family == agent_common::event::AF_INET6 {
                            "ICMPv6 type 2 (packet too big)"
                        } else {
                            "ICMP type 3 code 4 (fragmentation needed)"
                        }
                    ),
                ));
            }
        }
        // Clogged: RTOs while the application keeps queueing.
        if ep.rto >= 2
            && !ep.stall_reported
            && ep.snd_queue_last > ep.snd_queue_start.saturating_add(ep.mss.max(1))
        {
            if let Some(x) = t.episode.as_mut() {
                x.stall_reported = true;
            }
            out.push(verdict(
                t,
                c,
                ts,
                "stall",
                "medium",
                json!({
                    "rto_retransmits": ep.rto,
                    "backoff": e.backoff,
                    "snd_queue_start": ep.snd_queue_start,
                    "snd_queue_now": ep.snd_queue_last,
                    "stuck_ms": ms(ts.saturating_sub(ep.start_ns)),
                }),
                "the socket is clogged: retransmission timeouts keep firing while the \
                 application keeps writing; sends will block or fail until the path \
                 recovers."
                    .to_string(),
            ));
        }
    }

    // Loss with progress, not bound to size or to a PMTU event.
    let pmtu_involved = t.pmtud_ok_reported
        || !t.too_big.is_empty()
        || t.verdicts.has("pmtud_blackhole")
        || t.verdicts.has("pmtud_ok")
        || t.verdicts.has("blackhole_recovered")
        || t.episode.as_ref().is_some_and(|ep| ep.blackhole.is_some());
    // Loss means recovering: acknowledgements moved on between retransmits more
    // than once (a single tail-loss probe answered before the peer died is not a
    // lossy path), and never judged from inside a stall that has not moved.
    let stalled = t.episode.as_ref().is_some_and(|ep| ep.rto >= 2);
    if t.progressed >= 2
        && t.total_retransmits >= LOSS_MIN_RETRANSMITS
        && !pmtu_involved
        && !stalled
    {
        let confidence = if t.total_retransmits >= LOSS_HIGH_RETRANSMITS {
            "high"
        } else {
            "medium"
        };
        if t.loss_reported != Some(confidence) && t.loss_reported != Some("high") {
            t.loss_reported = Some(confidence);
            let (total, segs, rto, fast, tlp, min, max, prog) = (
                t.total_retransmits,
                t.total_segs,
                t.rto,
                t.fast,
                t.tlp,
                t.min_seg,
                t.max_seg,
                t.progressed,
            );
            out.push(verdict(
                t,
                c,
                ts,
                "packet_loss",
                confidence,
                json!({
                    "retransmits": total,
                    "retransmitted_segments": segs,
                    "rto": rto,
                    "fast": fast,
                    "tlp": tlp,
                    "seg_len_min": min,
                    "seg_len_max": max,
                    "progress_between_retransmits": prog,
                }),
                "segments of all sizes are being lost and recovered while data still \
                 flows: congestion or a lossy link, not PMTUD. Check interface errors and \
                 drops along the path (ethtool -S, ip -s link), queue drops, and the \
                 retransmission rate (nstat TcpRetransSegs)."
                    .to_string(),
            ));
        }
    }
}

pub fn on_cong_state(t: &mut Timeline, c: &Ctx, e: &CongState, out: &mut Vec<Verdict>) {
    if e.state == CA_OPEN && t.episode.is_some() {
        end_episode(t, c, e.header.ts_ns, "congestion state back to open", out);
    }
}

/// A received too-big message for a tracked socket: valid evidence, or forged.
pub fn on_too_big(
    t: &mut Timeline,
    c: &Ctx,
    e: &IcmpTooBig,
    router: String,
    out: &mut Vec<Verdict>,
) {
    if e.quoted.protocol == agent_common::event::IPPROTO_TCP
        && let Some((una, nxt)) = t.window
        && nxt != una
        && (seq_after(una, e.seq) || seq_after(e.seq, nxt))
    {
        out.push(spoofed(
            c,
            e,
            &router,
            "high",
            format!(
                "quoted sequence number {} is outside the socket's unacknowledged window \
                 [{una}, {nxt}]",
                e.seq
            ),
        ));
        return;
    }
    t.note_too_big(TooBigFact {
        ts_ns: e.header.ts_ns,
        mtu: e.mtu,
        router,
        mss_before: t.last_mss,
    });
}

pub fn spoofed(
    c: &Ctx,
    e: &IcmpTooBig,
    router: &str,
    confidence: &'static str,
    reason: String,
) -> Verdict {
    Verdict {
        ts_ns: e.header.ts_ns,
        sock: c.sock,
        flow: e.quoted,
        owner: c.owner,
        verdict: "spoofed_ptb",
        confidence,
        evidence: json!({
            "reason": reason,
            "mtu": e.mtu,
            "router": router,
            "quoted_seq": e.seq,
        }),
        netns: e.netns,
        advice: "a too-big message that matches no live connection's unacknowledged data: \
                 off-path or forged (or for a connection sendsight has not seen since it \
                 started). It is not used as evidence. If many arrive, someone may be trying \
                 to shrink your path MTU: consider rate-limiting ICMP at the edge."
            .to_string(),
    }
}

/// The socket gave up (ETIMEDOUT) or was reset.
pub fn on_socket_error(t: &mut Timeline, c: &Ctx, e: &SocketError, out: &mut Vec<Verdict>) {
    let ts = e.header.ts_ns;
    ended(t, c, ts, e.errno, out);
}

fn ended(t: &mut Timeline, c: &Ctx, ts: u64, err: i32, out: &mut Vec<Verdict>) {
    if t.ended_reported {
        return;
    }
    let in_episode = t.episode.clone();
    match (err, in_episode) {
        (ETIMEDOUT, Some(ep)) if ep.blackhole.is_none() => {
            t.ended_reported = true;
            out.push(verdict(
                t,
                c,
                ts,
                "path_down",
                "high",
                json!({
                    "rto_retransmits": ep.rto,
                    "backoff": ep.backoff,
                    "stuck_ms": ms(ts.saturating_sub(ep.start_ns)),
                    "acknowledged_during_stall": 0,
                    "ended_with": errno::name(err),
                }),
                format!(
                    "nothing was acknowledged for {} ms, through {} retransmission timeouts, \
                     until the connection timed out: the peer {} is dead or unreachable \
                     (routing, firewall, host down). Check reachability from this host \
                     (ping, ip route get {}) and the peer's health.",
                    ms(ts.saturating_sub(ep.start_ns)) as u64,
                    ep.rto,
                    net::peer_ip(&t.flow),
                    net::peer_ip(&t.flow)
                ),
            ));
        }
        (ETIMEDOUT | ECONNRESET | EPIPE, None) => {
            t.ended_reported = true;
            let idle = ts.saturating_sub(t.last_ns);
            out.push(verdict(
                t,
                c,
                ts,
                "disconnect",
                "medium",
                json!({
                    "cause": if err == ETIMEDOUT { "timeout" } else { "reset" },
                    "errno_name": errno::name(err),
                    "idle_ms": ms(idle),
                    "retransmits_before": t.total_retransmits,
                }),
                if err == ETIMEDOUT {
                    "the connection was cut off while idle (keepalive or user timeout): a \
                     middlebox (NAT, firewall, load balancer) probably dropped its state. \
                     Use keepalives shorter than the middlebox's idle timeout."
                        .to_string()
                } else {
                    "the peer (or a middlebox on its behalf) reset the connection: check the \
                     peer's logs, its listen backlog, and idle timeouts on the path."
                        .to_string()
                },
            ));
        }
        _ => {}
    }
}

/// The socket closed: a stall still open at close is a dead path.
pub fn on_close(t: &mut Timeline, c: &Ctx, ts: u64, out: &mut Vec<Verdict>) {
    if t.episode.as_ref().is_some_and(|ep| ep.rto >= 2) {
        ended(t, c, ts, ETIMEDOUT, out);
    }
}

/// Every send failure, explained with the socket's recent history.
pub fn on_send_error(t: &mut Timeline, c: &Ctx, e: &SendError, out: &mut Vec<Verdict>) {
    let ts = e.header.ts_ns;
    if let Some(slot) = t.last_send_verdict.iter_mut().find(|(n, _)| *n == e.errno) {
        if ts.saturating_sub(slot.1) < SEND_VERDICT_INTERVAL_NS {
            t.send_verdicts_suppressed += 1;
            return;
        }
        slot.1 = ts;
    } else {
        // A free slot, else the one used longest ago.
        let slot = t
            .last_send_verdict
            .iter_mut()
            .min_by_key(|(n, at)| (*n != 0, *at))
            .expect("two slots");
        *slot = (e.errno, ts);
    }
    if matches!(e.errno, ETIMEDOUT | ECONNRESET | EPIPE) {
        // The send is often the first to hear of it: judge the ending now.
        ended(t, c, ts, e.errno, out);
    }
    let prior = t.verdicts.prior();
    let likely = t.verdicts.last().or(match e.errno {
        ETIMEDOUT => Some("path_down"),
        ECONNRESET | EPIPE => Some("disconnect"),
        EMSGSIZE => Some("message_larger_than_path_mtu"),
        _ => None,
    });
    let recent: Vec<Value> = t
        .retransmits
        .iter()
        .rev()
        .take(5)
        .map(|r| {
            json!({
                "ago_ms": ms(ts.saturating_sub(r.ts_ns)),
                "kind": net::retransmit_kind_name(r.kind),
                "seg_len": r.seg_len,
                "backoff": r.backoff,
            })
        })
        .collect();
    let name = errno::name(e.errno);
    let meaning = errno::text(e.errno);
    let advice = match (e.errno, likely) {
        (ECOMM, Some(v)) => format!(
            "ECOMM ({meaning}) ends this socket's story of {v}: fix that and this error goes \
             away."
        ),
        (ECOMM, None) => format!(
            "ECOMM ({meaning}) with no network trouble seen on this socket: it was most \
             likely produced before the network stack (a seccomp or LSM policy, or a driver) \
             — check the process's seccomp filter and security modules."
        ),
        (EMSGSIZE, _) => format!(
            "{name}: the datagram is bigger than the path MTU the kernel knows ({}); send \
             smaller datagrams or let the kernel fragment (IP_PMTUDISC_WANT).",
            t.too_big
                .back()
                .map(|tb| format!("{} from {}", tb.mtu, tb.router))
                .unwrap_or_else(|| "the interface MTU".into())
        ),
        (_, Some(v)) => format!("{name} ({meaning}): most likely the end of this socket's {v}."),
        (_, None) => {
            format!("{name} ({meaning}): no network trouble was seen on this socket before it.")
        }
    };
    t.verdict("send_error");
    out.push(Verdict {
        ts_ns: ts,
        sock: c.sock,
        flow: if e.flow.family != 0 { e.flow } else { t.flow },
        owner: c.owner,
        verdict: "send_error",
        confidence: if likely.is_some() { "high" } else { "medium" },
        evidence: json!({
            "errno": e.errno,
            "errno_name": name,
            "meaning": meaning,
            "likely_cause": likely,
            "prior_verdicts": prior,
            "recent_retransmits": recent,
            "rto_retransmits": t.episode.as_ref().map(|ep| ep.rto).unwrap_or(0),
            "stuck_ms": t.episode.as_ref().map(|ep| ms(ts.saturating_sub(ep.start_ns))),
            "too_big_received": t.too_big.len(),
            "last_too_big_mtu": t.too_big.back().map(|tb| tb.mtu),
            "snd_queue": t.retransmits.back().map(|r| r.snd_queue),
        }),
        advice,
        netns: t.netns,
    });
}
