//! The four places the agent says what it lost (`loss` lines, the summary's `lost`,
//! the stderr summary, the `/metrics` endpoint), each read back as a map from
//! source to total, so a test can hold them against each other.

use std::{
    collections::BTreeMap,
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    time::Duration,
};

use serde_json::Value;

pub type Losses = BTreeMap<String, u64>;

/// Sum of `lost` per `source` over the `loss` lines.
pub fn from_lines(lines: &[Value]) -> Losses {
    let mut out = Losses::new();
    for l in lines.iter().filter(|l| l["type"] == "loss") {
        let source = l["source"].as_str().expect("loss source").to_string();
        *out.entry(source).or_default() += l["lost"].as_u64().expect("loss lost");
    }
    out
}

/// The last `total` per `source` over the `loss` lines (what they said last).
pub fn last_totals(lines: &[Value]) -> Losses {
    let mut out = Losses::new();
    for l in lines.iter().filter(|l| l["type"] == "loss") {
        let source = l["source"].as_str().expect("loss source").to_string();
        out.insert(source, l["total"].as_u64().expect("loss total"));
    }
    out
}

/// The summary's `lost`, zeros left out.
pub fn from_summary(summary: &Value) -> Losses {
    summary["lost"]
        .as_object()
        .expect("summary lost")
        .iter()
        .map(|(k, v)| (k.clone(), v.as_u64().expect("count")))
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// The stderr summary: `sendsight: summary: N events, M verdicts, lost T (a 1, b 2)`.
pub fn from_stderr(stderr: &str) -> Losses {
    let line = stderr
        .lines()
        .rfind(|l| l.starts_with("sendsight: summary:"))
        .unwrap_or_else(|| panic!("no stderr summary in:\n{stderr}"));
    let Some(open) = line.find('(') else {
        assert!(line.ends_with("lost 0"), "{line}");
        return Losses::new();
    };
    line[open + 1..line.rfind(')').expect("closing parenthesis")]
        .split(", ")
        .map(|part| {
            let (name, n) = part.rsplit_once(' ').expect("source count");
            (name.to_string(), n.parse().expect("count"))
        })
        .collect()
}

/// `sendsight_lost_total{source="..."}` from an OpenMetrics text.
pub fn from_metrics(text: &str) -> Losses {
    text.lines()
        .filter_map(|l| l.strip_prefix("sendsight_lost_total{source=\""))
        .map(|rest| {
            let (name, value) = rest.split_once("\"} ").expect("metric line");
            (
                name.to_string(),
                value.trim().parse().expect("metric value"),
            )
        })
        .filter(|(_, v)| *v > 0)
        .collect()
}

/// `GET path` over HTTP/1.1; the body.
pub fn http_get(addr: SocketAddr, path: &str) -> String {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5)).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    s.read_to_string(&mut response).expect("read response");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP response: {response}"));
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_string()
}

/// A loopback port nobody listens on now.
pub fn free_port() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}
