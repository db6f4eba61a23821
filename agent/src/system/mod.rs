//! Facts about the running system, read where they live: the kernel's HZ and
//! release, the host's identity, errno names, and what /proc says about sockets,
//! namespaces and limits (`sysinfo`). Nothing here is compiled in.

pub mod errno;
pub mod host;
pub mod hz;
pub mod sysinfo;

/// The running kernel's release (`uname -r`), "unknown" when unreadable.
pub fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

/// The agent's own network namespace (inode of /proc/self/ns/net), 0 when unreadable.
pub fn own_netns() -> u32 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self/ns/net")
        .map(|m| m.ino() as u32)
        .unwrap_or(0)
}
