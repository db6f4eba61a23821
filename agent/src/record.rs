//! Recordings of the raw event stream (`run --record FILE`) and reading them back
//! (`replay FILE`): the bytes exactly as the ring buffer delivered them, so a replay
//! runs the same decoder and engine and reaches the same verdicts in the same order.
//!
//! Format: 8-byte magic (its 7th byte is the format version), a little-endian u32
//! length and that many bytes of JSON header (clock offset, HZ, kernel), then frames
//! of u32 length + record bytes.
//!
//! A recording is written by root and may sit in a shared directory: it is created
//! exclusively (an existing file or a symbolic link at the path is refused, never
//! followed or truncated), 0600, rotated at a size cap (`FILE` -> `FILE.1`), and it
//! holds no kernel address: socket identities are replaced by per-run pseudonyms.

use std::{
    collections::hash_map::RandomState,
    fs::{File, OpenOptions},
    hash::BuildHasher,
    io::{self, BufReader, BufWriter, Read, Write},
    os::unix::fs::OpenOptionsExt,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

/// The format this agent writes and reads. 2: socket pseudonyms instead of kernel
/// addresses; `LossReport` and `ClockStep` records.
pub const VERSION: u8 = 2;
pub const MAGIC: &[u8; 8] = b"SSREC\x00\x02\x00";
/// No ring-buffer record is anywhere near this; a bigger frame is corruption.
pub const MAX_FRAME: u32 = 64 * 1024;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub agent_version: String,
    pub kernel: String,
    /// Realtime minus monotonic at recording start (ns): replays print the same `ts`.
    pub clock_offset_ns: i128,
    pub hz: Option<u32>,
    /// The recording host, printed on replayed lines.
    #[serde(default)]
    pub host: Option<crate::system::host::Host>,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{path}: {error}")]
    Io { path: String, error: io::Error },
    #[error("{0}: not a sendsight recording (bad magic)")]
    Magic(String),
    #[error(
        "{path}: a recording in format version {version}; this sendsight reads version {VERSION} \
         (replay it with the sendsight that made it, or record again)"
    )]
    Version { path: String, version: u8 },
    #[error(
        "{0}: already exists; a recording is never written over an existing file: remove \
         it or choose another path"
    )]
    Exists(String),
    #[error(
        "{0}: is a symbolic link; a recording is never written through a link: choose \
         another path"
    )]
    Link(String),
    #[error("{path}: bad header: {why}")]
    Header { path: String, why: String },
    #[error("{path}: frame {index} claims {len} bytes (corrupt recording)")]
    Frame { path: String, index: u64, len: u32 },
    #[error("{path}: truncated frame {index}")]
    Truncated { path: String, index: u64 },
}

pub struct Recorder {
    out: BufWriter<File>,
    path: PathBuf,
    header: Vec<u8>,
    /// Bytes in the current file.
    size: u64,
    /// Rotate to `FILE.1` beyond this many bytes (0: never).
    max_bytes: u64,
    /// Keyed per run: the same socket always gets the same pseudonym within the
    /// recording, and no pseudonym reveals an address.
    pseudonyms: RandomState,
    /// The agent's state records last written (the kernel's loss totals per slot,
    /// the clock offset): repeated at the start of a rotated file so that it replays
    /// on its own.
    carried: std::collections::BTreeMap<(u16, u32), Vec<u8>>,
    /// `FILE.1` as this recorder left it (device, inode): a later rotation replaces
    /// only that file, never one someone else put there.
    rotated: Option<(u64, u64)>,
}

/// The smallest `--record-max-bytes` (other than 0, no cap): room for the header and
/// many frames.
pub const MIN_MAX_BYTES: u64 = 1 << 20;

/// Creates `path` for writing: new (never an existing file or a link), 0600.
fn create_exclusive(path: &Path) -> Result<File, RecordError> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC)
        .open(path)
        .map_err(|error| {
            let link = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_symlink());
            if link {
                RecordError::Link(path.display().to_string())
            } else if error.kind() == io::ErrorKind::AlreadyExists {
                RecordError::Exists(path.display().to_string())
            } else {
                RecordError::Io {
                    path: path.display().to_string(),
                    error,
                }
            }
        })
}

impl Recorder {
    /// A new recording at `path`, rotated to `path.1` at `max_bytes` (0: no cap).
    pub fn create(path: &Path, header: &Header, max_bytes: u64) -> Result<Self, RecordError> {
        let h = serde_json::to_vec(header).expect("header serializes");
        let mut head = MAGIC.to_vec();
        head.extend_from_slice(&(h.len() as u32).to_le_bytes());
        head.extend_from_slice(&h);
        let mut r = Self {
            out: BufWriter::new(create_exclusive(path)?),
            path: path.into(),
            header: head,
            size: 0,
            max_bytes,
            pseudonyms: RandomState::new(),
            carried: Default::default(),
            rotated: None,
        };
        r.start()?;
        Ok(r)
    }

    fn io(&self, error: io::Error) -> RecordError {
        RecordError::Io {
            path: self.path.display().to_string(),
            error,
        }
    }

    fn start(&mut self) -> Result<(), RecordError> {
        let r = self.out.write_all(&self.header);
        r.map_err(|e| self.io(e))?;
        self.size = self.header.len() as u64;
        Ok(())
    }

    /// `FILE` becomes `FILE.1` (replacing the previous one, or a link there: rename
    /// replaces the link itself) and a new `FILE` begins, with the same header: each
    /// file replays on its own.
    fn rotate(&mut self) -> Result<(), RecordError> {
        use std::os::unix::fs::MetadataExt;
        self.out.flush().map_err(|e| self.io(e))?;
        let mut old = self.path.clone().into_os_string();
        old.push(".1");
        let old = PathBuf::from(old);
        // Only our own previous FILE.1 may be replaced; the first rotation must not
        // replace anything.
        let ours = std::fs::symlink_metadata(&old)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        match (ours, self.rotated) {
            (None, _) => {}
            (Some(found), Some(left)) if found == left => {}
            (Some(_), _) => {
                return Err(RecordError::Exists(old.display().to_string()));
            }
        }
        std::fs::rename(&self.path, &old).map_err(|e| self.io(e))?;
        self.rotated = std::fs::symlink_metadata(&old)
            .ok()
            .map(|m| (m.dev(), m.ino()));
        self.out = BufWriter::new(create_exclusive(&self.path)?);
        self.start()?;
        let carried: Vec<Vec<u8>> = self.carried.values().cloned().collect();
        for frame in carried {
            self.frame(&frame)?;
        }
        Ok(())
    }

    pub fn write(&mut self, record: &[u8]) -> Result<(), RecordError> {
        let frame = 4 + record.len() as u64;
        if self.max_bytes > 0 && self.size + frame > self.max_bytes && self.size > 0 {
            self.rotate()?;
        }
        if let Some(key) = carried_key(record) {
            self.carried.insert(key, record.to_vec());
        }
        self.frame(record)
    }

    fn frame(&mut self, record: &[u8]) -> Result<(), RecordError> {
        let frame = 4 + record.len() as u64;
        // Header bytes 16..24 are the kernel's `struct sock` address: never stored.
        const SK: std::ops::Range<usize> = 16..24;
        let r = self
            .out
            .write_all(&(record.len() as u32).to_le_bytes())
            .and_then(|()| match record.get(SK) {
                Some(sk) => {
                    let sk = u64::from_ne_bytes(sk.try_into().expect("8 bytes"));
                    let id = if sk == 0 {
                        0
                    } else {
                        // Below 2^48: never mistaken for a kernel address.
                        (self.pseudonyms.hash_one(sk) & 0x0000_ffff_ffff_ffff) | 1
                    };
                    self.out.write_all(&record[..SK.start])?;
                    self.out.write_all(&id.to_ne_bytes())?;
                    self.out.write_all(&record[SK.end..])
                }
                None => self.out.write_all(record),
            });
        r.map_err(|e| self.io(e))?;
        self.size += frame;
        Ok(())
    }

    pub fn flush(&mut self) -> Result<(), RecordError> {
        let r = self.out.flush();
        r.map_err(|e| self.io(e))
    }
}

/// Which state an agent-made record carries (kind, slot), if it is one to repeat in
/// a rotated file.
fn carried_key(record: &[u8]) -> Option<(u16, u32)> {
    use agent_common::event::Kind;
    let kind = u16::from_ne_bytes(record.get(..2)?.try_into().ok()?);
    if kind == Kind::LossReport as u16 {
        let slot = u32::from_ne_bytes(record.get(24..28)?.try_into().ok()?);
        Some((kind, slot))
    } else if kind == Kind::ClockStep as u16 {
        Some((kind, 0))
    } else {
        None
    }
}

pub struct Reader<R> {
    input: R,
    path: String,
    index: u64,
    pub header: Header,
    /// The last record read: one buffer for all, not an allocation per record.
    record: Vec<u8>,
}

impl Reader<BufReader<File>> {
    pub fn open(path: &Path) -> Result<Self, RecordError> {
        let p = path.display().to_string();
        let f = File::open(path).map_err(|error| RecordError::Io {
            path: p.clone(),
            error,
        })?;
        Reader::new(BufReader::new(f), p)
    }
}

impl<R: Read> Reader<R> {
    pub fn new(mut input: R, path: String) -> Result<Self, RecordError> {
        let mut magic = [0u8; 8];
        if input.read_exact(&mut magic).is_err() || magic[..6] != MAGIC[..6] {
            return Err(RecordError::Magic(path));
        }
        if magic[6] != VERSION {
            return Err(RecordError::Version {
                path,
                version: magic[6],
            });
        }
        if magic != *MAGIC {
            return Err(RecordError::Magic(path));
        }
        let mut len = [0u8; 4];
        input
            .read_exact(&mut len)
            .map_err(|_| RecordError::Header {
                path: path.clone(),
                why: "truncated".into(),
            })?;
        let len = u32::from_le_bytes(len);
        if len > MAX_FRAME {
            return Err(RecordError::Header {
                path,
                why: format!("header of {len} bytes"),
            });
        }
        let mut h = vec![0u8; len as usize];
        input.read_exact(&mut h).map_err(|_| RecordError::Header {
            path: path.clone(),
            why: "truncated".into(),
        })?;
        let header = serde_json::from_slice(&h).map_err(|e| RecordError::Header {
            path: path.clone(),
            why: e.to_string(),
        })?;
        Ok(Self {
            input,
            path,
            index: 0,
            header,
            record: Vec::new(),
        })
    }

    /// The next record's bytes, `None` at a clean end.
    pub fn next_record(&mut self) -> Result<Option<&[u8]>, RecordError> {
        let mut len = [0u8; 4];
        match read_full(&mut self.input, &mut len) {
            Ok(0) => return Ok(None),
            Ok(4) => {}
            Ok(_) => {
                return Err(RecordError::Truncated {
                    path: self.path.clone(),
                    index: self.index,
                });
            }
            Err(error) => {
                return Err(RecordError::Io {
                    path: self.path.clone(),
                    error,
                });
            }
        }
        let len = u32::from_le_bytes(len);
        if len > MAX_FRAME {
            return Err(RecordError::Frame {
                path: self.path.clone(),
                index: self.index,
                len,
            });
        }
        self.record.resize(len as usize, 0);
        if self.input.read_exact(&mut self.record).is_err() {
            return Err(RecordError::Truncated {
                path: self.path.clone(),
                index: self.index,
            });
        }
        self.index += 1;
        Ok(Some(&self.record))
    }
}

/// Reads until `buf` is full or the input ends; returns bytes read.
fn read_full(r: &mut impl Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            agent_version: "test".into(),
            kernel: "6.18".into(),
            clock_offset_ns: 5,
            hz: Some(250),
            host: None,
        }
    }

    #[test]
    fn round_trip_and_corruption() {
        let dir = std::env::temp_dir().join(format!("ssrec-{}", std::process::id()));
        let _ = std::fs::remove_file(&dir);
        let mut r = Recorder::create(&dir, &header(), 0).unwrap();
        r.write(b"abc").unwrap();
        r.write(&[7u8; 100]).unwrap();
        r.flush().unwrap();
        drop(r);
        let mut rd = Reader::open(&dir).unwrap();
        assert_eq!(rd.header, header());
        assert_eq!(rd.next_record().unwrap().unwrap(), b"abc");
        assert_eq!(rd.next_record().unwrap().unwrap().len(), 100);
        assert!(rd.next_record().unwrap().is_none());
        let bytes = std::fs::read(&dir).unwrap();
        let cut = &bytes[..bytes.len() - 10];
        let mut rd = Reader::new(cut, "cut".into()).unwrap();
        rd.next_record().unwrap();
        assert!(matches!(
            rd.next_record(),
            Err(RecordError::Truncated { .. })
        ));
        assert!(matches!(
            Reader::new(&b"garbage!"[..], "g".into()),
            Err(RecordError::Magic(_))
        ));
        let v1 = Reader::new(&b"SSREC\x00\x01\x00"[..], "old".into())
            .err()
            .unwrap();
        assert!(v1.to_string().contains("format version 1"), "{v1}");
        std::fs::remove_file(&dir).unwrap();
    }

    #[test]
    fn exclusive_private_pseudonymous_rotated() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("ssrec-x-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).unwrap();
        let target = dir.join("target");
        std::fs::write(&target, b"precious").unwrap();
        let link = dir.join("rec");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = Recorder::create(&link, &header(), 0).err().unwrap();
        assert!(matches!(e, RecordError::Link(_)), "{e}");
        assert_eq!(std::fs::read(&target).unwrap(), b"precious");
        assert!(matches!(
            Recorder::create(&target, &header(), 0),
            Err(RecordError::Exists(_))
        ));

        let path = dir.join("new");
        let mut r = Recorder::create(&path, &header(), 400).unwrap();
        let mut rec = [0u8; 40];
        let sk = 0xffff_8881_0234_5678u64;
        rec[16..24].copy_from_slice(&sk.to_ne_bytes());
        for _ in 0..10 {
            r.write(&rec).unwrap();
        }
        r.flush().unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let old = dir.join("new.1");
        assert!(old.exists(), "rotated at the cap");
        let mut ids = std::collections::BTreeSet::new();
        for p in [&old, &path] {
            assert!(std::fs::metadata(p).unwrap().len() <= 400);
            let mut rd = Reader::open(p).unwrap();
            while let Some(f) = rd.next_record().unwrap() {
                let id = u64::from_ne_bytes(f[16..24].try_into().unwrap());
                assert_ne!(id, sk);
                ids.insert(id);
            }
        }
        assert_eq!(ids.len(), 1, "one socket, one pseudonym");

        // A rotated file starts with the agent's state (loss totals), and the first
        // rotation never replaces a FILE.1 it did not make.
        let path = dir.join("carry");
        let mut r = Recorder::create(&path, &header(), 400).unwrap();
        let loss = agent_common::event::LossReport {
            header: agent_common::event::Header::new::<agent_common::event::LossReport>(0, 1, 0),
            slot: 3,
            _reserved: 0,
            total: 9,
        };
        r.write(&crate::decode::encode(&loss)).unwrap();
        for _ in 0..10 {
            r.write(&rec).unwrap();
        }
        r.flush().unwrap();
        let mut rd = Reader::open(&path).unwrap();
        let first = rd.next_record().unwrap().unwrap().to_vec();
        assert_eq!(
            first,
            crate::decode::encode(&loss),
            "carried into the new file"
        );
        let foreign = dir.join("other");
        std::fs::write(dir.join("other.1"), b"someone else's").unwrap();
        let mut r = Recorder::create(&foreign, &header(), 400).unwrap();
        let e = (0..10).find_map(|_| r.write(&rec).err()).expect("refused");
        assert!(matches!(e, RecordError::Exists(_)), "{e}");
        assert_eq!(
            std::fs::read(dir.join("other.1")).unwrap(),
            b"someone else's"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
