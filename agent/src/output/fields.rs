//! JSON written field by field into the output buffer, for the lines printed per
//! event. Through serde, flattened bodies become maps whose every key is escaped
//! at run time, and addresses and timestamps become Strings first: that was most
//! of the pipeline's time (BENCHMARKS.md, pipeline). Here keys are literals,
//! integers go through itoa, and anything that may need escaping goes to sonic-rs,
//! so the bytes are the ones serde writes (`json`'s tests hold each body to that).
//! The small writers are inlined so that copies of literal keys compile to moves,
//! not calls to memcpy.

use std::net::IpAddr;

use serde::Serialize;

/// A cursor over the output Vec's spare capacity. Each `extend_from_slice` on the
/// Vec itself reloads its pointer, length and capacity from memory after the copy
/// (a call to memcpy may, for all the compiler knows, have changed them): with
/// ~40 writes a line that was a good part of the time. Here the three live in the
/// cursor (registers, once inlined), the Vec's length is set once when the cursor
/// is dropped, and callers reserve a line's worth up front so that the check in
/// each write never grows.
pub struct Fields<'a> {
    out: &'a mut Vec<u8>,
    ptr: *mut u8,
    len: usize,
    cap: usize,
}

/// The integers [`Fields::int`] writes: a sign and a magnitude.
pub trait Int: Copy {
    fn parts(self) -> (bool, u64);
}

macro_rules! int {
    (unsigned $($t:ty),*; signed $($s:ty),*) => {
        $(impl Int for $t {
            #[inline(always)]
            fn parts(self) -> (bool, u64) {
                (false, self as u64)
            }
        })*
        $(impl Int for $s {
            #[inline(always)]
            fn parts(self) -> (bool, u64) {
                (self < 0, self.unsigned_abs() as u64)
            }
        })*
    };
}
int!(unsigned u8, u16, u32, u64, usize; signed i8, i16, i32, i64, isize);

/// The cursor's growth, apart from it: a call that took the cursor's address
/// would let the compiler assume any later write may change it.
#[cold]
#[inline(never)]
fn grow(out: &mut Vec<u8>, len: usize, additional: usize) -> (*mut u8, usize) {
    // SAFETY: as in `Fields::drop`.
    unsafe { out.set_len(len) }
    out.reserve(additional);
    (out.as_mut_ptr(), out.capacity())
}

/// Whether `s` is written as it is between quotes (serde escapes nothing in it).
fn plain(s: &str) -> bool {
    // A fold, not `all`: without the early exit the check is vectorized.
    s.bytes().fold(true, |ok, b| {
        ok & (0x20..0x7f).contains(&b) & (b != b'"') & (b != b'\\')
    })
}

impl Drop for Fields<'_> {
    fn drop(&mut self) {
        // SAFETY: `len <= cap` always (see `bytes`), and every byte below `len`
        // was written, either through the cursor or by the Vec itself (`vec`).
        unsafe { self.out.set_len(self.len) }
    }
}

impl<'a> Fields<'a> {
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        Self {
            ptr: out.as_mut_ptr(),
            len: out.len(),
            cap: out.capacity(),
            out,
        }
    }

    /// Appends `b`: the one place the cursor writes.
    #[inline(always)]
    fn bytes(&mut self, b: &[u8]) {
        if b.len() > self.cap - self.len {
            self.grow(b.len());
        }
        // SAFETY: `ptr` is the Vec's buffer of `cap` bytes (reloaded whenever the
        // Vec may have moved it: `grow`, `vec`), and the check above leaves room
        // for `b` after `len`; `b` cannot overlap the spare capacity, which nothing
        // else borrows while the cursor holds the Vec.
        unsafe {
            let dst = self.ptr.add(self.len);
            let (src, n) = (b.as_ptr(), b.len());
            // Names, digits of a timestamp and such are a few bytes long: two
            // overlapping word copies, where a call to memcpy cost more than the
            // copy (its size known only at run time). Both stay inside `b` and the
            // room checked for.
            if (8..=16).contains(&n) {
                dst.cast::<u64>()
                    .write_unaligned(src.cast::<u64>().read_unaligned());
                dst.add(n - 8)
                    .cast::<u64>()
                    .write_unaligned(src.add(n - 8).cast::<u64>().read_unaligned());
            } else if (4..8).contains(&n) {
                dst.cast::<u32>()
                    .write_unaligned(src.cast::<u32>().read_unaligned());
                dst.add(n - 4)
                    .cast::<u32>()
                    .write_unaligned(src.add(n - 4).cast::<u32>().read_unaligned());
            } else {
                std::ptr::copy_nonoverlapping(src, dst, n);
            }
        }
        self.len += b.len();
    }

    #[inline(always)]
    fn byte(&mut self, b: u8) {
        self.bytes(&[b]);
    }

    #[inline(always)]
    fn grow(&mut self, additional: usize) {
        (self.ptr, self.cap) = grow(self.out, self.len, additional);
    }

    /// Room for `additional` more bytes without growing: a line's upper bound,
    /// reserved once before its fields.
    pub fn reserve(&mut self, additional: usize) {
        if additional > self.cap - self.len {
            self.grow(additional);
        }
    }

    /// Writes the digits straight into the buffer: through itoa they were
    /// formatted into a buffer of its own, then copied by a call to memcpy.
    #[inline(always)]
    fn uint(&mut self, negative: bool, mut n: u64) {
        const PAIRS: &[u8; 200] = b"\
            0001020304050607080910111213141516171819\
            2021222324252627282930313233343536373839\
            4041424344454647484950515253545556575859\
            6061626364656667686970717273747576777879\
            8081828384858687888990919293949596979899";
        // u64::MAX has 20 digits, and a sign.
        if 21 > self.cap - self.len {
            self.grow(21);
        }
        let total = n.checked_ilog10().unwrap_or(0) as usize + 1 + usize::from(negative);
        // SAFETY: the check above leaves room for `total` (at most 21) bytes after
        // `len`, and each of them is written below: the sign, then the digits from
        // the last one back to the first.
        unsafe {
            let start = self.ptr.add(self.len);
            if negative {
                *start = b'-';
            }
            let mut p = start.add(total);
            while n >= 100 {
                let pair = (n % 100) as usize * 2;
                n /= 100;
                p = p.sub(2);
                std::ptr::copy_nonoverlapping(PAIRS.as_ptr().add(pair), p, 2);
            }
            if n >= 10 {
                p = p.sub(2);
                std::ptr::copy_nonoverlapping(PAIRS.as_ptr().add(n as usize * 2), p, 2);
            } else {
                *p.sub(1) = b'0' + n as u8;
            }
        }
        self.len += total;
    }

    /// Hands the Vec, with its length up to date, to code that writes to it
    /// itself (serde), then picks the cursor up where that left it.
    fn vec<R>(&mut self, f: impl FnOnce(&mut Vec<u8>) -> R) -> R {
        // SAFETY: as in `drop`.
        unsafe { self.out.set_len(self.len) }
        let r = f(self.out);
        self.ptr = self.out.as_mut_ptr();
        self.len = self.out.len();
        self.cap = self.out.capacity();
        r
    }

    /// Any serializable value, through serde.
    pub fn serde_value<V: Serialize + ?Sized>(&mut self, v: &V) {
        // Writing into a Vec fails only for values JSON cannot hold (none here).
        self.vec(|out| {
            let _ = sonic_rs::to_writer(&mut *out, v);
        })
    }

    /// A serializable object's fields, through serde.
    pub fn serde<B: Serialize + ?Sized>(&mut self, body: &B) -> Result<(), sonic_rs::Error> {
        self.vec(|out| {
            let start = out.len();
            sonic_rs::to_writer(&mut *out, body)?;
            // `{"a":1}` becomes `,"a":1`: the body's fields continue the envelope's.
            if out.len() - start <= 2 {
                out.truncate(start);
            } else {
                out[start] = b',';
                out.pop();
            }
            Ok(())
        })
    }

    #[inline(always)]
    pub fn key(&mut self, key: &str) {
        self.bytes(b",\"");
        self.bytes(key.as_bytes());
        self.bytes(b"\":");
    }

    /// Bytes as they are: JSON the caller vouches for.
    #[inline(always)]
    pub fn raw(&mut self, json: &[u8]) {
        self.bytes(json);
    }

    #[inline(always)]
    pub fn int(&mut self, key: &str, v: impl Int) {
        self.key(key);
        self.int_value(v);
    }

    #[inline(always)]
    pub fn int_value(&mut self, v: impl Int) {
        let (negative, n) = v.parts();
        self.uint(negative, n);
    }

    /// Any integer itoa formats (i128: timestamps out of i64's range).
    pub fn big_int(&mut self, key: &str, v: impl itoa::Integer) {
        self.key(key);
        self.bytes(itoa::Buffer::new().format(v).as_bytes());
    }

    #[inline(always)]
    pub fn opt_int(&mut self, key: &str, v: Option<impl Int>) {
        match v {
            Some(v) => self.int(key, v),
            None => self.null(key),
        }
    }

    #[inline(always)]
    pub fn null(&mut self, key: &str) {
        self.key(key);
        self.bytes(b"null");
    }

    #[inline(always)]
    pub fn str(&mut self, key: &str, s: &str) {
        self.key(key);
        self.str_value(s);
    }

    #[inline(always)]
    pub fn opt_str(&mut self, key: &str, s: Option<&str>) {
        match s {
            Some(s) => self.str(key, s),
            None => self.null(key),
        }
    }

    /// A name from one of the agent's tables (`net`'s, the line types): plain
    /// ASCII, so written without the check for escapes.
    #[inline(always)]
    pub fn name(&mut self, key: &str, name: &'static str) {
        self.key(key);
        self.name_value(name);
    }

    #[inline(always)]
    pub fn name_value(&mut self, name: &'static str) {
        debug_assert!(plain(name), "{name:?} needs escaping");
        self.byte(b'"');
        self.bytes(name.as_bytes());
        self.byte(b'"');
    }

    pub fn str_value(&mut self, s: &str) {
        if plain(s) {
            self.byte(b'"');
            self.bytes(s.as_bytes());
            self.byte(b'"');
        } else {
            // Writing into a Vec cannot fail.
            self.vec(|out| {
                let _ = sonic_rs::to_writer(&mut *out, s);
            })
        }
    }

    /// An address as `Display` (and serde) prints it; IPv4 without the formatter.
    pub fn ip_value(&mut self, ip: IpAddr) {
        match ip {
            IpAddr::V4(v4) => {
                self.byte(b'"');
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        self.byte(b'.');
                    }
                    self.int_value(octet);
                }
                self.byte(b'"');
            }
            IpAddr::V6(_) => {
                use std::io::Write as _;
                self.vec(|out| {
                    let _ = write!(out, "\"{ip}\"");
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn written(f: impl FnOnce(&mut Fields)) -> String {
        let mut out = Vec::new();
        f(&mut Fields::new(&mut out));
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn strings_are_escaped_as_serde_escapes_them() {
        for s in [
            "plain",
            "q\"uote",
            "back\\slash",
            "tab\there",
            "é",
            "\u{1}",
            "",
        ] {
            assert_eq!(written(|w| w.str_value(s)), sonic_rs::to_string(s).unwrap());
        }
    }

    #[test]
    fn integers_print_as_itoa_does() {
        for v in [
            0u64,
            1,
            9,
            10,
            99,
            100,
            101,
            999,
            1000,
            12345,
            4294967295,
            u64::MAX,
        ] {
            assert_eq!(written(|w| w.int_value(v)), v.to_string());
        }
        for v in [0i64, -1, -9, -10, -100, 123, i64::MIN, i64::MAX] {
            assert_eq!(written(|w| w.int_value(v)), v.to_string());
        }
        assert_eq!(written(|w| w.int_value(-5i32)), "-5");
    }

    #[test]
    fn addresses_print_as_display_does() {
        for ip in [
            "0.0.0.0",
            "198.18.255.7",
            "::1",
            "::ffff:1.2.3.4",
            "fe80::1",
        ] {
            let ip: IpAddr = ip.parse().unwrap();
            assert_eq!(written(|w| w.ip_value(ip)), format!("\"{ip}\""));
        }
    }
}
