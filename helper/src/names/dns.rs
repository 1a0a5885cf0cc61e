//! Names from observed DNS: which name a program asked for before it connected to an address.
//!
//! The capture (see `dns_capture`) hands over raw IP packets carrying UDP from port 53; this
//! module checks every length itself before trusting the packet, lets `simple-dns` parse the
//! message, and keeps a bounded, TTL-aware map from address to the name that was asked for.
//! A CNAME chain is followed only from the question, so `example.com → edge.cdn.net → 1.2.3.4`
//! maps 1.2.3.4 to `example.com`, and unrelated records in the same answer are ignored.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use lru::LruCache;
use simple_dns::rdata::RData;
use simple_dns::{Packet, PacketFlag};

/// Names longer than this are cut (a DNS name has at most 253 characters; escaping can add).
pub const NAME_LIMIT: usize = 255;
/// A mapping lives at least this long, so a TTL of 0 still names the connection that follows.
pub const MIN_TTL: Duration = Duration::from_secs(60);
/// And at most this long.
pub const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
pub const CAPACITY: usize = 4096;

pub struct DnsNames {
    map: LruCache<IpAddr, (String, Instant)>,
    /// Answers recorded since the start.
    pub recorded: u64,
    /// Packets that were not a DNS answer we could read.
    pub rejected: u64,
}

impl Default for DnsNames {
    fn default() -> Self {
        DnsNames::new(CAPACITY)
    }
}

fn normalise(name: &str) -> String {
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

/// The DNS message in an IPv4 or IPv6 packet from source port 53, if it carries one: the
/// UDP payload, or for TCP a whole length-prefixed message within this one segment (answers
/// split over several segments are not reassembled).
pub fn dns_message_from_port_53(pkt: &[u8]) -> Option<&[u8]> {
    let version = pkt.first()? >> 4;
    let (proto, l4) = match version {
        4 => {
            let ihl = usize::from(pkt.first()? & 0x0f) * 4;
            let total = usize::from(u16::from_be_bytes([*pkt.get(2)?, *pkt.get(3)?]));
            let frag = u16::from_be_bytes([*pkt.get(6)?, *pkt.get(7)?]);
            // A fragment, or lengths that do not add up.
            if frag & 0x3fff != 0 || ihl < 20 || total > pkt.len() {
                return None;
            }
            (*pkt.get(9)?, pkt.get(ihl..total)?)
        }
        6 => {
            let payload = usize::from(u16::from_be_bytes([*pkt.get(4)?, *pkt.get(5)?]));
            // Only a transport header right after the fixed header (no extension headers).
            if 40 + payload > pkt.len() {
                return None;
            }
            (*pkt.get(6)?, pkt.get(40..40 + payload)?)
        }
        _ => return None,
    };
    let sport = u16::from_be_bytes([*l4.first()?, *l4.get(1)?]);
    if sport != 53 {
        return None;
    }
    match proto {
        17 => {
            let len = usize::from(u16::from_be_bytes([*l4.get(4)?, *l4.get(5)?]));
            if len < 8 || len > l4.len() {
                return None;
            }
            l4.get(8..len)
        }
        6 => {
            let data_offset = usize::from(l4.get(12)? >> 4) * 4;
            if data_offset < 20 {
                return None;
            }
            let data = l4.get(data_offset..)?;
            let len = usize::from(u16::from_be_bytes([*data.first()?, *data.get(1)?]));
            data.get(2..2 + len)
        }
        _ => None,
    }
}

impl DnsNames {
    pub fn new(capacity: usize) -> DnsNames {
        DnsNames {
            map: LruCache::new(NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN)),
            recorded: 0,
            rejected: 0,
        }
    }

    /// Records the answers of one captured IP packet; returns how many addresses it named.
    pub fn observe_packet(&mut self, pkt: &[u8], now: Instant) -> usize {
        match dns_message_from_port_53(pkt) {
            Some(msg) => self.observe_message(msg, now),
            None => {
                self.rejected += 1;
                0
            }
        }
    }

    /// Records the answers of one DNS message.
    pub fn observe_message(&mut self, msg: &[u8], now: Instant) -> usize {
        let Ok(packet) = Packet::parse(msg) else {
            self.rejected += 1;
            return 0;
        };
        if !packet.has_flags(PacketFlag::RESPONSE) {
            return 0;
        }
        let Some(question) = packet.questions.first() else {
            return 0;
        };
        let asked = normalise(&question.qname.to_string());
        if asked.is_empty() {
            return 0;
        }
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
        let mut named = 0;
        for rr in &packet.answers {
            let ip = match &rr.rdata {
                RData::A(a) => IpAddr::V4(Ipv4Addr::from(a.address)),
                RData::AAAA(a) => IpAddr::V6(Ipv6Addr::from(a.address)),
                _ => continue,
            };
            if !chain.contains(&normalise(&rr.name.to_string())) {
                continue;
            }
            let ttl = Duration::from_secs(u64::from(rr.ttl)).clamp(MIN_TTL, MAX_TTL);
            self.map.put(ip, (asked.clone(), now + ttl));
            named += 1;
        }
        self.recorded += named as u64;
        named
    }

    /// The name asked for before connecting to `ip`, while its answer is still valid.
    pub fn name_of(&mut self, ip: &IpAddr, now: Instant) -> Option<String> {
        let ip = ip.to_canonical();
        match self.map.get(&ip) {
            Some((name, until)) if *until > now => Some(name.clone()),
            Some(_) => {
                self.map.pop(&ip);
                None
            }
            None => None,
        }
    }

    pub fn len(&self) -> usize {
        self.map.len()
    }

    pub fn is_empty(&self) -> bool {
        self.map.is_empty()
    }
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
        let mut d = DnsNames::default();
        let now = Instant::now();
        assert_eq!(d.observe_packet(&ipv4_udp(53, &msg), now), 1);
        assert_eq!(
            d.name_of(&"10.1.2.3".parse().expect("ip"), now).as_deref(),
            Some("example.test")
        );
        // Valid for the TTL, then gone.
        assert!(d
            .name_of(
                &"10.1.2.3".parse().expect("ip"),
                now + Duration::from_secs(299)
            )
            .is_some());
        assert!(d
            .name_of(
                &"10.1.2.3".parse().expect("ip"),
                now + Duration::from_secs(301)
            )
            .is_none());
    }

    #[test]
    fn an_answer_over_tcp_in_one_segment_is_read_too() {
        let msg = answer("tcp.test", &[("tcp.test", a([10, 0, 0, 7]))], 60);
        let mut d = DnsNames::default();
        let now = Instant::now();
        assert_eq!(d.observe_packet(&ipv4_tcp(53, &msg), now), 1);
        assert_eq!(
            d.name_of(&"10.0.0.7".parse().expect("ip"), now).as_deref(),
            Some("tcp.test")
        );
        // Cut short (the rest in another segment): nothing, and no panic.
        let whole = ipv4_tcp(53, &msg);
        let mut short = whole[..whole.len() - 5].to_vec();
        let total = short.len() as u16;
        short[2..4].copy_from_slice(&total.to_be_bytes());
        let mut d = DnsNames::default();
        assert_eq!(d.observe_packet(&short, now), 0);
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
        let mut d = DnsNames::default();
        assert_eq!(d.observe_packet(&ipv4_udp(53, &msg), Instant::now()), 1);
        assert!(d
            .name_of(&"10.0.0.2".parse().expect("ip"), Instant::now())
            .is_none());
    }

    #[test]
    fn ipv6_answers_over_ipv6_and_a_zero_ttl_still_names_the_next_connection() {
        let aaaa = RData::AAAA(AAAA {
            address: u128::from("2001:db8::7".parse::<Ipv6Addr>().expect("ip")),
        });
        let msg = answer("six.test", &[("six.test", aaaa)], 0);
        let mut d = DnsNames::default();
        let now = Instant::now();
        assert_eq!(d.observe_packet(&ipv6_udp(53, &msg), now), 1);
        assert_eq!(
            d.name_of(
                &"2001:db8::7".parse().expect("ip"),
                now + Duration::from_secs(30)
            )
            .as_deref(),
            Some("six.test")
        );
    }

    #[test]
    fn queries_other_ports_fragments_and_garbage_are_rejected_without_panicking() {
        let mut d = DnsNames::default();
        let now = Instant::now();
        let msg = answer("x.test", &[("x.test", a([10, 0, 0, 1]))], 60);
        assert_eq!(d.observe_packet(&ipv4_udp(5353, &msg), now), 0);
        let mut frag = ipv4_udp(53, &msg);
        frag[6] = 0x20; // more fragments
        assert_eq!(d.observe_packet(&frag, now), 0);
        let full = ipv4_udp(53, &msg);
        for cut in 0..full.len() {
            let _ = d.observe_packet(&full[..cut], now);
        }
        let mut bytes = full.clone();
        for i in 0..bytes.len() {
            let old = bytes[i];
            for v in [0, 0xff, 0xc0] {
                bytes[i] = v;
                let _ = d.observe_packet(&bytes, now);
            }
            bytes[i] = old;
        }
        assert!(d.rejected > 0);
        // A query (not a response) names nothing.
        let mut q = Packet::new_query(1);
        q.questions.push(Question::new(
            Name::new_unchecked("q.test"),
            QTYPE::TYPE(TYPE::A),
            QCLASS::CLASS(CLASS::IN),
            false,
        ));
        assert_eq!(
            d.observe_message(&q.build_bytes_vec().expect("build"), now),
            0
        );
    }

    #[test]
    fn the_map_is_bounded_oldest_first() {
        let mut d = DnsNames::new(3);
        let now = Instant::now();
        for i in 1..=5u8 {
            let msg = answer(
                &format!("h{i}.test"),
                &[(&format!("h{i}.test"), a([10, 0, 0, i]))],
                60,
            );
            d.observe_packet(&ipv4_udp(53, &msg), now);
        }
        assert_eq!(d.len(), 3);
        assert!(d.name_of(&"10.0.0.1".parse().expect("ip"), now).is_none());
        assert_eq!(
            d.name_of(&"10.0.0.5".parse().expect("ip"), now).as_deref(),
            Some("h5.test")
        );
    }

    #[test]
    fn hostile_names_are_cut_to_the_limit() {
        let long = format!(
            "{}.test",
            "a".repeat(60) + "." + &"b".repeat(60) + "." + &"c".repeat(60) + "." + &"d".repeat(60)
        );
        let msg = answer(&long, &[(&long, a([10, 0, 0, 9]))], 60);
        let mut d = DnsNames::default();
        d.observe_packet(&ipv4_udp(53, &msg), Instant::now());
        let name = d
            .name_of(&"10.0.0.9".parse().expect("ip"), Instant::now())
            .expect("named");
        assert!(name.len() <= NAME_LIMIT);
    }
}
