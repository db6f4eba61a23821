//! `--format text`: the view for people at a terminal.
//!
//! Rendered at the output edge from the JSON lines themselves (the same bytes the
//! JSON writer produced, parsed back), never from the engine's types: a verdict,
//! line type or evidence key this module has never heard of is still shown, as
//! `key=value` pairs. One line per event (time, process, flow, what happened, the few
//! numbers that matter); verdicts as a block with the evidence and the advice wrapped
//! to the terminal width; at the end a summary (verdicts by kind, worst sockets,
//! paths).
//!
//! Colour: only on a terminal, never when NO_COLOR is set (non-empty), forced by
//! CLICOLOR_FORCE; the styles come from `anstyle`, detection from `anstyle-query`.
//! Width: `COLUMNS` when set, else the terminal's, else 100.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    fmt::Write as _,
    io::{self, IsTerminal as _, Write},
};

use anstyle::{AnsiColor, Style};
use serde_json::{Map, Value};

/// How the text is laid out.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Options {
    /// Columns to wrap verdict blocks to (at least 40 are used).
    pub width: usize,
    /// Emit ANSI colours.
    pub color: bool,
}

impl Options {
    /// For output on stdout: width and colour from the environment and the terminal.
    pub fn for_stdout() -> Self {
        let stdout = io::stdout();
        let tty = stdout.is_terminal();
        Self {
            width: width_from_env().unwrap_or_else(|| {
                terminal_size::terminal_size_of(&stdout)
                    .map(|(w, _)| w.0 as usize)
                    .unwrap_or(DEFAULT_WIDTH)
            }),
            color: color_wanted(tty),
        }
    }
}

pub const DEFAULT_WIDTH: usize = 100;
const MIN_WIDTH: usize = 40;
/// Sockets remembered for the summary; later ones are not ranked (bounded memory).
const MAX_SOCKETS: usize = 10_000;
const MAX_PATHS: usize = 1_000;
const MAX_ADVICE: usize = 1_000;
/// Rows in each summary table.
const TOP: usize = 5;

fn width_from_env() -> Option<usize> {
    std::env::var("COLUMNS")
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|w| *w > 0)
}

/// NO_COLOR (any non-empty value) wins; then CLICOLOR_FORCE; then a terminal that is
/// not `dumb`.
pub fn color_wanted(tty: bool) -> bool {
    if anstyle_query::no_color() {
        return false;
    }
    if anstyle_query::clicolor_force() {
        return true;
    }
    tty && anstyle_query::term_supports_color()
}

/// Styles, all plain when colour is off.
struct Palette {
    dim: Style,
    bold: Style,
    warn: Style,
    bad: Style,
    good: Style,
    info: Style,
    kind: Style,
}

impl Palette {
    fn new(color: bool) -> Self {
        if !color {
            let p = Style::new();
            return Self {
                dim: p,
                bold: p,
                warn: p,
                bad: p,
                good: p,
                info: p,
                kind: p,
            };
        }
        Self {
            dim: Style::new().dimmed(),
            bold: Style::new().bold(),
            warn: Style::new().bold().fg_color(Some(AnsiColor::Yellow.into())),
            bad: Style::new().bold().fg_color(Some(AnsiColor::Red.into())),
            good: Style::new().bold().fg_color(Some(AnsiColor::Green.into())),
            info: Style::new().fg_color(Some(AnsiColor::Cyan.into())),
            kind: Style::new().fg_color(Some(AnsiColor::Magenta.into())),
        }
    }
}

fn paint(s: Style, text: &str) -> String {
    if s == Style::new() {
        text.to_string()
    } else {
        format!("{s}{text}{s:#}")
    }
}

/// What the summary needs to know about one socket.
#[derive(Default)]
struct SockStats {
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

struct PathStats {
    verdict: String,
    destination: String,
    sockets: usize,
}

/// Turns JSON lines into text. Keeps a little state for the closing summary.
pub struct Renderer {
    opts: Options,
    pal: Palette,
    sockets: HashMap<u64, SockStats>,
    paths: Vec<PathStats>,
    order: u64,
    /// Advice texts already shown in full.
    advised: HashSet<String>,
}

/// A verdict that says things are fine (shown in green).
fn is_good(verdict: &str) -> bool {
    verdict.ends_with("_ok") || verdict.ends_with("_recovered")
}

fn confidence_rank(c: &str) -> u8 {
    match c {
        "high" => 2,
        "medium" => 1,
        _ => 0,
    }
}

/// Fields shown in the head of every socket line, so not again as `key=value`.
const COMMON: &[&str] = &[
    "schema",
    "type",
    "ts",
    "ts_ns",
    "host",
    "agent_version",
    "sock",
    "family",
    "protocol",
    "local",
    "peer",
    "process",
    "netns",
    "cpu",
];

impl Renderer {
    pub fn new(opts: Options) -> Self {
        Self {
            pal: Palette::new(opts.color),
            opts: Options {
                width: opts.width.max(MIN_WIDTH),
                ..opts
            },
            sockets: HashMap::new(),
            paths: Vec::new(),
            order: 0,
            advised: HashSet::new(),
        }
    }

    /// Renders every complete line of `bytes` (JSON lines) into `out`. A line that is
    /// not a JSON object is passed through as it is.
    pub fn render_lines(&mut self, bytes: &[u8], out: &mut Vec<u8>) {
        for line in bytes.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            self.render_line(line, out);
        }
    }

    pub fn render_line(&mut self, line: &[u8], out: &mut Vec<u8>) {
        match serde_json::from_slice::<Value>(line) {
            Ok(Value::Object(m)) => {
                let s = self.render(&m);
                out.extend_from_slice(s.as_bytes());
            }
            _ => {
                out.extend_from_slice(line);
                out.push(b'\n');
            }
        }
    }

    /// One parsed line as text (ends with a newline).
    pub fn render(&mut self, m: &Map<String, Value>) -> String {
        let kind = str_of(m, "type").unwrap_or("?").to_string();
        self.note(&kind, m);
        match kind.as_str() {
            "start" => self.start(m),
            "verdict" => self.verdict(m),
            "path" => self.path(m),
            "summary" => self.summary(m),
            "loss" => self.loss(m),
            _ => self.event(&kind, m),
        }
    }

    /// Remembers what the summary will rank.
    fn note(&mut self, kind: &str, m: &Map<String, Value>) {
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

    fn head(&self, m: &Map<String, Value>, kind: &str, style: Style) -> String {
        format!(
            "{}  {:<16}  {}  {}",
            paint(self.pal.dim, &time_of(m)),
            process(m),
            flow(m),
            paint(style, kind)
        )
    }

    fn event(&self, kind: &str, m: &Map<String, Value>) -> String {
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

    /// One event per line when it fits; else continued on indented lines (never
    /// cut: the numbers are the point). Lines break between the fields (two spaces
    /// apart) or after a detail's comma, so a flow stays whole.
    fn fit(&self, line: &str) -> String {
        const INDENT: &str = "              ";
        let width = self.opts.width;
        let w = textwrap::core::display_width;
        if w(line) <= width {
            return format!("{line}\n");
        }
        // Pieces: fields, and within a field its comma-separated parts.
        let mut pieces: Vec<(String, &str)> = Vec::new();
        for (i, field) in line.split("  ").filter(|f| !f.is_empty()).enumerate() {
            let parts: Vec<&str> = field.split_inclusive(", ").collect();
            for (j, part) in parts.iter().enumerate() {
                let sep = match (i, j) {
                    (0, 0) => "",
                    (_, 0) => "  ",
                    _ => "",
                };
                pieces.push((part.to_string(), sep));
            }
        }
        let mut out = String::new();
        let mut cur = String::new();
        for (piece, sep) in pieces {
            if !cur.is_empty() && w(&cur) + w(sep) + w(piece.trim_end()) > width {
                out.push_str(cur.trim_end());
                out.push('\n');
                cur = INDENT.to_string();
            } else {
                cur.push_str(sep);
            }
            cur.push_str(&piece);
        }
        out.push_str(cur.trim_end());
        out.push('\n');
        out
    }

    fn verdict(&mut self, m: &Map<String, Value>) -> String {
        let name = str_of(m, "verdict").unwrap_or("?");
        let conf = str_of(m, "confidence").unwrap_or("?");
        let style = if is_good(name) {
            self.pal.good
        } else if conf == "high" {
            self.pal.bad
        } else {
            self.pal.warn
        };
        let mut s = String::new();
        let sock = m
            .get("sock")
            .and_then(Value::as_u64)
            .map(|n| format!("  sock={n}"))
            .unwrap_or_default();
        s.push_str(&self.fit(&format!(
            "{}  {} {} ({conf})  {}  {}{}",
            paint(self.pal.dim, &time_of(m)),
            paint(style, "▶ VERDICT"),
            paint(style, name),
            process(m),
            flow(m),
            sock
        )));
        let skip = ["verdict", "confidence", "evidence", "advice"];
        let mut skip_all: Vec<&str> = COMMON.to_vec();
        skip_all.extend(skip);
        // Fields of the verdict line this module does not know (a new schema
        // version): shown, not dropped.
        let extra = pairs(m, &skip_all);
        if !extra.is_empty() {
            s.push_str(&self.block("also", &extra.join(" ")));
        }
        if let Some(Value::Object(ev)) = m.get("evidence") {
            s.push_str(&self.block("evidence", &pairs(ev, &[]).join(" ")));
        }
        if let Some(a) = str_of(m, "advice").filter(|a| !a.is_empty()) {
            // The same advice again (a verdict raised, another socket on the same
            // path): said once, pointed at after.
            if self.advised.contains(a) {
                s.push_str(&self.block("advice", &format!("as above ({name})")));
            } else {
                s.push_str(&self.block("advice", a));
                if self.advised.len() < MAX_ADVICE {
                    self.advised.insert(a.to_string());
                }
            }
        }
        s
    }

    /// `   label:   text wrapped to the width, continued under the text`.
    fn block(&self, label: &str, text: &str) -> String {
        let indent = "               ";
        let first = format!("    {:<10} ", format!("{label}:"));
        let opts = textwrap::Options::new(self.opts.width)
            .initial_indent(&first)
            .subsequent_indent(indent)
            .break_words(true)
            .word_splitter(textwrap::WordSplitter::NoHyphenation)
            // The default optimal fit lets a line overflow by a column when that
            // evens out the gaps (overflow 2500 per column, gap squared): never.
            .wrap_algorithm(textwrap::WrapAlgorithm::OptimalFit(
                textwrap::wrap_algorithms::Penalties {
                    overflow_penalty: 1_000_000,
                    ..textwrap::wrap_algorithms::Penalties::new()
                },
            ));
        let mut s = String::new();
        for (i, l) in textwrap::wrap(text, opts).iter().enumerate() {
            if i == 0 {
                // Dim the label only (the wrap counted it as plain text).
                let (lab, rest) = l.split_at(first.len().min(l.len()));
                let _ = writeln!(s, "{}{rest}", paint(self.pal.dim, lab));
            } else {
                let _ = writeln!(s, "{l}");
            }
        }
        s
    }

    fn path(&self, m: &Map<String, Value>) -> String {
        let name = str_of(m, "verdict").unwrap_or("?");
        let style = if is_good(name) {
            self.pal.good
        } else {
            self.pal.warn
        };
        let socks: Vec<String> = m
            .get("sockets")
            .and_then(Value::as_array)
            .map(|a| a.iter().map(scalar).collect())
            .unwrap_or_default();
        let mut s = format!(
            "{}  {} {name} towards {}: {} sockets ({})\n",
            paint(self.pal.dim, &time_of(m)),
            paint(style, "▶ PATH"),
            str_of(m, "destination").unwrap_or("?"),
            socks.len(),
            socks.join(", ")
        );
        if let Some(Value::Object(ev)) = m.get("evidence") {
            let p = pairs(ev, &[]);
            if !p.is_empty() {
                s.push_str(&self.block("evidence", &p.join(" ")));
            }
        }
        s
    }

    fn loss(&self, m: &Map<String, Value>) -> String {
        format!(
            "{}  {}  {} lost {} (total {})\n",
            paint(self.pal.dim, &time_of(m)),
            paint(self.pal.bad, "LOSS"),
            str_of(m, "source").unwrap_or("?"),
            m.get("lost").map(scalar).unwrap_or_default(),
            m.get("total").map(scalar).unwrap_or_default()
        )
    }

    fn start(&self, m: &Map<String, Value>) -> String {
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

    fn summary(&self, m: &Map<String, Value>) -> String {
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

fn str_of<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    m.get(key).and_then(Value::as_str)
}

/// `HH:MM:SS.mmm` (UTC) from the RFC 3339 `ts`.
fn time_of(m: &Map<String, Value>) -> String {
    let ts = str_of(m, "ts").unwrap_or("");
    match ts.split_once('T') {
        Some((_, t)) => t.trim_end_matches('Z').chars().take(12).collect(),
        None => format!("{ts:12}"),
    }
}

fn process(m: &Map<String, Value>) -> String {
    match m.get("process") {
        Some(Value::Object(p)) => format!(
            "{}[{}]",
            p.get("comm").and_then(Value::as_str).unwrap_or("?"),
            p.get("pid").map(scalar).unwrap_or_default()
        ),
        _ => "-".into(),
    }
}

fn endpoint(v: Option<&Value>) -> Option<String> {
    let e = v?.as_object()?;
    let ip = e.get("ip")?.as_str()?;
    let port = e.get("port").map(scalar).unwrap_or_default();
    Some(if ip.contains(':') {
        format!("[{ip}]:{port}")
    } else {
        format!("{ip}:{port}")
    })
}

fn flow(m: &Map<String, Value>) -> String {
    match (endpoint(m.get("local")), endpoint(m.get("peer"))) {
        (Some(l), Some(p)) => {
            let proto = match str_of(m, "protocol") {
                Some("tcp") | None => String::new(),
                Some(p) => format!(" {p}"),
            };
            format!("{l} -> {p}{proto}")
        }
        (None, Some(p)) => format!("-> {p}"),
        (Some(l), None) => l,
        (None, None) => String::new(),
    }
}

/// A value as text: strings bare, null as `-`, whole floats without `.0`,
/// everything else as compact JSON.
fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        Value::Number(n) if n.is_f64() => match n.as_f64() {
            Some(f) if f.fract() == 0.0 && f.abs() < 1e15 => format!("{}", f as i64),
            _ => n.to_string(),
        },
        other => other.to_string(),
    }
}

/// `key=value` for every field not in `skip`, in the line's order. Strings with
/// spaces are quoted.
fn pairs(m: &Map<String, Value>, skip: &[&str]) -> Vec<String> {
    m.iter()
        .filter(|(k, _)| !skip.contains(&k.as_str()))
        .map(|(k, v)| match v {
            Value::String(s) if s.contains(char::is_whitespace) || s.is_empty() => {
                format!("{k}={v}")
            }
            _ => format!("{k}={}", scalar(v)),
        })
        .collect()
}

/// A writer that takes JSON lines and writes their text rendering to `inner`
/// (for `replay`, which writes lines to any `Write`).
pub struct TextWriter<W: Write> {
    inner: W,
    renderer: Renderer,
    partial: Vec<u8>,
    rendered: Vec<u8>,
}

impl<W: Write> TextWriter<W> {
    pub fn new(inner: W, opts: Options) -> Self {
        Self {
            inner,
            renderer: Renderer::new(opts),
            partial: Vec::new(),
            rendered: Vec::new(),
        }
    }
}

impl<W: Write> Write for TextWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.partial.extend_from_slice(buf);
        if let Some(end) = self.partial.iter().rposition(|&b| b == b'\n') {
            self.rendered.clear();
            self.renderer
                .render_lines(&self.partial[..=end], &mut self.rendered);
            self.partial.drain(..=end);
            self.inner.write_all(&self.rendered)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if !self.partial.is_empty() {
            let rest = std::mem::take(&mut self.partial);
            self.rendered.clear();
            self.renderer.render_lines(&rest, &mut self.rendered);
            self.inner.write_all(&self.rendered)?;
        }
        self.inner.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plain() -> Renderer {
        Renderer::new(Options {
            width: 80,
            color: false,
        })
    }

    #[test]
    fn unknown_verdicts_and_evidence_are_rendered_generically() {
        let line = br#"{"type":"verdict","ts":"2026-01-02T03:04:05.678901234Z","verdict":"bind_conflict","confidence":"high","sock":7,"local":{"ip":"10.0.0.1","port":80},"peer":{"ip":"10.0.0.2","port":0},"process":{"pid":12,"comm":"nginx"},"evidence":{"holder_pid":99,"new_key":"some text","nested":{"a":1}},"advice":"stop the other one","brand_new_field":3}"#;
        let mut out = Vec::new();
        plain().render_line(line, &mut out);
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("VERDICT bind_conflict (high)"), "{s}");
        assert!(s.contains("nginx[12]"), "{s}");
        assert!(s.contains("10.0.0.1:80 -> 10.0.0.2:0"), "{s}");
        assert!(s.contains("holder_pid=99"), "{s}");
        assert!(s.contains("new_key=\"some text\""), "{s}");
        assert!(s.contains("nested={\"a\":1}"), "{s}");
        assert!(s.contains("brand_new_field=3"), "{s}");
        assert!(s.contains("stop the other one"), "{s}");
        assert!(s.starts_with("03:04:05.678"), "{s}");
    }

    #[test]
    fn unknown_line_types_are_key_value_and_not_json_passes_through() {
        let mut out = Vec::new();
        let mut r = plain();
        r.render_line(
            br#"{"type":"novel","ts":"2026-01-02T03:04:05Z","x":1}"#,
            &mut out,
        );
        r.render_line(b"not json", &mut out);
        let s = String::from_utf8(out).unwrap();
        assert!(s.contains("novel  x=1"), "{s}");
        assert!(s.ends_with("not json\n"), "{s}");
    }

    #[test]
    fn blocks_wrap_to_the_width() {
        let r = plain();
        let text = "word ".repeat(100);
        for l in r.block("advice", &text).lines() {
            assert!(l.chars().count() <= 80, "{l:?}");
        }
    }

    #[test]
    fn colour_only_when_asked() {
        let line = br#"{"type":"verdict","ts":"2026-01-02T03:04:05Z","verdict":"x","confidence":"high","evidence":{},"advice":"a"}"#;
        let mut out = Vec::new();
        plain().render_line(line, &mut out);
        assert!(!out.contains(&0x1b));
        let mut out = Vec::new();
        Renderer::new(Options {
            width: 80,
            color: true,
        })
        .render_line(line, &mut out);
        assert!(out.contains(&0x1b));
    }

    #[test]
    fn writer_renders_split_writes() {
        let mut w = TextWriter::new(
            Vec::new(),
            Options {
                width: 80,
                color: false,
            },
        );
        let line =
            br#"{"type":"socket_state","ts":"2026-01-02T03:04:05Z","old_state":"a","new_state":"b"}
"#;
        w.write_all(&line[..10]).unwrap();
        w.write_all(&line[10..]).unwrap();
        w.flush().unwrap();
        let s = String::from_utf8(w.inner).unwrap();
        assert!(s.contains("a -> b"), "{s}");
    }
}
