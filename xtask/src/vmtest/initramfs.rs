//! The guest's initramfs: busybox, the agent, the test binaries, the host tools
//! with their shared libraries, /init, and a kernel's modules, as a gzip'd newc cpio.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    io::BufWriter,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use anyhow::{Context as _, bail};

use super::{PER_TEST_TIMEOUT_S, Pass, modules::ModuleTree};
use crate::cmd;

/// Tools the tests run, by name, from the host (Debian's packages, as installed by
/// `cargo xtask setup`): they shadow busybox's applets of the same name, which lack
/// options the tests use (`ping -M do`, `unshare --propagation`, `ss -i`).
const HOST_TOOLS: &[&str] = &[
    "ip", "nft", "tc", "setpriv", "sysctl", "ss", "ping", "unshare", "rsyslogd", "dash",
];

/// /bin/sh: busybox's shell runs its own applet for a command of the same name
/// even where a real tool is first in PATH (`sh -c 'exec setpriv ...'` got
/// busybox's setpriv), so the shell is the host's dash.
const SHELL: &str = "dash";

/// rsyslogd's loadable modules the operability test's TCP input needs (it loads
/// them from the directory it was built with).
const RSYSLOG_MODULES: (&str, &[&str]) = (
    "/usr/lib/x86_64-linux-gnu/rsyslog",
    &["imtcp", "lmnet", "lmnetstrms", "lmnsd_ptcp", "lmtcpsrv"],
);

/// Source files tests read (the checked-in schemas, the recorded fixtures), shipped
/// under /src: the guest's SENDSIGHT_SOURCE_DIR.
const SOURCE_DIRS: &[&str] = &["schema", "agent/tests/fixtures"];

enum Node {
    Dir,
    /// Host file copied in, with this mode.
    File(PathBuf, u32),
    Bytes(Vec<u8>, u32),
    Symlink(String),
}

/// Everything but the kernel modules; the same for each kernel.
pub(super) struct Common {
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

pub(super) fn common_tree(dir: &Path, tests: &[(String, PathBuf)]) -> anyhow::Result<Common> {
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
        if HOST_TOOLS.contains(&a) || a == "busybox" || a == "sh" {
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
        "bin/sh",
        Node::Symlink(format!("../usr/sbin/{SHELL}")),
    );
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
    let agent = cmd::root().join("target/release/sendsight");
    dynamic.push(("sendsight".into(), stripped(&agent, &stage, "sendsight")?));
    // `--bench-tax` runs it; it finds the agent beside itself.
    let bench = cmd::root().join("target/release/sendsight-bench");
    dynamic.push((
        "sendsight-bench".into(),
        stripped(&bench, &stage, "sendsight-bench")?,
    ));
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
    for m in RSYSLOG_MODULES.1 {
        let p = Path::new(RSYSLOG_MODULES.0).join(format!("{m}.so"));
        if !p.exists() {
            bail!(
                "{} not found (`cargo xtask setup` installs rsyslog)",
                p.display()
            );
        }
        dynamic.push((p.to_string_lossy().into_owned(), p));
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
    put(
        &mut nodes,
        "etc/hostname",
        Node::Bytes(b"vmtest\n".to_vec(), 0o644),
    );
    for d in SOURCE_DIRS {
        let src = cmd::root().join(d);
        for e in fs::read_dir(&src).with_context(|| format!("{}", src.display()))? {
            let e = e?;
            if e.file_type()?.is_file() {
                let name = e.file_name();
                put(
                    &mut nodes,
                    &format!("src/{d}/{}", name.to_string_lossy()),
                    Node::File(e.path(), 0o644),
                );
            }
        }
    }
    put(
        &mut nodes,
        "init",
        Node::Bytes(init_script().into_bytes(), 0o755),
    );
    Ok(Common { nodes })
}

/// What /init runs, one test binary a line: `<binary> <pass or -> [NAME=value...]`;
/// the plain runs first, then each pass over those of its binaries selected.
pub(super) fn runs_file(names: &[&str], passes: &[Pass]) -> String {
    let mut out: String = names.iter().map(|n| format!("{n} -\n")).collect();
    for p in passes {
        for t in p.tests.iter().filter(|t| names.contains(t)) {
            let env: Vec<String> = p.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out += &format!("{t} {} {}\n", p.name, env.join(" "));
        }
    }
    out
}

fn init_script() -> String {
    format!(
        r#"#!/bin/sh
# sendsight vmtest guest init (written by xtask/src/vmtest/initramfs.rs): mount, load modules,
# run `sendsight check` and the end-to-end tests, print markers, power off.
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export LD_LIBRARY_PATH=/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu
export HOME=/root TMPDIR=/tmp SENDSIGHT_BIN=/sendsight SENDSIGHT_SOURCE_DIR=/src RUST_BACKTRACE=1
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
# Debian's kernels default to 3 (CONFIG_SECURITY_PERF_EVENTS_RESTRICT), under which
# perf_event_open needs CAP_SYS_ADMIN rather than CAP_PERFMON; the capability set the
# README documents (and `capabilities` checks) is for 2, the upstream default.
sysctl -qw kernel.perf_event_paranoid=2
echo "SENDSIGHT-VMTEST-BOOTED $KVER $(up)"
echo SENDSIGHT-VMTEST-CHECK-JSON-BEGIN
/sendsight check --json
echo "SENDSIGHT-VMTEST-CHECK-JSON-END $? $(up)"
/sendsight check
while read bin pass envs; do
  if [ "$bin" = @bench ]; then
    echo "SENDSIGHT-VMTEST-BENCH-BEGIN $(up)"
    /sendsight-bench $pass $envs </dev/null
    echo "SENDSIGHT-VMTEST-BENCH-END $? $(up)"
    continue
  fi
  tag=
  [ "$pass" = - ] || tag="[$pass]"
  tests=$(/tests/$bin --list --format=terse </dev/null 2>/dev/null | sed -n 's/: test$//p')
  [ -n "$tests" ] || echo "SENDSIGHT-VMTEST-ERROR /tests/$bin lists no tests"
  for t in $tests; do
    echo "SENDSIGHT-VMTEST-BEGIN $bin::$t$tag $(up)"
    s=$(up)
    timeout -s KILL {PER_TEST_TIMEOUT_S} env $envs /tests/$bin --exact "$t" --test-threads=1 </dev/null
    rc=$?
    case $rc in
      0) r=PASS ;;
      137|124) r=TIMEOUT ;;
      *)
        # Once more: emulation stalls a vCPU now and then (spurious RTOs). A pass
        # on the second try is reported as FLAKY, never silently as PASS.
        echo "SENDSIGHT-VMTEST-RETRY $bin::$t$tag $(up)"
        if timeout -s KILL {PER_TEST_TIMEOUT_S} env $envs /tests/$bin --exact "$t" --test-threads=1 </dev/null; then
          r=FLAKY
        else
          r=FAIL
        fi ;;
    esac
    echo "SENDSIGHT-VMTEST-RESULT $bin::$t$tag $r $s $(up)"
  done
done < /vmtest/runs
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

/// `runs`: this kernel's `vmtest/runs` ([`runs_file`]).
pub(super) fn write_initramfs(
    path: &Path,
    common: &Common,
    modules: &ModuleTree,
    runs: &str,
) -> anyhow::Result<()> {
    let mut extra = BTreeMap::new();
    put(
        &mut extra,
        "vmtest/runs",
        Node::Bytes(runs.as_bytes().to_vec(), 0o644),
    );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passes_run_after_the_plain_runs_and_only_selected_binaries() {
        let passes = [Pass {
            name: "perf",
            env: &[("SENDSIGHT_TRANSPORT", "perf"), ("X", "1")],
            tests: &["flood", "verdicts"],
        }];
        assert_eq!(
            runs_file(&["cli", "verdicts"], &passes),
            "cli -\nverdicts -\nverdicts perf SENDSIGHT_TRANSPORT=perf X=1\n"
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
}
