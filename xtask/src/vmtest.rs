//! `cargo xtask vmtest [--kernel 6.1|6.12|all]`: the kernel matrix. Boots Debian's
//! cloud kernels under qemu (software emulation: TCG), runs `sendsight check` and
//! the end-to-end suite inside, and prints kernel x probe x attach x state plus
//! per-test results and the time each kernel took.
//!
//! Everything comes from Debian's package registry and is cached under
//! `target/vmtest/`: the kernel packages (`apt-get download` + `dpkg-deb -x`, once per
//! package version), then per run an initramfs (a newc cpio written here, gzip'd)
//! holding busybox, the agent, the test binaries, ip/nft/setpriv/sysctl with their
//! shared libraries, and the kernel modules the tests need (veth, nf_tables...,
//! dependency order from each module's own `.modinfo`: the package has no
//! modules.dep, depmod runs at install time).
//!
//! The guest's /init prints `SENDSIGHT-VMTEST-*` markers on the serial console;
//! the whole console goes to `target/vmtest/<kernel>.log`.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::{BufRead as _, BufReader, BufWriter, Write as _},
    path::{Path, PathBuf},
    process::{Command, Stdio},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use serde_json::Value;

use crate::{build, cmd};

fn say(msg: &str) {
    eprintln!("xtask vmtest: {msg}");
}

// ---------------------------------------------------------------------------------
// What to run
// ---------------------------------------------------------------------------------

/// A kernel series of the matrix: Debian's cloud flavour (small, virtio and serial
/// built in, BTF on), newest package available from the configured sources.
#[derive(Clone, Copy, Debug)]
pub struct Series {
    pub label: &'static str,
    /// Package name = prefix + number + suffix; the newest number wins.
    prefix: &'static str,
    suffix: &'static str,
}

pub const SERIES: &[Series] = &[
    Series {
        label: "6.1",
        prefix: "linux-image-6.1.0-",
        suffix: "-cloud-amd64",
    },
    Series {
        label: "6.12",
        // bookworm carries 6.12 (the trixie kernel) in bookworm-security.
        prefix: "linux-image-6.12.",
        suffix: "+deb12-cloud-amd64",
    },
];

pub fn series(sel: &str) -> anyhow::Result<Vec<Series>> {
    if sel == "all" {
        return Ok(SERIES.to_vec());
    }
    SERIES
        .iter()
        .find(|s| s.label == sel)
        .map(|s| vec![*s])
        .ok_or_else(|| anyhow::anyhow!("unknown kernel {sel:?}: 6.1, 6.12 or all"))
}

/// Test binaries (tests/tests/*.rs) run in the guest by default: the ones that
/// exercise the probes against the kernel (about 3 minutes per kernel under TCG).
/// Left out: `scenarios_selftest` (the scenarios without the agent), `schema` (reads
/// the source tree), `lifecycle` (races the agent's start-up under emulation, see
/// the README), and the operability tests (sinks, files: not kernel-dependent).
pub const DEFAULT_TESTS: &[&str] = &[
    "cli",
    "probes",
    "retransmit",
    "flood",
    "verdicts",
    "udp_queue",
];

/// Per-kernel limit on the whole boot-check-test-poweroff (a run takes about 4
/// minutes), and per test inside (the slowest takes 25 s under TCG; a hung test and
/// its retry stay within the kernel's limit).
pub const DEFAULT_TIMEOUT_S: u64 = 600;
const PER_TEST_TIMEOUT_S: u64 = 120;

pub struct Options {
    pub series: Vec<Series>,
    pub tests: Vec<String>,
    pub timeout: Duration,
}

// ---------------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------------

#[derive(Clone, Debug)]
pub struct ProbeRow {
    pub probe: String,
    pub attach: String,
    pub state: String,
    pub note: String,
}

#[derive(Clone, Debug)]
pub struct TestRow {
    pub name: String,
    /// PASS, FLAKY (failed once, passed on the one retry), FAIL or TIMEOUT.
    pub result: String,
    pub secs: f64,
}

impl TestRow {
    pub fn ok(&self) -> bool {
        self.result == "PASS" || self.result == "FLAKY"
    }
}

#[derive(Debug)]
pub struct KernelRun {
    pub label: String,
    /// `uname -r` as the guest (or host) reported it.
    pub release: String,
    pub package: String,
    pub check_ok: Option<bool>,
    pub probes: Vec<ProbeRow>,
    pub missing_members: Vec<String>,
    pub tests: Vec<TestRow>,
    pub boot_s: Option<f64>,
    pub check_s: Option<f64>,
    pub tests_s: Option<f64>,
    pub wall_s: f64,
    /// Why this kernel failed as a whole (no boot, timeout, check error...).
    pub errors: Vec<String>,
    pub log: Option<PathBuf>,
}

impl KernelRun {
    fn new(label: &str, package: &str) -> Self {
        KernelRun {
            label: label.into(),
            release: String::new(),
            package: package.into(),
            check_ok: None,
            probes: Vec::new(),
            missing_members: Vec::new(),
            tests: Vec::new(),
            boot_s: None,
            check_s: None,
            tests_s: None,
            wall_s: 0.0,
            errors: Vec::new(),
            log: None,
        }
    }

    pub fn passed(&self) -> bool {
        self.errors.is_empty() && self.check_ok == Some(true) && self.tests.iter().all(|t| t.ok())
    }
}

// ---------------------------------------------------------------------------------
// Entry point
// ---------------------------------------------------------------------------------

fn vm_dir() -> PathBuf {
    cmd::root().join("target/vmtest")
}

/// Runs the matrix and prints it; Err when any kernel failed in any way.
pub fn vmtest(opts: &Options) -> anyhow::Result<()> {
    let runs = run_matrix(opts)?;
    let host = host_check();
    print_matrix(Some(&host), &runs);
    verdict(&runs)
}

/// Err naming every kernel that failed.
pub fn verdict(runs: &[KernelRun]) -> anyhow::Result<()> {
    let failed: Vec<String> = runs
        .iter()
        .filter(|r| !r.passed())
        .map(|r| {
            let mut why = r.errors.clone();
            if r.check_ok == Some(false) {
                why.push("check says NOT OK".into());
            }
            let bad: Vec<&str> = r
                .tests
                .iter()
                .filter(|t| !t.ok())
                .map(|t| t.name.as_str())
                .collect();
            if !bad.is_empty() {
                why.push(format!("failed: {}", bad.join(", ")));
            }
            format!(
                "{} ({}): {}; log {}",
                r.label,
                r.package,
                why.join("; "),
                r.log
                    .as_ref()
                    .map_or("none".into(), |p| p.display().to_string())
            )
        })
        .collect();
    if failed.is_empty() {
        Ok(())
    } else {
        bail!("kernel matrix failed:\n  {}", failed.join("\n  "))
    }
}

/// Builds everything, then boots each kernel in turn.
pub fn run_matrix(opts: &Options) -> anyhow::Result<Vec<KernelRun>> {
    let dir = vm_dir();
    fs::create_dir_all(&dir)?;
    // One run at a time per target dir: runs share the stage, initramfs and logs.
    let _lock = lock(&dir.join(".lock"))?;
    // Kernels first: a missing kernel fails before minutes of building.
    let mut kernels = Vec::new();
    for s in &opts.series {
        kernels
            .push(obtain_kernel(s).with_context(|| format!("cannot obtain a {} kernel", s.label))?);
    }
    build::build(false)?;
    let tests = build_test_binaries(&opts.tests)?;
    let common = common_tree(&dir, &tests).context("preparing the initramfs contents")?;
    let mut runs = Vec::new();
    for k in &kernels {
        let t = Instant::now();
        let initrd = dir.join(format!("initramfs-{}.cpio.gz", k.series.label));
        let tree = k
            .module_tree(&dir.join(format!("modules-{}", k.series.label)))
            .with_context(|| format!("kernel modules of {}", k.package))?;
        write_initramfs(&initrd, &common, &tree)?;
        say(&format!(
            "initramfs for {} ready ({} MiB, {:.1} s)",
            k.release,
            fs::metadata(&initrd)?.len() >> 20,
            t.elapsed().as_secs_f64()
        ));
        runs.push(boot(k, &initrd, opts.timeout));
    }
    Ok(runs)
}

/// An exclusive flock on `path`, held until the file is dropped; waits (saying so)
/// while another run holds it.
fn lock(path: &Path) -> anyhow::Result<fs::File> {
    use std::os::fd::AsRawFd as _;
    let f = fs::File::create(path).with_context(|| format!("{}", path.display()))?;
    // SAFETY: flock on a file descriptor we own.
    if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } != 0 {
        say(&format!(
            "waiting for another vmtest run in this target dir ({})",
            path.display()
        ));
        // SAFETY: as above.
        if unsafe { libc::flock(f.as_raw_fd(), libc::LOCK_EX) } != 0 {
            bail!(
                "flock {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
        }
    }
    Ok(f)
}

// ---------------------------------------------------------------------------------
// Kernels from Debian's registry
// ---------------------------------------------------------------------------------

pub struct Kernel {
    series: Series,
    package: String,
    version: String,
    release: String,
    /// Extracted package.
    root: PathBuf,
}

impl Kernel {
    fn vmlinuz(&self) -> PathBuf {
        self.root.join(format!("boot/vmlinuz-{}", self.release))
    }
    fn modules(&self) -> PathBuf {
        self.root.join(format!("lib/modules/{}", self.release))
    }
}

/// The number in a package name of the series, if the name belongs to it.
fn series_number(s: &Series, name: &str) -> Option<u64> {
    name.strip_prefix(s.prefix)?
        .strip_suffix(s.suffix)?
        .parse()
        .ok()
}

/// (package, candidate version) of every package of the series apt can install.
fn apt_candidates(s: &Series) -> Vec<(u64, String, String)> {
    let names: Vec<String> = cmd::output("apt-cache", &["pkgnames", s.prefix])
        .unwrap_or_default()
        .lines()
        .filter(|n| series_number(s, n).is_some())
        .map(str::to_string)
        .collect();
    if names.is_empty() {
        return Vec::new();
    }
    let mut args = vec!["policy"];
    args.extend(names.iter().map(String::as_str));
    let policy = cmd::output("apt-cache", &args).unwrap_or_default();
    let mut out = Vec::new();
    let mut current: Option<String> = None;
    for line in policy.lines() {
        if !line.starts_with(' ') && line.ends_with(':') {
            current = Some(line.trim_end_matches(':').to_string());
        } else if let Some(v) = line.trim().strip_prefix("Candidate: ")
            && v != "(none)"
            && let Some(name) = current.take()
            && let Some(n) = series_number(s, &name)
        {
            out.push((n, name, v.to_string()));
        }
    }
    out.sort();
    out
}

fn kernel_cache() -> PathBuf {
    vm_dir().join("kernels")
}

/// Newest kernel package of the series, downloaded and unpacked once.
fn obtain_kernel(s: &Series) -> anyhow::Result<Kernel> {
    let mut cands = apt_candidates(s);
    if cands.is_empty() && unsafe { libc::geteuid() } == 0 {
        say("no kernel packages in apt's lists; apt-get update");
        cmd::run(cmd::command("apt-get").args(["update", "-q"]))?;
        cands = apt_candidates(s);
    }
    let cache = kernel_cache();
    fs::create_dir_all(&cache)?;
    let Some((_, package, version)) = cands.pop() else {
        // Offline with stale lists: an unpacked kernel of the series still serves.
        if let Some(k) = newest_cached(s)? {
            say(&format!(
                "no {} kernel in apt's lists; using the cached {}",
                s.label, k.package
            ));
            return Ok(k);
        }
        bail!(
            "no package {}<N>{} in the configured Debian sources (apt-cache pkgnames {})",
            s.prefix,
            s.suffix,
            s.prefix
        );
    };
    let dir = cache.join(format!("{package}_{version}"));
    if !dir.join(".unpacked").exists() {
        download_and_unpack(&package, &version, &dir)?;
        // Older kernels of the series are superseded.
        for e in fs::read_dir(&cache)?.filter_map(Result::ok) {
            let name = e.file_name().to_string_lossy().into_owned();
            if e.path() != dir
                && name
                    .split_once('_')
                    .is_some_and(|(p, _)| series_number(s, p).is_some())
            {
                let _ = fs::remove_dir_all(e.path());
            }
        }
    }
    kernel_in(s, &package, &version, &dir)
}

fn kernel_in(s: &Series, package: &str, version: &str, dir: &Path) -> anyhow::Result<Kernel> {
    let release = package
        .strip_prefix("linux-image-")
        .expect("series prefix")
        .to_string();
    let k = Kernel {
        series: *s,
        package: package.into(),
        version: version.into(),
        release,
        root: dir.to_path_buf(),
    };
    if !k.vmlinuz().exists() || !k.modules().exists() {
        bail!(
            "{} has no {} or {}",
            dir.display(),
            k.vmlinuz().display(),
            k.modules().display()
        );
    }
    Ok(k)
}

fn newest_cached(s: &Series) -> anyhow::Result<Option<Kernel>> {
    let mut best: Option<(u64, String, String, PathBuf)> = None;
    for e in fs::read_dir(kernel_cache())? {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        let Some((pkg, ver)) = name.split_once('_') else {
            continue;
        };
        if let Some(n) = series_number(s, pkg)
            && e.path().join(".unpacked").exists()
            && best.as_ref().is_none_or(|b| n > b.0)
        {
            best = Some((n, pkg.into(), ver.into(), e.path()));
        }
    }
    best.map(|(_, p, v, d)| kernel_in(s, &p, &v, &d))
        .transpose()
}

fn download_and_unpack(package: &str, version: &str, dir: &Path) -> anyhow::Result<()> {
    let dl = kernel_cache().join(".download");
    let _ = fs::remove_dir_all(&dl);
    fs::create_dir_all(&dl)?;
    say(&format!(
        "downloading {package} {version} from Debian (apt-get download), once"
    ));
    let t = Instant::now();
    cmd::run(
        cmd::command("apt-get")
            .args(["download", "-q", "-o", "APT::Sandbox::User=root"])
            .arg(format!("{package}={version}"))
            .current_dir(&dl),
    )
    .with_context(|| {
        format!("apt-get download {package}={version} (stale package lists? apt-get update)")
    })?;
    let deb = fs::read_dir(&dl)?
        .filter_map(Result::ok)
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "deb"))
        .context("apt-get download left no .deb")?;
    let tmp = dir.with_extension("tmp");
    let _ = fs::remove_dir_all(&tmp);
    cmd::run(cmd::command("dpkg-deb").arg("-x").arg(&deb).arg(&tmp))?;
    fs::write(tmp.join(".unpacked"), format!("{package} {version}\n"))?;
    let _ = fs::remove_dir_all(dir);
    fs::rename(&tmp, dir)?;
    fs::remove_dir_all(&dl)?;
    say(&format!(
        "unpacked into {} ({:.1} s)",
        dir.display(),
        t.elapsed().as_secs_f64()
    ));
    Ok(())
}

// ---------------------------------------------------------------------------------
// Kernel modules: dependencies from .modinfo, decompressed for busybox insmod
// ---------------------------------------------------------------------------------

/// Loaded at boot, in this order after their dependencies: veth for the
/// topologies, nf_tables and the one expression the kernel does not build in
/// (numgen: "every seventh packet", "random 10 %").
const PRELOAD: &[&str] = &["veth", "nf_tables", "nft_numgen"];

/// Also shipped, for the kernel to autoload (request_module -> busybox modprobe
/// reading our modules.dep/modules.alias) should nft need another expression.
fn autoload_candidate(name: &str) -> bool {
    name.starts_with("nft_") || name.starts_with("nf_reject") || name == "nf_conntrack"
}

struct ModInfo {
    path: PathBuf,
    depends: Vec<String>,
    aliases: Vec<String>,
}

/// Module name as the kernel knows it (file stem, '-' -> '_').
fn module_name(file: &str) -> Option<String> {
    let stem = [".ko", ".ko.xz", ".ko.zst", ".ko.gz"]
        .iter()
        .find_map(|ext| file.strip_suffix(ext))?;
    Some(stem.replace('-', "_"))
}

fn read_module(path: &Path) -> anyhow::Result<Vec<u8>> {
    let name = path.to_string_lossy();
    let tool = if name.ends_with(".xz") {
        Some("xz")
    } else if name.ends_with(".zst") {
        Some("zstd")
    } else if name.ends_with(".gz") {
        Some("gzip")
    } else {
        None
    };
    match tool {
        None => Ok(fs::read(path)?),
        Some(tool) => {
            let out = Command::new(tool)
                .arg("-dc")
                .arg(path)
                .output()
                .with_context(|| format!("{tool} -dc {}", path.display()))?;
            if !out.status.success() {
                bail!("{tool} -dc {} failed: {}", path.display(), out.status);
            }
            Ok(out.stdout)
        }
    }
}

/// The `.modinfo` section of an ELF64 little-endian module: `key=value\0...`.
fn modinfo(elf: &[u8]) -> anyhow::Result<Vec<(String, String)>> {
    let u16_at = |o: usize| -> anyhow::Result<u64> {
        Ok(u16::from_le_bytes(elf.get(o..o + 2).context("short ELF")?.try_into()?) as u64)
    };
    let u32_at = |o: usize| -> anyhow::Result<u64> {
        Ok(u32::from_le_bytes(elf.get(o..o + 4).context("short ELF")?.try_into()?) as u64)
    };
    let u64_at = |o: usize| -> anyhow::Result<u64> {
        Ok(u64::from_le_bytes(
            elf.get(o..o + 8).context("short ELF")?.try_into()?,
        ))
    };
    if elf.get(..4) != Some(b"\x7fELF") || elf.get(4) != Some(&2) || elf.get(5) != Some(&1) {
        bail!("not an ELF64 little-endian object");
    }
    let shoff = u64_at(0x28)? as usize;
    let shentsize = u16_at(0x3a)? as usize;
    let shnum = u16_at(0x3c)? as usize;
    let shstrndx = u16_at(0x3e)? as usize;
    let sh = |i: usize| shoff + i * shentsize;
    let strtab = u64_at(sh(shstrndx) + 0x18)? as usize;
    for i in 0..shnum {
        let name_off = strtab + u32_at(sh(i))? as usize;
        let name = elf
            .get(name_off..)
            .and_then(|s| s.split(|&b| b == 0).next())
            .context("section name")?;
        if name == b".modinfo" {
            let off = u64_at(sh(i) + 0x18)? as usize;
            let size = u64_at(sh(i) + 0x20)? as usize;
            let data = elf.get(off..off + size).context(".modinfo out of bounds")?;
            return Ok(data
                .split(|&b| b == 0)
                .filter_map(|kv| {
                    let kv = String::from_utf8_lossy(kv);
                    let (k, v) = kv.split_once('=')?;
                    Some((k.to_string(), v.to_string()))
                })
                .collect());
        }
    }
    bail!("no .modinfo section")
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        let t = e.file_type()?;
        if t.is_dir() {
            walk(&e.path(), out)?;
        } else if t.is_file() {
            out.push(e.path());
        }
    }
    Ok(())
}

/// What goes to /lib/modules/<release>/ in the guest.
struct ModuleTree {
    release: String,
    /// Path relative to the modules dir (always `.ko`) -> decompressed file.
    files: Vec<(String, PathBuf)>,
    /// Preload order (relative paths).
    load: Vec<String>,
    modules_dep: String,
    modules_alias: String,
    /// /boot/config-<release>, as a Debian system has it (the agent reads HZ there).
    config: PathBuf,
}

impl Kernel {
    fn module_tree(&self, stage: &Path) -> anyhow::Result<ModuleTree> {
        let base = self.modules();
        let mut all = Vec::new();
        walk(&base.join("kernel"), &mut all)?;
        let by_name: BTreeMap<String, PathBuf> = all
            .into_iter()
            .filter_map(|p| Some((module_name(&p.file_name()?.to_string_lossy())?, p)))
            .collect();
        let mut info: BTreeMap<String, ModInfo> = BTreeMap::new();
        let mut want: Vec<String> = PRELOAD.iter().map(|s| s.to_string()).collect();
        want.extend(by_name.keys().filter(|n| autoload_candidate(n)).cloned());
        // Closure over `depends=`.
        let mut todo = want.clone();
        let _ = fs::remove_dir_all(stage);
        while let Some(name) = todo.pop() {
            if info.contains_key(&name) {
                continue;
            }
            let Some(path) = by_name.get(&name) else {
                if PRELOAD.contains(&name.as_str()) {
                    bail!("{} has no module {name} (built in?)", self.package);
                }
                bail!("module {name} (a dependency) not in {}", self.package);
            };
            let elf = read_module(path)?;
            let mi = modinfo(&elf).with_context(|| format!("{}", path.display()))?;
            let depends: Vec<String> = mi
                .iter()
                .filter(|(k, _)| k == "depends")
                .flat_map(|(_, v)| v.split(',').map(|d| d.replace('-', "_")))
                .filter(|d| !d.is_empty())
                .collect();
            let aliases = mi
                .iter()
                .filter(|(k, _)| k == "alias")
                .map(|(_, v)| v.clone())
                .collect();
            todo.extend(depends.iter().cloned());
            let rel = rel_ko(&base, path)?;
            let staged = stage.join(&rel);
            fs::create_dir_all(staged.parent().unwrap())?;
            fs::write(&staged, &elf)?;
            info.insert(
                name,
                ModInfo {
                    path: staged,
                    depends,
                    aliases,
                },
            );
        }
        // Dependency order for the preload list.
        fn visit(
            n: &str,
            info: &BTreeMap<String, ModInfo>,
            done: &mut BTreeSet<String>,
            out: &mut Vec<String>,
        ) {
            if !done.insert(n.to_string()) {
                return;
            }
            for d in &info[n].depends {
                visit(d, info, done, out);
            }
            out.push(n.to_string());
        }
        let mut order = Vec::new();
        let mut done = BTreeSet::new();
        for n in PRELOAD {
            visit(n, &info, &mut done, &mut order);
        }
        let rel_of = |n: &str| -> String {
            info[n]
                .path
                .strip_prefix(stage)
                .unwrap()
                .to_string_lossy()
                .into_owned()
        };
        let mut dep = String::new();
        let mut alias = String::new();
        for (n, mi) in &info {
            // modules.dep lists every dependency, transitively, nearest first.
            let mut all = Vec::new();
            let mut seen = BTreeSet::new();
            for d in &mi.depends {
                visit(d, &info, &mut seen, &mut all);
            }
            all.reverse();
            dep += &format!(
                "{}:{}\n",
                rel_of(n),
                all.iter()
                    .map(|d| format!(" {}", rel_of(d)))
                    .collect::<String>()
            );
            for a in &mi.aliases {
                alias += &format!("alias {a} {n}\n");
            }
        }
        Ok(ModuleTree {
            release: self.release.clone(),
            files: info
                .keys()
                .map(|n| (rel_of(n), info[n].path.clone()))
                .collect(),
            load: order.iter().map(|n| rel_of(n)).collect(),
            modules_dep: dep,
            modules_alias: alias,
            config: self.root.join(format!("boot/config-{}", self.release)),
        })
    }
}

/// `kernel/net/.../x.ko.xz` -> `kernel/net/.../x.ko`
fn rel_ko(base: &Path, path: &Path) -> anyhow::Result<String> {
    let rel = path.strip_prefix(base)?.to_string_lossy().into_owned();
    let cut = rel.find(".ko").context("not a .ko")?;
    Ok(format!("{}.ko", &rel[..cut]))
}

// ---------------------------------------------------------------------------------
// Test binaries
// ---------------------------------------------------------------------------------

/// Builds the end-to-end test binaries; (name, executable) of the selected ones.
fn build_test_binaries(selected: &[String]) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut c = cmd::cargo();
    c.args([
        "test",
        "-p",
        "sendsight-tests",
        "--no-run",
        "--message-format=json",
    ]);
    c.stdout(Stdio::piped());
    let out = c
        .output()
        .context("cargo test -p sendsight-tests --no-run")?;
    if !out.status.success() {
        bail!("building the end-to-end tests failed: {}", out.status);
    }
    let mut found = BTreeMap::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Ok(v) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        if v["reason"] != "compiler-artifact" || v["target"]["kind"] != serde_json::json!(["test"])
        {
            continue;
        }
        if let (Some(name), Some(exe)) = (v["target"]["name"].as_str(), v["executable"].as_str()) {
            found.insert(name.to_string(), PathBuf::from(exe));
        }
    }
    let mut out = Vec::new();
    for name in selected {
        let exe = found.get(name).with_context(|| {
            format!(
                "no end-to-end test binary {name:?} (have: {})",
                found.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })?;
        out.push((name.clone(), exe.clone()));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------
// The initramfs
// ---------------------------------------------------------------------------------

/// Tools the tests run, by name, from the host (Debian's packages, as installed by
/// `cargo xtask setup`): they shadow busybox's applets of the same name.
const HOST_TOOLS: &[&str] = &["ip", "nft", "setpriv", "sysctl"];

enum Node {
    Dir,
    /// Host file copied in, with this mode.
    File(PathBuf, u32),
    Bytes(Vec<u8>, u32),
    Symlink(String),
}

/// Everything but the kernel modules; the same for each kernel.
struct Common {
    nodes: BTreeMap<String, Node>,
}

fn add_parents(nodes: &mut BTreeMap<String, Node>, path: &str) {
    let mut p = path;
    while let Some((parent, _)) = p.rsplit_once('/') {
        if parent.is_empty() {
            break;
        }
        nodes.entry(parent.to_string()).or_insert(Node::Dir);
        p = parent;
    }
}

fn put(nodes: &mut BTreeMap<String, Node>, path: &str, node: Node) {
    let path = path.trim_start_matches('/').to_string();
    add_parents(nodes, &path);
    nodes.insert(path, node);
}

/// Shared libraries `ldd` lists for `bin`, plus the dynamic loader.
fn shared_libs(bin: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let out = Command::new("ldd")
        .arg(bin)
        .output()
        .with_context(|| format!("ldd {}", bin.display()))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        if text.contains("not a dynamic executable") || err.contains("not a dynamic executable") {
            return Ok(Vec::new());
        }
        bail!("ldd {} failed: {text}{err}", bin.display());
    }
    let mut libs = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        let path = match line.split_once("=>") {
            Some((_, rest)) => rest.split_whitespace().next(),
            None => line.split_whitespace().next(),
        };
        if let Some(p) = path
            && p.starts_with('/')
        {
            libs.push(PathBuf::from(p));
        } else if line.contains("not found") {
            bail!("ldd {}: {line}", bin.display());
        }
    }
    Ok(libs)
}

/// A copy without debug info (the debug build of the agent is ~70 MB, mostly DWARF):
/// a smaller initramfs boots faster under emulation. Symbols stay for backtraces.
fn stripped(src: &Path, stage: &Path, name: &str) -> anyhow::Result<PathBuf> {
    let dst = stage.join(name);
    cmd::run(
        cmd::command("objcopy")
            .arg("--strip-debug")
            .arg(src)
            .arg(&dst),
    )?;
    Ok(dst)
}

fn common_tree(dir: &Path, tests: &[(String, PathBuf)]) -> anyhow::Result<Common> {
    let stage = dir.join("stage");
    let _ = fs::remove_dir_all(&stage);
    fs::create_dir_all(&stage)?;
    let mut nodes = BTreeMap::new();
    for d in [
        "proc", "sys", "dev", "run", "tmp", "root", "etc", "bin", "sbin", "usr/bin", "usr/sbin",
    ] {
        put(&mut nodes, d, Node::Dir);
    }
    put(&mut nodes, "var/run", Node::Symlink("../run".into()));

    // busybox: /bin/sh and every applet, except the real tools'.
    let busybox = which::which("busybox").context(
        "busybox not found (`cargo xtask setup` installs busybox-static for the VM tests)",
    )?;
    if !shared_libs(&busybox)?.is_empty() {
        bail!(
            "{} is dynamically linked: the VM needs busybox-static",
            busybox.display()
        );
    }
    put(
        &mut nodes,
        "bin/busybox",
        Node::File(busybox.clone(), 0o755),
    );
    let applets = cmd::output(busybox.to_str().unwrap(), &["--list"]).context("busybox --list")?;
    for a in applets.lines().map(str::trim).filter(|a| !a.is_empty()) {
        if HOST_TOOLS.contains(&a) || a == "busybox" {
            continue;
        }
        put(
            &mut nodes,
            &format!("bin/{a}"),
            Node::Symlink("busybox".into()),
        );
    }
    put(
        &mut nodes,
        "sbin/modprobe",
        Node::Symlink("../bin/busybox".into()),
    );
    put(
        &mut nodes,
        "sbin/insmod",
        Node::Symlink("../bin/busybox".into()),
    );

    // Dynamic executables and their libraries.
    let mut dynamic: Vec<(String, PathBuf)> = Vec::new();
    let agent = cmd::root().join("target/debug/sendsight");
    dynamic.push(("sendsight".into(), stripped(&agent, &stage, "sendsight")?));
    for (name, exe) in tests {
        dynamic.push((format!("tests/{name}"), stripped(exe, &stage, name)?));
    }
    let search = "/usr/sbin:/usr/bin:/sbin:/bin";
    for tool in HOST_TOOLS {
        let p = which::which_in(tool, Some(search), "/").with_context(|| {
            format!("{tool} not found on this host (`cargo xtask setup` installs it)")
        })?;
        dynamic.push((format!("usr/sbin/{tool}"), fs::canonicalize(&p)?));
    }
    let mut libs = BTreeSet::new();
    for (dst, src) in &dynamic {
        put(&mut nodes, dst, Node::File(src.clone(), 0o755));
        libs.extend(shared_libs(src)?);
    }
    for lib in libs {
        // At the path ldd names (the loader's /lib64/... too), content resolved.
        let real = fs::canonicalize(&lib)?;
        put(&mut nodes, &lib.to_string_lossy(), Node::File(real, 0o755));
    }

    // /etc: enough for nft (protocol and service names) and setpriv (nobody).
    for f in ["protocols", "services"] {
        let p = Path::new("/etc").join(f);
        if p.exists() {
            put(&mut nodes, &format!("etc/{f}"), Node::File(p, 0o644));
        }
    }
    put(
        &mut nodes,
        "etc/passwd",
        Node::Bytes(
            b"root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
                .to_vec(),
            0o644,
        ),
    );
    put(
        &mut nodes,
        "etc/group",
        Node::Bytes(b"root:x:0:\nnogroup:x:65534:\n".to_vec(), 0o644),
    );
    let names: Vec<&str> = tests.iter().map(|(n, _)| n.as_str()).collect();
    put(
        &mut nodes,
        "vmtest/tests",
        Node::Bytes(format!("{}\n", names.join("\n")).into_bytes(), 0o644),
    );
    put(
        &mut nodes,
        "init",
        Node::Bytes(init_script().into_bytes(), 0o755),
    );
    Ok(Common { nodes })
}

fn init_script() -> String {
    format!(
        r#"#!/bin/sh
# sendsight vmtest guest init (written by xtask/src/vmtest.rs): mount, load modules,
# run `sendsight check` and the end-to-end tests, print markers, power off.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export LD_LIBRARY_PATH=/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu
export HOME=/root TMPDIR=/tmp SENDSIGHT_BIN=/sendsight RUST_BACKTRACE=1
up() {{ cut -d' ' -f1 /proc/uptime; }}
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts devpts /dev/pts
mount -t tmpfs tmpfs /dev/shm
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t bpf bpf /sys/fs/bpf
mount -t tracefs tracefs /sys/kernel/tracing
echo /sbin/modprobe > /proc/sys/kernel/modprobe
KVER=$(uname -r)
while read m; do
  insmod /lib/modules/$KVER/$m || echo "SENDSIGHT-VMTEST-ERROR insmod $m failed"
done < /vmtest/modules.load
ip link set lo up
echo "SENDSIGHT-VMTEST-BOOTED $KVER $(up)"
echo SENDSIGHT-VMTEST-CHECK-JSON-BEGIN
/sendsight check --json
echo "SENDSIGHT-VMTEST-CHECK-JSON-END $? $(up)"
/sendsight check
for bin in $(cat /vmtest/tests); do
  for t in $(/tests/$bin --list --format=terse 2>/dev/null | sed -n 's/: test$//p'); do
    echo "SENDSIGHT-VMTEST-BEGIN $bin::$t $(up)"
    s=$(up)
    timeout -s KILL {PER_TEST_TIMEOUT_S} /tests/$bin --exact "$t" --test-threads=1 </dev/null
    rc=$?
    case $rc in
      0) r=PASS ;;
      137|124) r=TIMEOUT ;;
      *)
        # Once more: emulation stalls a vCPU now and then (spurious RTOs). A pass
        # on the second try is reported as FLAKY, never silently as PASS.
        echo "SENDSIGHT-VMTEST-RETRY $bin::$t $(up)"
        if timeout -s KILL {PER_TEST_TIMEOUT_S} /tests/$bin --exact "$t" --test-threads=1 </dev/null; then
          r=FLAKY
        else
          r=FAIL
        fi ;;
    esac
    echo "SENDSIGHT-VMTEST-RESULT $bin::$t $r $s $(up)"
  done
done
echo "SENDSIGHT-VMTEST-DONE $(up)"
sync
poweroff -f
"#
    )
}

/// newc ("070701") cpio writer: the format the kernel unpacks into its rootfs.
struct Cpio<W: std::io::Write> {
    out: W,
    ino: u32,
    written: u64,
}

impl<W: std::io::Write> Cpio<W> {
    fn entry(&mut self, name: &str, mode: u32, data: &[u8]) -> std::io::Result<()> {
        self.ino += 1;
        let nlink = if mode & 0o170000 == 0o040000 { 2 } else { 1 };
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0,
            0,
            nlink,
            0,
            data.len(),
            0,
            0,
            0,
            0,
            name.len() + 1,
            0
        );
        self.write(header.as_bytes())?;
        self.write(name.as_bytes())?;
        self.write(&[0])?;
        self.pad()?;
        self.write(data)?;
        self.pad()
    }
    fn write(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.written += b.len() as u64;
        self.out.write_all(b)
    }
    fn pad(&mut self) -> std::io::Result<()> {
        let n = (4 - (self.written % 4) as usize) % 4;
        self.write(&[0u8; 3][..n])
    }
    fn finish(mut self) -> std::io::Result<W> {
        self.entry("TRAILER!!!", 0, &[])?;
        self.out.flush()?;
        Ok(self.out)
    }
}

fn write_initramfs(path: &Path, common: &Common, modules: &ModuleTree) -> anyhow::Result<()> {
    let mut extra = BTreeMap::new();
    let moddir = format!("lib/modules/{}", modules.release);
    for (rel, file) in &modules.files {
        put(
            &mut extra,
            &format!("{moddir}/{rel}"),
            Node::File(file.clone(), 0o644),
        );
    }
    put(
        &mut extra,
        &format!("{moddir}/modules.dep"),
        Node::Bytes(modules.modules_dep.clone().into_bytes(), 0o644),
    );
    put(
        &mut extra,
        &format!("{moddir}/modules.alias"),
        Node::Bytes(modules.modules_alias.clone().into_bytes(), 0o644),
    );
    put(
        &mut extra,
        &format!("boot/config-{}", modules.release),
        Node::File(modules.config.clone(), 0o644),
    );
    put(
        &mut extra,
        "vmtest/modules.load",
        Node::Bytes(format!("{}\n", modules.load.join("\n")).into_bytes(), 0o644),
    );
    // Merged, sorted: a directory always precedes what it holds.
    let mut all: BTreeMap<&str, &Node> = BTreeMap::new();
    for (k, v) in common.nodes.iter().chain(extra.iter()) {
        all.insert(k.as_str(), v);
    }
    let mut gz = Command::new("gzip")
        .args(["-1", "-n", "-c"])
        .stdin(Stdio::piped())
        .stdout(fs::File::create(path)?)
        .spawn()
        .context("gzip")?;
    let mut cpio = Cpio {
        out: BufWriter::with_capacity(1 << 20, gz.stdin.take().unwrap()),
        ino: 0,
        written: 0,
    };
    for (name, node) in all {
        match node {
            Node::Dir => cpio.entry(name, 0o040755, &[])?,
            Node::Symlink(t) => cpio.entry(name, 0o120777, t.as_bytes())?,
            Node::Bytes(b, mode) => cpio.entry(name, 0o100000 | mode, b)?,
            Node::File(src, mode) => {
                let data = fs::read(src).with_context(|| format!("{}", src.display()))?;
                cpio.entry(name, 0o100000 | mode, &data)?
            }
        }
    }
    drop(cpio.finish()?);
    let st = gz.wait()?;
    if !st.success() {
        bail!("gzip failed: {st}");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------
// Booting and reading the console
// ---------------------------------------------------------------------------------

const MARK: &str = "SENDSIGHT-VMTEST-";

fn boot(k: &Kernel, initrd: &Path, timeout: Duration) -> KernelRun {
    let mut run = KernelRun::new(k.series.label, &format!("{} {}", k.package, k.version));
    let log_path = vm_dir().join(format!("{}.log", k.series.label));
    run.log = Some(log_path.clone());
    say(&format!(
        "booting {} under qemu (TCG, 2 vCPUs, 2 GiB), timeout {} s; console -> {}",
        k.release,
        timeout.as_secs(),
        log_path.display()
    ));
    let t0 = Instant::now();
    let mut c = Command::new("qemu-system-x86_64");
    c.args(["-accel", "tcg,thread=multi", "-cpu", "max", "-m", "2048"])
        .args(["-smp", "2", "-nographic", "-no-reboot", "-nic", "none"])
        .arg("-kernel")
        .arg(k.vmlinuz())
        .arg("-initrd")
        .arg(initrd)
        .args([
            "-append",
            "console=ttyS0 panic=-1 quiet loglevel=4 oops=panic",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = match c.spawn() {
        Ok(c) => c,
        Err(e) => {
            run.errors.push(format!(
                "cannot start qemu-system-x86_64: {e} (`cargo xtask setup` installs qemu-system-x86)"
            ));
            return run;
        }
    };
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let log = match fs::File::create(&log_path) {
        Ok(f) => Arc::new(Mutex::new(f)),
        Err(e) => {
            run.errors.push(format!("{}: {e}", log_path.display()));
            let _ = child.kill();
            return run;
        }
    };
    let label = k.series.label;
    let mut readers = Vec::new();
    for (stream, is_err) in [
        (
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            false,
        ),
        (Box::new(child.stderr.take().unwrap()), true),
    ] {
        let lines = lines.clone();
        let log = log.clone();
        readers.push(std::thread::spawn(move || {
            let mut r = BufReader::new(stream);
            let mut buf = Vec::new();
            loop {
                buf.clear();
                match r.read_until(b'\n', &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
                let line = String::from_utf8_lossy(&buf)
                    .trim_end_matches(['\r', '\n'])
                    .replace('\r', "");
                let _ = writeln!(log.lock().unwrap(), "{line}");
                if is_err {
                    eprintln!("[{label} qemu] {line}");
                } else if let Some(i) = line.find(MARK) {
                    let m = &line[i + MARK.len()..];
                    if !m.starts_with("CHECK-JSON") {
                        eprintln!("[{label} +{:.0}s] {m}", t0.elapsed().as_secs_f64());
                    }
                }
                lines.lock().unwrap().push(line);
            }
        }));
    }
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) => {}
            Err(e) => {
                run.errors.push(format!("waiting for qemu: {e}"));
                break None;
            }
        }
        if t0.elapsed() > timeout {
            let _ = child.kill();
            let _ = child.wait();
            run.errors.push(format!(
                "TIMEOUT: the VM was still running after {} s (killed)",
                timeout.as_secs()
            ));
            break None;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    for r in readers {
        let _ = r.join();
    }
    run.wall_s = t0.elapsed().as_secs_f64();
    let lines = std::mem::take(&mut *lines.lock().unwrap());
    parse_console(&lines, &mut run);
    if let Some(s) = status
        && !s.success()
    {
        run.errors.push(format!("qemu exited {s}"));
    }
    if run.release.is_empty() {
        let tail: Vec<&str> = lines
            .iter()
            .rev()
            .take(30)
            .rev()
            .map(String::as_str)
            .collect();
        run.errors.push(format!(
            "the guest never reached its tests (no BOOTED marker); last console lines:\n    {}",
            tail.join("\n    ")
        ));
    } else if !lines.iter().any(|l| l.contains("SENDSIGHT-VMTEST-DONE")) && run.errors.is_empty() {
        run.errors
            .push("the guest stopped before its DONE marker".into());
    }
    // The output of each failed (or flaky) test, for the terminal (CI logs).
    for t in run.tests.iter().filter(|t| t.result != "PASS") {
        let begin = format!("{MARK}BEGIN {} ", t.name);
        if let Some(start) = lines.iter().position(|l| l.contains(&begin)) {
            eprintln!("---- {} on {}: {} ----", t.name, run.label, t.result);
            for l in lines[start + 1..]
                .iter()
                .take_while(|l| !l.contains(&format!("{MARK}RESULT")))
            {
                eprintln!("  {l}");
            }
        }
    }
    say(&format!(
        "{}: {} in {:.0} s",
        k.release,
        if run.passed() { "passed" } else { "FAILED" },
        run.wall_s
    ));
    run
}

fn parse_console(lines: &[String], run: &mut KernelRun) {
    let mut json: Option<String> = None;
    let mut booted_at = None;
    let mut first_test = None;
    let mut last_end = None;
    for line in lines {
        if let Some(j) = json.as_mut()
            && !line.contains(MARK)
        {
            j.push_str(line);
            j.push('\n');
            continue;
        }
        let Some(i) = line.find(MARK) else { continue };
        let f: Vec<&str> = line[i + MARK.len()..].split_whitespace().collect();
        let num = |s: Option<&&str>| s.and_then(|s| s.parse::<f64>().ok());
        match f.first().copied() {
            Some("BOOTED") => {
                run.release = f.get(1).unwrap_or(&"").to_string();
                booted_at = num(f.get(2));
                run.boot_s = booted_at;
            }
            Some("ERROR") => run.errors.push(f[1..].join(" ")),
            Some("CHECK-JSON-BEGIN") => json = Some(String::new()),
            Some("CHECK-JSON-END") => {
                let text = json.take().unwrap_or_default();
                if let (Some(b), Some(e)) = (booted_at, num(f.get(2))) {
                    run.check_s = Some(e - b);
                }
                match serde_json::from_str::<Value>(&text) {
                    Ok(v) => read_check(&v, run),
                    Err(e) => run.errors.push(format!(
                        "sendsight check --json (exit {}) printed no JSON ({e}): {}",
                        f.get(1).unwrap_or(&"?"),
                        text.trim()
                    )),
                }
            }
            Some("RESULT") if f.len() >= 5 => {
                let (s, e) = (num(f.get(3)).unwrap_or(0.0), num(f.get(4)).unwrap_or(0.0));
                first_test.get_or_insert(s);
                last_end = Some(e);
                run.tests.push(TestRow {
                    name: f[1].to_string(),
                    result: f[2].to_string(),
                    secs: e - s,
                });
            }
            _ => {}
        }
    }
    if let (Some(s), Some(e)) = (first_test, last_end) {
        run.tests_s = Some(e - s);
    }
}

fn read_check(v: &Value, run: &mut KernelRun) {
    run.check_ok = v["ok"].as_bool();
    if run.release.is_empty() {
        run.release = v["kernel"].as_str().unwrap_or("").into();
    }
    if let Some(e) = v["error"].as_str() {
        run.errors.push(format!("sendsight check: {e}"));
    }
    for p in v["probes"].as_array().into_iter().flatten() {
        run.probes.push(ProbeRow {
            probe: p["probe"].as_str().unwrap_or("?").into(),
            attach: p["attach"].as_str().unwrap_or("?").into(),
            state: p["state"].as_str().unwrap_or("?").into(),
            note: p["note"].as_str().unwrap_or("").into(),
        });
    }
    run.missing_members = v["missing_members"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m.as_str().map(str::to_string))
        .collect();
}

/// The host kernel's row: `sendsight check --json` run natively.
pub fn host_check() -> KernelRun {
    let mut run = KernelRun::new("host", "(this machine's kernel)");
    let t = Instant::now();
    let bin = cmd::root().join("target/debug/sendsight");
    match Command::new(&bin).args(["check", "--json"]).output() {
        Ok(out) => match serde_json::from_slice::<Value>(&out.stdout) {
            Ok(v) => read_check(&v, &mut run),
            Err(e) => run.errors.push(format!(
                "{} check --json: {e}: {}",
                bin.display(),
                String::from_utf8_lossy(&out.stderr)
            )),
        },
        Err(e) => run.errors.push(format!("{}: {e}", bin.display())),
    }
    run.check_s = Some(t.elapsed().as_secs_f64());
    run.wall_s = t.elapsed().as_secs_f64();
    run
}

// ---------------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------------

fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut w: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            w[i] = w[i].max(c.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let s: Vec<String> = cells
            .iter()
            .enumerate()
            .map(|(i, c)| format!("{c:<width$}", width = w[i]))
            .collect();
        format!("| {} |\n", s.join(" | "))
    };
    let mut out = line(header.to_vec());
    out += &format!(
        "|{}|\n",
        w.iter()
            .map(|n| "-".repeat(n + 2))
            .collect::<Vec<_>>()
            .join("|")
    );
    for r in rows {
        out += &line(r.iter().map(String::as_str).collect());
    }
    out
}

/// Verifier logs span lines; a table cell or list item cannot.
fn one_line(s: &str) -> String {
    s.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join(" / ")
        .replace('|', "/")
}

fn secs(s: Option<f64>) -> String {
    s.map_or("-".into(), |s| format!("{s:.0} s"))
}

/// The matrix as markdown tables (what the README's "Kernel matrix" shows).
pub fn render(host: Option<&KernelRun>, runs: &[KernelRun]) -> String {
    let all: Vec<&KernelRun> = host.into_iter().chain(runs.iter()).collect();
    let kname = |r: &KernelRun| {
        if r.release.is_empty() {
            r.label.clone()
        } else if r.label == "host" {
            format!("{} (host)", r.release)
        } else {
            r.release.clone()
        }
    };
    let mut out = String::new();
    // Probes: one row per probe, one column per kernel, "state: attach method";
    // the notes (why degraded or unavailable, and the fallback) below.
    let mut probes: Vec<String> = Vec::new();
    for r in &all {
        for p in &r.probes {
            if !probes.contains(&p.probe) {
                probes.push(p.probe.clone());
            }
        }
    }
    let header: Vec<String> = std::iter::once("probe".to_string())
        .chain(all.iter().map(|r| kname(r)))
        .collect();
    let mut rows = Vec::new();
    for probe in &probes {
        let mut row = vec![probe.clone()];
        for r in &all {
            row.push(match r.probes.iter().find(|p| &p.probe == probe) {
                Some(p) => format!("{}: {}", p.state, p.attach),
                None if r.probes.is_empty() => "NO REPORT".into(),
                None => "-".into(),
            });
        }
        rows.push(row);
    }
    out += &table(
        &header.iter().map(String::as_str).collect::<Vec<_>>(),
        &rows,
    );
    let mut notes = String::new();
    for r in &all {
        for p in r.probes.iter().filter(|p| !p.note.is_empty()) {
            notes += &format!(
                "- {} {} ({}): {}\n",
                kname(r),
                p.probe,
                p.state,
                one_line(&p.note)
            );
        }
        if r.probes.is_empty()
            && let Some(e) = r.errors.first()
        {
            notes += &format!("- {}: no probe report: {}\n", kname(r), one_line(e));
        }
    }
    if !notes.is_empty() {
        out += "\n";
        out += &notes;
    }

    // Tests: one row per test, one column per kernel.
    let mut names: Vec<String> = Vec::new();
    for r in runs {
        for t in &r.tests {
            if !names.contains(&t.name) {
                names.push(t.name.clone());
            }
        }
    }
    if !runs.is_empty() {
        let header: Vec<String> = std::iter::once("test".to_string())
            .chain(runs.iter().map(kname))
            .collect();
        let mut rows = Vec::new();
        for n in &names {
            let mut row = vec![n.clone()];
            for r in runs {
                row.push(
                    r.tests
                        .iter()
                        .find(|t| &t.name == n)
                        .map_or("not run".into(), |t| {
                            format!("{} ({:.0} s)", t.result, t.secs)
                        }),
                );
            }
            rows.push(row);
        }
        out += "\n";
        out += &table(
            &header.iter().map(String::as_str).collect::<Vec<_>>(),
            &rows,
        );
        let mut rows = Vec::new();
        for r in runs {
            let passed = r.tests.iter().filter(|t| t.ok()).count();
            rows.push(vec![
                kname(r),
                r.package.clone(),
                secs(r.boot_s),
                secs(r.check_s),
                secs(r.tests_s),
                format!("{:.0} s", r.wall_s),
                format!("{passed}/{}", r.tests.len()),
                if r.passed() { "PASS" } else { "FAIL" }.into(),
            ]);
        }
        out += "\n";
        out += &table(
            &[
                "kernel", "package", "boot", "check", "tests", "total", "passed", "result",
            ],
            &rows,
        );
    }
    out
}

pub fn print_matrix(host: Option<&KernelRun>, runs: &[KernelRun]) {
    let text = render(host, runs);
    println!(
        "\nKernel matrix (guests under qemu TCG, 2 vCPUs; host row: `sendsight check` only)\n"
    );
    println!("{text}");
    for r in host.into_iter().chain(runs.iter()) {
        if !r.missing_members.is_empty() {
            println!(
                "{}: kernel struct members not found: {}",
                r.label,
                r.missing_members.join(", ")
            );
        }
        for e in &r.errors {
            println!("{}: ERROR {e}", r.label);
        }
    }
    let _ = fs::write(vm_dir().join("matrix.md"), text);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_numbers() {
        let s61 = SERIES[0];
        let s612 = SERIES[1];
        assert_eq!(
            series_number(&s61, "linux-image-6.1.0-56-cloud-amd64"),
            Some(56)
        );
        assert_eq!(
            series_number(&s61, "linux-image-6.1.0-56-cloud-amd64-dbg"),
            None
        );
        assert_eq!(series_number(&s61, "linux-image-6.1.0-56-amd64"), None);
        assert_eq!(
            series_number(&s612, "linux-image-6.12.117+deb12-cloud-amd64"),
            Some(117)
        );
        assert_eq!(
            series_number(&s612, "linux-image-6.12.117+deb12-cloud-amd64-unsigned"),
            None
        );
    }

    #[test]
    fn module_names_and_paths() {
        assert_eq!(
            module_name("nft_numgen.ko.xz").as_deref(),
            Some("nft_numgen")
        );
        assert_eq!(module_name("nf-tables.ko").as_deref(), Some("nf_tables"));
        assert_eq!(module_name("README"), None);
        assert_eq!(
            rel_ko(
                Path::new("/m"),
                Path::new("/m/kernel/net/netfilter/nf_tables.ko.xz")
            )
            .unwrap(),
            "kernel/net/netfilter/nf_tables.ko"
        );
    }

    #[test]
    fn cpio_newc_layout() {
        let mut c = Cpio {
            out: Vec::new(),
            ino: 0,
            written: 0,
        };
        c.entry("init", 0o100755, b"#!/bin/sh\n").unwrap();
        let out = c.finish().unwrap();
        assert!(out.starts_with(b"070701"));
        assert_eq!(out.len() % 4, 0);
        // header (110) + "init\0" padded to 116, + 10 bytes data padded to 128.
        assert_eq!(&out[110..115], b"init\0");
        assert_eq!(&out[116..126], b"#!/bin/sh\n");
        assert_eq!(&out[128..134], b"070701");
        assert!(out.windows(10).any(|w| w == b"TRAILER!!!"));
    }

    #[test]
    fn console_markers() {
        let log = [
            "[    1.0] random kernel line",
            "SENDSIGHT-VMTEST-BOOTED 6.1.0-56-cloud-amd64 5.50",
            "SENDSIGHT-VMTEST-CHECK-JSON-BEGIN",
            "{",
            r#"  "kernel": "6.1.0-56-cloud-amd64", "ok": true, "missing_members": [],"#,
            r#"  "probes": [{"probe":"send_socket","attach":"tracepoint sock:sock_send_length","state":"unavailable","note":"x"}]"#,
            "}",
            "SENDSIGHT-VMTEST-CHECK-JSON-END 0 9.50",
            "SENDSIGHT-VMTEST-BEGIN cli::a 10.00",
            "SENDSIGHT-VMTEST-RESULT cli::a PASS 10.00 12.25",
            "SENDSIGHT-VMTEST-RESULT probes::b FAIL 12.25 20.25",
            "SENDSIGHT-VMTEST-RETRY verdicts::c 21.00",
            "SENDSIGHT-VMTEST-RESULT verdicts::c FLAKY 20.25 24.25",
            "SENDSIGHT-VMTEST-DONE 25.00",
        ]
        .map(String::from);
        let mut run = KernelRun::new("6.1", "pkg");
        parse_console(&log, &mut run);
        assert_eq!(run.release, "6.1.0-56-cloud-amd64");
        assert_eq!(run.boot_s, Some(5.5));
        assert_eq!(run.check_s, Some(4.0));
        assert_eq!(run.check_ok, Some(true));
        assert_eq!(run.probes.len(), 1);
        assert_eq!(run.probes[0].state, "unavailable");
        assert_eq!(run.tests.len(), 3);
        assert_eq!(run.tests[0].secs, 2.25);
        assert_eq!(run.tests[1].result, "FAIL");
        assert!(run.tests[2].ok(), "FLAKY passes, and shows");
        assert_eq!(run.tests_s, Some(14.25));
        assert!(run.errors.is_empty(), "{:?}", run.errors);
        assert!(!run.passed());
        run.tests.remove(1);
        assert!(run.passed());
    }

    #[test]
    fn matrix_pivots_probes_by_kernel() {
        let mut vm = KernelRun::new("6.1", "pkg 1");
        vm.release = "6.1.0-56-cloud-amd64".into();
        vm.probes.push(ProbeRow {
            probe: "send_syscall".into(),
            attach: "raw_tracepoint sys_exit".into(),
            state: "unavailable".into(),
            note: "Verifier output: too large\nstack depth 400+320".into(),
        });
        vm.tests.push(TestRow {
            name: "cli::a".into(),
            result: "FLAKY".into(),
            secs: 3.0,
        });
        let mut dead = KernelRun::new("6.12", "pkg 2");
        dead.errors.push("TIMEOUT: the VM was still running".into());
        let text = render(None, &[vm, dead]);
        assert!(
            text.contains("| probe        | 6.1.0-56-cloud-amd64"),
            "{text}"
        );
        assert!(
            text.contains("unavailable: raw_tracepoint sys_exit"),
            "{text}"
        );
        assert!(text.contains("NO REPORT"), "{text}");
        assert!(
            text.contains("(unavailable): Verifier output: too large / stack depth 400+320"),
            "{text}"
        );
        assert!(text.contains("FLAKY (3 s)"), "{text}");
        assert!(text.contains("no probe report: TIMEOUT"), "{text}");
    }

    #[test]
    fn modinfo_of_a_tiny_elf() {
        // A minimal ELF64 with a section-name table and a .modinfo section.
        let shstr = b"\0.shstrtab\0.modinfo\0";
        let info = b"license=GPL\0depends=nf_tables,nfnetlink\0alias=nft-expr-numgen\0";
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2;
        elf[5] = 1;
        let shstr_off = elf.len();
        elf.extend_from_slice(shstr);
        let info_off = elf.len();
        elf.extend_from_slice(info);
        let shoff = elf.len();
        let sh = |name: u32, off: usize, size: usize| {
            let mut h = vec![0u8; 64];
            h[..4].copy_from_slice(&name.to_le_bytes());
            h[0x18..0x20].copy_from_slice(&(off as u64).to_le_bytes());
            h[0x20..0x28].copy_from_slice(&(size as u64).to_le_bytes());
            h
        };
        let null = sh(0, 0, 0);
        let s1 = sh(1, shstr_off, shstr.len());
        let s2 = sh(11, info_off, info.len());
        elf.extend(null);
        elf.extend(s1);
        elf.extend(s2);
        elf[0x28..0x30].copy_from_slice(&(shoff as u64).to_le_bytes());
        elf[0x3a..0x3c].copy_from_slice(&64u16.to_le_bytes());
        elf[0x3c..0x3e].copy_from_slice(&3u16.to_le_bytes());
        elf[0x3e..0x40].copy_from_slice(&1u16.to_le_bytes());
        let mi = modinfo(&elf).unwrap();
        assert!(mi.contains(&("depends".into(), "nf_tables,nfnetlink".into())));
        assert!(mi.contains(&("alias".into(), "nft-expr-numgen".into())));
    }
}
