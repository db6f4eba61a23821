//! Real traffic between namespaces: a sink server and a bulk sender, with the
//! kernel's own view of the socket (TCP_INFO) for comparison with the agent's.

use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    os::fd::AsRawFd,
    time::{Duration, Instant},
};

use crate::Netns;

/// Accepts connections and reads everything sent, until the listener's namespace
/// goes away or `conns` connections were fully read.
pub fn sink_server(ns: &Netns, addr: SocketAddr, conns: usize) -> std::thread::JoinHandle<u64> {
    sink_server_idle(ns, addr, conns, None)
}

/// As [`sink_server`]; with `idle`, a connection that delivers nothing for that long
/// is aborted with a RST (so the thread ends even when its peer went away, and
/// leaves no orphan socket retransmitting a FIN).
pub fn sink_server_idle(
    ns: &Netns,
    addr: SocketAddr,
    conns: usize,
    idle: Option<Duration>,
) -> std::thread::JoinHandle<u64> {
    let (tx, rx) = std::sync::mpsc::channel();
    let h = ns.run("ss-sink", move || {
        let l = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        tx.send(()).unwrap();
        let mut total = 0u64;
        for _ in 0..conns {
            let (mut s, _) = l.accept().expect("accept");
            s.set_read_timeout(idle).unwrap();
            let mut buf = vec![0u8; 1 << 16];
            loop {
                match s.read(&mut buf) {
                    Ok(0) => break,
                    Err(e) => {
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) {
                            // Idle: the peer is gone. Abort (one RST) rather than
                            // close (a FIN retransmitted into the void for minutes,
                            // from a namespace that outlives the test, under the
                            // addresses a later run of the test uses again).
                            crate::scenarios::set_linger_zero(s.as_raw_fd());
                        }
                        break;
                    }
                    Ok(n) => total += n as u64,
                }
            }
        }
        total
    });
    rx.recv_timeout(Duration::from_secs(10))
        .expect("sink server did not start");
    h
}

/// The kernel's own counters for one TCP socket.
#[derive(Clone, Copy, Debug)]
pub struct TcpInfo {
    pub total_retrans: u32,
    pub unacked: u32,
    pub snd_mss: u32,
    pub pmtu: u32,
    pub state: u8,
    /// Consecutive RTO retransmissions of the head segment (`tcpi_retransmits`).
    pub retransmits: u8,
    pub backoff: u8,
}

pub fn tcp_info(s: &TcpStream) -> TcpInfo {
    let mut info: libc::tcp_info = unsafe { std::mem::zeroed() };
    let mut len = std::mem::size_of::<libc::tcp_info>() as libc::socklen_t;
    // SAFETY: valid fd, buffer and length.
    let rc = unsafe {
        libc::getsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_INFO,
            (&mut info as *mut libc::tcp_info).cast(),
            &mut len,
        )
    };
    assert_eq!(rc, 0, "TCP_INFO: {}", std::io::Error::last_os_error());
    TcpInfo {
        total_retrans: info.tcpi_total_retrans,
        unacked: info.tcpi_unacked,
        snd_mss: info.tcpi_snd_mss,
        pmtu: info.tcpi_pmtu,
        state: info.tcpi_state,
        retransmits: info.tcpi_retransmits,
        backoff: info.tcpi_backoff,
    }
}

/// Waits until every byte sent on `s` is acknowledged (or `timeout`).
pub fn wait_acked(s: &TcpStream, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        let mut outq: libc::c_int = 0;
        // SAFETY: SIOCOUTQ writes an int.
        unsafe { libc::ioctl(s.as_raw_fd(), libc::TIOCOUTQ, &mut outq) };
        if outq == 0 && tcp_info(s).unacked == 0 {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// Connects and sends `bytes`; returns the stream (still open) once all is acked.
pub fn send_bulk(to: SocketAddr, bytes: usize, timeout: Duration) -> TcpStream {
    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect {to}: {e}"));
    let chunk = vec![0x5au8; 64 * 1024];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(chunk.len());
        s.write_all(&chunk[..n]).expect("send");
        left -= n;
    }
    assert!(
        wait_acked(&s, timeout),
        "data to {to} not acknowledged within {timeout:?}: {:?}",
        tcp_info(&s)
    );
    s
}

/// As [`send_bulk`], but goes on sending until `at_least` has passed too (a lossy
/// link is a lasting condition; a verdict about it waits for the peer's reports).
pub fn send_sustained(
    to: SocketAddr,
    bytes: usize,
    at_least: Duration,
    timeout: Duration,
) -> TcpStream {
    let start = Instant::now();
    let mut s = TcpStream::connect_timeout(&to, Duration::from_secs(5))
        .unwrap_or_else(|e| panic!("connect {to}: {e}"));
    let chunk = vec![0x5au8; 64 * 1024];
    let mut sent = 0;
    while sent < bytes || start.elapsed() < at_least {
        s.write_all(&chunk).expect("send");
        sent += chunk.len();
    }
    assert!(
        wait_acked(&s, timeout),
        "data to {to} not acknowledged within {timeout:?}: {:?}",
        tcp_info(&s)
    );
    s
}

/// What [`send_then_abort`] saw.
#[derive(Clone, Copy, Debug)]
pub struct Stuck {
    pub local: SocketAddr,
    pub peer: SocketAddr,
    /// Unix-epoch ns just before the write.
    pub started_ns: i128,
    /// TCP_INFO at the end of the hold, just before the abort.
    pub info: TcpInfo,
    /// Whether everything written was acknowledged within the hold.
    pub acked: bool,
}

/// Writes `bytes` on `s` without blocking forever (the path may be a black hole),
/// waits for them to be acknowledged (writes and wait: `hold` in all), then aborts the connection with a
/// RST (`SO_LINGER {on, 0}`): it is not left to time out on its own.
pub fn send_then_abort(s: TcpStream, bytes: usize, hold: Duration) -> Stuck {
    let local = s.local_addr().unwrap();
    let peer = s.peer_addr().unwrap();
    // A small message first, as applications do (TLS hello, HTTP request or response
    // header): it fits any MTU and is delivered, which is what tells a black hole
    // (only big packets vanish) from a path that died right after the handshake.
    (&s).write_all(&[0x17u8; 100]).expect("small message");
    assert!(
        wait_acked(&s, Duration::from_secs(5)),
        "the small message from {local} to {peer} was not acknowledged"
    );
    let started_ns = crate::unix_ns();
    let deadline = Instant::now() + hold;
    let buf = vec![0x42u8; bytes];
    let mut written = 0;
    // The whole hold bounds the writes and the wait for acknowledgements together.
    while written < bytes {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            break;
        }
        s.set_write_timeout(Some(left)).unwrap();
        match (&s).write(&buf[written..]) {
            Ok(n) => written += n,
            Err(_) => break,
        }
    }
    let mut acked = false;
    while Instant::now() < deadline {
        if tcp_info(&s).unacked == 0 {
            acked = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let info = tcp_info(&s);
    crate::scenarios::set_linger_zero(s.as_raw_fd());
    Stuck {
        local,
        peer,
        started_ns,
        info,
        acked,
    }
}

/// A client connection (thread `ss-sender` in the client namespace) that writes
/// `bytes` to `to`, waits up to `hold`, and aborts: [`send_then_abort`].
pub fn stuck_sender(
    topo: &crate::Topology,
    to: SocketAddr,
    bytes: usize,
    hold: Duration,
) -> std::thread::JoinHandle<Stuck> {
    topo.client.run("ss-sender", move || {
        let s = TcpStream::connect_timeout(&to, Duration::from_secs(5)).expect("connect");
        send_then_abort(s, bytes, hold)
    })
}

/// Every `TcpExt` counter of the calling thread's network namespace that is not
/// zero, for a test's diagnostics.
pub fn tcp_ext_nonzero() -> Vec<(String, u64)> {
    let text = std::fs::read_to_string("/proc/thread-self/net/netstat").unwrap_or_default();
    let mut lines = text.lines();
    let mut out = Vec::new();
    while let (Some(keys), Some(values)) = (lines.next(), lines.next()) {
        if !keys.starts_with("TcpExt:") {
            continue;
        }
        for (k, v) in keys
            .split_whitespace()
            .zip(values.split_whitespace())
            .skip(1)
        {
            let v: u64 = v.parse().unwrap_or(0);
            if v != 0 {
                out.push((k.to_string(), v));
            }
        }
    }
    out
}

/// A `TcpExt` counter of the calling thread's network namespace
/// (`/proc/thread-self/net/netstat`: /proc/self would be the main thread's).
pub fn tcp_ext(name: &str) -> u64 {
    let text = std::fs::read_to_string("/proc/thread-self/net/netstat").unwrap_or_default();
    let mut lines = text.lines();
    while let (Some(keys), Some(values)) = (lines.next(), lines.next()) {
        if !keys.starts_with("TcpExt:") {
            continue;
        }
        let found = keys
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(k, _)| *k == name);
        if let Some((_, v)) = found {
            return v.parse().unwrap_or(0);
        }
    }
    panic!("TcpExt {name} not in /proc/thread-self/net/netstat");
}
