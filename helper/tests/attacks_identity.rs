//! The watched program claims another's identity: it borrows a whitelisted program's name
//! or files, sets the executable `/proc` shows, becomes a whitelisted program after it
//! connected, or hands its socket to one while it connects. Each test plays the hostile
//! program as `nobody` (through `setpriv`) against the real helper, in network namespaces
//! the test makes, and checks that the flow is neither silenced nor named falsely.
//! THREAT_MODEL.md says what the helper promises against such a program.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a test that cannot set up must fail loudly

mod common;

use std::process::Command;
use std::time::Duration;

use common::nobody::{as_nobody, as_nobody_output, connect_py};
use common::{config_file, root_or_skip, to_port, Helper, Net, PY};
use serde_json::Value;

/// The helper in `net.a`, with only `/usr/bin/sleep` whitelisted: the program the hostile one
/// passes itself off as. The guard keeps the config file.
fn sleep_whitelisted(net: &Net) -> (tempfile::TempDir, Helper) {
    let (d, cfg) = config_file(
        "[monitor]\nprotocols = [\"all\"]\n[whitelist]\nprocesses = [\"/usr/bin/sleep\"]\n",
    );
    let h = Helper::start(&net.a, &["--config", cfg.to_str().expect("path")]);
    (d, h)
}

/// One test of this file at a time. Every helper's `sock_ops` program sees every connect on
/// the machine, in every namespace, so one test's flood of connects evicts the records of a
/// test running beside it (a hand-off read late then said "holds no record" instead of
/// naming the other process).
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static ONE: std::sync::Mutex<()> = std::sync::Mutex::new(());
    ONE.lock().unwrap_or_else(|e| e.into_inner())
}

/// Sends `sig` (`-STOP`, `-CONT`) to the helper: holding it back as a flood would.
fn signal(h: &Helper, sig: &str) {
    let st = Command::new("kill")
        .args([sig, &h.pid().to_string()])
        .status()
        .expect("kill");
    assert!(st.success(), "kill {sig}");
}

/// What the helper printed, once `nobody` has connected to the marker port 9012 of `net.b`
/// (which the test serves): that line shows the helper was watching, so a flow missing
/// beside it was silenced, not unseen.
fn after_marker(net: &Net, h: &Helper) -> Vec<Value> {
    let marker = connect_py(&net.b4(), 9012, None);
    as_nobody(&net.a, &format!("{PY} -c \"{marker}\""));
    let lines = h.collect(Duration::from_secs(2));
    assert!(
        to_port(&lines, 9012).is_some(),
        "the helper saw nothing: {lines:?}"
    );
    lines
}

/// Asserts that `v`'s process is not verified, for a reason that says `why`.
fn assert_unverified(v: &Value, why: &str) {
    let p = &v["process"];
    assert_eq!(p["exe_verified"], false, "{v}");
    let said = p["exe_unverified"].as_str().unwrap_or("");
    assert!(said.contains(why), "not unverified for {why:?}: {v}");
}

#[test]
fn a_program_cannot_borrow_a_whitelisted_identity() {
    let _one = one_at_a_time();
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
    let _one = one_at_a_time();
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
    assert_unverified(v, "PR_SET_MM_MAP");
}

#[test]
fn a_program_that_becomes_a_whitelisted_one_after_connecting_is_not_taken_for_it() {
    let _one = one_at_a_time();
    let test = "a_program_that_becomes_a_whitelisted_one_after_connecting_is_not_taken_for_it";
    if !root_or_skip(test) || !common::require(test, &["ip", "nft", "setpriv", "python3", "kill"]) {
        return;
    }
    let mut net = Net::new();
    net.serve(&net.b.clone(), "0.0.0.0", &[9011, 9012]);
    let (_d, h) = sleep_whitelisted(&net);
    let b = net.b4();
    // The helper is held back while the program connects and then execs the whitelisted
    // sleep, under sleep's name from the start: the watched code can slow the helper down
    // (a flood) for as long as an exec takes. The socket is kept across the exec.
    signal(&h, "-STOP");
    let script = format!(
        "{PY} -c \"import ctypes, os, socket; ctypes.CDLL(None).prctl(15, b'sleep', 0, 0, 0); \
         s = socket.create_connection(('{b}', 9011), 2); os.set_inheritable(s.fileno(), True); \
         os.execv('/usr/bin/sleep', ['sleep', '5'])\" >/dev/null 2>&1 &\nsleep 0.3"
    );
    as_nobody(&net.a, &script);
    signal(&h, "-CONT");
    let lines = after_marker(&net, &h);
    let v = to_port(&lines, 9011)
        .unwrap_or_else(|| panic!("the connection was silenced as sleep: {lines:?}"));
    let p = &v["process"];
    assert_eq!(p["uid"], 65534, "{v}");
    assert_unverified(v, "after it connected");
}

#[test]
fn a_socket_handed_to_a_whitelisted_program_while_it_connects_is_not_named_after_it() {
    let _one = one_at_a_time();
    hand_off(
        "a_socket_handed_to_a_whitelisted_program_while_it_connects_is_not_named_after_it",
        Duration::from_millis(300),
        false,
    );
}

/// The same, read more than a second after the connects (a flood can delay the helper so):
/// the records are out of their window, and the holders speak, held against the records.
#[test]
fn a_socket_handed_to_a_whitelisted_program_is_not_named_after_it_even_read_late() {
    let _one = one_at_a_time();
    hand_off(
        "a_socket_handed_to_a_whitelisted_program_is_not_named_after_it_even_read_late",
        Duration::from_millis(1500),
        false,
    );
}

/// The same, after a flood of connects in a network namespace of the program's own (none of
/// it reaches the helper) while the helper is held back: the flood fills the ring the helper
/// is not draining, and the records filed before the ring refused one count as none.
#[test]
fn a_socket_handed_to_a_whitelisted_program_is_not_named_after_it_after_a_flood() {
    let _one = one_at_a_time();
    hand_off(
        "a_socket_handed_to_a_whitelisted_program_is_not_named_after_it_after_a_flood",
        Duration::from_millis(300),
        true,
    );
}

/// A program connects to a server of its own that lets SYNs wait, so the handshake is still
/// under way when the helper reads the flow, and hands the socket to the whitelisted sleep;
/// the helper is held back (`SIGSTOP`) for `late`, and for a `flood` of 74,000 refused
/// connects (the records' ring holds 5,041).
fn hand_off(test: &str, late: Duration, flood: bool) {
    let tools = ["ip", "nft", "setpriv", "python3", "kill", "unshare"];
    if !root_or_skip(test) || !common::require(test, &tools) {
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
    let (_d, h) = sleep_whitelisted(&net);
    let b = net.b4();
    signal(&h, "-STOP");
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
    if flood {
        evict_records(&net.a);
    }
    signal(&h, "-CONT");
    let lines = after_marker(&net, &h);
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
    // A flood while the helper is held back fills the records' ring: what does not fit is
    // lost, not what it holds, but a record filed before the ring refused one may have been
    // outdated by it, so it counts as none: both flows hold no record. A flood while the
    // helper runs pushes the records out (the pickup tests below).
    if flood {
        for port in [9013, 9014] {
            let v = line(port);
            assert_eq!(v["process"]["exe_verified"], false, "{v}");
            assert!(why(v).contains("holds no record"), "{v}");
        }
        return;
    }
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
        assert!(why(v).contains("names another process"), "{v}");
    }
}

/// What the record check leaves alone: a connection from before the helper (and before
/// conntrack tracked anything) has no record, and conntrack picks it up under way at its next
/// packet. Its holder still names it, so a whitelisted program's old connection stays
/// silenced instead of being reported as evicted.
#[test]
fn a_connection_from_before_the_helper_is_still_named_after_its_holder() {
    let _one = one_at_a_time();
    let test = "a_connection_from_before_the_helper_is_still_named_after_its_holder";
    let tools = ["ip", "nft", "setpriv", "python3", "conntrack"];
    if !root_or_skip(test) || !common::require(test, &tools) {
        return;
    }
    let mut net = Net::new();
    net.serve(&net.b.clone(), "0.0.0.0", &[9012, 9017]);
    let b = net.b4();
    // Keepalives every second: the packets that conntrack, once on, picks the connection up by.
    as_nobody(
        &net.a,
        &format!(
            "{PY} -c \"import socket, subprocess; s = socket.create_connection(('{b}', 9017)); \
             s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1); s.setsockopt(6, 4, 1); \
             s.setsockopt(6, 5, 1); subprocess.Popen(['/usr/bin/sleep', '20'], \
             pass_fds=[s.fileno()], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\""
        ),
    );
    let (_d, h) = sleep_whitelisted(&net);
    std::thread::sleep(Duration::from_secs(3));
    let lines = after_marker(&net, &h);
    // conntrack has it: picked up while the helper watched.
    let listed = Net::cmd(&net.a, &["conntrack", "-L", "-p", "tcp", "--dport", "9017"])
        .output()
        .expect("conntrack -L");
    let listed = String::from_utf8_lossy(&listed.stdout);
    assert!(listed.contains("dport=9017"), "not picked up: {listed}");
    assert!(
        to_port(&lines, 9017).is_none(),
        "the whitelisted holder's old connection was reported: {lines:?}"
    );
}

/// A connection the helper saw open, picked up again with no record, is held to the record
/// it should have: a review made one look like one from before the helper. Connect (reported
/// under the program's own name), hand the socket to sleep, evict the record, and let
/// conntrack's entry end while the connection stays open (a CLOSE_WAIT times out in 60 s;
/// here `conntrack -D`). The next packet is picked up under way, with no record: the tuple
/// was seen from its SYN, so it is not exempt. The client's keepalives make that packet.
#[test]
fn a_connection_picked_up_again_is_not_taken_for_one_from_before_the_helper() {
    let _one = one_at_a_time();
    picked_up_again(
        "a_connection_picked_up_again_is_not_taken_for_one_from_before_the_helper",
        false,
    );
}

/// The same with the server's keepalives: conntrack's new entry then starts at the peer's
/// packet, its original direction inbound. A review found it taken for an inbound connection,
/// which no record is asked about, and silenced as sleep: it is this machine's outbound one.
#[test]
fn a_connection_picked_up_again_at_the_peer_s_packet_is_still_outbound() {
    let _one = one_at_a_time();
    picked_up_again(
        "a_connection_picked_up_again_at_the_peer_s_packet_is_still_outbound",
        true,
    );
}

fn picked_up_again(test: &str, by_server: bool) {
    let tools = ["ip", "nft", "setpriv", "python3", "conntrack", "unshare"];
    if !root_or_skip(test) || !common::require(test, &tools) {
        return;
    }
    let mut net = Net::new();
    net.serve(&net.b.clone(), "0.0.0.0", &[9012]);
    let port = if by_server { 9019 } else { 9018 };
    if by_server {
        net.start_peer(&net.b.clone(), &["keepalive", "0.0.0.0", "9019"]);
    } else {
        net.serve(&net.b.clone(), "0.0.0.0", &[9018]);
    }
    let b = net.b4();
    let (_d, h) = sleep_whitelisted(&net);
    // Keepalives a second apart from the client, unless the server sends them.
    let keepalive = if by_server {
        ""
    } else {
        "s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1); s.setsockopt(6, 4, 1); \
         s.setsockopt(6, 5, 1); "
    };
    as_nobody(
        &net.a,
        &format!(
            "{PY} -c \"import socket, subprocess; s = socket.create_connection(('{b}', {port})); \
             {keepalive}subprocess.Popen(['/usr/bin/sleep', '60'], pass_fds=[s.fileno()], \
             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)\""
        ),
    );
    evict_records(&net.a);
    // And make the reader forget what it saw connect. To loopback, which it does not
    // report, the connects must not count (the peer's packet is then still known to be of a
    // connection opened here); to the peer, reported, they push it out, and it must still
    // not be taken for a connection from before the helper.
    let to = if by_server {
        "127.0.0.1".to_string()
    } else {
        b.clone()
    };
    forget(&net.a, &to);
    let again = picked_up_after_its_entry_ends(&net, &h, port);
    assert_eq!(again["direction"], "outbound", "{again}");
    // Its record was evicted, and nothing else: not a record of another process read late.
    assert_unverified(&again, "holds no record");
}

/// Ends conntrack's entry of the connection to `port` (`conntrack -D`, standing in for an
/// expiry) and returns the line of its pickup at the next keepalive (one a second), named by
/// the socket's holder; nothing may have been lost on the way.
fn picked_up_after_its_entry_ends(net: &Net, h: &Helper, port: u16) -> Value {
    let dport = port.to_string();
    let st = Net::cmd(&net.a, &["conntrack", "-D", "-p", "tcp", "--dport", &dport])
        .output()
        .expect("conntrack -D");
    assert!(st.status.success(), "no entry to end: {st:?}");
    std::thread::sleep(Duration::from_secs(3));
    let lines = after_marker(net, h);
    // None of the flush lost (a lost SYN event would leave the tuple remembered).
    assert!(
        !lines.iter().any(|v| v["type"] == "lost"),
        "events were lost in the flush"
    );
    let picked: Vec<&Value> = lines
        .iter()
        .filter(|v| v["remote_port"] == port && v["attributed_by"] == "socket")
        .collect();
    let [again] = picked[..] else {
        panic!("the pickup was silenced as sleep, or not seen: {lines:?}");
    };
    again.clone()
}

/// 20,000 refused connects to `to` from namespace `ns`, through the helper's conntrack: more
/// than the 16,384 SYNs the reader keeps.
fn forget(ns: &str, to: &str) {
    let forget = format!(
        "import socket\nfor i in range(20000):\n    s = socket.socket()\n    \
         s.connect_ex(('{to}', 1 + i % 7))\n    s.close()\n"
    );
    let hex: String = forget.bytes().map(|c| format!("{c:02x}")).collect();
    as_nobody(
        ns,
        &format!("{PY} -c \"exec(bytes.fromhex('{hex}').decode())\""),
    );
}

/// A connection listed when the helper started is exempt, not its tuple: a review reset such
/// a connection after the start and connected the same tuple again (`SO_REUSEADDR`, the same
/// local port), handed the socket to sleep, pushed the tuple out of the reader's memory and
/// evicted the record. The new SYN takes the tuple off the list.
#[test]
fn a_listed_connection_s_tuple_connected_again_is_not_from_before() {
    let _one = one_at_a_time();
    let test = "a_listed_connection_s_tuple_connected_again_is_not_from_before";
    let tools = [
        "ip",
        "ss",
        "nft",
        "setpriv",
        "python3",
        "conntrack",
        "unshare",
        "kill",
    ];
    if !root_or_skip(test) || !common::require(test, &tools) {
        return;
    }
    let mut net = Net::new();
    net.serve(&net.b.clone(), "0.0.0.0", &[9012, 9020]);
    let b = net.b4();
    // Before the helper: from port 45020, held by a sleep, closed with a reset when that ends
    // (SO_LINGER 0: no TIME_WAIT to keep the tuple).
    let connect = |then: &str| {
        format!(
            "{PY} -c \"import socket, struct, subprocess; s = socket.socket(); \
             s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(('0.0.0.0', 45020)); \
             s.connect(('{b}', 9020)); {then}p = subprocess.Popen(['/usr/bin/sleep', '60'], \
             pass_fds=[s.fileno()], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL); \
             print(p.pid)\""
        )
    };
    let linger = "s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack('ii', 1, 0)); ";
    let first = as_nobody_output(&net.a, &connect(linger));
    let (_d, h) = sleep_whitelisted(&net);
    let st = Command::new("kill")
        .arg(first.trim())
        .status()
        .expect("kill");
    assert!(st.success(), "kill the first holder {first:?}");
    // Until its socket is gone (the reset sent), at most 5 s.
    let gone = (0..50).any(|_| {
        std::thread::sleep(Duration::from_millis(100));
        let out = Net::cmd(&net.a, &["ss", "-Htan", "sport = :45020"])
            .output()
            .expect("ss");
        out.status.success() && out.stdout.iter().all(u8::is_ascii_whitespace)
    });
    assert!(gone, "the first connection's socket stayed");
    let keepalive = "s.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1); \
                     s.setsockopt(6, 4, 1); s.setsockopt(6, 5, 1); ";
    as_nobody(&net.a, &connect(keepalive));
    evict_records(&net.a);
    forget(&net.a, &b);
    let again = picked_up_after_its_entry_ends(&net, &h, 9020);
    assert_unverified(&again, "holds no record");
}

/// Refused connects with distinct tuples, in a user and network namespace of the program's
/// own: none of it reaches the helper, and the helper's index of the connect records
/// (32,768, drained from the ring whenever it is half full) loses what it held: 74,000.
fn evict_records(ns: &str) {
    // Distinct tuples: one destination port would repeat the ~28,000 source ports.
    let connects = "import socket\n\
                    for i in range(74000):\n    s = socket.socket()\n    \
                    s.connect_ex(('127.0.0.1', 1 + i % 7))\n    s.close()\n";
    let hex: String = connects.bytes().map(|c| format!("{c:02x}")).collect();
    let run = format!("exec(bytes.fromhex('{hex}').decode())");
    as_nobody(
        ns,
        &format!("unshare -rn sh -c \"ip link set lo up && {PY} -c \\\"{run}\\\"\""),
    );
}

#[test]
fn a_connection_a_whitelisted_program_s_first_write_opens_is_not_named_after_it() {
    let _one = one_at_a_time();
    let test = "a_connection_a_whitelisted_program_s_first_write_opens_is_not_named_after_it";
    if !root_or_skip(test) || !common::require(test, &["ip", "nft", "setpriv", "python3"]) {
        return;
    }
    let mut net = Net::new();
    net.serve(&net.b.clone(), "0.0.0.0", &[9012, 9015]);
    let (_d, h) = sleep_whitelisted(&net);
    let b = net.b4();
    // TCP_FASTOPEN_CONNECT (30) and TCP_FASTOPEN_NO_COOKIE (34): connect() only picks the
    // port, and the SYN leaves with the first write, here sleep's --version on its stdout.
    let script = format!(
        "{PY} -c \"import socket, subprocess; s = socket.socket(); s.setsockopt(6, 30, 1); \
         s.setsockopt(6, 34, 1); s.connect(('{b}', 9015)); \
         subprocess.run(['/usr/bin/sleep', '--version'], stdout=s.fileno())\""
    );
    as_nobody(&net.a, &script);
    let lines = after_marker(&net, &h);
    let v = to_port(&lines, 9015)
        .unwrap_or_else(|| panic!("the connection sleep's write opened was silenced: {lines:?}"));
    assert_eq!(v["attributed_by"], "connect", "{v}");
    assert_unverified(v, "TCP Fast Open");
}
