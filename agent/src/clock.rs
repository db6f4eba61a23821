//! Kernel timestamps (CLOCK_MONOTONIC ns) to wall-clock RFC 3339 with nanoseconds.

use time::{OffsetDateTime, format_description::FormatItem, macros::format_description};

const RFC3339_NANOS: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:9]Z");

/// Maps monotonic nanoseconds to Unix-epoch nanoseconds with an offset taken once.
/// NTP steps after start shift the wall clock but not ordering, which is what the
/// timeline depends on; `ts_ns` stays the kernel's monotonic value for exact math.
#[derive(Clone, Copy, Debug)]
pub struct WallClock {
    offset_ns: i128,
}

fn now(clock: libc::clockid_t) -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: valid pointer to a timespec; these clocks always exist on Linux.
    unsafe { libc::clock_gettime(clock, &mut ts) };
    ts.tv_sec as i128 * 1_000_000_000 + ts.tv_nsec as i128
}

impl WallClock {
    pub fn from_system() -> Self {
        let mono = now(libc::CLOCK_MONOTONIC);
        let real = now(libc::CLOCK_REALTIME);
        Self {
            offset_ns: real - mono,
        }
    }

    /// A fixed offset, for deterministic replays and tests.
    pub fn with_offset(offset_ns: i128) -> Self {
        Self { offset_ns }
    }

    pub fn offset_ns(&self) -> i128 {
        self.offset_ns
    }

    pub fn monotonic_now() -> u64 {
        now(libc::CLOCK_MONOTONIC) as u64
    }

    pub fn unix_ns(&self, mono_ns: u64) -> i128 {
        // Saturating: a corrupt recording may claim any offset (found by cargo-fuzz).
        (mono_ns as i128).saturating_add(self.offset_ns)
    }

    pub fn rfc3339(&self, mono_ns: u64) -> String {
        format_unix_ns(self.unix_ns(mono_ns))
    }

    pub fn stamp(&self, mono_ns: u64) -> Stamp {
        Stamp::new(self.unix_ns(mono_ns))
    }

    /// [`WallClock::stamp`] with the caller's cache of the last second: no
    /// thread-local lookup and borrow per line.
    pub fn stamp_cached(&self, mono_ns: u64, cache: &mut SecondCache) -> Stamp {
        Stamp::with_cache(self.unix_ns(mono_ns), &mut cache.0)
    }
}

const SECONDS: &[FormatItem<'static>] =
    format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");

thread_local! {
    /// The date-and-time part of the last second formatted: lines come in bursts
    /// within one second, and calendar arithmetic per line is most of the cost.
    static LAST_SECOND: std::cell::RefCell<(i128, String)> =
        const { std::cell::RefCell::new((i128::MIN, String::new())) };
}

/// The date-and-time part of the last second formatted (see [`WallClock::stamp_cached`]).
pub struct SecondCache((i128, String));

impl Default for SecondCache {
    fn default() -> Self {
        Self((i128::MIN, String::new()))
    }
}

pub fn format_unix_ns(unix_ns: i128) -> String {
    Stamp::new(unix_ns).as_str().to_string()
}

/// An RFC 3339 timestamp on the stack: the hot path writes it into a line without
/// a String per line.
pub struct Stamp {
    buf: [u8; 48],
    len: usize,
}

impl Stamp {
    fn new(unix_ns: i128) -> Self {
        LAST_SECOND.with(|cache| Self::with_cache(unix_ns, &mut cache.borrow_mut()))
    }

    fn with_cache(unix_ns: i128, c: &mut (i128, String)) -> Self {
        // In i64 when it fits (always, short of a corrupt offset): i128 division is
        // a call.
        let (secs, nanos) = match i64::try_from(unix_ns) {
            Ok(ns) => (
                i128::from(ns.div_euclid(1_000_000_000)),
                ns.rem_euclid(1_000_000_000) as u32,
            ),
            Err(_) => (
                unix_ns.div_euclid(1_000_000_000),
                unix_ns.rem_euclid(1_000_000_000) as u32,
            ),
        };
        let mut s = Stamp {
            buf: [0; 48],
            len: 0,
        };
        'format: {
            if c.0 != secs {
                let Some(prefix) = OffsetDateTime::from_unix_timestamp(secs as i64)
                    .ok()
                    .and_then(|t| t.format(SECONDS).ok())
                else {
                    let whole = OffsetDateTime::from_unix_timestamp_nanos(unix_ns)
                        .ok()
                        .and_then(|t| t.format(RFC3339_NANOS).ok());
                    s.push(
                        whole
                            .as_deref()
                            .unwrap_or("1970-01-01T00:00:00.000000000Z")
                            .as_bytes(),
                    );
                    break 'format;
                };
                *c = (secs, prefix);
            }
            s.push(c.1.as_bytes());
            let mut frac = *b".000000000Z";
            let mut n = nanos;
            for d in frac[1..10].iter_mut().rev() {
                *d = b'0' + (n % 10) as u8;
                n /= 10;
            }
            s.push(&frac);
        }
        s
    }

    fn push(&mut self, part: &[u8]) {
        // `time` prints years of at most 4 digits and a sign: 31 bytes at most.
        let n = part.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&part[..n]);
        self.len += n;
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.buf[..self.len]
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.buf[..self.len]).expect("ASCII")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nine_digit_nanos_utc() {
        assert_eq!(
            format_unix_ns(1_700_000_000_000_000_007),
            "2023-11-14T22:13:20.000000007Z"
        );
        let c = WallClock::with_offset(1_000_000_000);
        assert_eq!(c.rfc3339(5), "1970-01-01T00:00:01.000000005Z");
        // The per-second cache must not leak one second into the next.
        assert_eq!(
            format_unix_ns(1_700_000_001_000_000_000),
            "2023-11-14T22:13:21.000000000Z"
        );
        assert_eq!(
            format_unix_ns(1_700_000_000_999_999_999),
            "2023-11-14T22:13:20.999999999Z"
        );
    }
}
