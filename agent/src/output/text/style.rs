//! Colour: the styles of each part of a line, all plain when colour is off.

use anstyle::{AnsiColor, Style};

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
pub(super) struct Palette {
    pub(super) dim: Style,
    pub(super) bold: Style,
    pub(super) warn: Style,
    pub(super) bad: Style,
    pub(super) good: Style,
    pub(super) info: Style,
    pub(super) kind: Style,
}

impl Palette {
    pub(super) fn new(color: bool) -> Self {
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

pub(super) fn paint(s: Style, text: &str) -> String {
    if s == Style::new() {
        text.to_string()
    } else {
        format!("{s}{text}{s:#}")
    }
}

/// A verdict that says things are fine (shown in green).
pub(super) fn is_good(verdict: &str) -> bool {
    verdict.ends_with("_ok") || verdict.ends_with("_recovered")
}
