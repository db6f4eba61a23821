//! Facts about the host added to verdicts at the edge, in live runs only (a replay
//! cannot ask a machine that is gone): the TIME_WAIT sockets towards a destination
//! and the ephemeral port range of the socket's network namespace.

use std::{fs, net::IpAddr, os::fd::AsRawFd};

use serde_json::json;

use crate::{engine::Verdict, net};

/// Counts TIME_WAIT (state 06) entries towards `peer:port` in a task's view of
/// /proc/net/tcp{,6} (its network namespace); `task` is a /proc/PID[/task/TID] path.
pub fn time_wait_to(task: &str, peer: IpAddr, port: u16) -> Option<u64> {
    let (file, want) = match peer {
        IpAddr::V4(a) => (
            "tcp",
            format!("{:08X}:{port:04X}", u32::from_le_bytes(a.octets())),
        ),
        IpAddr::V6(a) => {
            let o = a.octets();
            let mut s = String::new();
            for w in o.chunks(4) {
                s.push_str(&format!(
                    "{:08X}",
                    u32::from_le_bytes([w[0], w[1], w[2], w[3]])
                ));
            }
            ("tcp6", format!("{s}:{port:04X}"))
        }
    };
    let text = fs::read_to_string(format!("{task}/net/{file}")).ok()?;
    Some(
        text.lines()
            .skip(1)
            .filter(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                f.len() > 3 && f[2] == want && f[3] == "06"
            })
            .count() as u64,
    )
}

/// `net.ipv4.ip_local_port_range` as seen from a task's network namespace (read from
/// a thread that joined it; needs CAP_SYS_ADMIN, else None).
pub fn port_range(task: &str) -> Option<(u16, u16)> {
    let ns = fs::File::open(format!("{task}/ns/net")).ok()?;
    std::thread::spawn(move || {
        // SAFETY: valid fd; affects only this short-lived thread.
        if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            return None;
        }
        let s = fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
        let mut it = s.split_whitespace().map(|v| v.parse::<u16>().ok());
        Some((it.next()??, it.next()??))
    })
    .join()
    .ok()?
}

/// Adds host facts to the verdicts that need them.
pub fn enrich(v: &mut Verdict) {
    if v.verdict != "ephemeral_ports_exhausted" {
        return;
    }
    let Some(owner) = v.owner else {
        return;
    };
    // The failing thread's view: threads of one process can sit in different
    // network namespaces.
    let mut task = format!("/proc/{}/task/{}", owner.pid, owner.tid);
    if !std::path::Path::new(&task).exists() {
        task = format!("/proc/{}", owner.pid);
    }
    let peer = net::peer_ip(&v.flow);
    let tw = time_wait_to(&task, peer, v.flow.dport);
    let range = port_range(&task);
    if let Some(obj) = v.evidence.as_object_mut() {
        obj.insert("time_wait_to_destination".into(), json!(tw));
        obj.insert(
            "ip_local_port_range".into(),
            json!(range.map(|(a, b)| format!("{a} {b}"))),
        );
        obj.insert(
            "ephemeral_ports".into(),
            json!(range.map(|(a, b)| u32::from(b) - u32::from(a) + 1)),
        );
    }
}
