//! `cargo xtask run` hands stdout to the agent (`cargo xtask run ... | jq`), so the
//! setup before it must write nothing there: not its own messages, not the
//! installers' output. Needs root (setup installs with apt as root), like the
//! end-to-end tests.

use std::{
    os::unix::fs::PermissionsExt as _,
    path::PathBuf,
    process::{Command, Output},
};

fn xtask() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    // The binary finds the workspace from its own build; run it from elsewhere to
    // be sure nothing depends on the caller's directory.
    c.current_dir(std::env::temp_dir());
    c
}

fn require_root() {
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test runs `cargo xtask setup` as it runs for real: run it as root"
    );
}

#[test]
fn setup_for_run_writes_nothing_on_stdout() {
    require_root();
    let out = xtask().args(["setup", "--for", "run"]).output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        out.stdout.is_empty(),
        "stdout: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(err.contains("xtask setup: ready"), "{err}");
}

/// A directory of stand-ins (dpkg-query: every package missing; apt-get: what the
/// test writes) first on the PATH of `cargo xtask setup --for run`. Removed on
/// drop.
struct FakeApt {
    dir: PathBuf,
}

impl FakeApt {
    fn new(tag: &str) -> Self {
        let dir = std::env::temp_dir().join(format!("xtask-fake-apt{tag}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let fake = FakeApt { dir };
        fake.script("dpkg-query", "echo 'unknown ok not-installed'");
        fake
    }

    fn script(&self, name: &str, body: &str) {
        let p = self.dir.join(name);
        std::fs::write(&p, format!("#!/bin/sh\n{body}\n")).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }

    fn setup_for_run(&self) -> Output {
        let path = format!(
            "{}:{}",
            self.dir.display(),
            std::env::var("PATH").unwrap_or_default()
        );
        xtask()
            .args(["setup", "--for", "run"])
            .env("PATH", path)
            .output()
            .unwrap()
    }
}

impl Drop for FakeApt {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A machine that lacks the build packages: apt's chatter (on its stdout) ends up
/// on stderr, and nothing is removed.
#[test]
fn installing_packages_writes_apt_output_on_stderr() {
    require_root();
    let fake = FakeApt::new("");
    let log = fake.dir.join("calls");
    // Every package "missing"; apt-get prints as the real one does, and logs its
    // arguments.
    fake.script(
        "apt-get",
        &format!(
            "echo \"$@\" >> {log}\n\
             case \"$*\" in\n\
             *--simulate*) echo 'Inst llvm-22-dev (1:22.1.8-1~deb12u1 Debian-Security:12/stable-security [amd64])';;\n\
             *) echo 'Setting up llvm-22-dev (1:22.1.8-1~deb12u1) ...';;\n\
             esac",
            log = log.display()
        ),
    );
    let out = fake.setup_for_run();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let calls = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(out.status.success(), "{err}");
    assert!(
        out.stdout.is_empty(),
        "stdout: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(err.contains("Setting up llvm-22-dev"), "{err}");
    assert!(
        err.contains("installing Debian packages: llvm-22-dev"),
        "{err}"
    );
    // Only what building needs; no test tools; never a removal.
    for l in calls.lines().filter(|l| l.starts_with("install")) {
        assert!(l.contains("--no-remove"), "{l}");
        for p in ["nftables", "rsyslog", "qemu-system-x86", "busybox-static"] {
            assert!(!l.contains(p), "{p} installed for run: {l}");
        }
    }
}

/// When apt would remove an installed package, setup refuses and names it.
#[test]
fn setup_refuses_to_remove_packages() {
    require_root();
    let fake = FakeApt::new("-rm");
    fake.script(
        "apt-get",
        "case \"$*\" in\n\
         *--simulate*) echo 'Remv qemu-utils [1:10.0.2+ds-2+deb13u1~bpo12+1]';;\n\
         install*) echo 'unexpected install' >&2; exit 3;;\n\
         esac",
    );
    let out = fake.setup_for_run();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(out.stdout.is_empty());
    assert!(err.contains("would remove qemu-utils"), "{err}");
    assert!(!err.contains("unexpected install"), "{err}");
}
