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
pub mod tests {
    use super::*;
    use std::io::Cursor;

    /// Builds a BTF blob type by type, for tests.
    #[derive(Default)]
    pub struct Builder {
        types: Vec<u8>,
        strings: Vec<u8>,
        next_id: u32,
    }

    impl Builder {
        pub fn new() -> Builder {
            Builder {
                types: Vec::new(),
                strings: vec![0],
                next_id: 1,
            }
        }

        fn string(&mut self, s: &str) -> u32 {
            if s.is_empty() {
                return 0;
            }
            let off = u32::try_from(self.strings.len()).unwrap();
            self.strings.extend_from_slice(s.as_bytes());
            self.strings.push(0);
            off
        }

        fn head(&mut self, name: &str, kind: u32, vlen: u32, x: u32) -> u32 {
            let n = self.string(name);
            self.types.extend_from_slice(&n.to_le_bytes());
            self.types
                .extend_from_slice(&((kind << 24) | vlen).to_le_bytes());
            self.types.extend_from_slice(&x.to_le_bytes());
            let id = self.next_id;
            self.next_id += 1;
            id
        }

        pub fn int(&mut self, name: &str, size: u32) -> u32 {
            let id = self.head(name, KIND_INT, 0, size);
            self.types.extend_from_slice(&(size * 8).to_le_bytes());
            id
        }

        pub fn ptr(&mut self, to: u32) -> u32 {
            self.head("", KIND_PTR, 0, to)
        }

        pub fn typedef(&mut self, name: &str, to: u32) -> u32 {
            self.head(name, KIND_TYPEDEF, 0, to)
        }

        pub fn array(&mut self, elem: u32, index: u32, n: u32) -> u32 {
            let id = self.head("", KIND_ARRAY, 0, 0);
            for w in [elem, index, n] {
                self.types.extend_from_slice(&w.to_le_bytes());
            }
            id
        }

        pub fn composite(
            &mut self,
            union: bool,
            name: &str,
            size: u32,
            members: &[(&str, u32, u32)],
        ) -> u32 {
            let kind = if union { KIND_UNION } else { KIND_STRUCT };
            let vlen = u32::try_from(members.len()).unwrap();
            let id = self.head(name, kind, vlen, size);
            for (n, ty, byte_off) in members {
                let n = self.string(n);
                for w in [n, *ty, byte_off * 8] {
                    self.types.extend_from_slice(&w.to_le_bytes());
                }
            }
            id
        }

        /// A struct in the bitfield encoding: members are (name, type, bit offset, bits).
        pub fn bitfields(
            &mut self,
            name: &str,
            size: u32,
            members: &[(&str, u32, u32, u32)],
        ) -> u32 {
            let vlen = u32::try_from(members.len()).unwrap();
            let id = self.head(name, KIND_STRUCT | 0x80, vlen, size);
            for (n, ty, bit_off, width) in members {
                let n = self.string(n);
                for w in [n, *ty, (width << 24) | bit_off] {
                    self.types.extend_from_slice(&w.to_le_bytes());
                }
            }
            id
        }

        pub fn build(&self) -> Vec<u8> {
            let mut out = Vec::new();
            out.extend_from_slice(&0xeb9fu16.to_le_bytes());
            out.extend_from_slice(&[1, 0]);
            let tl = u32::try_from(self.types.len()).unwrap();
            let sl = u32::try_from(self.strings.len()).unwrap();
            for w in [24u32, 0, tl, tl, sl] {
                out.extend_from_slice(&w.to_le_bytes());
            }
            out.extend_from_slice(&self.types);
            out.extend_from_slice(&self.strings);
            out
        }
    }

    /// A cut-down `struct sock_common` as the kernel lays it out: addresses and ports in
    /// anonymous unions of anonymous structs, the netns pointer in a typedef'd struct.
    pub fn sock_like() -> Vec<u8> {
        let mut b = Builder::new();
        let u32t = b.int("u32", 4);
        let u16t = b.int("u16", 2);
        let u64t = b.int("u64", 8);
        let addrs = b.composite(
            false,
            "",
            8,
            &[("skc_daddr", u32t, 0), ("skc_rcv_saddr", u32t, 4)],
        );
        let addr_union = b.composite(true, "", 8, &[("skc_addrpair", u64t, 0), ("", addrs, 0)]);
        let ports = b.composite(
            false,
            "",
            4,
            &[("skc_dport", u16t, 0), ("skc_num", u16t, 2)],
        );
        let port_union = b.composite(true, "", 4, &[("skc_portpair", u32t, 0), ("", ports, 0)]);
        let ns_common = b.composite(
            false,
            "ns_common",
            16,
            &[("stashed", u64t, 0), ("inum", u32t, 8)],
        );
        let net = b.composite(
            false,
            "net",
            64,
            &[("passive", u32t, 0), ("ns", ns_common, 40)],
        );
        let netp = b.ptr(net);
        let pnet_s = b.composite(false, "", 8, &[("net", netp, 0)]);
        let pnet = b.typedef("possible_net_t", pnet_s);
        let u8t = b.int("u8", 1);
        let a16 = b.array(u8t, u32t, 16);
        let in6 = b.composite(false, "in6_addr", 16, &[("s6_addr", a16, 0)]);
        let sc = b.composite(
            false,
            "sock_common",
            136,
            &[
                ("", addr_union, 0),
                ("", port_union, 12),
                ("skc_family", u16t, 16),
                ("skc_net", pnet, 48),
                ("skc_v6_daddr", in6, 56),
                ("skc_v6_rcv_saddr", in6, 72),
            ],
        );
        // A forward declaration of the same name comes first and must not be taken.
        b.composite(false, "sock", 0, &[]);
        let sock = b.composite(
            false,
            "sock",
            760,
            &[("__sk_common", sc, 0), ("sk_rcvbuf", u32t, 136)],
        );
        b.composite(
            false,
            "inet_sock",
            1000,
            &[("sk", sock, 0), ("inet_sport", u16t, 800)],
        );
        b.build()
    }

    const NAMES: &[&str] = &[
        "sock",
        "sock_common",
        "__sk_common",
        "skc_daddr",
        "skc_rcv_saddr",
        "skc_dport",
        "skc_num",
        "skc_family",
        "skc_net",
        "skc_v6_daddr",
        "skc_v6_rcv_saddr",
        "net",
        "ns",
        "inum",
        "inet_sock",
        "inet_sport",
    ];

    #[test]
    fn finds_members_through_anonymous_unions_and_typedefs() {
        let btf = Btf::load(Cursor::new(sock_like()), NAMES).unwrap();
        let off = |ty: &str, p: &[&str]| btf.offset_of(ty, p).unwrap();
        assert_eq!(off("sock_common", &["skc_daddr"]), 0);
        assert_eq!(off("sock_common", &["skc_rcv_saddr"]), 4);
        assert_eq!(off("sock_common", &["skc_dport"]), 12);
        assert_eq!(off("sock_common", &["skc_num"]), 14);
        assert_eq!(off("sock_common", &["skc_family"]), 16);
        assert_eq!(off("sock_common", &["skc_net", "net"]), 48);
        assert_eq!(off("sock_common", &["skc_v6_rcv_saddr"]), 72);
        assert_eq!(off("net", &["ns", "inum"]), 48);
        assert_eq!(off("sock", &["__sk_common"]), 0);
        assert_eq!(btf.size_at("sock_common", &["skc_net"]).unwrap(), 8);
    }

    #[test]
    fn a_missing_member_or_struct_is_named_in_the_error() {
        let btf = Btf::load(Cursor::new(sock_like()), NAMES).unwrap();
        let e = btf.offset_of("sock_common", &["skc_bogus"]).unwrap_err();
        assert!(e.to_string().contains("sock_common.skc_bogus"), "{e}");
        let e = btf.offset_of("tcp_sock", &["snd_una"]).unwrap_err();
        assert!(e.to_string().contains("tcp_sock.snd_una"), "{e}");
    }

    #[test]
    fn bitfields_are_not_offered_as_bytes_to_read() {
        let mut b = Builder::new();
        let u16t = b.int("u16", 2);
        let u8t = b.int("u8", 1);
        b.bitfields(
            "sock",
            16,
            &[
                ("sk_type", u16t, 64, 0),
                ("sk_protocol", u8t, 80, 8),
                ("sk_gso", u8t, 88, 4),
            ],
        );
        let names = ["sock", "sk_type", "sk_protocol", "sk_gso"];
        let btf = Btf::load(Cursor::new(b.build()), &names).unwrap();
        // A plain member in a struct that has bitfields; a byte-wide bitfield; a nibble.
        assert_eq!(btf.offset_of("sock", &["sk_type"]).unwrap(), 8);
        assert!(btf.offset_of("sock", &["sk_protocol"]).is_err());
        assert!(btf.offset_of("sock", &["sk_gso"]).is_err());
    }

    #[test]
    fn rejects_what_is_not_btf_and_cut_files() {
        let e = Btf::load(Cursor::new(vec![0u8; 24]), NAMES).unwrap_err();
        assert!(matches!(e, BtfError::Magic(0)), "{e}");
        let mut cut = sock_like();
        cut.truncate(100);
        assert!(Btf::load(Cursor::new(cut), NAMES).is_err());
        let mut bad_kind = sock_like();
        bad_kind[24 + 7] = 0x1f; // the first type's kind byte
        let e = Btf::load(Cursor::new(bad_kind), NAMES).unwrap_err();
        assert!(matches!(e, BtfError::Kind { kind: 31, id: 1 }), "{e}");
    }

    /// The running kernel's own description: the first fields of `struct sock_common` have
    /// sat at these offsets for as long as BTF has existed.
    #[test]
    fn reads_the_running_kernels_btf() {
        let Ok(f) = std::fs::File::open("/sys/kernel/btf/vmlinux") else {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI machines have /sys/kernel/btf/vmlinux"
            );
            eprintln!("skipped: no /sys/kernel/btf/vmlinux");
            return;
        };
        let btf = Btf::load(f, NAMES).unwrap();
        let off = |p: &str| btf.offset_of("sock_common", &[p]).unwrap();
        assert_eq!(
            [
                off("skc_daddr"),
                off("skc_rcv_saddr"),
                off("skc_dport"),
                off("skc_num")
            ],
            [0, 4, 12, 14]
        );
        assert_eq!(off("skc_family"), 16);
        assert!(btf.offset_of("net", &["ns", "inum"]).is_ok());
        assert!(btf.offset_of("inet_sock", &["inet_sport"]).is_ok());
    }
}
