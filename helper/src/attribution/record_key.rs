//! The helper's side of the record layout of [`bpf::layout`]: the key it builds from a
//! flow's tuple to look a record up, and the [`Connector`] it reads back from a value. The
//! programs that file the records store by the same table, so a key built here is the key
//! they filed, byte for byte.
//!
//! [`bpf::layout`]: crate::attribution::bpf::layout

use std::net::IpAddr;

use super::Connector;
use crate::attribution::bpf::layout::{
    Field, KEY_DADDR, KEY_DPORT, KEY_FAMILY, KEY_LEN, KEY_NETNS, KEY_PROTO, KEY_SADDR, KEY_SPORT,
    VALUE_BOOT_NS, VALUE_BY_WRITE, VALUE_COMM, VALUE_FLAGS, VALUE_LEN, VALUE_START, VALUE_TGID,
    VALUE_UID,
};
use crate::flow::Tuple;

/// `struct sock`'s `skc_family` values.
pub const AF_INET: u16 = 2;
pub const AF_INET6: u16 = 10;

/// The key for a flow's socket end: `t.src:t.sport` local, `t.dst:t.dport` remote. An IPv4
/// flow of a dual-stack IPv6 socket is recorded in its IPv4 form too, so one key fits both.
pub fn key(netns: u32, t: &Tuple) -> [u8; KEY_LEN] {
    let mut k = [0u8; KEY_LEN];
    k[KEY_NETNS.range()].copy_from_slice(&netns.to_ne_bytes());
    k[KEY_DPORT.range()].copy_from_slice(&t.dport.to_be_bytes());
    k[KEY_SPORT.range()].copy_from_slice(&t.sport.to_be_bytes());
    k[KEY_PROTO.range()].copy_from_slice(&[t.proto.number()]);
    let (fam, dst, src) = match (t.dst, t.src) {
        (IpAddr::V4(d), IpAddr::V4(s)) => (AF_INET, d.octets().to_vec(), s.octets().to_vec()),
        (d, s) => {
            let v6 = |ip: IpAddr| match ip {
                IpAddr::V4(v4) => v4.to_ipv6_mapped().octets().to_vec(),
                IpAddr::V6(v6) => v6.octets().to_vec(),
            };
            (AF_INET6, v6(d), v6(s))
        }
    };
    k[KEY_FAMILY.range()].copy_from_slice(&fam.to_ne_bytes());
    k[KEY_DADDR.off..KEY_DADDR.off + dst.len()].copy_from_slice(&dst);
    k[KEY_SADDR.off..KEY_SADDR.off + src.len()].copy_from_slice(&src);
    k
}

/// Reads a map value back into a [`Connector`].
pub fn connector(v: &[u8; VALUE_LEN]) -> Connector {
    fn bytes<const N: usize>(v: &[u8], f: Field) -> [u8; N] {
        let mut b = [0u8; N];
        b.copy_from_slice(&v[f.range()]);
        b
    }
    let comm = &v[VALUE_COMM.range()];
    let end = comm.iter().position(|&b| b == 0).unwrap_or(comm.len());
    Connector {
        pid: u32::from_ne_bytes(bytes(v, VALUE_TGID)),
        uid: u32::from_ne_bytes(bytes(v, VALUE_UID)),
        at_boot_ns: u64::from_ne_bytes(bytes(v, VALUE_BOOT_NS)),
        start_ns: u64::from_ne_bytes(bytes(v, VALUE_START)),
        comm: String::from_utf8_lossy(&comm[..end]).into_owned(),
        by_write: u32::from_ne_bytes(bytes(v, VALUE_FLAGS)) & VALUE_BY_WRITE as u32 != 0,
    }
}

/// The key of a send on a socket without ports (ping, raw): the flow's family and protocol,
/// no addresses, `id` as the local port (a ping socket's echo id; 0 for a raw socket).
pub fn bare_key(netns: u32, t: &Tuple, id: u16) -> [u8; KEY_LEN] {
    let none = match t.src {
        IpAddr::V4(_) => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
        IpAddr::V6(_) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
    };
    let bare = Tuple {
        src: none,
        dst: none,
        sport: id,
        dport: 0,
        ..*t
    };
    key(netns, &bare)
}

/// `k` with no local address: the key of a send from a socket bound to the wildcard address,
/// whose source the kernel picks after the send hook has run.
pub fn wildcard_key(mut k: [u8; KEY_LEN]) -> [u8; KEY_LEN] {
    k[KEY_SADDR.range()].fill(0);
    k
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::bpf::layout::KEY_PAD;
    use crate::flow::Proto;

    #[test]
    fn keys_put_each_field_where_the_layout_says() {
        let t = crate::flow::fixtures::flow(Proto::Tcp, "10.0.0.1", 43210, "10.0.0.2", 443).orig;
        let k = key(0x1234_5678, &t);
        assert_eq!(&k[KEY_NETNS.range()], &0x1234_5678u32.to_ne_bytes());
        assert_eq!(&k[KEY_FAMILY.range()], &2u16.to_ne_bytes());
        // 443, network order, as skc_dport holds it.
        assert_eq!(&k[KEY_DPORT.range()], &[0x01, 0xbb]);
        // Network order, as inet_sport.
        assert_eq!(&k[KEY_SPORT.range()], &43210u16.to_be_bytes());
        assert_eq!(&k[KEY_PROTO.range()], &[6]);
        assert_eq!(&k[KEY_DADDR.off..KEY_DADDR.off + 4], &[10, 0, 0, 2]);
        assert_eq!(&k[KEY_SADDR.off..KEY_SADDR.off + 4], &[10, 0, 0, 1]);
        assert!(k[KEY_PAD.range()]
            .iter()
            .chain(&k[KEY_DADDR.off + 4..KEY_DADDR.end()])
            .chain(&k[KEY_SADDR.off + 4..KEY_SADDR.end()])
            .all(|&b| b == 0));

        let v6 = Tuple {
            src: "fd00::1".parse().unwrap(),
            dst: "fd00::2".parse().unwrap(),
            ..t
        };
        let k = key(1, &v6);
        assert_eq!(&k[KEY_FAMILY.range()], &10u16.to_ne_bytes());
        let daddr: [u8; 16] = "fd00::2".parse::<std::net::Ipv6Addr>().unwrap().octets();
        let saddr: [u8; 16] = "fd00::1".parse::<std::net::Ipv6Addr>().unwrap().octets();
        assert_eq!(&k[KEY_DADDR.range()], &daddr);
        assert_eq!(&k[KEY_SADDR.range()], &saddr);
        assert_eq!(k[KEY_DADDR.end() - 1], 2);
        assert_eq!(k[KEY_SADDR.end() - 1], 1);
        assert_eq!(KEY_SADDR.end(), KEY_LEN);
    }

    #[test]
    fn values_read_back_with_a_cut_comm() {
        let mut v = [0u8; VALUE_LEN];
        v[VALUE_TGID.range()].copy_from_slice(&4242u32.to_ne_bytes());
        v[VALUE_UID.range()].copy_from_slice(&1000u32.to_ne_bytes());
        v[VALUE_BOOT_NS.range()].copy_from_slice(&123_456_789u64.to_ne_bytes());
        v[VALUE_START.range()].copy_from_slice(&99u64.to_ne_bytes());
        let comm = VALUE_COMM.off;
        v[comm..comm + 4].copy_from_slice(b"bash");
        let c = connector(&v);
        assert_eq!(
            c,
            Connector {
                pid: 4242,
                uid: 1000,
                at_boot_ns: 123_456_789,
                start_ns: 99,
                comm: "bash".into(),
                by_write: false,
            }
        );
        v[VALUE_FLAGS.range()].copy_from_slice(&(VALUE_BY_WRITE as u32).to_ne_bytes());
        assert!(connector(&v).by_write);
        v[VALUE_COMM.range()].copy_from_slice(b"0123456789abcdef");
        assert_eq!(connector(&v).comm, "0123456789abcdef");
        v[comm] = 0xff;
        assert!(connector(&v).comm.starts_with('\u{fffd}'));
    }
}
