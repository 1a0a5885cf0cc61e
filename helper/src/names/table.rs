//! Which answers to believe, and for whom: the name a process looked up is used for that
//! process's connections only.
//!
//! Any program can send a packet from port 53, run its own DNS server, or look up a name
//! just before another program connects. So an answer counts only when it answers a query
//! seen leaving a local socket: same transport, the reversed addresses and ports, the same
//! transaction id and the same question, within [`QUERY_WINDOW`]. The name is filed under the
//! process whose socket asked (for a stub resolver on loopback, that is the program that
//! asked the stub, not the stub), and an answer from a server the system does not use is
//! marked [`HostSource::OwnResolver`], which no whitelist entry accepts. Pure: the clock and
//! the asking process are handed in, so every rule is tested with plain values.

use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use lru::LruCache;

use super::dns::Message;
use crate::event::HostSource;

/// How long a query waits for its answer (resolvers retry after 5 s).
pub const QUERY_WINDOW: Duration = Duration::from_secs(5);
/// Queries waiting for an answer, at most; the oldest is forgotten first.
pub const PENDING: usize = 1024;
/// Learned (process, address) names, at most; the least recently used is forgotten first.
pub const CAPACITY: usize = 4096;

/// One query as it left: transport, the asking socket's end, the server, id and question.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct QueryKey {
    pub proto: u8,
    pub client: SocketAddr,
    pub server: SocketAddr,
    pub id: u16,
    pub question: (String, u16),
}

#[derive(Debug, Clone)]
struct Pending {
    asker: u32,
    at: Instant,
}

#[derive(Debug, Clone)]
struct Learned {
    name: String,
    source: HostSource,
    until: Instant,
}

/// Counters for `--debug` and the tests.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TableStats {
    pub queries: u64,
    /// Queries whose socket no process could be found for (nothing is learned from them).
    pub unowned_queries: u64,
    pub answers: u64,
    /// Answers that answered no query seen (unsolicited, spoofed, late, another question).
    pub unsolicited: u64,
    /// Addresses named.
    pub named: u64,
}

pub struct NameTable {
    pending: LruCache<QueryKey, Pending>,
    names: LruCache<(u32, IpAddr), Learned>,
    system: HashSet<IpAddr>,
    pub stats: TableStats,
}

impl Default for NameTable {
    fn default() -> Self {
        NameTable::new(PENDING, CAPACITY)
    }
}

fn cap(n: usize) -> NonZeroUsize {
    NonZeroUsize::new(n).unwrap_or(NonZeroUsize::MIN)
}

impl NameTable {
    pub fn new(pending: usize, capacity: usize) -> NameTable {
        NameTable {
            pending: LruCache::new(cap(pending)),
            names: LruCache::new(cap(capacity)),
            system: HashSet::new(),
            stats: TableStats::default(),
        }
    }

    /// The resolvers the system uses (`nameserver` lines); answers from others are
    /// [`HostSource::OwnResolver`].
    pub fn set_system_resolvers(&mut self, servers: impl IntoIterator<Item = IpAddr>) {
        self.system = servers.into_iter().map(|ip| ip.to_canonical()).collect();
    }

    /// A query left a local socket; `asker` is the process that holds it, if one was found.
    pub fn query(&mut self, key: QueryKey, asker: Option<u32>, now: Instant) {
        self.stats.queries += 1;
        match asker {
            Some(asker) => {
                self.pending.put(key, Pending { asker, at: now });
            }
            None => self.stats.unowned_queries += 1,
        }
    }

    /// An answer arrived for this machine. `key` is written from the query's side (the
    /// answer's destination is `client`, its source `server`). Returns how many addresses
    /// it named.
    pub fn answer(&mut self, key: &QueryKey, msg: &Message, now: Instant) -> usize {
        self.stats.answers += 1;
        let asked = match self.pending.pop(key) {
            Some(p) if now.saturating_duration_since(p.at) <= QUERY_WINDOW => p,
            _ => {
                self.stats.unsolicited += 1;
                return 0;
            }
        };
        let source = if self.system.contains(&key.server.ip().to_canonical()) {
            HostSource::Dns
        } else {
            HostSource::OwnResolver
        };
        for (ip, ttl) in &msg.addrs {
            self.names.put(
                (asked.asker, ip.to_canonical()),
                Learned {
                    name: msg.question.0.clone(),
                    source,
                    until: now + *ttl,
                },
            );
        }
        self.stats.named += msg.addrs.len() as u64;
        msg.addrs.len()
    }

    /// The name process `pid` looked up for `ip`, while its answer is valid at `now`.
    pub fn name_for(
        &mut self,
        pid: u32,
        ip: &IpAddr,
        now: Instant,
    ) -> Option<(String, HostSource)> {
        let key = (pid, ip.to_canonical());
        match self.names.get(&key) {
            Some(l) if l.until > now => Some((l.name.clone(), l.source)),
            Some(_) => {
                self.names.pop(&key);
                None
            }
            None => None,
        }
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    pub fn pending(&self) -> usize {
        self.pending.len()
    }

    /// Forgets every name (e.g. on demand of a test or a command).
    pub fn clear(&mut self) {
        self.names.clear();
        self.pending.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SERVER: &str = "10.0.0.53:53";
    const CLIENT: &str = "10.0.0.1:40000";

    fn key(id: u16, name: &str) -> QueryKey {
        QueryKey {
            proto: 17,
            client: CLIENT.parse().expect("addr"),
            server: SERVER.parse().expect("addr"),
            id,
            question: (name.into(), 1),
        }
    }

    fn answer(id: u16, name: &str, ip: &str) -> Message {
        Message {
            id,
            response: true,
            question: (name.into(), 1),
            addrs: vec![(ip.parse().expect("ip"), Duration::from_secs(300))],
        }
    }

    fn table() -> NameTable {
        let mut t = NameTable::default();
        t.set_system_resolvers(["10.0.0.53".parse().expect("ip")]);
        t
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().expect("ip")
    }

    #[test]
    fn an_answer_to_a_query_names_the_address_for_the_asker_only() {
        let mut t = table();
        let now = Instant::now();
        t.query(key(7, "example.test"), Some(100), now);
        assert_eq!(
            t.answer(
                &key(7, "example.test"),
                &answer(7, "example.test", "10.9.9.9"),
                now
            ),
            1
        );
        assert_eq!(
            t.name_for(100, &ip("10.9.9.9"), now),
            Some(("example.test".into(), HostSource::Dns))
        );
        // Another process connecting to the same address did not look it up: no name.
        assert_eq!(t.name_for(200, &ip("10.9.9.9"), now), None);
        // Valid for the TTL only.
        assert_eq!(
            t.name_for(100, &ip("10.9.9.9"), now + Duration::from_secs(301)),
            None
        );
    }

    #[test]
    fn unsolicited_late_or_mismatched_answers_name_nothing() {
        let mut t = table();
        let now = Instant::now();
        let forged = answer(7, "github.test", "10.6.6.6");
        // No query at all.
        assert_eq!(t.answer(&key(7, "github.test"), &forged, now), 0);
        // A query, but another id, another question, another client port or server.
        t.query(key(7, "github.test"), Some(100), now);
        assert_eq!(t.answer(&key(8, "github.test"), &forged, now), 0);
        assert_eq!(t.answer(&key(7, "gitlab.test"), &forged, now), 0);
        let mut other_port = key(7, "github.test");
        other_port.client = "10.0.0.1:40001".parse().expect("addr");
        assert_eq!(t.answer(&other_port, &forged, now), 0);
        let mut other_server = key(7, "github.test");
        other_server.server = "10.0.0.54:53".parse().expect("addr");
        assert_eq!(t.answer(&other_server, &forged, now), 0);
        let mut tcp = key(7, "github.test");
        tcp.proto = 6;
        assert_eq!(t.answer(&tcp, &forged, now), 0);
        // Too late.
        assert_eq!(
            t.answer(
                &key(7, "github.test"),
                &forged,
                now + QUERY_WINDOW + Duration::from_millis(1)
            ),
            0
        );
        assert_eq!(t.name_for(100, &ip("10.6.6.6"), now), None);
        assert_eq!(t.stats.unsolicited, 7);
        // One answer per query: a second copy names nothing more.
        t.query(key(9, "ok.test"), Some(100), now);
        assert_eq!(
            t.answer(&key(9, "ok.test"), &answer(9, "ok.test", "10.1.1.1"), now),
            1
        );
        assert_eq!(
            t.answer(&key(9, "ok.test"), &answer(9, "ok.test", "10.6.6.6"), now),
            0
        );
        assert_eq!(t.name_for(100, &ip("10.6.6.6"), now), None);
    }

    #[test]
    fn a_server_the_system_does_not_use_is_marked_as_the_programs_own() {
        let mut t = table();
        let now = Instant::now();
        let mut own = key(7, "github.test");
        own.server = "10.66.0.1:53".parse().expect("addr");
        t.query(own.clone(), Some(100), now);
        t.answer(&own, &answer(7, "github.test", "10.6.6.6"), now);
        assert_eq!(
            t.name_for(100, &ip("10.6.6.6"), now),
            Some(("github.test".into(), HostSource::OwnResolver))
        );
    }

    #[test]
    fn queries_of_no_known_process_teach_nothing() {
        let mut t = table();
        let now = Instant::now();
        t.query(key(7, "example.test"), None, now);
        assert_eq!(
            t.answer(
                &key(7, "example.test"),
                &answer(7, "example.test", "10.9.9.9"),
                now
            ),
            0
        );
        assert_eq!(t.stats.unowned_queries, 1);
    }

    #[test]
    fn both_tables_are_bounded() {
        let mut t = NameTable::new(2, 3);
        t.set_system_resolvers(["10.0.0.53".parse().expect("ip")]);
        let now = Instant::now();
        for i in 1..=5u16 {
            t.query(key(i, "h.test"), Some(100), now);
        }
        assert_eq!(t.pending(), 2);
        // The oldest queries were forgotten: their answers are unsolicited now.
        assert_eq!(
            t.answer(&key(1, "h.test"), &answer(1, "h.test", "10.0.0.1"), now),
            0
        );
        for i in 1..=5u8 {
            let k = key(u16::from(i) + 100, "h.test");
            t.query(k.clone(), Some(100), now);
            t.answer(&k, &answer(0, "h.test", &format!("10.0.1.{i}")), now);
        }
        assert_eq!(t.len(), 3);
        assert_eq!(t.name_for(100, &ip("10.0.1.1"), now), None);
        assert!(t.name_for(100, &ip("10.0.1.5"), now).is_some());
    }
}
