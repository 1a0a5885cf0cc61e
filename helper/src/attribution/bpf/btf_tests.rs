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
    pub fn bitfields(&mut self, name: &str, size: u32, members: &[(&str, u32, u32, u32)]) -> u32 {
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
