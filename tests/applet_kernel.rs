//! The applet with the real helper against the real kernel: a connection made in a test
//! network namespace becomes a notification naming the right process.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a test that cannot set up must fail loudly

mod common;
#[path = "../helper/tests/common/mod.rs"]
mod nets;

use std::time::Duration;

use common::{wait_until, Applet, Bus, NotificationServer, SniWatcher};

#[test]
fn a_real_connection_becomes_a_notification_naming_its_process() {
    let test = "a_real_connection_becomes_a_notification_naming_its_process";
    if !nets::root_or_skip(test) || !nets::require(test, &["ip", "nft", "python3", "dbus-daemon"]) {
        return;
    }
    let helper = nets::helper_bin();
    if !helper.exists() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{} is not built",
            helper.display()
        );
        eprintln!(
            "SKIPPED: {} is not built (cargo test --workspace builds it)",
            helper.display()
        );
        return;
    }
    let mut net = nets::Net::new();
    net.serve(&net.b.clone(), "0.0.0.0", &[8080]);
    let dir = tempfile::tempdir().expect("tmp");
    let bus = Bus::start(dir.path());
    let notes = NotificationServer::start(&bus);
    let _watcher = SniWatcher::start(&bus);
    // The bus is a unix socket on the file system: reachable from inside the namespace.
    let _applet = Applet::start_with(&bus, dir.path(), &["ip", "netns", "exec", &net.a], &helper);
    let ready = wait_until(Duration::from_secs(10), || {
        nets::nft_tables(&net.a)
            .contains("conntrack_tray_")
            .then_some(())
    });
    assert!(ready.is_some(), "the helper did not start in the namespace");
    std::thread::sleep(Duration::from_millis(300));
    let (pid, _) = net.client(&net.a, &["connect", &net.b4(), "8080", "0.5"]);
    let n = wait_until(Duration::from_secs(10), || {
        notes
            .seen
            .all()
            .into_iter()
            .find(|n| n.summary.contains(":8080"))
    })
    .unwrap_or_else(|| panic!("no notification: {:?}", notes.seen.all()));
    // The destination first, then the program.
    assert!(
        n.summary
            .starts_with(&format!("{}:8080 ← python3", net.b4())),
        "{}",
        n.summary
    );
    assert!(
        n.body.contains(&format!("pid {pid}, user root")),
        "{}",
        n.body
    );
}
