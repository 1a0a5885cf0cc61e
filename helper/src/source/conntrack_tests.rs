use super::*;

// Bytes captured from kernel 6.18 with `helper/examples/capture.rs`, run in a namespace
// 10.77.0.1/fd77::1 with a veth peer 10.77.0.2/fd77::2, while these ran there:
// `curl http://10.77.0.2:8080/`, `echo x > /dev/udp/fd77::2/5353`, `ping -c1 10.77.0.2`,
// `ping -6 -c1 fd77::2`, a raw SCTP INIT to 10.77.0.2:9999, and `conntrack -D --dport 8080`.
const TCP4_NEW: &[u8] = include_bytes!("../../tests/data/tcp4_new.bin");
const UDP6_NEW: &[u8] = include_bytes!("../../tests/data/udp6_new.bin");
const ICMP4_NEW: &[u8] = include_bytes!("../../tests/data/icmp4_new.bin");
const ICMP6_NEW: &[u8] = include_bytes!("../../tests/data/icmp6_new.bin");
const SCTP4_NEW: &[u8] = include_bytes!("../../tests/data/sctp4_new.bin");
const TCP4_DESTROY: &[u8] = include_bytes!("../../tests/data/tcp4_destroy.bin");

fn one_flow(bytes: &[u8]) -> Flow {
    let msgs = parse_datagram(bytes);
    assert_eq!(msgs.len(), 1, "{msgs:?}");
    match msgs.into_iter().next() {
        Some(Ok(Message::Flow(f))) => f,
        other => panic!("expected a flow, got {other:?}"),
    }
}

#[test]
fn parses_a_captured_tcp4_new_event() {
    let f = one_flow(TCP4_NEW);
    assert_eq!(f.event, FlowEvent::New);
    assert_eq!(f.orig.proto, Proto::Tcp);
    assert_eq!(f.orig.src.to_string(), "10.77.0.1");
    assert_eq!(f.orig.dst.to_string(), "10.77.0.2");
    assert_eq!(f.orig.dport, 8080);
    assert_ne!(f.orig.sport, 0);
    let r = f.reply.expect("reply tuple");
    assert_eq!((r.src, r.dst), (f.orig.dst, f.orig.src));
    assert_eq!((r.sport, r.dport), (f.orig.dport, f.orig.sport));
    assert_eq!(f.id, Some(1279655717));
    // The kernel leaves CTA_MARK out of events when the mark is 0.
    assert_eq!(f.mark, None);
    // Seen from its SYN.
    assert_eq!(f.tcp_state, Some(crate::flow::CT_TCP_SYN_SENT));
    assert_eq!(one_flow(UDP6_NEW).tcp_state, None);
}

#[test]
fn a_tcp_state_is_read_from_its_nested_protoinfo() {
    // CTA_PROTOINFO_TCP (nested) holding CTA_PROTOINFO_TCP_STATE = 3 (ESTABLISHED: a
    // connection picked up under way) and, before it, another attribute.
    let state = [5, 0, 1, 0, 3, 0, 0, 0];
    let flags = [6, 0, 4, 0, 0, 0, 0, 0];
    let mut tcp = vec![20, 0, 1, 0x80];
    tcp.extend_from_slice(&flags);
    tcp.extend_from_slice(&state);
    assert_eq!(parse_tcp_state(&tcp).unwrap(), Some(3));
    // Another protocol's protoinfo (DCCP is 2), or none.
    tcp[2] = 2;
    assert_eq!(parse_tcp_state(&tcp).unwrap(), None);
    assert_eq!(parse_tcp_state(&[]).unwrap(), None);
    // A state of the wrong size is an error, not a guess.
    let bad = [12, 0, 1, 0x80, 6, 0, 1, 0, 3, 3, 0, 0];
    assert!(parse_tcp_state(&bad).is_err());
}

#[test]
fn parses_full_ipv6_addresses() {
    let f = one_flow(UDP6_NEW);
    assert_eq!(f.orig.proto, Proto::Udp);
    assert_eq!(f.orig.src.to_string(), "fd77::1");
    assert_eq!(f.orig.dst.to_string(), "fd77::2");
    assert_eq!(f.orig.dport, 5353);
}

#[test]
fn icmp_has_type_code_and_id_instead_of_ports() {
    let f = one_flow(ICMP4_NEW);
    assert_eq!(f.orig.proto, Proto::Icmp);
    let icmp = f.orig.icmp.expect("icmp");
    assert_eq!((icmp.kind, icmp.code), (8, 0));
    assert_eq!((f.orig.sport, f.orig.dport), (0, 0));
    let f = one_flow(ICMP6_NEW);
    assert_eq!(f.orig.proto, Proto::Icmpv6);
    assert_eq!(f.orig.icmp.map(|i| i.kind), Some(128));
    // The reply of an echo request is an echo reply with the same id.
    let r = f.reply.and_then(|r| r.icmp).expect("reply icmp");
    assert_eq!(
        (r.kind, r.id),
        (129, f.orig.icmp.map(|i| i.id).unwrap_or(0))
    );
}

#[test]
fn parses_sctp_and_destroy_events() {
    let f = one_flow(SCTP4_NEW);
    assert_eq!(f.orig.proto, Proto::Sctp);
    assert_eq!(f.orig.dport, 9999);
    let d = one_flow(TCP4_DESTROY);
    assert_eq!(d.event, FlowEvent::Destroy);
    // The same flow as the NEW event, by conntrack id and tuple.
    assert_eq!(
        (d.id, d.orig),
        (one_flow(TCP4_NEW).id, one_flow(TCP4_NEW).orig)
    );
}

#[test]
fn every_truncation_of_a_captured_message_is_an_error_not_a_panic() {
    for bytes in [TCP4_NEW, UDP6_NEW, ICMP4_NEW, SCTP4_NEW] {
        for cut in 0..bytes.len() {
            let msgs = parse_datagram(&bytes[..cut]);
            assert!(
                msgs.iter().all(|m| !matches!(m, Ok(Message::Flow(_)))) || cut == bytes.len(),
                "a flow parsed from {cut} of {} bytes",
                bytes.len()
            );
        }
    }
}

#[test]
fn corrupted_bytes_never_panic() {
    // Flip every byte in turn; whatever comes out, nothing panics or loops.
    let mut bytes = TCP4_NEW.to_vec();
    for i in 0..bytes.len() {
        for v in [0x00, 0xff, 0x04] {
            let old = bytes[i];
            bytes[i] = v;
            let _ = parse_datagram(&bytes);
            bytes[i] = old;
        }
    }
}

#[test]
fn two_messages_in_one_datagram() {
    let mut both = TCP4_NEW.to_vec();
    both.extend_from_slice(UDP6_NEW);
    let msgs = parse_datagram(&both);
    assert_eq!(msgs.len(), 2);
    assert!(msgs.iter().all(|m| matches!(m, Ok(Message::Flow(_)))));
}

#[test]
fn error_and_other_subsystems() {
    assert_eq!(
        parse_datagram(&enobufs_datagram()),
        vec![Ok(Message::Error(-105))]
    );
    // A message of subsystem 2 (ctnetlink_exp): skipped.
    let other = [20, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0];
    assert_eq!(parse_datagram(&other), vec![Ok(Message::Ignored)]);
}

#[test]
fn wrong_attribute_lengths_are_reported() {
    // CTA_TUPLE_ORIG > CTA_TUPLE_IP > CTA_IP_V4_SRC with 3 bytes instead of 4.
    let attrs = [
        16, 0, 0x01, 0x80, // CTA_TUPLE_ORIG, nested, len 16
        12, 0, 0x01, 0x80, // CTA_TUPLE_IP, nested, len 12
        7, 0, 0x01, 0x00, 10, 0, 0, 0, // CTA_IP_V4_SRC, len 7 (3 bytes + pad)
    ];
    assert!(matches!(
        parse_flow(FlowEvent::New, &attrs),
        Err(ParseError::BadLength {
            name: "CTA_IP_V4_SRC",
            len: 3,
            ..
        })
    ));
}

#[test]
fn drops_column_of_proc_net_netlink() {
    let text = "sk               Eth Pid        Groups   Rmem     Wmem     Dump  Locks    Drops    Inode\n\
                0000000000000000 12  4242       00000005 0        0        0     2        17       99887\n\
                0000000000000000 0   1          00000000 0        0        0     2        0        12\n";
    assert_eq!(netlink_drops(text, 99887), Some(17));
    assert_eq!(netlink_drops(text, 5), None);
    assert_eq!(netlink_drops("garbage", 1), None);
}
