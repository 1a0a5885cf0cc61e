use super::*;
use crate::flow::fixtures;

/// The tracepoint program loaded and attached, filing into a ring of its own: the ring, and
/// what keeps the program attached (its pending map and its fds). None, after saying so, when
/// not root; CI runs these tests as root.
fn tracepoint_ring() -> Option<(RingRecords, (OwnedFd, [OwnedFd; 2]))> {
    if !nix::unistd::Uid::effective().is_root() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI runs this test as root"
        );
        eprintln!("skipped: needs root");
        return None;
    }
    let btf = kernel_btf().expect("the kernel's BTF");
    let offsets = Offsets::from_btf(&btf).expect("offsets");
    let task = TaskOffsets::from_btf(&btf).expect("task offsets");
    let records = RingRecords::create(crate::attribution::ring_records::TCP).expect("the ring");
    let pending =
        sys::map_create(PENDING_KEY_LEN, VALUE_LEN, 64, b"ctt_test_pend").expect("the pending map");
    let fds = load_and_attach(
        program(&offsets, &task, pending.as_raw_fd(), records.fds()),
        TRACEPOINT,
    )
    .expect("the kernel takes the tracepoint program");
    Some((records, (pending, fds)))
}

/// The tracepoint program, which files TCP records where the kernel refuses the
/// `sock_ops` one, is taken by the kernel and files a connect into the ring, found by its
/// key with the connecting process. The kernel tests only ever see the `sock_ops`
/// program (this kernel takes it). On loopback, in the test's own namespace; root only,
/// and never skipped in CI.
#[test]
fn the_tracepoint_program_files_a_connect_into_the_ring() {
    let Some((records, _loaded)) = tracepoint_ring() else {
        return;
    };
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let to = listener.local_addr().expect("its port");
    let conn = std::net::TcpStream::connect(to).expect("connect");
    let from = conn.local_addr().expect("the local port");
    let t = fixtures::flow(Proto::Tcp, "127.0.0.1", from.port(), "127.0.0.1", to.port()).orig;
    let netns = crate::attribution::netns::own_netns().expect("the namespace");
    let value = records.find(&key(netns, &t)).expect("the connect's record");
    let c = connector(&value);
    assert_eq!(c.pid, std::process::id());
    assert_eq!(c.uid, 0);
    // The accepting end's state changes file nothing under the other tuple.
    let back = fixtures::flow(Proto::Tcp, "127.0.0.1", to.port(), "127.0.0.1", from.port()).orig;
    assert!(records.find(&key(netns, &back)).is_none());
}

/// A tuple's earlier connect stays in the index; when the ring is too full to take the
/// tuple's next one, the earlier record must not stand for it. Refused records are
/// counted, and what was filed before the latest counts as no record. Root only, never
/// skipped in CI.
#[test]
fn a_record_the_full_ring_refused_leaves_no_older_one_standing_for_it() {
    use nix::sys::socket::{setsockopt, sockopt};
    let ring_bytes = crate::attribution::ring_records::TCP.ring_bytes;
    let Some((records, _loaded)) = tracepoint_ring() else {
        return;
    };
    let netns = crate::attribution::netns::own_netns().expect("the namespace");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let to = listener.local_addr().expect("its port");
    // The first connection, ended with a reset so that its tuple is free at once.
    let first = std::net::TcpStream::connect(to).expect("connect");
    let from = first.local_addr().expect("the local port");
    setsockopt(
        &first,
        sockopt::Linger,
        &libc::linger {
            l_onoff: 1,
            l_linger: 0,
        },
    )
    .expect("SO_LINGER");
    let (accepted, _) = listener.accept().expect("accept");
    drop(first);
    drop(accepted);
    let t = fixtures::flow(Proto::Tcp, "127.0.0.1", from.port(), "127.0.0.1", to.port()).orig;
    let k = key(netns, &t);
    assert!(records.find(&k).is_some(), "the first connect's record");
    assert_eq!(records.refusals(), Some(0), "nothing refused yet");

    // Connects refused at once, more than the ring holds, with nobody draining it.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
    let closed_at = closed.local_addr().expect("its port");
    drop(closed);
    for _ in 0..2 * ring_bytes / 104 {
        let _ = std::net::TcpStream::connect(closed_at);
    }
    let refused = records.refusals().expect("the refusal count");
    assert!(
        refused > 0,
        "the full ring refused records and counted them"
    );
    // The tuple connected again while the ring was full: its record was refused.
    let again = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Stream,
        nix::sys::socket::SockFlag::empty(),
        None,
    )
    .expect("a socket");
    setsockopt(&again, sockopt::ReuseAddr, &true).expect("SO_REUSEADDR");
    let addr = |a: std::net::SocketAddr| match a {
        std::net::SocketAddr::V4(v4) => nix::sys::socket::SockaddrIn::from(v4),
        std::net::SocketAddr::V6(_) => unreachable!("bound to 127.0.0.1"),
    };
    nix::sys::socket::bind(again.as_raw_fd(), &addr(from)).expect("the same port");
    nix::sys::socket::connect(again.as_raw_fd(), &addr(to)).expect("the same tuple");
    assert!(
        records.refusals().expect("the refusal count") > refused,
        "the reconnect's record was refused too"
    );
    assert_eq!(
        records.find(&k),
        None,
        "the first connect's record, filed before the refusal, stands for the second"
    );
    // Drained now: a connect after the refusal is filed and found.
    let later = std::net::TcpStream::connect(to).expect("connect");
    let later_from = later.local_addr().expect("the local port");
    let lt = fixtures::flow(
        Proto::Tcp,
        "127.0.0.1",
        later_from.port(),
        "127.0.0.1",
        to.port(),
    );
    let found = records
        .find(&key(netns, &lt.orig))
        .expect("a record after the refusal");
    assert_eq!(connector(&found).pid, std::process::id());
}
