//! The parts of a JSON line every view shows alike: time, process, flow, values as
//! text, and the fields not otherwise shown as `key=value`.

use serde_json::{Map, Value};

/// Fields shown in the head of every socket line, so not again as `key=value`.
pub(super) const COMMON: &[&str] = &[
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

pub(super) fn str_of<'a>(m: &'a Map<String, Value>, key: &str) -> Option<&'a str> {
    m.get(key).and_then(Value::as_str)
}

/// `HH:MM:SS.mmm` (UTC) from the RFC 3339 `ts`.
pub(super) fn time_of(m: &Map<String, Value>) -> String {
    let ts = str_of(m, "ts").unwrap_or("");
    match ts.split_once('T') {
        Some((_, t)) => t.trim_end_matches('Z').chars().take(12).collect(),
        None => format!("{ts:12}"),
    }
}

pub(super) fn process(m: &Map<String, Value>) -> String {
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

pub(super) fn flow(m: &Map<String, Value>) -> String {
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
pub(super) fn scalar(v: &Value) -> String {
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
pub(super) fn pairs(m: &Map<String, Value>, skip: &[&str]) -> Vec<String> {
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
