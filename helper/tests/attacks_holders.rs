//! The watched program attacks the monitor through the sockets it holds: thousands of them,
//! to make every lookup slow, or one shared with a trusted program, to borrow its name. Each
//! test plays the hostile program as `nobody` against the real helper, in network namespaces
//! the test makes. THREAT_MODEL.md says what the helper promises against such a program.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a test that cannot set up must fail loudly

mod common;

use std::time::Duration;

use common::{config_file, connections, root_or_skip, to_port, Helper, Net, PY};
use serde_json::Value;

/// Runs a shell script as `nobody` inside namespace `ns`, allowed `nofile` open fds (set as
/// root, before the privileges are dropped, so it may exceed the usual hard limit); returns
/// its standard output and fails the test if it fails.
fn as_nobody_with_fds(ns: &str, nofile: u32, script: &str) -> String {
    let limit = format!("--nofile={nofile}:{nofile}");
    common::nobody::as_nobody_under(&["prlimit", &limit, "--"], ns, script)
}

/// The `pid NAME N` lines a script printed, by name.
fn pids_printed(stdout: &str) -> std::collections::HashMap<String, u64> {
    stdout
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            (it.next()? == "pid").then_some(())?;
            Some((it.next()?.to_string(), it.next()?.parse().ok()?))
        })
        .collect()
}

#[test]
fn ten_thousand_sockets_neither_stall_the_helper_nor_hide_their_holders_flows() {
    let test = "ten_thousand_sockets_neither_stall_the_helper_nor_hide_their_holders_flows";
    if !root_or_skip(test) || !common::require(test, &["ip", "nft", "setpriv", "prlimit"]) {
        return;
    }
    let mut net = Net::new();
    net.serve(&net.b.clone(), "0.0.0.0", &[9100]);
    let (_d, cfg) =
        config_file("[monitor]\nprotocols = [\"all\"]\n[filter]\nrepeat_after_secs = 0\n");
    let h = Helper::start(&net.a, &["--config", cfg.to_str().expect("path")]);
    let cpu_before = common::cpu_secs(h.pid());
    let b = net.b4();
    // One process: 5,000 bound UDP sockets and 5,000 unbound TCP ones, then its own flows.
    // Every socket a flow uses is new, so each flow is a lookup the index must answer with
    // the 10,000 beside it. The first flows warm the index (a table of 10,000 fds is read
    // over several lookups, each within its budget); they may go unnamed, never misnamed.
    const WARM: u16 = 8;
    const FLOWS: u16 = 40;
    let script = format!(
        r#"{PY} -c "
import os, socket, time
held = [socket.socket(socket.AF_INET, socket.SOCK_DGRAM) for _ in range(5000)]
for s in held:
    s.bind(('0.0.0.0', 0))
held += [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(5000)]
print('pid holder', os.getpid(), flush=True)
def udp(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.sendto(b'x', ('{b}', port))
    time.sleep(0.05)
    s.close()
for i in range({WARM}):
    udp(7000 + i)
    time.sleep(0.1)
for i in range({FLOWS}):
    udp(7100 + i)
    t = socket.create_connection(('{b}', 9100), 2)
    time.sleep(0.05)
    t.close()
"
"#
    );
    let out = as_nobody_with_fds(&net.a, 10_200, &script);
    let holder = *pids_printed(&out).get("holder").expect("the holder's pid");
    let lines = h.collect(Duration::from_secs(3));
    let cpu = common::cpu_secs(h.pid()) - cpu_before;
    let udp_to = |port: u16| {
        connections(&lines)
            .into_iter()
            .filter(|v| v["proto"] == "udp" && v["remote_port"] == port)
            .count()
    };
    assert!(
        lines.iter().all(|v| v["type"] != "lost"),
        "nothing may be lost: {lines:?}"
    );
    for port in (7000..7000 + WARM).chain(7100..7100 + FLOWS) {
        assert_eq!(udp_to(port), 1, "UDP flow to {port} reported once");
    }
    let tcp: Vec<&Value> = connections(&lines)
        .into_iter()
        .filter(|v| v["proto"] == "tcp" && v["remote_port"] == 9100)
        .collect();
    assert_eq!(
        tcp.len(),
        usize::from(FLOWS),
        "every TCP connection reported"
    );
    for v in connections(&lines) {
        let pid = v["process"]["pid"].as_u64();
        assert!(pid.is_none() || pid == Some(holder), "misnamed: {v}");
    }
    // Once the index knows the 10,000, every flow is named: the holder's pid, each.
    let named = |v: &&&Value| v["process"]["pid"].as_u64() == Some(holder);
    let measured: Vec<&Value> = connections(&lines)
        .into_iter()
        .filter(|v| v["proto"] == "udp" && v["remote_port"].as_u64().is_some_and(|p| p >= 7100))
        .collect();
    assert_eq!(measured.iter().filter(named).count(), usize::from(FLOWS));
    assert_eq!(tcp.iter().filter(named).count(), usize::from(FLOWS));
    // Not asserted (timing is the benchmark's, row f), but shown: what it cost the helper.
    eprintln!(
        "{test}: helper CPU {:.2} s for {} flows",
        cpu,
        2 * FLOWS + WARM
    );
}

/// A socket the whitelisted program shares with a copy of its own (passed over `SCM_RIGHTS`,
/// or inherited across `fork`): the copy's sends on it are reported, named after the copy, as
/// the kernel's send record has it; the trusted program's own sends on it stay silent.
#[test]
fn a_socket_shared_with_a_whitelisted_program_is_named_after_the_one_that_sent() {
    let test = "a_socket_shared_with_a_whitelisted_program_is_named_after_the_one_that_sent";
    if !root_or_skip(test) || !common::require(test, &["ip", "nft", "setpriv", "prlimit"]) {
        return;
    }
    let trusted = std::fs::canonicalize(PY).expect("python's real path");
    let trusted = trusted.to_str().expect("utf-8 path");
    let net = Net::new();
    // The person trusts the system's python; the attacker runs a copy of its own.
    let (_d, cfg) = config_file(&format!(
        "[monitor]\nprotocols = [\"all\"]\n[filter]\nrepeat_after_secs = 0\n\
         [whitelist]\nprocesses = [\"{trusted}\"]\n"
    ));
    let h = Helper::start(&net.a, &["--config", cfg.to_str().expect("path")]);
    let b = net.b4();
    // 1. SCM_RIGHTS: the trusted program sends on its socket alone (silent), then passes it
    //    to the copy, which sends on it while the trusted one still holds it.
    // 2. fork: the trusted program sends alone (silent), then runs the copy with the socket
    //    inherited, and the copy sends on it.
    let script = format!(
        r#"
d=$(mktemp -d)
cp {trusted} "$d/evil"
cd "$d"
"$d/evil" -c "
import os, socket
l = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
l.bind('pass.sock'); l.listen(1)
print('pid receiver', os.getpid(), flush=True)
open('ready', 'w').close()
c, _ = l.accept()
_, fds, _, _ = socket.recv_fds(c, 1, 1)
s = socket.socket(fileno=fds[0])
s.sendto(b'a', ('{b}', 7201))
c.sendall(b'sent')
" &
while [ ! -e ready ]; do sleep 0.05; done
{trusted} -c "
import os, socket, subprocess, time
print('pid sender', os.getpid(), flush=True)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.bind(('0.0.0.0', 0))
s.sendto(b'w', ('{b}', 7200))
time.sleep(1)
u = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
u.connect('pass.sock')
socket.send_fds(u, [b'x'], [s.fileno()])
u.recv(4)
time.sleep(1)
t = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
t.bind(('0.0.0.0', 0))
t.sendto(b'w', ('{b}', 7202))
time.sleep(1)
code = 'import os, socket; print(\'pid child\', os.getpid(), flush=True); '
code += 's = socket.socket(fileno=%d); s.sendto(b\'c\', (\'{b}\', 7203)); s.detach()' % t.fileno()
subprocess.run(['$d/evil', '-c', code], pass_fds=[t.fileno()], check=True)
time.sleep(1)
"
wait
rm -rf "$d"
"#
    );
    let out = as_nobody_with_fds(&net.a, 1024, &script);
    let pids = pids_printed(&out);
    let (receiver, child) = (pids["receiver"], pids["child"]);
    let lines = h.collect(Duration::from_secs(2));
    for port in [7200, 7202] {
        assert!(
            to_port(&lines, port).is_none(),
            "the trusted program alone on its socket is whitelisted ({port}): {lines:?}"
        );
    }
    // The kernel recorded each send: the program that really sent is named, and it is not the
    // whitelisted one.
    for (port, sent_by) in [(7201, receiver), (7203, child)] {
        let v = to_port(&lines, port).unwrap_or_else(|| {
            panic!("the shared socket's flow to {port} was silenced: {lines:?}")
        });
        assert_eq!(v["process"]["pid"].as_u64(), Some(sent_by), "{v}");
    }
}

/// A listening socket the whitelisted program hands to a copy of its own (inherited across
/// `fork`, as a server's workers have it): no kernel record says which of them will accept,
/// so the inbound connection is reported with both holders, and the whitelist entry for one
/// of them does not silence it. Before the copy holds it, the same connection is silent.
#[test]
fn an_inbound_connection_to_a_listener_shared_with_a_copy_is_reported_with_both_holders() {
    let test =
        "an_inbound_connection_to_a_listener_shared_with_a_copy_is_reported_with_both_holders";
    if !root_or_skip(test) || !common::require(test, &["ip", "nft", "setpriv", "prlimit"]) {
        return;
    }
    let trusted = std::fs::canonicalize(PY).expect("python's real path");
    let trusted = trusted.to_str().expect("utf-8 path");
    let mut net = Net::new();
    let (_d, cfg) = config_file(&format!(
        "[filter]\nrepeat_after_secs = 0\n[whitelist]\nprocesses = [\"{trusted}\"]\n"
    ));
    let h = Helper::start(&net.a, &["--config", cfg.to_str().expect("path")]);
    // Marker files in a folder both sides see: the listener's side says when it is ready,
    // the connecting side (root, in the other namespace) when it has connected.
    let marks = tempfile::tempdir().expect("tmp");
    std::fs::set_permissions(
        marks.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o777),
    )
    .expect("chmod");
    let m = marks.path().display().to_string();
    let a = net.a4();
    let wait = |f: &str| {
        format!("i=0; while [ ! -e {m}/{f} ] && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done")
    };
    let connect =
        format!("{PY} -c \"import socket; socket.create_connection(('{a}', 7300), 2).close()\"");
    let client = format!(
        "{}; {connect}; touch {m}/c1; {}; {connect}; touch {m}/c2",
        wait("l1"),
        wait("l2")
    );
    net.spawn(Net::cmd(&net.b, &["sh", "-c", &client]));
    // The server accepts the first connection alone, then runs a worker (a copy of python
    // under another name) with the listener inherited, which holds it while the second comes.
    let script = format!(
        r#"
d=$(mktemp -d)
cp {trusted} "$d/evil"
cat > "$d/worker.py" <<'END'
import os, sys, time
print('pid worker', os.getpid(), flush=True)
open(sys.argv[1] + '/l2', 'w').close()
for _ in range(200):
    if os.path.exists(sys.argv[1] + '/c2'):
        break
    time.sleep(0.05)
time.sleep(1)
END
cat > "$d/server.py" <<'END'
import os, socket, subprocess, sys, time
m, evil, worker = sys.argv[1:4]
print('pid server', os.getpid(), flush=True)
l = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
l.bind(('0.0.0.0', 7300))
l.listen(8)
open(m + '/l1', 'w').close()
for _ in range(200):
    if os.path.exists(m + '/c1'):
        break
    time.sleep(0.05)
c, _ = l.accept()
c.close()
time.sleep(0.5)
subprocess.run([evil, worker, m], pass_fds=[l.fileno()], check=True)
END
{trusted} "$d/server.py" {m} "$d/evil" "$d/worker.py"
rm -rf "$d"
"#
    );
    let out = as_nobody_with_fds(&net.a, 1024, &script);
    let pids = pids_printed(&out);
    let (server, worker) = (pids["server"], pids["worker"]);
    assert!(
        marks.path().join("c2").exists(),
        "the client did not connect twice"
    );
    let lines = h.collect(Duration::from_secs(2));
    let inbound: Vec<&Value> = connections(&lines)
        .into_iter()
        .filter(|v| v["local_port"] == 7300)
        .collect();
    assert_eq!(
        inbound.len(),
        1,
        "the first connection (the server alone) is silent, the second is not: {lines:?}"
    );
    let v = inbound[0];
    let mut holders: Vec<u64> = v["also_held_by"]
        .as_array()
        .unwrap_or_else(|| panic!("no other holders listed: {v}"))
        .iter()
        .filter_map(|p| p["pid"].as_u64())
        .collect();
    holders.extend(v["process"]["pid"].as_u64());
    holders.sort_unstable();
    let mut want = vec![server, worker];
    want.sort_unstable();
    assert_eq!(holders, want, "both holders, and only they: {v}");
    assert!(v.get("also_held_by_more").is_none(), "{v}");
}
