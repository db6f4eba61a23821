//! `sendsight check`: can this kernel run sendsight, and how? Loads and attaches
//! every probe for real (then detaches), and reports each one with the kernel
//! facts behind it.

use serde::Serialize;

use crate::{
    privileges,
    probes::{self, Options, ProbeStatus, State, btf::VMLINUX, tracefs, transport::Chosen},
    system::hz,
};

#[derive(Serialize)]
pub struct Report {
    pub kernel: String,
    pub arch: &'static str,
    pub btf: String,
    pub tracefs: String,
    pub capabilities: String,
    pub hz: Option<u32>,
    /// The transport the agent would use here, and why (unknown when loading failed
    /// before it was chosen).
    pub transport: Option<Chosen>,
    pub probes: Vec<ProbeStatus>,
    /// Kernel struct members this kernel lacks (each degrades some field).
    pub missing_members: Vec<String>,
    /// Retransmits and send errors observable: the agent can do its core job.
    pub ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

pub fn check(opts: Options) -> Report {
    let kernel = crate::system::kernel_release();
    // The file actually read: --btf when given, else the kernel's own.
    let btf_path = opts
        .btf
        .as_deref()
        .unwrap_or(std::path::Path::new(VMLINUX))
        .display()
        .to_string();
    let btf = match std::fs::metadata(&btf_path) {
        Ok(m) => format!("{btf_path} ({} bytes)", m.len()),
        Err(e) => format!("missing: {btf_path}: {e}"),
    };
    let capabilities = match privileges::effective() {
        Ok(set) => match privileges::missing_for_tracing(set, opts.ring_bytes.into()) {
            None => format!("ok (effective {set:#x})"),
            Some(why) => why,
        },
        Err(e) => format!("unknown ({e})"),
    };
    let capabilities = match privileges::effective()
        .ok()
        .and_then(privileges::perf_restricted)
    {
        Some(why) => format!("{capabilities}; {why}"),
        None => capabilities,
    };
    // Before 5.11 the memlock limit decides whether the maps fit: say it.
    let capabilities = match privileges::memlock(opts.ring_bytes.into()) {
        privileges::Memlock::NotCharged => capabilities,
        privileges::Memlock::Charged { hard, .. } => format!(
            "{capabilities}; map memory is charged to RLIMIT_MEMLOCK on this kernel (hard \
             limit {})",
            hard.map_or("unlimited".into(), privileges::human_bytes)
        ),
    };
    let mut report = Report {
        kernel,
        arch: std::env::consts::ARCH,
        btf,
        tracefs: String::new(),
        capabilities,
        hz: hz::kernel_hz(),
        transport: None,
        probes: Vec::new(),
        missing_members: Vec::new(),
        ok: false,
        error: None,
    };
    match probes::load(opts) {
        Ok(mut loaded) => {
            report.tracefs = match &loaded.tracefs {
                tracefs::Found::AlreadyMounted(p) => format!("{} (mounted)", p.display()),
                tracefs::Found::MountedByUs(p) => format!("{} (mounted by sendsight)", p.display()),
            };
            report.ok = loaded.core_ok();
            report.transport = Some(loaded.transport.clone());
            report.probes = loaded.report.clone();
            report.missing_members = loaded.missing_members.clone();
            loaded.detach();
        }
        Err(e) => {
            report.tracefs = if tracefs::exists(
                std::path::Path::new(tracefs::MOUNT_POINT),
                "tcp",
                "tcp_retransmit_skb",
            ) {
                tracefs::MOUNT_POINT.to_string()
            } else {
                "not available".into()
            };
            report.error = Some(e.to_string());
        }
    }
    report
}

pub fn render_text(r: &Report) -> String {
    let mut out = String::new();
    out += &format!("kernel        {} ({})\n", r.kernel, r.arch);
    out += &format!("btf           {}\n", r.btf);
    out += &format!("tracefs       {}\n", r.tracefs);
    out += &format!("capabilities  {}\n", r.capabilities);
    out += &format!(
        "HZ            {}\n",
        r.hz.map_or("unknown (rto_ms will be null)".to_string(), |h| h
            .to_string())
    );
    if let Some(t) = &r.transport {
        out += &format!("transport     {} ({})\n", t.kind.name(), t.why);
    }
    if let Some(e) = &r.error {
        out += &format!("error         {e}\n");
    }
    if !r.probes.is_empty() {
        out += &format!(
            "\n{:<16} {:<12} {:<40} {}\n",
            "PROBE", "STATE", "ATTACH", "NOTE"
        );
        for p in &r.probes {
            let state = match p.state {
                State::Attached => "attached",
                State::Degraded => "degraded",
                State::Unavailable => "UNAVAILABLE",
            };
            out += &format!(
                "{:<16} {:<12} {:<40} {}\n",
                p.probe, state, p.attach, p.note
            );
        }
    }
    if !r.missing_members.is_empty() {
        out += "\nkernel struct members not found (fields depending on them are reported as unknown):\n";
        for m in &r.missing_members {
            out += &format!("  - {m}\n");
        }
    }
    out += &format!(
        "\nverdict: {}\n",
        if r.ok {
            "OK: sendsight can do its core job on this kernel"
        } else {
            "NOT OK: retransmits or send errors cannot be observed"
        }
    );
    out
}
