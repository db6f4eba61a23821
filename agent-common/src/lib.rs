//! The one vocabulary both sides of sendsight speak.
//!
//! Everything here is `#[repr(C)]` with explicit reserved fields instead of implicit
//! padding, so the eBPF programs and the agent agree byte for byte and the agent can
//! decode a record without trusting the compiler's layout choices. Sizes are pinned
//! by `const` assertions at the bottom of each module.
#![no_std]

pub mod event;
pub mod kernel;
pub mod layout;
pub mod loss;
