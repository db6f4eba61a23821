//! The loss ledger's kernel half: a per-CPU array of counters, one slot per program
//! and reason, incremented where an event could not be delivered. Userspace sums
//! the CPUs; the agent's `ledger` owns everything after that.

/// Slots of the `LOST` per-CPU array. Append only.
pub mod slot {
    // The ring had no room for the record.
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
    // A record was reserved, then discarded: reading the kernel's data for it failed.
    pub const RETRANSMIT_UNREADABLE: u32 = 8;
    pub const SEND_ERROR_UNREADABLE: u32 = 9;
    pub const ICMP_UNREADABLE: u32 = 10;
    pub const SOCKET_STATE_UNREADABLE: u32 = 11;
    pub const SOCKET_ERROR_UNREADABLE: u32 = 12;
    pub const CONG_STATE_UNREADABLE: u32 = 13;
    pub const UDP_SEND_UNREADABLE: u32 = 14;
    /// Too-big messages (received from the network, or sent for forwarded traffic)
    /// over their bound: anyone on the network can send them, so they get a budget
    /// per CPU per second and at most half of the ring, and never crowd out
    /// retransmits and send errors.
    pub const ICMP_BOUNDED: u32 = 15;
    /// A `udp_queue_drop` record found the ring full. Its counts are cumulative,
    /// so the next record (or the agent's read of the map) still carries them.
    pub const UDP_QUEUE: u32 = 16;
    /// Not a loss of facts: `udp_queue_drop` records deliberately not emitted
    /// because the socket had one within `Config::udpq_interval_ms` (the rate
    /// bound). The counts they would have carried arrive with the next record.
    pub const UDP_QUEUE_RATE_BOUNDED: u32 = 17;
    pub const UDP_QUEUE_UNREADABLE: u32 = 18;
    /// Number of slots; the map is sized from this.
    pub const COUNT: u32 = 19;
    /// For records no program makes (the agent's own): never counted.
    pub const NONE: u32 = u32::MAX;
}

/// Names of the slots, indexed by slot number: the `source` of `loss` lines.
pub const SLOT_NAMES: [&str; slot::COUNT as usize] = [
    "retransmit",
    "send_error",
    "icmp_too_big",
    "socket_state",
    "socket_error",
    "cong_state",
    "send_error_details",
    "udp_send",
    "retransmit_unreadable",
    "send_error_unreadable",
    "icmp_too_big_unreadable",
    "socket_state_unreadable",
    "socket_error_unreadable",
    "cong_state_unreadable",
    "udp_send_unreadable",
    "icmp_too_big_bounded",
    "udp_queue_drop",
    "udp_queue_rate_bounded",
    "udp_queue_drop_unreadable",
];

/// Whether a slot counts lost events (all but `udp_queue_rate_bounded`, records held
/// back whose counts arrive with the next one, and `send_error_details`, which counts
/// events delivered without their syscall details).
pub const fn is_event_loss(slot: u32) -> bool {
    slot != slot::PENDING_FULL && slot != slot::UDP_QUEUE_RATE_BOUNDED
}
