//! Which Debian kernels make the matrix: the newest package of each series apt
//! can install, downloaded (`apt-get download`) and unpacked once under
//! `target/vmtest/kernels/`.

use std::{
    fs,
    path::{Path, PathBuf},
    time::Instant,
};

use anyhow::{Context as _, bail};

use super::{say, vm_dir};
use crate::cmd;

/// A kernel series of the matrix: Debian's cloud flavour (small, virtio and serial
/// built in, BTF on), newest package available from the configured sources.
#[derive(Clone, Copy, Debug)]
pub struct Series {
    pub label: &'static str,
    /// Package name = prefix + number + suffix; the newest number wins.
    prefix: &'static str,
    suffix: &'static str,
    /// Debian suites of its own (a sources.list body), read through a private apt
    /// configuration under target/vmtest/apt/: the machine's sources stay untouched.
    /// None: the machine's sources.
    sources: Option<&'static str>,
    /// Test binaries not run on this kernel yet, and why: open work, shown in the
    /// matrix as OPEN rows (never as a pass).
    pub open: &'static [(&'static str, &'static str)],
}

/// The matrix (`all`, and what `cargo xtask test` runs), oldest first.
pub const SERIES: &[Series] = &[
    Series {
        label: "5.10",
        // Debian 11's kernel, from the bullseye suites on the same registry.
        prefix: "linux-image-5.10.0-",
        suffix: "-cloud-amd64",
        sources: Some(
            "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
             http://deb.debian.org/debian bullseye main\n\
             deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] \
             http://deb.debian.org/debian-security bullseye-security main\n",
        ),
        open: &[],
    },
    Series {
        label: "6.1",
        prefix: "linux-image-6.1.0-",
        suffix: "-cloud-amd64",
        sources: None,
        open: &[],
    },
    Series {
        label: "6.12",
        // bookworm carries 6.12 (the trixie kernel) in bookworm-security.
        prefix: "linux-image-6.12.",
        suffix: "+deb12-cloud-amd64",
        sources: None,
        open: &[],
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
        .ok_or_else(|| {
            let labels: Vec<&str> = SERIES.iter().map(|s| s.label).collect();
            anyhow::anyhow!("unknown kernel {sel:?}: {} or all", labels.join(", "))
        })
}

/// apt options for the series' packages: none for the machine's sources; for its own,
/// a private configuration whose lists are fetched once (`apt-get update` with it).
fn apt_opts(s: &Series) -> anyhow::Result<Vec<String>> {
    let Some(sources) = s.sources else {
        return Ok(Vec::new());
    };
    let dir = vm_dir().join("apt").join(s.label);
    let lists = dir.join("lists");
    fs::create_dir_all(lists.join("partial"))?;
    fs::create_dir_all(dir.join("cache"))?;
    let list = dir.join("sources.list");
    if fs::read_to_string(&list).ok().as_deref() != Some(sources) {
        fs::write(&list, sources)?;
        let _ = fs::remove_file(dir.join(".updated"));
    }
    let opts: Vec<String> = [
        format!("Dir::Etc::SourceList={}", list.display()),
        "Dir::Etc::SourceParts=/dev/null".into(),
        format!("Dir::State::Lists={}", lists.display()),
        format!("Dir::Cache={}", dir.join("cache").display()),
    ]
    .into_iter()
    .flat_map(|o| ["-o".to_string(), o])
    .collect();
    if !dir.join(".updated").exists() {
        say(&format!(
            "fetching the package lists of the {} kernels (once)",
            s.label
        ));
        cmd::run(cmd::command("apt-get").args(&opts).args(["update", "-q"]))?;
        fs::write(dir.join(".updated"), "")?;
    }
    Ok(opts)
}

pub struct Kernel {
    pub(super) series: Series,
    pub(super) package: String,
    pub(super) version: String,
    pub(super) release: String,
    /// Extracted package.
    pub(super) root: PathBuf,
}

impl Kernel {
    pub(super) fn vmlinuz(&self) -> PathBuf {
        self.root.join(format!("boot/vmlinuz-{}", self.release))
    }
    pub(super) fn modules(&self) -> PathBuf {
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
fn apt_candidates(s: &Series, opts: &[String]) -> Vec<(u64, String, String)> {
    let with = |args: &[&str]| -> Vec<String> {
        opts.iter()
            .cloned()
            .chain(args.iter().map(|a| a.to_string()))
            .collect()
    };
    let args = with(&["pkgnames", s.prefix]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let names: Vec<String> = cmd::output("apt-cache", &args)
        .unwrap_or_default()
        .lines()
        .filter(|n| series_number(s, n).is_some())
        .map(str::to_string)
        .collect();
    if names.is_empty() {
        return Vec::new();
    }
    let mut args = with(&["policy"]);
    args.extend(names.iter().cloned());
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
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
pub(super) fn obtain_kernel(s: &Series) -> anyhow::Result<Kernel> {
    let opts = apt_opts(s)?;
    let mut cands = apt_candidates(s, &opts);
    if cands.is_empty() && unsafe { libc::geteuid() } == 0 {
        say("no kernel packages in apt's lists; apt-get update");
        cmd::run(cmd::command("apt-get").args(&opts).args(["update", "-q"]))?;
        cands = apt_candidates(s, &opts);
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
        download_and_unpack(&package, &version, &dir, &opts)?;
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

fn download_and_unpack(
    package: &str,
    version: &str,
    dir: &Path,
    opts: &[String],
) -> anyhow::Result<()> {
    let dl = kernel_cache().join(".download");
    let _ = fs::remove_dir_all(&dl);
    fs::create_dir_all(&dl)?;
    say(&format!(
        "downloading {package} {version} from Debian (apt-get download), once"
    ));
    let t = Instant::now();
    cmd::run(
        cmd::command("apt-get")
            .args(opts)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_numbers() {
        let s510 = series("5.10").unwrap()[0];
        let s61 = series("6.1").unwrap()[0];
        let s612 = series("6.12").unwrap()[0];
        assert_eq!(
            series_number(&s510, "linux-image-5.10.0-46-cloud-amd64"),
            Some(46)
        );
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
}
