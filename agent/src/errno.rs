//! Errno numbers to names and meanings ("70" -> "ECOMM", "Communication error on
//! send"), from nix's table of this platform's errnos.

use nix::errno::Errno;

pub fn name(errno: i32) -> String {
    match Errno::from_raw(errno) {
        Errno::UnknownErrno => format!("E{errno}"),
        e => format!("{e:?}"),
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
