//! Kernel numbers the programs and the agent both need: one definition each.

/// Positive errno values (include/uapi/asm-generic/errno*.h, x86_64).
pub mod errno {
    pub const EINTR: i32 = 4;
    pub const EAGAIN: i32 = 11;
    pub const ENOMEM: i32 = 12;
    pub const EBUSY: i32 = 16;
    pub const EPIPE: i32 = 32;
    pub const ECOMM: i32 = 70;
    pub const EMSGSIZE: i32 = 90;
    pub const EADDRINUSE: i32 = 98;
    pub const EADDRNOTAVAIL: i32 = 99;
    pub const ECONNRESET: i32 = 104;
    pub const ETIMEDOUT: i32 = 110;
    pub const EALREADY: i32 = 114;
    pub const EINPROGRESS: i32 = 115;
    /// ERESTARTSYS .. ERESTART_RESTARTBLOCK (include/linux/errno.h): kernel-internal,
    /// the call is restarted (or turned into EINTR) before user space sees it.
    pub const ERESTART_FIRST: i32 = 512;
    pub const ERESTART_LAST: i32 = 516;

    /// A kernel-internal restart code, never a failure user space sees.
    pub const fn is_restart(errno: i32) -> bool {
        errno >= ERESTART_FIRST && errno <= ERESTART_LAST
    }
}

/// TCP states (include/net/tcp_states.h).
pub mod tcp_state {
    pub const ESTABLISHED: u8 = 1;
    pub const SYN_SENT: u8 = 2;
    pub const FIN_WAIT1: u8 = 4;
    pub const CLOSE: u8 = 7;
    pub const CLOSE_WAIT: u8 = 8;
}

/// `enum tcp_ca_state`.
pub mod ca_state {
    pub const OPEN: u8 = 0;
    /// Fast retransmit / recovery (dupacks, SACK, RACK).
    pub const TCP_CA_RECOVERY: u8 = 3;
    /// A retransmission timeout fired.
    pub const TCP_CA_LOSS: u8 = 4;
}

/// `inode->i_mode` file types (include/uapi/linux/stat.h).
pub mod stat {
    pub const S_IFMT: u16 = 0o170000;
    pub const S_IFSOCK: u16 = 0o140000;
}
