//! The DNS packets this machine sends and receives, from a packet socket on a thread of its
//! own.
//!
//! A classic BPF filter in the kernel passes only UDP and TCP to or from port 53 (IPv4
//! unfragmented, IPv6 with no extension header), so the helper never sees other traffic.
//! The thread reads each packet with its type: a query counts only as it leaves (the kernel
//! says `PACKET_OUTGOING`), and its asking process is looked up at once, while its socket
//! waits for the answer; an answer counts only when it was delivered to this host
//! (`PACKET_HOST`: not broadcast, multicast or another host's). Both go into the shared
//! [`NameTable`], which decides what to believe.
//!
//! The pipeline must not name a flow before the answers that came before it are in the
//! table. The kernel queues a packet for this socket before it delivers it to the program's
//! socket, so by the time a program connects, its answer is queued here; [`Shared::catch_up`]
//! waits (at most [`CATCH_UP`]) until the thread is idle with nothing queued. A flood that
//! keeps the thread busy cannot slow the pipeline down for longer than that: after one wait
//! runs out, flows are named without waiting until the thread catches up again. Packets the
//! kernel drops for a full buffer are counted (`PACKET_STATISTICS`) and reported.

use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crossbeam_channel::{bounded, Receiver, Sender};
use rustix::net::{AddressFamily, Protocol, SocketFlags, SocketType};

use super::dns::{self, Segment};
use super::table::{NameTable, QueryKey};
use super::ResolvConfs;
use crate::direction::Sides;
use crate::flow::{Direction, Proto, Tuple};

/// ETH_P_ALL, every protocol.
const ETH_P_ALL: u16 = 0x0003;
/// SKF_AD_OFF + SKF_AD_PROTOCOL: the packet's ethertype, for sockets without a link header.
const AD_PROTOCOL: u32 = 0xffff_f000;
/// `sll_pkttype` of a packet addressed to this host, and of one this host sends.
const PACKET_HOST: u8 = 0;
const PACKET_OUTGOING: u8 = 4;
/// The longest the pipeline waits for the capture to take in what came before a flow (a
/// query's process lookup can take a few milliseconds while the answer waits behind it).
pub const CATCH_UP: Duration = Duration::from_millis(50);
/// Packets read per wakeup before the table is unlocked for the pipeline.
const BATCH: usize = 256;
/// The socket's receive buffer (SO_RCVBUFFORCE): room for a burst of answers.
const RCVBUF: usize = 4 << 20;

/// `(udp or tcp) and (src port 53 or dst port 53)`, for IPv4 and IPv6, on a SOCK_DGRAM
/// packet socket (data starts at the IP header). UDP and TCP keep their ports in the same
/// place. Jumps are relative to the next instruction.
const FILTER: [libc::sock_filter; 22] = [
    ins(0x28, 0, 0, AD_PROTOCOL), // 0: A = ethertype
    ins(0x15, 0, 10, 0x0800),     // 1: IPv4? else 12
    ins(0x30, 0, 0, 9),           // 2: A = ip protocol
    ins(0x15, 1, 0, 17),          // 3: UDP? to 5
    ins(0x15, 0, 16, 6),          // 4: TCP? else drop
    ins(0x28, 0, 0, 6),           // 5: A = flags + fragment offset
    ins(0x45, 14, 0, 0x1fff),     // 6: a fragment? drop
    ins(0xb1, 0, 0, 0),           // 7: X = IP header length
    ins(0x48, 0, 0, 0),           // 8: A = source port
    ins(0x15, 10, 0, 53),         // 9: 53? accept
    ins(0x48, 0, 0, 2),           // 10: A = destination port
    ins(0x15, 8, 9, 53),          // 11: 53? accept : drop
    ins(0x15, 0, 8, 0x86dd),      // 12: IPv6? else drop
    ins(0x30, 0, 0, 6),           // 13: A = next header
    ins(0x15, 1, 0, 17),          // 14: UDP? to 16
    ins(0x15, 0, 5, 6),           // 15: TCP? else drop
    ins(0x28, 0, 0, 40),          // 16: A = source port
    ins(0x15, 2, 0, 53),          // 17: 53? accept
    ins(0x28, 0, 0, 42),          // 18: A = destination port
    ins(0x15, 0, 1, 53),          // 19: 53? accept : drop
    ins(0x06, 0, 0, 0xffff),      // 20: accept
    ins(0x06, 0, 0, 0),           // 21: drop
];

const fn ins(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

/// Finds the process that holds a query's socket (the helper's own attribution chain).
pub type Asker = Box<dyn FnMut(&Sides) -> Option<u32> + Send>;

/// What the capture thread and the pipeline share.
pub struct Shared {
    state: Mutex<State>,
    cv: Condvar,
    /// The packet socket, for the pipeline to see whether anything is still queued.
    fd: Option<Arc<OwnedFd>>,
    /// Which servers are the system's resolvers: taken in by whoever reads answers, before
    /// judging them (locked before `state` when both are).
    resolv_confs: Mutex<ResolvConfs>,
    /// Rung (a channel of one message) when there is trouble to tell, drops or a stop: the
    /// main loop waits on it instead of looking now and then.
    bell: (Sender<()>, Receiver<()>),
}

struct State {
    table: NameTable,
    /// The thread holds packets it has read but not yet put in the table.
    busy: bool,
    /// The last wait ran out: do not wait again until the thread has emptied the queue.
    lagging: bool,
    /// When the thread was last seen idle with nothing queued: every packet that reached the
    /// socket before then is in the table.
    caught: Option<Instant>,
    /// Packets the kernel dropped for this socket, not yet reported.
    dropped: u64,
    /// The thread stopped (its socket failed); names come no more.
    stopped: Option<String>,
}

impl Shared {
    /// A table with no capture behind it (tests, or when the capture could not be opened).
    pub fn without_capture() -> Arc<Shared> {
        Arc::new(Shared::new(None))
    }

    fn new(fd: Option<Arc<OwnedFd>>) -> Shared {
        Shared {
            state: Mutex::new(State {
                table: NameTable::default(),
                busy: false,
                lagging: false,
                caught: None,
                dropped: 0,
                stopped: None,
            }),
            cv: Condvar::new(),
            fd,
            resolv_confs: Mutex::new(ResolvConfs::default()),
            bell: bounded(1),
        }
    }

    /// Receives a message when there is trouble to take in with [`Shared::take_trouble`]
    /// (one message for any number of troubles since the last).
    pub fn bell(&self) -> Receiver<()> {
        self.bell.1.clone()
    }

    /// Counts `dropped` packets and, if given, why the capture stopped; rings the bell.
    pub(crate) fn trouble(&self, dropped: u64, stopped: Option<String>) {
        {
            let mut s = self.lock();
            s.dropped += dropped;
            if stopped.is_some() {
                s.stopped = stopped;
            }
        }
        // Full: a message is waiting already, and it tells of this trouble too.
        let _ = self.bell.0.try_send(());
    }

    /// Judges answers by the resolvers `files` list, read now and again whenever they change.
    pub fn set_resolv_confs(&self, files: ResolvConfs) {
        *self.resolv_confs.lock().unwrap_or_else(|e| e.into_inner()) = files;
        self.refresh_resolvers();
    }

    /// Re-reads the resolver files when one changed (by its modification time). The lock on
    /// the files is held until the table has the servers, so that of two threads refreshing
    /// at once, the older reading cannot land last.
    pub fn refresh_resolvers(&self) {
        let mut files = self.resolv_confs.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(servers) = files.changed() {
            self.lock().table.set_system_resolvers(servers);
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves a table that is still consistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The table, for lookups (and for tests that feed it by hand).
    pub fn with_table<T>(&self, f: impl FnOnce(&mut NameTable) -> T) -> T {
        f(&mut self.lock().table)
    }

    fn queued(&self) -> bool {
        self.fd
            .as_ref()
            .is_some_and(|fd| rustix::io::ioctl_fionread(fd.as_fd()).is_ok_and(|n| n > 0))
    }

    /// Waits until every packet that reached the socket before `since` is in the table, at
    /// most [`CATCH_UP`] (and not at all while the thread is behind since the last wait ran
    /// out). A flow's answer came before its event was read, so `since` is that moment: the
    /// flows of a burst, all read before the table was last seen caught up, cost no look at
    /// the socket each (a system call per flow).
    pub fn catch_up(&self, since: Instant) {
        if self.fd.is_none() {
            return;
        }
        let deadline = Instant::now() + CATCH_UP;
        let mut s = self.lock();
        if s.caught.is_some_and(|t| t >= since) {
            return;
        }
        loop {
            let now = Instant::now();
            if s.stopped.is_some() || (!s.busy && !self.queued()) {
                s.lagging = false;
                s.caught = Some(now);
                return;
            }
            if s.lagging {
                return;
            }
            let Some(left) = deadline.checked_duration_since(Instant::now()) else {
                s.lagging = true;
                return;
            };
            s = match self.cv.wait_timeout(s, left) {
                Ok((g, _)) => g,
                Err(e) => e.into_inner().0,
            };
        }
    }

    /// Drops the kernel counted since the last call, and why the capture stopped if it did.
    pub fn take_trouble(&self) -> (u64, Option<String>) {
        let mut s = self.lock();
        (std::mem::take(&mut s.dropped), s.stopped.take())
    }
}

/// The open packet socket, before its thread starts.
pub struct DnsCapture {
    fd: Arc<OwnedFd>,
}

impl DnsCapture {
    /// Opens the capture (needs CAP_NET_RAW, so before the helper drops its capabilities).
    pub fn open() -> io::Result<DnsCapture> {
        let fd = rustix::net::socket_with(
            AddressFamily::PACKET,
            SocketType::DGRAM,
            SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            std::num::NonZeroU32::new(u32::from(ETH_P_ALL.to_be())).map(Protocol::from_raw),
        )?;
        attach_filter(&fd)?;
        // Best effort: the default buffer holds a few hundred packets.
        let _ = rustix::net::sockopt::set_socket_recv_buffer_size_force(&fd, RCVBUF);
        // Counters start now.
        let _ = packet_drops(&fd);
        Ok(DnsCapture { fd: Arc::new(fd) })
    }

    /// Starts the thread that fills the table; `asker` names the process behind a query.
    pub fn spawn(self, asker: Asker) -> io::Result<Arc<Shared>> {
        let shared = Arc::new(Shared::new(Some(self.fd.clone())));
        let s = shared.clone();
        std::thread::Builder::new()
            .name("dns-capture".into())
            .spawn(move || run(&self.fd, &s, asker))?;
        Ok(shared)
    }
}

/// What one captured packet is to the table.
enum Seen {
    Query(QueryKey, Sides),
    Answer(QueryKey, dns::Message),
}

/// Reads what a packet of kind `pkttype` says: a query leaving, or an answer arriving.
fn classify(pkttype: u8, seg: &Segment<'_>) -> Option<Seen> {
    let msg = dns::parse(seg.msg)?;
    let proto = if seg.proto == 6 {
        Proto::Tcp
    } else {
        Proto::Udp
    };
    if !msg.response && pkttype == PACKET_OUTGOING && seg.dst.port() == 53 {
        let key = QueryKey {
            proto: seg.proto,
            client: seg.src,
            server: seg.dst,
            id: msg.id,
            question: msg.question,
        };
        let sides = query_sides(proto, seg.src, seg.dst);
        Some(Seen::Query(key, sides))
    } else if msg.response && pkttype == PACKET_HOST && seg.src.port() == 53 {
        let key = QueryKey {
            proto: seg.proto,
            client: seg.dst,
            server: seg.src,
            id: msg.id,
            question: msg.question.clone(),
        };
        Some(Seen::Answer(key, msg))
    } else {
        None
    }
}

/// A query seen as an outbound flow, for the attribution chain.
fn query_sides(proto: Proto, client: SocketAddr, server: SocketAddr) -> Sides {
    Sides {
        direction: Direction::Outbound,
        socket: Tuple {
            proto,
            src: client.ip(),
            dst: server.ip(),
            sport: client.port(),
            dport: server.port(),
            icmp: None,
        },
        local_ip: client.ip(),
        local_port: client.port(),
        remote_ip: server.ip(),
        remote_port: server.port(),
        under_way: false,
    }
}

fn run(fd: &OwnedFd, shared: &Shared, mut asker: Asker) {
    let mut buf = vec![0u8; 65536];
    loop {
        let mut pfd = [rustix::event::PollFd::new(fd, rustix::event::PollFlags::IN)];
        match rustix::event::poll(&mut pfd, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => {
                shared.trouble(0, Some(format!("the DNS capture stopped: {e}")));
                shared.cv.notify_all();
                return;
            }
        }
        shared.lock().busy = true;
        let mut emptied = false;
        // Whether this batch's answers are judged by the resolvers listed now: the files are
        // looked at before the first answer, so a changed resolver counts from the next answer
        // on, and an idle helper does not look at them at all.
        let mut fresh = false;
        for _ in 0..BATCH {
            let (len, addr) = match nix::sys::socket::recvfrom::<nix::sys::socket::LinkAddr>(
                fd.as_raw_fd(),
                &mut buf,
            ) {
                Ok(r) => r,
                Err(_) => {
                    emptied = true;
                    break;
                }
            };
            let pkttype = addr.map(|a| a.pkttype()).unwrap_or(u8::MAX);
            let Some(seg) = buf.get(..len).and_then(dns::segment) else {
                continue;
            };
            match classify(pkttype, &seg) {
                Some(Seen::Query(key, sides)) => {
                    // The slow part (socket and /proc lookups) runs without the lock.
                    let pid = asker(&sides);
                    shared.lock().table.query(key, pid, Instant::now());
                }
                Some(Seen::Answer(key, msg)) => {
                    if !std::mem::replace(&mut fresh, true) {
                        shared.refresh_resolvers();
                    }
                    shared.lock().table.answer(&key, &msg, Instant::now());
                }
                None => {}
            }
        }
        let drops = packet_drops(fd).unwrap_or(0);
        let mut s = shared.lock();
        s.busy = false;
        // Caught up: a flood no longer keeps it behind, so flows may wait for it again.
        if emptied {
            s.lagging = false;
        }
        drop(s);
        shared.cv.notify_all();
        if drops > 0 {
            shared.trouble(drops, None);
        }
    }
}

/// Packets the kernel dropped for this socket since the last call (reading resets them).
#[allow(unsafe_code)]
fn packet_drops(fd: &OwnedFd) -> io::Result<u64> {
    let mut stats = libc::tpacket_stats {
        tp_packets: 0,
        tp_drops: 0,
    };
    let mut len = std::mem::size_of::<libc::tpacket_stats>() as libc::socklen_t;
    // SAFETY: `stats` and `len` are valid for writes of the sizes given, and the kernel
    // writes at most `len` bytes into `stats`.
    let rc = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_PACKET,
            libc::PACKET_STATISTICS,
            std::ptr::addr_of_mut!(stats).cast(),
            &mut len,
        )
    };
    if rc == 0 {
        Ok(u64::from(stats.tp_drops))
    } else {
        Err(io::Error::last_os_error())
    }
}

#[allow(unsafe_code)]
fn attach_filter(fd: &OwnedFd) -> io::Result<()> {
    let prog = libc::sock_fprog {
        len: FILTER.len() as u16,
        filter: FILTER.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points at a static, valid filter of `len` instructions; the kernel copies
    // it during the call and keeps no pointer to it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            std::ptr::addr_of!(prog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_jump_of_the_filter_lands_inside_it_and_it_ends_in_accept_then_drop() {
        for (i, f) in FILTER.iter().enumerate() {
            if f.code & 0x07 == 0x05 {
                assert!(i + 1 + usize::from(f.jt) < FILTER.len(), "jt of {i}");
                assert!(i + 1 + usize::from(f.jf) < FILTER.len(), "jf of {i}");
            }
        }
        assert_eq!((FILTER[20].code, FILTER[20].k), (0x06, 0xffff));
        assert_eq!((FILTER[21].code, FILTER[21].k), (0x06, 0));
        // Every "53?" test accepts at 20; every other exit drops at 21.
        for (i, f) in FILTER.iter().enumerate() {
            if f.code == 0x15 && f.k == 53 {
                assert_eq!(i + 1 + usize::from(f.jt), 20, "{i}");
            }
        }
    }

    fn query_bytes(id: u16, response: bool) -> Vec<u8> {
        let mut p = if response {
            simple_dns::Packet::new_reply(id)
        } else {
            simple_dns::Packet::new_query(id)
        };
        p.questions.push(simple_dns::Question::new(
            simple_dns::Name::new_unchecked("q.test"),
            simple_dns::QTYPE::TYPE(simple_dns::TYPE::A),
            simple_dns::QCLASS::CLASS(simple_dns::CLASS::IN),
            false,
        ));
        p.build_bytes_vec().expect("build")
    }

    fn seg<'a>(src: &str, dst: &str, msg: &'a [u8]) -> Segment<'a> {
        Segment {
            proto: 17,
            src: src.parse().expect("addr"),
            dst: dst.parse().expect("addr"),
            msg,
        }
    }

    #[test]
    fn queries_count_as_they_leave_and_answers_as_they_arrive_for_this_host() {
        let q = query_bytes(5, false);
        let a = query_bytes(5, true);
        let out = seg("10.0.0.1:40000", "10.0.0.53:53", &q);
        assert!(matches!(
            classify(PACKET_OUTGOING, &out),
            Some(Seen::Query(..))
        ));
        // The same query arriving (another host's, or the loopback copy) is not ours.
        assert!(classify(PACKET_HOST, &out).is_none());
        let back = seg("10.0.0.53:53", "10.0.0.1:40000", &a);
        match classify(PACKET_HOST, &back) {
            Some(Seen::Answer(key, _)) => {
                assert_eq!(key.client, "10.0.0.1:40000".parse().expect("addr"));
                assert_eq!(key.server, "10.0.0.53:53".parse().expect("addr"));
                assert_eq!(key.id, 5);
            }
            _ => panic!("an answer"),
        }
        // Broadcast (1), multicast (2), another host's (3) and our own outgoing answers (a
        // DNS server here) teach nothing.
        for kind in [1, 2, 3, PACKET_OUTGOING] {
            assert!(classify(kind, &back).is_none(), "{kind}");
        }
        // An answer from a port other than 53, a query to one: nothing.
        assert!(classify(PACKET_HOST, &seg("10.0.0.53:5353", "10.0.0.1:53", &a)).is_none());
    }

    #[test]
    fn without_a_capture_nothing_waits() {
        let s = Shared::without_capture();
        let t0 = Instant::now();
        s.catch_up(t0);
        assert!(t0.elapsed() < CATCH_UP);
        assert_eq!(s.take_trouble(), (0, None));
    }

    #[test]
    fn flows_read_before_the_table_was_last_caught_up_do_not_look_again() {
        let (ours, peer) = std::os::unix::net::UnixDatagram::pair().expect("pair");
        let s = Shared::new(Some(Arc::new(OwnedFd::from(ours))));
        let read = Instant::now();
        // Nothing queued: caught up at once.
        s.catch_up(read);
        // A packet comes, and the thread does not take it in.
        peer.send(b"x").expect("send");
        let t0 = Instant::now();
        // A flow read before the table was caught up: nothing to wait for.
        s.catch_up(read);
        assert!(t0.elapsed() < CATCH_UP, "{:?}", t0.elapsed());
        // A flow read after the packet came waits for it, until the wait runs out.
        s.catch_up(Instant::now());
        assert!(t0.elapsed() >= CATCH_UP, "{:?}", t0.elapsed());
        assert!(s.lock().lagging);
    }
}
