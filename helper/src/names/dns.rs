//! DNS on the wire, parsed: which packets carry a DNS message, and what a message asks and
//! answers.
//!
//! The capture ([`super::capture`]) hands over raw IP packets carrying UDP or TCP to or from
//! port 53; this module checks every length itself before trusting the packet and lets
//! `simple-dns` parse the message. It keeps no state: whether an answer is believed, and for
//! whom, is [`super::table`]'s decision. A CNAME chain is followed only from the question, so
//! `example.com → edge.cdn.net → 1.2.3.4` names 1.2.3.4 `example.com`, and unrelated records
//! in the same answer are ignored.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use simple_dns::rdata::RData;
use simple_dns::{Packet, PacketFlag};

/// Names longer than this are cut (a DNS name has at most 253 characters; escaping can add).
pub const NAME_LIMIT: usize = 255;
/// A mapping lives at least this long, so a TTL of 0 still names the connection that follows.
pub const MIN_TTL: Duration = Duration::from_secs(60);
/// And at most this long.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);

pub(crate) fn normalise(name: &str) -> String {
    let mut n: String = name.trim_end_matches('.').to_ascii_lowercase();
    if n.len() > NAME_LIMIT {
        let mut cut = NAME_LIMIT;
        while !n.is_char_boundary(cut) {
            cut -= 1;
        }
        n.truncate(cut);
    }
    n
}

/// A transport segment to or from port 53 and the DNS message it carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Segment<'a> {
    /// 6 (TCP) or 17 (UDP).
    pub proto: u8,
    pub src: SocketAddr,
    pub dst: SocketAddr,
    pub msg: &'a [u8],
}

/// The DNS message in an IPv4 or IPv6 packet to or from port 53, if it carries one: the UDP
/// payload, or for TCP a whole length-prefixed message within this one segment (messages
/// split over several segments are not reassembled).
pub fn segment(pkt: &[u8]) -> Option<Segment<'_>> {
    let version = pkt.first()? >> 4;
    let (proto, src, dst, l4) = match version {
        4 => {
            let ihl = usize::from(pkt.first()? & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([*pkt.get(2)?, *pkt.get(3)?]));
            let frag = u16::from_be_bytes([*pkt.get(6)?, *pkt.get(7)?]);
            // A fragment, or lengths that do not add up.
            if frag & 0x3fff != 0 || ihl < 20 || total > pkt.len() {
                return None;
            }
            let src: [u8; 4] = pkt.get(12..16)?.try_into().ok()?;
            let dst: [u8; 4] = pkt.get(16..20)?.try_into().ok()?;
            (
                *pkt.get(9)?,
                IpAddr::V4(Ipv4Addr::from(src)),
                IpAddr::V4(Ipv4Addr::from(dst)),
                pkt.get(ihl..total)?,
            )
        }
        6 => {
            let payload = usize::from(u16::from_be_bytes([*pkt.get(4)?, *pkt.get(5)?]));
            // Only a transport header right after the fixed header (no extension headers).
            if 40 + payload > pkt.len() {
                return None;
            }
            let src: [u8; 16] = pkt.get(8..24)?.try_into().ok()?;
            let dst: [u8; 16] = pkt.get(24..40)?.try_into().ok()?;
            (
                *pkt.get(6)?,
                IpAddr::V6(Ipv6Addr::from(src)),
                IpAddr::V6(Ipv6Addr::from(dst)),
                pkt.get(40..40 + payload)?,
            )
        }
        _ => return None,
    };
    let sport = u16::from_be_bytes([*l4.first()?, *l4.get(1)?]);
    let dport = u16::from_be_bytes([*l4.get(2)?, *l4.get(3)?]);
    if sport != 53 && dport != 53 {
        return None;
    }
    let msg = match proto {
        17 => {
            let len = usize::from(u16::from_be_bytes([*l4.get(4)?, *l4.get(5)?]));
            if len < 8 || len > l4.len() {
                return None;
            }
            l4.get(8..len)?
        }
        6 => {
            let data_offset = usize::from(l4.get(12)? >> 4) * 4;
            if data_offset < 20 {
                return None;
            }
            let data = l4.get(data_offset..)?;
            let len = usize::from(u16::from_be_bytes([*data.first()?, *data.get(1)?]));
            data.get(2..2 + len)?
        }
        _ => return None,
    };
    Some(Segment {
        proto,
        src: SocketAddr::new(src, sport),
        dst: SocketAddr::new(dst, dport),
        msg,
    })
}

/// What a DNS message asks, and for an answer, which addresses stand for the question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    pub id: u16,
    pub response: bool,
    /// The first question's name (normalised) and type.
    pub question: (String, u16),
    /// A and AAAA records of the question or its CNAME chain, with their TTLs clamped to
    /// [`MIN_TTL`]..[`MAX_TTL`]. Empty for queries.
    pub addrs: Vec<(IpAddr, Duration)>,
}

/// Parses one DNS message; `None` for anything that is not a message with a question.
pub fn parse(msg: &[u8]) -> Option<Message> {
    let packet = Packet::parse(msg).ok()?;
    let question = packet.questions.first()?;
    let asked = normalise(&question.qname.to_string());
    if asked.is_empty() {
        return None;
    }
    let qtype = u16::from(question.qtype);
    let response = packet.has_flags(PacketFlag::RESPONSE);
    let mut addrs = Vec::new();
    if response {
        // The names that stand for the question: itself and its CNAME chain.
        let mut chain: HashSet<String> = HashSet::from([asked.clone()]);
        loop {
            let before = chain.len();
            for rr in &packet.answers {
                if let RData::CNAME(target) = &rr.rdata {
                    if chain.contains(&normalise(&rr.name.to_string())) {
                        chain.insert(normalise(&target.0.to_string()));
                    }
                }
            }
            if chain.len() == before {
                break;
            }
        }
        for rr in &packet.answers {
            let ip = match &rr.rdata {
                RData::A(a) => IpAddr::V4(Ipv4Addr::from(a.address)),
                RData::AAAA(a) => IpAddr::V6(Ipv6Addr::from(a.address)),
                _ => continue,
            };
            if chain.contains(&normalise(&rr.name.to_string())) {
                let ttl = Duration::from_secs(u64::from(rr.ttl)).clamp(MIN_TTL, MAX_TTL);
                addrs.push((ip, ttl));
            }
        }
    }
    Some(Message {
        id: packet.id(),
        response,
        question: (asked, qtype),
        addrs,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use simple_dns::rdata::{A, AAAA, CNAME};
    use simple_dns::{Name, Question, ResourceRecord, CLASS, QCLASS, QTYPE, TYPE};

    fn answer(qname: &str, records: &[(&str, RData<'static>)], ttl: u32) -> Vec<u8> {
        let mut p = Packet::new_reply(7);
        p.questions.push(Question::new(
            Name::new_unchecked(qname).into_owned(),
            QTYPE::TYPE(TYPE::A),
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
        for (name, rdata) in records {
            p.answers.push(ResourceRecord::new(
                Name::new_unchecked(name).into_owned(),
                CLASS::IN,
                ttl,
                rdata.clone(),
            ));
        }
        p.build_bytes_vec().expect("build")
    }

    /// An IPv4 packet (10.0.0.53 -> 10.0.0.1, don't fragment) around a transport segment.
    fn ipv4(proto: u8, segment: &[u8]) -> Vec<u8> {
        let total = (20 + segment.len()) as u16;
        let mut p = vec![0x45, 0];
        p.extend_from_slice(&total.to_be_bytes());
        p.extend_from_slice(&[0, 0, 0x40, 0, 64, proto, 0, 0, 10, 0, 0, 53, 10, 0, 0, 1]);
        p.extend_from_slice(segment);
        p
    }

    /// A UDP datagram from `sport` to 40000.
    fn udp(sport: u16, payload: &[u8]) -> Vec<u8> {
        let mut u = Vec::new();
        u.extend_from_slice(&sport.to_be_bytes());
        u.extend_from_slice(&40000u16.to_be_bytes());
        u.extend_from_slice(&((8 + payload.len()) as u16).to_be_bytes());
        u.extend_from_slice(&[0, 0]);
        u.extend_from_slice(payload);
        u
    }

    fn ipv4_udp(sport: u16, payload: &[u8]) -> Vec<u8> {
        ipv4(17, &udp(sport, payload))
    }

    /// A TCP segment (PSH|ACK) carrying one length-prefixed DNS message.
    fn ipv4_tcp(sport: u16, payload: &[u8]) -> Vec<u8> {
        let mut seg = Vec::new();
        seg.extend_from_slice(&sport.to_be_bytes());
        seg.extend_from_slice(&40000u16.to_be_bytes());
        seg.extend_from_slice(&[0; 8]); // seq, ack
        seg.extend_from_slice(&[0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]); // offset 5, PSH|ACK
        seg.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        seg.extend_from_slice(payload);
        ipv4(6, &seg)
    }

    fn ipv6_udp(sport: u16, payload: &[u8]) -> Vec<u8> {
        let u = udp(sport, payload);
        let mut p = vec![0x60, 0, 0, 0];
        p.extend_from_slice(&(u.len() as u16).to_be_bytes());
        p.extend_from_slice(&[17, 64]);
        p.extend_from_slice(&[0u8; 32]);
        p.extend_from_slice(&u);
        p
    }

    fn a(ip: [u8; 4]) -> RData<'static> {
        RData::A(A {
            address: u32::from(Ipv4Addr::from(ip)),
        })
    }

    fn cname(target: &str) -> RData<'static> {
        RData::CNAME(CNAME(Name::new_unchecked(target).into_owned()))
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn a_cname_chain_names_the_address_after_the_question() {
        let msg = answer(
            "Example.Test",
            &[
                ("example.test", cname("edge.cdn.test")),
                ("edge.cdn.test", cname("e1.cdn.test")),
                ("e1.cdn.test", a([10, 1, 2, 3])),
            ],
            300,
        );
        let pkt = ipv4_udp(53, &msg);
        let seg = segment(&pkt).expect("a DNS segment");
        assert_eq!(seg.proto, 17);
        assert_eq!(seg.src, "10.0.0.53:53".parse().expect("addr"));
        assert_eq!(seg.dst, "10.0.0.1:40000".parse().expect("addr"));
        let m = parse(seg.msg).expect("a message");
        assert!(m.response);
        assert_eq!(m.id, 7);
        assert_eq!(m.question, ("example.test".to_string(), 1));
        assert_eq!(m.addrs, vec![(ip("10.1.2.3"), Duration::from_secs(300))]);
    }

    #[test]
    fn an_answer_over_tcp_in_one_segment_is_read_too() {
        let msg = answer("tcp.test", &[("tcp.test", a([10, 0, 0, 7]))], 60);
        let pkt = ipv4_tcp(53, &msg);
        let seg = segment(&pkt).expect("a DNS segment");
        assert_eq!(seg.proto, 6);
        assert_eq!(parse(seg.msg).expect("message").addrs[0].0, ip("10.0.0.7"));
        // Cut short (the rest in another segment): nothing, and no panic.
        let mut short = pkt[..pkt.len() - 5].to_vec();
        let total = short.len() as u16;
        short[2..4].copy_from_slice(&total.to_be_bytes());
        assert!(segment(&short).is_none());
    }

    #[test]
    fn records_outside_the_chain_are_ignored() {
        let msg = answer(
            "good.test",
            &[
                ("good.test", a([10, 0, 0, 1])),
                ("evil.test", a([10, 0, 0, 2])),
            ],
            60,
        );
        let m = parse(&msg).expect("message");
        assert_eq!(m.addrs.len(), 1);
        assert_eq!(m.addrs[0].0, ip("10.0.0.1"));
    }

    #[test]
    fn ipv6_answers_over_ipv6_and_a_zero_ttl_is_kept_at_least_a_minute() {
        let aaaa = RData::AAAA(AAAA {
            address: u128::from("2001:db8::7".parse::<Ipv6Addr>().expect("ip")),
        });
        let msg = answer("six.test", &[("six.test", aaaa)], 0);
        let pkt = ipv6_udp(53, &msg);
        let m = parse(segment(&pkt).expect("segment").msg).expect("message");
        assert_eq!(m.addrs, vec![(ip("2001:db8::7"), MIN_TTL)]);
    }

    #[test]
    fn other_ports_fragments_and_garbage_are_rejected_without_panicking() {
        let msg = answer("x.test", &[("x.test", a([10, 0, 0, 1]))], 60);
        assert!(segment(&ipv4_udp(5353, &msg)).is_none());
        let mut frag = ipv4_udp(53, &msg);
        frag[6] = 0x20; // more fragments
        assert!(segment(&frag).is_none());
        let full = ipv4_udp(53, &msg);
        for cut in 0..full.len() {
            if let Some(s) = segment(&full[..cut]) {
                let _ = parse(s.msg);
            }
        }
        let mut bytes = full.clone();
        for i in 0..bytes.len() {
            let old = bytes[i];
            for v in [0, 0xff, 0xc0] {
                bytes[i] = v;
                if let Some(s) = segment(&bytes) {
                    let _ = parse(s.msg);
                }
            }
            bytes[i] = old;
        }
        // A query is a message too, with no addresses.
        let mut q = Packet::new_query(1);
        q.questions.push(Question::new(
            Name::new_unchecked("q.test"),
            QTYPE::TYPE(TYPE::A),
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
        let m = parse(&q.build_bytes_vec().expect("build")).expect("a query");
        assert!(!m.response);
        assert!(m.addrs.is_empty());
        assert_eq!(m.question, ("q.test".to_string(), 1));
    }

    #[test]
    fn hostile_names_are_cut_to_the_limit() {
        let long = format!(
            "{}.test",
            "a".repeat(60) + "." + &"b".repeat(60) + "." + &"c".repeat(60) + "." + &"d".repeat(60)
        );
        let msg = answer(&long, &[(&long, a([10, 0, 0, 9]))], 60);
        let m = parse(&msg).expect("message");
        assert!(m.question.0.len() <= NAME_LIMIT);
        assert_eq!(m.addrs.len(), 1);
    }
}
