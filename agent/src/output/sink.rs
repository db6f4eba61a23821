//! Where lines go. Today: stdout, buffered and flushed per batch so lines arrive in
//! real time without a syscall per line. A reader that goes away (closed pipe) is
//! not an error: the agent stops cleanly.

use std::io::{self, Write};

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("the output was closed by its reader")]
    Closed,
    #[error("writing output: {0}")]
    Io(io::Error),
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

pub struct Stdout {
    buf: Vec<u8>,
    out: io::Stdout,
}

impl Default for Stdout {
    fn default() -> Self {
        Self {
            buf: Vec::with_capacity(64 * 1024),
            out: io::stdout(),
        }
    }
}

impl Stdout {
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
        let r = out.write_all(&self.buf).and_then(|()| out.flush());
        self.buf.clear();
        r.map_err(SinkError::from)
    }
}
