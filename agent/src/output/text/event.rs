//! One line per event: time, process, flow, what happened and the few numbers
//! that matter; the agent's start and lost-event lines.

use std::{collections::BTreeMap, fmt::Write as _};

use anstyle::Style;
use serde_json::{Map, Value};

use super::{
    Renderer,
    fields::{COMMON, flow, pairs, process, scalar, str_of, time_of},
    style::paint,
};

impl Renderer {
    pub(super) fn head(&self, m: &Map<String, Value>, kind: &str, style: Style) -> String {
        format!(
            "{}  {:<16}  {}  {}",
            paint(self.pal.dim, &time_of(m)),
            process(m),
            flow(m),
            paint(style, kind)
        )
    }

    pub(super) fn event(&self, kind: &str, m: &Map<String, Value>) -> String {
        let (style, detail) = match kind {
            "retransmit" => {
                let mut d = vec![str_of(m, "kind").unwrap_or("?").to_string()];
                let mut num = |key: &str, label: &str, unit: &str| {
                    if let Some(v) = m.get(key).filter(|v| !v.is_null()) {
                        d.push(format!("{label} {}{unit}", scalar(v)));
                    }
                };
                num("seg_len", "seg", " B");
                num("mss", "mss", "");
                num("pmtu", "pmtu", "");
                num("rto_ms", "rto", " ms");
                if m.get("backoff").and_then(Value::as_u64).unwrap_or(0) > 0 {
                    num("backoff", "backoff", "");
                }
                num("snd_queue", "queued", " B");
                // A failed retransmit attempt (the kernel's -EBUSY, -ENOMEM...).
                if let Some(e) = m
                    .get("err")
                    .filter(|v| !v.is_null() && v.as_i64() != Some(0))
                {
                    d.push(format!("err {}", scalar(e)));
                }
                (self.pal.warn, d.join(", "))
            }
            "send_error" | "connect_error" | "socket_error" => {
                let mut d = format!(
                    "{} ({})",
                    str_of(m, "errno_name").unwrap_or("?"),
                    str_of(m, "errno_text").unwrap_or("")
                );
                if let Some(s) = str_of(m, "syscall") {
                    let _ = write!(d, ", {s}");
                }
                if let Some(b) = m.get("bytes").and_then(Value::as_u64) {
                    let _ = write!(d, ", {b} B");
                }
                (self.pal.bad, d)
            }
            "icmp_too_big" => {
                let mut d = str_of(m, "source").unwrap_or("?").to_string();
                if let Some(mtu) = m.get("mtu").filter(|v| !v.is_null()) {
                    let _ = write!(d, ", mtu {}", scalar(mtu));
                }
                if let Some(r) = str_of(m, "router") {
                    let _ = write!(d, ", from {r}");
                }
                (self.pal.info, d)
            }
            "socket_state" => (
                self.pal.dim,
                format!(
                    "{} -> {}",
                    str_of(m, "old_state").unwrap_or("?"),
                    str_of(m, "new_state").unwrap_or("?")
                ),
            ),
            "cong_state" => (
                self.pal.dim,
                str_of(m, "ca_state").unwrap_or("?").to_string(),
            ),
            "udp_send" => {
                let mut d = format!("{} B", m.get("bytes").map(scalar).unwrap_or_default());
                if let Some(s) = str_of(m, "service") {
                    let _ = write!(d, " ({s})");
                }
                (self.pal.info, d)
            }
            "udp_queue_drop" => {
                let n = |k: &str| m.get(k).and_then(Value::as_u64).unwrap_or(0);
                let mut d = format!("{} dropped (queue full)", n("dropped"));
                if n("memory_drops") > 0 {
                    let _ = write!(d, ", {} at the memory limit", n("memory_drops"));
                }
                if let Some(b) = m.get("rcvbuf").and_then(Value::as_u64) {
                    let _ = write!(d, ", rcvbuf {b} B");
                }
                if let Some(q) = m.get("queued").and_then(Value::as_u64) {
                    let _ = write!(d, ", queued {q} B");
                }
                if let Some(p) = m
                    .get("peers")
                    .and_then(Value::as_array)
                    .and_then(|p| p.first())
                {
                    let _ = write!(
                        d,
                        ", from {}:{} ({})",
                        p["ip"].as_str().unwrap_or("?"),
                        p["port"],
                        p["dropped"]
                    );
                }
                if n("suppressed") > 0 {
                    let _ = write!(d, ", {} records held back", n("suppressed"));
                }
                if let Some(s) = str_of(m, "service") {
                    let _ = write!(d, " ({s})");
                }
                (self.pal.bad, d)
            }
            _ => (self.pal.kind, pairs(m, COMMON).join(" ")),
        };
        let mut s = self.head(m, kind, style);
        if !detail.is_empty() {
            s.push_str("  ");
            s.push_str(&detail);
        }
        self.fit(&s)
    }

    pub(super) fn loss(&self, m: &Map<String, Value>) -> String {
        format!(
            "{}  {}  {} lost {} (total {})\n",
            paint(self.pal.dim, &time_of(m)),
            paint(self.pal.bad, "LOSS"),
            str_of(m, "source").unwrap_or("?"),
            m.get("lost").map(scalar).unwrap_or_default(),
            m.get("total").map(scalar).unwrap_or_default()
        )
    }

    pub(super) fn start(&self, m: &Map<String, Value>) -> String {
        let mut s = format!(
            "{}  {} {} on kernel {}",
            paint(self.pal.dim, &time_of(m)),
            paint(self.pal.bold, "sendsight"),
            str_of(m, "version")
                .or_else(|| str_of(m, "agent_version"))
                .unwrap_or("?"),
            str_of(m, "kernel").unwrap_or("?"),
        );
        if let Some(h) = m
            .get("host")
            .and_then(|h| h.get("name"))
            .and_then(Value::as_str)
        {
            let _ = write!(s, " ({h})");
        }
        let probes = m.get("probes").and_then(Value::as_array);
        let mut by_state: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for p in probes.into_iter().flatten() {
            by_state
                .entry(p.get("state").map(scalar).unwrap_or_default())
                .or_default()
                .push(p.get("probe").map(scalar).unwrap_or_default());
        }
        let states: Vec<String> = by_state
            .iter()
            .map(|(st, ps)| format!("{} {st}", ps.len()))
            .collect();
        if !states.is_empty() {
            let _ = write!(s, ", probes: {}", states.join(", "));
        }
        s.push('\n');
        for (st, ps) in &by_state {
            if st != "attached" {
                s.push_str(&self.block(st, &ps.join(", ")));
            }
        }
        s
    }
}
