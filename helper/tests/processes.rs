//! Who a flow's process is, beyond its pid: the exec records (path and command line of a
//! program that exited at once), its parents, and processes in other network namespaces on
//! this machine. The real helper against the real kernel, in namespaces made by each test.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a test that cannot set up must fail loudly

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use common::container::{Container, Impostor};
use common::{
    config_file, is_conn_to, one_shots, pid_of, require, root_or_skip, Helper, Net, WAIT,
};
use serde_json::Value;

const ALL_PROTOCOLS: &str = "[monitor]\nprotocols = [\"all\"]\n[filter]\nrepeat_after_secs = 0\n";

/// The tests here run one at a time: one of them steers the kernel's next pid
/// (`ns_last_pid`), which would hand the others' clients each other's pids.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner())
}

/// Each one-shot is reported with its own pid, bash's path and its whole command line.
fn assert_described(lines: &[Value], pids: &[u64], script: &str) {
    assert_eq!(lines.len(), pids.len(), "{lines:?}");
    let wrong: Vec<&Value> = lines
        .iter()
        .filter(|v| {
            let p = &v["process"];
            !pids.contains(&pid_of(v).unwrap_or(0))
                || !p["exe"].as_str().is_some_and(|e| e.ends_with("/bash"))
                || p["cmdline"] != serde_json::json!(["bash", "-c", script])
        })
        .collect();
    let brief: Vec<String> = wrong
        .iter()
        .map(|v| {
            let p = &v["process"];
            format!(
                "pid {} comm {} exe {} cmdline {} exited {} by {}",
                p["pid"], p["comm"], p["exe"], p["cmdline"], p["exited"], v["attributed_by"]
            )
        })
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {} without their exe and command line (pids {pids:?}): {brief:#?}",
        wrong.len(),
        pids.len()
    );
}

fn helper(net: &Net, extra: &[&str]) -> (tempfile::TempDir, Helper) {
    let (d, cfg) = config_file(ALL_PROTOCOLS);
    let mut args = vec!["--config", cfg.to_str().expect("path")];
    args.extend_from_slice(extra);
    let h = Helper::start(&net.a, &args);
    let errors: Vec<Value> = h
        .collect(Duration::from_millis(200))
        .into_iter()
        .filter(|v| v["type"] == "error")
        .collect();
    assert!(errors.is_empty(), "the hooks must load: {errors:?}");
    (d, h)
}

#[test]
fn one_shots_keep_their_exe_and_command_line() {
    let test = "one_shots_keep_their_exe_and_command_line";
    if !root_or_skip(test) || !require(test, &["ip", "nft", "python3", "bash"]) {
        return;
    }
    let _serial = one_at_a_time();
    let mut net = Net::new();
    net.serve(&net.b.clone(), "0.0.0.0", &[8080]);
    let (_d, h) = helper(&net, &[]);
    // Gone microseconds after their packet: only the exec records still know what they ran.
    for (script, port) in [
        (format!("echo x > /dev/udp/{}/5354", net.b4()), 5354),
        (format!("echo x > /dev/tcp/{}/8080", net.b4()), 8080),
        // Nobody listens on 8090: refused at once.
        (format!("echo x > /dev/tcp/{}/8090", net.b4()), 8090),
    ] {
        let (pids, lines) = one_shots(&net, &h, 30, &["bash", "-c", &script], port);
        assert_described(&lines, &pids, &script);
    }
}

#[test]
fn a_reused_pid_never_inherits_an_exited_process_s_record() {
    let test = "a_reused_pid_never_inherits_an_exited_process_s_record";
    if !root_or_skip(test) || !require(test, &["ip", "nft", "python3", "bash"]) {
        return;
    }
    let _serial = one_at_a_time();
    let net = Net::new();
    let (_d, h) = helper(&net, &[]);
    // A bash one-shot leaves an exec record under its pid P; then a forked python child (no
    // exec of its own) is given P again (ns_last_pid), sends and exits. Its record must not
    // be bash's: it is reported without an exe rather than as bash.
    let script = format!(
        r#"
import os, socket, sys, subprocess
hits = 0
for port in range(6000, 6020):
    p = subprocess.Popen(["bash", "-c", "echo x > /dev/udp/{b}/5999"])
    p.wait()
    want = p.pid
    with open("/proc/sys/kernel/ns_last_pid", "w") as f:
        f.write(str(want - 1))
    child = os.fork()
    if child == 0:
        if os.getpid() == want:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.sendto(b"x", ("{b}", port))
        os._exit(0)
    os.waitpid(child, 0)
    if child == want:
        print(port, child, flush=True)
"#,
        b = net.b4()
    );
    let mut c = Net::cmd(&net.a, &["python3", "-c", &script])
        .stdout(Stdio::piped())
        .spawn()
        .expect("python");
    let hits: Vec<(u16, u64)> = BufReader::new(c.stdout.take().expect("stdout"))
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| {
            let (a, b) = l.split_once(' ')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .collect();
    let _ = c.wait();
    assert!(
        hits.len() >= 3,
        "the pid was reused only {} times in 20",
        hits.len()
    );
    let lines = h.collect(Duration::from_secs(2));
    for (port, pid) in hits {
        let v = lines
            .iter()
            .find(|v| is_conn_to(port)(v))
            .unwrap_or_else(|| panic!("no line to {port}: {lines:?}"));
        assert_eq!(pid_of(v), Some(pid), "{v}");
        let p = &v["process"];
        assert_ne!(p["comm"], "bash", "{v}");
        assert!(
            !p["exe"].as_str().is_some_and(|e| e.ends_with("/bash")),
            "the reused pid borrowed bash's record: {v}"
        );
        assert_ne!(
            p["cmdline"][0], "bash",
            "the reused pid borrowed bash's command line: {v}"
        );
    }
}

/// Starts `sh -c SCRIPT` in `a`; the script prints pids on its first line.
fn sh_pids(net: &Net, script: &str) -> (u64, Vec<u64>) {
    let mut c = Net::cmd(&net.a, &["sh", "-c", script])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("sh");
    let outer = u64::from(c.id());
    let mut line = String::new();
    BufReader::new(c.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("pids");
    let _ = c.wait();
    let pids = line
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect();
    (outer, pids)
}

fn chain(v: &Value) -> Vec<(u64, String, bool)> {
    v["process"]["ancestors"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|p| {
                    (
                        p["pid"].as_u64().unwrap_or(0),
                        p["comm"].as_str().unwrap_or("").to_string(),
                        p["exited"].as_bool().unwrap_or(false),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn sh_sh_curl_gives_the_chain_with_the_right_pids() {
    let test = "sh_sh_curl_gives_the_chain_with_the_right_pids";
    if !root_or_skip(test) || !require(test, &["ip", "nft", "python3", "curl"]) {
        return;
    }
    let _serial = one_at_a_time();
    let mut net = Net::new();
    net.serve(&net.b.clone(), "0.0.0.0", &[8080, 8081]);
    let (_d, h) = helper(&net, &[]);
    let me = u64::from(std::process::id());

    // Everyone alive: curl <- sh (inner) <- sh (outer) <- this test.
    let url = format!("http://{}:8080/", net.b4());
    let inner = format!("echo $$; curl -s -m 2 {url} >/dev/null; true");
    let (outer, pids) = sh_pids(&net, &format!("sh -c '{inner}'; true"));
    let v = h.wait_for(WAIT, is_conn_to(8080)).expect("curl's line");
    assert_eq!(v["process"]["comm"], "curl", "{v}");
    let c = chain(&v);
    assert!(c.len() >= 3, "{v}");
    assert_eq!(c[0], (pids[0], "sh".into(), false), "{v}");
    assert_eq!(c[1], (outer, "sh".into(), false), "{v}");
    assert_eq!(c[2].0, me, "{v}");
    let a0 = &v["process"]["ancestors"][0];
    assert_eq!(a0["cmdline"], serde_json::json!(["sh", "-c", inner]), "{v}");
    assert!(a0["exe"].as_str().is_some_and(|e| e.ends_with("sh")), "{v}");
    assert!(v["process"]["cwd"].is_string(), "{v}");

    // The outer sh exits at once: /proc hands the inner one to a reaper, and the outer is
    // described from its exec record.
    let url = format!("http://{}:8081/", net.b4());
    let inner = format!("echo $$; sleep 0.5; curl -s -m 2 {url} >/dev/null; true");
    // (The outer waits until the inner has exec'd: the record names the parent at exec.)
    let outer_script = format!("sh -c '{inner}' & sleep 0.2; exit 0");
    let (outer, pids) = sh_pids(&net, &outer_script);
    let v = h.wait_for(WAIT, is_conn_to(8081)).expect("curl's line");
    let c = chain(&v);
    assert!(c.len() >= 3, "{v}");
    assert_eq!(c[0], (pids[0], "sh".into(), false), "{v}");
    assert_eq!(c[1], (outer, "sh".into(), true), "{v}");
    assert_eq!(c[2].0, me, "{v}");
    // A parent's arguments are cut at 100 characters.
    let a1 = &v["process"]["ancestors"][1]["cmdline"];
    assert_eq!(a1[0], "sh", "{v}");
    let kept: String = outer_script.chars().take(100).collect();
    assert!(a1[2].as_str().is_some_and(|s| s.starts_with(&kept)), "{v}");
}

/// Without the exec hook, the same one-shots still go out, named by pid (the row the
/// benchmark compares).
#[test]
fn without_the_exec_hook_one_shots_are_still_named() {
    let test = "without_the_exec_hook_one_shots_are_still_named";
    if !root_or_skip(test) || !require(test, &["ip", "nft", "bash"]) {
        return;
    }
    let _serial = one_at_a_time();
    let net = Net::new();
    let (_d, h) = helper(&net, &["--no-exec-hook"]);
    let script = format!("echo x > /dev/udp/{}/5354", net.b4());
    let (pids, lines) = one_shots(&net, &h, 5, &["bash", "-c", &script], 5354);
    assert_eq!(lines.len(), 5, "{lines:?}");
    assert!(lines.iter().all(|v| pids.contains(&pid_of(v).unwrap_or(0))));
}

#[test]
fn a_container_s_flows_are_named_after_the_process_inside_it() {
    let test = "a_container_s_flows_are_named_after_the_process_inside_it";
    if !root_or_skip(test) || !require(test, &["ip", "nft", "python3", "curl", "bash"]) {
        return;
    }
    let _serial = one_at_a_time();
    let mut net = Net::new();
    net.serve(&net.b.clone(), "0.0.0.0", &[8080]);
    let ctr = Container::new(&net);
    // The default directions (outbound, inbound): a container's flow is this machine's
    // outbound one.
    let (_d, cfg) = config_file("[filter]\nrepeat_after_secs = 0\n");
    let h = Helper::start(&net.a, &["--config", cfg.to_str().expect("path")]);
    let url = format!("http://{}:8080/", net.b4());
    let pids = Net::run_each(&ctr.ns, &["curl", "-s", "-m", "2", &url], 5);
    let lines: Vec<Value> = h
        .collect(Duration::from_secs(2))
        .into_iter()
        .filter(|v| is_conn_to(8080)(v))
        .collect();
    assert_eq!(lines.len(), 5, "{lines:?}");
    for v in &lines {
        assert!(pids.contains(&pid_of(v).unwrap_or(0)), "{v}");
        assert_eq!(v["process"]["comm"], "curl", "{v}");
        assert_eq!(v["attributed_by"], "container", "{v}");
        assert_eq!(v["direction"], "outbound", "{v}");
        assert_eq!(v["local_ip"], ctr.ip, "{v}");
    }
    // A bash one-shot in the container: gone at once, named from its records.
    let script = format!("echo x > /dev/tcp/{}/8080", net.b4());
    let mut c = Net::cmd(&ctr.ns, &["bash", "-c", &script])
        .spawn()
        .expect("bash");
    let pid = u64::from(c.id());
    let _ = c.wait();
    let v = h.wait_for(WAIT, is_conn_to(8080)).expect("bash's line");
    assert_eq!(pid_of(&v), Some(pid), "{v}");
    assert_eq!(
        v["process"]["cmdline"],
        serde_json::json!(["bash", "-c", script]),
        "{v}"
    );
}

/// A child killed and reaped when dropped, a failed assertion too.
struct Killed(std::process::Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A listener on port 80 that says "ready" and lives a minute at most.
const LISTEN_80: &str = "import socket, time\ns = socket.socket()\ns.bind((\"0.0.0.0\", 80))\ns.listen()\nprint(\"ready\", flush=True)\ntime.sleep(60)";

#[test]
fn a_published_port_s_inbound_flow_is_named_after_the_listener_in_the_container() {
    let test = "a_published_port_s_inbound_flow_is_named_after_the_listener_in_the_container";
    if !root_or_skip(test)
        || !require(
            test,
            &["ip", "nft", "python3", "curl", "setpriv", "unshare"],
        )
    {
        return;
    }
    let _serial = one_at_a_time();
    let mut net = Net::new();
    let ctr = Container::new(&net);
    ctr.publish(&net, 8088, 80);
    let server = u64::from(net.serve(&ctr.ns.clone(), "0.0.0.0", &[80]));
    let (_d, cfg) = config_file("[filter]\nrepeat_after_secs = 0\n");
    let h = Helper::start(&net.a, &["--config", cfg.to_str().expect("path")]);
    let url = format!("http://{}:8088/", net.a4());
    let to_published = |v: &Value| v["type"] == "connection" && v["local_port"] == 8088;
    let clients = Net::run_each(&net.b, &["curl", "-s", "-m", "2", &url], 3);
    let lines: Vec<Value> = h
        .collect(Duration::from_secs(2))
        .into_iter()
        .filter(to_published)
        .collect();
    assert_eq!(lines.len(), clients.len(), "{lines:?}");
    for v in &lines {
        assert_eq!(v["direction"], "inbound", "{v}");
        assert_eq!(v["local_ip"], net.a4(), "{v}");
        assert_eq!(v["remote_ip"], net.b4(), "{v}");
        assert_eq!(pid_of(v), Some(server), "{v}");
        assert_eq!(v["attributed_by"], "container", "{v}");
        assert_eq!(v["process"]["context"]["netns_own"], false, "{v}");
    }
    // What the watched program can do as any user: a user and network namespace of its own,
    // the container's address on a veth there, a listener on the port. It is never asked
    // (its namespace is not of the machine's user namespace): the container is named still.
    let mut liar = Net::cmd(
        &net.a,
        &[
            "setpriv",
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            "unshare",
            "-Urn",
            "sh",
            "-c",
            &format!(
                "ip link add eth0 type veth peer name eth1 && ip addr add {}/24 dev eth0 && \
             ip link set eth0 up && exec python3 -c '{LISTEN_80}'",
                ctr.ip
            ),
        ],
    )
    .stdout(Stdio::piped())
    .spawn()
    .map(Killed)
    .expect("the impostor");
    let mut said = String::new();
    let _ = BufReader::new(liar.0.stdout.take().expect("stdout")).read_line(&mut said);
    let liar_pid = u64::from(liar.0.id());
    assert_eq!(said.trim(), "ready", "the impostor did not listen");
    std::thread::sleep(Duration::from_millis(1200));
    Net::run_each(&net.b, &["curl", "-s", "-m", "2", &url], 1);
    let v = h.wait_for(WAIT, to_published).expect("the flow's line");
    drop(liar);
    assert_ne!(pid_of(&v), Some(liar_pid), "{v}");
    assert_eq!(
        pid_of(&v),
        Some(server),
        "named after the container still: {v}"
    );
    // Root's namespaces are the machine's: one that gives itself the container's address and
    // listens cannot get the flow either, and with two claimants neither is named.
    let mut fake = Net::new();
    let impostor = Impostor::new(&fake, &ctr.ip);
    let liar = u64::from(fake.serve(&impostor.0.clone(), "0.0.0.0", &[80]));
    // Past the one second a namespace list and an answer are kept.
    std::thread::sleep(Duration::from_millis(1200));
    Net::run_each(&net.b, &["curl", "-s", "-m", "2", &url], 1);
    let v = h.wait_for(WAIT, to_published).expect("the flow's line");
    assert_ne!(pid_of(&v), Some(liar), "{v}");
    assert!(v["process"].is_null(), "two namespaces claim it: {v}");
}

#[test]
fn pings_and_raw_sockets_are_named_after_their_sender() {
    let test = "pings_and_raw_sockets_are_named_after_their_sender";
    if !root_or_skip(test) || !require(test, &["ip", "nft", "python3", "ping"]) {
        return;
    }
    let _serial = one_at_a_time();
    let net = Net::new();
    let (_d, h) = helper(&net, &[]);
    let sysctl = |value: &str| {
        let st = Net::cmd(
            &net.a,
            &[
                "sysctl",
                "-qw",
                &format!("net.ipv4.ping_group_range={value}"),
            ],
        )
        .status()
        .expect("sysctl");
        assert!(st.success());
    };
    let icmp_to = |v: &Value| v["proto"] == "icmp" && v["remote_ip"] == net.b4();
    // A ping socket (SOCK_DGRAM, IPPROTO_ICMP), as an unprivileged ping uses: python sends
    // one echo request and exits.
    sysctl("0 2147483647");
    let echo = format!(
        "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP); \
         s.sendto(b'\\x08\\x00\\x00\\x00\\x00\\x00\\x00\\x01', ('{}', 0))",
        net.b4()
    );
    let mut c = Net::cmd(&net.a, &["python3", "-c", &echo])
        .spawn()
        .expect("python");
    let pid = u64::from(c.id());
    assert!(c.wait().expect("wait").success());
    let v = h.wait_for(WAIT, icmp_to).expect("the ping socket's echo");
    assert_eq!(pid_of(&v), Some(pid), "{v}");
    assert_eq!(v["process"]["comm"], "python3", "{v}");
    // A raw socket: ping as root, with ping sockets not allowed, falls back to one.
    sysctl("1 0");
    let mut c = Net::cmd(&net.a, &["ping", "-c", "1", "-W", "1", &net.b4()])
        .stdout(Stdio::null())
        .spawn()
        .expect("ping");
    let pid = u64::from(c.id());
    let _ = c.wait();
    let v = h.wait_for(WAIT, icmp_to).expect("ping's echo");
    assert_eq!(pid_of(&v), Some(pid), "{v}");
    assert_eq!(v["process"]["comm"], "ping", "{v}");
    // A raw IP protocol (253, for experiments): conntrack's generic tracker.
    let raw = format!(
        "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 253); s.sendto(b'x', ('{}', 0))",
        net.b4()
    );
    let mut c = Net::cmd(&net.a, &["python3", "-c", &raw])
        .spawn()
        .expect("python");
    let pid = u64::from(c.id());
    assert!(c.wait().expect("wait").success());
    let v = h
        .wait_for(WAIT, |v| v["proto"] == "ipproto-253")
        .expect("the raw protocol's flow");
    assert_eq!(pid_of(&v), Some(pid), "{v}");
}

/// `whitelist.started_by` silences a program only where the kernel saw the parent fork it:
/// `curl` forked by `sh` is silent; `curl` that a python made with `CLONE_PARENT` (so its
/// parent is that same `sh`) is reported, and says its parent did not fork it.
#[test]
fn started_by_matches_only_a_parent_the_kernel_saw_fork() {
    let test = "started_by_matches_only_a_parent_the_kernel_saw_fork";
    if !root_or_skip(test) || !require(test, &["ip", "nft", "python3", "curl"]) {
        return;
    }
    let _serial = one_at_a_time();
    let real = |p: &str| {
        std::fs::canonicalize(p)
            .expect("path")
            .to_string_lossy()
            .into_owned()
    };
    let (sh, curl) = (real("/bin/sh"), real("/usr/bin/curl"));
    let mut net = Net::new();
    net.serve(&net.b.clone(), "0.0.0.0", &[8080, 8081, 8082]);
    let (_d, cfg) = config_file(&format!(
        "{ALL_PROTOCOLS}[whitelist]\nstarted_by = [{{ program = \"{curl}\", parent = \"{sh}\" }}]\n"
    ));
    let h = Helper::start(&net.a, &["--config", cfg.to_str().expect("path")]);
    let url = |port: u16| format!("http://{}:{port}/", net.b4());
    let run = |script: &str| {
        let st = Net::cmd(&net.a, &["sh", "-c", script])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .expect("sh");
        assert!(st.success(), "{script}");
    };
    // curl, forked by sh.
    run(&format!("curl -s -m 2 {} >/dev/null; true", url(8080)));
    // curl made by python with CLONE_PARENT: its parent is the sh, which never forked it.
    let clone_parent = format!(
        "import ctypes, os\n\
         libc = ctypes.CDLL(None, use_errno=True)\n\
         pid = libc.syscall(56, 0x8000 | 17, 0, 0, 0, 0)\n\
         if pid == 0:\n    os.execv('{curl}', ['curl', '-s', '-m', '2', '-o', '/dev/null', '{}'])\n",
        url(8081)
    );
    run(&format!("python3 -c \"{clone_parent}\"; sleep 2; true"));
    // python, forked by sh: reported (no rule names it), with the proof.
    let py = format!(
        "import socket; socket.create_connection(('{}', 8082), timeout=2).close()",
        net.b4()
    );
    run(&format!("python3 -c \"{py}\"; true"));
    let lines = h.collect(Duration::from_secs(2));
    let to = |port: u16| -> Vec<&Value> { lines.iter().filter(|v| is_conn_to(port)(v)).collect() };
    assert!(
        to(8080).is_empty(),
        "curl forked by sh is whitelisted: {:?}",
        to(8080)
    );
    let cloned = to(8081);
    assert_eq!(cloned.len(), 1, "{lines:?}");
    let p = &cloned[0]["process"];
    assert_eq!(p["comm"], "curl", "{p}");
    assert_eq!(p["ancestors"][0]["comm"], "sh", "the parent is the sh: {p}");
    assert!(p["parent_forked"].is_null(), "the sh did not fork it: {p}");
    let forked = to(8082);
    assert_eq!(forked.len(), 1, "{lines:?}");
    let p = &forked[0]["process"];
    assert_eq!(p["ancestors"][0]["comm"], "sh", "{p}");
    assert_eq!(p["ancestors"][0]["exe"], sh.as_str(), "{p}");
    assert_eq!(p["parent_forked"], true, "the sh forked python: {p}");
}

/// A program started after the helper stays verified however many processes come and go
/// after it: its image entry is kept while it lives (the exec records, 4,096 of them, are
/// long gone by then), so a whitelist entry keeps matching.
#[test]
fn a_long_lived_program_stays_verified_after_thousands_of_execs() {
    let test = "a_long_lived_program_stays_verified_after_thousands_of_execs";
    if !root_or_skip(test) || !require(test, &["ip", "nft", "python3"]) {
        return;
    }
    let _serial = one_at_a_time();
    let mut net = Net::new();
    net.serve(&net.b.clone(), "0.0.0.0", &[8090]);
    let (_d, h) = helper(&net, &[]);
    let py = format!(
        "import socket, sys; sys.stdin.read(1); socket.create_connection(('{}', 8090), 2).close()",
        net.b4()
    );
    let mut waiting = Net::cmd(&net.a, &[common::PY, "-c", &py])
        .stdin(Stdio::piped())
        .spawn()
        .expect("python");
    // 6,000 programs started and gone meanwhile, from a shell that is itself gone after.
    let st = Net::cmd(
        &net.a,
        &[
            "sh",
            "-c",
            "i=0; while [ $i -lt 6000 ]; do /bin/true; i=$((i+1)); done",
        ],
    )
    .status()
    .expect("sh");
    assert!(st.success());
    use std::io::Write;
    waiting
        .stdin
        .take()
        .expect("stdin")
        .write_all(b"x")
        .expect("go");
    let _ = waiting.wait();
    let v = h.wait_for(WAIT, is_conn_to(8090)).expect("python's line");
    let p = &v["process"];
    assert_eq!(p["pid"], u64::from(waiting.id()), "{v}");
    assert_eq!(p["exe_verified"], true, "{v}");
}
