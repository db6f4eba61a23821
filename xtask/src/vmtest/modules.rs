//! The kernel modules the guest needs (veth, nf_tables...): their dependencies
//! from each module's own `.modinfo`, decompressed for busybox insmod, with the
//! modules.dep and modules.alias busybox modprobe reads.

use std::{
    collections::{BTreeMap, BTreeSet},
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use super::kernels::Kernel;

/// Loaded at boot, in this order after their dependencies: veth for the
/// topologies, nf_tables and the one expression the kernel does not build in
/// (numgen: "every seventh packet", "random 10 %"), and the sock_diag modules `ss`
/// reads TCP state through (without them it falls back to /proc/net/tcp: no backoff),
/// and HTB for the reordering scenario's slow lane.
const PRELOAD: &[&str] = &[
    "veth",
    "nf_tables",
    "nft_numgen",
    "tcp_diag",
    "udp_diag",
    "sch_htb",
];

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
pub(super) struct ModuleTree {
    pub(super) release: String,
    /// Path relative to the modules dir (always `.ko`) -> decompressed file.
    pub(super) files: Vec<(String, PathBuf)>,
    /// Preload order (relative paths).
    pub(super) load: Vec<String>,
    pub(super) modules_dep: String,
    pub(super) modules_alias: String,
    /// /boot/config-<release>, as a Debian system has it (the agent reads HZ there).
    pub(super) config: PathBuf,
}

impl Kernel {
    pub(super) fn module_tree(&self, stage: &Path) -> anyhow::Result<ModuleTree> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
