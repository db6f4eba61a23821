//! Recordings of the raw event stream (`run --record FILE`) and reading them back
//! (`replay FILE`): the bytes exactly as the ring buffer delivered them, so a replay
//! runs the same decoder and engine and reaches the same verdicts in the same order.
//!
//! Format: 8-byte magic, a little-endian u32 length and that many bytes of JSON
//! header (clock offset, HZ, kernel), then frames of u32 length + record bytes.

use std::{
    fs::File,
    io::{self, BufReader, BufWriter, Read, Write},
    path::Path,
};

use serde::{Deserialize, Serialize};

pub const MAGIC: &[u8; 8] = b"SSREC\x00\x01\x00";
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
    pub host: Option<crate::host::Host>,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("{path}: {error}")]
    Io { path: String, error: io::Error },
    #[error("{0}: not a sendsight recording (bad magic)")]
    Magic(String),
    #[error("{path}: bad header: {why}")]
    Header { path: String, why: String },
    #[error("{path}: frame {index} claims {len} bytes (corrupt recording)")]
    Frame { path: String, index: u64, len: u32 },
    #[error("{path}: truncated frame {index}")]
    Truncated { path: String, index: u64 },
}

pub struct Recorder {
    out: BufWriter<File>,
    path: String,
}

impl Recorder {
    pub fn create(path: &Path, header: &Header) -> Result<Self, RecordError> {
        let p = path.display().to_string();
        let io = |error| RecordError::Io {
            path: p.clone(),
            error,
        };
        let mut out = BufWriter::new(File::create(path).map_err(io)?);
        let h = serde_json::to_vec(header).expect("header serializes");
        out.write_all(MAGIC).map_err(io)?;
        out.write_all(&(h.len() as u32).to_le_bytes()).map_err(io)?;
        out.write_all(&h).map_err(io)?;
        Ok(Self { out, path: p })
    }

    pub fn write(&mut self, record: &[u8]) -> Result<(), RecordError> {
        let r = self
            .out
            .write_all(&(record.len() as u32).to_le_bytes())
            .and_then(|()| self.out.write_all(record));
        r.map_err(|error| RecordError::Io {
            path: self.path.clone(),
            error,
        })
    }

    pub fn flush(&mut self) -> Result<(), RecordError> {
        self.out.flush().map_err(|error| RecordError::Io {
            path: self.path.clone(),
            error,
        })
    }
}

pub struct Reader<R> {
    input: R,
    path: String,
    index: u64,
    pub header: Header,
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
        if input.read_exact(&mut magic).is_err() || &magic != MAGIC {
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
        })
    }

    /// The next record's bytes, `None` at a clean end.
    pub fn next_record(&mut self) -> Result<Option<Vec<u8>>, RecordError> {
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
        let mut buf = vec![0u8; len as usize];
        if self.input.read_exact(&mut buf).is_err() {
            return Err(RecordError::Truncated {
                path: self.path.clone(),
                index: self.index,
            });
        }
        self.index += 1;
        Ok(Some(buf))
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
        let mut r = Recorder::create(&dir, &header()).unwrap();
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
        std::fs::remove_file(&dir).unwrap();
    }
}
