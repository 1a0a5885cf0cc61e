//! Which process owns a flow: the heart of the product.
//!
//! The chain is socket first, process second. The kernel tells which socket has a flow's
//! addresses (`sock_diag`), and /proc tells which process holds that socket's inode. Both OS
//! sources sit behind the small [`Sockets`] and [`Processes`] traits, so the fallback chain in
//! [`SocketAttributor`] is tested with tables; the real sources are tested end to end in
//! network namespaces.
//!
//! For outbound TCP and UDP a kernel-side record comes first, and when there is one it
//! decides over any holder of the socket: [`connect_hook`] has the kernel note the connecting
//! process inside `connect()`, and the sender of each datagram (on a connected socket just
//! after the send, [`send_hook`] for one sent to an address before the packet exists), behind
//! the [`Connects`] trait. So a program that connects or sends and exits at once is still
//! named, and a socket passed to another process, or a port shared with another socket
//! (`SO_REUSEADDR`, `SO_REUSEPORT`), names the process that sent, not one that holds it.
//!
//! Everything that names a process goes through [`Attributor`], so the filter and the output
//! do not know which source answered.

pub mod bpf;
pub mod connect_hook;
pub mod connect_programs;
pub mod context;
pub mod devices;
pub mod exe;
pub mod exe_hash;
pub mod exec_hook;
pub mod fd_table;
pub mod fork_hook;
pub mod held;
pub mod holders;
pub mod image;
pub mod lineage;
pub mod listeners;
pub mod netns;
pub mod proc_fds;
pub mod procfs;
pub mod record_key;
mod records;
pub mod ring_records;
pub mod send_hook;
pub mod sock_diag;
pub mod sock_ops;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

pub use held::{Held, Holders, HOLDERS_LISTED};
pub use records::{Connector, Connects, UdpRecords};

use crate::direction::Sides;
use crate::event::{AttributedBy, Process};
use crate::flow::{Direction, Family, Proto, Tuple};

/// A socket as the kernel describes it. `src` is always the socket's own (local) end.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SockEntry {
    pub family: Family,
    pub proto: Proto,
    /// The TCP state number (`TCP_LISTEN` = 10); 7 (`TCP_CLOSE`) for unconnected UDP.
    pub state: u8,
    pub src: IpAddr,
    pub sport: u16,
    pub dst: IpAddr,
    pub dport: u16,
    pub uid: u32,
    /// The socket's inode; 0 for sockets no file holds (request and time-wait sockets).
    pub inode: u64,
}

pub const TCP_LISTEN: u8 = 10;

/// The kernel's socket tables.
pub trait Sockets {
    /// The socket whose local end is `t.src:t.sport` and whose peer is `t.dst:t.dport`, as the
    /// kernel's own lookup finds it (which may be a listener or a wildcard-bound socket).
    fn exact(&mut self, family: Family, t: &Tuple) -> io::Result<Option<SockEntry>>;
    /// Every socket of a protocol and family on local port `local_port`; `listening_only`
    /// asks for TCP listeners only.
    fn dump(
        &mut self,
        family: Family,
        proto: Proto,
        listening_only: bool,
        local_port: u16,
    ) -> io::Result<Vec<SockEntry>>;
}

/// Which process holds a socket inode.
pub trait Processes {
    /// `uid` is the socket owner's uid, a hint of where to look first.
    fn by_inode(&mut self, inode: u64, uid: u32) -> Option<Process>;

    /// Every process holding the inode (a socket passed with `SCM_RIGHTS` or inherited
    /// across `fork` has several), and whether every process was looked at.
    fn holders(&mut self, inode: u64, uid: u32) -> Held {
        Held {
            processes: self.by_inode(inode, uid).into_iter().collect(),
            more: 0,
            complete: true,
        }
    }

    /// A process still holding a TCP socket that the kernel has already closed and dropped
    /// from its tables, whose local end was `local`: what remains of a connection refused at
    /// once (the RST can arrive before anyone could look the socket up).
    fn by_closed_tcp(&mut self, local: std::net::SocketAddr) -> Option<Process> {
        let _ = local;
        None
    }

    /// The process a record names if it is still the one that connected: named as the record
    /// says and started when the record says (or, where the record has no start time, no
    /// later than the connect), so a reused pid is never taken for it.
    fn by_pid(&mut self, c: &Connector) -> Option<Process> {
        let _ = c;
        None
    }

    /// The process a record names, after it has exited: from its exec record, when one
    /// with its pid and start time is kept and it made no other exec after the connect.
    fn exited(&mut self, c: &Connector) -> Option<Process> {
        let _ = c;
        None
    }

    /// The name of user `uid`, when the passwd database has one.
    fn user_name(&mut self, uid: u32) -> Option<String> {
        let _ = uid;
        None
    }
}

/// A flow's process, and how it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribution {
    pub process: Process,
    pub by: AttributedBy,
    /// Who else held the socket, when a socket lookup (not a kernel record) named `process`.
    pub holders: Holders,
}

impl Attribution {
    /// An attribution that needs no other holders: a kernel record named the process.
    pub fn new(process: Process, by: AttributedBy) -> Attribution {
        Attribution {
            process,
            by,
            holders: Holders::decided(),
        }
    }

    /// `process` alone held the socket, as far as every process was looked at, or a kernel
    /// record named it: only then may a whitelist entry for it silence the flow. A socket
    /// several processes hold could have been used by any of them.
    pub fn alone(&self) -> bool {
        self.holders.others.is_empty() && self.holders.more == 0 && self.holders.complete
    }
}

/// The one interface the rest of the helper uses to name a flow's process.
pub trait Attributor {
    /// `None` when no process can be named with certainty; never a guess.
    fn attribute(&mut self, sides: &Sides) -> Option<Attribution>;
    /// The same, for a flow whose event was read at `read`: an answer proven true at a later
    /// moment may be reused for it. Sources that cannot use that ignore it.
    fn attribute_read_at(&mut self, sides: &Sides, read: Instant) -> Option<Attribution> {
        let _ = read;
        self.attribute(sides)
    }
    /// Finishes an attribution another attributor made (the reader's, which stops at the
    /// first holder): looks for the socket's other holders, at normal priority.
    fn complete(&mut self, found: Attribution) -> Attribution {
        found
    }
    /// How many lookups failed on an OS error (not merely "not found") since the start.
    fn errors(&self) -> u64 {
        0
    }
}

/// sock_diag, then /proc: the fallback chain over any [`Sockets`] and [`Processes`].
pub struct SocketAttributor<S, P> {
    pub sockets: S,
    pub processes: P,
    errors: u64,
    /// Unconnected UDP sockets by (protocol, local address, local port). One such socket may
    /// send to thousands of peers (a DNS server, a burst); a live socket keeps its port, so
    /// while its holder still has it open (which `Processes` checks) it is still the one.
    bound: HashMap<(Proto, IpAddr, u16), Bound>,
    connects: Option<Box<dyn Connects + Send>>,
    /// The other network namespaces' listeners, for inbound flows sent on to a container.
    elsewhere: Option<Arc<Mutex<listeners::Elsewhere>>>,
}

/// A bound socket, its holder, and when the holder was last seen holding it.
///
/// The socket existed when first found and its holder still held it at `verified`, so it
/// existed all along in between: any flow read before `verified` is that socket's, with no
/// further lookup. In a burst the reader is ahead of the pipeline, so one check covers every
/// flow already queued.
#[derive(Debug, Clone)]
struct Bound {
    entry: SockEntry,
    process: Process,
    holders: Holders,
    verified: Instant,
}

const BOUND_CACHE_LIMIT: usize = 1024;

impl<S: Sockets, P: Processes> SocketAttributor<S, P> {
    pub fn new(sockets: S, processes: P) -> Self {
        SocketAttributor {
            sockets,
            processes,
            errors: 0,
            bound: HashMap::new(),
            connects: None,
            elsewhere: None,
        }
    }

    /// Asks the other network namespaces for the listener of an inbound flow whose local
    /// end was rewritten (DNAT) to an address this namespace does not have: a published
    /// port.
    pub fn with_elsewhere(mut self, elsewhere: Arc<Mutex<listeners::Elsewhere>>) -> Self {
        self.elsewhere = Some(elsewhere);
        self
    }

    /// The holder of `socket`, the listener of flow `t` found in another namespace.
    fn held_elsewhere(&mut self, t: &Tuple, socket: listeners::ProcSocket) -> Option<Attribution> {
        let entry = SockEntry {
            family: match socket.local {
                std::net::SocketAddr::V4(_) => Family::Ipv4,
                std::net::SocketAddr::V6(_) => Family::Ipv6,
            },
            proto: t.proto,
            state: socket.state,
            src: socket.local.ip(),
            sport: socket.local.port(),
            dst: socket.remote.ip(),
            dport: socket.remote.port(),
            uid: socket.uid,
            inode: socket.inode,
        };
        let (process, holders) = self.held(&entry)?;
        Some(Attribution {
            process,
            by: AttributedBy::Container,
            holders,
        })
    }

    /// Asks `connects` first for outbound TCP and UDP flows.
    pub fn with_connects(mut self, connects: Box<dyn Connects + Send>) -> Self {
        self.connects = Some(connects);
        self
    }

    /// The holders of socket `entry`: the first named, the others counted in.
    fn held(&mut self, entry: &SockEntry) -> Option<(Process, Holders)> {
        let mut held = self.processes.holders(entry.inode, entry.uid);
        if held.processes.is_empty() {
            return None;
        }
        let named = held.processes.remove(0);
        let holders = Holders::of(&named, held, entry.inode, entry.uid);
        Some((named, holders))
    }

    /// The socket lookups: a remembered bound socket, the kernel's tables (the exact lookups
    /// first, the wider dump only if they named no socket a file holds), then a closed TCP
    /// socket still held. The process named comes with the socket's other holders.
    fn by_socket(&mut self, sides: &Sides, read: Instant) -> Option<Attribution> {
        let t = sides.socket;
        let key = (t.proto, t.src, t.sport);
        if let Some(b) = self.bound.get(&key).cloned() {
            if read <= b.verified {
                return Some(Attribution {
                    process: b.process,
                    by: AttributedBy::BoundSocket,
                    holders: b.holders,
                });
            }
            let checked = Instant::now();
            if let Some((process, holders)) = self.held(&b.entry) {
                self.bound.insert(
                    key,
                    Bound {
                        process: process.clone(),
                        holders: holders.clone(),
                        verified: checked,
                        ..b
                    },
                );
                return Some(Attribution {
                    process,
                    by: AttributedBy::BoundSocket,
                    holders,
                });
            }
            self.bound.remove(&key);
        }
        // A dump walks the kernel's whole table (0.6 ms with 10,000 UDP sockets bound, bench
        // row f), and after an exact answer it would only find that socket again.
        let mut live = false;
        let mut tried = Vec::new();
        for wide in [false, true] {
            if wide && !tried.is_empty() {
                break;
            }
            let mut candidates = self.candidates(sides, wide);
            live |= !candidates.is_empty();
            if !wide {
                // A bound socket from the exact lookup may share its port with others
                // (SO_REUSEADDR): only the dump sees them all.
                candidates.retain(|(_, by)| *by != AttributedBy::BoundSocket);
            }
            if let Some(found) = self.first_held(candidates, key, &mut tried) {
                return Some(found);
            }
        }
        // No socket in the kernel's tables: an outbound TCP connect may have been refused
        // already, its socket closed but still open in the program.
        if !live && t.proto == Proto::Tcp && sides.direction == Direction::Outbound {
            let local = std::net::SocketAddr::new(t.src, t.sport);
            if let Some(process) = self.processes.by_closed_tcp(local) {
                // A connect refused at once: it carried nothing, and the search for it looks
                // at sockets, not at who else holds them.
                return Some(Attribution::new(process, AttributedBy::ClosedSocket));
            }
        }
        None
    }

    fn note<T>(&mut self, r: io::Result<T>) -> Option<T> {
        match r {
            Ok(v) => Some(v),
            Err(_) => {
                self.errors += 1;
                None
            }
        }
    }

    /// The candidate sockets for a flow, best first: from the kernel's exact lookups, or
    /// (`wide`) from its tables.
    fn candidates(&mut self, sides: &Sides, wide: bool) -> Vec<(SockEntry, AttributedBy)> {
        let t = sides.socket;
        let fam = Family::of(&t.src);
        let inbound = sides.direction == Direction::Inbound;
        let mut out = Vec::new();
        if wide {
            self.wide_candidates(sides, &mut out);
            out.sort_by_key(|(_, by)| rank(*by));
            return out;
        }

        // 1. The kernel's own lookup, in the flow's family and, for IPv4, as a dual-stack
        //    IPv6 socket would see it (v4-mapped addresses).
        let mut exact_queries = vec![(fam, t)];
        if let (IpAddr::V4(s), IpAddr::V4(d)) = (t.src, t.dst) {
            exact_queries.push((
                Family::Ipv6,
                Tuple {
                    src: IpAddr::V6(s.to_ipv6_mapped()),
                    dst: IpAddr::V6(d.to_ipv6_mapped()),
                    ..t
                },
            ));
        }
        for (f, q) in exact_queries {
            let r = self.sockets.exact(f, &q);
            if let Some(Some(e)) = self.note(r) {
                if let Some(by) = judge(&e, &q, inbound) {
                    out.push((e, by));
                }
            }
        }

        out.sort_by_key(|(_, by)| rank(*by));
        out
    }

    /// 2. Wider searches where the exact one cannot see the socket: the listener that will
    ///    accept an inbound connection, or the bound socket of a datagram flow.
    fn wide_candidates(&mut self, sides: &Sides, out: &mut Vec<(SockEntry, AttributedBy)>) {
        let t = sides.socket;
        let fam = Family::of(&t.src);
        let inbound = sides.direction == Direction::Inbound;
        let wide = match t.proto {
            Proto::Tcp | Proto::Sctp if inbound => Some(true),
            Proto::Udp | Proto::UdpLite => Some(false),
            _ => None,
        };
        if let Some(listening_only) = wide {
            for f in [Family::Ipv4, Family::Ipv6] {
                let r = self.sockets.dump(f, t.proto, listening_only, t.sport);
                let Some(entries) = self.note(r) else {
                    continue;
                };
                for e in entries {
                    let q = if f == fam { t } else { mapped(&t) };
                    if let Some(by) = judge(&e, &q, inbound) {
                        out.push((e, by));
                    }
                }
            }
        }
        // Several sockets bound to the port (SO_REUSEADDR, SO_REUSEPORT): any of them may
        // have sent, so none of them names the flow.
        let mut bound = out
            .iter()
            .filter(|(_, by)| *by == AttributedBy::BoundSocket)
            .map(|(e, _)| e.inode);
        if let Some(first) = bound.next() {
            if bound.any(|inode| inode != first) {
                out.retain(|(_, by)| *by != AttributedBy::BoundSocket);
            }
        }
    }
}

impl<S: Sockets, P: Processes> Attributor for SocketAttributor<S, P> {
    fn attribute(&mut self, sides: &Sides) -> Option<Attribution> {
        self.attribute_read_at(sides, Instant::now())
    }

    fn attribute_read_at(&mut self, sides: &Sides, read: Instant) -> Option<Attribution> {
        if sides.direction == Direction::Forward {
            return self.by_record_elsewhere(&sides.socket, read);
        }
        let t = sides.socket;
        let outbound = sides.direction == Direction::Outbound;
        let udp = matches!(t.proto, Proto::Udp | Proto::UdpLite);
        // Who connected or sent, as the kernel recorded it, decides over who holds the socket.
        if outbound && (udp || t.proto == Proto::Tcp) {
            if let Some(found) = self.by_connect_record(&t, read) {
                return Some(found);
            }
        }
        // Ping and raw sockets (no ports), and SCTP: only the send records can name them, and
        // a send record lands just after the packet.
        let portless = !t.proto.has_ports() || t.proto == Proto::Sctp;
        if outbound && portless {
            let records = self
                .connects
                .as_ref()
                .map(|c| c.udp_records())
                .unwrap_or_default();
            if !records.connected {
                return None;
            }
            return self.sent_record(&t, read);
        }
        if outbound && udp {
            let records = self
                .connects
                .as_ref()
                .map(|c| c.udp_records())
                .unwrap_or_default();
            if records.connected && records.unconnected {
                return self.recorded_udp_sender(sides, read);
            }
            let found = self.by_socket(sides, read);
            return self.udp_sender(&t, read, found);
        }
        // Sent on to another address (a published port: DNAT to a container): unless that
        // address is this namespace's own, no socket here can receive it, and the listener
        // may be in the container's namespace.
        let rewritten = sides.local_ip.to_canonical() != t.src.to_canonical();
        if sides.direction == Direction::Inbound && rewritten {
            if let Some(elsewhere) = &self.elsewhere {
                // A poisoned lock (a panic elsewhere) still holds a usable cache.
                let found = elsewhere
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .listener(t.proto, t.src, t.sport);
                match found {
                    listeners::Listening::Here => {}
                    listeners::Listening::One { socket, .. } => {
                        return self.held_elsewhere(&t, socket);
                    }
                    listeners::Listening::None | listeners::Listening::Several(_) => {
                        return None;
                    }
                }
            }
        }
        let found = self.by_socket(sides, read);
        if outbound && t.proto == Proto::Tcp {
            // With the tracepoint program, the kernel files a TCP record when the connection
            // leaves SYN_SENT: a program that is gone by now has done that.
            let Some(found) = found else {
                return self.by_connect_record(&t, read);
            };
            return Some(self.held_against_record(&t, sides.under_way, found));
        }
        found
    }

    fn complete(&mut self, mut found: Attribution) -> Attribution {
        let h = &found.holders;
        if h.complete || h.inode == 0 {
            return found;
        }
        let (inode, uid) = (h.inode, h.uid);
        let held = self.processes.holders(inode, uid);
        // Holders the reader saw stay: one that sent and exited since held the socket then.
        let seen = std::mem::replace(&mut found.holders, Holders::decided());
        found.holders = Holders::of(&found.process, held, inode, uid).with(seen);
        found
    }

    fn errors(&self) -> u64 {
        self.errors
    }
}

impl<S: Sockets, P: Processes> SocketAttributor<S, P> {
    /// The first of `candidates` (best first) that some process holds, with its holders;
    /// a bound socket is remembered under `key`. Inodes in `tried` were looked up already.
    fn first_held(
        &mut self,
        candidates: Vec<(SockEntry, AttributedBy)>,
        key: (Proto, IpAddr, u16),
        tried: &mut Vec<u64>,
    ) -> Option<Attribution> {
        for (entry, by) in candidates {
            // The exact lookup and the dump often return the same socket: one search for its
            // holders is enough, and a second after a miss would only spend another budget.
            if entry.inode == 0 || tried.contains(&entry.inode) {
                continue;
            }
            tried.push(entry.inode);
            let checked = Instant::now();
            if let Some((process, holders)) = self.held(&entry) {
                if by == AttributedBy::BoundSocket {
                    if self.bound.len() >= BOUND_CACHE_LIMIT {
                        self.bound.clear();
                    }
                    self.bound.insert(
                        key,
                        Bound {
                            entry,
                            process: process.clone(),
                            holders: holders.clone(),
                            verified: checked,
                        },
                    );
                }
                return Some(Attribution {
                    process,
                    by,
                    holders,
                });
            }
        }
        None
    }
}

fn rank(by: AttributedBy) -> u8 {
    match by {
        AttributedBy::Connect | AttributedBy::Container | AttributedBy::Socket => 0,
        AttributedBy::BoundSocket => 1,
        AttributedBy::Listener => 2,
        AttributedBy::ClosedSocket => 3,
    }
}

/// The IPv6 view of an IPv4 tuple (v4-mapped addresses); other tuples unchanged.
fn mapped(t: &Tuple) -> Tuple {
    let map = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => IpAddr::V6(v4.to_ipv6_mapped()),
        v6 => v6,
    };
    Tuple {
        src: map(t.src),
        dst: map(t.dst),
        ..*t
    }
}

fn unspecified(ip: &IpAddr) -> bool {
    ip.is_unspecified() || *ip == IpAddr::V6(Ipv6Addr::UNSPECIFIED)
}

/// Whether socket `e` really is the flow `q`'s local end, and how well it matches.
///
/// The kernel's lookups return the best socket for a packet, which is not always ours: a UDP
/// query with the ends the wrong way round silently returns the receiving socket, and a TCP
/// lookup falls back to a listener. So the returned local end must be the flow's local end.
fn judge(e: &SockEntry, q: &Tuple, inbound: bool) -> Option<AttributedBy> {
    if e.proto != q.proto || e.sport != q.sport {
        return None;
    }
    if !(e.src == q.src || unspecified(&e.src)) {
        return None;
    }
    if e.proto == Proto::Tcp && e.state == TCP_LISTEN {
        return inbound.then_some(AttributedBy::Listener);
    }
    let connected = e.dport != 0 || !unspecified(&e.dst);
    if connected {
        (e.dst == q.dst && e.dport == q.dport).then_some(AttributedBy::Socket)
    } else if matches!(e.proto, Proto::Udp | Proto::UdpLite) {
        Some(AttributedBy::BoundSocket)
    } else {
        None
    }
}

#[cfg(test)]
mod tests;
