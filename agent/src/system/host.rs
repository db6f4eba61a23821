//! Who is speaking: every line carries the host's name and boot id and the agent's
//! version, so a log pipeline can aggregate many hosts without guessing.

use std::sync::OnceLock;

use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[schemars(rename = "host")]
pub struct Host {
    #[schemars(extend("x-otel" = "host.name"))]
    pub name: String,
    pub boot_id: String,
}

static HOST: OnceLock<Host> = OnceLock::new();

fn read(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "unknown".into())
}

impl Host {
    pub fn from_system() -> Self {
        Host {
            name: read("/proc/sys/kernel/hostname"),
            boot_id: read("/proc/sys/kernel/random/boot_id"),
        }
    }
}

/// Sets the identity once (run: this host; replay: the recorded host).
pub fn set(host: Host) {
    let _ = HOST.set(host);
}

pub fn get() -> &'static Host {
    HOST.get_or_init(Host::from_system)
}
