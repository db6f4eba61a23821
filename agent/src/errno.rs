//! Errno numbers to names and meanings ("70" -> "ECOMM", "Communication error on
//! send"), from nix's table of this platform's errnos.

use nix::errno::Errno;

/// The errno's symbolic name. Interned: names are printed on every error line.
pub fn name(errno: i32) -> &'static str {
    static NAMES: std::sync::OnceLock<
        std::sync::Mutex<std::collections::HashMap<i32, &'static str>>,
    > = std::sync::OnceLock::new();
    let map = NAMES.get_or_init(Default::default);
    let mut map = map.lock().unwrap_or_else(|p| p.into_inner());
    if map.len() > 4096 {
        // Bounded even for nonsense errnos from a corrupt recording.
        map.clear();
    }
    map.entry(errno).or_insert_with(|| {
        let s = match Errno::from_raw(errno) {
            Errno::UnknownErrno => format!("E{errno}"),
            e => format!("{e:?}"),
        };
        Box::leak(s.into_boxed_str())
    })
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
