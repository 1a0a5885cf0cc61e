//! Which end of a flow is this machine: outbound, inbound or forward, and so which end is
//! `local` and which `remote`.
//!
//! conntrack.sh read the reply tuple and got local and remote backwards for inbound flows.
//! Here the original tuple decides the direction against the machine's own addresses, and the
//! socket-side view comes from the tuple the local socket actually sees, so NAT does not
//! confuse attribution.

use std::collections::HashSet;
use std::net::IpAddr;

use crate::flow::{Direction, Flow, Tuple};

/// The machine's interface addresses. Loopback addresses are always local.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LocalAddrs {
    addrs: HashSet<IpAddr>,
}

impl LocalAddrs {
    pub fn new(addrs: impl IntoIterator<Item = IpAddr>) -> LocalAddrs {
        LocalAddrs {
            addrs: addrs.into_iter().map(|a| a.to_canonical()).collect(),
        }
    }

    pub fn is_local(&self, ip: &IpAddr) -> bool {
        let ip = ip.to_canonical();
        ip.is_loopback() || self.addrs.contains(&ip)
    }

    pub fn len(&self) -> usize {
        self.addrs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.addrs.is_empty()
    }
}

/// A flow seen from this machine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sides {
    pub direction: Direction,
    /// The tuple as the local socket sees it: `src` is the socket's own end, `dst` its peer.
    /// For forwarded flows there is no local socket; this is the original tuple.
    pub socket: Tuple,
    /// The ends to report. For inbound flows behind DNAT the local end is the address the
    /// packet was sent to (the original destination), which is what a person recognises.
    pub local_ip: IpAddr,
    pub local_port: u16,
    pub remote_ip: IpAddr,
    pub remote_port: u16,
    /// A TCP connection conntrack picked up under way, not from its SYN, whose tuple the
    /// helper never saw connect: it began before conntrack tracked anything (so before the
    /// helper), and no connect record of it can exist.
    pub under_way: bool,
}

impl Sides {
    /// Both ends are loopback addresses.
    pub fn is_loopback(&self) -> bool {
        self.local_ip.to_canonical().is_loopback() && self.remote_ip.to_canonical().is_loopback()
    }
}

/// Classifies a flow against the machine's addresses.
pub fn classify(flow: &Flow, local: &LocalAddrs) -> Sides {
    let o = &flow.orig;
    // Exempt from the connect record check: a connection conntrack picked up under way that
    // the helper never saw open and whose socket was there when it started.
    let under_way = !flow.seen_from_syn
        && flow.began_before
        && flow
            .tcp_state
            .is_some_and(|s| s != crate::flow::CT_TCP_SYN_SENT);
    if flow.reply_seen_from_syn {
        if let Some(sides) = picked_up_from_its_other_end(flow, local) {
            return sides;
        }
    }
    if local.is_local(&o.src) {
        Sides {
            direction: Direction::Outbound,
            socket: *o,
            local_ip: o.src,
            local_port: o.sport,
            remote_ip: o.dst,
            remote_port: o.dport,
            under_way,
        }
    } else if local.is_local(&o.dst) {
        // The reply tuple is the socket's own view: after DNAT its own end is the reply's
        // source, not the original destination.
        let socket = flow.reply.unwrap_or_else(|| o.reversed());
        Sides {
            direction: Direction::Inbound,
            socket,
            local_ip: o.dst,
            local_port: o.dport,
            remote_ip: o.src,
            remote_port: o.sport,
            under_way,
        }
    } else {
        Sides {
            direction: Direction::Forward,
            socket: *o,
            local_ip: o.src,
            local_port: o.sport,
            remote_ip: o.dst,
            remote_port: o.dport,
            under_way,
        }
    }
}

/// A TCP connection the reader saw open from its SYN in the other direction, picked up
/// again at a packet of the end that did not open it: the reply's source opened it. Opened
/// here, it is outbound, held to its connect record as any outbound one is (taken for
/// inbound, its holder would be believed, handed the socket or not); opened by a remote
/// peer, it is inbound, whichever end's packet conntrack saw first.
fn picked_up_from_its_other_end(flow: &Flow, local: &LocalAddrs) -> Option<Sides> {
    let o = &flow.orig;
    let opener = flow.reply.unwrap_or_else(|| o.reversed());
    if local.is_local(&opener.src) {
        return Some(Sides {
            direction: Direction::Outbound,
            socket: opener,
            local_ip: opener.src,
            local_port: opener.sport,
            remote_ip: opener.dst,
            remote_port: opener.dport,
            under_way: false,
        });
    }
    local.is_local(&o.src).then_some(Sides {
        direction: Direction::Inbound,
        socket: *o,
        local_ip: o.src,
        local_port: o.sport,
        remote_ip: o.dst,
        remote_port: o.dport,
        under_way: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::{FlowEvent, Proto};

    fn flow(src: &str, sport: u16, dst: &str, dport: u16) -> Flow {
        let orig = Tuple {
            proto: Proto::Tcp,
            src: src.parse().expect("ip"),
            dst: dst.parse().expect("ip"),
            sport,
            dport,
            icmp: None,
        };
        Flow {
            event: FlowEvent::New,
            id: None,
            zone: None,
            mark: None,
            orig,
            reply: Some(orig.reversed()),
            tcp_state: None,
            seen_from_syn: false,
            reply_seen_from_syn: false,
            began_before: false,
        }
    }

    fn addrs() -> LocalAddrs {
        LocalAddrs::new([
            "10.0.0.1".parse().expect("ip"),
            "fd00::1".parse().expect("ip"),
        ])
    }

    #[test]
    fn outbound_when_the_original_source_is_local() {
        let s = classify(&flow("10.0.0.1", 40000, "93.184.216.34", 443), &addrs());
        assert_eq!(s.direction, Direction::Outbound);
        assert_eq!(s.local_ip.to_string(), "10.0.0.1");
        assert_eq!((s.local_port, s.remote_port), (40000, 443));
    }

    #[test]
    fn a_connection_conntrack_picked_up_under_way_is_marked_so() {
        let mut f = flow("10.0.0.1", 40000, "93.184.216.34", 443);
        assert!(!classify(&f, &addrs()).under_way);
        f.tcp_state = Some(crate::flow::CT_TCP_SYN_SENT);
        assert!(!classify(&f, &addrs()).under_way);
        // ESTABLISHED in a NEW event: conntrack never saw its SYN; exempt only if its socket
        // was there when the helper started.
        f.tcp_state = Some(3);
        assert!(!classify(&f, &addrs()).under_way);
        f.began_before = true;
        assert!(classify(&f, &addrs()).under_way);
        f.seen_from_syn = true;
        assert!(!classify(&f, &addrs()).under_way, "seen from its SYN");
    }

    #[test]
    fn a_connection_opened_here_and_picked_up_at_the_peer_s_packet_is_outbound() {
        // conntrack's new entry starts at the server's keepalive: orig is the server's side.
        let mut f = flow("93.184.216.34", 443, "10.0.0.1", 40000);
        f.tcp_state = Some(3);
        assert_eq!(classify(&f, &addrs()).direction, Direction::Inbound);
        f.reply_seen_from_syn = true;
        let s = classify(&f, &addrs());
        assert_eq!(s.direction, Direction::Outbound);
        assert_eq!(
            (s.local_ip.to_string(), s.local_port),
            ("10.0.0.1".into(), 40000)
        );
        assert_eq!(
            (s.remote_ip.to_string(), s.remote_port),
            ("93.184.216.34".into(), 443)
        );
        // The socket's own view, as the connect record was filed under.
        assert_eq!((s.socket.sport, s.socket.dport), (40000, 443));
        assert!(!s.under_way, "seen from its SYN: held to its record");
        // A peer on this machine (the server at a local address): its end's packet still
        // names the connection after the end that opened it.
        let both = LocalAddrs::new([
            "10.0.0.1".parse().expect("ip"),
            "10.0.0.2".parse().expect("ip"),
        ]);
        let mut f = flow("10.0.0.2", 443, "10.0.0.1", 40000);
        f.tcp_state = Some(3);
        f.reply_seen_from_syn = true;
        let s = classify(&f, &both);
        assert_eq!(s.direction, Direction::Outbound);
        assert_eq!((s.socket.sport, s.socket.dport), (40000, 443));
        assert!(!s.under_way);
    }

    #[test]
    fn an_inbound_connection_picked_up_at_this_machine_s_packet_is_inbound() {
        // A client connected here; conntrack's new entry starts at our keepalive.
        let mut f = flow("10.0.0.1", 22, "198.51.100.7", 51000);
        f.tcp_state = Some(3);
        assert_eq!(classify(&f, &addrs()).direction, Direction::Outbound);
        f.reply_seen_from_syn = true;
        let s = classify(&f, &addrs());
        assert_eq!(s.direction, Direction::Inbound);
        assert_eq!((s.local_port, s.remote_port), (22, 51000));
        assert_eq!((s.socket.sport, s.socket.dport), (22, 51000));
    }

    #[test]
    fn inbound_puts_the_client_at_the_remote_end() {
        let s = classify(&flow("198.51.100.7", 51000, "10.0.0.1", 22), &addrs());
        assert_eq!(s.direction, Direction::Inbound);
        assert_eq!(s.local_ip.to_string(), "10.0.0.1");
        assert_eq!(s.local_port, 22);
        assert_eq!(s.remote_ip.to_string(), "198.51.100.7");
        assert_eq!(s.remote_port, 51000);
        // The socket's own end is the server side.
        assert_eq!((s.socket.sport, s.socket.dport), (22, 51000));
    }

    #[test]
    fn inbound_behind_dnat_uses_the_reply_for_the_socket() {
        let mut f = flow("198.51.100.7", 51000, "10.0.0.1", 8080);
        f.reply = Some(Tuple {
            src: "172.17.0.2".parse().expect("ip"),
            sport: 80,
            dst: "198.51.100.7".parse().expect("ip"),
            dport: 51000,
            ..f.orig
        });
        let s = classify(&f, &addrs());
        assert_eq!(s.direction, Direction::Inbound);
        assert_eq!(s.local_port, 8080);
        assert_eq!(s.socket.src.to_string(), "172.17.0.2");
        assert_eq!(s.socket.sport, 80);
    }

    #[test]
    fn forward_when_neither_end_is_local() {
        let s = classify(&flow("192.168.1.5", 1000, "8.8.8.8", 53), &addrs());
        assert_eq!(s.direction, Direction::Forward);
    }

    #[test]
    fn ipv6_and_loopback() {
        let s = classify(&flow("fd00::1", 1000, "2001:db8::5", 443), &addrs());
        assert_eq!(s.direction, Direction::Outbound);
        let s = classify(
            &flow("127.0.0.1", 1000, "127.0.0.1", 80),
            &LocalAddrs::default(),
        );
        assert_eq!(s.direction, Direction::Outbound);
        assert!(s.is_loopback());
        let s = classify(&flow("::1", 1000, "::1", 80), &LocalAddrs::default());
        assert!(s.is_loopback());
    }
}
