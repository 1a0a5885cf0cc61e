//! Just enough of the kernel's BTF (BPF Type Format) to find where a field sits in a kernel
//! structure.
//!
//! The connect hook (`attribution::connect_hook`, which uses this module; nothing here uses
//! it) reads a few fields of `struct sock` and needs their offsets in the running kernel; the
//! kernel describes its own types in `/sys/kernel/btf/vmlinux`. No crate reads BTF without
//! also pulling in an eBPF loader and object-file toolchain, so this reads it by hand.
//!
//! The file is about 5 MiB. It is streamed, never held whole, so starting the helper does not
//! double its memory peak: one pass over the string section finds the names we need, then a
//! few passes over the type section keep only the types reachable from those names.

use std::collections::{HashMap, HashSet};
use std::io::{self, BufReader, Read, Seek, SeekFrom};

#[derive(Debug, thiserror::Error)]
pub enum BtfError {
    #[error("cannot read BTF: {0}")]
    Io(#[from] io::Error),
    #[error("not BTF data (magic {0:#06x})")]
    Magic(u16),
    #[error("unsupported BTF version {0}")]
    Version(u8),
    #[error("unknown BTF kind {kind} at type {id}")]
    Kind { kind: u32, id: u32 },
    #[error("BTF has no {0}")]
    Missing(String),
}

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

/// The bytes that follow a type's 12-byte header.
fn trailer_len(kind: u32, vlen: u32, id: u32) -> Result<u64, BtfError> {
    let vlen = u64::from(vlen);
    Ok(match kind {
        KIND_INT | KIND_VAR | KIND_DECL_TAG => 4,
        KIND_PTR | KIND_FWD | KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT
        | KIND_FUNC | KIND_FLOAT | KIND_TYPE_TAG => 0,
        KIND_ARRAY => 12,
        KIND_STRUCT | KIND_UNION | KIND_DATASEC | KIND_ENUM64 => 12 * vlen,
        KIND_ENUM | KIND_FUNC_PROTO => 8 * vlen,
        _ => return Err(BtfError::Kind { kind, id }),
    })
}

#[derive(Debug, Clone)]
struct Member {
    name: u32,
    ty: u32,
    /// Offset from the start of the enclosing struct, in bits.
    bits: u32,
    /// A bitfield: reading its bytes would read its neighbours too.
    bitfield: bool,
}

#[derive(Debug, Clone)]
struct Type {
    name: u32,
    kind: u32,
    /// The size for structs and unions; the referenced type for typedefs, modifiers, funcs.
    size_or_type: u32,
    members: Vec<Member>,
}

impl Type {
    fn is_composite(&self) -> bool {
        matches!(self.kind, KIND_STRUCT | KIND_UNION)
    }

    fn is_alias(&self) -> bool {
        matches!(
            self.kind,
            KIND_TYPEDEF | KIND_VOLATILE | KIND_CONST | KIND_RESTRICT | KIND_TYPE_TAG
        )
    }
}

/// The types reachable from a set of names, out of one BTF blob.
#[derive(Debug)]
pub struct Btf {
    /// Every string offset whose string is one of the names asked for, and that name.
    names: HashMap<u32, String>,
    types: HashMap<u32, Type>,
}

/// How many passes over the type section may follow references (anonymous unions within
/// anonymous structs within typedefs...). Kernel structures need three or four.
const MAX_PASSES: usize = 8;

impl Btf {
    /// Reads the structs and unions named in `names`, and every type their
    /// members reach through anonymous members, typedefs and modifiers, or through members
    /// whose names are also in `names`.
    pub fn load<R: Read + Seek>(r: R, names: &[&str]) -> Result<Btf, BtfError> {
        let mut r = BufReader::with_capacity(64 * 1024, r);
        let mut hdr = [0u8; 24];
        r.read_exact(&mut hdr)?;
        let magic = u16::from_le_bytes([hdr[0], hdr[1]]);
        if magic != 0xeb9f {
            return Err(BtfError::Magic(magic));
        }
        if hdr[2] != 1 {
            return Err(BtfError::Version(hdr[2]));
        }
        let word = |i: usize| u32::from_le_bytes([hdr[i], hdr[i + 1], hdr[i + 2], hdr[i + 3]]);
        let (hdr_len, type_off, type_len, str_off, str_len) =
            (word(4), word(8), word(12), word(16), word(20));
        let types_at = u64::from(hdr_len) + u64::from(type_off);
        let strings_at = u64::from(hdr_len) + u64::from(str_off);

        let wanted: HashSet<&str> = names.iter().copied().collect();
        let names = find_strings(&mut r, strings_at, str_len, &wanted)?;

        let mut types: HashMap<u32, Type> = HashMap::new();
        let mut want_ids: HashSet<u32> = HashSet::new();
        for pass in 0..MAX_PASSES {
            let first = pass == 0;
            let found = scan_types(&mut r, types_at, type_len, |id, t| {
                if first {
                    t.name != 0 && names.contains_key(&t.name) && t.is_composite()
                } else {
                    want_ids.contains(&id)
                }
            })?;
            types.extend(found);
            // What the loaded types lead to that is not loaded yet.
            want_ids.clear();
            for t in types.values() {
                if t.is_alias() {
                    want_ids.insert(t.size_or_type);
                }
                for m in &t.members {
                    if m.name == 0 || names.contains_key(&m.name) {
                        want_ids.insert(m.ty);
                    }
                }
            }
            want_ids.retain(|id| !types.contains_key(id));
            if want_ids.is_empty() {
                break;
            }
        }
        Ok(Btf { names, types })
    }

    fn named(&self, name: &str, kinds: &[u32]) -> Option<(u32, &Type)> {
        let mut found: Vec<(u32, &Type)> = self
            .types
            .iter()
            .filter(|(_, t)| {
                kinds.contains(&t.kind) && self.names.get(&t.name).is_some_and(|n| n == name)
            })
            // An empty struct of the same name is not the one.
            .filter(|(_, t)| t.size_or_type > 0)
            .map(|(id, t)| (*id, t))
            .collect();
        found.sort_by_key(|(id, _)| *id);
        found.into_iter().next()
    }

    /// The byte offset of `path` (member names, each within the one before) from the start
    /// of struct `ty`. Members of anonymous structs and unions are found as the C compiler
    /// finds them: as if they were members of the enclosing struct.
    pub fn offset_of(&self, ty: &str, path: &[&str]) -> Result<u32, BtfError> {
        let missing = || BtfError::Missing(format!("{ty}.{}", path.join(".")));
        let (mut id, _) = self
            .named(ty, &[KIND_STRUCT, KIND_UNION])
            .ok_or_else(missing)?;
        let mut bits = 0u32;
        for step in path {
            let (off, m) = self.member_at(id, step, 0).ok_or_else(missing)?;
            if m.bitfield {
                return Err(missing());
            }
            bits += off;
            id = m.ty;
        }
        if !bits.is_multiple_of(8) {
            return Err(missing());
        }
        Ok(bits / 8)
    }

    /// The size in bytes of the struct or union that member `path` of `ty` has as its type.
    pub fn size_at(&self, ty: &str, path: &[&str]) -> Result<u32, BtfError> {
        let missing = || BtfError::Missing(format!("size of {ty}.{}", path.join(".")));
        let (mut id, _) = self
            .named(ty, &[KIND_STRUCT, KIND_UNION])
            .ok_or_else(missing)?;
        for step in path {
            id = self.member_at(id, step, 0).ok_or_else(missing)?.1.ty;
        }
        let t = self.resolve(id, 0).ok_or_else(missing)?;
        Ok(t.size_or_type)
    }

    /// Follows typedefs and modifiers to the struct or union `id` stands for.
    fn resolve(&self, id: u32, depth: usize) -> Option<&Type> {
        let t = self.types.get(&id)?;
        if t.is_alias() && depth < 16 {
            self.resolve(t.size_or_type, depth + 1)
        } else if t.is_composite() {
            Some(t)
        } else {
            None
        }
    }

    /// The member `name` of the struct or union `id`, looking into anonymous members, and
    /// its bit offset from the start of `id`.
    fn member_at(&self, id: u32, name: &str, depth: usize) -> Option<(u32, &Member)> {
        if depth > 16 {
            return None;
        }
        let t = self.resolve(id, 0)?;
        for m in &t.members {
            if m.name != 0 && self.names.get(&m.name).is_some_and(|n| n == name) {
                return Some((m.bits, m));
            }
        }
        for m in t.members.iter().filter(|m| m.name == 0) {
            if let Some((off, found)) = self.member_at(m.ty, name, depth + 1) {
                return Some((m.bits + off, found));
            }
        }
        None
    }
}

/// The offsets of the strings in `wanted`, from a pass over the string section.
fn find_strings<R: Read + Seek>(
    r: &mut R,
    at: u64,
    len: u32,
    wanted: &HashSet<&str>,
) -> Result<HashMap<u32, String>, BtfError> {
    r.seek(SeekFrom::Start(at))?;
    let longest = wanted.iter().map(|w| w.len()).max().unwrap_or(0);
    let mut out = HashMap::new();
    let mut cur: Vec<u8> = Vec::with_capacity(256);
    let mut start = 0u32;
    let mut too_long = false;
    let mut buf = [0u8; 8192];
    let mut pos = 0u32;
    while pos < len {
        let want = usize::try_from(len - pos)
            .unwrap_or(usize::MAX)
            .min(buf.len());
        let n = r.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
        }
        for &b in &buf[..n] {
            if b == 0 {
                if !too_long {
                    if let Ok(s) = std::str::from_utf8(&cur) {
                        if wanted.contains(s) {
                            out.insert(start, s.to_string());
                        }
                    }
                }
                cur.clear();
                too_long = false;
                start = pos + 1;
            } else if !too_long {
                if cur.len() >= longest {
                    too_long = true;
                } else {
                    cur.push(b);
                }
            }
            pos += 1;
        }
    }
    Ok(out)
}

/// One pass over the type section, keeping the types `keep` accepts (members included).
fn scan_types<R: Read + Seek>(
    r: &mut R,
    at: u64,
    len: u32,
    mut keep: impl FnMut(u32, &Type) -> bool,
) -> Result<HashMap<u32, Type>, BtfError> {
    r.seek(SeekFrom::Start(at))?;
    let mut out = HashMap::new();
    let mut pos = 0u64;
    let end = u64::from(len);
    let mut id = 1u32;
    let mut head = [0u8; 12];
    while pos < end {
        r.read_exact(&mut head)?;
        let w = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        let (name, info, size_or_type) = (w(0), w(4), w(8));
        let vlen = info & 0xffff;
        let kind = (info >> 24) & 0x1f;
        let bitfields = info >> 31 == 1;
        let rest = trailer_len(kind, vlen, id)?;
        let mut t = Type {
            name,
            kind,
            size_or_type,
            members: Vec::new(),
        };
        let wanted = keep(id, &t);
        if wanted && t.is_composite() {
            let mut m = [0u8; 12];
            for _ in 0..vlen {
                r.read_exact(&mut m)?;
                let mw = |i: usize| u32::from_le_bytes([m[i], m[i + 1], m[i + 2], m[i + 3]]);
                let (bits, bitfield) = if bitfields {
                    (mw(8) & 0x00ff_ffff, mw(8) >> 24 != 0)
                } else {
                    (mw(8), false)
                };
                t.members.push(Member {
                    name: mw(0),
                    ty: mw(4),
                    bits,
                    bitfield,
                });
            }
            out.insert(id, t);
        } else {
            if wanted {
                out.insert(id, t);
            }
            skip(r, rest)?;
        }
        pos += 12 + rest;
        id += 1;
    }
    Ok(out)
}

fn skip<R: Read>(r: &mut R, n: u64) -> io::Result<()> {
    let copied = io::copy(&mut r.by_ref().take(n), &mut io::sink())?;
    if copied == n {
        Ok(())
    } else {
        Err(io::ErrorKind::UnexpectedEof.into())
    }
}

#[cfg(test)]
#[path = "btf_tests.rs"]
pub mod tests;
