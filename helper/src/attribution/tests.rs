//! The fallback chain over tables: sockets, holders and kernel records given by hand.

use std::collections::HashMap;
use std::time::Duration;

use super::records::{boot_ns, SEND_RECORD_WAIT};
use super::*;
use crate::direction::{classify, LocalAddrs};

#[derive(Default, Clone)]
struct FakeSockets {
    /// Answers of the kernel's exact lookup, by (family, local port).
    exact: HashMap<(Family, u16), SockEntry>,
    all: Vec<SockEntry>,
    fail: bool,
    dumps: usize,
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
        local_port: u16,
    ) -> io::Result<Vec<SockEntry>> {
        self.dumps += 1;
        Ok(self
            .all
            .iter()
            .filter(|e| e.family == family && e.proto == proto && e.sport == local_port)
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
    fn by_pid(&mut self, c: &Connector) -> Option<Process> {
        let (pid, comm) = (c.pid, c.comm.as_str());
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
    /// Every TCP connect files a record (the `sock_ops` program).
    tcp_at_connect: bool,
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
    fn tcp_at_connect(&self) -> bool {
        self.tcp_at_connect
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
        start_ns: 0,
        by_write: false,
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
/// Holders by inode, several a socket, and whether the search was complete.
struct SharedProcs(HashMap<u64, Vec<Process>>, bool);
impl Processes for SharedProcs {
    fn by_inode(&mut self, inode: u64, _uid: u32) -> Option<Process> {
        self.0.get(&inode)?.first().cloned()
    }
    fn holders(&mut self, inode: u64, _uid: u32) -> Held {
        Held {
            processes: self.0.get(&inode).cloned().unwrap_or_default(),
            more: 0,
            complete: self.1,
        }
    }
}

#[test]
fn every_holder_of_a_shared_socket_is_named_and_none_is_alone() {
    let mut s = FakeSockets::default();
    s.all
        .push(sock(Proto::Udp, 7, "0.0.0.0", 5000, "0.0.0.0", 0, 9));
    let holders = vec![proc_(7, "ssh"), proc_(66, "python3")];
    let procs = SharedProcs(HashMap::from([(9, holders)]), true);
    let mut a = SocketAttributor::new(s, procs);
    let flow = |dport| sides(Proto::Udp, "10.0.0.1", 5000, "9.9.9.9", dport);
    let read = Instant::now();
    let got = a.attribute_read_at(&flow(1), read).expect("found");
    assert_eq!(got.process.pid, 7);
    assert_eq!(got.holders.others, vec![proc_(66, "python3")]);
    assert!(!got.alone());
    // The bound-socket cache keeps them too.
    let again = a.attribute_read_at(&flow(2), read).expect("cached");
    assert_eq!(again.holders, got.holders);
}

#[test]
fn holders_past_the_listed_ones_are_counted() {
    let mut s = FakeSockets::default();
    s.exact.insert(
        (Family::Ipv4, 40000),
        sock(Proto::Tcp, 1, "10.0.0.1", 40000, "9.9.9.9", 443, 5),
    );
    let pool: Vec<Process> = (100..120).map(|pid| proc_(pid, "worker")).collect();
    let mut a = SocketAttributor::new(s, SharedProcs(HashMap::from([(5, pool)]), true));
    let got = a
        .attribute(&sides(Proto::Tcp, "10.0.0.1", 40000, "9.9.9.9", 443))
        .expect("found");
    assert_eq!(got.holders.others.len(), HOLDERS_LISTED);
    assert_eq!(got.holders.more, 19 - HOLDERS_LISTED as u32);
}

#[test]
fn the_readers_attribution_is_completed_with_the_others() {
    let early = Attribution {
        process: proc_(7, "ssh"),
        by: AttributedBy::Socket,
        holders: Holders {
            complete: false,
            inode: 9,
            uid: 1000,
            ..Holders::decided()
        },
    };
    // The reader's holder has exited since; another still holds the socket.
    let procs = SharedProcs(HashMap::from([(9, vec![proc_(66, "python3")])]), true);
    let mut a = SocketAttributor::new(FakeSockets::default(), procs);
    let done = a.complete(early.clone());
    assert_eq!(done.process.pid, 7);
    assert_eq!(done.holders.others, vec![proc_(66, "python3")]);
    assert!(done.holders.complete && !done.alone());
    // Nobody else: alone, once every process was looked at.
    a.processes.0.clear();
    assert!(a.complete(early.clone()).alone());
    // One the reader saw, gone since, is still named.
    let seen = Attribution {
        holders: Holders {
            others: vec![proc_(70, "gone")],
            ..early.holders.clone()
        },
        ..early.clone()
    };
    assert_eq!(a.complete(seen).holders.others, vec![proc_(70, "gone")]);
    // A search cut short proves nothing.
    a.processes.1 = false;
    assert!(!a.complete(early).alone());
    // A kernel record needs no search.
    let decided = Attribution::new(proc_(7, "curl"), AttributedBy::Connect);
    assert!(a.complete(decided).alone());
}

#[test]
fn the_table_dump_is_asked_only_when_the_exact_lookup_names_no_connected_socket() {
    let mut s = FakeSockets::default();
    s.exact.insert(
        (Family::Ipv4, 4999),
        sock(Proto::Udp, 1, "10.0.0.1", 4999, "9.9.9.9", 53, 8),
    );
    s.exact.insert(
        (Family::Ipv4, 5000),
        sock(Proto::Udp, 7, "0.0.0.0", 5000, "0.0.0.0", 0, 9),
    );
    s.all
        .push(sock(Proto::Udp, 7, "0.0.0.0", 5000, "0.0.0.0", 0, 9));
    s.all
        .push(sock(Proto::Udp, 7, "0.0.0.0", 5001, "0.0.0.0", 0, 10));
    let procs = [
        (8, proc_(6, "curl")),
        (9, proc_(7, "dig")),
        (10, proc_(8, "avahi")),
    ];
    let mut a = attributor(s, &procs);
    let got = a.attribute(&sides(Proto::Udp, "10.0.0.1", 4999, "9.9.9.9", 53));
    assert_eq!(got.map(|g| g.process.pid), Some(6));
    assert_eq!(a.sockets.dumps, 0, "a connected socket is the flow's own");
    // A bound socket may share its port (SO_REUSEADDR): the port's dump shows them all.
    let got = a.attribute(&sides(Proto::Udp, "10.0.0.1", 5000, "9.9.9.9", 53));
    assert_eq!(got.map(|g| g.process.pid), Some(7));
    assert_eq!(a.sockets.dumps, 2, "both families, filtered by port");
    let got = a.attribute(&sides(Proto::Udp, "10.0.0.1", 5001, "9.9.9.9", 53));
    assert_eq!(got.map(|g| g.process.pid), Some(8));
    assert_eq!(a.sockets.dumps, 4);
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

/// The UDP send records against the socket holders.
#[path = "tests_udp.rs"]
mod udp;

/// TCP: the kernel's connect records against the socket lookups.
#[path = "tests_records.rs"]
mod tcp_records;
