//! The loss ledger's kernel half: a per-CPU array of counters, one slot per program,
//! incremented when a ring-buffer reservation fails. Userspace sums the CPUs.

/// Slots of the `LOST` per-CPU array. Append only.
pub mod slot {
    pub const RETRANSMIT: u32 = 0;
    pub const SEND_ERROR: u32 = 1;
    pub const ICMP: u32 = 2;
    pub const SOCKET_STATE: u32 = 3;
    pub const SOCKET_ERROR: u32 = 4;
    pub const CONG_STATE: u32 = 5;
    /// PENDING map full: a socket-layer failure could not wait for its syscall
    /// exit and was emitted on its own instead (not a loss of the event, a loss of
    /// its syscall details). Counted for honesty.
    pub const PENDING_FULL: u32 = 6;
    pub const UDP_SEND: u32 = 7;
    /// A `udp_queue_drop` record found the ring full. Its counts are cumulative,
    /// so the next record (or the agent's read of the map) still carries them.
    pub const UDP_QUEUE: u32 = 8;
    /// Not a loss of facts: `udp_queue_drop` records deliberately not emitted
    /// because the socket had one within `Config::udpq_interval_ms` (the rate
    /// bound). The counts they would have carried arrive with the next record.
    pub const UDP_QUEUE_RATE_BOUNDED: u32 = 9;
    /// Number of slots; the map is sized from this.
    pub const COUNT: u32 = 10;
}

/// Names of the slots, indexed by slot number, for `loss` lines.
pub const SLOT_NAMES: [&str; slot::COUNT as usize] = [
    "retransmit",
    "send_error",
    "icmp_too_big",
    "socket_state",
    "socket_error",
    "cong_state",
    "send_error_details",
    "udp_send",
    "udp_queue_drop",
    "udp_queue_rate_bounded",
];
