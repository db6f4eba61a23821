//! How records travel from the programs to the agent: the BPF ring buffer (5.8+),
//! or perf buffers, one per CPU, where the kernel has no ring buffer. Each has an
//! eBPF object of its own (`agent-ebpf/src/main.rs` says why); this module picks
//! one, from the request (`--transport`, `SENDSIGHT_TRANSPORT`) and the kernel.

use std::ffi::OsStr;

use serde::Serialize;

/// The environment variable that requests a transport (the flag wins over it): how
/// the test suites force the perf transport on kernels that have ring buffers.
pub const ENV: &str = "SENDSIGHT_TRANSPORT";

/// What was asked for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum Want {
    /// The ring buffer where the kernel has it, else perf buffers.
    #[default]
    Auto,
    /// The BPF ring buffer (fails to load on kernels before 5.8).
    Ring,
    /// Perf buffers, one per CPU.
    Perf,
}

/// Who asked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum By {
    #[default]
    Default,
    Flag,
    Env,
}

/// A transport request: what, and who asked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Request {
    pub want: Want,
    pub by: By,
}

#[derive(Debug, thiserror::Error)]
#[error("{ENV}={value:?}: expected auto, ring or perf")]
pub struct BadEnv {
    value: String,
}

impl Request {
    /// The flag when given, else the environment variable when set (an invalid value
    /// is an error, not silently auto), else auto.
    pub fn new(flag: Option<Want>, env: Option<&OsStr>) -> Result<Self, BadEnv> {
        if let Some(want) = flag {
            return Ok(Self { want, by: By::Flag });
        }
        let Some(value) = env else {
            return Ok(Self::default());
        };
        let want = value
            .to_str()
            .and_then(|s| <Want as clap::ValueEnum>::from_str(s, true).ok())
            .ok_or_else(|| BadEnv {
                value: value.to_string_lossy().into_owned(),
            })?;
        Ok(Self { want, by: By::Env })
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "transport_kind")]
pub enum Transport {
    /// The BPF ring buffer: one for all CPUs.
    Ring,
    /// Perf buffers: one per CPU.
    Perf,
}

impl Transport {
    pub fn name(self) -> &'static str {
        match self {
            Transport::Ring => "ring",
            Transport::Perf => "perf",
        }
    }
}

/// The transport in use and why (the `start` line, `sendsight check`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[schemars(rename = "transport")]
pub struct Chosen {
    pub kind: Transport,
    /// Why this one: forced (by the flag or the environment), or what the kernel has.
    #[schemars(length(min = 1))]
    pub why: String,
}

/// Decides. `ring_supported` asks the kernel (it is only asked for auto).
pub fn choose(req: Request, ring_supported: impl FnOnce() -> Result<bool, String>) -> Chosen {
    let forced = |kind, name| Chosen {
        kind,
        why: match req.by {
            By::Flag => format!("forced by --transport {name}"),
            By::Env => format!("forced by {ENV}={name}"),
            // Not reachable from `Request::new`; still a true sentence.
            By::Default => format!("{name} requested"),
        },
    };
    match req.want {
        Want::Ring => forced(Transport::Ring, "ring"),
        Want::Perf => forced(Transport::Perf, "perf"),
        Want::Auto => match ring_supported() {
            Ok(true) => Chosen {
                kind: Transport::Ring,
                why: "ring buffer supported on this kernel".into(),
            },
            Ok(false) => Chosen {
                kind: Transport::Perf,
                why: "ring buffer unsupported on this kernel".into(),
            },
            // The probe itself failed (no privilege to create maps at all): loading
            // will fail either way, with a clearer error; the ring is the default.
            Err(e) => Chosen {
                kind: Transport::Ring,
                why: format!("ring buffer support unknown ({e}); the default"),
            },
        },
    }
}

/// Asks the kernel whether it can create a BPF ring buffer.
pub fn kernel_has_ring() -> Result<bool, String> {
    aya::sys::is_map_supported(aya::maps::MapType::RingBuf).map_err(|e| e.to_string())
}

/// Pages of each CPU's perf buffer for a `--ring-bytes` budget: the same memory as
/// the ring, split over the CPUs that get a buffer, rounded down to a power of two
/// pages as the kernel requires, at least one page.
pub fn perf_pages(ring_bytes: u32, cpus: usize, page_size: usize) -> usize {
    let per_cpu = ring_bytes as usize / cpus.max(1) / page_size.max(1);
    match per_cpu {
        0 => 1,
        n => 1 << n.ilog2(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(flag: Option<Want>, env: Option<&str>) -> Result<Request, BadEnv> {
        Request::new(flag, env.map(OsStr::new))
    }

    #[test]
    fn the_flag_wins_over_the_environment() {
        let r = req(Some(Want::Ring), Some("perf")).unwrap();
        assert_eq!((r.want, r.by), (Want::Ring, By::Flag));
        // Even an explicit auto on the command line.
        let r = req(Some(Want::Auto), Some("perf")).unwrap();
        assert_eq!((r.want, r.by), (Want::Auto, By::Flag));
    }

    #[test]
    fn the_environment_when_no_flag_and_auto_when_neither() {
        let r = req(None, Some("PERF")).unwrap();
        assert_eq!((r.want, r.by), (Want::Perf, By::Env));
        assert_eq!(req(None, None).unwrap(), Request::default());
        assert!(req(None, Some("ringbuf")).is_err());
        assert!(req(None, Some("")).is_err());
    }

    #[test]
    fn auto_follows_the_kernel_and_forced_ignores_it() {
        let auto = Request::default();
        assert_eq!(choose(auto, || Ok(true)).kind, Transport::Ring);
        let old = choose(auto, || Ok(false));
        assert_eq!(old.kind, Transport::Perf);
        assert_eq!(old.why, "ring buffer unsupported on this kernel");
        let env = req(None, Some("perf")).unwrap();
        let c = choose(env, || panic!("a forced transport must not probe"));
        assert_eq!(c.kind, Transport::Perf);
        assert_eq!(c.why, format!("forced by {ENV}=perf"));
        let flag = req(Some(Want::Ring), None).unwrap();
        assert_eq!(choose(flag, || Ok(false)).why, "forced by --transport ring");
        assert_eq!(choose(auto, || Err("EPERM".into())).kind, Transport::Ring);
    }

    #[test]
    fn perf_pages_split_the_ring_budget_in_powers_of_two() {
        assert_eq!(perf_pages(4096, 2, 4096), 1);
        assert_eq!(perf_pages(1 << 20, 2, 4096), 128);
        assert_eq!(perf_pages(1 << 20, 3, 4096), 64);
        assert_eq!(perf_pages(1 << 20, 512, 4096), 1);
        assert_eq!(perf_pages(1 << 20, 0, 4096), 256);
    }
}
