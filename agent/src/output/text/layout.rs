//! Fitting text to the width: event lines continued on indented lines, labelled
//! blocks wrapped under their label.

use std::fmt::Write as _;

use super::{Renderer, style::paint};

impl Renderer {
    /// One event per line when it fits; else continued on indented lines (never
    /// cut: the numbers are the point). Lines break between the fields (two spaces
    /// apart) or after a detail's comma, so a flow stays whole.
    pub(super) fn fit(&self, line: &str) -> String {
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

    /// `   label:   text wrapped to the width, continued under the text`.
    pub(super) fn block(&self, label: &str, text: &str) -> String {
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
}

#[cfg(test)]
mod tests {
    use super::super::tests::plain;

    #[test]
    fn blocks_wrap_to_the_width() {
        let r = plain();
        let text = "word ".repeat(100);
        for l in r.block("advice", &text).lines() {
            assert!(l.chars().count() <= 80, "{l:?}");
        }
    }
}
