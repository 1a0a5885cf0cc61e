//! UDP: the kernel's send records against the holders of the sending socket.

use super::*;

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
        let avahi = sock(Proto::Udp, 7, "0.0.0.0", 5353, "0.0.0.0", 0, 9);
        // The kernel's exact lookup finds a wildcard-bound socket too.
        s.exact.insert((Family::Ipv4, 5353), avahi.clone());
        s.all.push(avahi);
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
