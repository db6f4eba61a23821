use std::{collections::BTreeSet, path::PathBuf};

use agent_common::event::Kind as RecordKind;

use super::*;
use crate::{decode, filter};

fn schema_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../schema")
}

#[test]
fn checked_in_schemas_are_what_the_types_generate() {
    let mut stale = Vec::new();
    for t in LineType::ALL {
        let path = schema_dir().join(file_name(t));
        let on_disk = std::fs::read_to_string(&path).unwrap_or_default();
        if on_disk != file_text(t) {
            stale.push(path.display().to_string());
        }
    }
    assert!(
        stale.is_empty(),
        "schema files differ from what the line types generate: {}\nrun `cargo xtask schema` \
         and commit the result",
        stale.join(", ")
    );
    // And no schema for a line type the agent no longer has.
    let names: BTreeSet<String> = LineType::ALL.iter().map(|t| file_name(*t)).collect();
    for entry in std::fs::read_dir(schema_dir()).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        if name.ends_with(".schema.json") {
            assert!(
                names.contains(&name),
                "schema/{name} is no line type's: remove it (`cargo xtask schema` writes the rest)"
            );
        }
    }
}

#[test]
fn schema_readme_lists_every_line_type() {
    let path = schema_dir().join("README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    assert_eq!(
        with_readme_table(&readme).as_deref(),
        Some(readme.as_str()),
        "schema/README.md's table of line types is stale: run `cargo xtask schema`"
    );
    for t in LineType::ALL {
        assert!(readme.contains(&format!("`{}`", file_name(t))));
    }
    // The project README's table of line types, too.
    let main = std::fs::read_to_string(schema_dir().join("../README.md")).unwrap();
    for t in LineType::ALL {
        assert!(
            main.contains(&format!("\n| `{}` |", t.name())),
            "README.md's table of line types lacks {}",
            t.name()
        );
    }
}

/// Every `x-otel` name in `v` (a string, or an object of them for an endpoint).
fn otel_names(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::Object(o) => {
            match o.get("x-otel") {
                Some(Value::String(s)) => {
                    out.insert(s.clone());
                }
                Some(Value::Object(m)) => {
                    out.extend(m.values().filter_map(Value::as_str).map(str::to_owned))
                }
                _ => {}
            }
            o.values().for_each(|v| otel_names(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| otel_names(v, out)),
        _ => {}
    }
}

#[test]
fn otel_names_in_the_schemas_are_the_readme_table() {
    let mut in_schemas = BTreeSet::new();
    for t in LineType::ALL {
        otel_names(&for_type(t), &mut in_schemas);
    }
    let readme = std::fs::read_to_string(schema_dir().join("README.md")).unwrap();
    let table = &readme[readme
        .find("## OpenTelemetry semantic conventions")
        .expect("an OpenTelemetry section")..];
    // The OpenTelemetry column's names (`a.b`), row by row.
    let mut in_readme = BTreeSet::new();
    for row in table.lines().filter(|l| l.starts_with('|')) {
        let Some(col) = row.split('|').nth(2) else {
            continue;
        };
        for (i, part) in col.split('`').enumerate() {
            if i % 2 == 1 {
                in_readme.insert(part.to_owned());
            }
        }
    }
    for name in &in_schemas {
        assert!(
            in_readme.contains(name),
            "x-otel {name:?} is not in schema/README.md's OpenTelemetry table"
        );
    }
    for name in in_readme.iter().filter(|n| n.contains('.')) {
        assert!(
            in_schemas.contains(name),
            "schema/README.md maps a field to {name:?}, which no type carries as x-otel"
        );
    }
}

/// Every string a schema allows for a property (through `$ref`, `anyOf`, `oneOf`,
/// `items`, `enum`, `const`), `None` when it allows any string.
fn allowed(root: &Value, s: &Value, out: &mut BTreeSet<String>) -> bool {
    let mut closed = false;
    if let Some(r) = s.get("$ref").and_then(Value::as_str) {
        let name = r.trim_start_matches("#/$defs/");
        closed |= allowed(root, &root["$defs"][name], out);
    }
    for key in ["anyOf", "oneOf"] {
        if let Some(a) = s.get(key).and_then(Value::as_array) {
            let mut all = true;
            for v in a {
                all &= allowed(root, v, out) || v.get("type") == Some(&json!("null"));
            }
            closed |= all;
        }
    }
    if let Some(e) = s.get("enum").and_then(Value::as_array) {
        out.extend(e.iter().filter_map(Value::as_str).map(str::to_owned));
        closed = true;
    }
    if let Some(c) = s.get("const").and_then(Value::as_str) {
        out.insert(c.to_owned());
        closed = true;
    }
    if let Some(items) = s.get("items") {
        closed |= allowed(root, items, out);
    }
    if let Some(p) = s.get("propertyNames") {
        closed |= allowed(root, p, out);
    }
    closed
}

/// The strings a line type's property can hold, by its schema.
fn values(t: LineType, property: &str) -> BTreeSet<String> {
    let root = for_type(t);
    let mut out = BTreeSet::new();
    let s = &root["properties"][property];
    assert!(
        allowed(&root, s, &mut out),
        "{}.{property} is not a closed set of values: {s}",
        t.name()
    );
    out
}

/// The schema the evidence of `kind` is checked against.
fn evidence(root: &Value, kind: Kind) -> Value {
    let rule = root["allOf"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["if"]["properties"]["verdict"]["const"] == json!(kind.name()))
        .unwrap_or_else(|| panic!("no evidence rule for {}", kind.name()));
    let mut ev = rule["then"]["properties"]["evidence"].clone();
    if let Some(r) = ev.get("$ref").and_then(Value::as_str) {
        ev = root["$defs"][r.trim_start_matches("#/$defs/")].clone();
    }
    ev
}

/// The strings the evidence of `kind` can hold in `field`.
fn evidence_values(kind: Kind, field: &str) -> BTreeSet<String> {
    let root = for_type(LineType::Verdict);
    let ev = evidence(&root, kind);
    let mut out = BTreeSet::new();
    assert!(
        allowed(&root, &ev["properties"][field], &mut out),
        "{} evidence {field} is not closed",
        kind.name()
    );
    out
}

fn set<'a>(v: impl IntoIterator<Item = &'a str>) -> BTreeSet<String> {
    v.into_iter().map(str::to_owned).collect()
}

/// The image of a naming function over its whole input domain.
fn image<T>(
    domain: impl IntoIterator<Item = T>,
    f: impl Fn(T) -> &'static str,
) -> BTreeSet<String> {
    domain.into_iter().map(|x| f(x).to_owned()).collect()
}

#[test]
fn every_line_type_has_a_schema_and_every_type_the_agent_prints_is_one() {
    let types = set(LineType::ALL.map(LineType::name));
    // Each line type's schema pins `type` to its name.
    for t in LineType::ALL {
        assert_eq!(values(t, "type"), set([t.name()]));
        assert!(
            !t.description().is_empty(),
            "{} has no doc comment",
            t.name()
        );
    }
    // Every type `--events` accepts, and every record kind's line type.
    for t in filter::EVENT_TYPES {
        assert!(
            types.contains(*t),
            "--events accepts {t}, which has no schema"
        );
    }
    for k in (0..=u16::MAX).filter_map(RecordKind::from_u16) {
        if !k.is_agent_made() {
            assert!(
                types.contains(decode::kind_name(k)),
                "{k:?} prints with no schema"
            );
        }
    }
    assert!(types.contains("connect_error"));
    // The summary counts every event line type and no other.
    let events: BTreeSet<String> = LineType::ALL
        .into_iter()
        .filter(|t| t.is_event())
        .map(|t| t.name().to_owned())
        .collect();
    assert_eq!(values(LineType::Summary, "events"), events);
}

#[test]
fn every_value_the_agent_prints_is_in_its_schema() {
    // Every line about a socket: all but the agent's own bookkeeping lines.
    let socket_lines: Vec<LineType> = LineType::ALL
        .into_iter()
        .filter(|t| {
            !matches!(
                t,
                LineType::Start | LineType::Path | LineType::Loss | LineType::Summary
            )
        })
        .collect();
    let states = image(0..=u8::MAX, net::tcp_state_name);
    let ca = image(0..=u8::MAX, net::ca_state_name);
    for t in socket_lines {
        assert_eq!(values(t, "family"), image(0..=u16::MAX, net::family_name));
        assert_eq!(
            values(t, "protocol"),
            image(0..=u8::MAX, net::protocol_name)
        );
        assert_eq!(values(t, "service"), set(net::SERVICES));
    }
    // Services: every port of either end, TCP and UDP.
    let mut services = BTreeSet::new();
    for protocol in [
        agent_common::event::IPPROTO_TCP,
        agent_common::event::IPPROTO_UDP,
    ] {
        for port in 0..=u16::MAX {
            for (sport, dport) in [(port, 0), (0, port)] {
                let f = agent_common::event::Flow {
                    protocol,
                    sport,
                    dport,
                    ..Default::default()
                };
                services.extend(net::service(&f).map(str::to_owned));
            }
        }
    }
    assert_eq!(values(LineType::UdpSend, "service"), services);
    assert_eq!(
        evidence_values(Kind::UdpQueueOverflow, "service"),
        services,
        "udp_queue_overflow evidence"
    );
    assert_eq!(
        values(LineType::UdpQueueDrop, "origin"),
        set(crate::output::json::UDP_QUEUE_ORIGINS)
    );
    assert_eq!(values(LineType::Retransmit, "state"), states);
    assert_eq!(values(LineType::SendError, "state"), states);
    assert_eq!(values(LineType::SocketState, "old_state"), states);
    assert_eq!(values(LineType::SocketState, "new_state"), states);
    assert_eq!(values(LineType::Retransmit, "ca_state"), ca);
    assert_eq!(values(LineType::CongState, "ca_state"), ca);
    assert_eq!(
        values(LineType::Retransmit, "kind"),
        image(0..=u8::MAX, net::retransmit_kind_name)
    );
    // Syscalls: each number this architecture has, under the line type it prints as.
    let (mut send, mut connect) = (BTreeSet::new(), BTreeSet::new());
    for nr in 0..4096 {
        let e = agent_common::event::SendError {
            syscall: nr,
            ..Default::default()
        };
        if let Some(name) = net::syscall_name(nr) {
            if decode::is_connect_or_bind(&e) {
                connect.insert(name.to_owned());
            } else {
                send.insert(name.to_owned());
            }
        }
    }
    assert_eq!(values(LineType::SendError, "syscall"), send);
    assert_eq!(values(LineType::ConnectError, "syscall"), connect);
    assert!(connect.contains("connect") && connect.contains("bind"));
    for t in [LineType::SendError, LineType::ConnectError] {
        assert_eq!(values(t, "source"), set(crate::output::json::SEND_SOURCES));
    }
    assert_eq!(
        values(LineType::IcmpTooBig, "source"),
        set(crate::output::json::ICMP_SOURCES)
    );
    // Verdicts: every kind, its evidence checked per kind.
    let kinds = set(Kind::ALL.map(Kind::name));
    assert_eq!(values(LineType::Verdict, "verdict"), kinds);
    assert_eq!(values(LineType::Summary, "verdicts"), kinds);
    assert_eq!(
        values(LineType::Path, "verdict"),
        set(crate::engine::path::PATH_VERDICTS.map(Kind::name))
    );
    let verdict = for_type(LineType::Verdict);
    for k in Kind::ALL {
        let ev = evidence(&verdict, k);
        assert_eq!(ev["type"], json!("object"), "{} evidence: {ev}", k.name());
    }
    assert_eq!(
        evidence_values(Kind::SendError, "prior_verdicts"),
        kinds,
        "prior_verdicts are verdict names"
    );
    let recent = &evidence(&verdict, Kind::SendError)["properties"]["recent_retransmits"]["items"];
    let recent = match recent.get("$ref").and_then(Value::as_str) {
        Some(r) => &verdict["$defs"][r.trim_start_matches("#/$defs/")],
        None => recent,
    };
    let mut kinds_printed = BTreeSet::new();
    assert!(allowed(
        &verdict,
        &recent["properties"]["kind"],
        &mut kinds_printed
    ));
    assert_eq!(kinds_printed, image(0..=u8::MAX, net::retransmit_kind_name));
    // Loss sources: every one the ledger has, in loss lines and the summary.
    let sources: BTreeSet<String> = Source::all().map(|s| s.name().to_owned()).collect();
    assert_eq!(values(LineType::Loss, "source"), sources);
    assert_eq!(values(LineType::Summary, "lost"), sources);
    for name in agent_common::loss::SLOT_NAMES {
        assert!(
            sources.contains(name),
            "loss slot {name} has no source name"
        );
    }
}

#[test]
fn every_schema_is_strict() {
    // Every object with fixed properties refuses others; integers are bounded.
    fn check(path: &str, v: &Value) {
        match v {
            Value::Object(o) => {
                if o.get("type") == Some(&json!("object")) && o.contains_key("properties") {
                    assert_eq!(
                        o.get("additionalProperties"),
                        Some(&json!(false)),
                        "{path} accepts any property"
                    );
                }
                assert!(
                    !o.get("format")
                        .and_then(Value::as_str)
                        .is_some_and(|f| f.starts_with("int") || f.starts_with("uint")),
                    "{path}: integer format left"
                );
                for (k, v) in o {
                    check(&format!("{path}/{k}"), v);
                }
            }
            Value::Array(a) => a.iter().for_each(|v| check(path, v)),
            _ => {}
        }
    }
    for t in LineType::ALL {
        let s = for_type(t);
        check(t.name(), &s);
        // Every reference resolves, and no definition is only a reference (a cycle
        // some validators accept anything through, and others never leave).
        let text = s.to_string();
        for (name, def) in s["$defs"].as_object().into_iter().flatten() {
            assert!(
                def.as_object()
                    .is_some_and(|o| !(o.len() == 1 && o.contains_key("$ref"))),
                "{}: $defs/{name} is only a reference: {def}",
                t.name()
            );
        }
        for r in text.split("\"$ref\":\"#/$defs/").skip(1) {
            let name = &r[..r.find('"').unwrap()];
            assert!(
                s["$defs"].get(name).is_some(),
                "{}: $ref to a missing $defs/{name}",
                t.name()
            );
        }
        let req = s["required"].as_array().unwrap();
        for field in ["schema", "type", "ts", "ts_ns", "host", "agent_version"] {
            assert!(
                req.contains(&json!(field)),
                "{}: {field} not required",
                t.name()
            );
        }
        assert_eq!(s["properties"]["schema"]["const"], json!(SCHEMA));
    }
}
