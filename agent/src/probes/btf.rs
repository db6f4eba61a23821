//! Kernel struct member offsets from the running kernel's BTF.
//!
//! Rust eBPF gets no CO-RE relocations, so offsets are looked up here and handed to
//! the programs. Why a small reader of our own: aya's `Btf` keeps member offsets
//! private; btf-rs is LGPL-only (awkward for a static binary); libbpf-rs drags in a C
//! build of libbpf; the `btf` crate flattens all ~150k vmlinux types up front and
//! keys names without their kind (`struct sock` vs a function named `sock`). We need
//! one thing, "offset and size of `struct X`'s member path `a.b.c`", with anonymous
//! unions/structs looked through: that is what this module does, and nothing else.

use std::{collections::HashMap, fs, path::Path};

pub const VMLINUX: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read BTF at {path}: {error}; {hint}")]
    Read {
        path: String,
        error: std::io::Error,
        hint: &'static str,
    },
    #[error("malformed BTF: {0}")]
    Malformed(String),
    #[error("struct {0} not found in kernel BTF")]
    NoStruct(String),
    #[error("struct {strukt} has no member {member} in this kernel's BTF")]
    NoMember { strukt: String, member: String },
    #[error("{strukt}.{member} is a bitfield not aligned to a byte")]
    Bitfield { strukt: String, member: String },
}

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_TYPEDEF: u32 = 8;
const KIND_VOLATILE: u32 = 9;
const KIND_CONST: u32 = 10;
const KIND_RESTRICT: u32 = 11;
const KIND_FUNC: u32 = 12;
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

#[derive(Clone, Debug)]
struct Member {
    name: u32,
    ty: u32,
    /// Bit offset (for kind_flag structs, the low 24 bits).
    bit_offset: u32,
}

#[derive(Clone, Debug)]
struct Type {
    kind: u32,
    name: u32,
    /// Size for INT/STRUCT/UNION/ENUM/FLOAT, referenced type for PTR/TYPEDEF/...
    size_or_type: u32,
    members: Vec<Member>,
    /// For arrays: (element type, element count).
    array: Option<(u32, u32)>,
}

/// A parsed BTF blob: types by id and struct names to ids.
pub struct Btf {
    types: Vec<Type>,
    strings: Vec<u8>,
    structs: HashMap<String, u32>,
    typedefs: HashMap<String, u32>,
    /// Kernel functions (what fentry/fexit can attach to) by name.
    funcs: HashMap<String, u32>,
}

/// Where a member lives inside its outermost struct.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberLayout {
    pub offset: u32,
    pub size: u32,
}

fn u32_at(data: &[u8], at: usize) -> Result<u32, BtfError> {
    data.get(at..at + 4)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .ok_or_else(|| BtfError::Malformed(format!("truncated at byte {at}")))
}

impl Btf {
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::from_file(Path::new(VMLINUX))
    }

    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let data = fs::read(path).map_err(|error| BtfError::Read {
            path: path.display().to_string(),
            error,
            hint: if path == Path::new(VMLINUX) {
                "this kernel was built without CONFIG_DEBUG_INFO_BTF, which sendsight needs \
                 to find struct layouts: pass a BTF file for it with --btf (e.g. from BTFHub)"
            } else {
                "check the --btf path"
            },
        })?;
        Self::parse(&data)
    }

    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        if data.len() < 24 || data[0..2] != [0x9f, 0xeb] {
            return Err(BtfError::Malformed(
                "bad magic (not little-endian BTF)".into(),
            ));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let type_off = u32_at(data, 8)? as usize;
        let type_len = u32_at(data, 12)? as usize;
        let str_off = u32_at(data, 16)? as usize;
        let str_len = u32_at(data, 20)? as usize;
        let types_at = hdr_len + type_off;
        let strings_at = hdr_len + str_off;
        let tdata = data
            .get(types_at..types_at + type_len)
            .ok_or_else(|| BtfError::Malformed("type section out of bounds".into()))?;
        let strings = data
            .get(strings_at..strings_at + str_len)
            .ok_or_else(|| BtfError::Malformed("string section out of bounds".into()))?
            .to_vec();

        // Type id 0 is `void`.
        let mut types = vec![Type {
            kind: 0,
            name: 0,
            size_or_type: 0,
            members: Vec::new(),
            array: None,
        }];
        let mut at = 0;
        while at < tdata.len() {
            let name = u32_at(tdata, at)?;
            let info = u32_at(tdata, at + 4)?;
            let size_or_type = u32_at(tdata, at + 8)?;
            at += 12;
            let kind = (info >> 24) & 0x1f;
            let vlen = (info & 0xffff) as usize;
            let kind_flag = info >> 31 == 1;
            let mut members = Vec::new();
            let mut array = None;
            let extra = match kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => {
                    array = Some((u32_at(tdata, at)?, u32_at(tdata, at + 8)?));
                    12
                }
                KIND_STRUCT | KIND_UNION => {
                    for i in 0..vlen {
                        let m = at + i * 12;
                        let raw = u32_at(tdata, m + 8)?;
                        members.push(Member {
                            name: u32_at(tdata, m)?,
                            ty: u32_at(tdata, m + 4)?,
                            bit_offset: if kind_flag { raw & 0x00ff_ffff } else { raw },
                        });
                    }
                    vlen * 12
                }
                KIND_FUNC_PROTO => {
                    // Parameters, kept as members (name, type) for raw-tracepoint checks.
                    for i in 0..vlen {
                        let m = at + i * 8;
                        members.push(Member {
                            name: u32_at(tdata, m)?,
                            ty: u32_at(tdata, m + 4)?,
                            bit_offset: 0,
                        });
                    }
                    vlen * 8
                }
                KIND_ENUM => vlen * 8,
                KIND_DATASEC | KIND_ENUM64 => vlen * 12,
                KIND_PTR | 7 | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
                | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
                other => return Err(BtfError::Malformed(format!("unknown kind {other}"))),
            };
            at += extra;
            types.push(Type {
                kind,
                name,
                size_or_type,
                members,
                array,
            });
        }
        let mut btf = Btf {
            types,
            strings,
            structs: HashMap::new(),
            typedefs: HashMap::new(),
            funcs: HashMap::new(),
        };
        for (id, t) in btf.types.iter().enumerate() {
            if t.kind == KIND_STRUCT && t.name != 0 && !t.members.is_empty() {
                let name = btf.string(t.name).to_string();
                btf.structs.entry(name).or_insert(id as u32);
            } else if t.kind == KIND_TYPEDEF && t.name != 0 {
                let name = btf.string(t.name);
                if name.starts_with("btf_trace_") {
                    btf.typedefs.insert(name.to_string(), id as u32);
                }
            } else if t.kind == KIND_FUNC && t.name != 0 {
                let name = btf.string(t.name).to_string();
                btf.funcs.entry(name).or_insert(id as u32);
            }
        }
        Ok(btf)
    }

    fn string(&self, off: u32) -> &str {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    fn ty(&self, id: u32) -> Option<&Type> {
        self.types.get(id as usize)
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn resolve(&self, mut id: u32) -> u32 {
        for _ in 0..32 {
            match self.ty(id) {
                Some(t)
                    if matches!(
                        t.kind,
                        KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG
                    ) =>
                {
                    id = t.size_or_type
                }
                _ => break,
            }
        }
        id
    }

    fn size_of(&self, id: u32) -> u32 {
        let id = self.resolve(id);
        match self.ty(id) {
            Some(t) => match t.kind {
                KIND_INT | KIND_STRUCT | KIND_UNION | KIND_ENUM | KIND_ENUM64 | KIND_FLOAT => {
                    t.size_or_type
                }
                KIND_PTR => 8,
                KIND_ARRAY => t.array.map(|(e, n)| self.size_of(e) * n).unwrap_or(0),
                _ => 0,
            },
            None => 0,
        }
    }

    /// Finds `name` among `id`'s members, looking through anonymous struct/union
    /// members (`struct sock { struct sock_common __sk_common; ... }` has plenty).
    /// Returns the member's bit offset from the start of `id` and its type.
    fn find_member(&self, id: u32, name: &str, depth: u32) -> Option<(u32, u32)> {
        if depth > 8 {
            return None;
        }
        let t = self.ty(self.resolve(id))?;
        if t.kind != KIND_STRUCT && t.kind != KIND_UNION {
            return None;
        }
        for m in &t.members {
            if m.name != 0 && self.string(m.name) == name {
                return Some((m.bit_offset, m.ty));
            }
        }
        for m in &t.members {
            if m.name == 0
                && let Some((off, ty)) = self.find_member(m.ty, name, depth + 1)
            {
                return Some((m.bit_offset + off, ty));
            }
        }
        None
    }

    /// C-ish name of a type: `struct sock *`, `int`, `const void *`.
    fn type_name(&self, id: u32, depth: u32) -> String {
        let Some(t) = self.ty(id) else {
            return "?".into();
        };
        if depth > 8 {
            return "?".into();
        }
        match t.kind {
            0 => "void".into(),
            KIND_PTR => format!("{} *", self.type_name(t.size_or_type, depth + 1)),
            KIND_CONST => format!("const {}", self.type_name(t.size_or_type, depth + 1)),
            KIND_VOLATILE | KIND_RESTRICT | KIND_TYPE_TAG => {
                self.type_name(t.size_or_type, depth + 1)
            }
            KIND_STRUCT => format!("struct {}", self.string(t.name)),
            KIND_UNION => format!("union {}", self.string(t.name)),
            _ => self.string(t.name).to_string(),
        }
    }

    /// Argument types of raw tracepoint `name` (its `btf_trace_<name>` prototype,
    /// without the leading context pointer), or None when the kernel has no such
    /// tracepoint. Raw tracepoint programs read arguments by position: this is how
    /// the loader checks the positions it compiled in.
    pub fn raw_tracepoint_args(&self, name: &str) -> Option<Vec<String>> {
        let id = *self.typedefs.get(&format!("btf_trace_{name}"))?;
        let ptr = self.ty(self.resolve(self.ty(id)?.size_or_type))?;
        if ptr.kind != KIND_PTR {
            return None;
        }
        let proto = self.ty(ptr.size_or_type)?;
        if proto.kind != KIND_FUNC_PROTO {
            return None;
        }
        Some(
            proto
                .members
                .iter()
                .skip(1)
                .map(|p| self.type_name(p.ty, 0))
                .collect(),
        )
    }

    /// The prototype of kernel function `name` as `[return, params...]` type names,
    /// or None when BTF has no such function (inlined, or not on this kernel).
    /// fexit programs read arguments and the return value by position.
    pub fn func_proto(&self, name: &str) -> Option<Vec<String>> {
        let func = self.ty(*self.funcs.get(name)?)?;
        let proto = self.ty(func.size_or_type)?;
        if proto.kind != KIND_FUNC_PROTO {
            return None;
        }
        Some(
            std::iter::once(self.type_name(proto.size_or_type, 0))
                .chain(proto.members.iter().map(|p| self.type_name(p.ty, 0)))
                .collect(),
        )
    }

    pub fn has_struct(&self, strukt: &str) -> bool {
        self.structs.contains_key(strukt)
    }

    /// Offset and size of `path` (dot-separated, e.g. `__sk_common.skc_dport`) inside
    /// `struct strukt`.
    pub fn member(&self, strukt: &str, path: &str) -> Result<MemberLayout, BtfError> {
        let mut id = *self
            .structs
            .get(strukt)
            .ok_or_else(|| BtfError::NoStruct(strukt.into()))?;
        let mut bits = 0;
        for part in path.split('.') {
            let (off, ty) = self
                .find_member(id, part, 0)
                .ok_or_else(|| BtfError::NoMember {
                    strukt: strukt.into(),
                    member: path.into(),
                })?;
            bits += off;
            id = ty;
        }
        if bits % 8 != 0 {
            return Err(BtfError::Bitfield {
                strukt: strukt.into(),
                member: path.into(),
            });
        }
        Ok(MemberLayout {
            offset: bits / 8,
            size: self.size_of(id),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_non_btf() {
        assert!(matches!(Btf::parse(b"hello"), Err(BtfError::Malformed(_))));
        assert!(matches!(
            Btf::parse(&[0u8; 64]),
            Err(BtfError::Malformed(_))
        ));
    }

    /// The kernels the layout test runs against: the BTF snapshots in
    /// tests/data/btf (`/sys/kernel/btf/vmlinux` of the kernel each is named for,
    /// gzip'd), and this host's own when it has one.
    fn kernels() -> Vec<(String, Btf)> {
        use std::io::Read as _;
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/btf");
        let mut files: Vec<_> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.to_string_lossy().ends_with(".btf.gz"))
            .collect();
        files.sort();
        assert!(!files.is_empty(), "no BTF snapshots in {}", dir.display());
        let mut kernels: Vec<(String, Btf)> = files
            .iter()
            .map(|p| {
                let mut raw = Vec::new();
                flate2::read::GzDecoder::new(fs::File::open(p).unwrap())
                    .read_to_end(&mut raw)
                    .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                let btf = Btf::parse(&raw).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
                (p.file_name().unwrap().to_string_lossy().into_owned(), btf)
            })
            .collect();
        if Path::new(VMLINUX).exists() {
            kernels.push((VMLINUX.into(), Btf::from_sys_fs().expect(VMLINUX)));
        }
        kernels
    }

    /// On every kernel: the members the programs read exist, have the sizes the
    /// programs assume, and land where the kernel's own headers put them.
    #[test]
    fn resolves_kernel_layouts() {
        for (kernel, btf) in kernels() {
            // sk_buff.len is an unsigned int; the TCP control block sits in cb[48].
            let len = btf.member("sk_buff", "len").unwrap();
            assert_eq!(len.size, 4, "{kernel}");
            let cb = btf.member("sk_buff", "cb").unwrap();
            assert_eq!(cb.size, 48, "{kernel}");
            // tcp_skb_cb starts with seq and end_seq (u32 each), then the gso fields.
            assert_eq!(
                btf.member("tcp_skb_cb", "seq").unwrap().offset,
                0,
                "{kernel}"
            );
            let segs = btf.member("tcp_skb_cb", "tcp_gso_segs").unwrap();
            assert_eq!((segs.offset, segs.size), (8, 2), "{kernel}");
            // Looking through struct sock_common, which is an anonymous path in sock.
            let dport = btf.member("sock", "__sk_common.skc_dport").unwrap();
            assert_eq!(dport.size, 2, "{kernel}");
            let family = btf.member("sock", "__sk_common.skc_family").unwrap();
            assert_eq!(family.size, 2, "{kernel}");
            assert!(
                matches!(
                    btf.member("sock", "no_such_member"),
                    Err(BtfError::NoMember { .. })
                ),
                "{kernel}"
            );
            assert!(
                matches!(
                    btf.member("no_such_struct", "x"),
                    Err(BtfError::NoStruct(_))
                ),
                "{kernel}"
            );
        }
    }

    /// On every kernel: the raw tracepoint arguments the loader checks before it
    /// picks a raw tracepoint program (`sock_send_length` came with 6.3: where it
    /// is, its first two).
    #[test]
    fn reads_raw_tracepoint_prototypes() {
        let mut with_send_length = Vec::new();
        for (kernel, btf) in kernels() {
            assert_eq!(
                btf.raw_tracepoint_args("netif_receive_skb"),
                Some(vec!["struct sk_buff *".to_string()]),
                "{kernel}"
            );
            if let Some(args) = btf.raw_tracepoint_args("sock_send_length") {
                assert_eq!(args[..2], ["struct sock *", "int"], "{kernel}");
                with_send_length.push(kernel);
            }
            assert_eq!(btf.raw_tracepoint_args("no_such_tracepoint"), None);
        }
        assert!(
            !with_send_length.is_empty(),
            "no kernel with sock_send_length"
        );
    }
}
