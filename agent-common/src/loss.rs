//! The loss ledger's kernel half: a per-CPU array of counters, one slot per program,
//! incremented when a ring-buffer reservation fails. Userspace sums the CPUs.

/// Slots of the `LOST` per-CPU array. Append only.
pub mod slot {
    pub const RETRANSMIT: u32 = 0;
    /// Number of slots; the map is sized from this.
    pub const COUNT: u32 = 8;
}

/// Human names of the slots, indexed by slot number, for loss lines.
pub const SLOT_NAMES: [&str; slot::COUNT as usize] = [
    "retransmit",
    "slot1",
    "slot2",
    "slot3",
    "slot4",
    "slot5",
    "slot6",
    "slot7",
];
