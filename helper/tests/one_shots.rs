//! Programs that connect or send once and exit at once (bash `/dev/tcp` and `/dev/udp`,
//! connects refused at once, python `sendto`): each is named with its pid, and without the
//! connect hook a refused connect is still found. The real helper against the real kernel, in
//! network namespaces made by each test.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a test that cannot set up must fail loudly

mod common;

use std::time::Duration;

use common::{config_file, one_shots, pid_of, require, root_or_skip, startup_errors, Helper, Net};
use serde_json::Value;

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
