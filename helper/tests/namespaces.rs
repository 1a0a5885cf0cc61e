//! The real helper against the real kernel, in network namespaces made by each test.
//!
//! Namespace `a` is "this machine" (the helper runs there), `b` is the rest of the world.
//! Each test starts its own peers and reads the helper's JSON stream.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a test that cannot set up must fail loudly

mod common;

use std::time::Duration;

use common::{config_file, is_conn_to, pid_of, require, root_or_skip, Helper, Net, WAIT};
use serde_json::Value;

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
