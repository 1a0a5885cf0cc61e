//! What the reader remembers to judge a TCP connection conntrack picks up under way (a NEW
//! event in a state other than SYN_SENT: its entry ended, or never was): whether the helper
//! saw it open, from which end, and whether it was there when the helper started. The
//! exemption from the connect record check, and the direction of a pickup at the peer's
//! packet, are decided from these ([`crate::direction::classify`]).

use std::net::IpAddr;

use crate::flow::{Flow, FlowEvent, Proto, Tuple, CT_TCP_SYN_SENT};

/// The TCP connections whose sockets were there when the helper started (its network
/// namespace's `/proc/net/tcp` and `tcp6`, read once its connect records were being filed):
/// the only ones a pickup under way may be exempt for, having begun before anything filed a
/// record. Unlike [`SeenFromSyn`], no later traffic can push an entry out or put one in; a
/// SYN on a listed tuple takes it off (a new connection there, not the listed one). It holds
/// tuples, not the sockets themselves: the holder's socket is not compared with the listed
/// one.
#[derive(Debug, Default, Clone)]
pub struct TcpBefore(std::collections::HashSet<(IpAddr, u16, IpAddr, u16)>);

/// How many connections [`TcpBefore`] keeps; past that, the rest are not exempt (they are
/// reported as unverified, not silenced).
pub const TCP_BEFORE: usize = 65536;

impl TcpBefore {
    /// From (local, remote, inode) of each socket; listeners and unconnected sockets (a
    /// remote port of 0) and entries with no socket are left out, and IPv4-mapped IPv6
    /// addresses are taken as IPv4, the way conntrack tracks a dual-stack socket's IPv4
    /// connection.
    pub fn from_sockets(
        sockets: impl IntoIterator<Item = (std::net::SocketAddr, std::net::SocketAddr, u64)>,
    ) -> TcpBefore {
        let set = sockets
            .into_iter()
            // No inode: a TIME_WAIT entry, no socket any process holds.
            .filter(|(_, r, inode)| r.port() != 0 && *inode != 0)
            .map(|(l, r, _)| {
                (
                    l.ip().to_canonical(),
                    l.port(),
                    r.ip().to_canonical(),
                    r.port(),
                )
            })
            .take(TCP_BEFORE)
            .collect();
        TcpBefore(set)
    }

    /// Whether `t`, seen from either end, is one of the connections.
    pub fn contains(&self, t: &Tuple) -> bool {
        let (s, d) = (t.src.to_canonical(), t.dst.to_canonical());
        self.0.contains(&(s, t.sport, d, t.dport)) || self.0.contains(&(d, t.dport, s, t.sport))
    }

    /// `t` connected again, from either end: a new connection on the same tuple, not the
    /// one that was there.
    pub fn remove(&mut self, t: &Tuple) {
        let (s, d) = (t.src.to_canonical(), t.dst.to_canonical());
        self.0.remove(&(s, t.sport, d, t.dport));
        self.0.remove(&(d, t.dport, s, t.sport));
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The TCP tuples the reader saw connect from their SYN, newest kept (see
/// [`Flow::seen_from_syn`]), and the connections from before the helper ([`TcpBefore`]).
///
/// Connections opened here (from a local address other than loopback) and those opened by a
/// peer are kept apart, and the first decide: a flood of SYNs from outside, which name no
/// local process and are not reported, or of connects to loopback, which are not reported by
/// default, pushes out only what was opened there, and that only spares a connection from a
/// check it would pass (an accepted one, picked up at this machine's packet, is taken for
/// outbound and reported unverified). Pushing out a connection opened here takes as many
/// connections opened here, each one a flow the helper classifies (reported unless the
/// person's own filters hide it). What depends on forgetting nothing, the exemption, is
/// decided by [`TcpBefore`], which nothing forgets. SYNs with neither end known as ours
/// (forwarded ones, or one from an address just added that the reader has not heard of) are
/// kept apart again, so a busy router or container host does not push out the machine's own.
///
/// Once events were lost, a SYN may have gone unseen: nothing is exempt any more, and a
/// pickup of a tuple neither side was seen opening is taken as opened here.
pub struct SeenFromSyn {
    here: lru::LruCache<Tuple, ()>,
    there: lru::LruCache<Tuple, ()>,
    elsewhere: lru::LruCache<Tuple, ()>,
    /// `None`: no list was taken, and every pickup may be from before the helper.
    before: Option<TcpBefore>,
    lost: bool,
}

/// How many tuples [`SeenFromSyn`] keeps of each kind: about 1.3 MB each, when full.
pub const SEEN_FROM_SYN: usize = 16384;

impl Default for SeenFromSyn {
    fn default() -> Self {
        let lru = || {
            lru::LruCache::new(
                std::num::NonZeroUsize::new(SEEN_FROM_SYN).unwrap_or(std::num::NonZeroUsize::MIN),
            )
        };
        SeenFromSyn {
            here: lru(),
            there: lru(),
            elsewhere: lru(),
            before: None,
            lost: false,
        }
    }
}

impl SeenFromSyn {
    /// With the connections that were there when the helper started.
    pub fn with_before(before: TcpBefore) -> SeenFromSyn {
        SeenFromSyn {
            before: Some(before),
            ..SeenFromSyn::default()
        }
    }

    /// Events were lost (the socket overflowed, or was reopened): see the type's doc.
    pub fn lost(&mut self) {
        self.lost = true;
        self.before = Some(TcpBefore::default());
    }

    /// Notes a NEW TCP flow seen from its SYN, or marks one picked up under way: whose tuple
    /// was seen so, from which end, and whether it is one from before the helper. `local`
    /// says whether an address is this machine's.
    pub fn note(&mut self, flow: &mut Flow, local: impl Fn(&IpAddr) -> bool) {
        if flow.event != FlowEvent::New || flow.orig.proto != Proto::Tcp {
            return;
        }
        let (o, rev) = (flow.orig, flow.orig.reversed());
        match flow.tcp_state {
            Some(CT_TCP_SYN_SENT) => {
                if let Some(before) = &mut self.before {
                    before.remove(&o);
                }
                let loopback = o.src.to_canonical().is_loopback();
                if loopback {
                    // Not kept: they are not reported by default, so they would push the rest
                    // out unseen. A loopback pickup is still held to its record, unless its
                    // socket is one from before the helper.
                } else if local(&o.src) {
                    self.here.put(o, ());
                } else if local(&o.dst) {
                    self.there.put(o, ());
                } else {
                    self.elsewhere.put(o, ());
                }
            }
            Some(_) => {
                // Opened here decides over opened there: a peer's SYN to a port of ours, sent
                // before we connected from it, must not make our connection look inbound.
                // A SYN kept as elsewhere counts as this side's: if its source is ours after
                // all (an address just added), classification then says outbound.
                let mine = |t: &Tuple| self.here.contains(t) || self.elsewhere.contains(t);
                let (orig, reply) = if mine(&o) || mine(&rev) {
                    (mine(&o), !mine(&o))
                } else if self.there.contains(&o) || self.there.contains(&rev) {
                    (self.there.contains(&o), self.there.contains(&rev))
                } else {
                    // Unseen from either end: after a loss, its SYN may have been ours.
                    (false, self.lost && local(&o.dst) && !local(&o.src))
                };
                flow.seen_from_syn = orig;
                flow.reply_seen_from_syn = !orig && reply;
                flow.began_before = self.before.as_ref().is_none_or(|b| b.contains(&o));
            }
            None => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flow::fixtures;

    impl SeenFromSyn {
        /// This machine is 10.0.0.1 (and loopback).
        fn note_local(&mut self, flow: &mut Flow) {
            self.note(flow, |ip| {
                ip.to_canonical().is_loopback() || *ip == "10.0.0.1".parse::<IpAddr>().expect("ip")
            });
        }

        /// A TCP pickup under way (ESTABLISHED in its NEW event), as noted.
        fn picked_up(&mut self, src: &str, sport: u16, dst: &str, dport: u16) -> Flow {
            let mut f = fixtures::flow(Proto::Tcp, src, sport, dst, dport);
            f.tcp_state = Some(3);
            self.note_local(&mut f);
            f
        }
    }

    #[test]
    fn what_was_opened_here_decides_and_loopback_is_not_kept() {
        let mut seen = SeenFromSyn::default();
        let syn = |src: &str, sport, dst: &str, dport| Flow {
            tcp_state: Some(CT_TCP_SYN_SENT),
            ..fixtures::flow(Proto::Tcp, src, sport, dst, dport)
        };
        let pickup = |seen: &mut SeenFromSyn, src: &str, sport, dst: &str, dport| {
            let f = seen.picked_up(src, sport, dst, dport);
            (f.seen_from_syn, f.reply_seen_from_syn)
        };
        // The peer's SYN to our port 40000 first, then our connect from it to the peer.
        seen.note_local(&mut syn("10.0.0.9", 443, "10.0.0.1", 40000));
        seen.note_local(&mut syn("10.0.0.1", 40000, "10.0.0.9", 443));
        // Picked up at the peer's packet: still the connection opened here.
        assert_eq!(
            pickup(&mut seen, "10.0.0.9", 443, "10.0.0.1", 40000),
            (false, true)
        );
        assert_eq!(
            pickup(&mut seen, "10.0.0.1", 40000, "10.0.0.9", 443),
            (true, false)
        );
        // Opened by a peer only: picked up at our packet, the reply side opened it.
        seen.note_local(&mut syn("10.0.0.9", 5000, "10.0.0.1", 22));
        assert_eq!(
            pickup(&mut seen, "10.0.0.1", 22, "10.0.0.9", 5000),
            (false, true)
        );
        assert_eq!(
            pickup(&mut seen, "10.0.0.9", 5000, "10.0.0.1", 22),
            (true, false)
        );
        // A connect to loopback is not kept.
        seen.note_local(&mut syn("127.0.0.1", 40100, "127.0.0.1", 80));
        assert_eq!(
            pickup(&mut seen, "127.0.0.1", 40100, "127.0.0.1", 80),
            (false, false)
        );
        // From an address not known as ours (one just added, before the reader heard of it):
        // kept as opened here, the side held to its records.
        seen.note_local(&mut syn("10.9.0.5", 1000, "10.0.0.9", 80));
        assert_eq!(
            pickup(&mut seen, "10.0.0.9", 80, "10.9.0.5", 1000),
            (false, true)
        );
    }

    #[test]
    fn after_a_loss_nothing_is_exempt_and_an_unseen_pickup_is_taken_as_opened_here() {
        let sa = |s: &str| s.parse::<std::net::SocketAddr>().expect("address");
        let before = TcpBefore::from_sockets([(sa("10.0.0.1:40000"), sa("10.0.0.9:443"), 11)]);
        let mut seen = SeenFromSyn::with_before(before);
        let pickup = |seen: &mut SeenFromSyn, src: &str, sport, dst: &str, dport| {
            let f = seen.picked_up(src, sport, dst, dport);
            (f.began_before, f.reply_seen_from_syn)
        };
        assert_eq!(
            pickup(&mut seen, "10.0.0.1", 40000, "10.0.0.9", 443),
            (true, false)
        );
        assert_eq!(
            pickup(&mut seen, "10.0.0.9", 443, "10.0.0.1", 40001),
            (false, false)
        );
        seen.lost();
        assert_eq!(
            pickup(&mut seen, "10.0.0.1", 40000, "10.0.0.9", 443),
            (false, false)
        );
        // At the peer's packet: its SYN may have been lost, so it is held as ours.
        assert_eq!(
            pickup(&mut seen, "10.0.0.9", 443, "10.0.0.1", 40001),
            (false, true)
        );
    }

    #[test]
    fn a_pickup_is_from_before_only_if_its_socket_was_listed_at_the_start() {
        let sa = |s: &str| s.parse::<std::net::SocketAddr>().expect("address");
        let before = TcpBefore::from_sockets([
            (sa("10.0.0.1:40000"), sa("10.0.0.9:443"), 11),
            // A dual-stack socket's IPv4 connection, as tcp6 lists it.
            (
                sa("[::ffff:10.0.0.1]:40001"),
                sa("[::ffff:10.0.0.9]:443"),
                12,
            ),
            (sa("10.0.0.1:40003"), sa("10.0.0.9:443"), 13),
            // A listener: no peer.
            (sa("0.0.0.0:22"), sa("0.0.0.0:0"), 14),
            // TIME_WAIT: no socket.
            (sa("10.0.0.1:40004"), sa("10.0.0.9:443"), 0),
        ]);
        assert_eq!(before.len(), 3);
        let mut seen = SeenFromSyn::with_before(before);
        let mut pickup =
            |sport, dst: &str, dport| seen.picked_up("10.0.0.1", sport, dst, dport).began_before;
        assert!(pickup(40000, "10.0.0.9", 443));
        assert!(pickup(40001, "10.0.0.9", 443), "IPv4-mapped");
        assert!(
            !pickup(40002, "10.0.0.9", 443),
            "opened since: it has a record, or lost it"
        );
        assert!(!pickup(40004, "10.0.0.9", 443), "a TIME_WAIT entry");
        // From the peer's side (its keepalive came first).
        assert!(
            seen.picked_up("10.0.0.9", 443, "10.0.0.1", 40000)
                .began_before
        );
        // Listed, then connected again on the same tuple: the new one is not from before.
        let mut syn = fixtures::flow(Proto::Tcp, "10.0.0.1", 40003, "10.0.0.9", 443);
        syn.tcp_state = Some(CT_TCP_SYN_SENT);
        seen.note_local(&mut syn);
        assert!(
            !seen
                .picked_up("10.0.0.1", 40003, "10.0.0.9", 443)
                .began_before
        );
        // No list taken: every pickup may be from before.
        let mut none = SeenFromSyn::default();
        assert!(
            none.picked_up("10.0.0.1", 40002, "10.0.0.9", 443)
                .began_before
        );
    }

    #[test]
    fn a_pickup_of_a_tuple_seen_from_its_syn_is_marked_and_no_other() {
        let mut seen = SeenFromSyn::default();
        let mut f = fixtures::flow(Proto::Tcp, "10.0.0.1", 40000, "10.0.0.9", 443);
        f.tcp_state = Some(3);
        seen.note_local(&mut f);
        assert!(!f.seen_from_syn, "never seen: a connection from before");
        let mut syn = Flow {
            tcp_state: Some(CT_TCP_SYN_SENT),
            ..f.clone()
        };
        seen.note_local(&mut syn);
        assert!(!syn.seen_from_syn);
        seen.note_local(&mut f);
        assert!(
            f.seen_from_syn,
            "seen from its SYN: the same connection again"
        );
        assert!(!f.reply_seen_from_syn);
        // Picked up at a packet of the other end: the reverse tuple was seen from its SYN.
        let mut back = fixtures::flow(Proto::Tcp, "10.0.0.9", 443, "10.0.0.1", 40000);
        back.tcp_state = Some(3);
        seen.note_local(&mut back);
        assert!(!back.seen_from_syn);
        assert!(
            back.reply_seen_from_syn,
            "this machine's connection, from the peer's side"
        );
        // Another tuple, another protocol, or a DESTROY event: not marked.
        let mut other = fixtures::flow(Proto::Tcp, "10.0.0.1", 40001, "10.0.0.9", 443);
        other.tcp_state = Some(3);
        seen.note_local(&mut other);
        assert!(!other.seen_from_syn && !other.reply_seen_from_syn);
        let mut udp = fixtures::flow(Proto::Udp, "10.0.0.1", 40000, "10.0.0.9", 443);
        udp.tcp_state = Some(3);
        seen.note_local(&mut udp);
        assert!(!udp.seen_from_syn);
        let mut gone = Flow {
            event: FlowEvent::Destroy,
            seen_from_syn: false,
            reply_seen_from_syn: false,
            began_before: false,
            ..f.clone()
        };
        seen.note_local(&mut gone);
        assert!(!gone.seen_from_syn);
    }
}
