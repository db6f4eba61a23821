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

pub struct Fields<'a> {
    out: &'a mut Vec<u8>,
}

/// Whether `s` is written as it is between quotes (serde escapes nothing in it).
fn plain(s: &str) -> bool {
    // A fold, not `all`: without the early exit the check is vectorized.
    s.bytes().fold(true, |ok, b| {
        ok & (0x20..0x7f).contains(&b) & (b != b'"') & (b != b'\\')
    })
}

impl<'a> Fields<'a> {
    pub fn new(out: &'a mut Vec<u8>) -> Self {
        Self { out }
    }

    /// Any serializable value, through serde.
    pub fn serde_value<V: Serialize + ?Sized>(&mut self, v: &V) {
        // Writing into a Vec fails only for values JSON cannot hold (none here).
        let _ = sonic_rs::to_writer(&mut *self.out, v);
    }

    /// A serializable object's fields, through serde.
    pub fn serde<B: Serialize + ?Sized>(&mut self, body: &B) -> Result<(), sonic_rs::Error> {
        let start = self.out.len();
        sonic_rs::to_writer(&mut *self.out, body)?;
        // `{"a":1}` becomes `,"a":1`: the body's fields continue the envelope's.
        if self.out.len() - start <= 2 {
            self.out.truncate(start);
        } else {
            self.out[start] = b',';
            self.out.pop();
        }
        Ok(())
    }

    #[inline]
    pub fn key(&mut self, key: &str) {
        self.out.extend_from_slice(b",\"");
        self.out.extend_from_slice(key.as_bytes());
        self.out.extend_from_slice(b"\":");
    }

    /// Bytes as they are: JSON the caller vouches for.
    #[inline]
    pub fn raw(&mut self, json: &[u8]) {
        self.out.extend_from_slice(json);
    }

    #[inline]
    pub fn int(&mut self, key: &str, v: impl itoa::Integer) {
        self.key(key);
        self.int_value(v);
    }

    #[inline]
    pub fn int_value(&mut self, v: impl itoa::Integer) {
        self.out
            .extend_from_slice(itoa::Buffer::new().format(v).as_bytes());
    }

    #[inline]
    pub fn opt_int(&mut self, key: &str, v: Option<impl itoa::Integer>) {
        match v {
            Some(v) => self.int(key, v),
            None => self.null(key),
        }
    }

    #[inline]
    pub fn null(&mut self, key: &str) {
        self.key(key);
        self.out.extend_from_slice(b"null");
    }

    #[inline]
    pub fn str(&mut self, key: &str, s: &str) {
        self.key(key);
        self.str_value(s);
    }

    #[inline]
    pub fn opt_str(&mut self, key: &str, s: Option<&str>) {
        match s {
            Some(s) => self.str(key, s),
            None => self.null(key),
        }
    }

    /// A name from one of the agent's tables (`net`'s, the line types): plain
    /// ASCII, so written without the check for escapes.
    #[inline]
    pub fn name(&mut self, key: &str, name: &'static str) {
        self.key(key);
        self.name_value(name);
    }

    #[inline]
    pub fn name_value(&mut self, name: &'static str) {
        debug_assert!(plain(name), "{name:?} needs escaping");
        self.out.push(b'"');
        self.out.extend_from_slice(name.as_bytes());
        self.out.push(b'"');
    }

    pub fn str_value(&mut self, s: &str) {
        if plain(s) {
            self.out.push(b'"');
            self.out.extend_from_slice(s.as_bytes());
            self.out.push(b'"');
        } else {
            // Writing into a Vec cannot fail.
            let _ = sonic_rs::to_writer(&mut *self.out, s);
        }
    }

    /// An address as `Display` (and serde) prints it; IPv4 without the formatter.
    pub fn ip_value(&mut self, ip: IpAddr) {
        match ip {
            IpAddr::V4(v4) => {
                self.out.push(b'"');
                for (i, octet) in v4.octets().into_iter().enumerate() {
                    if i > 0 {
                        self.out.push(b'.');
                    }
                    self.int_value(octet);
                }
                self.out.push(b'"');
            }
            IpAddr::V6(_) => {
                use std::io::Write as _;
                let _ = write!(self.out, "\"{ip}\"");
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
