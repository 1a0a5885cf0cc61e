use super::*;

/// A fib_trie as a namespace with 172.31.9.2/24 on a veth shows it (read from one).
const FIB_TRIE: &str = "Main:
  +-- 0.0.0.0/0 2 0 2
     +-- 127.0.0.0/8 2 0 2
        +-- 127.0.0.0/31 1 0 0
           |-- 127.0.0.0
              /8 host LOCAL
           |-- 127.0.0.1
              /32 host LOCAL
        |-- 127.255.255.255
           /32 link BROADCAST
     +-- 172.31.9.0/24 2 0 2
        +-- 172.31.9.0/30 2 0 2
           |-- 172.31.9.0
              /24 link UNICAST
           |-- 172.31.9.2
              /32 host LOCAL
        |-- 172.31.9.255
           /32 link BROADCAST
Local:
  +-- 0.0.0.0/0 2 0 2
           |-- 172.31.9.2
              /32 host LOCAL
";

const IF_INET6: &str = "fe800000000000001c070efffe49e951 03 40 20 c0       d0
00000000000000000000000000000001 01 80 10 80       lo
fd310000000000000000000000000002 03 40 00 c0       d0
";

const HEADER: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode\n";

/// An IPv4 address as the kernel prints it: its four bytes read as a word of this machine.
fn hex4(a: [u8; 4]) -> String {
    format!("{:08X}", u32::from_ne_bytes(a))
}

fn line(local: &str, remote: &str, state: u8, uid: u32, inode: u64) -> String {
    format!("   0: {local} {remote} {state:02X} 00000000:00000000 00:00000000 00000000 {uid:>5}        0 {inode} 1 0000000000000000 100 0 0 10 0\n")
}

#[test]
fn the_addresses_are_the_local_leaves_and_the_v6_list() {
    assert_eq!(
        local_v4(FIB_TRIE),
        [Ipv4Addr::new(127, 0, 0, 1), Ipv4Addr::new(172, 31, 9, 2)]
    );
    let v6 = local_v6(IF_INET6);
    assert!(v6.contains(&"fd31::2".parse().expect("ip")));
    assert!(v6.contains(&Ipv6Addr::LOCALHOST));
    assert_eq!(v6.len(), 3);
    assert!(local_v4("garbage\n|-- not-an-address\n/32 host LOCAL\n").is_empty());
    assert!(local_v6("zz 01\n0001 02\n").is_empty());
}

#[test]
fn a_table_s_lines_give_ends_state_uid_and_inode() {
    let text = format!(
        "{HEADER}{}{}   9: short line\n",
        line(
            &format!("{}:0050", hex4([172, 31, 9, 2])),
            &format!("{}:0000", hex4([0, 0, 0, 0])),
            10,
            1000,
            4242
        ),
        line(
            &format!("{}:1F90", hex4([10, 0, 0, 1])),
            &format!("{}:D431", hex4([10, 0, 0, 2])),
            1,
            0,
            7
        ),
    );
    let t = parse_table(&text);
    assert_eq!(t.len(), 2);
    assert_eq!(t[0].local, "172.31.9.2:80".parse().expect("addr"));
    assert_eq!((t[0].state, t[0].uid, t[0].inode), (10, 1000, 4242));
    assert_eq!(t[1].remote, "10.0.0.2:54321".parse().expect("addr"));
    // IPv6: four words, each in this machine's order.
    let words: String = "fd310000000000000000000000000002"
        .as_bytes()
        .chunks(8)
        .map(|w| {
            let b = u32::from_str_radix(std::str::from_utf8(w).expect("hex"), 16)
                .expect("hex")
                .to_be_bytes();
            format!("{:08X}", u32::from_ne_bytes(b))
        })
        .collect();
    let six = parse_table(&format!(
        "{HEADER}{}",
        line(
            &format!("{words}:0050"),
            &format!("{}:0000", "0".repeat(32)),
            10,
            0,
            9
        )
    ));
    assert_eq!(six[0].local, "[fd31::2]:80".parse().expect("addr"));
}

/// A stand-in `/proc`: `self` (the helper: its addresses, its user namespace) and one
/// process per namespace, with its `ns/net` (a file: its inode is the namespace's), its
/// `ns/user` (the helper's own, or one of its own: `machine`), its addresses and its TCP
/// table.
fn proc_self(root: &Path, addr: [u8; 4]) {
    let dir = root.join("self");
    std::fs::create_dir_all(dir.join("ns")).expect("mkdir");
    std::fs::create_dir_all(dir.join("net")).expect("mkdir");
    std::fs::write(dir.join("ns/user"), b"").expect("user");
    std::fs::write(dir.join("net/fib_trie"), trie(addr)).expect("trie");
}

fn trie(a: [u8; 4]) -> String {
    format!(
        "Main:\n  +-- 0.0.0.0/0 2 0 2\n     |-- {}\n        /32 host LOCAL\n",
        Ipv4Addr::from(a)
    )
}

fn proc_with(
    root: &Path,
    pid: u32,
    machine: bool,
    addr: [u8; 4],
    listens: Option<([u8; 4], u16, u64)>,
) {
    let dir = root.join(pid.to_string());
    std::fs::create_dir_all(dir.join("ns")).expect("mkdir");
    std::fs::create_dir_all(dir.join("net")).expect("mkdir");
    std::fs::write(dir.join("ns/net"), b"").expect("ns");
    if machine {
        std::fs::hard_link(root.join("self/ns/user"), dir.join("ns/user")).expect("link");
    } else {
        std::fs::write(dir.join("ns/user"), b"").expect("user");
    }
    std::fs::write(dir.join("net/fib_trie"), trie(addr)).expect("trie");
    let mut tcp = HEADER.to_string();
    if let Some((ip, port, inode)) = listens {
        tcp += &line(
            &format!("{}:{port:04X}", hex4(ip)),
            &format!("{}:0000", hex4([0; 4])),
            10,
            1000,
            inode,
        );
    }
    std::fs::write(dir.join("net/tcp"), tcp).expect("tcp");
}

fn elsewhere(root: &Path) -> Elsewhere {
    Elsewhere::new(Namespaces::at(root, 1))
}

const CONTAINER: [u8; 4] = [172, 31, 9, 2];

#[test]
fn one_namespace_with_the_address_and_a_listener_is_named_and_two_are_not() {
    let root = tempfile::tempdir().expect("tmp");
    let r = root.path();
    proc_self(r, [10, 0, 0, 1]);
    // The container: the address, a wildcard listener on 80.
    proc_with(r, 100, true, CONTAINER, Some(([0; 4], 80, 5000)));
    // A namespace listening on 80 without the address: not it.
    proc_with(r, 200, true, [10, 9, 9, 9], Some(([0; 4], 80, 6000)));
    // A namespace with the address, listening on another port: not it.
    proc_with(r, 300, true, CONTAINER, Some((CONTAINER, 81, 7000)));
    let addr = IpAddr::V4(Ipv4Addr::from(CONTAINER));
    let mut e = elsewhere(r);
    match e.listener(Proto::Tcp, addr, 80) {
        Listening::One { socket, .. } => {
            assert_eq!(socket.inode, 5000);
            assert_eq!(socket.uid, 1000);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(e.listener(Proto::Udp, addr, 80), Listening::None);
    assert_eq!(e.listener(Proto::Tcp, addr, 82), Listening::None);
    // The helper's own address: its own sockets are asked.
    assert_eq!(
        e.listener(Proto::Tcp, IpAddr::V4(Ipv4Addr::new(10, 0, 0, 1)), 80),
        Listening::Here
    );
    // A namespace of the machine's user namespace gives itself the container's address and
    // listens there: now two claim it, and neither is named.
    proc_with(r, 400, true, CONTAINER, Some((CONTAINER, 80, 8000)));
    assert_eq!(
        elsewhere(r).listener(Proto::Tcp, addr, 80),
        Listening::Several(2)
    );
}

#[test]
fn a_namespace_of_a_user_namespace_of_its_own_is_never_asked() {
    let root = tempfile::tempdir().expect("tmp");
    let r = root.path();
    proc_self(r, [10, 0, 0, 1]);
    let addr = IpAddr::V4(Ipv4Addr::from(CONTAINER));
    // What any user can make: a user and network namespace with the container's address
    // and a listener. Alone it is not named (the flow cannot have reached it)...
    proc_with(r, 500, false, CONTAINER, Some(([0; 4], 80, 9000)));
    assert_eq!(elsewhere(r).listener(Proto::Tcp, addr, 80), Listening::None);
    // ...and beside the real container it does not stop the container's being named.
    proc_with(r, 100, true, CONTAINER, Some(([0; 4], 80, 5000)));
    match elsewhere(r).listener(Proto::Tcp, addr, 80) {
        Listening::One { socket, .. } => assert_eq!(socket.inode, 5000),
        other => panic!("{other:?}"),
    }
}

#[test]
fn namespaces_of_other_user_namespaces_cut_nothing_and_a_cut_list_names_nobody() {
    let asked = super::super::netns::NAMESPACES_ASKED as u32;
    let root = tempfile::tempdir().expect("tmp");
    let r = root.path();
    proc_self(r, [10, 0, 0, 1]);
    proc_with(r, 100, true, CONTAINER, Some(([0; 4], 80, 5000)));
    // An unprivileged program's namespaces, more than are asked: the container's is still
    // asked, and named (it was not, when they cut the list).
    for pid in 1000..1000 + asked {
        proc_with(r, pid, false, [10, 9, 9, 9], None);
    }
    let addr = IpAddr::V4(Ipv4Addr::from(CONTAINER));
    match elsewhere(r).listener(Proto::Tcp, addr, 80) {
        Listening::One { socket, .. } => assert_eq!(socket.inode, 5000),
        other => panic!("{other:?}"),
    }
    // As many of the machine's own again: the list is cut, and then nobody is named.
    for pid in 5000..5000 + asked {
        proc_with(r, pid, true, [10, 9, 9, 9], None);
    }
    assert!(matches!(
        elsewhere(r).listener(Proto::Tcp, addr, 80),
        Listening::Several(_)
    ));
}

#[test]
fn the_socket_on_the_address_goes_before_the_wildcard_one_and_v4_never_takes_v6() {
    let dir = tempfile::tempdir().expect("tmp");
    let net = dir.path();
    let wild = line(
        &format!("{}:0050", hex4([0; 4])),
        &format!("{}:0000", hex4([0; 4])),
        10,
        0,
        1,
    );
    let exact = line(
        &format!("{}:0050", hex4(CONTAINER)),
        &format!("{}:0000", hex4([0; 4])),
        10,
        0,
        2,
    );
    std::fs::write(net.join("tcp"), format!("{HEADER}{wild}{exact}")).expect("tcp");
    std::fs::write(net.join("tcp6"), HEADER).expect("tcp6");
    let v4 = IpAddr::V4(Ipv4Addr::from(CONTAINER));
    assert_eq!(
        listening_in(net, Proto::Tcp, v4, 80).map(|s| s.inode),
        Some(2)
    );
    let v6: IpAddr = "fd31::2".parse().expect("ip");
    assert_eq!(listening_in(net, Proto::Tcp, v6, 80), None);
}
