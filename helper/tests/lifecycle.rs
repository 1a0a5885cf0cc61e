//! How the helper ends, and its nftables table with it: end of input, SIGTERM, a closed
//! stdout, SIGKILL, two helpers side by side, tables of helpers long gone, and the `nft`
//! program as a fallback. The real helper against the real kernel, in network namespaces
//! made by each test.
//!
//! The helper's nftables table goes with the helper, however it ends, and never with
//! another's.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a test that cannot set up must fail loudly

mod common;

use std::time::Duration;

use common::{is_conn_to, nft_tables, require, root_or_skip, startup_errors, Helper, Net, WAIT};

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
        1,
        "{listing}"
    );
    // A regular chain: no packet goes through the table.
    assert!(!listing.contains("hook"), "{listing}");
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
            1,
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
