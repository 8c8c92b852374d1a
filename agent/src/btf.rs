//! Just enough of a BTF reader to find struct member offsets in the running kernel's
//! type information (`/sys/kernel/btf/vmlinux`), for the probes' read-only globals.
//!
//! Format (include/uapi/linux/btf.h): a header (`magic 0xeB9F, version, flags,
//! hdr_len, type_off, type_len, str_off, str_len`), then `struct btf_type` records
//! (`name_off, info, size|type`) each followed by kind-specific data, and a string
//! table. Type ids start at 1 in record order.
//!
//! aya parses the same BTF to attach and relocate the programs, but its types
//! (aya-obj 0.3's `Btf`, `Struct`, `BtfMember`) keep members and their offsets
//! crate-private: it can find a struct, not read its layout. Hence this reader, for
//! offsets only.

use std::collections::HashMap;

/// Where the kernel publishes its own BTF.
pub const VMLINUX_BTF: &str = "/sys/kernel/btf/vmlinux";

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read {path}: {source} (kernel built without CONFIG_DEBUG_INFO_BTF?)")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("malformed BTF: {0}")]
    Malformed(&'static str),
    #[error("tracepoint {0} not found in kernel BTF")]
    NoTracepoint(String),
    #[error("struct {0} not found in kernel BTF")]
    NoStruct(String),
    #[error("struct {strukt} has no member {member} in kernel BTF")]
    NoMember { strukt: String, member: String },
    #[error("{strukt}.{member} is {actual} bytes in kernel BTF, expected {expected}")]
    Size {
        strukt: String,
        member: String,
        actual: u32,
        expected: u32,
    },
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
const KIND_FUNC_PROTO: u32 = 13;
const KIND_VAR: u32 = 14;
const KIND_DATASEC: u32 = 15;
const KIND_FLOAT: u32 = 16;
const KIND_DECL_TAG: u32 = 17;
const KIND_TYPE_TAG: u32 = 18;
const KIND_ENUM64: u32 = 19;

/// Longest chain of typedefs, qualifiers and arrays, and deepest nesting of
/// anonymous members, followed before the BTF counts as malformed (a loop).
const MAX_CHAIN: u32 = 32;

/// One type record: where it starts in the type section, and its decoded header.
#[derive(Clone, Copy)]
struct TypeRec {
    name_off: u32,
    kind: u32,
    vlen: u32,
    kind_flag: bool,
    size_or_type: u32,
    /// Byte offset of the kind-specific data in the type section.
    data: usize,
}

/// Parsed kernel BTF: type records and strings, indexed by struct name.
pub struct Btf {
    types: Vec<TypeRec>,
    type_section: Vec<u8>,
    strings: Vec<u8>,
    structs: HashMap<String, u32>,
}

/// A struct member: byte offset and byte size.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Member {
    pub offset: u32,
    pub size: u32,
}

/// The running kernel's BTF as bytes (about 5 MB), read once by the caller for
/// every parser that needs it.
pub fn vmlinux_bytes() -> Result<Vec<u8>, BtfError> {
    std::fs::read(VMLINUX_BTF).map_err(|source| BtfError::Read {
        path: VMLINUX_BTF.to_owned(),
        source,
    })
}

fn u32_at(buf: &[u8], at: usize) -> Result<u32, BtfError> {
    buf.get(at..at + 4)
        .and_then(|b| b.try_into().ok())
        .map(u32::from_le_bytes)
        .ok_or(BtfError::Malformed("truncated"))
}

impl Btf {
    /// Reads the running kernel's BTF.
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::parse(&vmlinux_bytes()?)
    }

    /// Parses a little-endian BTF blob.
    pub fn parse(data: &[u8]) -> Result<Self, BtfError> {
        if data.get(0..2) != Some(&[0x9f, 0xeb]) {
            return Err(BtfError::Malformed(
                "bad magic (big-endian BTF is not supported)",
            ));
        }
        let hdr_len = u32_at(data, 4)? as usize;
        let section = |off_at: usize| -> Result<&[u8], BtfError> {
            let off = hdr_len + u32_at(data, off_at)? as usize;
            let len = u32_at(data, off_at + 4)? as usize;
            data.get(off..off + len)
                .ok_or(BtfError::Malformed("section out of bounds"))
        };
        let type_section = section(8)?.to_vec();
        let strings = section(16)?.to_vec();

        let mut types = vec![TypeRec {
            name_off: 0,
            kind: 0,
            vlen: 0,
            kind_flag: false,
            size_or_type: 0,
            data: 0,
        }];
        let mut at = 0;
        while at < type_section.len() {
            let info = u32_at(&type_section, at + 4)?;
            let rec = TypeRec {
                name_off: u32_at(&type_section, at)?,
                kind: (info >> 24) & 0x1f,
                vlen: info & 0xffff,
                kind_flag: info >> 31 == 1,
                size_or_type: u32_at(&type_section, at + 8)?,
                data: at + 12,
            };
            let extra = match rec.kind {
                KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
                KIND_ARRAY => 12,
                KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * rec.vlen as usize,
                KIND_ENUM | KIND_FUNC_PROTO => 8 * rec.vlen as usize,
                KIND_PTR | 7 | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | 12
                | KIND_FLOAT | KIND_TYPE_TAG => 0,
                _ => return Err(BtfError::Malformed("unknown type kind")),
            };
            types.push(rec);
            at = rec.data + extra;
        }

        let mut btf = Self {
            types,
            type_section,
            strings,
            structs: HashMap::new(),
        };
        for id in 1..btf.types.len() {
            let rec = btf.types[id];
            if rec.kind == KIND_STRUCT && rec.name_off != 0 {
                let name = btf.string(rec.name_off)?.to_owned();
                // Keep the first definition; kernel BTF has one per name.
                btf.structs.entry(name).or_insert(id as u32);
            }
        }
        Ok(btf)
    }

    fn string(&self, off: u32) -> Result<&str, BtfError> {
        let tail = self
            .strings
            .get(off as usize..)
            .ok_or(BtfError::Malformed("string offset out of bounds"))?;
        let end = tail.iter().position(|&b| b == 0).unwrap_or(tail.len());
        std::str::from_utf8(&tail[..end]).map_err(|_| BtfError::Malformed("non-UTF-8 name"))
    }

    fn rec(&self, id: u32) -> Result<TypeRec, BtfError> {
        self.types
            .get(id as usize)
            .copied()
            .ok_or(BtfError::Malformed("type id out of range"))
    }

    /// Size in bytes of a type, through typedefs, qualifiers and arrays (of arrays).
    fn size_of(&self, mut id: u32) -> Result<u32, BtfError> {
        // Elements of all the arrays passed through so far.
        let mut count: u32 = 1;
        for _ in 0..MAX_CHAIN {
            let rec = self.rec(id)?;
            let size = match rec.kind {
                KIND_INT | KIND_STRUCT | KIND_UNION | KIND_ENUM | KIND_ENUM64 | KIND_FLOAT => {
                    rec.size_or_type
                }
                KIND_PTR => 8,
                KIND_ARRAY => {
                    let n = u32_at(&self.type_section, rec.data + 8)?;
                    count = count
                        .checked_mul(n)
                        .ok_or(BtfError::Malformed("array larger than 4 GiB"))?;
                    id = u32_at(&self.type_section, rec.data)?;
                    continue;
                }
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = rec.size_or_type;
                    continue;
                }
                _ => return Err(BtfError::Malformed("type without a size")),
            };
            return size
                .checked_mul(count)
                .ok_or(BtfError::Malformed("array larger than 4 GiB"));
        }
        Err(BtfError::Malformed("type chain too long"))
    }

    /// Finds `member` in struct or union `id`, descending into anonymous members.
    fn find(&self, id: u32, member: &str) -> Result<Option<Member>, BtfError> {
        self.find_nested(id, member, 0)
    }

    /// [`Self::find`] at `depth` anonymous members down: bounded, as a struct that
    /// contains itself would otherwise recurse without end.
    fn find_nested(&self, id: u32, member: &str, depth: u32) -> Result<Option<Member>, BtfError> {
        if depth >= MAX_CHAIN {
            return Err(BtfError::Malformed("anonymous members nested too deep"));
        }
        let rec = self.rec(id)?;
        if rec.kind != KIND_STRUCT && rec.kind != KIND_UNION {
            return Ok(None);
        }
        for i in 0..rec.vlen as usize {
            let at = rec.data + 12 * i;
            let name_off = u32_at(&self.type_section, at)?;
            let type_id = u32_at(&self.type_section, at + 4)?;
            let raw = u32_at(&self.type_section, at + 8)?;
            let (bit_offset, bitfield) = if rec.kind_flag {
                (raw & 0x00ff_ffff, raw >> 24)
            } else {
                (raw, 0)
            };
            if name_off == 0 {
                if let Some(inner) = self.find_nested(self.strip(type_id)?, member, depth + 1)? {
                    let offset = (bit_offset / 8)
                        .checked_add(inner.offset)
                        .ok_or(BtfError::Malformed("member offset beyond 4 GiB"))?;
                    return Ok(Some(Member {
                        offset,
                        size: inner.size,
                    }));
                }
            } else if self.string(name_off)? == member {
                if bitfield != 0 || bit_offset % 8 != 0 {
                    return Err(BtfError::Malformed("member is a bitfield"));
                }
                return Ok(Some(Member {
                    offset: bit_offset / 8,
                    size: self.size_of(type_id)?,
                }));
            }
        }
        Ok(None)
    }

    /// Follows typedefs and qualifiers to the underlying type.
    fn strip(&self, mut id: u32) -> Result<u32, BtfError> {
        for _ in 0..MAX_CHAIN {
            let rec = self.rec(id)?;
            match rec.kind {
                KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG => {
                    id = rec.size_or_type
                }
                _ => return Ok(id),
            }
        }
        Err(BtfError::Malformed("type chain too long"))
    }

    /// Whether the kernel defines `struct <strukt>`.
    pub fn has_struct(&self, strukt: &str) -> bool {
        self.structs.contains_key(strukt)
    }

    /// Offset and size of `strukt.member`.
    pub fn member(&self, strukt: &str, member: &str) -> Result<Member, BtfError> {
        let id = *self
            .structs
            .get(strukt)
            .ok_or_else(|| BtfError::NoStruct(strukt.to_owned()))?;
        self.find(id, member)?.ok_or_else(|| BtfError::NoMember {
            strukt: strukt.to_owned(),
            member: member.to_owned(),
        })
    }

    /// The argument types of the raw tracepoint `tracepoint` (without the context),
    /// from the `btf_trace_<tracepoint>` typedef the kernel declares for tp_btf
    /// programs (`void (*)(void *ctx, args...)`).
    fn tracepoint_params(&self, tracepoint: &str) -> Result<Vec<u32>, BtfError> {
        let name = format!("btf_trace_{tracepoint}");
        let typedef = self
            .types
            .iter()
            .find(|r| r.kind == KIND_TYPEDEF && self.string(r.name_off).is_ok_and(|n| n == name))
            .ok_or_else(|| BtfError::NoTracepoint(tracepoint.to_owned()))?;
        let pointer = self.rec(self.strip(typedef.size_or_type)?)?;
        if pointer.kind != KIND_PTR {
            return Err(BtfError::Malformed("tracepoint typedef is not a pointer"));
        }
        let proto = self.rec(self.strip(pointer.size_or_type)?)?;
        if proto.kind != KIND_FUNC_PROTO || proto.vlen == 0 {
            return Err(BtfError::Malformed("tracepoint typedef is not a prototype"));
        }
        // Parameters are (name_off, type) pairs; the first is the context.
        (1..proto.vlen as usize)
            .map(|i| u32_at(&self.type_section, proto.data + 8 * i + 4))
            .collect()
    }

    /// How many arguments the raw tracepoint `tracepoint` passes: tells kernels apart
    /// where a tracepoint gained one (`sched_switch`'s `prev_state`, 5.18).
    pub fn tracepoint_arity(&self, tracepoint: &str) -> Result<usize, BtfError> {
        Ok(self.tracepoint_params(tracepoint)?.len())
    }

    /// Whether argument `arg` (from 0) of the raw tracepoint `tracepoint` is a
    /// pointer: tells apart kernels whose tracepoint passes a `struct task_struct *`
    /// from those that pass a pid.
    pub fn tracepoint_arg_is_pointer(
        &self,
        tracepoint: &str,
        arg: usize,
    ) -> Result<bool, BtfError> {
        let params = self.tracepoint_params(tracepoint)?;
        let param_type = *params.get(arg).ok_or(BtfError::Malformed(
            "tracepoint prototype without that argument",
        ))?;
        Ok(self.rec(self.strip(param_type)?)?.kind == KIND_PTR)
    }

    /// Byte offset of `strukt.member`, checking that the member is `size` bytes wide.
    pub fn offset_of(&self, strukt: &str, member: &str, size: u32) -> Result<u32, BtfError> {
        let m = self.member(strukt, member)?;
        if m.size != size {
            return Err(BtfError::Size {
                strukt: strukt.to_owned(),
                member: member.to_owned(),
                actual: m.size,
                expected: size,
            });
        }
        Ok(m.offset)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tiny BTF blob: `struct s { int a; union { long b; }; int *c; }`.
    fn blob() -> Vec<u8> {
        let strings = b"\0int\0long\0s\0a\0b\0c\0";
        let name = |s: &str| {
            let needle = format!("\0{s}\0");
            (strings
                .windows(needle.len())
                .position(|w| w == needle.as_bytes())
                .unwrap()
                + 1) as u32
        };
        let mut t = Vec::new();
        let mut push = |words: &[u32]| {
            words
                .iter()
                .for_each(|w| t.extend_from_slice(&w.to_le_bytes()))
        };
        push(&[name("int"), KIND_INT << 24, 4, 32]); // 1: int
        push(&[name("long"), KIND_INT << 24, 8, 64]); // 2: long
        push(&[0, KIND_UNION << 24 | 1, 8, name("b"), 2, 0]); // 3: union { long b; }
        push(&[0, KIND_PTR << 24, 1]); // 4: int *
        push(&[
            name("s"),
            KIND_STRUCT << 24 | 3,
            24,
            name("a"),
            1,
            0,
            0,
            3,
            64,
            name("c"),
            4,
            128,
        ]); // 5
        let mut out = Vec::new();
        for w in [
            0xeb9f_u32 | 1 << 16,
            24,
            0,
            t.len() as u32,
            t.len() as u32,
            strings.len() as u32,
        ] {
            out.extend_from_slice(&w.to_le_bytes());
        }
        out.extend_from_slice(&t);
        out.extend_from_slice(strings);
        out
    }

    #[test]
    fn finds_direct_anonymous_and_pointer_members() {
        let btf = Btf::parse(&blob()).unwrap();
        assert_eq!(btf.member("s", "a").unwrap(), Member { offset: 0, size: 4 });
        assert_eq!(btf.member("s", "b").unwrap(), Member { offset: 8, size: 8 });
        assert_eq!(btf.offset_of("s", "c", 8).unwrap(), 16);
        assert!(matches!(
            btf.offset_of("s", "a", 8),
            Err(BtfError::Size { .. })
        ));
        assert!(matches!(
            btf.member("s", "zz"),
            Err(BtfError::NoMember { .. })
        ));
        assert!(matches!(btf.member("t", "a"), Err(BtfError::NoStruct(_))));
    }

    /// BTF of `types` (the words of the type section), with the strings `int`, `s`
    /// and `a` at offsets 1, 5 and 7.
    fn encode(types: &[u32]) -> Vec<u8> {
        let strings = b"\0int\0s\0a\0";
        let len = 4 * types.len() as u32;
        let header = [0xeb9f_u32 | 1 << 16, 24, 0, len, len, strings.len() as u32];
        let words = header.iter().chain(types).flat_map(|w| w.to_le_bytes());
        words.chain(strings.iter().copied()).collect()
    }

    /// Type 1: `int`.
    const INT: [u32; 4] = [1, KIND_INT << 24, 4, 32];

    /// Type 2: `int[n]`; type 3: `struct s { int a[n][m]; }`.
    fn array_member(n: u32, m: u32) -> Vec<u32> {
        let mut t = INT.to_vec();
        t.extend([0, KIND_ARRAY << 24, 0, 1, 1, n]);
        t.extend([0, KIND_ARRAY << 24, 0, 2, 1, m]);
        t.extend([5, KIND_STRUCT << 24 | 1, 0, 7, 3, 0]);
        t
    }

    #[test]
    fn arrays_of_arrays_and_their_overflow() {
        let btf = Btf::parse(&encode(&array_member(3, 2))).unwrap();
        assert_eq!(
            btf.member("s", "a").unwrap(),
            Member {
                offset: 0,
                size: 24
            }
        );
        // Found by the btf fuzz target: 4 GiB of ints overflowed the size's `*`.
        let btf = Btf::parse(&encode(&array_member(1 << 15, 1 << 15))).unwrap();
        assert!(matches!(btf.member("s", "a"), Err(BtfError::Malformed(_))));
    }

    #[test]
    fn loops_in_types_are_malformed_not_endless() {
        // 2: an array of itself; 3: struct s { <2> a; }
        let mut t = INT.to_vec();
        t.extend([0, KIND_ARRAY << 24, 0, 2, 1, 1]);
        t.extend([5, KIND_STRUCT << 24 | 1, 0, 7, 2, 0]);
        let btf = Btf::parse(&encode(&t)).unwrap();
        assert!(matches!(btf.member("s", "a"), Err(BtfError::Malformed(_))));
        // 2: struct s { struct s; }: an anonymous member of its own type.
        let mut t = INT.to_vec();
        t.extend([5, KIND_STRUCT << 24 | 1, 4, 0, 2, 0]);
        let btf = Btf::parse(&encode(&t)).unwrap();
        assert!(matches!(btf.member("s", "a"), Err(BtfError::Malformed(_))));
    }

    #[test]
    fn member_offsets_beyond_4_gib_are_malformed() {
        // 2: struct s { <3> at 512 MiB }, 3: { <4> at 512 MiB }, ... 11: { int a; }
        let mut t = INT.to_vec();
        for id in 2..11 {
            let name = if id == 2 { 5 } else { 0 };
            t.extend([name, KIND_STRUCT << 24 | 1, 0, 0, id + 1, 0xffff_fff8]);
        }
        t.extend([0, KIND_STRUCT << 24 | 1, 4, 7, 1, 0]);
        let btf = Btf::parse(&encode(&t)).unwrap();
        assert!(matches!(btf.member("s", "a"), Err(BtfError::Malformed(_))));
    }

    #[test]
    fn rejects_truncated_and_foreign_data() {
        let data = blob();
        assert!(Btf::parse(&data[..30]).is_err());
        assert!(Btf::parse(b"not btf at all, not at all").is_err());
    }

    #[test]
    fn reads_the_running_kernel() {
        let Ok(btf) = Btf::from_sys_fs() else {
            eprintln!("skipped: {VMLINUX_BTF} is not readable");
            return;
        };
        assert_eq!(btf.member("task_struct", "pid").unwrap().size, 4);
        assert_eq!(btf.member("kernfs_node", "id").unwrap().size, 8);
        // sched_switch(bool preempt, struct task_struct *prev, ...)
        assert!(!btf.tracepoint_arg_is_pointer("sched_switch", 0).unwrap());
        assert!(btf.tracepoint_arg_is_pointer("sched_switch", 1).unwrap());
        assert!(btf.tracepoint_arg_is_pointer("sched_switch", 9).is_err());
        assert!(btf
            .tracepoint_arg_is_pointer("no_such_tracepoint", 0)
            .is_err());
    }
}
