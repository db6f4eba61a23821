//! tracefs: where it is (mounting it when nobody did) and what a tracepoint's record
//! looks like on this kernel (`events/<group>/<name>/format`).

use std::{
    ffi::CString,
    fs, io,
    path::{Path, PathBuf},
};

#[derive(Debug, thiserror::Error)]
pub enum TracefsError {
    #[error(
        "tracefs is not mounted and mounting it at {path} failed: {error}; mount it with \
         `mount -t tracefs nodev {path}` (needs CAP_SYS_ADMIN)"
    )]
    Mount { path: String, error: io::Error },
    #[error("tracepoint {group}:{name} does not exist on this kernel ({path}: {error})")]
    Missing {
        group: String,
        name: String,
        path: String,
        error: io::Error,
    },
    #[error("cannot parse {path}: {why}")]
    Parse { path: String, why: String },
}

pub const MOUNT_POINT: &str = "/sys/kernel/tracing";
const LEGACY: &str = "/sys/kernel/debug/tracing";

/// How tracefs was found, for `check` and the start-up report.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Found {
    AlreadyMounted(PathBuf),
    MountedByUs(PathBuf),
}

impl Found {
    pub fn root(&self) -> &Path {
        match self {
            Found::AlreadyMounted(p) | Found::MountedByUs(p) => p,
        }
    }
}

/// Find tracefs, mounting it at /sys/kernel/tracing if it is nowhere.
pub fn ensure_mounted() -> Result<Found, TracefsError> {
    for root in [MOUNT_POINT, LEGACY] {
        if Path::new(root).join("events").is_dir() {
            return Ok(Found::AlreadyMounted(root.into()));
        }
    }
    let target = CString::new(MOUNT_POINT).expect("static path");
    let fstype = CString::new("tracefs").expect("static");
    let source = CString::new("nodev").expect("static");
    // SAFETY: all pointers are valid NUL-terminated strings for the call's duration.
    let rc = unsafe {
        libc::mount(
            source.as_ptr(),
            target.as_ptr(),
            fstype.as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    if rc != 0 {
        return Err(TracefsError::Mount {
            path: MOUNT_POINT.into(),
            error: io::Error::last_os_error(),
        });
    }
    Ok(Found::MountedByUs(MOUNT_POINT.into()))
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Field {
    pub name: String,
    pub offset: u16,
    pub size: u16,
}

/// A tracepoint's record layout on this kernel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Format {
    pub id: u32,
    pub fields: Vec<Field>,
}

impl Format {
    pub fn field(&self, name: &str) -> Option<&Field> {
        self.fields.iter().find(|f| f.name == name)
    }
}

pub fn exists(root: &Path, group: &str, name: &str) -> bool {
    root.join("events")
        .join(group)
        .join(name)
        .join("format")
        .exists()
}

pub fn read_format(root: &Path, group: &str, name: &str) -> Result<Format, TracefsError> {
    let path = root.join("events").join(group).join(name).join("format");
    let text = fs::read_to_string(&path).map_err(|error| TracefsError::Missing {
        group: group.into(),
        name: name.into(),
        path: path.display().to_string(),
        error,
    })?;
    parse_format(&text).map_err(|why| TracefsError::Parse {
        path: path.display().to_string(),
        why,
    })
}

/// Parses the text of a `format` file. Lines look like
/// `\tfield:const void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;`.
pub fn parse_format(text: &str) -> Result<Format, String> {
    let mut id = None;
    let mut fields = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(v) = line.strip_prefix("ID:") {
            id = Some(
                v.trim()
                    .parse::<u32>()
                    .map_err(|e| format!("bad ID {v:?}: {e}"))?,
            );
            continue;
        }
        let Some(rest) = line.strip_prefix("field:") else {
            continue;
        };
        let mut decl = None;
        let mut offset = None;
        let mut size = None;
        for (i, part) in rest.split(';').map(str::trim).enumerate() {
            if i == 0 {
                decl = Some(part);
            } else if let Some(v) = part.strip_prefix("offset:") {
                offset = v.parse::<u16>().ok();
            } else if let Some(v) = part.strip_prefix("size:") {
                size = v.parse::<u16>().ok();
            }
        }
        let (Some(decl), Some(offset), Some(size)) = (decl, offset, size) else {
            return Err(format!("malformed field line {line:?}"));
        };
        // The name is the declaration's last word, minus any array suffix:
        // `__u8 saddr[4]` -> `saddr`, `const void * skbaddr` -> `skbaddr`.
        let name = decl
            .rsplit(|c: char| c.is_whitespace() || c == '*')
            .next()
            .unwrap_or_default();
        let name = name.split('[').next().unwrap_or_default();
        if name.is_empty() {
            return Err(format!("no field name in {line:?}"));
        }
        fields.push(Field {
            name: name.to_string(),
            offset,
            size,
        });
    }
    let id = id.ok_or("no ID line")?;
    if fields.is_empty() {
        return Err("no fields".into());
    }
    Ok(Format { id, fields })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Verbatim from a 6.18 kernel; older kernels end at daddr_v6.
    const RETRANSMIT_6_18: &str = "name: tcp_retransmit_skb
ID: 2281
format:
\tfield:unsigned short common_type;\toffset:0;\tsize:2;\tsigned:0;
\tfield:unsigned char common_flags;\toffset:2;\tsize:1;\tsigned:0;
\tfield:unsigned char common_preempt_count;\toffset:3;\tsize:1;\tsigned:0;
\tfield:int common_pid;\toffset:4;\tsize:4;\tsigned:1;

\tfield:const void * skbaddr;\toffset:8;\tsize:8;\tsigned:0;
\tfield:const void * skaddr;\toffset:16;\tsize:8;\tsigned:0;
\tfield:int state;\toffset:24;\tsize:4;\tsigned:1;
\tfield:__u16 sport;\toffset:28;\tsize:2;\tsigned:0;
\tfield:__u16 dport;\toffset:30;\tsize:2;\tsigned:0;
\tfield:__u16 family;\toffset:32;\tsize:2;\tsigned:0;
\tfield:__u8 saddr[4];\toffset:34;\tsize:4;\tsigned:0;
\tfield:__u8 daddr[4];\toffset:38;\tsize:4;\tsigned:0;
\tfield:__u8 saddr_v6[16];\toffset:42;\tsize:16;\tsigned:0;
\tfield:__u8 daddr_v6[16];\toffset:58;\tsize:16;\tsigned:0;
\tfield:int err;\toffset:76;\tsize:4;\tsigned:1;

print fmt: \"skbaddr=%p\", REC->skbaddr
";

    #[test]
    fn parses_names_offsets_sizes() {
        let f = parse_format(RETRANSMIT_6_18).unwrap();
        assert_eq!(f.id, 2281);
        assert_eq!(
            f.field("skbaddr"),
            Some(&Field {
                name: "skbaddr".into(),
                offset: 8,
                size: 8
            })
        );
        assert_eq!(f.field("saddr_v6").unwrap().offset, 42);
        assert_eq!(f.field("saddr").unwrap().size, 4);
        assert_eq!(f.field("err").unwrap().offset, 76);
        assert_eq!(f.field("common_pid").unwrap().offset, 4);
    }

    #[test]
    fn older_layout_has_no_err() {
        let old: String = RETRANSMIT_6_18
            .lines()
            .filter(|l| !l.contains(" err;"))
            .map(|l| format!("{l}\n"))
            .collect();
        assert!(parse_format(&old).unwrap().field("err").is_none());
    }

    #[test]
    fn rejects_garbage() {
        assert!(parse_format("").is_err());
        assert!(parse_format("ID: x").is_err());
        assert!(parse_format("ID: 1\n\tfield:int a;\toffset:zz;\tsize:4;").is_err());
    }
}
