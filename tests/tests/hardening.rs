//! The agent runs as root among untrusted files and networks: it never writes
//! through a link another user planted, creates its files private, keeps kernel
//! addresses out of recordings, and a too-big flood or a hostile scraper cannot
//! make it miss what matters.

use std::{
    io::Write,
    net::{SocketAddr, TcpStream},
    os::unix::fs::PermissionsExt,
    path::{Path, PathBuf},
    process::Command,
    time::Duration,
};

use sendsight_tests::{Agent, Topology, agent::binary, ledger, require_root, scenarios, traffic};
use serde_json::Value;

fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("sendsight-hard-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// `sendsight run --duration 1s <args>`: exit code and stderr.
fn run_briefly(args: &[&str]) -> (i32, String) {
    let out = Command::new(binary())
        .args(["run", "--duration", "1s", "--format", "json"])
        .args(args)
        .output()
        .expect("run sendsight");
    sendsight_tests::validate::parse_lines(
        &format!("run {args:?}"),
        &String::from_utf8_lossy(&out.stdout),
    );
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn links_at_the_record_and_output_paths_are_refused() {
    require_root();
    let d = dir("links");
    let target = d.join("precious");
    std::fs::write(&target, b"precious\n").unwrap();
    let link = d.join("planted");
    std::os::unix::fs::symlink(&target, &link).unwrap();

    let (code, err) = run_briefly(&["--record", link.to_str().unwrap()]);
    println!("--record at a link: exit {code}: {err}");
    assert_ne!(code, 0);
    assert!(
        err.contains("planted") && err.contains("symbolic link"),
        "{err}"
    );

    let (code, err) = run_briefly(&["--output", &format!("file:{}", link.display())]);
    println!("--output at a link: exit {code}: {err}");
    assert_ne!(code, 0);
    assert!(
        err.contains("planted") && err.contains("symbolic link"),
        "{err}"
    );

    // An existing file is not a recording to overwrite either.
    let (code, err) = run_briefly(&["--record", target.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(err.contains("already exists"), "{err}");

    assert_eq!(
        std::fs::read(&target).unwrap(),
        b"precious\n",
        "target untouched"
    );

    // A hard link to someone's file is not a file of one's own either.
    let hard = d.join("hard");
    std::fs::hard_link(&target, &hard).unwrap();
    let (code, err) = run_briefly(&["--output", &format!("file:{}", hard.display())]);
    assert_ne!(code, 0);
    assert!(err.contains("hard links"), "{err}");
    assert_eq!(std::fs::read(&target).unwrap(), b"precious\n");

    // A character device is written as it is: /dev/null keeps its mode (and is
    // never rotated away).
    let (code, err) = run_briefly(&["--output", "file:/dev/null"]);
    assert_eq!(code, 0, "{err}");
    let mode = std::fs::metadata("/dev/null").unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o666);
    std::fs::remove_dir_all(&d).unwrap();
}

/// The `struct sock` field of every frame's header, and every other aligned word.
fn frames(path: &Path) -> Vec<Vec<u8>> {
    let bytes = std::fs::read(path).unwrap();
    assert_eq!(&bytes[..5], b"SSREC");
    let hlen = u32::from_le_bytes(bytes[8..12].try_into().unwrap()) as usize;
    let mut i = 12 + hlen;
    let mut out = Vec::new();
    while i + 4 <= bytes.len() {
        let n = u32::from_le_bytes(bytes[i..i + 4].try_into().unwrap()) as usize;
        out.push(bytes[i + 4..i + 4 + n].to_vec());
        i += 4 + n;
    }
    out
}

#[test]
fn new_files_are_private_and_recordings_hold_no_kernel_address() {
    require_root();
    let topo = Topology::direct(133);
    let d = dir("files");
    let record = d.join("run.ssrec");
    let lines = d.join("lines.jsonl");
    let mut agent = Agent::start_expecting(
        &[
            "--record",
            record.to_str().unwrap(),
            "--output",
            &format!("file:{}", lines.display()),
        ],
        false,
    );
    // Connections and a reset: socket records, each naming its socket.
    let _ = scenarios::epipe_after_reset(&topo, false);
    std::thread::sleep(Duration::from_millis(300));
    let out = agent.stop();
    assert!(out.status.success(), "{}", out.stderr);
    for p in [&record, &lines] {
        let mode = std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{}", p.display());
    }
    let frames = frames(&record);
    let mut sockets = std::collections::BTreeSet::new();
    for f in &frames {
        let sk = u64::from_ne_bytes(f[16..24].try_into().unwrap());
        if sk != 0 {
            sockets.insert(sk);
        }
        // Kernel addresses live at the top of the address space (0xffff8...); a
        // record is 8-aligned, so a pointer would sit in an aligned word.
        for w in f.as_chunks::<8>().0 {
            let v = u64::from_ne_bytes(*w);
            assert!(
                v < 0xffff_8000_0000_0000,
                "a kernel address ({v:#x}) in a recorded record: {f:?}"
            );
        }
    }
    println!(
        "{} frames, {} socket pseudonyms",
        frames.len(),
        sockets.len()
    );
    assert!(sockets.len() >= 2, "socket records were recorded");
    assert!(sockets.iter().all(|s| *s < 1 << 48));
    std::fs::remove_dir_all(&d).unwrap();
}

/// Connections that open and then say almost nothing: a slowloris scraper.
fn idle_scrapers(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    (0..n)
        .filter_map(|_| {
            let mut s = TcpStream::connect(addr).ok()?;
            let _ = s.write_all(b"GET /metrics HTTP/1.1\r\n");
            Some(s)
        })
        .collect()
}

#[test]
fn a_too_big_flood_and_a_hostile_scraper_leave_retransmits_exact() {
    require_root();
    let topo = Topology::direct(134);
    let port = 5001;
    let server: SocketAddr = format!("{}:{port}", topo.addrs.server4).parse().unwrap();
    topo.server
        .nft(&scenarios::drop_every_seventh_data_packet(port));
    let metrics = ledger::free_port();
    let mut agent = Agent::start(&["--metrics", &metrics.to_string()]);
    let scrapers = idle_scrapers(metrics, 64);

    let sink = traffic::sink_server(&topo.server, server, 1);
    let client = topo.client.run("ss-bulk", move || {
        let s = traffic::send_bulk(server, 8 << 20, Duration::from_secs(60));
        let info = traffic::tcp_info(&s);
        let local = s.local_addr().unwrap();
        (s, info, local)
    });
    // The flood runs while the lossy flow transfers.
    let flooded = scenarios::forge_too_big_flood(&topo, u64::MAX, Duration::from_secs(4));
    let (stream, info, local) = client.join().expect("client thread");
    std::thread::sleep(Duration::from_millis(300));

    // The scraper slots free up after the per-connection deadline.
    std::thread::sleep(Duration::from_secs(5));
    let text = ledger::http_get(metrics, "/metrics");
    let refused: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("sendsight_metrics_connections_refused_total "))
        .expect("refused counter")
        .trim()
        .parse()
        .unwrap();
    drop(scrapers);
    let out = agent.stop();
    drop(stream);
    let _ = sink.join();
    assert!(out.status.success(), "{}", out.stderr);

    let ours: Vec<&Value> = out
        .of_type("retransmit")
        .into_iter()
        .filter(|l| l["local"]["port"] == local.port())
        .filter(|l| l["err"] != -16 && l["err"] != -12)
        .collect();
    let segs: u64 = ours.iter().map(|l| l["segs"].as_u64().unwrap()).sum();
    let summary = out.summary();
    let bounded = summary["lost"]["icmp_too_big_bounded"]
        .as_u64()
        .unwrap_or(0);
    let delivered = summary["events"]["icmp_too_big"].as_u64().unwrap_or(0);
    println!(
        "flood: {flooded} too-big sent, {delivered} delivered, {bounded} bounded; \
         kernel total_retrans={} agent segs={segs}; scrapers refused {refused}",
        info.total_retrans
    );
    assert!(info.total_retrans > 0, "the nft rule caused no retransmit");
    assert_eq!(
        segs, info.total_retrans as u64,
        "retransmits exact under the flood"
    );
    assert_eq!(summary["lost"]["retransmit"], 0, "{summary}");
    assert!(bounded > 0, "the flood was bounded and counted: {summary}");
    // The bound, not a ratio: how much of the flood it stops depends on how fast
    // the forger sends (~140k/s natively, a few thousand per second under emulation).
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get()) as u64;
    let budget = sendsight::probes::Options::default().too_big_per_cpu_s as u64;
    let flood_s = 4 + 1;
    assert!(
        delivered <= budget * cpus * flood_s,
        "{delivered} too-big records delivered: over the bound of {budget}/s per CPU \
         ({cpus} CPUs, {flood_s} s)"
    );
    assert!(refused > 0, "connections beyond the limit were refused");
}
