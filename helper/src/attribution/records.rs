//! The kernel's records of who connected and who sent, and how far they are believed.
//!
//! A record names the process that called `connect()` or sent, as the kernel saw it then
//! (see [`super::connect_hook`] and [`super::send_hook`]): it speaks for a flow over whoever
//! holds the socket. This is the part of [`SocketAttributor`] that asks them, waits for a
//! send record still on its way, and decides when a holder may still name a UDP flow.

use std::io;
use std::time::{Duration, Instant};

use super::{Attribution, Processes, SocketAttributor, Sockets};
use crate::event::{AttributedBy, Process};
use crate::flow::{Proto, Tuple};

/// The process that called `connect()` for a flow, as the kernel recorded it then.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Connector {
    /// The thread group id: the process, not the thread.
    pub pid: u32,
    pub uid: u32,
    pub comm: String,
    /// When it connected, in CLOCK_BOOTTIME nanoseconds (the clock of /proc start times).
    pub at_boot_ns: u64,
    /// When the process started, in the same clock (0: not recorded): with the pid, what
    /// tells it from a later process given the same pid.
    pub start_ns: u64,
    /// A write opened the connection (TCP Fast Open), and the record names the writer.
    pub by_write: bool,
}

/// Records of who connected, by the connection's socket end (`src` local).
pub trait Connects {
    fn connector(&mut self, t: &Tuple) -> io::Result<Option<Connector>>;
    /// Which UDP sends the kernel records. None, unless the source says so.
    fn udp_records(&self) -> UdpRecords {
        UdpRecords::default()
    }
    /// Whether every TCP connect files its record in `connect()`, before its first packet
    /// (the `sock_ops` program), so a flow without one has lost it. No, unless the source
    /// says so.
    fn tcp_at_connect(&self) -> bool {
        false
    }
    /// The record of a flow forwarded from another network namespace on this machine (a
    /// container's), filed there under the flow's tuple as the container sees it.
    fn connector_elsewhere(&mut self, t: &Tuple) -> io::Result<Option<Connector>> {
        let _ = t;
        Ok(None)
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
pub(super) const SEND_RECORD_WAIT: Duration = Duration::from_millis(2);
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
pub(super) fn boot_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    u64::try_from(t.tv_sec)
        .unwrap_or(0)
        .saturating_mul(1_000_000_000)
        .saturating_add(u64::try_from(t.tv_nsec).unwrap_or(0))
}

/// The oldest a record may be, in CLOCK_BOOTTIME nanoseconds, to name flow `t` whose event
/// was read at `read` (see [`CONNECT_WINDOW_NS`], [`SEND_WINDOW_NS`]).
fn window_start(t: &Tuple, read: Instant) -> u64 {
    let read_boot_ns = read_boot_ns(read);
    let window = match t.proto {
        Proto::Udp | Proto::UdpLite => SEND_WINDOW_NS,
        _ => CONNECT_WINDOW_NS,
    };
    read_boot_ns.saturating_sub(window)
}

/// `read`, an instant in the past, in CLOCK_BOOTTIME nanoseconds. The time since is taken
/// first, so a delay between the two clock reads makes the answer late, never early.
fn read_boot_ns(read: Instant) -> u64 {
    let ago = u64::try_from(read.elapsed().as_nanos()).unwrap_or(u64::MAX);
    boot_ns().saturating_sub(ago)
}

/// Where TCP records are filed in `connect()` (the `sock_ops` program, before the SYN, so
/// before conntrack's event), a flow's own record is older than the moment its event was
/// read; one filed later is a later connection's on the same addresses and ports (a tuple
/// freed by a reset can be connected again at once), which replaced the flow's own. The slack
/// covers turning the read's instant into CLOCK_BOOTTIME (two clocks that tick together, read
/// so that any error makes the read late: see [`read_boot_ns`]).
const RECORD_AFTER_READ_NS: u64 = 50_000;

/// How waiting for a send record ended.
enum Wait {
    Came(Box<Attribution>),
    /// The deadline passed.
    Never,
    /// The records could not be read (counted in `errors`): the socket lookups answer, as
    /// they would without records.
    Unreadable,
}

/// Why a TCP flow's holder is not believed when an old connect record names another process.
pub const HANDED: &str = "the kernel's record of who connected names another process (read \
    late, more than a second after the connect), so this one may have been handed the socket";
/// Why, when the kernel records every connect and holds none for this one.
pub const EVICTED: &str = "the kernel records every connect and holds no record of this one \
    (evicted by a flood of connects, or refused while its ring was full?), so the process \
    holding the socket may have been handed it";

/// Why, when the record was filed after the flow was read (see [`RECORD_AFTER_READ_NS`]).
pub const LATER: &str = "the kernel's record of who connected was filed after this connection \
    was seen, by a later connection with the same addresses and ports, so it does not say who \
    opened this one";

/// Why a record of a connection a write opened names no program a whitelist entry may match.
pub const BY_WRITE: &str = "a write opened this connection (TCP Fast Open), and the process \
    that wrote need not be the one that connected (TCP_FASTOPEN_CONNECT leaves the SYN to \
    the first write, whoever makes it)";

/// `process` as the maker of the connection a record speaks for: not verified where a write
/// opened the connection (`by_write`).
fn opened_by(process: Process, by_write: bool) -> Process {
    if !by_write {
        return process;
    }
    process.unverified(BY_WRITE)
}

impl<S: Sockets, P: Processes> SocketAttributor<S, P> {
    /// The connecting or sending process of an outbound TCP or UDP flow whose event was read
    /// at `read`, from the kernel's record: the live process when it is still there, else
    /// what the record says (pid, comm, uid).
    pub(super) fn by_connect_record(&mut self, t: &Tuple, read: Instant) -> Option<Attribution> {
        let r = self.connects.as_mut()?.connector(t);
        let c = self.note(r)??;
        self.by_record(t, c, read)
    }

    /// A flow forwarded from another network namespace on this machine (a container behind
    /// a bridge), from the record its process filed there.
    pub(super) fn by_record_elsewhere(&mut self, t: &Tuple, read: Instant) -> Option<Attribution> {
        if !matches!(t.proto, Proto::Tcp | Proto::Udp | Proto::UdpLite) {
            return None;
        }
        let r = self.connects.as_mut()?.connector_elsewhere(t);
        let c = self.note(r)??;
        let mut found = self.by_record(t, c, read)?;
        found.by = AttributedBy::Container;
        Some(found)
    }

    /// `found`, the holder of outbound TCP flow `t`'s socket, held against the flow's
    /// connect record when there is one but it was too old to name the flow (the helper read
    /// the flow more than [`CONNECT_WINDOW_NS`] after the connect: a flood can delay it so). A
    /// record of another process says the holder may have been handed the socket while it
    /// connected: the holder is not believed for it; a record of the holder itself names it
    /// as a fresh record would. (A record is filed in `connect()`, so a later connect on the
    /// tuple would have replaced it.) Where every connect files one, no record at all means
    /// it was evicted, and the holder is not believed either, unless conntrack picked the
    /// connection up `under_way` (it began before conntrack, and the helper, saw anything).
    pub(super) fn held_against_record(
        &mut self,
        t: &Tuple,
        under_way: bool,
        found: Attribution,
    ) -> Attribution {
        let Some(connects) = self.connects.as_mut() else {
            return found;
        };
        let at_connect = connects.tcp_at_connect();
        let r = connects.connector(t);
        let why = match self.note(r) {
            // The same process: as its record names it (so an exec since the connect, or a
            // write that opened the connection, shows).
            Some(Some(c)) if c.pid == found.process.pid => match self.processes.by_pid(&c) {
                Some(process) => {
                    let process = opened_by(process, c.by_write);
                    return Attribution { process, ..found };
                }
                None => HANDED,
            },
            Some(Some(_)) => HANDED,
            // Every connect files one: this one's was evicted (a flood of connects can do
            // that, in a namespace of its own, where none of it reaches the helper).
            // (Not one conntrack picked up under way: it began before anything was tracked.)
            Some(None) if at_connect && !under_way => EVICTED,
            _ => return found,
        };
        Attribution {
            process: found.process.unverified(why),
            ..found
        }
    }

    /// The process record `c` names for flow `t`, unless the record is too old for it.
    fn by_record(&mut self, t: &Tuple, c: Connector, read: Instant) -> Option<Attribution> {
        let by_write = c.by_write;
        if c.at_boot_ns < window_start(t, read) {
            return None;
        }
        let at_connect = self.connects.as_ref().is_some_and(|c| c.tcp_at_connect());
        let later = at_connect
            && t.proto == Proto::Tcp
            && c.at_boot_ns > read_boot_ns(read).saturating_add(RECORD_AFTER_READ_NS);
        let process = self
            .processes
            .by_pid(&c)
            .or_else(|| self.processes.exited(&c));
        let process = match process {
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
                ..Default::default()
            },
        };
        let process = opened_by(process, by_write);
        let process = if later {
            process.unverified(LATER)
        } else {
            process
        };
        Some(Attribution::new(process, AttributedBy::Connect))
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
    pub(super) fn udp_sender(
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
            Wait::Came(sender) => Some(*sender),
            Wait::Unreadable => Some(found),
            Wait::Never => (!recorded).then_some(found),
        }
    }

    /// An outbound UDP flow without a record (yet), where the kernel records every send: no
    /// holder may name it (see [`Self::udp_sender`]), so no socket's holders are looked for
    /// (with 10,000 sockets behind one process that search and the port's table dump cost
    /// 2.5 ms a flow). The kernel's exact lookups only say whether a sender may still be
    /// about to file its record: then it is waited for. A sender whose socket is gone has
    /// filed it: it is asked once more.
    pub(super) fn recorded_udp_sender(
        &mut self,
        sides: &crate::direction::Sides,
        read: Instant,
    ) -> Option<Attribution> {
        let t = sides.socket;
        if self.candidates(sides, false).is_empty() {
            return self.by_connect_record(&t, read);
        }
        match self.wait_for_record(&t, read) {
            Wait::Came(sender) => Some(*sender),
            Wait::Never => None,
            // As without records: the holders speak.
            Wait::Unreadable => self.by_socket(sides, read),
        }
    }

    /// A flow only a send record can name (ping, raw, SCTP), looked for until
    /// [`SEND_RECORD_WAIT`] after the flow was read.
    pub(super) fn sent_record(&mut self, t: &Tuple, read: Instant) -> Option<Attribution> {
        match self.wait_for_record(t, read) {
            Wait::Came(found) => Some(*found),
            Wait::Never | Wait::Unreadable => None,
        }
    }

    /// The record of a send that may still be on its way, looked for until
    /// [`SEND_RECORD_WAIT`] after the flow was read.
    fn wait_for_record(&mut self, t: &Tuple, read: Instant) -> Wait {
        let deadline = read + SEND_RECORD_WAIT;
        loop {
            let errors = self.errors;
            if let Some(found) = self.by_connect_record(t, read) {
                return Wait::Came(Box::new(found));
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
}
