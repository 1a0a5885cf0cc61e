//! The watched program attacks the monitor: each test plays a hostile program of the person's
//! own uid (here `nobody`, through `setpriv`) against the real helper, in network namespaces
//! the test makes, and checks that the helper neither silences it nor names it falsely.
//! THREAT_MODEL.md says what the helper promises against such a program.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a test that cannot set up must fail loudly

mod common;

use std::process::Command;
use std::time::Duration;

use common::nobody::{as_nobody, as_nobody_output};
use common::{config_file, root_or_skip, to_port, Helper, Net, PY};
use serde_json::Value;

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
