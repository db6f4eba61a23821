//! Scenarios that make the real kernel fail a send (or send a too-big ICMP) between
//! namespaces the caller created, and return what a test needs to check the agent's
//! report against.
//!
//! Each function runs the sending side on a thread inside `topo.client` (its comm is
//! a distinctive `ss-...` name) and the server side inside `topo.server`, and panics
//! with the reason when the kernel does not behave as expected. Every wait is bounded
//! by time. Servers listen on port 0 (the kernel picks), and nftables tables a
//! scenario adds are deleted before it returns, so a topology can host several
//! scenarios one after the other (not two of [`emsgsize_udp`] / [`too_big_received`]
//! at the same time: both start by flushing the client's route cache so the path MTU
//! is learned afresh). What the kernel learned stays learned: after either, the client
//! namespace's route cache holds a path MTU of 1400 towards the server, which other
//! traffic on that topology will use.
//!
//! The failing call is always a raw `libc::send` (glibc implements it with the
//! `sendto` syscall on x86_64), so `syscall` is `"sendto"` and `bytes` is exact.

use std::{
    io::Write,
    net::{IpAddr, SocketAddr, TcpListener, TcpStream, UdpSocket},
    os::fd::{AsRawFd, RawFd},
    sync::mpsc,
    thread::JoinHandle,
    time::{Duration, Instant},
};

use crate::{Netns, Topology, netns, traffic};

/// What the kernel did to one send, seen from the sending thread.
#[derive(Clone, Debug)]
pub struct SendFailure {
    /// e.g. `libc::EPIPE`
    pub errno: i32,
    pub local: SocketAddr,
    pub peer: SocketAddr,
    /// `getpid()`
    pub pid: u32,
    /// `gettid()` of the thread that called send
    pub tid: u32,
    /// That thread's name as the kernel sees it (`/proc/self/task/<tid>/comm`, trimmed).
    pub comm: String,
    /// `"tcp"` or `"udp"`
    pub protocol: &'static str,
    /// Bytes the failing call asked to send.
    pub bytes: usize,
    /// The syscall that failed: `"sendto"` for every scenario here.
    pub syscall: &'static str,
}

/// A too-big ICMP the client received: frag-needed (IPv4) or packet-too-big (IPv6).
#[derive(Clone, Debug)]
pub struct TooBig {
    /// The client socket whose packet was too big.
    pub local: SocketAddr,
    /// The server it was sending to.
    pub peer: SocketAddr,
    /// The ICMP's source: the router's client-side address.
    pub router: IpAddr,
    /// The MTU the ICMP announced (and the client's path MTU afterwards).
    pub mtu: u32,
}

/// Whatever the kernel does, no step of a scenario waits longer than this.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);
/// The path MTU `Topology::routed(net, 1400)` gives.
const SMALL_MTU: u32 = 1400;
/// x86_64 `struct seccomp_data.arch` (linux/audit.h).
const AUDIT_ARCH_X86_64: u32 = 0xC000_003E;

// ---------------------------------------------------------------------------------
// 1. EPIPE / ECONNRESET
// ---------------------------------------------------------------------------------

/// A TCP connection whose server accepts and then closes with `SO_LINGER {on, 0}`,
/// so its kernel answers with a RST. The client waits until its kernel has processed
/// the RST (poll reports `POLLHUP`), then sends until a send fails.
///
/// The kernel sets the socket error to ECONNRESET when a RST hits an ESTABLISHED
/// socket, so the first failing send returns ECONNRESET and clears it; any later send
/// on the dead socket returns EPIPE. The returned `errno` is the first failure's:
/// with this ordering it is ECONNRESET (EPIPE is accepted too).
pub fn epipe_after_reset(topo: &Topology, v6: bool) -> SendFailure {
    let (client_ip, server_ip) = ips(topo, v6);
    // The server resets only once the client has seen its connect complete: on a
    // slow machine (a VM under emulation) the RST could otherwise beat the client's
    // check of the connect, failing the connect instead of the send.
    let (connected_tx, connected_rx) = mpsc::channel::<()>();
    let (server, srv) = tcp_server(&topo.server, server_ip, move |s| {
        let _ = connected_rx.recv_timeout(STEP_TIMEOUT);
        set_linger_zero(s.as_raw_fd());
        drop(s); // RST
    });
    let client = topo.client.run("ss-epipe", move || {
        let s = tcp_connect(client_ip, server);
        let _ = connected_tx.send(());
        let fd = s.as_raw_fd();
        // Let the RST arrive before the first send, so the outcome does not depend
        // on a race between the server's close and our sends.
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            let revents = poll1(fd, libc::POLLIN, 50);
            if revents & (libc::POLLHUP | libc::POLLERR) != 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "epipe_after_reset: no RST from {server} reached {} within {STEP_TIMEOUT:?} \
                 (poll revents {revents:#x}, {:?})",
                s.local_addr().unwrap(),
                traffic::tcp_info(&s)
            );
        }
        let buf = [0x42u8; 512];
        let deadline = Instant::now() + STEP_TIMEOUT;
        let errno = loop {
            match raw_send(fd, &buf) {
                Err(e) => break e,
                Ok(_) => {
                    assert!(
                        Instant::now() < deadline,
                        "epipe_after_reset: sends to {server} kept succeeding for \
                         {STEP_TIMEOUT:?} after the RST ({:?})",
                        traffic::tcp_info(&s)
                    );
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        };
        assert!(
            errno == libc::EPIPE || errno == libc::ECONNRESET,
            "epipe_after_reset: send after RST failed with {}, expected EPIPE or ECONNRESET",
            errno_name(errno)
        );
        failure(&s.local_addr().unwrap(), server, errno, "tcp", buf.len())
    });
    let f = join(client);
    join(srv);
    f
}

// ---------------------------------------------------------------------------------
// 2. EMSGSIZE on a UDP socket that learned a path MTU
// ---------------------------------------------------------------------------------

/// Datagram payload that makes a 1500-byte IP packet.
fn full_size_payload(v6: bool) -> usize {
    if v6 { 1500 - 40 - 8 } else { 1500 - 20 - 8 }
}

/// The failing datagram's payload: fits 1500, not 1400, for both families.
const EMSGSIZE_BYTES: usize = 1450;

/// Needs `Topology::routed(net, 1400)`. A connected UDP socket with
/// `IP_PMTUDISC_DO` (`IPV6_PMTUDISC_DO`) first sends a datagram that makes a
/// 1500-byte packet; the router cannot forward it and answers with frag-needed /
/// packet-too-big (MTU 1400), which lowers the socket's path MTU (IP_MTU / IPV6_MTU
/// reads 1400) and leaves EMSGSIZE pending on the socket (cleared here with
/// SO_ERROR). Then a send of 1450 bytes fails EMSGSIZE on the size check, before any
/// packet is built: that failure is returned.
pub fn emsgsize_udp(topo: &Topology, v6: bool) -> SendFailure {
    let router = router_client_ip(topo, v6, "emsgsize_udp");
    let (client_ip, server_ip) = ips(topo, v6);
    // A real peer, so nothing that might reach it draws a port unreachable.
    let sink = join(topo.server.run("ss-udp-sink", move || {
        UdpSocket::bind(SocketAddr::new(server_ip, 0))
            .unwrap_or_else(|e| panic!("bind udp {server_ip}: {e}"))
    }));
    let server = sink.local_addr().unwrap();
    forget_path_mtus(topo, v6);
    let counter = TooBigCounter::install(&topo.client, "ss_emsgsize", v6, router);

    let client = topo.client.run("ss-emsgsize", move || {
        let s = UdpSocket::bind(SocketAddr::new(client_ip, 0))
            .unwrap_or_else(|e| panic!("bind udp {client_ip}: {e}"));
        s.connect(server)
            .unwrap_or_else(|e| panic!("connect udp {server}: {e}"));
        let fd = s.as_raw_fd();
        let (level, disc, mtu_opt) = if v6 {
            (libc::IPPROTO_IPV6, libc::IPV6_MTU_DISCOVER, libc::IPV6_MTU)
        } else {
            (libc::IPPROTO_IP, libc::IP_MTU_DISCOVER, libc::IP_MTU)
        };
        let pmtudisc_do = if v6 {
            libc::IPV6_PMTUDISC_DO
        } else {
            libc::IP_PMTUDISC_DO
        };
        setsockopt_int(fd, level, disc, pmtudisc_do);
        let before = getsockopt_int(fd, level, mtu_opt);
        assert_eq!(
            before, 1500,
            "emsgsize_udp: path MTU to {server} is {before} before the probe, expected the \
             link's 1500 (did the client already learn it? use a fresh topology)"
        );

        // Learn the path MTU: a full-size datagram the router cannot forward.
        let probe = vec![0x55u8; full_size_payload(v6)];
        let deadline = Instant::now() + STEP_TIMEOUT;
        let mut probe_results = Vec::new();
        loop {
            // The first probe goes out; once the ICMP arrived, a probe either returns
            // the pending EMSGSIZE or fails the size check against the new MTU.
            probe_results.push(raw_send(fd, &probe));
            std::thread::sleep(Duration::from_millis(50));
            let mtu = getsockopt_int(fd, level, mtu_opt);
            if mtu == SMALL_MTU as i32 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "emsgsize_udp: path MTU to {server} still {mtu} after {STEP_TIMEOUT:?} of \
                 {}-byte probes (results {probe_results:?}); the router should have sent \
                 frag-needed / packet-too-big with MTU {SMALL_MTU}: is this \
                 Topology::routed(net, {SMALL_MTU})?",
                probe.len()
            );
        }
        // The ICMP also left EMSGSIZE pending on the connected socket: clear it, so
        // the failure below is the size check's own.
        let pending = getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_ERROR);
        assert!(
            pending == 0 || pending == libc::EMSGSIZE,
            "emsgsize_udp: unexpected pending socket error {}",
            errno_name(pending)
        );

        let buf = vec![0x66u8; EMSGSIZE_BYTES];
        let errno = match raw_send(fd, &buf) {
            Err(e) => e,
            Ok(n) => panic!(
                "emsgsize_udp: a {EMSGSIZE_BYTES}-byte datagram to {server} was sent ({n}) \
                 although the path MTU is {SMALL_MTU} and IP_PMTUDISC_DO is set"
            ),
        };
        assert_eq!(
            errno,
            libc::EMSGSIZE,
            "emsgsize_udp: {EMSGSIZE_BYTES}-byte send to {server} failed with {}, expected \
             EMSGSIZE",
            errno_name(errno)
        );
        failure(&s.local_addr().unwrap(), server, errno, "udp", buf.len())
    });
    let f = join(client);
    let seen = counter.read_and_remove();
    assert!(
        seen.from_router > 0,
        "emsgsize_udp: the client's PMTU dropped, yet no too-big ICMP from {router} with \
         MTU {SMALL_MTU} was counted in the client namespace: {seen}"
    );
    drop(sink);
    f
}

// ---------------------------------------------------------------------------------
// 3. ETIMEDOUT from TCP_USER_TIMEOUT
// ---------------------------------------------------------------------------------

const USER_TIMEOUT_MS: i32 = 1500;

/// A healthy TCP connection (data sent and acknowledged) with `TCP_USER_TIMEOUT` =
/// 1500 ms on the client; then an nftables rule in the server namespace drops
/// everything from the client. The client sends every 100 ms; once unacknowledged
/// data is 1.5 s old the kernel aborts the connection, and the next send fails
/// ETIMEDOUT (returned). The rule is deleted before returning.
pub fn etimedout_user_timeout(topo: &Topology, v6: bool) -> SendFailure {
    let (client_ip, server_ip) = ips(topo, v6);
    let (server, srv) = tcp_server(&topo.server, server_ip, |s| s);
    let (ready_tx, ready_rx) = mpsc::channel::<SocketAddr>();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let client = topo.client.run("ss-etimedout", move || {
        let mut s = tcp_connect(client_ip, server);
        let fd = s.as_raw_fd();
        setsockopt_int(
            fd,
            libc::IPPROTO_TCP,
            libc::TCP_USER_TIMEOUT,
            USER_TIMEOUT_MS,
        );
        s.write_all(b"hello before the black hole")
            .expect("first send on a healthy connection");
        assert!(
            traffic::wait_acked(&s, STEP_TIMEOUT),
            "etimedout_user_timeout: data to {server} not acknowledged before the black hole"
        );
        ready_tx.send(s.local_addr().unwrap()).unwrap();
        go_rx
            .recv_timeout(STEP_TIMEOUT)
            .expect("etimedout_user_timeout: the black hole was not installed");

        let buf = [0x77u8; 100];
        let start = Instant::now();
        let deadline = start + Duration::from_secs(30);
        let mut sent = 0usize;
        let errno = loop {
            match raw_send(fd, &buf) {
                Ok(n) => sent += n,
                Err(e) => break e,
            }
            assert!(
                Instant::now() < deadline,
                "etimedout_user_timeout: sends to {server} still succeed {:?} into the black \
                 hole ({sent} bytes; TCP_USER_TIMEOUT {USER_TIMEOUT_MS} ms; {:?})",
                start.elapsed(),
                traffic::tcp_info(&s)
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        assert_eq!(
            errno,
            libc::ETIMEDOUT,
            "etimedout_user_timeout: send to {server} failed with {} after {:?}, expected \
             ETIMEDOUT",
            errno_name(errno),
            start.elapsed()
        );
        failure(&s.local_addr().unwrap(), server, errno, "tcp", buf.len())
    });
    let local = match ready_rx.recv_timeout(STEP_TIMEOUT * 2) {
        Ok(local) => local,
        Err(_) => std::panic::resume_unwind(client_panic(client)),
    };
    topo.server.nft(&format!(
        "table inet ss_blackhole {{
            chain in {{
                type filter hook input priority 0; policy accept;
                {} saddr {} counter drop
            }}
        }}",
        if v6 { "ip6" } else { "ip" },
        local.ip()
    ));
    go_tx.send(()).unwrap();
    let f = join(client);
    topo.server
        .exec("nft", &["delete", "table", "inet", "ss_blackhole"]);
    // The server's socket never heard of the timeout: just close it.
    drop(join(srv));
    f
}

// ---------------------------------------------------------------------------------
// 4. ECOMM injected by seccomp
// ---------------------------------------------------------------------------------

/// The sendto errno the seccomp filter returns.
pub const SECCOMP_ERRNO: i32 = libc::ECOMM; // 70 on x86_64

/// A connected TCP socket; then the sending thread (only it: no TSYNC) installs a
/// seccomp filter returning `SECCOMP_RET_ERRNO | ECOMM` for `sendto`, and calls
/// send: it fails with ECOMM (70) without entering the network stack. The thread
/// ends right after, so the filter goes with it.
pub fn ecomm_via_seccomp(topo: &Topology, v6: bool) -> SendFailure {
    if cfg!(not(all(
        target_arch = "x86_64",
        target_pointer_width = "64"
    ))) {
        panic!("ecomm_via_seccomp: the filter is written for x86_64 syscall numbers");
    }
    let (client_ip, server_ip) = ips(topo, v6);
    let (server, srv) = tcp_server(&topo.server, server_ip, |s| s);
    let client = topo.client.run("ss-ecomm", move || {
        let mut s = tcp_connect(client_ip, server);
        s.write_all(b"before seccomp")
            .expect("send before the filter");
        install_sendto_errno_filter(SECCOMP_ERRNO as u32);
        let buf = [0x11u8; 64];
        let errno = match raw_send(s.as_raw_fd(), &buf) {
            Err(e) => e,
            Ok(n) => panic!("ecomm_via_seccomp: send returned {n} despite the seccomp filter"),
        };
        assert_eq!(
            errno,
            SECCOMP_ERRNO,
            "ecomm_via_seccomp: send failed with {}, expected ECOMM from seccomp",
            errno_name(errno)
        );
        failure(&s.local_addr().unwrap(), server, errno, "tcp", buf.len())
    });
    let f = join(client);
    drop(join(srv));
    f
}

/// Thread-only seccomp filter: `sendto` (x86_64) -> errno, everything else allowed.
fn install_sendto_errno_filter(errno: u32) {
    fn stmt(code: u32, k: u32) -> libc::sock_filter {
        libc::sock_filter {
            code: code as u16,
            jt: 0,
            jf: 0,
            k,
        }
    }
    fn jump(code: u32, k: u32, jt: u8, jf: u8) -> libc::sock_filter {
        libc::sock_filter {
            code: code as u16,
            jt,
            jf,
            k,
        }
    }
    // struct seccomp_data { int nr; __u32 arch; __u64 instruction_pointer; __u64 args[6]; }
    const NR: u32 = 0;
    const ARCH: u32 = 4;
    let mut filter = [
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, ARCH),
        jump(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            AUDIT_ARCH_X86_64,
            0,
            3,
        ),
        stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, NR),
        jump(
            libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K,
            libc::SYS_sendto as u32,
            0,
            1,
        ),
        stmt(
            libc::BPF_RET | libc::BPF_K,
            libc::SECCOMP_RET_ERRNO | (errno & libc::SECCOMP_RET_DATA),
        ),
        stmt(libc::BPF_RET | libc::BPF_K, libc::SECCOMP_RET_ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: plain prctl; affects this thread (and threads it would create) only.
    let rc = unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) };
    assert_eq!(
        rc,
        0,
        "PR_SET_NO_NEW_PRIVS: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: prog points at a valid filter for the duration of the call; flags 0
    // (no SECCOMP_FILTER_FLAG_TSYNC) installs it on the calling thread only.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0 as libc::c_uint,
            &prog as *const libc::sock_fprog,
        )
    };
    assert_eq!(
        rc,
        0,
        "seccomp(SECCOMP_SET_MODE_FILTER): {}",
        std::io::Error::last_os_error()
    );
}

// ---------------------------------------------------------------------------------
// 5. Too-big ICMP received by a TCP sender
// ---------------------------------------------------------------------------------

/// Needs `Topology::routed(net, 1400)`. A 256 KiB TCP bulk send from client to
/// server through the router; the router answers the client's 1500-byte packets
/// with frag-needed (IPv4) / packet-too-big (IPv6) announcing MTU 1400, and the
/// client's path MTU drops to 1400 (checked with `ip route get`, IP_MTU/IPV6_MTU and
/// TCP_INFO). An nftables counter in the client namespace checks the ICMP's source
/// is the router's client-side address and its MTU field 1400.
///
/// The server sits on the 1400 link, so by default it advertises MSS 1360 (1340 for
/// IPv6) and the client would never send a packet too big to forward. To make a
/// middle link the bottleneck, as PMTUD exists for, the server's default route gets
/// `advmss` 1460 (1440) for the connection: it advertises what a 1500 link would,
/// and the route is restored before returning.
pub fn too_big_received(topo: &Topology, v6: bool) -> TooBig {
    let router = router_client_ip(topo, v6, "too_big_received");
    let (client_ip, server_ip) = ips(topo, v6);
    let fam = if v6 { "-6" } else { "-4" };
    server_advertises_full_mss(topo, v6);
    forget_path_mtus(topo, v6);
    let counter = TooBigCounter::install(&topo.client, "ss_toobig", v6, router);

    let server = SocketAddr::new(server_ip, free_tcp_port(&topo.server, server_ip));
    let sink = traffic::sink_server(&topo.server, server, 1);
    let client = topo.client.run("ss-toobig", move || {
        let s = bulk_from(client_ip, server, 256 << 10);
        let local = s.local_addr().unwrap();
        let info = traffic::tcp_info(&s);
        let (level, opt) = if v6 {
            (libc::IPPROTO_IPV6, libc::IPV6_MTU)
        } else {
            (libc::IPPROTO_IP, libc::IP_MTU)
        };
        let sock_mtu = getsockopt_int(s.as_raw_fd(), level, opt);
        (s, local, info, sock_mtu)
    });
    let (stream, local, info, sock_mtu) = join(client);
    let route = topo
        .client
        .exec("ip", &[fam, "route", "get", &server_ip.to_string()]);
    drop(stream);
    let got = join(sink);
    change_default_route(&topo.server, router_server(topo, v6), v6, &[]);
    let seen = counter.read_and_remove();

    assert_eq!(
        got,
        256 << 10,
        "too_big_received: the server did not get every byte"
    );
    assert!(
        route.contains(&format!("mtu {SMALL_MTU}")),
        "too_big_received: the client's route to {server_ip} carries no learned mtu \
         {SMALL_MTU}:\n{route}\n({info:?}; {seen})"
    );
    assert_eq!(
        sock_mtu, SMALL_MTU as i32,
        "too_big_received: IP_MTU on {local} is {sock_mtu}, expected {SMALL_MTU}"
    );
    assert_eq!(
        info.pmtu, SMALL_MTU,
        "too_big_received: TCP_INFO of {local}: {info:?}"
    );
    assert!(
        seen.from_router > 0,
        "too_big_received: no too-big ICMP from {router} with MTU {SMALL_MTU} reached the \
         client: {seen}"
    );
    TooBig {
        local,
        peer: server,
        router,
        mtu: SMALL_MTU,
    }
}

pub fn bulk_from(client_ip: IpAddr, to: SocketAddr, bytes: usize) -> TcpStream {
    let mut s = tcp_connect(client_ip, to);
    let chunk = vec![0x5au8; 64 * 1024];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len());
        s.write_all(&chunk[..n])
            .unwrap_or_else(|e| panic!("bulk send to {to}: {e}"));
        left -= n;
    }
    assert!(
        traffic::wait_acked(&s, STEP_TIMEOUT),
        "bulk data to {to} not acknowledged within {STEP_TIMEOUT:?}: {:?}",
        traffic::tcp_info(&s)
    );
    s
}

/// Flushes the client's route cache (`ip route flush cache`), so a path MTU learned
/// by an earlier scenario on this topology is forgotten and learned again.
pub fn forget_path_mtus(topo: &Topology, v6: bool) {
    topo.client
        .ip(&[if v6 { "-6" } else { "-4" }, "route", "flush", "cache"]);
}

/// Waits (bounded) until no IPv6 address in `ns` is tentative (DAD still running).
fn wait_no_tentative_ipv6(ns: &Netns) {
    let deadline = Instant::now() + STEP_TIMEOUT;
    loop {
        let tentative = ns.ip(&["-6", "addr", "show", "tentative"]);
        if !tentative.contains("inet6") {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "IPv6 addresses in {} still tentative after {STEP_TIMEOUT:?}:\n{tentative}",
            ns.name
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `ip` of the server side of the family, and a free port there.
pub fn server_addr(topo: &Topology, v6: bool) -> SocketAddr {
    let (_, server_ip) = ips(topo, v6);
    SocketAddr::new(server_ip, free_tcp_port(&topo.server, server_ip))
}

/// A dual-stack TCP listener on `[::]:port` (IPV6_V6ONLY off): it accepts IPv4
/// clients too, as `::ffff:a.b.c.d`. Call from a thread inside the namespace.
pub fn dual_stack_listener(port: u16) -> TcpListener {
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: we own the fresh fd.
    let l: TcpListener = unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) };
    setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 0);
    setsockopt_int(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, 1);
    let (sa, len) = sockaddr(SocketAddr::new(
        IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        port,
    ));
    // SAFETY: sa is a valid sockaddr of len bytes.
    let rc = unsafe { libc::bind(fd, (&sa as *const libc::sockaddr_storage).cast(), len) };
    assert_eq!(
        rc,
        0,
        "bind [::]:{port}: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: listen on our fd.
    let rc = unsafe { libc::listen(fd, 16) };
    assert_eq!(rc, 0, "listen: {}", std::io::Error::last_os_error());
    l
}

/// Picks a free port on `ip` inside `ns` (bind to 0, read, close): the sink server
/// of `traffic` wants an address up front.
pub fn free_tcp_port(ns: &Netns, ip: IpAddr) -> u16 {
    join(ns.run("ss-port", move || {
        TcpListener::bind(SocketAddr::new(ip, 0))
            .unwrap_or_else(|e| panic!("bind {ip}: {e}"))
            .local_addr()
            .unwrap()
            .port()
    }))
}

// ---------------------------------------------------------------------------------
// Counting too-big ICMPs with nftables
// ---------------------------------------------------------------------------------

/// Too-big ICMPs an nftables table in the client namespace counted.
struct TooBigSeen {
    /// From the router's client-side address, announcing MTU 1400.
    from_router: u64,
    /// Any too-big ICMP at all.
    any: u64,
    listing: String,
}

struct TooBigCounter<'a> {
    ns: &'a Netns,
    table: &'static str,
}

impl std::fmt::Display for TooBigSeen {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} from the router with the expected MTU, {} too-big ICMPs in all; \
             counters:\n{}",
            self.from_router, self.any, self.listing
        )
    }
}

impl<'a> TooBigCounter<'a> {
    fn install(ns: &'a Netns, table: &'static str, v6: bool, router: IpAddr) -> Self {
        let (specific, any) = if v6 {
            (
                format!("ip6 saddr {router} icmpv6 type packet-too-big icmpv6 mtu {SMALL_MTU}"),
                "icmpv6 type packet-too-big".to_string(),
            )
        } else {
            (
                format!(
                    "ip saddr {router} icmp type destination-unreachable icmp code 4 \
                     icmp mtu {SMALL_MTU}"
                ),
                "icmp type destination-unreachable icmp code 4".to_string(),
            )
        };
        ns.nft(&format!(
            "table inet {table} {{
                chain in {{
                    type filter hook input priority 0; policy accept;
                    {specific} counter
                    {any} counter
                }}
            }}"
        ));
        TooBigCounter { ns, table }
    }

    fn read_and_remove(self) -> TooBigSeen {
        let listing = self.ns.exec("nft", &["list", "table", "inet", self.table]);
        self.ns
            .exec("nft", &["delete", "table", "inet", self.table]);
        let counts = netns::nft_counters_in(&listing);
        assert_eq!(counts.len(), 2, "expected two counters:\n{listing}");
        TooBigSeen {
            from_router: counts[0],
            any: counts[1],
            listing,
        }
    }
}

// ---------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------

/// Client and server addresses of the family, once the path can carry traffic.
/// From the server's namespace, a forged "fragmentation needed, MTU 576" quoting a
/// connection client:40404 -> server:9 that does not exist (IPv4): the agent must
/// call it `spoofed_ptb` and use it as evidence for nothing.
pub fn forge_too_big(topo: &Topology) {
    assert_eq!(forge_too_big_flood(topo, 1, Duration::from_secs(5)), 1);
}

/// [`forge_too_big`] `count` times, as fast as one raw socket sends (at most for
/// `within`); returns how many went out. A too-big flood: anyone on the network can
/// send these.
pub fn forge_too_big_flood(topo: &Topology, count: u64, within: Duration) -> u64 {
    let (client_ip, server_ip) = ips(topo, false);
    let (IpAddr::V4(c4), IpAddr::V4(s4)) = (client_ip, server_ip) else {
        unreachable!()
    };
    topo.server
        .run("ss-forger", move || {
            let mut icmp = vec![3u8, 4, 0, 0, 0, 0, 0x02, 0x40];
            let mut ip = vec![0x45, 0, 0, 40, 0, 0, 0x40, 0, 64, 6, 0, 0];
            ip.extend_from_slice(&c4.octets());
            ip.extend_from_slice(&s4.octets());
            icmp.extend_from_slice(&ip);
            icmp.extend_from_slice(&[0x9d, 0xd4, 0, 9, 0x12, 0x34, 0x56, 0x78]);
            let sum = checksum(&icmp);
            icmp[2..4].copy_from_slice(&sum.to_be_bytes());
            let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_RAW, libc::IPPROTO_ICMP) };
            assert!(fd >= 0, "raw socket: {}", std::io::Error::last_os_error());
            let addr = libc::sockaddr_in {
                sin_family: libc::AF_INET as u16,
                sin_port: 0,
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(c4.octets()),
                },
                sin_zero: [0; 8],
            };
            let deadline = Instant::now() + within;
            let mut sent = 0;
            while sent < count && Instant::now() < deadline {
                let r = unsafe {
                    libc::sendto(
                        fd,
                        icmp.as_ptr().cast(),
                        icmp.len(),
                        0,
                        (&addr as *const libc::sockaddr_in).cast(),
                        size_of::<libc::sockaddr_in>() as u32,
                    )
                };
                match r {
                    n if n as usize == icmp.len() => sent += 1,
                    // The device queue is full: the flood is at its fastest.
                    _ if std::io::Error::last_os_error().raw_os_error() == Some(libc::ENOBUFS) => {}
                    _ => panic!("sendto: {}", std::io::Error::last_os_error()),
                }
            }
            unsafe { libc::close(fd) };
            sent
        })
        .join()
        .unwrap()
}

/// One's complement checksum (ICMP).
fn checksum(data: &[u8]) -> u16 {
    let mut sum = 0u32;
    for c in data.chunks(2) {
        sum += u16::from_be_bytes([c[0], *c.get(1).unwrap_or(&0)]) as u32;
    }
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

pub fn ips(topo: &Topology, v6: bool) -> (IpAddr, IpAddr) {
    if v6 && let Some(router) = &topo.router {
        // A fresh router cannot resolve the server's address until the link-local
        // address of its server-side link has passed duplicate address detection
        // (~1.5 s after Topology::routed): a neighbour solicitation needs a
        // non-tentative source. Without this wait a first SYN is lost and
        // retransmitted, a retransmit the scenario did not mean to cause.
        for ns in [router, &topo.client, &topo.server] {
            wait_no_tentative_ipv6(ns);
        }
    }
    let (c, s) = if v6 {
        (&topo.addrs.client6, &topo.addrs.server6)
    } else {
        (&topo.addrs.client4, &topo.addrs.server4)
    };
    (c.parse().unwrap(), s.parse().unwrap())
}

fn router_client_ip(topo: &Topology, v6: bool, what: &str) -> IpAddr {
    assert!(
        topo.router.is_some(),
        "{what} needs a router between client and server: Topology::routed(net, {SMALL_MTU})"
    );
    if v6 {
        topo.addrs.router_client6.parse().unwrap()
    } else {
        topo.addrs.router_client4.parse().unwrap()
    }
}

/// Joins a thread, re-raising its panic (with its own message) if it panicked.
fn join<T>(h: JoinHandle<T>) -> T {
    h.join().unwrap_or_else(|e| std::panic::resume_unwind(e))
}

/// The panic payload of a client thread that failed before it reported ready.
fn client_panic<T>(h: JoinHandle<T>) -> Box<dyn std::any::Any + Send> {
    let deadline = Instant::now() + STEP_TIMEOUT;
    while !h.is_finished() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    if !h.is_finished() {
        return Box::new("client thread neither got ready nor failed in time".to_string());
    }
    match h.join() {
        Err(e) => e,
        Ok(_) => Box::new("client thread ended without reporting ready".to_string()),
    }
}

/// A TCP listener on `ip`, port 0, in `ns`: accepts one connection (within
/// `STEP_TIMEOUT`) and hands it to `then`, whose result the handle returns.
fn tcp_server<R: Send + 'static>(
    ns: &Netns,
    ip: IpAddr,
    then: impl FnOnce(TcpStream) -> R + Send + 'static,
) -> (SocketAddr, JoinHandle<R>) {
    let (tx, rx) = mpsc::channel();
    let h = ns.run("ss-server", move || {
        let l =
            TcpListener::bind(SocketAddr::new(ip, 0)).unwrap_or_else(|e| panic!("bind {ip}: {e}"));
        let addr = l.local_addr().unwrap();
        tx.send(addr).unwrap();
        l.set_nonblocking(true).unwrap();
        let deadline = Instant::now() + STEP_TIMEOUT;
        let s = loop {
            match l.accept() {
                Ok((s, _)) => break s,
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    assert!(
                        Instant::now() < deadline,
                        "server {addr}: no connection within {STEP_TIMEOUT:?}"
                    );
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(e) => panic!("accept on {addr}: {e}"),
            }
        };
        s.set_nonblocking(false).unwrap();
        then(s)
    });
    match rx.recv_timeout(STEP_TIMEOUT) {
        Ok(addr) => (addr, h),
        Err(_) => std::panic::resume_unwind(client_panic(h)),
    }
}

/// Connects from `local_ip` (so the 4-tuple is the one the caller expects).
pub fn tcp_connect(local_ip: IpAddr, to: SocketAddr) -> TcpStream {
    let domain = if to.is_ipv6() {
        libc::AF_INET6
    } else {
        libc::AF_INET
    };
    // SAFETY: plain socket(2).
    let fd = unsafe { libc::socket(domain, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0) };
    assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
    // SAFETY: we own the fresh fd.
    let s: TcpStream = unsafe { std::os::fd::FromRawFd::from_raw_fd(fd) };
    if to.is_ipv6() {
        // Dual stack: a v4-mapped peer (`::ffff:a.b.c.d`) needs IPV6_V6ONLY off
        // (the default unless net.ipv6.bindv6only says otherwise).
        setsockopt_int(fd, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, 0);
    }
    let (sa, len) = sockaddr(SocketAddr::new(local_ip, 0));
    // SAFETY: sa is a valid sockaddr of len bytes.
    let rc = unsafe { libc::bind(fd, (&sa as *const libc::sockaddr_storage).cast(), len) };
    assert_eq!(
        rc,
        0,
        "bind {local_ip}: {}",
        std::io::Error::last_os_error()
    );
    // Bounded connect: non-blocking, then poll for writability.
    // SAFETY: fcntl on our fd.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
    }
    let (sa, len) = sockaddr(to);
    // SAFETY: as above.
    let rc = unsafe { libc::connect(fd, (&sa as *const libc::sockaddr_storage).cast(), len) };
    if rc != 0 {
        let e = std::io::Error::last_os_error();
        assert_eq!(
            e.raw_os_error(),
            Some(libc::EINPROGRESS),
            "connect {to}: {e}"
        );
        let revents = poll1(fd, libc::POLLOUT, STEP_TIMEOUT.as_millis() as i32);
        assert!(
            revents != 0,
            "connect {to}: no answer within {STEP_TIMEOUT:?}"
        );
        let err = getsockopt_int(fd, libc::SOL_SOCKET, libc::SO_ERROR);
        assert_eq!(
            err,
            0,
            "connect {to}: {}",
            std::io::Error::from_raw_os_error(err)
        );
    }
    s.set_nonblocking(false).unwrap();
    // No send in a scenario may block forever.
    s.set_write_timeout(Some(STEP_TIMEOUT)).unwrap();
    s
}

fn sockaddr(a: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: all-zero is a valid sockaddr_storage.
    let mut ss: libc::sockaddr_storage = unsafe { std::mem::zeroed() };
    let len = match a {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than sockaddr_in and suitably aligned.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin) };
            std::mem::size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: as above.
            unsafe { std::ptr::write((&mut ss as *mut libc::sockaddr_storage).cast(), sin6) };
            std::mem::size_of::<libc::sockaddr_in6>()
        }
    };
    (ss, len as libc::socklen_t)
}

/// `send(fd, buf, len, MSG_NOSIGNAL)`: the sendto syscall, no SIGPIPE.
fn raw_send(fd: RawFd, buf: &[u8]) -> Result<usize, i32> {
    // SAFETY: buf is valid for buf.len() bytes.
    let n = unsafe { libc::send(fd, buf.as_ptr().cast(), buf.len(), libc::MSG_NOSIGNAL) };
    if n < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(n as usize)
    }
}

fn poll1(fd: RawFd, events: libc::c_short, timeout_ms: i32) -> libc::c_short {
    let mut p = libc::pollfd {
        fd,
        events,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let rc = unsafe { libc::poll(&mut p, 1, timeout_ms) };
    assert!(rc >= 0, "poll: {}", std::io::Error::last_os_error());
    p.revents
}

pub fn setsockopt_int(fd: RawFd, level: i32, opt: i32, val: i32) {
    // SAFETY: an int option.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            opt,
            (&val as *const i32).cast(),
            std::mem::size_of::<i32>() as libc::socklen_t,
        )
    };
    assert_eq!(
        rc,
        0,
        "setsockopt({level}, {opt}, {val}): {}",
        std::io::Error::last_os_error()
    );
}

pub fn getsockopt_int(fd: RawFd, level: i32, opt: i32) -> i32 {
    let mut val: i32 = 0;
    let mut len = std::mem::size_of::<i32>() as libc::socklen_t;
    // SAFETY: an int option.
    let rc = unsafe { libc::getsockopt(fd, level, opt, (&mut val as *mut i32).cast(), &mut len) };
    assert_eq!(
        rc,
        0,
        "getsockopt({level}, {opt}): {}",
        std::io::Error::last_os_error()
    );
    val
}

/// `SO_LINGER {on, 0}`: closing the socket aborts the connection with a RST.
pub fn set_linger_zero(fd: RawFd) {
    let l = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a struct linger option.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&l as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        )
    };
    assert_eq!(rc, 0, "SO_LINGER: {}", std::io::Error::last_os_error());
}

/// Identity of the calling thread plus the failed call.
fn failure(
    local: &SocketAddr,
    peer: SocketAddr,
    errno: i32,
    protocol: &'static str,
    bytes: usize,
) -> SendFailure {
    // SAFETY: trivial syscalls.
    let (pid, tid) = unsafe { (libc::getpid() as u32, libc::gettid() as u32) };
    let comm = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
        .unwrap_or_else(|e| panic!("read comm of thread {tid}: {e}"))
        .trim()
        .to_string();
    SendFailure {
        errno,
        local: *local,
        peer,
        pid,
        tid,
        comm,
        protocol,
        bytes,
        syscall: "sendto",
    }
}

/// `EPIPE (32, Broken pipe)`
pub fn errno_name(errno: i32) -> String {
    let name = match errno {
        libc::EPIPE => "EPIPE",
        libc::ECONNRESET => "ECONNRESET",
        libc::EMSGSIZE => "EMSGSIZE",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ECOMM => "ECOMM",
        libc::EAGAIN => "EAGAIN",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        _ => "errno",
    };
    format!(
        "{name} ({errno}, {})",
        std::io::Error::from_raw_os_error(errno)
    )
}

/// Makes the server advertise a 1500-byte-path MSS although its own link is the
/// 1400 one in `Topology::routed(_, 1400)`: as if the small MTU sat in the middle of
/// the path, so the client sends packets the router cannot forward.
pub fn server_advertises_full_mss(topo: &Topology, v6: bool) {
    advertise_full_mss(&topo.server, router_server(topo, v6), v6);
}

/// The same for the client, whose default route goes via `topo.router`'s client
/// side (`Topology::routed_mtus(_, 1400, _)`: the server's replies are then the
/// packets too big to forward).
pub fn client_advertises_full_mss(topo: &Topology, v6: bool) {
    let via = if v6 {
        &topo.addrs.router_client6
    } else {
        &topo.addrs.router_client4
    };
    advertise_full_mss(&topo.client, via, v6);
}

/// The router's address on the server's side: the server's default gateway.
fn router_server(topo: &Topology, v6: bool) -> &str {
    if v6 {
        &topo.addrs.router_server6
    } else {
        &topo.addrs.router_server4
    }
}

/// Gives `ns`'s default route (via `via`, on eth0) the `advmss` of a 1500-byte path.
pub fn advertise_full_mss(ns: &Netns, via: &str, v6: bool) {
    let advmss = if v6 { "1440" } else { "1460" };
    change_default_route(ns, via, v6, &["advmss", advmss]);
}

/// `ip route change default via <via> dev eth0 <options>` in `ns` (no options: the
/// plain route back).
pub fn change_default_route(ns: &Netns, via: &str, v6: bool, options: &[&str]) {
    let fam = if v6 { "-6" } else { "-4" };
    let mut args = vec![fam, "route", "change", "default", "via", via, "dev", "eth0"];
    args.extend_from_slice(options);
    ns.ip(&args);
}

/// An nftables ruleset for the receiver: every seventh data packet to `port` dropped
/// (deterministic loss, so the sender's kernel retransmits).
pub fn drop_every_seventh_data_packet(port: u16) -> String {
    // On the receiver's input hook: the packet left the sender, so the sender's
    // kernel must retransmit it (a drop on the sender's own output hook is reported
    // back to TCP as a failed transmit and re-sent as new data, not a retransmit).
    // Only packets carrying payload; SYN/ACK/FIN pass, so the connection itself is
    // never in doubt. `numgen inc` makes the pattern deterministic.
    format!(
        "table inet loss {{
            chain in {{
                type filter hook input priority 0; policy accept;
                tcp dport {port} meta length > 200 numgen inc mod 7 == 0 counter drop
            }}
        }}"
    )
}

/// A UDP server on port 500 of `topo`'s server (IPv4) with a 4 KiB receive buffer
/// that reads one datagram per 50 ms, and a burst of `count` 1200-byte datagrams
/// from the client: the server's queue overflows (`udp_queue_drop`,
/// `udp_queue_overflow`). Returns the datagrams the server read.
pub fn udp_queue_overflow(topo: &Topology, count: u32) -> u64 {
    let (client_ip, server_ip) = ips(topo, false);
    let server = SocketAddr::new(server_ip, 500);
    let (tx, rx) = std::sync::mpsc::channel();
    let (stop_tx, stop_rx) = std::sync::mpsc::channel::<()>();
    let reader = topo.server.run("ss-udpq-srv", move || {
        let s = UdpSocket::bind(server).unwrap_or_else(|e| panic!("bind {server}: {e}"));
        setsockopt_int(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_RCVBUF, 4096);
        s.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        tx.send(()).unwrap();
        let mut buf = [0u8; 2048];
        let mut read = 0;
        while stop_rx.try_recv().is_err() {
            if s.recv(&mut buf).is_ok() {
                read += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
        }
        read
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("UDP server did not start");
    topo.client
        .run("ss-udpq-cli", move || {
            let s = UdpSocket::bind(SocketAddr::new(client_ip, 0)).unwrap();
            for _ in 0..count {
                let _ = s.send_to(&[0x5a; 1200], server);
            }
        })
        .join()
        .unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    stop_tx.send(()).unwrap();
    reader.join().unwrap()
}
