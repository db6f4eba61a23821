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
    let (tx, rx) = std::sync::mpsc::channel();
    let h = ns.run("ss-sink", move || {
        let l = TcpListener::bind(addr).unwrap_or_else(|e| panic!("bind {addr}: {e}"));
        tx.send(()).unwrap();
        let mut total = 0u64;
        for _ in 0..conns {
            let (mut s, _) = l.accept().expect("accept");
            let mut buf = vec![0u8; 1 << 16];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
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
