//! Errno numbers to names and meanings ("70" -> "ECOMM", "Communication error on
//! send"), from nix's table of this platform's errnos.

use std::{borrow::Cow, collections::HashMap, sync::OnceLock};

use nix::errno::Errno;

/// The errno's symbolic name ("ECOMM"); a number the platform does not know is
/// spelled `E<n>` (a corrupt recording may carry anything: nothing is kept for it).
pub fn name(errno: i32) -> Cow<'static, str> {
    // Built once: every errno this platform names (they are all below 4096).
    static NAMES: OnceLock<HashMap<i32, String>> = OnceLock::new();
    let names = NAMES.get_or_init(|| {
        (0..4096)
            .filter_map(|n| match Errno::from_raw(n) {
                Errno::UnknownErrno => None,
                e => Some((n, format!("{e:?}"))),
            })
            .collect()
    });
    match names.get(&errno) {
        Some(n) => Cow::Borrowed(n.as_str()),
        None => Cow::Owned(format!("E{errno}")),
    }
}

pub fn text(errno: i32) -> &'static str {
    Errno::from_raw(errno).desc()
}

#[cfg(test)]
mod tests {
    #[test]
    fn ecomm() {
        assert_eq!(super::name(70), "ECOMM");
        assert_eq!(super::text(70), "Communication error on send");
        assert_eq!(super::name(32), "EPIPE");
        assert_eq!(super::name(90), "EMSGSIZE");
        assert_eq!(super::name(110), "ETIMEDOUT");
        assert_eq!(super::name(9999), "E9999");
    }
}
