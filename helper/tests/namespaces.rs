//! The real helper against the real kernel, in network namespaces made by each test.
//!
//! Namespace `a` is "this machine" (the helper runs there), `b` is the rest of the world.
//! Each test starts its own peers and reads the helper's JSON stream.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a test that cannot set up must fail loudly

mod common;

use std::time::Duration;

use common::{config_file, is_conn_to, nft_tables, require, root_or_skip, Helper, Net};
use serde_json::Value;

const WAIT: Duration = Duration::from_secs(5);

fn pid_of(v: &Value) -> Option<u64> {
    v["process"]["pid"].as_u64()
}

#[test]
fn tcp_ipv4_outbound_is_attributed_to_the_client_pid() {
    let test = "tcp_ipv4_outbound_is_attributed_to_the_client_pid";
    if !root_or_skip(test) || !require(test, &["ip", "nft", "python3"]) {
        return;
    }
    let mut net = Net::new();
    net.serve(&net.b.clone(), "0.0.0.0", &[8080]);
    let h = Helper::start(&net.a, &[]);
    let (pid, out) = net.client(&net.a, &["connect", &net.b4(), "8080", "0.2"]);
    let sport: u64 = out.trim_start_matches("connected ").parse().expect("port");
    let v = h
        .wait_for(WAIT, is_conn_to(8080))
        .expect("a connection line");
    assert_eq!(v["proto"], "tcp");
    assert_eq!(v["family"], "ipv4");
    assert_eq!(v["direction"], "outbound");
    assert_eq!(v["local_ip"], net.a4());
    assert_eq!(v["local_port"], sport);
    assert_eq!(v["remote_ip"], net.b4());
    assert_eq!(v["critical"], false);
    assert_eq!(pid_of(&v), Some(u64::from(pid)), "{v}");
    assert_eq!(v["process"]["comm"], "python3");
    assert!(
        v["process"]["exe"]
            .as_str()
            .is_some_and(|e| e.contains("python3")),
        "{v}"
    );
    assert_eq!(v["process"]["uid"], 0);
    assert_eq!(v["process"]["user"], "root");
    assert_eq!(v["process"]["cmdline"][2], "connect");
    assert!(v["ct_id"].as_u64().is_some());
    assert!(
        v["ts"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z') && t.len() == 27),
        "{v}"
    );
}

#[test]
fn tcp_ipv6_outbound_has_full_addresses() {
    let test = "tcp_ipv6_outbound_has_full_addresses";
    if !root_or_skip(test) || !require(test, &["ip", "nft", "python3"]) {
        return;
    }
    let mut net = Net::new();
    net.serve(&net.b.clone(), "::", &[8081]);
    let h = Helper::start(&net.a, &[]);
    let (pid, _) = net.client(&net.a, &["connect", &net.b6(), "8081", "0.2"]);
    let v = h
        .wait_for(WAIT, is_conn_to(8081))
        .expect("a connection line");
    assert_eq!(v["family"], "ipv6");
    assert_eq!(v["local_ip"], net.a6());
    assert_eq!(v["remote_ip"], net.b6());
    assert_eq!(pid_of(&v), Some(u64::from(pid)), "{v}");
}

#[test]
fn udp_both_families_with_proto_all() {
    let test = "udp_both_families_with_proto_all";
    if !root_or_skip(test) || !require(test, &["ip", "nft", "python3"]) {
        return;
    }
    let mut net = Net::new();
    net.serve(&net.b.clone(), "::", &[5353]);
    let h = Helper::start(&net.a, &["--proto-all=true"]);
    let (pid4, _) = net.client(&net.a, &["udp", &net.b4(), "5353", "0.2"]);
    let (pid6, _) = net.client(&net.a, &["udp", &net.b6(), "5353", "0.2"]);
    let lines = h.collect(Duration::from_secs(2));
    let udp: Vec<&Value> = lines
        .iter()
        .filter(|v| v["proto"] == "udp" && v["remote_port"] == 5353)
        .collect();
    assert_eq!(udp.len(), 2, "{lines:?}");
    let v4 = udp
        .iter()
        .find(|v| v["family"] == "ipv4")
        .expect("ipv4 line");
    let v6 = udp
        .iter()
        .find(|v| v["family"] == "ipv6")
        .expect("ipv6 line");
    assert_eq!(pid_of(v4), Some(u64::from(pid4)), "{v4}");
    assert_eq!(pid_of(v6), Some(u64::from(pid6)), "{v6}");
    assert_eq!(v6["remote_ip"], net.b6());
}

#[test]
fn inbound_connection_names_the_server_and_puts_the_client_remote() {
    let test = "inbound_connection_names_the_server_and_puts_the_client_remote";
    if !root_or_skip(test) || !require(test, &["ip", "nft", "python3"]) {
        return;
    }
    let mut net = Net::new();
    let server = net.serve(&net.a.clone(), "0.0.0.0", &[2222]);
    let h = Helper::start(&net.a, &[]);
    let (_, out) = net.client(&net.b, &["connect", &net.a4(), "2222", "0.2"]);
    let cport: u64 = out.trim_start_matches("connected ").parse().expect("port");
    let v = h
        .wait_for(WAIT, |v| {
            v["type"] == "connection" && v["direction"] == "inbound"
        })
        .expect("an inbound line");
    assert_eq!(v["local_ip"], net.a4());
    assert_eq!(v["local_port"], 2222);
    assert_eq!(v["remote_ip"], net.b4());
    assert_eq!(v["remote_port"], cport);
    assert_eq!(pid_of(&v), Some(u64::from(server)), "{v}");
}

#[test]
fn whitelisted_process_is_silent() {
    let test = "whitelisted_process_is_silent";
    if !root_or_skip(test) || !require(test, &["ip", "nft", "python3", "curl"]) {
        return;
    }
    let mut net = Net::new();
    net.serve(&net.b.clone(), "0.0.0.0", &[8080, 8081]);
    // By the path of the file it runs: a bare name matches only that file's own name.
    let toml = format!("[whitelist]\nprocesses = [{:?}]\n", common::python_exe());
    let (_d, cfg) = config_file(&toml);
    let h = Helper::start(&net.a, &["--config", cfg.to_str().expect("path")]);
    net.client(&net.a, &["connect", &net.b4(), "8080", "0.2"]);
    // A flow of another program after it proves the helper was watching.
    let curl = std::process::Command::new("ip")
        .args([
            "netns",
            "exec",
            &net.a,
            "curl",
            "-s",
            "-m",
            "2",
            &format!("http://{}:8081/", net.b4()),
        ])
        .status();
    assert!(curl.is_ok());
    let v = h
        .wait_for(WAIT, |v| v["type"] == "connection")
        .expect("curl's line");
    assert_eq!(
        v["remote_port"], 8081,
        "the whitelisted python3 flow was reported: {v}"
    );
    assert_eq!(v["process"]["comm"], "curl");
}

#[test]
fn whitelisted_cidr_is_silent() {
    let test = "whitelisted_cidr_is_silent";
    if !root_or_skip(test) || !require(test, &["ip", "nft", "python3"]) {
        return;
    }
    let mut net = Net::new();
    net.serve(&net.b.clone(), "::", &[8080]);
    let (_d, cfg) = config_file(&format!(
        "[whitelist]\nremote = [\"10.213.{}.0/24\"]\n",
        net.n
    ));
    let h = Helper::start(&net.a, &["--config", cfg.to_str().expect("path")]);
    net.client(&net.a, &["connect", &net.b4(), "8080", "0.2"]);
    net.client(&net.a, &["connect", &net.b6(), "8080", "0.2"]);
    let lines: Vec<Value> = h
        .collect(Duration::from_secs(2))
        .into_iter()
        .filter(|v| v["type"] == "connection")
        .collect();
    assert_eq!(lines.len(), 1, "{lines:?}");
    assert_eq!(lines[0]["family"], "ipv6");
}

#[test]
fn critical_ports_are_flagged_by_number() {
    let test = "critical_ports_are_flagged_by_number";
    if !root_or_skip(test) || !require(test, &["ip", "nft", "python3"]) {
        return;
    }
    let mut net = Net::new();
    net.serve(&net.b.clone(), "0.0.0.0", &[443, 4430]);
    let h = Helper::start(&net.a, &[]);
    net.client(&net.a, &["connect", &net.b4(), "443", "0.1"]);
    net.client(&net.a, &["connect", &net.b4(), "4430", "0.1"]);
    let v = h.wait_for(WAIT, is_conn_to(443)).expect("443");
    assert_eq!(v["critical"], true);
    let v = h.wait_for(WAIT, is_conn_to(4430)).expect("4430");
    assert_eq!(v["critical"], false, "4430 is not 443: {v}");
}

#[test]
fn repeat_filter_reports_a_program_and_remote_once() {
    let test = "repeat_filter_reports_a_program_and_remote_once";
    if !root_or_skip(test) || !require(test, &["ip", "nft", "python3"]) {
        return;
    }
    let mut net = Net::new();
    net.serve(&net.b.clone(), "0.0.0.0", &[8080]);
    let h = Helper::start(&net.a, &[]);
    for _ in 0..3 {
        net.client(&net.a, &["connect", &net.b4(), "8080", "0.05"]);
    }
    let n = h
        .collect(Duration::from_secs(2))
        .iter()
        .filter(|v| is_conn_to(8080)(v))
        .count();
    assert_eq!(
        n, 1,
        "the default window reports the same program and remote once"
    );

    // repeat_after_secs = 0 reports every flow.
    let (_d, cfg) = config_file("[filter]\nrepeat_after_secs = 0\n");
    drop(h);
    let h = Helper::start(&net.a, &["--config", cfg.to_str().expect("path")]);
    for _ in 0..3 {
        net.client(&net.a, &["connect", &net.b4(), "8080", "0.05"]);
    }
    let n = h
        .collect(Duration::from_secs(2))
        .iter()
        .filter(|v| is_conn_to(8080)(v))
        .count();
    assert_eq!(n, 3);
}

#[test]
fn short_lived_curl_is_attributed_to_its_pid() {
    let test = "short_lived_curl_is_attributed_to_its_pid";
    if !root_or_skip(test) || !require(test, &["ip", "nft", "python3", "curl"]) {
        return;
    }
    let mut net = Net::new();
    net.serve(&net.b.clone(), "0.0.0.0", &[8080]);
    let (_d, cfg) = config_file("[filter]\nrepeat_after_secs = 0\n");
    let h = Helper::start(&net.a, &["--config", cfg.to_str().expect("path")]);
    let mut pids = Vec::new();
    for _ in 0..10 {
        // curl connects, waits at most 50 ms for an answer that never comes, and exits.
        let mut child = Net::cmd(
            &net.a,
            &[
                "curl",
                "-s",
                "-m",
                "0.05",
                &format!("http://{}:8080/", net.b4()),
            ],
        )
        .spawn()
        .expect("curl");
        pids.push(u64::from(child.id()));
        let _ = child.wait();
    }
    let lines: Vec<Value> = h
        .collect(Duration::from_secs(2))
        .into_iter()
        .filter(|v| is_conn_to(8080)(v))
        .collect();
    assert_eq!(lines.len(), 10, "{lines:?}");
    let named: Vec<u64> = lines.iter().filter_map(pid_of).collect();
    // Never a wrong pid, and at most one of ten unknown.
    for p in &named {
        assert!(pids.contains(p), "pid {p} is not one of the curls {pids:?}");
    }
    assert!(
        named.len() >= 9,
        "only {} of 10 short-lived curls attributed",
        named.len()
    );
    assert!(lines
        .iter()
        .all(|v| v["process"].is_null() || v["process"]["comm"] == "curl"));
}

#[test]
fn unattributable_flow_is_reported_with_null_process() {
    let test = "unattributable_flow_is_reported_with_null_process";
    if !root_or_skip(test) || !require(test, &["ip", "nft", "ping"]) {
        return;
    }
    let net = Net::new();
    let h = Helper::start(&net.a, &["--proto-all=true", "--no-connect-hook"]);
    // ICMP echo sockets are invisible to sock_diag, and without the kernel's send records
    // (the connect hook) nobody can be named, so nobody is.
    let ping = Net::cmd(&net.a, &["ping", "-c", "1", "-W", "1", &net.b4()])
        .output()
        .expect("ping");
    assert!(ping.status.success());
    let v = h
        .wait_for(WAIT, |v| v["proto"] == "icmp")
        .expect("icmp line");
    assert!(v["process"].is_null(), "{v}");
    assert_eq!(v["icmp"]["type"], 8);
    assert!(v["remote_port"].is_null());

    // With show_unknown off the same flow is silent.
    let h2 = Helper::start(
        &net.a,
        &[
            "--proto-all=true",
            "--show-unknown=false",
            "--no-connect-hook",
        ],
    );
    drop(h);
    let ping = Net::cmd(&net.a, &["ping", "-c", "1", "-W", "1", &net.b4()])
        .output()
        .expect("ping");
    assert!(ping.status.success());
    let lines = h2.collect(Duration::from_secs(1));
    assert!(lines.iter().all(|v| v["type"] != "connection"), "{lines:?}");
}

#[test]
fn loopback_is_ignored_by_default() {
    let test = "loopback_is_ignored_by_default";
    if !root_or_skip(test) || !require(test, &["ip", "nft", "python3"]) {
        return;
    }
    let mut net = Net::new();
    net.serve(&net.a.clone(), "127.0.0.1", &[7070]);
    net.serve(&net.b.clone(), "0.0.0.0", &[7071]);
    let h = Helper::start(&net.a, &[]);
    net.client(&net.a, &["connect", "127.0.0.1", "7070", "0.1"]);
    net.client(&net.a, &["connect", &net.b4(), "7071", "0.1"]);
    let conns: Vec<Value> = h
        .collect(Duration::from_secs(2))
        .into_iter()
        .filter(|v| v["type"] == "connection")
        .collect();
    assert_eq!(conns.len(), 1, "{conns:?}");
    assert_eq!(conns[0]["remote_port"], 7071);
}

#[test]
fn ensure_conntrack_table_is_added_and_removed() {
    let test = "ensure_conntrack_table_is_added_and_removed";
    if !root_or_skip(test) || !require(test, &["ip", "nft", "python3"]) {
        return;
    }
    let mut net = Net::new();
    net.serve(&net.b.clone(), "0.0.0.0", &[8080]);
    // Without the table a fresh namespace tracks nothing: no events at all.
    let h = Helper::start(&net.a, &["--no-ensure-conntrack"]);
    assert!(!nft_tables(&net.a).contains("conntrack_tray"));
    net.client(&net.a, &["connect", &net.b4(), "8080", "0.1"]);
    assert!(h
        .collect(Duration::from_secs(1))
        .iter()
        .all(|v| v["type"] != "connection"));
    drop(h);

    let mut h = Helper::start(&net.a, &[]);
    let table = format!("table inet conntrack_tray_{}", h.pid());
    assert!(
        nft_tables(&net.a).contains(&table),
        "{}",
        nft_tables(&net.a)
    );
    // A second helper adds its own table and leaves the first one's alone.
    let mut h2 = Helper::start(&net.a, &[]);
    let table2 = format!("table inet conntrack_tray_{}", h2.pid());
    assert!(nft_tables(&net.a).contains(&table2));
    h2.close_stdin();
    assert!(h2.wait_exit(Duration::from_secs(2)).is_some());
    assert!(
        nft_tables(&net.a).contains(&table),
        "the second helper removed the first one's table"
    );
    net.client(&net.a, &["connect", &net.b4(), "8080", "0.1"]);
    assert!(
        h.wait_for(WAIT, is_conn_to(8080)).is_some(),
        "tracking goes on"
    );
    h.close_stdin();
    assert!(h.wait_exit(Duration::from_secs(2)).is_some());
    assert!(
        !nft_tables(&net.a).contains("conntrack_tray"),
        "{}",
        nft_tables(&net.a)
    );
}

#[test]
fn stdin_eof_ends_the_helper_within_a_second() {
    let test = "stdin_eof_ends_the_helper_within_a_second";
    if !root_or_skip(test) || !require(test, &["ip", "nft"]) {
        return;
    }
    let net = Net::new();
    let mut h = Helper::start(&net.a, &[]);
    h.close_stdin();
    let status = h
        .wait_exit(Duration::from_secs(1))
        .expect("exited within 1 s");
    assert!(status.success(), "{status:?}");
}

#[test]
fn sigterm_removes_the_table_and_exits_cleanly() {
    let test = "sigterm_removes_the_table_and_exits_cleanly";
    if !root_or_skip(test) || !require(test, &["ip", "nft"]) {
        return;
    }
    let net = Net::new();
    let mut h = Helper::start(&net.a, &[]);
    assert!(nft_tables(&net.a).contains("conntrack_tray"));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(h.pid() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("kill");
    let status = h.wait_exit(Duration::from_secs(2)).expect("exited");
    assert!(status.success(), "{status:?}");
    assert!(!nft_tables(&net.a).contains("conntrack_tray"));
}

#[test]
fn commands_pause_resume_reconfigure_and_bad_lines_get_errors() {
    let test = "commands_pause_resume_reconfigure_and_bad_lines_get_errors";
    if !root_or_skip(test) || !require(test, &["ip", "nft", "python3", "curl"]) {
        return;
    }
    let mut net = Net::new();
    net.serve(&net.b.clone(), "0.0.0.0", &[8080, 8081, 8082]);
    let mut h = Helper::start(&net.a, &[]);
    h.send("this is not json");
    let e = h
        .wait_for(WAIT, |v| v["type"] == "error")
        .expect("error line");
    assert!(
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("bad command")),
        "{e}"
    );
    h.send(r#"{"cmd":"pause"}"#);
    assert!(h
        .wait_for(WAIT, |v| v["type"] == "ack" && v["cmd"] == "pause")
        .is_some());
    net.client(&net.a, &["connect", &net.b4(), "8080", "0.1"]);
    h.send(r#"{"cmd":"resume"}"#);
    assert!(h
        .wait_for(WAIT, |v| v["type"] == "ack" && v["cmd"] == "resume")
        .is_some());
    net.client(&net.a, &["connect", &net.b4(), "8081", "0.1"]);
    let v = h
        .wait_for(WAIT, |v| v["type"] == "connection")
        .expect("after resume");
    assert_eq!(
        v["remote_port"], 8081,
        "a flow while paused was reported: {v}"
    );
    // A new config whitelists python3 (the file it runs): its next flow is silent, curl's is not.
    let cmd = serde_json::json!({"cmd": "config",
        "config": {"whitelist": {"processes": [common::python_exe()]}}});
    h.send(&cmd.to_string());
    assert!(h
        .wait_for(WAIT, |v| v["type"] == "ack" && v["cmd"] == "config")
        .is_some());
    net.client(&net.a, &["connect", &net.b4(), "8082", "0.1"]);
    let _ = Net::cmd(
        &net.a,
        &[
            "curl",
            "-s",
            "-m",
            "1",
            &format!("http://{}:8080/", net.b4()),
        ],
    )
    .status();
    let v = h
        .wait_for(WAIT, |v| v["type"] == "connection")
        .expect("curl");
    assert_eq!(v["process"]["comm"], "curl", "{v}");
}

#[test]
fn hostile_process_names_stay_one_escaped_line() {
    let test = "hostile_process_names_stay_one_escaped_line";
    if !root_or_skip(test) || !require(test, &["ip", "nft", "python3"]) {
        return;
    }
    let mut net = Net::new();
    net.serve(&net.b.clone(), "0.0.0.0", &[8080, 8081]);
    let h = Helper::start(&net.a, &[]);
    net.client(&net.a, &["name", "a\nb\x1b[31m<i>", &net.b4(), "8080"]);
    let v = h.wait_for(WAIT, is_conn_to(8080)).expect("line");
    // The kernel keeps 15 bytes of a name.
    assert_eq!(v["process"]["comm"], "a\nb\x1b[31m<i>");

    // Text output: the same name escaped, on one line.
    let helper = common::helper_bin();
    let out = Net::cmd(
        &net.a,
        &[helper.to_str().expect("path"), "--format", "text"],
    )
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::null())
    .spawn()
    .expect("text helper");
    std::thread::sleep(Duration::from_millis(500));
    net.client(&net.a, &["name", "x\ny\x1b[2J", &net.b4(), "8081"]);
    std::thread::sleep(Duration::from_millis(300));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(out.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("kill");
    let text = out.wait_with_output().expect("output");
    let text = String::from_utf8(text.stdout).expect("utf8");
    let line = text
        .lines()
        .find(|l| l.contains(":8081"))
        .unwrap_or_else(|| panic!("no 8081 line in {text:?}"));
    assert!(line.contains("x\\x0ay\\x1b[2J["), "{line}");
    assert!(!text.contains('\x1b'));
}

/// Runs `n` one-shot clients in `a`; returns their pids and the connection lines to `port`.
fn one_shots(net: &Net, h: &Helper, n: usize, argv: &[&str], port: u16) -> (Vec<u64>, Vec<Value>) {
    let pids = Net::run_each(&net.a, argv, n);
    let lines = h
        .collect(Duration::from_secs(2))
        .into_iter()
        .filter(|v| is_conn_to(port)(v))
        .collect();
    (pids, lines)
}

/// Error lines the helper wrote after its hello, e.g. a connect hook it could not load.
fn startup_errors(lines: &[Value]) -> Vec<&Value> {
    lines.iter().filter(|v| v["type"] == "error").collect()
}

/// Every one-shot is reported, named with its own pid and `comm`, and none is misnamed.
fn assert_all_named(lines: &[Value], pids: &[u64], n: usize, comm: &str) {
    assert_eq!(lines.len(), n, "{lines:?}");
    let wrong: Vec<&Value> = lines
        .iter()
        .filter(|v| !pids.contains(&pid_of(v).unwrap_or(0)) || v["process"]["comm"] != comm)
        .collect();
    assert!(
        wrong.is_empty(),
        "{} of {n} not named or misnamed (pids {pids:?}): {wrong:?}; all: {lines:?}",
        wrong.len()
    );
}

#[test]
fn bash_dev_tcp_one_shots_are_all_named_with_their_pid() {
    let test = "bash_dev_tcp_one_shots_are_all_named_with_their_pid";
    if !root_or_skip(test) || !require(test, &["ip", "nft", "python3", "bash"]) {
        return;
    }
    let mut net = Net::new();
    net.serve(&net.b.clone(), "0.0.0.0", &[8080]);
    let (_d, cfg) = config_file("[filter]\nrepeat_after_secs = 0\n");
    let h = Helper::start(&net.a, &["--config", cfg.to_str().expect("path")]);
    let errors = startup_errors(&h.collect(Duration::from_millis(200))).len();
    assert_eq!(errors, 0, "the connect hook must load on this kernel");
    // bash closes the socket and exits microseconds after the handshake: only the kernel's
    // record of the connect (the hook) can name every one of them.
    let cmd = format!("echo x > /dev/tcp/{}/8080", net.b4());
    let (pids, lines) = one_shots(&net, &h, 20, &["bash", "-c", &cmd], 8080);
    assert_all_named(&lines, &pids, 20, "bash");
    assert!(
        lines.iter().any(|v| v["attributed_by"] == "connect"),
        "{lines:?}"
    );
}

#[test]
fn connects_refused_at_once_are_all_named() {
    let test = "connects_refused_at_once_are_all_named";
    if !root_or_skip(test) || !require(test, &["ip", "nft", "bash"]) {
        return;
    }
    let net = Net::new();
    let (_d, cfg) = config_file("[filter]\nrepeat_after_secs = 0\n");
    let h = Helper::start(&net.a, &["--config", cfg.to_str().expect("path")]);
    // Nobody listens on 8090 in b: the RST comes back within microseconds.
    let cmd = format!("echo x > /dev/tcp/{}/8090", net.b4());
    let (pids, lines) = one_shots(&net, &h, 20, &["bash", "-c", &cmd], 8090);
    assert_all_named(&lines, &pids, 20, "bash");
}

#[test]
fn udp_one_shots_are_all_named_with_their_pid() {
    let test = "udp_one_shots_are_all_named_with_their_pid";
    if !root_or_skip(test) || !require(test, &["ip", "nft", "bash"]) {
        return;
    }
    let net = Net::new();
    let (_d, cfg) =
        config_file("[monitor]\nprotocols = [\"all\"]\n[filter]\nrepeat_after_secs = 0\n");
    let h = Helper::start(&net.a, &["--config", cfg.to_str().expect("path")]);
    // bash connects a UDP socket, sends one datagram and exits: nobody needs to answer.
    let cmd = format!("echo x > /dev/udp/{}/5354", net.b4());
    let (pids, lines) = one_shots(&net, &h, 20, &["bash", "-c", &cmd], 5354);
    assert_all_named(&lines, &pids, 20, "bash");
}

#[test]
fn ipv6_and_dual_stack_connects_are_recorded_under_their_own_tuples() {
    let test = "ipv6_and_dual_stack_connects_are_recorded_under_their_own_tuples";
    if !root_or_skip(test) || !require(test, &["ip", "nft", "python3"]) {
        return;
    }
    let mut net = Net::new();
    net.serve(&net.b.clone(), "::", &[8082]);
    net.serve(&net.b.clone(), "0.0.0.0", &[8083]);
    let (_d, cfg) = config_file("[filter]\nrepeat_after_secs = 0\n");
    let h = Helper::start(&net.a, &["--config", cfg.to_str().expect("path")]);
    // An IPv6 socket to an IPv6 peer, and an IPv6 socket to a v4-mapped address (which the
    // kernel connects over IPv4, and conntrack reports as an IPv4 flow).
    let connect = |dst: String, port: u16| {
        format!("import socket; s = socket.socket(socket.AF_INET6); s.connect(('{dst}', {port}))")
    };
    let v6 = connect(net.b6(), 8082);
    let (pids, lines) = one_shots(&net, &h, 5, &["python3", "-c", &v6], 8082);
    assert_all_named(&lines, &pids, 5, "python3");
    assert!(lines.iter().all(|v| v["family"] == "ipv6"), "{lines:?}");
    assert!(
        lines.iter().any(|v| v["attributed_by"] == "connect"),
        "{lines:?}"
    );
    let mapped = connect(format!("::ffff:{}", net.b4()), 8083);
    let (pids, lines) = one_shots(&net, &h, 5, &["python3", "-c", &mapped], 8083);
    assert_all_named(&lines, &pids, 5, "python3");
    assert!(lines.iter().all(|v| v["family"] == "ipv4"), "{lines:?}");
    assert!(
        lines.iter().any(|v| v["attributed_by"] == "connect"),
        "{lines:?}"
    );
}

#[test]
fn without_the_hook_a_refused_connect_is_found_through_its_closed_socket() {
    let test = "without_the_hook_a_refused_connect_is_found_through_its_closed_socket";
    if !root_or_skip(test) || !require(test, &["ip", "nft", "python3"]) {
        return;
    }
    let net = Net::new();
    let (_d, cfg) = config_file("[filter]\nrepeat_after_secs = 0\n");
    let h = Helper::start(
        &net.a,
        &["--config", cfg.to_str().expect("path"), "--no-connect-hook"],
    );
    // Refused at once, so the kernel drops the socket from its tables; the program keeps
    // the closed socket open a while, which is what this fallback looks for. (Whether it
    // is still there for one that exits at once is a race, measured by `cargo bench`.)
    let refused = format!(
        "import socket, time; s = socket.socket(); s.connect_ex(('{}', 8090)); time.sleep(0.5)",
        net.b4()
    );
    let (pids, lines) = one_shots(&net, &h, 3, &["python3", "-c", &refused], 8090);
    assert_all_named(&lines, &pids, 3, "python3");
    assert!(
        lines.iter().all(|v| v["attributed_by"] == "closed_socket"),
        "{lines:?}"
    );
}

#[test]
fn an_address_added_while_running_is_local_at_once() {
    let test = "an_address_added_while_running_is_local_at_once";
    if !root_or_skip(test) || !require(test, &["ip", "nft", "python3", "curl"]) {
        return;
    }
    let mut net = Net::new();
    net.serve(&net.b.clone(), "0.0.0.0", &[8080]);
    let h = Helper::start(&net.a, &[]);
    // A second address for a, added after the helper read the first ones.
    let extra = format!("10.213.{}.77", net.n);
    let st = Net::cmd(
        &net.a,
        &["ip", "addr", "add", &format!("{extra}/24"), "dev", "veth0"],
    )
    .status()
    .expect("ip");
    assert!(st.success());
    std::thread::sleep(Duration::from_millis(300));
    let st = Net::cmd(
        &net.a,
        &[
            "curl",
            "-s",
            "-m",
            "1",
            "--interface",
            &extra,
            &format!("http://{}:8080/", net.b4()),
        ],
    )
    .status()
    .expect("curl");
    assert!(st.code().is_some());
    let v = h.wait_for(WAIT, is_conn_to(8080)).expect("line");
    assert_eq!(v["direction"], "outbound", "{v}");
    assert_eq!(v["local_ip"], extra);
}

#[test]
fn a_tiny_socket_buffer_loses_events_and_says_how_many() {
    let test = "a_tiny_socket_buffer_loses_events_and_says_how_many";
    if !root_or_skip(test) || !require(test, &["ip", "nft", "python3"]) {
        return;
    }
    let net = Net::new();
    let (_d, cfg) =
        config_file("[monitor]\nprotocols = [\"all\"]\n[filter]\nrepeat_after_secs = 0\n");
    let h = Helper::start(
        &net.a,
        &[
            "--config",
            cfg.to_str().expect("path"),
            "--rcvbuf",
            "4096",
            "--queue",
            "1",
        ],
    );
    // 3000 UDP flows as fast as python can send them, to ports nobody listens on.
    let code = format!(
        "import socket\ns=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\nfor p in range(20000,23000): s.sendto(b'x',('{}',p))\n",
        net.b4()
    );
    let st = Net::cmd(&net.a, &["python3", "-c", &code])
        .status()
        .expect("python");
    assert!(st.success());
    let lines = h.collect(Duration::from_secs(3));
    let reported = lines
        .iter()
        .filter(|v| v["type"] == "connection" && v["proto"] == "udp")
        .count() as u64;
    let lost: u64 = lines
        .iter()
        .filter(|v| v["type"] == "lost")
        .filter_map(|v| v["count"].as_u64())
        .sum();
    assert!(
        lost > 0,
        "a 4 KiB buffer kept up with 3000 flows? reported {reported}"
    );
    assert!(lines
        .iter()
        .filter(|v| v["type"] == "lost")
        .all(|v| v["reason"] == "kernel"));
    // Every flow is either reported or counted as lost (the kernel counts drops per message).
    assert_eq!(reported + lost, 3000, "reported {reported} + lost {lost}");
}

#[test]
fn log_file_gets_one_text_line_per_report() {
    let test = "log_file_gets_one_text_line_per_report";
    if !root_or_skip(test) || !require(test, &["ip", "nft", "python3"]) {
        return;
    }
    let mut net = Net::new();
    net.serve(&net.b.clone(), "0.0.0.0", &[8080]);
    let dir = tempfile::tempdir().expect("tmp");
    let log = dir.path().join("helper.log");
    let h = Helper::start(&net.a, &["--log-file", log.to_str().expect("path")]);
    let (pid, _) = net.client(&net.a, &["connect", &net.b4(), "8080", "0.1"]);
    assert!(h.wait_for(WAIT, is_conn_to(8080)).is_some());
    drop(h);
    let text = std::fs::read_to_string(&log).expect("log");
    let line = text
        .lines()
        .find(|l| l.contains(":8080"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains(&format!("python3[{pid}]")), "{line}");
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(
        std::fs::metadata(&log).expect("meta").permissions().mode() & 0o777,
        0o640
    );
}

/// The effective capabilities of every thread of `pid`, as hex masks.
fn thread_caps(pid: u32) -> Vec<(String, u64)> {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("tasks")
        .flatten()
        .map(|t| {
            let name = std::fs::read_to_string(t.path().join("comm"))
                .unwrap_or_default()
                .trim()
                .to_string();
            let status = std::fs::read_to_string(t.path().join("status")).unwrap_or_default();
            let eff = status
                .lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
                .unwrap_or(u64::MAX);
            (name, eff)
        })
        .collect()
}

#[test]
fn the_helper_keeps_only_the_capabilities_it_needs_and_still_works() {
    let test = "the_helper_keeps_only_the_capabilities_it_needs_and_still_works";
    if !root_or_skip(test) || !require(test, &["ip", "nft", "python3", "setpriv"]) {
        return;
    }
    let mut net = Net::new();
    net.serve(&net.b.clone(), "0.0.0.0", &[8080]);
    let mut h = Helper::start(&net.a, &[]);
    // CAP_DAC_READ_SEARCH (2), CAP_NET_ADMIN (12), CAP_SYS_PTRACE (19), on every thread.
    let want: u64 = (1 << 2) | (1 << 12) | (1 << 19);
    let caps = thread_caps(h.pid());
    assert!(caps.len() >= 3, "{caps:?}");
    for (name, eff) in &caps {
        assert_eq!(*eff, want, "thread {name} has {eff:#x}");
    }
    let status = std::fs::read_to_string(format!("/proc/{}/status", h.pid())).expect("status");
    assert!(
        status
            .lines()
            .any(|l| l.starts_with("NoNewPrivs:") && l.ends_with('1')),
        "{status}"
    );
    // Not root any more, on any thread: real, effective, saved and filesystem uids alike.
    for task in std::fs::read_dir(format!("/proc/{}/task", h.pid()))
        .expect("tasks")
        .flatten()
    {
        let status = std::fs::read_to_string(task.path().join("status")).unwrap_or_default();
        let uids: Vec<&str> = status
            .lines()
            .find_map(|l| l.strip_prefix("Uid:"))
            .map(|v| v.split_whitespace().collect())
            .unwrap_or_default();
        assert_eq!(uids.len(), 4, "{status}");
        assert!(
            uids.iter().all(|u| *u != "0"),
            "a thread is still root: {uids:?}"
        );
        // And every thread is under the seccomp allow-list (mode 2: filter).
        assert!(
            status
                .lines()
                .any(|l| l.starts_with("Seccomp:") && l.ends_with('2')),
            "a thread runs without the seccomp filter: {status}"
        );
    }
    // Attribution (of root's processes and of another user's) and the table's removal still
    // work with what is left.
    let (pid, _) = net.client(&net.a, &["connect", &net.b4(), "8080", "0.2"]);
    let v = h.wait_for(WAIT, is_conn_to(8080)).expect("line");
    assert_eq!(pid_of(&v), Some(u64::from(pid)));
    assert_eq!(v["process"]["uid"], 0, "{v}");
    assert_eq!(v["process"]["exe_verified"], true, "{v}");
    let script = common::peer_script().display().to_string();
    common::run(&[
        "ip",
        "netns",
        "exec",
        &net.a,
        "setpriv",
        "--reuid=65534",
        "--regid=65534",
        "--clear-groups",
        "/usr/bin/python3",
        &script,
        "connect",
        &net.b4(),
        "8080",
        "0.2",
    ]);
    let v = h
        .wait_for(WAIT, |v| {
            v["type"] == "connection" && v["process"]["uid"] == 65534
        })
        .expect("nobody's line");
    assert!(
        v["process"]["exe"]
            .as_str()
            .is_some_and(|e| e.contains("python3")),
        "{v}"
    );
    assert_eq!(v["process"]["exe_verified"], true, "{v}");
    h.close_stdin();
    assert!(h.wait_exit(Duration::from_secs(2)).is_some());
    assert!(
        !nft_tables(&net.a).contains("conntrack_tray"),
        "the table outlived the helper"
    );
}

#[test]
fn the_name_looked_up_over_dns_names_the_connection_and_can_be_whitelisted() {
    let test = "the_name_looked_up_over_dns_names_the_connection_and_can_be_whitelisted";
    if !root_or_skip(test) || !require(test, &["ip", "nft", "python3"]) {
        return;
    }
    let mut net = Net::new();
    net.serve(&net.b.clone(), "0.0.0.0", &[8080, 8081]);
    let b4 = net.b4();
    net.start_peer(&net.b.clone(), &["dns", "0.0.0.0", &b4]);
    net.set_resolver(&b4);
    let h = Helper::start(&net.a, &[]);
    // example.test -> CNAME edge.cdn.test -> A b: the connection is to "example.test".
    let (pid, _) = net.client(&net.a, &["resolve", "example.test", &b4, "8080"]);
    let v = h.wait_for(WAIT, is_conn_to(8080)).expect("line");
    assert_eq!(v["host"], "example.test", "{v}");
    assert_eq!(v["host_source"], "dns");
    assert_eq!(pid_of(&v), Some(u64::from(pid)));
    drop(h);

    // Whitelisted by name: silent; another name to the same address is not.
    let (_d, cfg) = config_file("[whitelist]\nhosts = [\"example.test\"]\n");
    let h = Helper::start(&net.a, &["--config", cfg.to_str().expect("path")]);
    net.client(&net.a, &["resolve", "example.test", &b4, "8080"]);
    net.client(&net.a, &["resolve", "other.test", &b4, "8081"]);
    let conns: Vec<Value> = h
        .collect(Duration::from_secs(2))
        .into_iter()
        .filter(|v| v["type"] == "connection")
        .collect();
    assert_eq!(conns.len(), 1, "{conns:?}");
    assert_eq!(conns[0]["host"], "other.test");
}

#[test]
fn a_100k_flow_flood_keeps_memory_bounded_and_accounts_for_every_flow() {
    let test = "a_100k_flow_flood_keeps_memory_bounded_and_accounts_for_every_flow";
    if !root_or_skip(test) || !require(test, &["ip", "nft", "python3"]) {
        return;
    }
    let net = Net::new();
    let (_d, cfg) =
        config_file("[monitor]\nprotocols = [\"all\"]\n[filter]\nrepeat_after_secs = 0\n");
    let h = Helper::start(&net.a, &["--config", cfg.to_str().expect("path")]);
    // 100,000 distinct flows: two sockets, 50,000 ports each, nobody listening.
    let code = format!(
        "import socket\nfor k in range(2):\n s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM)\n for p in range(10000,60000): s.sendto(b'x',('{}',p))\n",
        net.b4()
    );
    let st = Net::cmd(&net.a, &["python3", "-c", &code])
        .status()
        .expect("python");
    assert!(st.success());
    let (mut reported, mut lost) = (0u64, 0u64);
    let end = std::time::Instant::now() + Duration::from_secs(60);
    while reported + lost < 100_000 && std::time::Instant::now() < end {
        match h.lines.recv_timeout(Duration::from_secs(5)) {
            Ok(v) if v["type"] == "connection" && v["proto"] == "udp" => reported += 1,
            Ok(v) if v["type"] == "lost" => lost += v["count"].as_u64().unwrap_or(0),
            Ok(_) => {}
            Err(_) => break,
        }
    }
    assert_eq!(reported + lost, 100_000, "reported {reported}, lost {lost}");
    // The documented bound (README): under 16 MiB resident at its peak.
    let status = std::fs::read_to_string(format!("/proc/{}/status", h.pid())).expect("status");
    let hwm_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmHWM");
    assert!(hwm_kib < 16 * 1024, "peak RSS {hwm_kib} KiB");
}

#[test]
fn a_closed_stdout_ends_the_helper_and_removes_its_table() {
    let test = "a_closed_stdout_ends_the_helper_and_removes_its_table";
    if !root_or_skip(test) || !require(test, &["ip", "nft", "python3"]) {
        return;
    }
    let mut net = Net::new();
    net.serve(&net.b.clone(), "0.0.0.0", &[8080]);
    let helper = common::helper_bin();
    let mut child = Net::cmd(
        &net.a,
        &[helper.to_str().expect("path"), "--format", "json"],
    )
    .stdin(std::process::Stdio::piped())
    .stdout(std::process::Stdio::piped())
    .stderr(std::process::Stdio::null())
    .spawn()
    .expect("helper");
    let mut out = std::io::BufReader::new(child.stdout.take().expect("stdout"));
    let mut hello = String::new();
    std::io::BufRead::read_line(&mut out, &mut hello).expect("hello");
    assert!(hello.contains("\"hello\""));
    drop(out); // the reader goes away; stdin stays open
    net.client(&net.a, &["connect", &net.b4(), "8080", "0.1"]);
    let exited = (0..100).find_map(|_| {
        std::thread::sleep(Duration::from_millis(20));
        child.try_wait().ok().flatten()
    });
    let _ = child.kill();
    let _ = child.wait();
    assert!(exited.is_some_and(|s| s.success()), "{exited:?}");
    assert!(!nft_tables(&net.a).contains("conntrack_tray"));
}

#[test]
fn reverse_dns_names_an_address_no_answer_named_and_says_so() {
    let test = "reverse_dns_names_an_address_no_answer_named_and_says_so";
    if !root_or_skip(test) || !require(test, &["ip", "nft", "python3"]) {
        return;
    }
    let mut net = Net::new();
    net.serve(&net.b.clone(), "0.0.0.0", &[8080]);
    let b4 = net.b4();
    net.start_peer(&net.b.clone(), &["dns", "0.0.0.0", &b4]);
    // Off by default: no name for a connection made without a lookup.
    let h = Helper::start(&net.a, &[]);
    net.client(&net.a, &["connect", &b4, "8080", "0.1"]);
    let v = h.wait_for(WAIT, is_conn_to(8080)).expect("line");
    assert!(v.get("host").is_none(), "{v}");
    drop(h);
    // On: the PTR name, marked as such; it does not count for whitelist.hosts.
    let (_d, cfg) = config_file(&format!(
        "[names]\nreverse_dns = true\nreverse_timeout_ms = 1000\nresolver = \"{b4}\"\n[whitelist]\nhosts = [\"ptr.example.test\"]\n"
    ));
    let h = Helper::start(&net.a, &["--config", cfg.to_str().expect("path")]);
    net.client(&net.a, &["connect", &b4, "8080", "0.1"]);
    let v = h.wait_for(WAIT, is_conn_to(8080)).expect("line");
    assert_eq!(v["host"], "ptr.example.test", "{v}");
    assert_eq!(v["host_source"], "ptr");
}

// The helper's nftables table goes with the helper, however it ends, and never with another's.

fn kill9(pid: u32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
}

/// Whether `pred` holds of the namespace's tables within two seconds.
fn tables_become(ns: &str, pred: impl Fn(&str) -> bool) -> bool {
    let end = std::time::Instant::now() + Duration::from_secs(2);
    while std::time::Instant::now() < end {
        if pred(&nft_tables(ns)) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

/// `nft ARGS` in `ns`: whether it succeeded, and its stderr.
fn nft(ns: &str, args: &[&str]) -> (bool, String) {
    let mut argv = vec!["nft"];
    argv.extend_from_slice(args);
    let out = Net::cmd(ns, &argv).output().expect("nft");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_sigkilled_helpers_table_is_gone() {
    let test = "a_sigkilled_helpers_table_is_gone";
    if !root_or_skip(test) || !require(test, &["ip", "nft"]) {
        return;
    }
    let net = Net::new();
    let mut h = Helper::start(&net.a, &[]);
    let table = format!("table inet conntrack_tray_{}", h.pid());
    assert!(
        nft_tables(&net.a).contains(&table),
        "{}",
        nft_tables(&net.a)
    );
    kill9(h.pid());
    assert!(h.wait_exit(Duration::from_secs(2)).is_some(), "not killed");
    assert!(
        tables_become(&net.a, |t| !t.contains("conntrack_tray")),
        "the killed helper's table stayed: {}",
        nft_tables(&net.a)
    );
}

#[test]
fn two_helpers_each_keep_their_own_table_and_killing_one_leaves_the_other() {
    let test = "two_helpers_each_keep_their_own_table_and_killing_one_leaves_the_other";
    if !root_or_skip(test) || !require(test, &["ip", "nft", "python3"]) {
        return;
    }
    let mut net = Net::new();
    net.serve(&net.b.clone(), "0.0.0.0", &[8080]);
    let mut h1 = Helper::start(&net.a, &[]);
    let h2 = Helper::start(&net.a, &[]);
    let t1 = format!("table inet conntrack_tray_{}", h1.pid());
    let t2 = format!("table inet conntrack_tray_{}", h2.pid());
    let tables = nft_tables(&net.a);
    assert!(tables.contains(&t1) && tables.contains(&t2), "{tables}");
    kill9(h1.pid());
    assert!(h1.wait_exit(Duration::from_secs(2)).is_some());
    assert!(
        tables_become(&net.a, |t| !t.contains(&t1)),
        "{}",
        nft_tables(&net.a)
    );
    assert!(
        nft_tables(&net.a).contains(&t2),
        "the survivor's table went"
    );
    net.client(&net.a, &["connect", &net.b4(), "8080", "0.1"]);
    assert!(
        h2.wait_for(WAIT, is_conn_to(8080)).is_some(),
        "the survivor still tracks"
    );
}

#[test]
fn the_owned_table_switches_conntrack_on_and_no_one_else_can_remove_it() {
    let test = "the_owned_table_switches_conntrack_on_and_no_one_else_can_remove_it";
    if !root_or_skip(test) || !require(test, &["ip", "nft", "python3"]) {
        return;
    }
    let mut net = Net::new();
    net.serve(&net.b.clone(), "0.0.0.0", &[8080]);
    let h = Helper::start(&net.a, &[]);
    let name = format!("conntrack_tray_{}", h.pid());
    let (ok, listing) = {
        let out = Net::cmd(&net.a, &["nft", "list", "table", "inet", &name])
            .output()
            .expect("nft");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    assert!(ok && listing.contains("flags owner"), "{listing}");
    assert_eq!(
        listing.matches("ct state new accept").count(),
        3,
        "{listing}"
    );
    // The fresh namespace tracked nothing before the helper: its flow is reported now.
    net.client(&net.a, &["connect", &net.b4(), "8080", "0.1"]);
    let v = h
        .wait_for(WAIT, is_conn_to(8080))
        .expect("the flow is reported");
    assert_eq!(v["direction"], "outbound", "{v}");
    // Another process (root, even another helper) cannot delete or flush it.
    let (deleted, err) = nft(&net.a, &["delete", "table", "inet", &name]);
    assert!(!deleted && err.contains("Operation not permitted"), "{err}");
    let _ = nft(&net.a, &["flush", "ruleset"]);
    assert!(nft_tables(&net.a).contains(&name));
    drop(h);
    assert!(tables_become(&net.a, |t| !t.contains(&name)));
}

#[test]
fn tables_of_gone_helpers_are_removed_at_start_and_a_live_helpers_is_kept() {
    let test = "tables_of_gone_helpers_are_removed_at_start_and_a_live_helpers_is_kept";
    if !root_or_skip(test) || !require(test, &["ip", "nft"]) {
        return;
    }
    let net = Net::new();
    // What helpers on a kernel without the owner flag leave behind (tables added by `nft`):
    // one whose pid is dead, one whose pid is now some other program, and a live helper's.
    let mut gone = std::process::Command::new("true").spawn().expect("true");
    let dead = gone.id();
    gone.wait().expect("wait");
    let mut other = std::process::Command::new("sleep")
        .arg("30")
        .spawn()
        .expect("sleep");
    let live = Helper::start(&net.a, &["--no-ensure-conntrack"]);
    let names = [dead, other.id(), live.pid()].map(|p| format!("conntrack_tray_{p}"));
    for name in names.iter().map(String::as_str).chain(["unrelated"]) {
        let (ok, err) = nft(&net.a, &["add", "table", "inet", name]);
        assert!(ok, "{err}");
    }
    let h = Helper::start(&net.a, &[]);
    let tables = nft_tables(&net.a);
    let _ = other.kill();
    let _ = other.wait();
    let has = |name: &str| tables.lines().any(|l| l == format!("table inet {name}"));
    assert!(!has(&names[0]), "a dead pid's: {tables}");
    assert!(!has(&names[1]), "not a helper's: {tables}");
    assert!(has(&names[2]), "a live helper's: {tables}");
    assert!(has("unrelated"), "{tables}");
    assert!(has(&format!("conntrack_tray_{}", h.pid())), "{tables}");
    let errors = startup_errors(&h.collect(Duration::from_millis(300)))
        .into_iter()
        .cloned()
        .collect::<Vec<_>>();
    assert!(errors.is_empty(), "{errors:?}");
}

#[test]
fn the_nft_program_fallback_adds_and_removes_its_table() {
    let test = "the_nft_program_fallback_adds_and_removes_its_table";
    if !root_or_skip(test) || !require(test, &["ip", "nft"]) {
        return;
    }
    use conntrack_tray_helper::source::nft::ConntrackTable;
    use std::os::fd::AsFd;
    let net = Net::new();
    let ns = std::fs::File::open(format!("/run/netns/{}", net.a)).expect("netns");
    // Only this thread enters the test namespace; the `nft` it runs inherits it.
    let name = std::thread::spawn(move || {
        rustix::thread::move_into_link_name_space(
            ns.as_fd(),
            Some(rustix::thread::LinkNameSpaceType::Network),
        )
        .expect("setns");
        let table = ConntrackTable::add_with_program().expect("add");
        assert!(!table.is_owned());
        assert!(table.notes().is_empty(), "{:?}", table.notes());
        let name = table.name().to_string();
        let listing = std::process::Command::new("nft")
            .args(["list", "table", "inet", &name])
            .output()
            .expect("nft");
        let listing = String::from_utf8_lossy(&listing.stdout).into_owned();
        assert_eq!(
            listing.matches("ct state new accept").count(),
            3,
            "{listing}"
        );
        assert!(!listing.contains("flags owner"), "{listing}");
        table.remove().expect("remove");
        name
    })
    .join()
    .expect("the namespace thread");
    assert_eq!(name, format!("conntrack_tray_{}", std::process::id()));
    assert!(
        !nft_tables(&net.a).contains("conntrack_tray"),
        "{}",
        nft_tables(&net.a)
    );
}

#[test]
fn unconnected_udp_one_shots_are_all_named_with_their_pid() {
    let test = "unconnected_udp_one_shots_are_all_named_with_their_pid";
    if !root_or_skip(test) || !require(test, &["ip", "nft", "python3"]) {
        return;
    }
    let net = Net::new();
    let (_d, cfg) =
        config_file("[monitor]\nprotocols = [\"all\"]\n[filter]\nrepeat_after_secs = 0\n");
    let h = Helper::start(&net.a, &["--config", cfg.to_str().expect("path")]);
    // sendto on a socket never connected, then exit: no socket is left to look up by the
    // time anyone could, and while it lived it had no peer. Only the kernel's record of the
    // send (the send hook, made before the packet left) names it.
    // Each from a port of its own (by its pid): two one-shots that happened to get the same
    // ephemeral port would be one conntrack entry, and one NEW event.
    let send = format!(
        "import os, socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); \
         s.bind(('', 20000 + os.getpid() % 30000)); s.sendto(b'x', ('{}', 5355))",
        net.b4()
    );
    let (pids, lines) = one_shots(&net, &h, 50, &["python3", "-c", &send], 5355);
    assert_all_named(&lines, &pids, 50, "python3");
    assert!(
        lines.iter().all(|v| v["attributed_by"] == "connect"),
        "{lines:?}"
    );
}
