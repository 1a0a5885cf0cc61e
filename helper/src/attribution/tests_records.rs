//! TCP: the kernel's connect records against the socket lookups and the holders.

use super::*;

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
    let mut a = with_records(s.clone(), &procs, &records, false);
    let held = a.attribute(&out).unwrap();
    assert_eq!((held.by, held.process.pid), (AttributedBy::Socket, 5));
    // The record names another process: the holder may have been handed the socket while it
    // connected (read late, the record is out of the window), and is not believed.
    assert!(!held.process.exe_verified, "{held:?}");
    assert_eq!(
        held.process.exe_unverified.as_deref(),
        Some(crate::attribution::records::HANDED)
    );
    // A late record of the holder itself says nothing against it.
    let own = [(&out, connector(5, "wget", 1500))];
    let held = with_records(s.clone(), &procs, &own, false)
        .attribute(&out)
        .unwrap();
    assert_eq!((held.by, held.process.pid), (AttributedBy::Socket, 5));
    assert_eq!(held.process.exe_unverified, None, "{held:?}");
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
    // Both looks at the record failed: for the flow, and to hold the holder against it.
    assert_eq!(a.errors(), 2);
}

#[test]
fn a_holder_read_late_is_held_to_its_own_record_and_an_evicted_one() {
    let out = sides(Proto::Tcp, "10.0.0.1", 40004, "10.0.0.9", 443);
    let mut s = FakeSockets::default();
    s.exact.insert(
        (Family::Ipv4, 40004),
        sock(Proto::Tcp, 1, "10.0.0.1", 40004, "10.0.0.9", 443, 11),
    );
    let mut wget = proc_(5, "wget");
    wget.exe_verified = true;
    let procs = [(11, wget)];
    // Its own record, out of the window, of a connect a write made: still not believed.
    let by_write = Connector {
        by_write: true,
        ..connector(5, "wget", 1500)
    };
    let held = with_records(s.clone(), &procs, &[(&out, by_write)], false)
        .attribute(&out)
        .unwrap();
    assert_eq!(held.process.pid, 5);
    assert!(!held.process.exe_verified, "{held:?}");
    assert_eq!(
        held.process.exe_unverified.as_deref(),
        Some(crate::attribution::records::BY_WRITE)
    );
    // No record at all: where every connect files one, it was evicted; elsewhere (the
    // tracepoint files only once the handshake is over) the holder speaks.
    let none = |tcp_at_connect| {
        let c = FakeConnects {
            tcp_at_connect,
            ..Default::default()
        };
        attributor(s.clone(), &procs)
            .with_connects(Box::new(c))
            .attribute(&out)
            .unwrap()
    };
    let held = none(true);
    assert!(!held.process.exe_verified, "{held:?}");
    assert_eq!(
        held.process.exe_unverified.as_deref(),
        Some(crate::attribution::records::EVICTED)
    );
    assert!(none(false).process.exe_verified);
    // Nor one conntrack picked up under way: it began before anything was tracked.
    let c = FakeConnects {
        tcp_at_connect: true,
        ..Default::default()
    };
    let under_way = Sides {
        under_way: true,
        ..out
    };
    let held = attributor(s.clone(), &procs)
        .with_connects(Box::new(c))
        .attribute(&under_way)
        .unwrap();
    assert!(held.process.exe_verified, "{held:?}");
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

#[test]
fn a_record_filed_after_the_flow_was_read_is_a_later_connection_s() {
    let flow = sides(Proto::Tcp, "10.0.0.1", 40005, "10.0.0.9", 443);
    let mut curl = proc_(8, "curl");
    curl.exe_verified = true;
    let procs = [(12, curl)];
    // The flow was read half a second ago; curl connected on the same tuple just now.
    let read = Instant::now() - std::time::Duration::from_millis(500);
    let attribute = |tcp_at_connect| {
        let c = FakeConnects {
            records: [(flow.socket, connector(8, "curl", 0))].into(),
            tcp_at_connect,
            ..Default::default()
        };
        attributor(FakeSockets::default(), &procs)
            .with_connects(Box::new(c))
            .attribute_read_at(&flow, read)
            .unwrap()
    };
    let got = attribute(true);
    assert_eq!((got.by, got.process.pid), (AttributedBy::Connect, 8));
    assert!(!got.process.exe_verified, "{got:?}");
    assert_eq!(
        got.process.exe_unverified.as_deref(),
        Some(crate::attribution::records::LATER)
    );
    // The tracepoint files a record when the handshake is over, after the event: no bound.
    assert!(attribute(false).process.exe_verified);
    // A record from before the read is the flow's own.
    let c = FakeConnects {
        records: [(flow.socket, connector(8, "curl", 0))].into(),
        tcp_at_connect: true,
        ..Default::default()
    };
    let got = attributor(FakeSockets::default(), &procs)
        .with_connects(Box::new(c))
        .attribute(&flow)
        .unwrap();
    assert!(got.process.exe_verified, "{got:?}");
}
