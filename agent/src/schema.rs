//! The line schemas (JSON Schema, draft 2020-12), generated from the types that
//! serialize the lines (`output::json`, the verdict evidence), so the published
//! schemas cannot drift from what the agent prints. `cargo xtask schema` writes them
//! to schema/*.schema.json (checked in; a test fails when they differ), and
//! `sendsight schema [TYPE]` prints them.
//!
//! OpenTelemetry attribute names are the fields' `x-otel` extension
//! (`#[schemars(extend("x-otel" = ...))]` on the field), listed with notes in
//! schema/README.md (a test keeps the two the same).
//!
//! Every value a field can take comes from one source: a Rust enum (`Kind`,
//! `Confidence`...) or the table the printing function reads (`net::TCP_STATES`,
//! `ledger::Source::all()`...). The functions here are the `schema_with` of the
//! fields that print such a table's entries.

use std::collections::BTreeMap;

use schemars::{JsonSchema, Schema, SchemaGenerator, generate::SchemaSettings, json_schema};
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::{
    engine::verdict::{Kind, evidence},
    ledger::Source,
    net,
    output::{
        SCHEMA,
        json::{
            CongBody, IcmpBody, Line, LossBody, PathBody, RetransmitBody, SendErrorBody,
            SocketErrorBody, StartBody, StateBody, SummaryBody, UdpQueueBody, UdpSendBody,
            VerdictBody,
        },
    },
};

/// Every line type the agent prints: the value of `type`. Each variant's doc comment
/// is its schema's description.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum LineType {
    /// First line of `sendsight run`: the probes are attached.
    Start,
    /// The kernel retransmitted an skb of a TCP socket.
    Retransmit,
    /// A send-family call failed on a socket.
    SendError,
    /// connect() or bind() failed on an IP socket (EADDRNOTAVAIL, EADDRINUSE,
    /// ECONNREFUSED, ETIMEDOUT...). For connect, peer is the address asked for; for
    /// bind, local is.
    ConnectError,
    /// A UDP datagram larger than the reporting threshold (1400 payload bytes) was
    /// sent; at most one line per socket per second.
    UdpSend,
    /// Datagrams a socket dropped because its receive queue was full (or the
    /// protocol's memory limit was hit), counted per socket in the kernel: emitted at
    /// the first drop, then at most once per socket per 100 ms (kernel), and by the
    /// agent from the kernel's map every second while counts change and at the end of
    /// the run. Counts are cumulative since the agent started, so the latest line is
    /// exact.
    UdpQueueDrop,
    /// An ICMP fragmentation-needed / ICMPv6 packet-too-big message was received or
    /// sent by this host.
    IcmpTooBig,
    /// A TCP socket changed state.
    SocketState,
    /// The kernel reported an error on a socket (reset, timeout...).
    SocketError,
    /// A TCP socket's congestion-control state changed.
    CongState,
    /// The engine's judgement of what is happening to a socket, with its evidence and
    /// advice.
    Verdict,
    /// Several sockets to one destination prefix reached the same verdict: said once
    /// for the path.
    Path,
    /// Events were lost since the last report (polled every second).
    Loss,
    /// Last line, on exit (and at the end of a replay).
    Summary,
}

impl LineType {
    pub const ALL: [LineType; 14] = [
        LineType::Start,
        LineType::Retransmit,
        LineType::SendError,
        LineType::ConnectError,
        LineType::UdpSend,
        LineType::UdpQueueDrop,
        LineType::IcmpTooBig,
        LineType::SocketState,
        LineType::SocketError,
        LineType::CongState,
        LineType::Verdict,
        LineType::Path,
        LineType::Loss,
        LineType::Summary,
    ];

    pub const fn name(self) -> &'static str {
        match self {
            LineType::Start => "start",
            LineType::Retransmit => "retransmit",
            LineType::SendError => "send_error",
            LineType::ConnectError => "connect_error",
            LineType::UdpSend => "udp_send",
            LineType::UdpQueueDrop => "udp_queue_drop",
            LineType::IcmpTooBig => "icmp_too_big",
            LineType::SocketState => "socket_state",
            LineType::SocketError => "socket_error",
            LineType::CongState => "cong_state",
            LineType::Verdict => "verdict",
            LineType::Path => "path",
            LineType::Loss => "loss",
            LineType::Summary => "summary",
        }
    }

    pub fn from_name(name: &str) -> Option<LineType> {
        LineType::ALL.into_iter().find(|t| t.name() == name)
    }

    /// A line made from a kernel event (counted in the summary's `events`).
    pub const fn is_event(self) -> bool {
        match self {
            LineType::Retransmit
            | LineType::SendError
            | LineType::ConnectError
            | LineType::UdpSend
            | LineType::UdpQueueDrop
            | LineType::IcmpTooBig
            | LineType::SocketState
            | LineType::SocketError
            | LineType::CongState => true,
            LineType::Start
            | LineType::Verdict
            | LineType::Path
            | LineType::Loss
            | LineType::Summary => false,
        }
    }

    /// The variant's doc comment.
    pub fn description(self) -> String {
        let schema = SchemaGenerator::default().into_root_schema_for::<LineType>();
        schema
            .get("oneOf")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .find(|v| v.get("const").and_then(Value::as_str) == Some(self.name()))
            .and_then(|v| v.get("description"))
            .and_then(Value::as_str)
            .unwrap_or_default()
            .replace('\n', " ")
    }
}

/// The schema of one line type, as written to schema/<type>.schema.json.
pub fn for_type(t: LineType) -> Value {
    let settings = SchemaSettings::draft2020_12().for_serialize();
    let g = settings.into_generator();
    let root = match t {
        LineType::Start => g.into_root_schema_for::<Line<'static, StartBody<'static>>>(),
        LineType::Retransmit => g.into_root_schema_for::<Line<'static, RetransmitBody<'static>>>(),
        LineType::SendError | LineType::ConnectError => {
            g.into_root_schema_for::<Line<'static, SendErrorBody<'static>>>()
        }
        LineType::UdpSend => g.into_root_schema_for::<Line<'static, UdpSendBody<'static>>>(),
        LineType::UdpQueueDrop => g.into_root_schema_for::<Line<'static, UdpQueueBody<'static>>>(),
        LineType::IcmpTooBig => g.into_root_schema_for::<Line<'static, IcmpBody<'static>>>(),
        LineType::SocketState => g.into_root_schema_for::<Line<'static, StateBody<'static>>>(),
        LineType::SocketError => {
            g.into_root_schema_for::<Line<'static, SocketErrorBody<'static>>>()
        }
        LineType::CongState => g.into_root_schema_for::<Line<'static, CongBody<'static>>>(),
        LineType::Verdict => g.into_root_schema_for::<Line<'static, VerdictBody<'static>>>(),
        LineType::Path => g.into_root_schema_for::<Line<'static, PathBody<'static>>>(),
        LineType::Loss => g.into_root_schema_for::<Line<'static, LossBody<'static>>>(),
        LineType::Summary => g.into_root_schema_for::<Line<'static, SummaryBody>>(),
    };
    let mut v = root.to_value();
    normalize(&mut v);
    let description = t.description();
    let Value::Object(o) = &mut v else {
        unreachable!("a struct's schema is an object")
    };
    o.insert(
        "$id".into(),
        format!("urn:sendsight:schema:1:{}", t.name()).into(),
    );
    o.insert(
        "title".into(),
        format!("sendsight {} line", t.name()).into(),
    );
    o.insert("description".into(), description.clone().into());
    let props = o
        .get_mut("properties")
        .and_then(Value::as_object_mut)
        .expect("a line has properties");
    props.insert(
        "type".into(),
        json!({"const": t.name(), "description": description, "x-otel": "event.name"}),
    );
    // One body, two line types: the call a failure is reported under decides which.
    let calls: Option<&[&str]> = match t {
        LineType::SendError => Some(&net::SEND_SYSCALLS),
        LineType::ConnectError => Some(&net::CONNECT_SYSCALLS),
        _ => None,
    };
    if let Some(calls) = calls {
        let mut values: Vec<Value> = calls.iter().map(|c| json!(c)).collect();
        values.push(Value::Null);
        props.insert(
            "syscall".into(),
            json!({"enum": values, "description": SYSCALL_DESCRIPTION}),
        );
    }
    let mut renames = BTreeMap::new();
    if t == LineType::Verdict {
        // `evidence` is fixed per verdict: each kind's evidence type, checked when
        // `verdict` names that kind.
        let mut g = SchemaSettings::draft2020_12()
            .for_serialize()
            .into_generator();
        let mut rules = Vec::new();
        for kind in Kind::ALL {
            let evidence = evidence_schema(kind, &mut g);
            if let Some(r) = evidence.get("$ref").and_then(Value::as_str) {
                // Named after its verdict, as `evidence_<verdict>`.
                let name = r.trim_start_matches("#/$defs/").to_string();
                renames.insert(name, format!("evidence_{}", kind.name()));
            }
            rules.push(json!({
                "if": {"properties": {"verdict": {"const": kind.name()}}, "required": ["verdict"]},
                "then": {"properties": {"evidence": evidence}},
            }));
        }
        let defs = g.take_definitions(true);
        let o_defs = o
            .entry("$defs")
            .or_insert_with(|| Value::Object(Map::new()))
            .as_object_mut()
            .expect("$defs is an object");
        for (k, v) in defs {
            o_defs.insert(k, v);
        }
        o.insert("allOf".into(), Value::Array(rules));
        normalize(&mut v);
    }
    rename_defs(&mut v, &renames);
    sorted(v)
}

/// Definitions named in snake_case like the fields (`DisconnectCause` ->
/// `disconnect_cause`), or as `renames` says; every `$ref` follows.
fn rename_defs(root: &mut Value, renames: &BTreeMap<String, String>) {
    fn snake(name: &str) -> String {
        let mut s = String::new();
        for (i, c) in name.chars().enumerate() {
            if c.is_ascii_uppercase() {
                if i > 0 {
                    s.push('_');
                }
                s.push(c.to_ascii_lowercase());
            } else {
                s.push(c);
            }
        }
        s
    }
    fn refs(v: &mut Value, to: &BTreeMap<String, String>) {
        match v {
            Value::Object(o) => {
                if let Some(Value::String(r)) = o.get_mut("$ref")
                    && let Some(new) = r.strip_prefix("#/$defs/").and_then(|n| to.get(n))
                {
                    *r = format!("#/$defs/{new}");
                }
                o.values_mut().for_each(|v| refs(v, to));
            }
            Value::Array(a) => a.iter_mut().for_each(|v| refs(v, to)),
            _ => {}
        }
    }
    let Some(defs) = root.get_mut("$defs").and_then(Value::as_object_mut) else {
        return;
    };
    let to: BTreeMap<String, String> = defs
        .keys()
        .map(|k| {
            (
                k.clone(),
                renames.get(k).cloned().unwrap_or_else(|| snake(k)),
            )
        })
        .collect();
    let old = std::mem::take(defs);
    for (k, v) in old {
        defs.insert(to[&k].clone(), v);
    }
    refs(root, &to);
}

/// Every line type's schema, by name.
pub fn all() -> BTreeMap<&'static str, Value> {
    LineType::ALL
        .into_iter()
        .map(|t| (t.name(), for_type(t)))
        .collect()
}

/// The text of schema/<type>.schema.json: pretty JSON, keys sorted, a final newline.
pub fn file_text(t: LineType) -> String {
    let mut s = serde_json::to_string_pretty(&for_type(t)).expect("a Value serializes");
    s.push('\n');
    s
}

pub fn file_name(t: LineType) -> String {
    format!("{}.schema.json", t.name())
}

/// Marks the generated table of line types in schema/README.md.
pub const README_BEGIN: &str = "<!-- line types: written by `cargo xtask schema` -->";
pub const README_END: &str = "<!-- end of line types -->";

/// The table of schema/README.md: every line type's file and description.
pub fn readme_table() -> String {
    let mut s = format!("{README_BEGIN}\n| file | line |\n|---|---|\n");
    for t in LineType::ALL {
        s.push_str(&format!("| `{}` | {} |\n", file_name(t), t.description()));
    }
    s.push_str(README_END);
    s
}

/// `readme` with its generated table replaced by the current one (None: no markers).
pub fn with_readme_table(readme: &str) -> Option<String> {
    let begin = readme.find(README_BEGIN)?;
    let end = readme[begin..].find(README_END)? + begin + README_END.len();
    Some(format!(
        "{}{}{}",
        &readme[..begin],
        readme_table(),
        &readme[end..]
    ))
}

/// The evidence type of each verdict kind.
fn evidence_schema(kind: Kind, g: &mut SchemaGenerator) -> Schema {
    use evidence::*;
    match kind {
        Kind::EphemeralPortsExhausted => g.subschema_for::<PortsExhausted>(),
        Kind::BindConflict => g.subschema_for::<BindConflict>(),
        Kind::UdpPathMtu => g.subschema_for::<UdpPathMtu>(),
        Kind::UdpQueueOverflow => g.subschema_for::<UdpQueueOverflow>(),
        Kind::PmtudBlackhole => g.subschema_for::<Blackhole>(),
        Kind::PmtudOk => g.subschema_for::<PmtudOk>(),
        Kind::BlackholeRecovered => g.subschema_for::<Recovered>(),
        Kind::PacketLoss => g.subschema_for::<Loss>(),
        Kind::PathDown => g.subschema_for::<PathDown>(),
        Kind::Stall => g.subschema_for::<Stall>(),
        Kind::Disconnect => g.subschema_for::<Disconnect>(),
        Kind::SpoofedPtb => g.subschema_for::<Spoofed>(),
        Kind::SendError => g.subschema_for::<SendErrorFacts>(),
    }
}

const SYSCALL_DESCRIPTION: &str = "The failing call (null: another call, or not known).";

/// Sorted keys at every level, whatever serde_json's map keeps (its
/// `preserve_order` feature may be on in a build that unifies features).
fn sorted(v: Value) -> Value {
    match v {
        Value::Object(o) => {
            let b: BTreeMap<String, Value> = o.into_iter().map(|(k, v)| (k, sorted(v))).collect();
            Value::Object(b.into_iter().collect())
        }
        Value::Array(a) => Value::Array(a.into_iter().map(sorted).collect()),
        v => v,
    }
}

/// The generator's output, made as strict as the lines are:
/// - integer `format`s (`uint32`...) become the type's `minimum`/`maximum`
///   (a `minimum` the field asks for itself is kept);
/// - `format: ip` (an `IpAddr`) becomes a reference to `$defs/ip`, which checks the
///   text as `ipv4` or `ipv6`;
/// - every object with fixed `properties` gets `additionalProperties: false` (the
///   structs are fixed: a renamed, added or dropped field fails validation).
fn normalize(root: &mut Value) {
    let mut uses_ip = false;
    walk(root, &mut uses_ip);
    if uses_ip && let Value::Object(o) = root {
        let defs = o
            .entry("$defs")
            .or_insert_with(|| Value::Object(Map::new()));
        defs.as_object_mut()
            .expect("$defs is an object")
            .insert("ip".into(), ip_def());
    }
}

fn ip_def() -> Value {
    json!({
        "type": "string",
        "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}],
        "description": "An IPv4 or IPv6 address in its usual text form.",
    })
}

fn walk(v: &mut Value, uses_ip: &mut bool) {
    match v {
        Value::Array(a) => a.iter_mut().for_each(|v| walk(v, uses_ip)),
        Value::Object(o) => {
            for (_, child) in o.iter_mut() {
                walk(child, uses_ip);
            }
            fix(o, uses_ip);
        }
        _ => {}
    }
}

fn fix(o: &mut Map<String, Value>, uses_ip: &mut bool) {
    let format = o.get("format").and_then(Value::as_str).map(str::to_owned);
    let bounds: Option<(Value, Value)> = match format.as_deref() {
        Some("uint8") => Some((json!(0), json!(u8::MAX))),
        Some("uint16") => Some((json!(0), json!(u16::MAX))),
        Some("uint32") => Some((json!(0), json!(u32::MAX))),
        Some("uint64") | Some("uint") => Some((json!(0), json!(u64::MAX))),
        Some("int8") => Some((json!(i8::MIN), json!(i8::MAX))),
        Some("int16") => Some((json!(i16::MIN), json!(i16::MAX))),
        Some("int32") => Some((json!(i32::MIN), json!(i32::MAX))),
        Some("int64") | Some("int") => Some((json!(i64::MIN), json!(i64::MAX))),
        _ => None,
    };
    if let Some((min, max)) = bounds {
        o.remove("format");
        let keep = o
            .get("minimum")
            .and_then(Value::as_f64)
            .zip(min.as_f64())
            .is_some_and(|(own, ty)| own > ty);
        if !keep {
            o.insert("minimum".into(), min);
        }
        let keep = o
            .get("maximum")
            .and_then(Value::as_f64)
            .zip(max.as_f64())
            .is_some_and(|(own, ty)| own < ty);
        if !keep {
            o.insert("maximum".into(), max);
        }
    }
    if matches!(
        format.as_deref(),
        Some("int128" | "uint128" | "double" | "float")
    ) {
        o.remove("format");
    }
    if format.as_deref() == Some("ip") {
        *uses_ip = true;
        o.remove("format");
        let nullable = match o.remove("type") {
            Some(Value::Array(types)) => types.iter().any(|t| t == "null"),
            _ => false,
        };
        let ip = json!({"$ref": "#/$defs/ip"});
        if nullable {
            o.insert("anyOf".into(), json!([{"type": "null"}, ip]));
        } else {
            o.insert("$ref".into(), ip["$ref"].clone());
        }
    }
    // Doc comments keep their line breaks; a description is one paragraph.
    if let Some(Value::String(d)) = o.get_mut("description") {
        *d = d.replace('\n', " ");
    }
    let is_object = o.get("type").and_then(Value::as_str) == Some("object");
    if is_object && o.contains_key("properties") && !o.contains_key("additionalProperties") {
        o.insert("additionalProperties".into(), Value::Bool(false));
    }
}

// The `schema_with` of fields that print a table's entries.

fn names<'a>(values: impl IntoIterator<Item = &'a str>) -> Vec<Value> {
    values.into_iter().map(|v| json!(v)).collect()
}

/// A named definition in `$defs`, referenced.
fn def(g: &mut SchemaGenerator, name: &str, schema: Value) -> Schema {
    g.definitions_mut().insert(name.into(), schema);
    json_schema!({"$ref": format!("#/$defs/{name}")})
}

fn nullable(s: Schema) -> Schema {
    json_schema!({"anyOf": [{"type": "null"}, s]})
}

pub(crate) fn schema_version(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"const": SCHEMA, "description": "Version of the line format."})
}

pub(crate) fn line_type(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"enum": names(LineType::ALL.map(LineType::name))})
}

pub(crate) fn family(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"enum": names(net::FAMILIES)})
}

pub(crate) fn protocol(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"enum": names(net::PROTOCOLS)})
}

pub(crate) fn service(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "enum": names(net::SERVICES),
        "description": "A well-known service recognised from the flow (UDP only): \"ike\" for \
                        500/4500 (IKE, IPsec NAT-T), \"dns\" for 53, \"syslog\" for 514, \
                        \"quic\" for 443. Absent otherwise.",
    })
}

pub(crate) fn service_or_null(_: &mut SchemaGenerator) -> Schema {
    let mut values = names(net::SERVICES);
    values.push(Value::Null);
    json_schema!({"enum": values})
}

pub(crate) fn tcp_state(g: &mut SchemaGenerator) -> Schema {
    def(
        g,
        "tcp_state",
        json!({
            "enum": names(net::TCP_STATES),
            "description": "Kernel TCP state (include/net/tcp_states.h) without the TCP_ prefix.",
        }),
    )
}

pub(crate) fn tcp_state_or_null(g: &mut SchemaGenerator) -> Schema {
    nullable(tcp_state(g))
}

pub(crate) fn ca_state(g: &mut SchemaGenerator) -> Schema {
    def(
        g,
        "ca_state",
        json!({"enum": names(net::CA_STATES), "description": "icsk_ca_state (enum tcp_ca_state)."}),
    )
}

pub(crate) fn retransmit_kind(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"enum": names(net::RETRANSMIT_KINDS)})
}

pub(crate) fn syscall_or_null(_: &mut SchemaGenerator) -> Schema {
    let mut values = names(net::SEND_SYSCALLS.into_iter().chain(net::CONNECT_SYSCALLS));
    values.push(Value::Null);
    json_schema!({"enum": values, "description": SYSCALL_DESCRIPTION})
}

pub(crate) fn send_sources(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "array",
        "minItems": 1,
        "maxItems": crate::output::json::SEND_SOURCES.len(),
        "uniqueItems": true,
        "items": {"enum": names(crate::output::json::SEND_SOURCES)},
        "description": "Which hooks saw it: the socket layer, the syscall exit.",
    })
}

pub(crate) fn icmp_source(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "enum": names(crate::output::json::ICMP_SOURCES),
        "description": "received: this host got the message; sent: this host (a router) sent it.",
    })
}

/// `evidence::ErrnoName`'s schema (the `errno_name` definition).
pub(crate) fn errno_name_inline() -> Schema {
    json_schema!({
        "type": "string",
        "pattern": "^E-?[A-Z0-9]+$",
        "description": "The errno's name (ECONNRESET); E and the number for one this platform \
                        does not name.",
    })
}

/// An errno name printed from a string: the same definition as `ErrnoName`'s.
pub(crate) fn udp_queue_origin(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "enum": names(crate::output::json::UDP_QUEUE_ORIGINS),
        "description": "kernel: emitted by a program; agent: the kernel's map as the agent read it.",
    })
}

pub(crate) fn errno_name(g: &mut SchemaGenerator) -> Schema {
    g.subschema_for::<evidence::ErrnoName>()
}

pub(crate) fn errno_text(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "string", "description": "The errno's text (strerror)."})
}

pub(crate) fn loss_source(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "enum": names(Source::all().map(Source::name)),
        "description": "Where the loss happened: a program's ring reservation (named by \
                        event type), `decode`, a sink.",
    })
}

fn counts_by(names_: Vec<Value>, description: &str) -> Schema {
    json_schema!({
        "type": "object",
        "additionalProperties": {"type": "integer", "minimum": 0, "maximum": u64::MAX},
        "propertyNames": {"enum": names_},
        "description": description,
    })
}

pub(crate) fn events_by_type(_: &mut SchemaGenerator) -> Schema {
    counts_by(
        names(
            LineType::ALL
                .into_iter()
                .filter(|t| t.is_event())
                .map(LineType::name),
        ),
        "Events delivered to the agent, by type.",
    )
}

pub(crate) fn lost_by_source(_: &mut SchemaGenerator) -> Schema {
    let mut s = counts_by(
        names(Source::all().map(Source::name)),
        "Events lost, by source (kernel reservations per program, decoder, sockets); the \
         sources a reader looks for first are listed even at zero.",
    );
    s.insert(
        "required".into(),
        names(
            Source::all()
                .filter(|s| s.always_listed())
                .map(Source::name),
        )
        .into(),
    );
    s
}

pub(crate) fn verdicts_by_kind(_: &mut SchemaGenerator) -> Schema {
    counts_by(
        names(Kind::ALL.map(Kind::name)),
        "Verdicts emitted, by name.",
    )
}

pub(crate) fn path_verdict(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"enum": names(crate::engine::path::PATH_VERDICTS.map(Kind::name))})
}

pub(crate) fn evidence_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "description": "The facts behind the verdict; fields depend on `verdict` (checked \
                        by the `allOf` rules).",
    })
}

#[cfg(test)]
mod tests;
