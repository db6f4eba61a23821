//! The read-only globals the agent sets at load time: the kernel layout it resolved
//! (tracefs + BTF) and its configuration. Shared by the agent's object and the
//! benchmark's floor object.

use agent_common::layout::{Config, Layout};
use aya_ebpf::Global;

/// Offsets resolved by the agent on the running kernel (tracefs + BTF).
#[unsafe(no_mangle)]
pub static LAYOUT: Global<Layout> = Global::new(Layout::UNRESOLVED);

#[unsafe(no_mangle)]
pub static CONFIG: Global<Config> = Global::new(Config::DEFAULT);

/// Reads one field of `LAYOUT`, e.g. `lay!(kernel.sk_family)`. Volatile and per
/// field: the compiler must not fold the static's initial value into the code, and
/// copying the whole table onto the 512-byte stack is not an option.
#[macro_export]
macro_rules! lay {
    ($($f:tt)+) => {
        unsafe {
            core::ptr::read_volatile(
                &raw const (*(&raw const $crate::globals::LAYOUT).cast::<agent_common::layout::Layout>()).$($f)+,
            )
        }
    };
}

/// Reads one field of `CONFIG`, like [`lay!`].
#[macro_export]
macro_rules! cfg {
    ($($f:tt)+) => {
        unsafe {
            core::ptr::read_volatile(
                &raw const (*(&raw const $crate::globals::CONFIG).cast::<agent_common::layout::Config>()).$($f)+,
            )
        }
    };
}
