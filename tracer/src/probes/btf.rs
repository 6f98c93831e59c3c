//! Just enough of the kernel's BTF (`/sys/kernel/btf/vmlinux`) to check raw tracepoint
//! prototypes and find the few struct members the raw kmem programs read.
//!
//! aya-obj parses BTF but keeps its type table to itself; the format is small and stable
//! (`Documentation/bpf/btf.rst`), and this reader needs three questions answered: what a
//! tracepoint's arguments are, where a member lies in a struct, how big a struct is.

use std::{fs, path::Path};

use thiserror::Error;

#[derive(Debug, Error)]
pub enum BtfError {
    #[error("reading {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("not BTF: {0}")]
    Malformed(&'static str),
}

const MAGIC: u16 = 0xeb9f;

const KIND_INT: u32 = 1;
const KIND_PTR: u32 = 2;
const KIND_ARRAY: u32 = 3;
const KIND_STRUCT: u32 = 4;
const KIND_UNION: u32 = 5;
const KIND_ENUM: u32 = 6;
const KIND_FWD: u32 = 7;
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

/// One type record: where it starts in the type section, and its common header.
#[derive(Debug, Clone, Copy)]
struct Type {
    at: usize,
    name_off: u32,
    kind: u32,
    vlen: usize,
    kind_flag: bool,
    /// `size` or `type`, by kind.
    size_or_type: u32,
}

pub struct Btf {
    types_section: Vec<u8>,
    strings: Vec<u8>,
    /// By type id; id 0 (void) has no record.
    types: Vec<Type>,
}

impl Btf {
    pub fn from_sys() -> Result<Self, BtfError> {
        Self::from_file(Path::new("/sys/kernel/btf/vmlinux"))
    }

    pub fn from_file(path: &Path) -> Result<Self, BtfError> {
        let data = fs::read(path).map_err(|source| BtfError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&data)
    }

    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        let u16_at = |at: usize| {
            data.get(at..at + 2)
                .map(|b| u16::from_le_bytes([b[0], b[1]]))
        };
        let u32_at = |at: usize| {
            data.get(at..at + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        };
        if u16_at(0) != Some(MAGIC) {
            return Err(BtfError::Malformed("bad magic (or not little-endian)"));
        }
        let field = |at| {
            u32_at(at)
                .map(|v| v as usize)
                .ok_or(BtfError::Malformed("short header"))
        };
        let hdr_len = field(4)?;
        let (type_off, type_len, str_off, str_len) =
            (field(8)?, field(12)?, field(16)?, field(20)?);
        let section = |off: usize, len: usize| {
            let start = hdr_len.checked_add(off)?;
            data.get(start..start.checked_add(len)?)
        };
        let types_section = section(type_off, type_len)
            .ok_or(BtfError::Malformed("type section out of bounds"))?
            .to_vec();
        let strings = section(str_off, str_len)
            .ok_or(BtfError::Malformed("string section out of bounds"))?
            .to_vec();
        let types = index(&types_section)?;
        Ok(Btf {
            types_section,
            strings,
            types,
        })
    }

    fn u32_at(&self, at: usize) -> u32 {
        let b = &self.types_section[at..at + 4];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    fn name(&self, off: u32) -> &str {
        let rest = self.strings.get(off as usize..).unwrap_or_default();
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        std::str::from_utf8(&rest[..end]).unwrap_or("")
    }

    fn get(&self, id: u32) -> Option<Type> {
        id.checked_sub(1)
            .and_then(|i| self.types.get(i as usize))
            .copied()
    }

    fn find(&self, kind: u32, name: &str) -> Option<(u32, Type)> {
        self.types
            .iter()
            .enumerate()
            .find(|(_, t)| t.kind == kind && self.name(t.name_off) == name)
            .map(|(i, t)| (i as u32 + 1, *t))
    }

    /// The byte size of `struct name`.
    pub fn struct_size(&self, name: &str) -> Option<u32> {
        self.find(KIND_STRUCT, name).map(|(_, t)| t.size_or_type)
    }

    /// The byte offset of `member` in `struct name` (members of anonymous unions and structs
    /// inside it included); `None` for bit fields.
    pub fn member_offset(&self, name: &str, member: &str) -> Option<u32> {
        let (_, t) = self.find(KIND_STRUCT, name)?;
        self.member_in(t, member, 0)
    }

    fn member_in(&self, t: Type, member: &str, depth: u32) -> Option<u32> {
        if depth > 8 {
            return None;
        }
        for i in 0..t.vlen {
            let at = t.at + 12 + i * 12;
            let (name_off, type_id, offset) =
                (self.u32_at(at), self.u32_at(at + 4), self.u32_at(at + 8));
            let bits = if t.kind_flag {
                offset & 0xff_ffff
            } else {
                offset
            };
            if self.name(name_off) == member {
                let bitfield = t.kind_flag && offset >> 24 != 0;
                return (!bitfield && bits.is_multiple_of(8)).then_some(bits / 8);
            }
            if name_off == 0
                && let Some(inner) = self.get(type_id)
                && matches!(inner.kind, KIND_STRUCT | KIND_UNION)
                && let Some(off) = self.member_in(inner, member, depth + 1)
            {
                return Some(bits / 8 + off);
            }
        }
        None
    }

    /// The arguments of raw tracepoint `name` (`TP_PROTO`, without the leading `void *`), as C
    /// type names: `long unsigned int`, `const void *`, `struct kmem_cache *`, `gfp_t`.
    pub fn tracepoint_args(&self, name: &str) -> Option<Vec<String>> {
        let (_, typedef) = self.find(KIND_TYPEDEF, &format!("btf_trace_{name}"))?;
        let ptr = self.get(typedef.size_or_type)?;
        let proto = (ptr.kind == KIND_PTR)
            .then(|| self.get(ptr.size_or_type))
            .flatten()
            .filter(|p| p.kind == KIND_FUNC_PROTO)?;
        let args: Vec<String> = (0..proto.vlen)
            .map(|i| self.describe(self.u32_at(proto.at + 12 + i * 8 + 4), 0))
            .collect();
        args.split_first().map(|(_, rest)| rest.to_vec())
    }

    fn describe(&self, id: u32, depth: u32) -> String {
        let Some(t) = self.get(id).filter(|_| depth < 16) else {
            return "void".into();
        };
        let name = self.name(t.name_off);
        match t.kind {
            KIND_PTR => format!("{} *", self.describe(t.size_or_type, depth + 1)),
            KIND_CONST => format!("const {}", self.describe(t.size_or_type, depth + 1)),
            KIND_VOLATILE => format!("volatile {}", self.describe(t.size_or_type, depth + 1)),
            KIND_RESTRICT | KIND_TYPE_TAG => self.describe(t.size_or_type, depth + 1),
            KIND_STRUCT => format!("struct {name}"),
            KIND_UNION => format!("union {name}"),
            KIND_ENUM | KIND_ENUM64 => format!("enum {name}"),
            KIND_FWD if t.kind_flag => format!("union {name}"),
            KIND_FWD => format!("struct {name}"),
            _ => name.to_string(),
        }
    }
}

/// The start of every type record, by id.
fn index(section: &[u8]) -> Result<Vec<Type>, BtfError> {
    let mut types = Vec::new();
    let mut at = 0;
    while at < section.len() {
        let word = |i: usize| {
            section
                .get(at + i * 4..at + i * 4 + 4)
                .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .ok_or(BtfError::Malformed("truncated type record"))
        };
        let (name_off, info, size_or_type) = (word(0)?, word(1)?, word(2)?);
        let kind = (info >> 24) & 0x1f;
        let vlen = (info & 0xffff) as usize;
        let extra = match kind {
            KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
            KIND_ARRAY => 12,
            KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
            KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
            KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
            | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
            _ => return Err(BtfError::Malformed("unknown type kind")),
        };
        types.push(Type {
            at,
            name_off,
            kind,
            vlen,
            kind_flag: info >> 31 != 0,
            size_or_type,
        });
        at += 12 + extra;
        if at > section.len() {
            return Err(BtfError::Malformed("truncated type record"));
        }
    }
    Ok(types)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_this_kernels_kmem_tracepoints_and_structs() {
        let btf = Btf::from_sys().expect("the kernel has BTF");
        let args = btf.tracepoint_args("kfree").unwrap();
        assert_eq!(args, ["long unsigned int", "const void *"]);
        let args = btf.tracepoint_args("kmem_cache_alloc").unwrap();
        assert_eq!(args[2], "struct kmem_cache *");
        assert!(btf.tracepoint_args("no_such_tracepoint").is_none());
        assert_eq!(btf.struct_size("page"), Some(64));
        // pt_regs is the x86-64 register frame: ip follows 15 registers and orig_ax.
        assert_eq!(btf.member_offset("pt_regs", "ip"), Some(16 * 8));
        let name = btf.member_offset("kmem_cache", "name").unwrap();
        assert!(
            name > 0 && name.is_multiple_of(8),
            "kmem_cache.name at {name}"
        );
        assert!(btf.member_offset("kmem_cache", "no_such_member").is_none());
    }

    #[test]
    fn malformed_input_is_an_error() {
        assert!(Btf::parse(&[]).is_err());
        assert!(Btf::parse(&[0x9f, 0xeb, 1, 0, 24, 0, 0, 0]).is_err());
        // A header pointing past the end.
        let mut hdr = vec![0x9f, 0xeb, 1, 0];
        for v in [24u32, 0, 100, 100, 10] {
            hdr.extend_from_slice(&v.to_le_bytes());
        }
        assert!(Btf::parse(&hdr).is_err());
        // A type record cut short.
        let mut hdr = vec![0x9f, 0xeb, 1, 0];
        for v in [24u32, 0, 8, 8, 1] {
            hdr.extend_from_slice(&v.to_le_bytes());
        }
        hdr.extend_from_slice(&[0; 9]);
        assert!(Btf::parse(&hdr).is_err());
    }
}
