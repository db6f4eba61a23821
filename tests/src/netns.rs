//! Network namespaces and topologies.

use std::{
    fs::File,
    io::Write,
    os::fd::AsRawFd,
    process::{Command, Stdio},
    sync::atomic::{AtomicU32, Ordering},
};

use std::net::IpAddr;

use crate::sh;

static SEQ: AtomicU32 = AtomicU32::new(0);

/// A named network namespace (`ip netns add`), deleted on drop.
pub struct Netns {
    pub name: String,
}

impl Netns {
    pub fn new(role: &str) -> Self {
        let name = format!(
            "ss{}-{}-{role}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        );
        sh("ip", &["netns", "add", &name]);
        let ns = Netns { name };
        ns.ip(&["link", "set", "lo", "up"]);
        // No duplicate address detection: link-local addresses that stay tentative
        // for ~2 s would eat the first IPv6 packets (and add retransmits to the
        // agent's view that no scenario asked for).
        ns.sysctl("net.ipv6.conf.all.accept_dad", "0");
        ns.sysctl("net.ipv6.conf.default.accept_dad", "0");
        ns
    }

    /// `ip -n <ns> <args>`
    pub fn ip(&self, args: &[&str]) -> String {
        let mut full = vec!["-n", &self.name];
        full.extend_from_slice(args);
        sh("ip", &full)
    }

    /// Runs a program inside the namespace.
    pub fn exec(&self, program: &str, args: &[&str]) -> String {
        let mut full = vec!["netns", "exec", &self.name, program];
        full.extend_from_slice(args);
        sh("ip", &full)
    }

    pub fn sysctl(&self, key: &str, value: &str) {
        self.exec("sysctl", &["-qw", &format!("{key}={value}")]);
    }

    /// Loads an nftables ruleset (nft -f syntax) into the namespace.
    pub fn nft(&self, ruleset: &str) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", &self.name, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("cannot run nft (is nftables installed? `cargo xtask setup` installs it)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(ruleset.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "nft -f failed in {}: {}\nruleset:\n{ruleset}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Drops the too-big messages this namespace (a router) would send back: ICMP
    /// fragmentation-needed and ICMPv6 packet-too-big, on the output hook. This makes
    /// a PMTUD black hole.
    pub fn filter_too_big(&self) {
        self.nft(
            "table inet blackhole {
                chain out {
                    type filter hook output priority 0; policy accept;
                    icmp type destination-unreachable icmp code frag-needed counter drop
                    icmpv6 type packet-too-big counter drop
                }
            }",
        );
    }

    /// Drops the too-big messages this namespace receives: ICMP fragmentation-needed
    /// and ICMPv6 packet-too-big, on the input hook (in table `inet hostfw`, with
    /// counters: [`Netns::nft_counters`] reads them). This host's own firewall eats
    /// the messages a router sent: the socket never learns the path MTU.
    pub fn drop_too_big_input(&self) {
        self.nft(
            "table inet hostfw {
                chain in {
                    type filter hook input priority 0; policy accept;
                    icmp type destination-unreachable icmp code frag-needed counter drop
                    icmpv6 type packet-too-big counter drop
                }
            }",
        );
    }

    /// The packet counts of every `counter` in table `family` `table` (e.g. `inet`
    /// `hostfw`), in listing order.
    pub fn nft_counters(&self, family: &str, table: &str) -> Vec<u64> {
        nft_counters_in(&self.exec("nft", &["list", "table", family, table]))
    }

    /// The namespace's inode number: what the agent prints as `netns`.
    pub fn inode(&self) -> u64 {
        use std::os::unix::fs::MetadataExt;
        let path = format!("/run/netns/{}", self.name);
        std::fs::metadata(&path)
            .unwrap_or_else(|e| panic!("stat {path}: {e}"))
            .ino()
    }

    /// Runs `f` on a new thread that has entered this namespace, so sockets it opens
    /// live here. The thread gets `thread_name` (its comm, as the kernel reports it).
    pub fn run<T: Send + 'static>(
        &self,
        thread_name: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/run/netns/{}", self.name);
        std::thread::Builder::new()
            .name(thread_name.into())
            .spawn(move || {
                let ns = File::open(&path).unwrap_or_else(|e| panic!("open {path}: {e}"));
                // SAFETY: valid fd; CLONE_NEWNET only affects this thread.
                let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns({path}): {}", std::io::Error::last_os_error());
                f()
            })
            .expect("spawn thread")
    }
}

/// The packet counts of every `counter` in an `nft list table` listing, in order.
pub fn nft_counters_in(listing: &str) -> Vec<u64> {
    listing
        .split("counter packets ")
        .skip(1)
        .map(|t| {
            t.split_whitespace()
                .next()
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("cannot parse nft counters:\n{listing}"))
        })
        .collect()
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// Addresses of one topology: client and server sides of the path.
#[derive(Clone, Debug)]
pub struct Addrs {
    /// The `net` number: every address of the topology lies in 198.18.net.0/24,
    /// 198.19.net.0/24 or 2001:db8:net::/48 (`net` in hex), see [`Addrs::owns`].
    pub net: u8,
    pub client4: String,
    pub server4: String,
    pub router_client4: String,
    pub router_server4: String,
    pub client6: String,
    pub server6: String,
    pub router_client6: String,
    pub router_server6: String,
    /// Only in [`Topology::nat_chain`]: the masquerading router's client-side and
    /// outside (translated source) addresses.
    pub nat_inside4: String,
    pub nat_outside4: String,
}

impl Addrs {
    /// `net` picks distinct subnets so tests running side by side never share an
    /// address (the agent sees every namespace; tests filter by address).
    pub fn new(net: u8) -> Self {
        Addrs {
            net,
            client4: format!("198.18.{net}.2"),
            router_client4: format!("198.18.{net}.1"),
            server4: format!("198.19.{net}.2"),
            router_server4: format!("198.19.{net}.1"),
            client6: format!("2001:db8:{net:x}:1::2"),
            router_client6: format!("2001:db8:{net:x}:1::1"),
            server6: format!("2001:db8:{net:x}:2::2"),
            router_server6: format!("2001:db8:{net:x}:2::1"),
            nat_inside4: format!("198.18.{net}.1"),
            nat_outside4: format!("198.19.{net}.130"),
        }
    }
}

impl Addrs {
    /// Whether `ip` belongs to this topology's ranges (an IPv4-mapped IPv6 address
    /// counts as its IPv4 address).
    pub fn owns(&self, ip: IpAddr) -> bool {
        match canonical_ip(ip) {
            IpAddr::V4(a) => {
                let o = a.octets();
                o[0] == 198 && (o[1] == 18 || o[1] == 19) && o[2] == self.net
            }
            IpAddr::V6(a) => {
                let s = a.segments();
                s[0] == 0x2001 && s[1] == 0xdb8 && s[2] == self.net as u16
            }
        }
    }
}

/// `::ffff:a.b.c.d` as `a.b.c.d`; any other address unchanged.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(a) => a.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

/// client --veth-- [nat --veth--] [router --veth--] server
pub struct Topology {
    pub client: Netns,
    /// A masquerading router between the client and `router` ([`Topology::nat_chain`]).
    pub nat: Option<Netns>,
    pub router: Option<Netns>,
    pub server: Netns,
    pub addrs: Addrs,
}

fn veth(a: &Netns, a_if: &str, b: &Netns, b_if: &str, mtu: u32) {
    let mtu = mtu.to_string();
    sh(
        "ip",
        &[
            "link", "add", a_if, "netns", &a.name, "mtu", &mtu, "type", "veth", "peer", "name",
            b_if, "netns", &b.name, "mtu", &mtu,
        ],
    );
    a.ip(&["link", "set", a_if, "up"]);
    b.ip(&["link", "set", b_if, "up"]);
}

fn addr(ns: &Netns, ifname: &str, cidr: &str) {
    // nodad: addresses are usable at once instead of after duplicate detection.
    if cidr.contains(':') {
        ns.ip(&["-6", "addr", "add", cidr, "dev", ifname, "nodad"]);
    } else {
        ns.ip(&["addr", "add", cidr, "dev", ifname]);
    }
}

impl Topology {
    /// The inode numbers of every namespace of the topology (the agent's `netns`).
    pub fn netns_inodes(&self) -> Vec<u64> {
        [
            Some(&self.client),
            self.nat.as_ref(),
            self.router.as_ref(),
            Some(&self.server),
        ]
        .into_iter()
        .flatten()
        .map(Netns::inode)
        .collect()
    }

    /// Client and server on one veth link (client side of `Addrs` on both ends of
    /// one /24: client .2, server .1).
    pub fn direct(net: u8) -> Self {
        let mut addrs = Addrs::new(net);
        addrs.server4 = addrs.router_client4.clone();
        addrs.server6 = addrs.router_client6.clone();
        let client = Netns::new("c");
        let server = Netns::new("s");
        veth(&client, "eth0", &server, "eth0", 1500);
        addr(&client, "eth0", &format!("{}/24", addrs.client4));
        addr(&server, "eth0", &format!("{}/24", addrs.server4));
        addr(&client, "eth0", &format!("{}/64", addrs.client6));
        addr(&server, "eth0", &format!("{}/64", addrs.server6));
        Topology {
            client,
            nat: None,
            router: None,
            server,
            addrs,
        }
    }

    /// Client and server with a router between them whose server-side link has
    /// `server_mtu` (everything else 1500).
    pub fn routed(net: u8, server_mtu: u32) -> Self {
        Self::routed_mtus(net, 1500, server_mtu)
    }

    /// As [`Topology::routed`], with the MTU of the client-side link too (a small
    /// client-side MTU makes the server's replies the packets too big to forward).
    pub fn routed_mtus(net: u8, client_mtu: u32, server_mtu: u32) -> Self {
        let addrs = Addrs::new(net);
        let client = Netns::new("c");
        let router = Netns::new("r");
        let server = Netns::new("s");
        veth(&client, "eth0", &router, "c0", client_mtu);
        veth(&router, "s0", &server, "eth0", server_mtu);
        addr(&client, "eth0", &format!("{}/24", addrs.client4));
        addr(&router, "c0", &format!("{}/24", addrs.router_client4));
        addr(&router, "s0", &format!("{}/24", addrs.router_server4));
        addr(&server, "eth0", &format!("{}/24", addrs.server4));
        addr(&client, "eth0", &format!("{}/64", addrs.client6));
        addr(&router, "c0", &format!("{}/64", addrs.router_client6));
        addr(&router, "s0", &format!("{}/64", addrs.router_server6));
        addr(&server, "eth0", &format!("{}/64", addrs.server6));
        client.ip(&["route", "add", "default", "via", &addrs.router_client4]);
        client.ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &addrs.router_client6,
        ]);
        server.ip(&["route", "add", "default", "via", &addrs.router_server4]);
        server.ip(&[
            "-6",
            "route",
            "add",
            "default",
            "via",
            &addrs.router_server6,
        ]);
        router.sysctl("net.ipv4.ip_forward", "1");
        router.sysctl("net.ipv6.conf.all.forwarding", "1");
        Topology {
            client,
            nat: None,
            router: Some(router),
            server,
            addrs,
        }
    }

    /// A pod-like client behind a masquerading router, IPv4 only:
    /// client --1500-- nat --1500-- router --`server_mtu`-- server.
    /// `nat` masquerades what leaves towards `router` (nftables `masquerade`), so the
    /// server sees `addrs.nat_outside4` and a too-big message from `router` reaches
    /// the client only through the nat's conntrack. `addrs.router_client4` is the
    /// router's address facing the nat (the too-big messages' source).
    ///
    /// Addresses: client 198.18.net.2/24, nat 198.18.net.1/24 and 198.19.net.130/25,
    /// router 198.19.net.129/25 and 198.19.net.1/25, server 198.19.net.2/25.
    pub fn nat_chain(net: u8, server_mtu: u32) -> Self {
        let mut addrs = Addrs::new(net);
        addrs.router_client4 = format!("198.19.{net}.129");
        let client = Netns::new("c");
        let nat = Netns::new("n");
        let router = Netns::new("r");
        let server = Netns::new("s");
        veth(&client, "eth0", &nat, "c0", 1500);
        veth(&nat, "r0", &router, "n0", 1500);
        veth(&router, "s0", &server, "eth0", server_mtu);
        addr(&client, "eth0", &format!("{}/24", addrs.client4));
        addr(&nat, "c0", &format!("{}/24", addrs.nat_inside4));
        addr(&nat, "r0", &format!("{}/25", addrs.nat_outside4));
        addr(&router, "n0", &format!("{}/25", addrs.router_client4));
        addr(&router, "s0", &format!("{}/25", addrs.router_server4));
        addr(&server, "eth0", &format!("{}/25", addrs.server4));
        client.ip(&["route", "add", "default", "via", &addrs.nat_inside4]);
        nat.ip(&["route", "add", "default", "via", &addrs.router_client4]);
        server.ip(&["route", "add", "default", "via", &addrs.router_server4]);
        nat.sysctl("net.ipv4.ip_forward", "1");
        router.sysctl("net.ipv4.ip_forward", "1");
        nat.nft(
            "table ip masq {
                chain post {
                    type nat hook postrouting priority srcnat; policy accept;
                    oifname \"r0\" counter masquerade
                }
            }",
        );
        Topology {
            client,
            nat: Some(nat),
            router: Some(router),
            server,
            addrs,
        }
    }
}
