//! The watched program attacks the monitor: each test plays a hostile program of the person's
//! own uid (here `nobody`, through `setpriv`) against the real helper, in network namespaces
//! the test makes, and checks that the helper neither silences it nor names it falsely.
//! THREAT_MODEL.md says what the helper promises against such a program.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a test that cannot set up must fail loudly

mod common;

use std::process::Command;
use std::time::Duration;

use common::{config_file, root_or_skip, to_port, Helper, Net, PY};
use serde_json::Value;

/// Runs a shell script as `nobody` inside namespace `ns`; fails the test if it fails.
fn as_nobody(ns: &str, script: &str) {
    as_nobody_output(ns, script);
}

fn connect_py(ip: &str, port: u16, comm: Option<&str>) -> String {
    let rename = comm
        .map(|c| format!("ctypes.CDLL(None).prctl(15, b'{c}', 0, 0, 0); "))
        .unwrap_or_default();
    format!(
        "import ctypes, socket; {rename}s = socket.create_connection(('{ip}', {port}), 2); s.close()"
    )
}

#[test]
fn a_program_cannot_borrow_a_whitelisted_identity() {
    let test = "a_program_cannot_borrow_a_whitelisted_identity";
    let tools = [
        "ip", "nft", "setpriv", "unshare", "mount", "curl", "python3",
    ];
    if !root_or_skip(test) || !common::require(test, &tools) {
        return;
    }
    let mut net = Net::new();
    let ports = [9001, 9002, 9003, 9004, 9005, 9006];
    net.serve(&net.b.clone(), "0.0.0.0", &ports);
    // The person trusts curl, by name and by path.
    let (_d, cfg) = config_file("[whitelist]\nprocesses = [\"curl\", \"/usr/bin/curl\"]\n");
    let h = Helper::start(&net.a, &["--config", cfg.to_str().expect("path")]);
    let b = net.b4();
    let script = format!(
        r#"
d=$(mktemp -d)
# 1. python names itself curl (comm).
{PY} -c "{rename}"
# 2. a copy of python named curl, in the attacker's own folder.
cp {PY} "$d/curl"
"$d/curl" -c "{plain2}"
# 3. a symlink named curl to python.
mkdir "$d/l" && ln -s {PY} "$d/l/curl"
"$d/l/curl" -c "{plain3}"
# 4. its own mount namespace, python bind-mounted over /usr/bin/curl.
unshare -rm sh -c "mount --bind {PY} /usr/bin/curl && exec /usr/bin/curl -c \"{plain4}\""
# 5. the real curl: whitelisted, so silent.
curl -s -m 2 -o /dev/null http://{b}:9005/ || true
# 6. and python once more, to show the helper was watching all along.
{PY} -c "{plain6}"
rm -rf "$d"
"#,
        rename = connect_py(&b, 9001, Some("curl")),
        plain2 = connect_py(&b, 9002, None),
        plain3 = connect_py(&b, 9003, None),
        plain4 = connect_py(&b, 9004, None),
        plain6 = connect_py(&b, 9006, None),
    );
    as_nobody(&net.a, &script);
    let lines = h.collect(Duration::from_secs(2));
    assert!(
        to_port(&lines, 9006).is_some(),
        "the helper saw nothing: {lines:?}"
    );
    assert!(
        to_port(&lines, 9005).is_none(),
        "the real, whitelisted curl was reported: {lines:?}"
    );
    for port in [9001, 9002, 9003, 9004] {
        let v = to_port(&lines, port)
            .unwrap_or_else(|| panic!("attack on port {port} was silenced: {lines:?}"));
        assert_eq!(v["process"]["uid"], 65534, "{v}");
    }
    // The renamed python says it is curl, and is reported all the same.
    assert_eq!(to_port(&lines, 9001).unwrap()["process"]["comm"], "curl");
    // The copy is verified (it is the file at that path) but not a system file.
    let copy = &to_port(&lines, 9002).unwrap()["process"];
    assert_eq!(copy["exe_verified"], true, "{copy}");
    assert_eq!(copy["exe_system"], false, "{copy}");
    // The bind mount shows /usr/bin/curl from inside, and is not verified.
    let bound = &to_port(&lines, 9004).unwrap()["process"];
    assert_eq!(bound["exe"], "/usr/bin/curl", "{bound}");
    assert_eq!(bound["exe_verified"], false, "{bound}");
    assert!(
        bound["exe_unverified"]
            .as_str()
            .is_some_and(|w| w.contains("another mount namespace")),
        "{bound}"
    );
}

/// What the masquerade does, as python run through the dynamic loader (so the file the
/// kernel mapped as the executable, the loader, can be unmapped, which the prctl wants):
/// from a user namespace of its own, `prctl(PR_SET_MM, PR_SET_MM_MAP)` with `exe_fd` set
/// to `argv[1]`, then one datagram to `argv[2]:argv[3]` on a socket connected before, and a
/// second of work so the helper finds it alive. Pure python after the unmapping: the loader
/// is gone, and the process crashes when it exits.
const MASQUERADE: &str = r#"
import ctypes, os, struct, sys, socket
libc = ctypes.CDLL('libc.so.6', use_errno=True)
libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
libc.sbrk.restype = ctypes.c_void_p
libc.prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong]
exe = os.readlink('/proc/self/exe')
fd = os.open(sys.argv[1], os.O_RDONLY)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.connect((sys.argv[2], int(sys.argv[3])))
f = open('/proc/self/stat').read().rsplit(') ', 1)[1].split()
g = lambda n: int(f[n - 3])
m = struct.pack('<11QQII', g(26), g(27), g(45), g(46), g(47), libc.sbrk(0), g(28), g(48), g(49), g(50), g(51), 0, 0, fd)
buf = ctypes.create_string_buffer(m, len(m))
maps = [l.split() for l in open('/proc/self/maps')]
ranges = [[int(x, 16) for x in p[0].split('-')] for p in maps if len(p) >= 6 and p[5] == exe]
if libc.unshare(0x10000000) != 0:
    sys.exit(2)
for a, b in ranges:
    libc.munmap(a, b - a)
if libc.prctl(35, 14, buf, len(m), 0) != 0:
    sys.exit(3)
s.send(b'x')
n = 0
while n < 20000000:
    n += 1
"#;

/// A program that sets the executable `/proc/PID/exe` shows (to the whitelisted curl, with
/// curl's device and inode) is not taken for curl: its exec record ran another file.
#[test]
fn a_program_that_sets_its_proc_executable_is_not_taken_for_that_program() {
    let test = "a_program_that_sets_its_proc_executable_is_not_taken_for_that_program";
    if !root_or_skip(test) || !common::require(test, &["ip", "nft", "setpriv", "python3", "curl"]) {
        return;
    }
    let loader = "/lib64/ld-linux-x86-64.so.2";
    let python = std::fs::canonicalize(PY).expect("python3's file");
    let mut net = Net::new();
    net.serve(&net.b.clone(), "0.0.0.0", &[9010]);
    let (_d, cfg) = config_file(
        "[monitor]\nprotocols = [\"all\"]\n[whitelist]\nprocesses = [\"curl\", \"/usr/bin/curl\"]\n",
    );
    let h = Helper::start(&net.a, &["--config", cfg.to_str().expect("path")]);
    let b = net.b4();
    // The script goes in hex: no quoting of the shell's to get wrong.
    let hex: String = MASQUERADE.bytes().map(|c| format!("{c:02x}")).collect();
    let script = format!(
        "LD_BIND_NOW=1 {loader} {} -c \"exec(bytes.fromhex('{hex}').decode())\" \
         /usr/bin/curl {b} 9009 2>/dev/null || true\n{PY} -c \"{marker}\"",
        python.display(),
        marker = connect_py(&b, 9010, None),
    );
    let printed = as_nobody_output(&net.a, &script);
    let lines = h.collect(Duration::from_secs(2));
    assert!(
        to_port(&lines, 9010).is_some(),
        "the helper saw nothing: {lines:?} {printed}"
    );
    let v = to_port(&lines, 9009)
        .unwrap_or_else(|| panic!("the masquerade was silenced as curl: {lines:?}"));
    let p = &v["process"];
    assert_eq!(p["uid"], 65534, "{v}");
    assert_eq!(p["exe"], "/usr/bin/curl", "the masquerade took: {v}");
    assert_eq!(p["exe_verified"], false, "{v}");
    assert!(
        p["exe_unverified"]
            .as_str()
            .is_some_and(|w| w.contains("PR_SET_MM_MAP")),
        "{v}"
    );
}

#[test]
fn a_program_that_becomes_a_whitelisted_one_after_connecting_is_not_taken_for_it() {
    let test = "a_program_that_becomes_a_whitelisted_one_after_connecting_is_not_taken_for_it";
    if !root_or_skip(test) || !common::require(test, &["ip", "nft", "setpriv", "python3", "kill"]) {
        return;
    }
    let mut net = Net::new();
    net.serve(&net.b.clone(), "0.0.0.0", &[9011, 9012]);
    let (_d, cfg) = config_file(
        "[monitor]\nprotocols = [\"all\"]\n[whitelist]\nprocesses = [\"/usr/bin/sleep\"]\n",
    );
    let h = Helper::start(&net.a, &["--config", cfg.to_str().expect("path")]);
    let b = net.b4();
    // The helper is held back while the program connects and then execs the whitelisted
    // sleep, under sleep's name from the start: the watched code can slow the helper down
    // (a flood) for as long as an exec takes. The socket is kept across the exec.
    let signal = |sig: &str| {
        let st = Command::new("kill")
            .args([sig, &h.pid().to_string()])
            .status()
            .expect("kill");
        assert!(st.success(), "kill {sig}");
    };
    signal("-STOP");
    let script = format!(
        "{PY} -c \"import ctypes, os, socket; ctypes.CDLL(None).prctl(15, b'sleep', 0, 0, 0); \
         s = socket.create_connection(('{b}', 9011), 2); os.set_inheritable(s.fileno(), True); \
         os.execv('/usr/bin/sleep', ['sleep', '5'])\" >/dev/null 2>&1 &\nsleep 0.3"
    );
    as_nobody(&net.a, &script);
    signal("-CONT");
    as_nobody(
        &net.a,
        &format!("{PY} -c \"{}\"", connect_py(&b, 9012, None)),
    );
    let lines = h.collect(Duration::from_secs(2));
    assert!(
        to_port(&lines, 9012).is_some(),
        "the helper saw nothing: {lines:?}"
    );
    let v = to_port(&lines, 9011)
        .unwrap_or_else(|| panic!("the connection was silenced as sleep: {lines:?}"));
    let p = &v["process"];
    assert_eq!(p["uid"], 65534, "{v}");
    assert_eq!(p["exe_verified"], false, "{v}");
    assert!(
        p["exe_unverified"]
            .as_str()
            .is_some_and(|w| w.contains("after it connected")),
        "{v}"
    );
}

#[test]
fn a_socket_handed_to_a_whitelisted_program_while_it_connects_is_not_named_after_it() {
    hand_off(
        "a_socket_handed_to_a_whitelisted_program_while_it_connects_is_not_named_after_it",
        Duration::from_millis(300),
    );
}

/// The same, read more than a second after the connects (a flood can delay the helper so):
/// the records are out of their window, and the holders speak, held against the records.
#[test]
fn a_socket_handed_to_a_whitelisted_program_is_not_named_after_it_even_read_late() {
    hand_off(
        "a_socket_handed_to_a_whitelisted_program_is_not_named_after_it_even_read_late",
        Duration::from_millis(1500),
    );
}

/// A program connects to a server of its own that lets SYNs wait, so the handshake is still
/// under way when the helper reads the flow, and hands the socket to the whitelisted sleep;
/// the helper is held back (`SIGSTOP`) for `late`.
fn hand_off(test: &str, late: Duration) {
    if !root_or_skip(test) || !common::require(test, &["ip", "nft", "setpriv", "python3", "kill"]) {
        return;
    }
    let mut net = Net::new();
    net.serve(&net.b.clone(), "0.0.0.0", &[9012]);
    for cmd in [
        "add table inet ctt_slow",
        "add chain inet ctt_slow in { type filter hook input priority 0 ; }",
        "add rule inet ctt_slow in tcp dport { 9013, 9014 } drop",
    ] {
        let st = Net::cmd(&net.b, &["nft", cmd]).status().expect("nft");
        assert!(st.success(), "{cmd}");
    }
    let (_d, cfg) = config_file(
        "[monitor]\nprotocols = [\"all\"]\n[whitelist]\nprocesses = [\"/usr/bin/sleep\"]\n",
    );
    let h = Helper::start(&net.a, &["--config", cfg.to_str().expect("path")]);
    let b = net.b4();
    let signal = |sig: &str| {
        let st = Command::new("kill")
            .args([sig, &h.pid().to_string()])
            .status()
            .expect("kill");
        assert!(st.success(), "kill {sig}");
    };
    signal("-STOP");
    // 9013: it connects without waiting and execs sleep, under sleep's name from the start.
    // 9014: it connects, hands the socket to a new sleep and closes its own, and exits. Either
    // way sleep is the socket's only holder by the time the helper looks.
    let start = "import ctypes, os, socket, subprocess; \
                 ctypes.CDLL(None).prctl(15, b'sleep', 0, 0, 0); \
                 s = socket.socket(); s.setblocking(False); s.connect_ex";
    let script = format!(
        "{PY} -c \"{start}(('{b}', 9013)); os.set_inheritable(s.fileno(), True); \
         os.execv('/usr/bin/sleep', ['sleep', '5'])\" >/dev/null 2>&1 &\n\
         {PY} -c \"{start}(('{b}', 9014)); subprocess.Popen(['/usr/bin/sleep', '5'], \
         pass_fds=[s.fileno()]); s.close()\" >/dev/null 2>&1\nsleep {}",
        late.as_secs_f64()
    );
    as_nobody(&net.a, &script);
    signal("-CONT");
    as_nobody(
        &net.a,
        &format!("{PY} -c \"{}\"", connect_py(&b, 9012, None)),
    );
    let lines = h.collect(Duration::from_secs(2));
    assert!(
        to_port(&lines, 9012).is_some(),
        "the helper saw nothing: {lines:?}"
    );
    let line = |port| {
        let v = to_port(&lines, port)
            .unwrap_or_else(|| panic!("{port} was silenced as sleep: {lines:?}"));
        assert_eq!(v["process"]["uid"], 65534, "{v}");
        v
    };
    let why = |v: &Value| {
        v["process"]["exe_unverified"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    // The process that connected is sleep now, but was not when it connected.
    let v = line(9013);
    assert_eq!(v["process"]["exe_verified"], false, "{v}");
    assert!(why(v).contains("after it connected"), "{v}");
    // The process that connected is python, whoever holds the socket now.
    let v = line(9014);
    if late < Duration::from_secs(1) {
        assert_eq!(v["attributed_by"], "connect", "named by a holder: {v}");
        assert!(
            v["process"]["exe"]
                .as_str()
                .is_some_and(|e| e.starts_with("/usr/bin/python3")),
            "{v}"
        );
    } else {
        assert_eq!(v["process"]["exe_verified"], false, "{v}");
        assert!(why(v).contains("handed the socket"), "{v}");
    }
}

#[test]
fn a_connection_a_whitelisted_program_s_first_write_opens_is_not_named_after_it() {
    let test = "a_connection_a_whitelisted_program_s_first_write_opens_is_not_named_after_it";
    if !root_or_skip(test) || !common::require(test, &["ip", "nft", "setpriv", "python3"]) {
        return;
    }
    let mut net = Net::new();
    net.serve(&net.b.clone(), "0.0.0.0", &[9012, 9015]);
    let (_d, cfg) = config_file(
        "[monitor]\nprotocols = [\"all\"]\n[whitelist]\nprocesses = [\"/usr/bin/sleep\"]\n",
    );
    let h = Helper::start(&net.a, &["--config", cfg.to_str().expect("path")]);
    let b = net.b4();
    // TCP_FASTOPEN_CONNECT (30) and TCP_FASTOPEN_NO_COOKIE (34): connect() only picks the
    // port, and the SYN leaves with the first write, here sleep's --version on its stdout.
    let script = format!(
        "{PY} -c \"import socket, subprocess; s = socket.socket(); s.setsockopt(6, 30, 1); \
         s.setsockopt(6, 34, 1); s.connect(('{b}', 9015)); \
         subprocess.run(['/usr/bin/sleep', '--version'], stdout=s.fileno())\"\n\
         {PY} -c \"{}\"",
        connect_py(&b, 9012, None)
    );
    as_nobody(&net.a, &script);
    let lines = h.collect(Duration::from_secs(2));
    assert!(
        to_port(&lines, 9012).is_some(),
        "the helper saw nothing: {lines:?}"
    );
    let v = to_port(&lines, 9015)
        .unwrap_or_else(|| panic!("the connection sleep's write opened was silenced: {lines:?}"));
    assert_eq!(v["attributed_by"], "connect", "{v}");
    assert_eq!(v["process"]["exe_verified"], false, "{v}");
    assert!(
        v["process"]["exe_unverified"]
            .as_str()
            .is_some_and(|w| w.contains("TCP Fast Open")),
        "{v}"
    );
}

/// Runs the test peer (`helper/tests/tools/peer.py`) as `nobody` in `ns`, to completion.
fn peer_as_nobody(ns: &str, args: &[&str]) {
    let script = common::peer_script();
    let mut argv = vec![PY.to_string(), script.display().to_string()];
    argv.extend(args.iter().map(|a| a.to_string()));
    as_nobody(ns, &argv.join(" "));
}

#[test]
fn a_name_is_used_only_for_the_connections_of_the_process_that_looked_it_up() {
    let test = "a_name_is_used_only_for_the_connections_of_the_process_that_looked_it_up";
    if !root_or_skip(test) || !common::require(test, &["ip", "nft", "setpriv", "python3"]) {
        return;
    }
    let mut net = Net::new();
    net.serve(&net.b.clone(), "0.0.0.0", &[8080, 8081]);
    let b4 = net.b4();
    net.start_peer(&net.b.clone(), &["dns", "0.0.0.0", &b4]);
    net.set_resolver(&b4);
    let h = Helper::start(&net.a, &[]);
    // Someone looks up example.test (-> b) with the system's resolver and connects.
    peer_as_nobody(&net.a, &["resolve", "example.test", &b4, "8080"]);
    // Another program connects to the same address without looking anything up.
    peer_as_nobody(&net.a, &["connect", &b4, "8081", "0.2"]);
    let lines = h.collect(Duration::from_secs(2));
    let named = to_port(&lines, 8080).expect("the resolving program's line");
    assert_eq!(named["host"], "example.test", "{named}");
    assert_eq!(named["host_source"], "dns", "{named}");
    let bare = to_port(&lines, 8081).expect("the other program's line");
    assert!(
        bare.get("host").is_none(),
        "borrowed another's name: {bare}"
    );
}

#[test]
fn a_program_that_asks_its_own_dns_server_gets_a_name_that_whitelists_nothing() {
    let test = "a_program_that_asks_its_own_dns_server_gets_a_name_that_whitelists_nothing";
    if !root_or_skip(test) || !common::require(test, &["ip", "nft", "setpriv", "python3"]) {
        return;
    }
    let mut net = Net::new();
    net.serve(&net.b.clone(), "0.0.0.0", &[8080, 8081, 8082]);
    let b4 = net.b4();
    // The system's resolver at b, and the program's own DNS server at a second address.
    let own = net.add_b4(3);
    net.start_peer(&net.b.clone(), &["dns", &b4, &b4]);
    net.start_peer(&net.b.clone(), &["dns", &own, &b4]);
    net.set_resolver(&b4);
    let (_d, cfg) = config_file("[whitelist]\nhosts = [\"github.test\"]\n");
    let h = Helper::start(&net.a, &["--config", cfg.to_str().expect("path")]);
    // Its own server says github.test is b: reported, marked, not whitelisted.
    peer_as_nobody(&net.a, &["resolve", "github.test", &own, "8080"]);
    // The system's resolver says the same: that name is the resolver's word, and silences.
    peer_as_nobody(&net.a, &["resolve", "github.test", &b4, "8081"]);
    // A last flow shows the helper was watching all along.
    peer_as_nobody(&net.a, &["connect", &b4, "8082", "0.2"]);
    let lines = h.collect(Duration::from_secs(2));
    assert!(to_port(&lines, 8082).is_some(), "{lines:?}");
    let v = to_port(&lines, 8080).expect("the own-resolver connection is reported");
    assert_eq!(v["host"], "github.test", "{v}");
    assert_eq!(v["host_source"], "own_resolver", "{v}");
    assert!(
        to_port(&lines, 8081).is_none(),
        "the system resolver's name did not whitelist: {lines:?}"
    );
}

#[test]
fn an_answer_nobody_asked_for_names_nothing() {
    let test = "an_answer_nobody_asked_for_names_nothing";
    if !root_or_skip(test) || !common::require(test, &["ip", "nft", "setpriv", "python3"]) {
        return;
    }
    let mut net = Net::new();
    net.serve(&net.b.clone(), "0.0.0.0", &[8080]);
    let b4 = net.b4();
    net.set_resolver(&b4);
    let (_d, cfg) = config_file("[whitelist]\nhosts = [\"github.test\"]\n");
    let h = Helper::start(&net.a, &["--config", cfg.to_str().expect("path")]);
    // From b's port 53, unasked: "github.test is b", to a's port 40053, a few times.
    let a4 = net.a4();
    let inject = format!(
        "import socket, struct, time\n\
         def enc(n): return b''.join(bytes([len(l)]) + l.encode() for l in n.split('.')) + b'\\0'\n\
         q = enc('github.test') + struct.pack('!HH', 1, 1)\n\
         a = b'\\xc0\\x0c' + struct.pack('!HHIH', 1, 1, 300, 4) + socket.inet_aton('{b4}')\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.bind(('{b4}', 53))\n\
         for i in range(5):\n\
         \x20   s.sendto(struct.pack('!HHHHHH', 0x1234, 0x8180, 1, 1, 0, 0) + q + a, ('{a4}', 40053))\n\
         \x20   time.sleep(0.05)\n"
    );
    common::run(&["ip", "netns", "exec", &net.b, PY, "-c", &inject]);
    // The "victim" then connects to b; a program with that port open would have received
    // the answers.
    peer_as_nobody(&net.a, &["connect", &b4, "8080", "0.2"]);
    let lines = h.collect(Duration::from_secs(2));
    let v = to_port(&lines, 8080).expect("reported, not whitelisted by a forged name");
    assert!(v.get("host").is_none(), "{v}");
}

#[test]
fn a_caller_flooding_stdin_with_huge_configs_cannot_grow_the_helper() {
    let test = "a_caller_flooding_stdin_with_huge_configs_cannot_grow_the_helper";
    if !root_or_skip(test) || !common::require(test, &["ip", "nft"]) {
        return;
    }
    let net = Net::new();
    // Whoever runs pkexec holds the helper's stdin: here, 100 configurations of 1 MB each
    // while no flow comes (on main they left 360-563 MB resident).
    let mut h = Helper::start(&net.a, &[]);
    let paths: Vec<String> = (0..10_000).map(|i| format!("/opt/{i:0>94}")).collect();
    let cmd = serde_json::json!({"cmd": "config", "config": {"whitelist": {"processes": paths}}})
        .to_string();
    assert!(cmd.len() > 1_000_000);
    for _ in 0..100 {
        h.send(&cmd);
    }
    for i in 0..100 {
        assert!(
            h.wait_for(Duration::from_secs(30), |v| v["type"] == "ack")
                .is_some(),
            "ack {i} of 100"
        );
    }
    let rss = common::status_kib(h.pid(), "VmRSS").unwrap_or(u64::MAX);
    // Two configurations of 1 MB (the pipeline's and the reader's) and the parse of one:
    // far below what a hundred queued copies would take.
    assert!(
        rss < 64 * 1024,
        "the helper holds {rss} KiB after the flood"
    );
}

/// Runs a shell script as `nobody` inside namespace `ns` and returns what it printed; fails
/// the test if it fails.
fn as_nobody_output(ns: &str, script: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "setpriv", "--reuid=65534"])
        .args([
            "--regid=65534",
            "--clear-groups",
            "--",
            "sh",
            "-euc",
            script,
        ])
        .output()
        .expect("run setpriv");
    assert!(
        out.status.success(),
        "the attacker's script failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8")
}

/// The pid each printed `PORT PID ...` line gives for its port.
fn pids_by_port(printed: &str) -> std::collections::HashMap<u16, u64> {
    printed
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            Some((w.next()?.parse().ok()?, w.next()?.parse().ok()?))
        })
        .collect()
}

/// A process the test started, killed by pid when the test ends.
struct Started(std::process::Child);

impl Drop for Started {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Asserts that the flow to `port` was reported and named after `pid`, the attacker (uid
/// `nobody`), from the kernel's record of its send.
fn assert_named_after(lines: &[Value], port: u16, pid: u64) {
    let v = to_port(lines, port)
        .unwrap_or_else(|| panic!("the send to {port} was silenced: {lines:?}"));
    let p = &v["process"];
    assert_eq!(
        p["pid"], pid,
        "the send to {port} named another process: {v}"
    );
    assert_eq!(p["uid"], 65534, "{v}");
    assert_eq!(v["attributed_by"], "connect", "{v}");
}

#[test]
fn a_udp_port_shared_with_a_trusted_daemon_is_named_after_the_sender() {
    let test = "a_udp_port_shared_with_a_trusted_daemon_is_named_after_the_sender";
    if !root_or_skip(test) || !common::require(test, &["ip", "nft", "python3"]) {
        return;
    }
    let net = Net::new();
    let (b4, b6) = (net.b4(), net.b6());
    // The daemon: python, copied where only root can write and trusted by that path, bound
    // to UDP port 5400 in both families with SO_REUSEADDR and SO_REUSEPORT, as mDNS
    // responders are. Its own send (to 7001) is trusted, so not reported.
    let dir = tempfile::tempdir().expect("tempdir");
    let daemon = dir.path().join("ctt-daemon");
    std::fs::copy(PY, &daemon).expect("copy python");
    let daemon = daemon.to_str().expect("utf-8").to_string();
    let (_d, cfg) = config_file(&format!(
        "[monitor]\nprotocols = [\"all\"]\n[filter]\nrepeat_after_secs = 0\n\
         [whitelist]\nprocesses = [\"{daemon}\"]\n"
    ));
    let h = Helper::start(&net.a, &["--config", cfg.to_str().expect("path")]);
    let script = format!(
        r#"
import os, socket, time
socks = []
for fam, host in ((socket.AF_INET, "0.0.0.0"), (socket.AF_INET6, "::")):
    s = socket.socket(fam, socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    if fam == socket.AF_INET6:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind((host, 5400))
    socks.append(s)
socks[0].sendto(b"d", ("{b4}", 7001))
print("ready", flush=True)
time.sleep(30)
"#
    );
    let mut child = Net::cmd(&net.a, &[&daemon, "-c", &script])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("daemon");
    let stdout = child.stdout.take().expect("stdout");
    let _daemon = Started(child);
    let mut ready = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(stdout), &mut ready)
        .expect("daemon output");
    assert_eq!(ready.trim(), "ready");
    // The attacker binds the same port (SO_REUSEADDR is enough across users) and sends:
    // once and exits at once (7002), keeping its socket a while (7003), over IPv6 (7004).
    let send = |fam: &str, host: &str, dst: &str, port: u16, hold: f32| {
        let v6only = if fam == "AF_INET6" {
            "s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1); "
        } else {
            ""
        };
        format!(
            "{PY} -c \"import os, socket, time; s = socket.socket(socket.{fam}, socket.SOCK_DGRAM); \
             s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); {v6only}\
             s.bind(('{host}', 5400)); s.sendto(b'a', ('{dst}', {port})); \
             print({port}, os.getpid(), flush=True); time.sleep({hold})\"\n"
        )
    };
    let script = [
        send("AF_INET", "0.0.0.0", &b4, 7002, 0.0),
        send("AF_INET", "0.0.0.0", &b4, 7003, 1.0),
        send("AF_INET6", "::", &b6, 7004, 0.0),
    ]
    .concat();
    let pids = pids_by_port(&as_nobody_output(&net.a, &script));
    let lines = h.collect(Duration::from_secs(2));
    assert!(
        to_port(&lines, 7001).is_none(),
        "the trusted daemon's own send was reported: {lines:?}"
    );
    for port in [7002, 7003, 7004] {
        assert_named_after(&lines, port, pids[&port]);
        assert_eq!(to_port(&lines, port).unwrap()["local_port"], 5400);
    }
}

#[test]
fn a_connected_udp_socket_held_by_a_trusted_program_is_named_after_the_sender() {
    let test = "a_connected_udp_socket_held_by_a_trusted_program_is_named_after_the_sender";
    if !root_or_skip(test) || !common::require(test, &["ip", "nft", "python3"]) {
        return;
    }
    let net = Net::new();
    let b4 = net.b4();
    // The person trusts sleep, a system file.
    let (_d, cfg) = config_file(
        "[monitor]\nprotocols = [\"all\"]\n[filter]\nrepeat_after_secs = 0\n\
         [whitelist]\nprocesses = [\"sleep\"]\n",
    );
    let h = Helper::start(&net.a, &["--config", cfg.to_str().expect("path")]);
    // The attacker connects a UDP socket, hands it to a child that becomes sleep (the socket
    // inherited across exec: sleep now holds it too, and is the newest holder), then sends
    // on it and exits at once (7011), or stays a while (7012).
    let attack = |port: u16, hold: f32| {
        format!(
            "{PY} -c \"import os, socket, time; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); \
             s.connect(('{b4}', {port})); os.set_inheritable(s.fileno(), True); c = os.fork(); \
             c == 0 and os.execv('/usr/bin/sleep', ['sleep', '3']); time.sleep(0.3); \
             s.send(b'p'); print({port}, os.getpid(), c, flush=True); time.sleep({hold})\"\n"
        )
    };
    let script = [attack(7011, 0.0), attack(7012, 0.5)].concat();
    let printed = as_nobody_output(&net.a, &script);
    let pids = pids_by_port(&printed);
    let lines = h.collect(Duration::from_secs(2));
    for port in [7011, 7012] {
        assert_named_after(&lines, port, pids[&port]);
    }
    // The children (sleep) are left to end by themselves within 3 s; their pids were printed.
    for line in printed.lines() {
        if let Some(pid) = line.split_whitespace().nth(2).and_then(|p| p.parse().ok()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// The ids of the send-hook programs the process `pid` has attached (its cgroup links'
/// `prog_id`, from `/proc/PID/fdinfo`).
fn send_hook_programs(pid: u32) -> Vec<u32> {
    let mut ids = Vec::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).expect("fdinfo") {
        let info = std::fs::read_to_string(fd.expect("entry").path()).unwrap_or_default();
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
        };
        // The UDP send hooks, and the TCP connect's sock_ops program.
        let sendmsg = matches!(field("attach_type:").as_deref(), Some("14" | "15" | "3"));
        if field("link_type:").as_deref() == Some("cgroup") && sendmsg {
            ids.extend(field("prog_id:").and_then(|v| v.parse::<u32>().ok()));
        }
    }
    ids.sort_unstable();
    ids
}

/// Whether every one of `ids` is attached to the root cgroup's UDP send hooks or its
/// `sock_ops` hook.
fn attached(ids: &[u32]) -> bool {
    use conntrack_tray_helper::attribution::{send_hook, sock_ops};
    use conntrack_tray_helper::flow::Family;
    let mut all = send_hook::attached(Family::Ipv4).expect("query the root cgroup");
    all.extend(send_hook::attached(Family::Ipv6).expect("query the root cgroup"));
    all.extend(sock_ops::attached().expect("query the root cgroup"));
    ids.iter().all(|id| all.contains(id))
}

#[test]
fn the_cgroup_programs_leave_with_the_helper_even_killed_and_displace_no_one() {
    let test = "the_cgroup_programs_leave_with_the_helper_even_killed_and_displace_no_one";
    if !root_or_skip(test) || !common::require(test, &["ip", "nft"]) {
        return;
    }
    let (one, two) = (Net::new(), Net::new());
    let mut first = Helper::start(&one.a, &[]);
    let second = Helper::start(&two.a, &[]);
    let (a, b) = (
        send_hook_programs(first.pid()),
        send_hook_programs(second.pid()),
    );
    assert_eq!(
        (a.len(), b.len()),
        (3, 3),
        "one send program per family and the connect's: {a:?} {b:?}"
    );
    // Both at once, on the same root cgroup: neither displaced the other.
    assert!(attached(&a) && attached(&b), "{a:?} {b:?}");
    // SIGKILL: no exit handler runs, and still nothing of it is left attached.
    first.child.kill().expect("kill");
    first.child.wait().expect("wait");
    let gone = (0..100).any(|_| {
        std::thread::sleep(Duration::from_millis(20));
        a.iter().all(|id| !attached(&[*id]))
    });
    assert!(
        gone,
        "the killed helper's programs {a:?} are still attached"
    );
    assert!(attached(&b), "the other helper's programs went too: {b:?}");
}

/// A flood of DNS packets faster than the capture can read them (here: while the helper is
/// stopped, 60,000 answers from a server's port 53, far more than the capture's buffer holds)
/// loses names, and the helper says so instead of going quiet: the kernel's drop counter
/// (`PACKET_STATISTICS`) becomes an `error` line once the helper runs again.
#[test]
fn a_dns_flood_that_overflows_the_capture_is_reported() {
    let test = "a_dns_flood_that_overflows_the_capture_is_reported";
    if !root_or_skip(test) || !common::require(test, &["ip", "nft", "python3", "kill"]) {
        return;
    }
    let net = Net::new();
    let h = Helper::start(&net.a, &[]);
    let (a4, b4) = (net.a4(), net.b4());
    let stop = |sig: &str| {
        let ok = Command::new("kill")
            .args([sig, &h.pid().to_string()])
            .status()
            .expect("kill")
            .success();
        assert!(ok, "kill {sig}");
    };
    stop("-STOP");
    let flood = format!(
        "import socket\n\
         s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n\
         s.bind(('{b4}', 53))\n\
         m = bytes.fromhex('123481800001000000000000') + b'\\x01x\\x04test\\x00\\x00\\x01\\x00\\x01'\n\
         for i in range(60000):\n\
         \x20   s.sendto(m, ('{a4}', 40053))\n"
    );
    let out = Command::new("ip")
        .args(["netns", "exec", &net.b, PY, "-c", &flood])
        .output()
        .expect("flood");
    stop("-CONT");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let told = h.wait_for(Duration::from_secs(10), |v| {
        v["type"] == "error"
            && v["message"]
                .as_str()
                .is_some_and(|m| m.contains("DNS capture dropped"))
    });
    let told = told.expect("the capture's drops are reported");
    let n: u64 = told["message"]
        .as_str()
        .and_then(|m| m.split("dropped ").nth(1)?.split(' ').next()?.parse().ok())
        .unwrap_or(0);
    assert!(n > 1000, "{told}");
}
