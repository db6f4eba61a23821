//! Where lines go: stdout (default), a file (append, 0600, size-based rotation), or
//! a collector over a unix socket or TCP. Nothing here may block the ring-buffer
//! reader: network sinks are fed through a bounded queue drained by a background
//! task that reconnects on its own, and whatever cannot be queued is counted.

use std::{
    collections::VecDeque,
    fs::{File, OpenOptions},
    io::{self, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::Bytes;
use tokio::{io::AsyncWriteExt, sync::Notify};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("the output was closed by its reader")]
    Closed,
    #[error("writing output: {0}")]
    Io(io::Error),
    #[error("{path}: {error}")]
    Open { path: String, error: io::Error },
}

impl From<io::Error> for SinkError {
    fn from(e: io::Error) -> Self {
        if e.kind() == io::ErrorKind::BrokenPipe {
            SinkError::Closed
        } else {
            SinkError::Io(e)
        }
    }
}

/// What `--output` asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Spec {
    Stdout,
    /// `file:PATH`; rotated at `max_bytes` keeping `keep` old files.
    File {
        path: PathBuf,
        max_bytes: u64,
        keep: u32,
    },
    /// `unix:PATH` (a stream socket, e.g. rsyslog's imuxsock is datagram: use
    /// imptcp/imtcp or a stream unix socket).
    Unix(PathBuf),
    /// `tcp:HOST:PORT`
    Tcp(String),
}

impl std::str::FromStr for Spec {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "-" || s == "stdout" {
            return Ok(Spec::Stdout);
        }
        if let Some(p) = s.strip_prefix("file:") {
            if p.is_empty() {
                return Err("file: needs a path (file:/var/log/sendsight.jsonl)".into());
            }
            return Ok(Spec::File {
                path: p.into(),
                max_bytes: 100 << 20,
                keep: 5,
            });
        }
        if let Some(p) = s.strip_prefix("unix:") {
            if p.is_empty() {
                return Err("unix: needs a socket path".into());
            }
            return Ok(Spec::Unix(p.into()));
        }
        if let Some(a) = s.strip_prefix("tcp:") {
            let ok = a
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
            if !ok {
                return Err(format!("{a:?} is not HOST:PORT (tcp:127.0.0.1:5140)"));
            }
            return Ok(Spec::Tcp(a.to_string()));
        }
        Err(format!(
            "{s:?} is not an output: use stdout, file:PATH, unix:PATH or tcp:HOST:PORT"
        ))
    }
}

/// Lines written and lost, for the summary and the metrics.
#[derive(Debug, Default)]
pub struct Stats {
    pub dropped: AtomicU64,
    pub written: AtomicU64,
}

pub enum Sink {
    Stdout(StdoutSink),
    File(FileSink),
    Net(NetSink),
}

impl Sink {
    /// Opens the sink. Network sinks start their writer task on the current runtime.
    pub fn open(spec: &Spec, queue_bytes: usize) -> Result<Self, SinkError> {
        Ok(match spec {
            Spec::Stdout => Sink::Stdout(StdoutSink::default()),
            Spec::File {
                path,
                max_bytes,
                keep,
            } => Sink::File(FileSink::open(path, *max_bytes, *keep)?),
            Spec::Unix(p) => Sink::Net(NetSink::start(Target::Unix(p.clone()), queue_bytes)),
            Spec::Tcp(a) => Sink::Net(NetSink::start(Target::Tcp(a.clone()), queue_bytes)),
        })
    }

    pub fn push(&mut self, line: &[u8]) -> Result<(), SinkError> {
        match self {
            Sink::Stdout(s) => s.push(line),
            Sink::File(f) => {
                f.push(line);
                Ok(())
            }
            Sink::Net(n) => {
                n.push(line);
                Ok(())
            }
        }
    }

    pub fn flush(&mut self) -> Result<(), SinkError> {
        match self {
            Sink::Stdout(s) => s.flush(),
            Sink::File(f) => {
                f.flush();
                Ok(())
            }
            Sink::Net(n) => {
                n.kick();
                Ok(())
            }
        }
    }

    /// Lines the sink could not deliver (full queue, disk full...).
    pub fn dropped(&self) -> u64 {
        match self {
            Sink::Stdout(s) => s.dropped,
            Sink::File(f) => f.dropped,
            Sink::Net(n) => n.stats.dropped.load(Ordering::Relaxed),
        }
    }

    /// At exit: give a network sink up to `grace` to deliver what is queued.
    pub async fn close(&mut self, grace: Duration) {
        if let Sink::Net(n) = self {
            n.drain(grace).await;
        }
        let _ = self.flush();
    }
}

/// stdout, buffered and flushed per batch so lines arrive in real time without a
/// syscall per line. A reader that goes away (closed pipe) is not an error: the
/// agent stops cleanly. With a text renderer (`--format text`), the JSON lines of
/// each batch are rendered for people as they are written.
pub struct StdoutSink {
    buf: Vec<u8>,
    /// Lines that a failed write took along.
    pub dropped: u64,
    out: io::Stdout,
    text: Option<Box<(super::text::Renderer, Vec<u8>)>>,
}

impl Default for StdoutSink {
    fn default() -> Self {
        Self {
            buf: Vec::with_capacity(64 * 1024),
            dropped: 0,
            out: io::stdout(),
            text: None,
        }
    }
}

impl Sink {
    /// stdout in the text view (`--format text`); other sinks are always JSON.
    pub fn stdout_text(opts: super::text::Options) -> Self {
        Sink::Stdout(StdoutSink {
            text: Some(Box::new((
                super::text::Renderer::new(opts),
                Vec::with_capacity(64 * 1024),
            ))),
            ..StdoutSink::default()
        })
    }
}

impl StdoutSink {
    pub fn push(&mut self, line: &[u8]) -> Result<(), SinkError> {
        self.buf.extend_from_slice(line);
        if self.buf.len() >= 60 * 1024 {
            self.flush()?;
        }
        Ok(())
    }

    pub fn flush(&mut self) -> Result<(), SinkError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let mut out = self.out.lock();
        let bytes = match &mut self.text {
            Some(t) => {
                let (renderer, text) = &mut **t;
                text.clear();
                renderer.render_lines(&self.buf, text);
                &text[..]
            }
            None => &self.buf[..],
        };
        let r = out.write_all(bytes).and_then(|()| out.flush());
        if r.is_err() {
            self.dropped += lines_in(&self.buf);
        }
        self.buf.clear();
        r.map_err(SinkError::from)
    }
}

/// Lines in a pushed buffer (a push holds one or more newline-terminated lines).
pub fn lines_in(b: &[u8]) -> u64 {
    b.iter().filter(|&&c| c == b'\n').count().max(1) as u64
}

/// An append-only file, created 0600, rotated by size (`path` -> `path.1` -> ...).
pub struct FileSink {
    path: PathBuf,
    file: Option<File>,
    size: u64,
    max_bytes: u64,
    keep: u32,
    buf: Vec<u8>,
    /// Lines in `buf` (to count them if the write fails).
    buf_lines: u64,
    pub dropped: u64,
    warned: bool,
    /// A regular file (rotated by size); false for a character device.
    rotates: bool,
}

/// Opens (or creates, 0600) the output file for appending, never through a link:
/// the agent runs as root and the path may be in a shared directory. An existing
/// file must be a regular file of the agent's own user; its mode is tightened to
/// 0600 (the lines name processes and peers).
fn open_output(path: &Path) -> Result<File, SinkError> {
    use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
    let err = |error: io::Error| SinkError::Open {
        path: path.display().to_string(),
        error,
    };
    let refuse = |why: String| err(io::Error::other(why));
    let file = OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC | libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| {
            if e.raw_os_error() == Some(libc::ELOOP) {
                refuse(
                    "is a symbolic link; sendsight does not write through links (name the \
                     file itself)"
                        .into(),
                )
            } else {
                err(e)
            }
        })?;
    let meta = file.metadata().map_err(err)?;
    // A character device (/dev/null for a benchmark) is written as it is: never
    // chmodded, never rotated (see `FileSink::rotates`).
    if meta.file_type().is_char_device() {
        return Ok(file);
    }
    if !meta.is_file() {
        return Err(refuse(
            "is neither a regular file nor a character device".into(),
        ));
    }
    // A hard link elsewhere (e.g. to a system file) would be appended to and chmodded.
    if meta.nlink() != 1 {
        return Err(refuse(format!(
            "has {} hard links; sendsight writes only to a file with one name",
            meta.nlink()
        )));
    }
    let me = unsafe { libc::geteuid() };
    if meta.uid() != me {
        return Err(refuse(format!(
            "is owned by uid {}, not by sendsight's user (uid {me}): refusing to write \
             into another user's file",
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(err)?;
        eprintln!(
            "sendsight: warning: {}: mode was {:04o}; set to 0600",
            path.display(),
            meta.mode() & 0o7777
        );
    }
    Ok(file)
}

/// [`open_output`], for the writer's own reopen and rotation.
fn open_append(path: &Path) -> io::Result<File> {
    open_output(path).map_err(|e| match e {
        SinkError::Open { error, .. } => error,
        other => io::Error::other(other.to_string()),
    })
}

impl FileSink {
    pub fn open(path: &Path, max_bytes: u64, keep: u32) -> Result<Self, SinkError> {
        let file = open_output(path)?;
        let meta = file.metadata().ok();
        let size = meta.as_ref().map(|m| m.len()).unwrap_or(0);
        let rotates = meta.is_none_or(|m| m.is_file());
        Ok(Self {
            path: path.into(),
            file: Some(file),
            size,
            max_bytes,
            keep,
            buf: Vec::with_capacity(64 * 1024),
            buf_lines: 0,
            dropped: 0,
            warned: false,
            rotates,
        })
    }

    pub fn push(&mut self, line: &[u8]) {
        self.buf.extend_from_slice(line);
        self.buf_lines += lines_in(line);
        if self.buf.len() >= 60 * 1024 {
            self.flush();
        }
    }

    fn rotate(&mut self) -> io::Result<()> {
        self.file = None;
        for i in (1..self.keep).rev() {
            let from = rotated(&self.path, i);
            if from.exists() {
                std::fs::rename(&from, rotated(&self.path, i + 1))?;
            }
        }
        if self.keep > 0 {
            std::fs::rename(&self.path, rotated(&self.path, 1))?;
        } else {
            std::fs::remove_file(&self.path)?;
        }
        self.file = Some(open_append(&self.path)?);
        self.size = 0;
        Ok(())
    }

    pub fn flush(&mut self) {
        if self.buf.is_empty() {
            return;
        }
        let mut result = Ok(());
        if self.rotates && self.size + self.buf.len() as u64 > self.max_bytes && self.size > 0 {
            result = self.rotate();
        }
        if result.is_ok() {
            result = match &mut self.file {
                Some(f) => f.write_all(&self.buf),
                None => open_append(&self.path).and_then(|mut f| {
                    let r = f.write_all(&self.buf);
                    self.file = Some(f);
                    r
                }),
            };
        }
        match result {
            Ok(()) => {
                self.size += self.buf.len() as u64;
                self.warned = false;
            }
            Err(e) => {
                // Disk full, file removed, permissions changed: say it once, count
                // every line lost, and try again with the next batch.
                if !self.warned {
                    eprintln!(
                        "sendsight: error: writing {}: {e}; lines are being dropped and \
                         counted until it works again",
                        self.path.display()
                    );
                    self.warned = true;
                }
                self.dropped += self.buf_lines;
            }
        }
        self.buf.clear();
        self.buf_lines = 0;
    }
}

fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

#[derive(Clone, Debug)]
enum Target {
    Unix(PathBuf),
    Tcp(String),
}

struct Queue {
    lines: VecDeque<Bytes>,
    bytes: usize,
}

/// A collector over a stream socket. The queue is bounded in bytes; when the
/// collector is slow or gone, new lines are dropped (and counted), never buffered
/// without bound, and the reader never waits.
pub struct NetSink {
    queue: Arc<Mutex<Queue>>,
    notify: Arc<Notify>,
    max_bytes: usize,
    pub stats: Arc<Stats>,
}

impl NetSink {
    fn start(target: Target, max_bytes: usize) -> Self {
        let queue = Arc::new(Mutex::new(Queue {
            lines: VecDeque::new(),
            bytes: 0,
        }));
        let notify = Arc::new(Notify::new());
        let stats = Arc::new(Stats::default());
        tokio::spawn(writer(target, queue.clone(), notify.clone(), stats.clone()));
        Self {
            queue,
            notify,
            max_bytes,
            stats,
        }
    }

    fn push(&mut self, line: &[u8]) {
        let mut q = self.queue.lock().expect("queue lock");
        if q.bytes + line.len() > self.max_bytes {
            // A push may hold several lines (one record's event and verdicts).
            let lines = lines_in(line);
            self.stats.dropped.fetch_add(lines, Ordering::Relaxed);
            return;
        }
        q.bytes += line.len();
        q.lines.push_back(Bytes::copy_from_slice(line));
    }

    fn kick(&self) {
        self.notify.notify_one();
    }

    async fn drain(&self, grace: Duration) {
        self.kick();
        let deadline = tokio::time::Instant::now() + grace;
        while tokio::time::Instant::now() < deadline {
            if self.queue.lock().expect("queue lock").lines.is_empty() {
                // Give the writer a moment to finish the line in flight.
                tokio::time::sleep(Duration::from_millis(50)).await;
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let q = self.queue.lock().expect("queue lock");
        // Entries may hold several lines (one record's event and verdicts).
        let left: u64 = q.lines.iter().map(|l| lines_in(l)).sum();
        if left > 0 {
            eprintln!("sendsight: warning: {left} lines not delivered to the collector at exit");
            self.stats.dropped.fetch_add(left, Ordering::Relaxed);
        }
    }
}

enum Conn {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
}

impl Conn {
    async fn write_all(&mut self, b: &[u8]) -> io::Result<()> {
        match self {
            Conn::Unix(s) => s.write_all(b).await,
            Conn::Tcp(s) => s.write_all(b).await,
        }
    }
}

async fn connect(target: &Target) -> io::Result<Conn> {
    Ok(match target {
        Target::Unix(p) => Conn::Unix(tokio::net::UnixStream::connect(p).await?),
        Target::Tcp(a) => Conn::Tcp(tokio::net::TcpStream::connect(a).await?),
    })
}

/// Connects (retrying with backoff up to 5 s), writes queued lines in order,
/// reconnects on error. A line is removed from the queue only once written.
async fn writer(target: Target, queue: Arc<Mutex<Queue>>, notify: Arc<Notify>, stats: Arc<Stats>) {
    let mut conn: Option<Conn> = None;
    let mut backoff = Duration::from_millis(100);
    let mut warned = false;
    loop {
        let next = queue.lock().expect("queue lock").lines.front().cloned();
        let Some(line) = next else {
            notify.notified().await;
            continue;
        };
        if conn.is_none() {
            match connect(&target).await {
                Ok(c) => {
                    if warned {
                        eprintln!("sendsight: collector {target:?} reachable again");
                    }
                    conn = Some(c);
                    backoff = Duration::from_millis(100);
                    warned = false;
                }
                Err(e) => {
                    if !warned {
                        eprintln!(
                            "sendsight: warning: collector {target:?}: {e}; queueing (bounded) \
                             and retrying"
                        );
                        warned = true;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    continue;
                }
            }
        }
        let c = conn.as_mut().expect("connected above");
        match c.write_all(&line).await {
            Ok(()) => {
                let mut q = queue.lock().expect("queue lock");
                q.lines.pop_front();
                q.bytes -= line.len();
                stats.written.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => {
                eprintln!("sendsight: warning: collector {target:?}: {e}; reconnecting");
                conn = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_specs() {
        assert_eq!("stdout".parse::<Spec>(), Ok(Spec::Stdout));
        assert!(matches!(
            "file:/tmp/x".parse::<Spec>(),
            Ok(Spec::File { .. })
        ));
        assert_eq!(
            "tcp:127.0.0.1:5140".parse::<Spec>(),
            Ok(Spec::Tcp("127.0.0.1:5140".into()))
        );
        assert!(
            "tcp:127.0.0.1"
                .parse::<Spec>()
                .unwrap_err()
                .contains("HOST:PORT")
        );
        assert!(
            "udp:x"
                .parse::<Spec>()
                .unwrap_err()
                .contains("not an output")
        );
        assert!("file:".parse::<Spec>().is_err());
    }

    #[test]
    fn file_rotates_and_is_private() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("sink-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("out.jsonl");
        let mut f = FileSink::open(&p, 100, 2).unwrap();
        for i in 0..10 {
            f.push(format!("{{\"n\":{i},\"pad\":\"xxxxxxxxxxxxxxxxxxxxxxxxxx\"}}\n").as_bytes());
            f.flush();
        }
        assert_eq!(
            std::fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(rotated(&p, 1).exists() && rotated(&p, 2).exists());
        assert!(!rotated(&p, 3).exists(), "keeps only 2 old files");
        assert!(std::fs::metadata(&p).unwrap().len() <= 100);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
