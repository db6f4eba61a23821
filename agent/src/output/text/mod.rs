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

mod event;
mod fields;
mod layout;
mod style;
mod summary;
mod verdict;

use std::{
    collections::{HashMap, HashSet},
    io::{self, IsTerminal as _, Write},
};

use serde_json::{Map, Value};

pub use self::style::color_wanted;
use self::{
    fields::str_of,
    style::Palette,
    summary::{PathStats, SockStats},
};

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

fn width_from_env() -> Option<usize> {
    std::env::var("COLUMNS")
        .ok()?
        .trim()
        .parse()
        .ok()
        .filter(|w| *w > 0)
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

    pub(super) fn plain() -> Renderer {
        Renderer::new(Options {
            width: 80,
            color: false,
        })
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
