//! sendsight's userspace agent. One event's way through it, in the order a newcomer
//! should read the files:
//!
//! `probes` (resolve layouts, load, attach) -> `ingest` (ring buffer) -> `decode`
//! (bytes to typed events) -> `engine` (per-socket state; pure, no I/O) -> `output`
//! (JSON lines to a sink).
pub mod check;
pub mod clock;
pub mod decode;
pub mod engine;
pub mod filter;
pub mod ingest;
pub mod ledger;
pub mod metrics;
pub mod net;
pub mod output;
pub mod pipeline;
pub mod privileges;
pub mod probes;
pub mod record;
pub mod replay;
pub mod run;
pub mod schema;
pub mod synthetic;
pub mod system;

/// Embedded eBPF object, built by build.rs from agent-ebpf with the pinned nightly.
/// Empty when the build had no bpf-linker; `probes::load` refuses it with a fix.
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agent-ebpf"));

/// The same programs over perf buffers, for kernels without the BPF ring buffer
/// (`probes::Transport`).
pub static EBPF_OBJECT_PERF: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/agent-ebpf-perf"));
