//! The closing summary: counts from the summary line, and what this view noted on
//! the way (the worst sockets, the paths).

use std::{collections::BTreeMap, fmt::Write as _};

use serde_json::{Map, Value};

use super::{
    Renderer,
    fields::{COMMON, flow, pairs, process, scalar, str_of},
    style::{is_good, paint},
};

/// Sockets remembered for the summary; later ones are not ranked (bounded memory).
const MAX_SOCKETS: usize = 10_000;
const MAX_PATHS: usize = 1_000;
/// Rows in each summary table.
const TOP: usize = 5;

/// What the summary needs to know about one socket.
#[derive(Default)]
pub(super) struct SockStats {
    label: String,
    retransmits: u64,
    errors: u64,
    /// verdict -> highest confidence seen (0 low, 1 medium, 2 high).
    verdicts: BTreeMap<String, u8>,
    first_seen: u64,
}

impl SockStats {
    fn severity(&self) -> (u8, usize, u64) {
        let worst = self
            .verdicts
            .iter()
            .filter(|(v, _)| !is_good(v))
            .map(|(_, c)| c + 1)
            .max()
            .unwrap_or(0);
        (worst, self.verdicts.len(), self.retransmits + self.errors)
    }
}

pub(super) struct PathStats {
    verdict: String,
    destination: String,
    sockets: usize,
}

fn confidence_rank(c: &str) -> u8 {
    match c {
        "high" => 2,
        "medium" => 1,
        _ => 0,
    }
}

impl Renderer {
    /// Remembers what the summary will rank.
    pub(super) fn note(&mut self, kind: &str, m: &Map<String, Value>) {
        if kind == "path" {
            if self.paths.len() < MAX_PATHS {
                self.paths.push(PathStats {
                    verdict: str_of(m, "verdict").unwrap_or("?").into(),
                    destination: str_of(m, "destination").unwrap_or("?").into(),
                    sockets: m
                        .get("sockets")
                        .and_then(Value::as_array)
                        .map_or(0, Vec::len),
                });
            }
            return;
        }
        let Some(sock) = m.get("sock").and_then(Value::as_u64) else {
            return;
        };
        if !self.sockets.contains_key(&sock) && self.sockets.len() >= MAX_SOCKETS {
            return;
        }
        let label = format!("{}  {}", process(m), flow(m));
        self.order += 1;
        let order = self.order;
        let s = self.sockets.entry(sock).or_insert_with(|| SockStats {
            first_seen: order,
            ..Default::default()
        });
        if s.label.is_empty() || m.get("process").is_some_and(|p| !p.is_null()) {
            s.label = label;
        }
        match kind {
            "retransmit" => s.retransmits += m.get("segs").and_then(Value::as_u64).unwrap_or(1),
            "send_error" | "connect_error" | "socket_error" => s.errors += 1,
            "verdict" => {
                let v = str_of(m, "verdict").unwrap_or("?").to_string();
                let c = confidence_rank(str_of(m, "confidence").unwrap_or(""));
                let e = s.verdicts.entry(v).or_default();
                *e = (*e).max(c);
            }
            _ => {}
        }
    }

    pub(super) fn summary(&self, m: &Map<String, Value>) -> String {
        let p = &self.pal;
        let mut s = String::new();
        let rule = "─".repeat(self.opts.width.min(72).saturating_sub(12));
        let _ = writeln!(s, "{} {}", paint(p.bold, "── summary"), paint(p.dim, &rule));
        let dur = m
            .get("duration_s")
            .and_then(Value::as_f64)
            .map(|d| format!("{d:.1} s, "))
            .unwrap_or_default();
        let _ = writeln!(
            s,
            "    {dur}{} events, {} sockets seen, {} lost",
            m.get("events_total").map(scalar).unwrap_or_default(),
            m.get("sockets_seen").map(scalar).unwrap_or_default(),
            m.get("lost_total").map(scalar).unwrap_or_default(),
        );
        let counts = |key: &str| -> Vec<String> {
            let mut v: Vec<(String, u64)> = m
                .get(key)
                .and_then(Value::as_object)
                .map(|o| {
                    o.iter()
                        .map(|(k, v)| (k.clone(), v.as_u64().unwrap_or(0)))
                        .filter(|(_, n)| *n > 0)
                        .collect()
                })
                .unwrap_or_default();
            v.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
            v.into_iter().map(|(k, n)| format!("{k} {n}")).collect()
        };
        let verdicts = counts("verdicts");
        s.push_str(&self.block(
            "verdicts",
            &if verdicts.is_empty() {
                "none".into()
            } else {
                verdicts.join(", ")
            },
        ));
        let events = counts("events");
        if !events.is_empty() {
            s.push_str(&self.block("events", &events.join(", ")));
        }
        let lost = counts("lost");
        if !lost.is_empty() {
            s.push_str(&self.block("lost", &lost.join(", ")));
        }
        // Other summary fields (new ones included), when they say something.
        let known = [
            "duration_s",
            "events_total",
            "sockets_seen",
            "lost_total",
            "verdicts",
            "events",
            "lost",
        ];
        let mut skip: Vec<&str> = COMMON.to_vec();
        skip.extend(known);
        let other: Vec<String> = pairs(m, &skip)
            .into_iter()
            .filter(|p| !p.ends_with("=0"))
            .collect();
        if !other.is_empty() {
            s.push_str(&self.block("also", &other.join(" ")));
        }
        let mut worst: Vec<(&u64, &SockStats)> = self
            .sockets
            .iter()
            .filter(|(_, st)| {
                let (w, n, t) = st.severity();
                w > 0 || n > 0 || t > 0
            })
            .collect();
        worst.sort_by(|a, b| {
            b.1.severity()
                .cmp(&a.1.severity())
                .then(a.1.first_seen.cmp(&b.1.first_seen))
        });
        if !worst.is_empty() {
            let _ = writeln!(s, "    {}", paint(p.dim, "worst sockets:"));
            for (id, st) in worst.iter().take(TOP) {
                let vs: Vec<String> = st
                    .verdicts
                    .iter()
                    .map(|(v, c)| {
                        let c = ["low", "medium", "high"][(*c as usize).min(2)];
                        let style = if is_good(v) { p.good } else { p.warn };
                        format!("{} ({c})", paint(style, v))
                    })
                    .collect();
                let mut facts = vs;
                if st.retransmits > 0 {
                    facts.push(format!("{} retransmits", st.retransmits));
                }
                if st.errors > 0 {
                    facts.push(format!("{} errors", st.errors));
                }
                let _ = writeln!(s, "      sock {id:<4} {}", st.label.trim());
                let opts = textwrap::Options::new(self.opts.width)
                    .initial_indent("                ")
                    .subsequent_indent("                ");
                for l in textwrap::wrap(&facts.join(", "), opts) {
                    let _ = writeln!(s, "{l}");
                }
            }
            if worst.len() > TOP {
                let _ = writeln!(s, "      ... and {} more", worst.len() - TOP);
            }
        }
        if !self.paths.is_empty() {
            let _ = writeln!(s, "    {}", paint(p.dim, "paths:"));
            for ps in self.paths.iter().rev().take(TOP) {
                let _ = writeln!(
                    s,
                    "      {:<24} {}  {} sockets",
                    ps.destination, ps.verdict, ps.sockets
                );
            }
        }
        s
    }
}
