//! Facts about the host added to verdicts at the edge, in live runs only (a replay
//! cannot ask a machine that is gone): the TIME_WAIT sockets towards a destination
//! and the ephemeral port range of the socket's network namespace.

use std::{fs, net::IpAddr, os::fd::AsRawFd};

use agent_common::event::{Flow, SockLookup, lookup_answer};

use crate::{
    engine::{
        Verdict,
        verdict::evidence::{Evidence, PortsHostFacts},
    },
    net,
};

/// Counts TIME_WAIT (state 06) entries towards `peer:port` in a task's view of
/// /proc/net/tcp{,6} (its network namespace); `task` is a /proc/PID[/task/TID] path.
pub fn time_wait_to(task: &str, peer: IpAddr, port: u16) -> Option<u64> {
    let (file, want) = proc_net_endpoint(peer, port);
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

/// An endpoint as /proc/net/tcp{,6} prints it (each 32-bit word of the address in
/// host order, in hex), and the file that lists it.
fn proc_net_endpoint(ip: IpAddr, port: u16) -> (&'static str, String) {
    match ip {
        IpAddr::V4(a) => (
            "tcp",
            format!("{:08X}:{port:04X}", u32::from_le_bytes(a.octets())),
        ),
        IpAddr::V6(a) => {
            let mut s = String::with_capacity(37);
            for w in a.octets().chunks(4) {
                s.push_str(&format!(
                    "{:08X}",
                    u32::from_le_bytes([w[0], w[1], w[2], w[3]])
                ));
            }
            ("tcp6", format!("{s}:{port:04X}"))
        }
    }
}

/// Does a TCP socket with this flow (saddr/sport local) exist in the network
/// namespace `netns` (inode)? Read from /proc/net/tcp{,6} as that namespace sees it;
/// an IPv4 flow is also looked for as a v4-mapped one (dual-stack sockets). None
/// when the namespace cannot be read, and when no socket has the flow but the
/// namespace forwards packets: a router (a Kubernetes node, a NAT gateway) receives
/// too-big messages for the connections it forwards or masquerades, which are no
/// sockets of its own and no forgeries either.
pub fn tcp_socket_exists(netns: u32, flow: &Flow, pids: &mut NetnsPids) -> Option<bool> {
    let tables = pids.read(netns, &["tcp", "tcp6", "snmp"])?;
    let (local, peer) = (net::local_ip(flow), net::peer_ip(flow));
    let mut candidates = vec![(local, peer)];
    if let (IpAddr::V4(l), IpAddr::V4(p)) = (local, peer) {
        candidates.push((
            IpAddr::V6(l.to_ipv6_mapped()),
            IpAddr::V6(p.to_ipv6_mapped()),
        ));
    }
    let found = candidates.into_iter().any(|(l, p)| {
        let (file, want_l) = proc_net_endpoint(l, flow.sport);
        let (_, want_p) = proc_net_endpoint(p, flow.dport);
        let text = if file == "tcp" {
            &tables[0]
        } else {
            &tables[1]
        };
        text.lines().skip(1).any(|line| {
            let mut f = line.split_whitespace().skip(1);
            f.next() == Some(want_l.as_str()) && f.next() == Some(want_p.as_str())
        })
    });
    if !found && forwards(&tables[2]) {
        return None;
    }
    Some(found)
}

/// `Ip: Forwarding` of /proc/net/snmp: 1 when the namespace routes.
fn forwards(snmp: &str) -> bool {
    let mut ip = snmp.lines().filter(|l| l.starts_with("Ip:"));
    let (Some(names), Some(values)) = (ip.next(), ip.next()) else {
        return false;
    };
    names
        .split_whitespace()
        .zip(values.split_whitespace())
        .any(|(n, v)| n == "Forwarding" && v == "1")
}

/// Reads files of /proc/net as one network namespace sees them: through a process
/// in it (found by scanning /proc, cached and checked on use), else by joining it
/// from a short-lived thread (namespaces no process lives in, held by `ip netns`
/// mounts or by sockets; needs CAP_SYS_ADMIN).
#[derive(Default)]
pub struct NetnsPids {
    cache: std::collections::HashMap<u32, u32>,
}

fn ns_inode(path: &str) -> Option<u32> {
    let link = fs::read_link(path).ok()?;
    let s = link.to_str()?;
    s.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

impl NetnsPids {
    fn pid_in(&mut self, netns: u32) -> Option<u32> {
        if let Some(&pid) = self.cache.get(&netns)
            && ns_inode(&format!("/proc/{pid}/ns/net")) == Some(netns)
        {
            return Some(pid);
        }
        self.cache.remove(&netns);
        if self.cache.len() > 1024 {
            self.cache.clear();
        }
        for entry in fs::read_dir("/proc").ok()?.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
            else {
                continue;
            };
            if ns_inode(&format!("/proc/{pid}/ns/net")) == Some(netns) {
                self.cache.insert(netns, pid);
                return Some(pid);
            }
        }
        None
    }

    /// `/proc/net/<file>` for each of `files`, as namespace `netns` sees them.
    pub fn read(&mut self, netns: u32, files: &[&str]) -> Option<Vec<String>> {
        if netns == 0 {
            return None;
        }
        if let Some(pid) = self.pid_in(netns) {
            return files
                .iter()
                .map(|f| fs::read_to_string(format!("/proc/{pid}/net/{f}")).ok())
                .collect();
        }
        let ns = find_netns_file(netns)?;
        let files: Vec<String> = files.iter().map(|f| f.to_string()).collect();
        std::thread::spawn(move || {
            // SAFETY: valid fd; affects only this short-lived thread.
            if unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
                return None;
            }
            files
                .iter()
                .map(|f| fs::read_to_string(format!("/proc/thread-self/net/{f}")).ok())
                .collect()
        })
        .join()
        .ok()?
    }
}

/// A file that is namespace `netns`: an `ip netns` mount, or a thread's ns link.
fn find_netns_file(netns: u32) -> Option<fs::File> {
    use std::os::unix::fs::MetadataExt;
    let matches = |p: &std::path::Path| fs::metadata(p).is_ok_and(|m| m.ino() == u64::from(netns));
    if let Ok(dir) = fs::read_dir("/run/netns") {
        for e in dir.flatten() {
            if matches(&e.path()) {
                return fs::File::open(e.path()).ok();
            }
        }
    }
    for p in fs::read_dir("/proc").ok()?.flatten() {
        let Ok(tasks) = fs::read_dir(p.path().join("task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let ns = t.path().join("ns/net");
            if matches(&ns) {
                return fs::File::open(ns).ok();
            }
        }
    }
    None
}

/// At most `limit` uses in any one-second window (each a scan of /proc).
struct PerSecond {
    limit: u32,
    second: Option<std::time::Instant>,
    used: u32,
}

impl PerSecond {
    fn new(limit: u32) -> Self {
        Self {
            limit,
            second: None,
            used: 0,
        }
    }

    /// One use, if the current second has room.
    fn take(&mut self) -> bool {
        let now = std::time::Instant::now();
        if self
            .second
            .is_none_or(|s| now.duration_since(s) >= std::time::Duration::from_secs(1))
        {
            self.second = Some(now);
            self.used = 0;
        }
        if self.used >= self.limit {
            return false;
        }
        self.used += 1;
        true
    }
}

/// Answers the engine's questions about kernel sockets, at most `PER_SECOND` a
/// second (a flood of forged messages must not become a flood of /proc scans);
/// beyond that the answer is "unknown", recorded as such.
pub struct SockLookups {
    pids: NetnsPids,
    budget: PerSecond,
}

impl SockLookups {
    pub const PER_SECOND: u32 = 20;

    pub fn new() -> Self {
        Self {
            pids: NetnsPids::default(),
            budget: PerSecond::new(Self::PER_SECOND),
        }
    }

    pub fn answer(&mut self, mut q: SockLookup) -> SockLookup {
        if !self.budget.take() {
            q.answer = lookup_answer::UNKNOWN;
            return q;
        }
        q.answer = match tcp_socket_exists(q.netns, &q.flow, &mut self.pids) {
            Some(true) => lookup_answer::EXISTS,
            Some(false) => lookup_answer::ABSENT,
            None => lookup_answer::UNKNOWN,
        };
        q
    }
}

impl Default for SockLookups {
    fn default() -> Self {
        Self::new()
    }
}

/// The process holding the socket with inode `ino` (a `socket:[ino]` link in its
/// /proc/PID/fd), with its comm and cgroup id: the owner of a socket that only
/// ever received, which no send path claimed. The lowest such pid (a forked
/// daemon's parent usually holds the socket too). None when nobody readable has it.
pub fn owner_of_inode(ino: u64) -> Option<agent_common::event::Owner> {
    use std::os::unix::fs::MetadataExt;
    let want = format!("socket:[{ino}]");
    let mut pids: Vec<u32> = fs::read_dir("/proc")
        .ok()?
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    pids.sort_unstable();
    let pid = pids.into_iter().find(|pid| {
        fs::read_dir(format!("/proc/{pid}/fd")).is_ok_and(|fds| {
            fds.flatten()
                .any(|fd| fs::read_link(fd.path()).is_ok_and(|l| l.as_os_str() == want.as_str()))
        })
    })?;
    let comm = fs::read_to_string(format!("/proc/{pid}/comm")).unwrap_or_default();
    let mut owner = agent_common::event::Owner {
        pid,
        tid: pid,
        ..Default::default()
    };
    let c = comm.trim_end().as_bytes();
    let n = c.len().min(15);
    owner.comm[..n].copy_from_slice(&c[..n]);
    // cgroup v2: the id is the inode of the cgroup's directory.
    owner.cgroup = fs::read_to_string(format!("/proc/{pid}/cgroup"))
        .ok()
        .and_then(|s| {
            let path = s.lines().find_map(|l| l.strip_prefix("0::"))?.to_string();
            fs::metadata(format!("/sys/fs/cgroup{path}")).ok()
        })
        .map_or(0, |m| m.ino());
    Some(owner)
}

/// Owners of receive-only sockets, looked up by inode at most `PER_SECOND` times a
/// second (each is a scan of every process's fds) and remembered.
pub struct OwnerLookups {
    known: std::collections::HashMap<u64, Option<agent_common::event::Owner>>,
    budget: PerSecond,
}

impl Default for OwnerLookups {
    fn default() -> Self {
        Self {
            known: Default::default(),
            budget: PerSecond::new(Self::PER_SECOND),
        }
    }
}

impl OwnerLookups {
    pub const PER_SECOND: u32 = 5;

    pub fn owner(&mut self, ino: u64) -> Option<agent_common::event::Owner> {
        if let Some(o) = self.known.get(&ino) {
            return *o;
        }
        if !self.budget.take() {
            return None;
        }
        if self.known.len() >= 4096 {
            self.known.clear();
        }
        let o = owner_of_inode(ino);
        self.known.insert(ino, o);
        o
    }
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
    let owner = v.owner;
    let flow = v.flow;
    let Evidence::EphemeralPortsExhausted(ev) = &mut v.evidence else {
        return;
    };
    let Some(owner) = owner else {
        return;
    };
    // The failing thread's view: threads of one process can sit in different
    // network namespaces.
    let mut task = format!("/proc/{}/task/{}", owner.pid, owner.tid);
    if !std::path::Path::new(&task).exists() {
        task = format!("/proc/{}", owner.pid);
    }
    let peer = net::peer_ip(&flow);
    let range = port_range(&task);
    ev.host = Some(PortsHostFacts {
        time_wait_to_destination: time_wait_to(&task, peer, flow.dport),
        ip_local_port_range: range.map(|(a, b)| format!("{a} {b}")),
        ephemeral_ports: range.map(|(a, b)| u32::from(b) - u32::from(a) + 1),
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn forwarding_from_snmp() {
        let router = "Ip: Forwarding DefaultTTL InReceives\nIp: 1 64 0\nIcmp: InMsgs\nIcmp: 0\n";
        assert!(super::forwards(router));
        assert!(!super::forwards(&router.replace("Ip: 1 64", "Ip: 2 64")));
        assert!(!super::forwards(""));
    }
}
