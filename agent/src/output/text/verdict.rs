//! Verdicts and paths as blocks: the verdict line, then its evidence and advice
//! wrapped to the width (the same advice said once, pointed at after).

use serde_json::{Map, Value};

use super::{
    Renderer,
    fields::{COMMON, flow, pairs, process, scalar, str_of, time_of},
    style::{is_good, paint},
};

/// Advice texts remembered as shown in full (bounded memory).
const MAX_ADVICE: usize = 1_000;

impl Renderer {
    pub(super) fn verdict(&mut self, m: &Map<String, Value>) -> String {
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

    pub(super) fn path(&self, m: &Map<String, Value>) -> String {
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
}

#[cfg(test)]
mod tests {
    use super::super::tests::plain;

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
}
