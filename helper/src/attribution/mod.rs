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
pub mod exe;
pub mod procfs;
pub mod send_hook;
pub mod sock_diag;

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, Ipv6Addr};
use std::time::{Duration, Instant};

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
    /// Every socket of a protocol and family; `listening_only` asks for TCP listeners only.
    fn dump(
        &mut self,
        family: Family,
        proto: Proto,
        listening_only: bool,
    ) -> io::Result<Vec<SockEntry>>;
}

/// Which process holds a socket inode.
pub trait Processes {
    /// `uid` is the socket owner's uid, a hint of where to look first.
    fn by_inode(&mut self, inode: u64, uid: u32) -> Option<Process>;

    /// A process still holding a TCP socket that the kernel has already closed and dropped
    /// from its tables, whose local end was `local`: what remains of a connection refused at
    /// once (the RST can arrive before anyone could look the socket up).
    fn by_closed_tcp(&mut self, local: std::net::SocketAddr) -> Option<Process> {
        let _ = local;
        None
    }

    /// Process `pid` if it is still the one that connected: named `comm` and started no
    /// later than `at_boot_ns` (CLOCK_BOOTTIME), so a reused pid is never taken for it.
    fn by_pid(&mut self, pid: u32, comm: &str, at_boot_ns: u64) -> Option<Process> {
        let _ = (pid, comm, at_boot_ns);
        None
    }

    /// The name of user `uid`, when the passwd database has one.
    fn user_name(&mut self, uid: u32) -> Option<String> {
        let _ = uid;
        None
    }
}

/// The process that called `connect()` for a flow, as the kernel recorded it then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connector {
    /// The thread group id: the process, not the thread.
    pub pid: u32,
    pub uid: u32,
    pub comm: String,
    /// When it connected, in CLOCK_BOOTTIME nanoseconds (the clock of /proc start times).
    pub at_boot_ns: u64,
}

/// Records of who connected, by the connection's socket end (`src` local).
pub trait Connects {
    fn connector(&mut self, t: &Tuple) -> io::Result<Option<Connector>>;
    /// Which UDP sends the kernel records. None, unless the source says so.
    fn udp_records(&self) -> UdpRecords {
        UdpRecords::default()
    }
}

/// Which UDP sends leave a record.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UdpRecords {
    /// A send on a connected socket: filed as the send returns, just after the packet (and
    /// conntrack's event about it) left.
    pub connected: bool,
    /// A send to an address: filed before the packet exists.
    pub unconnected: bool,
}

/// How long after a flow's event was read a send record may still be on its way: the record
/// of a send on a connected socket is filed as `sendmsg` returns, after the packet, and the
/// reader, at real-time priority, can read conntrack's event before the sender's CPU gets
/// that far. Measured on a 2-core VM, 400 python processes each sending one 60 kB datagram
/// (fragmented, so the send goes on well after conntrack's event) on a connected socket,
/// half of them at nice 19 beside two busy loops: 4 records were not there when the reader
/// first looked, and all 4 were there when its socket lookups ended, 25 to 37 µs later. Two
/// milliseconds is fifty times that. The deadline counts from when the event was read, not
/// from when the lookup runs, so a pipeline working through a queue of flows read long ago
/// never waits: at most this much time is spent waiting per this much time of events.
const SEND_RECORD_WAIT: Duration = Duration::from_millis(2);
/// Between two looks at the map while waiting; the thread sleeps, so the sender, maybe on
/// the same CPU, gets to file its record.
const SEND_RECORD_POLL: Duration = Duration::from_micros(10);

/// A record from longer than this before the flow's event was read is not trusted for it: it
/// may be an earlier connection with the same addresses and ports, whose record is still
/// there when the new one's handshake has not filed its own yet. The helper reads an event
/// within a millisecond of the connect, unless a flood has filled its queue; then the flow
/// falls back to the socket lookups. Reusing a tuple within a second takes ~28,000 connects a
/// second to one destination.
const CONNECT_WINDOW_NS: u64 = 1_000_000_000;

/// The same for a record of a UDP send, which is wider: a send record is the newest send
/// under its tuple, so it is older than the flow's first packet only if that packet left no
/// record, and a record older than the flow is from an earlier flow with the same tuple,
/// which conntrack ends only after it has been idle 30 s (`nf_conntrack_udp_timeout`). And
/// the reader, when the pipeline's queue is full, reads events late: in the benchmark's
/// 50,000-flow burst (one socket, 33,000 datagrams a second) the last 2,578 flows were read
/// more than a second after they were sent, and a 1 s window left them unnamed.
const SEND_WINDOW_NS: u64 = 10_000_000_000;

/// CLOCK_BOOTTIME now, in nanoseconds.
fn boot_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    u64::try_from(t.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(t.tv_nsec).unwrap_or(0))
}

/// A flow's process, and how it was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribution {
    pub process: Process,
    pub by: AttributedBy,
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
}

/// How waiting for a send record ended.
enum Wait {
    Came(Attribution),
    /// The deadline passed.
    Never,
    /// The records could not be read (counted in `errors`): the socket lookups answer, as
    /// they would without records.
    Unreadable,
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
        }
    }

    /// Asks `connects` first for outbound TCP and UDP flows.
    pub fn with_connects(mut self, connects: Box<dyn Connects + Send>) -> Self {
        self.connects = Some(connects);
        self
    }

    /// The connecting or sending process of an outbound TCP or UDP flow whose event was read
    /// at `read`, from the kernel's record: the live process when it is still there, else
    /// what the record says (pid, comm, uid).
    fn by_connect_record(&mut self, t: &Tuple, read: Instant) -> Option<Attribution> {
        let r = self.connects.as_mut()?.connector(t);
        let c = self.note(r)??;
        let read_boot_ns =
            boot_ns().saturating_sub(u64::try_from(read.elapsed().as_nanos()).unwrap_or(u64::MAX));
        let window = match t.proto {
            Proto::Udp | Proto::UdpLite => SEND_WINDOW_NS,
            _ => CONNECT_WINDOW_NS,
        };
        if c.at_boot_ns.saturating_add(window) < read_boot_ns {
            return None;
        }
        let process = match self.processes.by_pid(c.pid, &c.comm, c.at_boot_ns) {
            Some(p) => p,
            None => Process {
                pid: c.pid,
                user: self.processes.user_name(c.uid),
                comm: c.comm,
                exe: None,
                cmdline: Vec::new(),
                uid: c.uid,
                exe_verified: false,
                exe_unverified: Some("the process had exited before it could be read".into()),
                exe_system: false,
            },
        };
        Some(Attribution {
            process,
            by: AttributedBy::Connect,
        })
    }

    /// An outbound UDP flow without a record (yet), whose socket lookups found `found`.
    ///
    /// On a connected socket the record lands just after the packet: it is waited for, and
    /// when it comes it names the sender. A bound socket with no peer found for the flow
    /// means a send to an address, which the send hook records before the packet leaves, or a
    /// socket that was connected for the send and is not any more: the latter's record is
    /// waited for too. When the kernel records such sends and no record came, the holder does
    /// not name the flow (it is reported without a process): a socket may be held by a
    /// process it was handed to, and a port shared by another socket (`SO_REUSEADDR`) or left
    /// by a sender that closed its own; and a record that never came was evicted by a flood,
    /// or is held back by a sender stalled on purpose before its send returned. Only where
    /// the kernel records nothing (an older kernel) does the holder still name it. A sender
    /// that is gone has filed its record: it is asked once more.
    fn udp_sender(
        &mut self,
        t: &Tuple,
        read: Instant,
        found: Option<Attribution>,
    ) -> Option<Attribution> {
        let Some(found) = found else {
            return self.by_connect_record(t, read);
        };
        let records = self
            .connects
            .as_ref()
            .map(|c| c.udp_records())
            .unwrap_or_default();
        let recorded = match found.by {
            AttributedBy::BoundSocket => records.unconnected,
            _ => records.connected,
        };
        // Without records of sends to an address, every such send ends here: no waiting.
        let late = records.connected && (found.by != AttributedBy::BoundSocket || recorded);
        if !late {
            return (!recorded).then_some(found);
        }
        match self.wait_for_record(t, read) {
            Wait::Came(sender) => Some(sender),
            Wait::Unreadable => Some(found),
            Wait::Never => (!recorded).then_some(found),
        }
    }

    /// The record of a send that may still be on its way, looked for until
    /// [`SEND_RECORD_WAIT`] after the flow was read.
    fn wait_for_record(&mut self, t: &Tuple, read: Instant) -> Wait {
        let deadline = read + SEND_RECORD_WAIT;
        loop {
            let errors = self.errors;
            if let Some(found) = self.by_connect_record(t, read) {
                return Wait::Came(found);
            }
            if self.errors > errors {
                return Wait::Unreadable;
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                return Wait::Never;
            };
            std::thread::sleep(left.min(SEND_RECORD_POLL));
        }
    }

    /// The socket lookups: a remembered bound socket, the kernel's tables, then a closed TCP
    /// socket still held.
    fn by_socket(&mut self, sides: &Sides, read: Instant) -> Option<Attribution> {
        let t = sides.socket;
        let key = (t.proto, t.src, t.sport);
        if let Some(b) = self.bound.get(&key).cloned() {
            if read <= b.verified {
                return Some(Attribution {
                    process: b.process,
                    by: AttributedBy::BoundSocket,
                });
            }
            let checked = Instant::now();
            if let Some(process) = self.processes.by_inode(b.entry.inode, b.entry.uid) {
                self.bound.insert(
                    key,
                    Bound {
                        process: process.clone(),
                        verified: checked,
                        ..b
                    },
                );
                return Some(Attribution {
                    process,
                    by: AttributedBy::BoundSocket,
                });
            }
            self.bound.remove(&key);
        }
        let candidates = self.candidates(sides);
        let live = !candidates.is_empty();
        for (entry, by) in candidates {
            if entry.inode == 0 {
                continue;
            }
            let checked = Instant::now();
            if let Some(process) = self.processes.by_inode(entry.inode, entry.uid) {
                if by == AttributedBy::BoundSocket {
                    if self.bound.len() >= BOUND_CACHE_LIMIT {
                        self.bound.clear();
                    }
                    self.bound.insert(
                        key,
                        Bound {
                            entry,
                            process: process.clone(),
                            verified: checked,
                        },
                    );
                }
                return Some(Attribution { process, by });
            }
        }
        // No socket in the kernel's tables: an outbound TCP connect may have been refused
        // already, its socket closed but still open in the program.
        if !live && t.proto == Proto::Tcp && sides.direction == Direction::Outbound {
            let local = std::net::SocketAddr::new(t.src, t.sport);
            if let Some(process) = self.processes.by_closed_tcp(local) {
                return Some(Attribution {
                    process,
                    by: AttributedBy::ClosedSocket,
                });
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

    /// The candidate sockets for a flow, best first.
    fn candidates(&mut self, sides: &Sides) -> Vec<(SockEntry, AttributedBy)> {
        let t = sides.socket;
        let fam = Family::of(&t.src);
        let inbound = sides.direction == Direction::Inbound;
        let mut out = Vec::new();

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

        // 2. Wider searches where the exact one cannot see the socket: the listener that will
        //    accept an inbound connection, or the bound socket of a datagram flow.
        let wide = match t.proto {
            Proto::Tcp | Proto::Sctp if inbound => Some(true),
            Proto::Udp | Proto::UdpLite => Some(false),
            _ => None,
        };
        if let Some(listening_only) = wide {
            for f in [Family::Ipv4, Family::Ipv6] {
                let r = self.sockets.dump(f, t.proto, listening_only);
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
        out.sort_by_key(|(_, by)| rank(*by));
        out
    }
}

impl<S: Sockets, P: Processes> Attributor for SocketAttributor<S, P> {
    fn attribute(&mut self, sides: &Sides) -> Option<Attribution> {
        self.attribute_read_at(sides, Instant::now())
    }

    fn attribute_read_at(&mut self, sides: &Sides, read: Instant) -> Option<Attribution> {
        if sides.direction == Direction::Forward {
            return None;
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
        let found = self.by_socket(sides, read);
        if outbound && udp {
            return self.udp_sender(&t, read, found);
        }
        // The kernel files a TCP record when the connection leaves SYN_SENT: a program that
        // is gone by now has done that.
        if found.is_none() && outbound && t.proto == Proto::Tcp {
            return self.by_connect_record(&t, read);
        }
        found
    }

    fn errors(&self) -> u64 {
        self.errors
    }
}

fn rank(by: AttributedBy) -> u8 {
    match by {
        AttributedBy::Connect | AttributedBy::Socket => 0,
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
mod tests {
    use super::*;
    use crate::direction::{classify, LocalAddrs};

    use std::collections::HashMap;

    #[derive(Default)]
    struct FakeSockets {
        /// Answers of the kernel's exact lookup, by (family, local port).
        exact: HashMap<(Family, u16), SockEntry>,
        all: Vec<SockEntry>,
        fail: bool,
    }

    impl Sockets for FakeSockets {
        fn exact(&mut self, family: Family, t: &Tuple) -> io::Result<Option<SockEntry>> {
            if self.fail {
                return Err(io::Error::other("netlink down"));
            }
            Ok(self.exact.get(&(family, t.sport)).cloned())
        }
        fn dump(
            &mut self,
            family: Family,
            proto: Proto,
            listening_only: bool,
        ) -> io::Result<Vec<SockEntry>> {
            Ok(self
                .all
                .iter()
                .filter(|e| e.family == family && e.proto == proto)
                .filter(|e| !listening_only || e.state == TCP_LISTEN)
                .cloned()
                .collect())
        }
    }

    struct FakeProcs(HashMap<u64, Process>);
    impl Processes for FakeProcs {
        fn by_inode(&mut self, inode: u64, _uid: u32) -> Option<Process> {
            self.0.get(&inode).cloned()
        }
        /// The live processes are the ones holding sockets; each started at boot.
        fn by_pid(&mut self, pid: u32, comm: &str, _at: u64) -> Option<Process> {
            self.0
                .values()
                .find(|p| p.pid == pid && p.comm == comm)
                .cloned()
        }
        fn user_name(&mut self, uid: u32) -> Option<String> {
            (uid == 1000).then(|| "alice".to_string())
        }
    }

    /// Kernel connect records by socket tuple.
    #[derive(Default)]
    struct FakeConnects {
        records: HashMap<Tuple, Connector>,
        failing: bool,
        udp: UdpRecords,
        /// Lookups answered "not there" before the records show: a record that lands late.
        late_by: usize,
        asked: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    }
    impl Connects for FakeConnects {
        fn connector(&mut self, t: &Tuple) -> io::Result<Option<Connector>> {
            let asked = self.asked.fetch_add(1, std::sync::atomic::Ordering::SeqCst) + 1;
            if self.failing {
                return Err(io::Error::other("bpf down"));
            }
            if asked <= self.late_by {
                return Ok(None);
            }
            Ok(self.records.get(t).cloned())
        }
        fn udp_records(&self) -> UdpRecords {
            self.udp
        }
    }

    fn connector(pid: u32, comm: &str, age_ms: u64) -> Connector {
        Connector {
            pid,
            uid: 1000,
            comm: comm.into(),
            at_boot_ns: boot_ns().saturating_sub(age_ms * 1_000_000),
        }
    }

    fn proc_(pid: u32, comm: &str) -> Process {
        Process {
            pid,
            comm: comm.into(),
            exe: Some(format!("/usr/bin/{comm}")),
            cmdline: vec![comm.into()],
            uid: 1000,
            user: None,
            ..Default::default()
        }
    }

    fn sock(
        proto: Proto,
        state: u8,
        src: &str,
        sport: u16,
        dst: &str,
        dport: u16,
        inode: u64,
    ) -> SockEntry {
        let src: IpAddr = src.parse().expect("ip");
        SockEntry {
            family: Family::of(&src),
            proto,
            state,
            src,
            sport,
            dst: dst.parse().expect("ip"),
            dport,
            uid: 1000,
            inode,
        }
    }

    fn sides(proto: Proto, src: &str, sport: u16, dst: &str, dport: u16) -> Sides {
        let flow = crate::flow::fixtures::flow(proto, src, sport, dst, dport);
        classify(
            &flow,
            &LocalAddrs::new([
                "10.0.0.1".parse().expect("ip"),
                "fd00::1".parse().expect("ip"),
            ]),
        )
    }

    fn attributor(
        s: FakeSockets,
        procs: &[(u64, Process)],
    ) -> SocketAttributor<FakeSockets, FakeProcs> {
        SocketAttributor::new(s, FakeProcs(procs.iter().cloned().collect()))
    }

    #[test]
    fn exact_tcp_socket_names_its_process() {
        let mut s = FakeSockets::default();
        s.exact.insert(
            (Family::Ipv4, 40000),
            sock(Proto::Tcp, 2, "10.0.0.1", 40000, "93.184.216.34", 443, 77),
        );
        let mut a = attributor(s, &[(77, proc_(4242, "curl"))]);
        let got = a
            .attribute(&sides(Proto::Tcp, "10.0.0.1", 40000, "93.184.216.34", 443))
            .expect("found");
        assert_eq!(got.process.pid, 4242);
        assert_eq!(got.by, AttributedBy::Socket);
    }

    #[test]
    fn a_socket_whose_local_end_differs_is_rejected() {
        // The UDP pitfall: the kernel answered with the receiving socket (local port 53).
        let mut s = FakeSockets::default();
        s.exact.insert(
            (Family::Ipv4, 40000),
            sock(Proto::Udp, 7, "10.0.0.1", 53, "0.0.0.0", 0, 5),
        );
        let mut a = attributor(s, &[(5, proc_(1, "dnsmasq"))]);
        assert_eq!(
            a.attribute(&sides(Proto::Udp, "10.0.0.1", 40000, "10.0.0.1", 53)),
            None
        );
    }

    #[test]
    fn a_connected_socket_to_another_peer_is_rejected() {
        let mut s = FakeSockets::default();
        s.exact.insert(
            (Family::Ipv4, 40000),
            sock(Proto::Tcp, 1, "10.0.0.1", 40000, "9.9.9.9", 443, 5),
        );
        let mut a = attributor(s, &[(5, proc_(1, "x"))]);
        assert_eq!(
            a.attribute(&sides(Proto::Tcp, "10.0.0.1", 40000, "8.8.8.8", 443)),
            None
        );
    }

    #[test]
    fn unconnected_udp_falls_back_to_the_bound_socket() {
        let mut s = FakeSockets::default();
        s.all
            .push(sock(Proto::Udp, 7, "0.0.0.0", 5353, "0.0.0.0", 0, 9));
        let mut a = attributor(s, &[(9, proc_(7, "avahi"))]);
        let got = a
            .attribute(&sides(Proto::Udp, "10.0.0.1", 5353, "224.0.0.251", 5353))
            .expect("found");
        assert_eq!(got.by, AttributedBy::BoundSocket);
        assert_eq!(got.process.comm, "avahi");
    }

    #[test]
    fn a_bound_udp_socket_is_remembered_while_its_holder_has_it() {
        let mut s = FakeSockets::default();
        s.all
            .push(sock(Proto::Udp, 7, "0.0.0.0", 5000, "0.0.0.0", 0, 9));
        let mut a = attributor(s, &[(9, proc_(7, "burst"))]);
        let flow = |dport| sides(Proto::Udp, "10.0.0.1", 5000, "9.9.9.9", dport);
        assert!(a.attribute(&flow(1)).is_some());
        // The kernel forgets the socket; the cache still names it, via its holder.
        a.sockets.all.clear();
        assert_eq!(a.attribute(&flow(2)).map(|x| x.process.pid), Some(7));
        // Once nobody holds it any more, it is not named from memory.
        a.processes.0.clear();
        assert_eq!(a.attribute(&flow(3)), None);
        assert!(a.bound.is_empty());
    }

    #[test]
    fn flows_read_before_the_last_check_need_no_lookup_at_all() {
        let mut s = FakeSockets::default();
        s.all
            .push(sock(Proto::Udp, 7, "0.0.0.0", 5000, "0.0.0.0", 0, 9));
        let mut a = attributor(s, &[(9, proc_(7, "burst"))]);
        let flow = |dport| sides(Proto::Udp, "10.0.0.1", 5000, "9.9.9.9", dport);
        let read_early = Instant::now();
        assert!(a.attribute_read_at(&flow(1), read_early).is_some());
        // Socket and holder vanish; a flow read before the check is still theirs...
        a.sockets.all.clear();
        a.processes.0.clear();
        assert_eq!(
            a.attribute_read_at(&flow(2), read_early)
                .map(|x| x.process.pid),
            Some(7)
        );
        // ...one read after it is not: it is checked, and nobody holds the socket any more.
        assert_eq!(a.attribute_read_at(&flow(3), Instant::now()), None);
    }

    #[test]
    fn dual_stack_ipv6_socket_owns_an_ipv4_flow() {
        let mut s = FakeSockets::default();
        s.exact.insert(
            (Family::Ipv6, 40000),
            sock(
                Proto::Tcp,
                1,
                "::ffff:10.0.0.1",
                40000,
                "::ffff:93.184.216.34",
                443,
                11,
            ),
        );
        let mut a = attributor(s, &[(11, proc_(3, "java"))]);
        let got = a
            .attribute(&sides(Proto::Tcp, "10.0.0.1", 40000, "93.184.216.34", 443))
            .expect("found");
        assert_eq!(got.process.comm, "java");
    }

    #[test]
    fn inbound_before_accept_goes_to_the_listener() {
        let mut s = FakeSockets::default();
        // The exact lookup finds the half-open request socket, which has no inode.
        s.exact.insert(
            (Family::Ipv4, 22),
            sock(Proto::Tcp, 3, "10.0.0.1", 22, "198.51.100.7", 51000, 0),
        );
        s.all
            .push(sock(Proto::Tcp, TCP_LISTEN, "::", 22, "::", 0, 31));
        let mut a = attributor(s, &[(31, proc_(600, "sshd"))]);
        let got = a
            .attribute(&sides(Proto::Tcp, "198.51.100.7", 51000, "10.0.0.1", 22))
            .expect("found");
        assert_eq!(got.process.comm, "sshd");
        assert_eq!(got.by, AttributedBy::Listener);
    }

    #[test]
    fn a_listener_never_owns_an_outbound_flow() {
        let mut s = FakeSockets::default();
        s.exact.insert(
            (Family::Ipv4, 8080),
            sock(Proto::Tcp, TCP_LISTEN, "0.0.0.0", 8080, "0.0.0.0", 0, 31),
        );
        let mut a = attributor(s, &[(31, proc_(600, "server"))]);
        assert_eq!(
            a.attribute(&sides(Proto::Tcp, "10.0.0.1", 8080, "9.9.9.9", 443)),
            None
        );
    }

    #[test]
    fn exact_socket_beats_the_listener() {
        let mut s = FakeSockets::default();
        s.exact.insert(
            (Family::Ipv4, 22),
            sock(Proto::Tcp, 1, "10.0.0.1", 22, "198.51.100.7", 51000, 40),
        );
        s.all.push(sock(
            Proto::Tcp,
            TCP_LISTEN,
            "0.0.0.0",
            22,
            "0.0.0.0",
            0,
            31,
        ));
        let mut a = attributor(
            s,
            &[(31, proc_(600, "sshd")), (40, proc_(601, "sshd-session"))],
        );
        let got = a
            .attribute(&sides(Proto::Tcp, "198.51.100.7", 51000, "10.0.0.1", 22))
            .expect("found");
        assert_eq!(got.process.pid, 601);
        assert_eq!(got.by, AttributedBy::Socket);
    }

    #[test]
    fn no_process_for_the_inode_means_unknown_not_a_guess() {
        let mut s = FakeSockets::default();
        s.exact.insert(
            (Family::Ipv4, 40000),
            sock(Proto::Tcp, 1, "10.0.0.1", 40000, "9.9.9.9", 443, 77),
        );
        let mut a = attributor(s, &[]);
        assert_eq!(
            a.attribute(&sides(Proto::Tcp, "10.0.0.1", 40000, "9.9.9.9", 443)),
            None
        );
    }

    #[test]
    fn forwarded_flows_and_os_errors_are_unknown() {
        let mut a = attributor(
            FakeSockets {
                fail: true,
                ..Default::default()
            },
            &[],
        );
        assert_eq!(
            a.attribute(&sides(Proto::Tcp, "192.168.1.1", 1, "9.9.9.9", 443)),
            None
        );
        assert_eq!(a.errors(), 0, "forwarded flows are not even looked up");
        assert_eq!(
            a.attribute(&sides(Proto::Tcp, "10.0.0.1", 1, "9.9.9.9", 443)),
            None
        );
        assert_eq!(a.errors(), 2, "both exact lookups failed and were counted");
    }

    fn with_records(
        s: FakeSockets,
        procs: &[(u64, Process)],
        records: &[(&Sides, Connector)],
        failing: bool,
    ) -> SocketAttributor<FakeSockets, FakeProcs> {
        let table = records.iter().map(|(s, c)| (s.socket, c.clone())).collect();
        attributor(s, procs).with_connects(Box::new(FakeConnects {
            records: table,
            failing,
            ..Default::default()
        }))
    }

    #[test]
    fn a_connect_record_names_a_live_process_with_its_details() {
        let flow = sides(Proto::Tcp, "10.0.0.1", 40000, "93.184.216.34", 443);
        // The socket says process 1 (it was passed on); the kernel saw 7 connect.
        let mut s = FakeSockets::default();
        s.exact.insert(
            (Family::Ipv4, 40000),
            sock(Proto::Tcp, 1, "10.0.0.1", 40000, "93.184.216.34", 443, 11),
        );
        let procs = [(11, proc_(1, "init")), (12, proc_(7, "curl"))];
        let mut a = with_records(s, &procs, &[(&flow, connector(7, "curl", 0))], false);
        let got = a.attribute(&flow).unwrap();
        assert_eq!(got.by, AttributedBy::Connect);
        assert_eq!(got.process, proc_(7, "curl"));
    }

    #[test]
    fn a_connect_record_of_a_process_that_is_gone_says_what_the_kernel_saw() {
        let flow = sides(Proto::Tcp, "fd00::1", 40001, "2001:db8::1", 80);
        let mut a = with_records(
            FakeSockets::default(),
            &[],
            &[(&flow, connector(4242, "bash", 0))],
            false,
        );
        let got = a.attribute(&flow).unwrap();
        assert_eq!(got.by, AttributedBy::Connect);
        assert_eq!(
            got.process,
            Process {
                pid: 4242,
                comm: "bash".into(),
                exe: None,
                cmdline: vec![],
                uid: 1000,
                user: Some("alice".into()),
                exe_unverified: Some("the process had exited before it could be read".into()),
                ..Default::default()
            }
        );
    }

    #[test]
    fn stale_records_inbound_flows_and_failing_lookups_fall_back_to_sockets() {
        let out = sides(Proto::Tcp, "10.0.0.1", 40002, "10.0.0.9", 443);
        let inbound = sides(Proto::Tcp, "10.0.0.9", 50000, "10.0.0.1", 22);
        let mut s = FakeSockets::default();
        s.exact.insert(
            (Family::Ipv4, 40002),
            sock(Proto::Tcp, 1, "10.0.0.1", 40002, "10.0.0.9", 443, 11),
        );
        s.all.push(sock(
            Proto::Tcp,
            TCP_LISTEN,
            "0.0.0.0",
            22,
            "0.0.0.0",
            0,
            12,
        ));
        let procs = [(11, proc_(5, "wget")), (12, proc_(6, "sshd"))];
        // A record 1.5 s older than the flow is an earlier connection's.
        let records = [
            (&out, connector(99, "old", 1500)),
            (&inbound, connector(98, "nobody", 0)),
        ];
        let mut a = with_records(s, &procs, &records, false);
        assert_eq!(a.attribute(&out).unwrap().by, AttributedBy::Socket);
        let got = a.attribute(&inbound).unwrap();
        assert_eq!((got.by, got.process.pid), (AttributedBy::Listener, 6));
        assert_eq!(a.errors(), 0);

        let mut s = FakeSockets::default();
        s.exact.insert(
            (Family::Ipv4, 40002),
            sock(Proto::Tcp, 1, "10.0.0.1", 40002, "10.0.0.9", 443, 11),
        );
        let fresh = [(&out, connector(99, "new", 0))];
        let mut a = with_records(s, &procs, &fresh, true);
        assert_eq!(a.attribute(&out).unwrap().process.pid, 5);
        assert_eq!(a.errors(), 1);
    }

    #[test]
    fn a_record_is_judged_against_when_the_flow_was_read_not_now() {
        let flow = sides(Proto::Tcp, "10.0.0.1", 40003, "10.0.0.9", 443);
        let mut a = with_records(
            FakeSockets::default(),
            &[],
            &[(&flow, connector(77, "ab", 1500))],
            false,
        );
        // Read a second ago (a busy pipeline): the connect came half a second before that.
        let read = Instant::now() - std::time::Duration::from_secs(1);
        let got = a.attribute_read_at(&flow, read).unwrap();
        assert_eq!((got.by, got.process.pid), (AttributedBy::Connect, 77));
        // Read just now, the same record is from before the window: not this connection's.
        assert_eq!(a.attribute(&flow), None);
    }

    const ALL_UDP: UdpRecords = UdpRecords {
        connected: true,
        unconnected: true,
    };

    /// An attributor over `s` and `procs` whose records are `c`'s, and the count of lookups
    /// in them.
    fn with_fake(
        s: FakeSockets,
        procs: &[(u64, Process)],
        records: &[(&Sides, Connector)],
        c: FakeConnects,
    ) -> (
        SocketAttributor<FakeSockets, FakeProcs>,
        std::sync::Arc<std::sync::atomic::AtomicUsize>,
    ) {
        let asked = c.asked.clone();
        let c = FakeConnects {
            records: records.iter().map(|(s, c)| (s.socket, c.clone())).collect(),
            ..c
        };
        (attributor(s, procs).with_connects(Box::new(c)), asked)
    }

    fn asked(n: &std::sync::atomic::AtomicUsize) -> usize {
        n.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// A UDP socket 10.0.0.1:5353 connected to 10.0.0.9:53, inode 11, held by process 9.
    fn connected_udp() -> (Sides, FakeSockets, [(u64, Process); 2]) {
        let flow = sides(Proto::Udp, "10.0.0.1", 5353, "10.0.0.9", 53);
        let mut s = FakeSockets::default();
        s.exact.insert(
            (Family::Ipv4, 5353),
            sock(Proto::Udp, 1, "10.0.0.1", 5353, "10.0.0.9", 53, 11),
        );
        let procs = [(11, proc_(9, "holder")), (12, proc_(1, "sender"))];
        (flow, s, procs)
    }

    #[test]
    fn a_udp_send_record_decides_over_the_socket_holder() {
        // The socket was passed on: process 9 holds it, the kernel saw process 1 send.
        let (flow, s, procs) = connected_udp();
        let record = [(&flow, connector(1, "sender", 0))];
        let mut a = with_records(s, &procs, &record, false);
        let got = a.attribute(&flow).unwrap();
        assert_eq!(got.by, AttributedBy::Connect);
        assert_eq!(got.process, proc_(1, "sender"));
    }

    #[test]
    fn a_send_record_that_lands_late_is_waited_for_and_decides() {
        let (flow, s, procs) = connected_udp();
        let record = [(&flow, connector(1, "sender", 0))];
        let late = || FakeConnects {
            udp: ALL_UDP,
            late_by: 3,
            ..Default::default()
        };
        let (mut a, n) = with_fake(s, &procs, &record, late());
        // Read "later" than now, so the deadline is far whatever the test threads' timing.
        let read = Instant::now() + Duration::from_secs(60);
        let got = a.attribute_read_at(&flow, read).unwrap();
        assert_eq!((got.by, got.process.pid), (AttributedBy::Connect, 1));
        assert_eq!(asked(&n), 4, "asked first, then until it came");
        // A flow read long ago (a pipeline working through a queue) is not waited for.
        let (flow, s, procs) = connected_udp();
        let never = FakeConnects {
            late_by: usize::MAX,
            ..late()
        };
        let (mut a, n) = with_fake(s, &procs, &record, never);
        let long_ago = Instant::now() - Duration::from_secs(1);
        assert_eq!(a.attribute_read_at(&flow, long_ago), None);
        assert_eq!(asked(&n), 2, "once before the lookups, once after");
        // A record that never comes (evicted by a flood, or its sender stalled on purpose):
        // the holder, maybe handed the socket, does not name the flow either.
        let (flow, s, procs) = connected_udp();
        let never = FakeConnects {
            late_by: usize::MAX,
            ..late()
        };
        let (mut a, n) = with_fake(s, &procs, &record, never);
        let started = Instant::now();
        assert_eq!(a.attribute(&flow), None);
        assert!(asked(&n) >= 2, "asked after the lookups too: {}", asked(&n));
        assert!(started.elapsed() >= SEND_RECORD_WAIT, "it waited");
        // Nor when the kernel files no records of connected sends.
        let (flow, s, procs) = connected_udp();
        let off = FakeConnects {
            udp: UdpRecords::default(),
            ..late()
        };
        let (mut a, n) = with_fake(s, &procs, &record, off);
        let got = a.attribute(&flow).unwrap();
        assert_eq!((got.by, got.process.pid), (AttributedBy::Socket, 9));
        assert_eq!(asked(&n), 1);
    }

    #[test]
    fn a_bound_sockets_holder_does_not_name_a_send_the_kernel_records() {
        let flow = sides(Proto::Udp, "10.0.0.1", 5353, "224.0.0.251", 5353);
        let bound = || {
            let mut s = FakeSockets::default();
            s.all
                .push(sock(Proto::Udp, 7, "0.0.0.0", 5353, "0.0.0.0", 0, 9));
            s
        };
        let procs = [(9, proc_(7, "avahi"))];
        let all = || FakeConnects {
            udp: ALL_UDP,
            ..Default::default()
        };
        // The sender's record names it, though avahi holds the port.
        let record = [(&flow, connector(3, "python3", 0))];
        let (mut a, _) = with_fake(bound(), &procs, &record, all());
        let got = a.attribute(&flow).unwrap();
        assert_eq!((got.by, got.process.pid), (AttributedBy::Connect, 3));
        // No record, sends to an address recorded: not avahi (after waiting for a record of a
        // socket that was connected for its send).
        let (mut a, n) = with_fake(bound(), &procs, &[], all());
        let started = Instant::now();
        assert_eq!(a.attribute(&flow), None);
        assert!(asked(&n) >= 2, "asked after the lookups too: {}", asked(&n));
        assert!(started.elapsed() >= SEND_RECORD_WAIT, "it waited");
        // Without records of sends to an address, the holder, as before, and no waiting.
        let legacy = FakeConnects {
            udp: UdpRecords {
                connected: true,
                unconnected: false,
            },
            ..Default::default()
        };
        let (mut a, n) = with_fake(bound(), &procs, &[], legacy);
        let got = a.attribute(&flow).unwrap();
        assert_eq!((got.by, got.process.pid), (AttributedBy::BoundSocket, 7));
        assert_eq!(asked(&n), 1);
    }

    #[test]
    fn several_sockets_bound_to_a_port_name_no_one() {
        let flow = sides(Proto::Udp, "10.0.0.1", 5353, "10.0.0.9", 53);
        let mut s = FakeSockets::default();
        s.all
            .push(sock(Proto::Udp, 7, "0.0.0.0", 5353, "0.0.0.0", 0, 9));
        s.all
            .push(sock(Proto::Udp, 7, "10.0.0.1", 5353, "0.0.0.0", 0, 10));
        let mut a = attributor(s, &[(9, proc_(7, "avahi")), (10, proc_(8, "python3"))]);
        assert_eq!(a.attribute(&flow), None);
        assert!(a.bound.is_empty(), "nothing remembered");
    }

    #[test]
    fn a_gone_udp_sender_is_named_by_its_record_and_failing_records_leave_the_holder() {
        let flow = sides(Proto::Udp, "10.0.0.1", 5353, "10.0.0.9", 53);
        let record = [(&flow, connector(1, "dig", 0))];
        let mut a = with_records(FakeSockets::default(), &[], &record, false);
        let got = a.attribute(&flow).unwrap();
        assert_eq!((got.by, got.process.pid), (AttributedBy::Connect, 1));
        // A send record is good for longer than a connect record (read late in a burst)...
        let record = [(&flow, connector(1, "dig", 5_000))];
        let mut a = with_records(FakeSockets::default(), &[], &record, false);
        assert_eq!(a.attribute(&flow).map(|x| x.process.pid), Some(1));
        // ...but not for ever.
        let record = [(&flow, connector(1, "dig", 11_000))];
        let mut a = with_records(FakeSockets::default(), &[], &record, false);
        assert_eq!(a.attribute(&flow), None);
        // Records that cannot be read: counted, not waited for, and the holder answers.
        let (flow, s, procs) = connected_udp();
        let failing = FakeConnects {
            failing: true,
            udp: ALL_UDP,
            ..Default::default()
        };
        let (mut a, n) = with_fake(s, &procs, &record, failing);
        let got = a.attribute(&flow).unwrap();
        assert_eq!((got.by, got.process.pid), (AttributedBy::Socket, 9));
        assert_eq!((asked(&n), a.errors()), (2, 2));
    }
}
