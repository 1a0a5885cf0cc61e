//! The applet end to end, over a private D-Bus session bus with a recording notification
//! server and a StatusNotifierWatcher, driven by a scripted helper.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a test that cannot set up must fail loudly

mod common;
// The trust issue: disguised names, private files, the history and the config.
#[path = "applet/trust.rs"]
mod trust;
// Issue 11: novelty, one live notification per program, the restart notice.
#[path = "applet/alerts.rs"]
mod alerts;
// The tray shows the state: its art, a left click, today's count, a second launch.
#[path = "applet/tray.rs"]
mod tray;
// Issue 12: a known or whitelisted program that runs another binary is told.
#[path = "applet/binaries.rs"]
mod binaries;
// Issue 13: the connections window opened from the tray, under Xvfb.
#[path = "applet/window.rs"]
mod window;

use std::time::Duration;

use common::{
    click, connection, connection_value, get_layout, mode, nobody_reads, require, wait_until,
    Applet, Bus, NotificationServer, SniWatcher,
};
use conntrack_tray_helper::sanitize::is_hidden;

const WAIT: Duration = Duration::from_secs(10);

struct World {
    _dir: tempfile::TempDir,
    bus: Bus,
    notes: NotificationServer,
    watcher: SniWatcher,
    applet: Applet,
}

fn world_with_config(config: Option<&str>) -> World {
    let dir = tempfile::tempdir().expect("tmp");
    if let Some(text) = config {
        let p = Applet::config_path(dir.path());
        std::fs::create_dir_all(p.parent().expect("dir")).expect("mkdir");
        std::fs::write(&p, text).expect("config");
    }
    world_in(dir)
}

/// The world in a directory the test prepared (its HOME, with config/ and state/ in it).
fn world_in(dir: tempfile::TempDir) -> World {
    world_with_args(dir, &[])
}

/// The same, the applet started with `extra` arguments.
fn world_with_args(dir: tempfile::TempDir, extra: &[&str]) -> World {
    let bus = Bus::start(dir.path());
    // Both servers are on the bus before the applet asks for them.
    let notes = NotificationServer::start(&bus);
    let watcher = SniWatcher::start(&bus);
    let applet = Applet::start_full(&bus, dir.path(), &[], &common::fake_helper(), extra);
    assert!(applet.wait_helper_started(1), "the helper was not started");
    World {
        _dir: dir,
        bus,
        notes,
        watcher,
        applet,
    }
}

fn world() -> World {
    world_with_config(None)
}

impl World {
    fn notified(&self, n: usize) -> Vec<common::Notified> {
        wait_until(WAIT, || {
            let all = self.notes.seen.all();
            (all.len() >= n).then_some(all)
        })
        .unwrap_or_else(|| {
            panic!(
                "expected {n} notifications, got {:?}",
                self.notes.seen.all()
            )
        })
    }

    fn menu_service(&self) -> String {
        wait_until(WAIT, || self.watcher.items().first().cloned())
            .expect("the tray item registered")
    }

    fn config_text(&self) -> String {
        std::fs::read_to_string(Applet::config_path(&self.applet.dir)).unwrap_or_default()
    }

    fn wait_log(&self, needle: &str) -> bool {
        wait_until(WAIT, || {
            self.applet.helper_log().contains(needle).then_some(())
        })
        .is_some()
    }
}

#[test]
fn a_flow_becomes_a_notification_with_the_right_fields_and_escaped_markup() {
    let test = "a_flow_becomes_a_notification_with_the_right_fields_and_escaped_markup";
    if !require(test, &["dbus-daemon", "python3"]) {
        return;
    }
    let w = world();
    w.applet.emit(&connection(
        "/tmp/x/<b>evil&co\u{1b}[2J",
        "93.184.216.34",
        443,
        true,
    ));
    let n = w.notified(1).remove(0);
    assert_eq!(n.app_name, "conntrack-tray");
    // The summary is plain text by the spec: no markup escaping, and the escape character
    // shown, not sent.
    assert_eq!(n.summary, "93.184.216.34:443 ← <b>evil&co\\x1b[2J");
    assert!(
        n.body.contains("/tmp/x/&lt;b&gt;evil&amp;co\\x1b[2J"),
        "{}",
        n.body
    );
    assert!(!n.body.contains('\u{1b}'));
    assert!(
        n.body.contains("pid 4242, user alice") && n.body.contains("port 43210"),
        "{}",
        n.body
    );
    assert_eq!(n.urgency, Some(2), "critical port: critical urgency");
    assert_eq!(n.icon, "dialog-warning");
    // At most three buttons, the most important first, and the body opens the details.
    let keys: Vec<&str> = n.actions.iter().step_by(2).map(String::as_str).collect();
    assert_eq!(
        keys,
        ["default", "whitelist-program", "mute", "whitelist-remote"]
    );
    assert!(n.actions.contains(&"Whitelist 93.184.216.34".to_string()));
    // The hints the servers use to group and theme it, and an expiry.
    assert_eq!(n.desktop_entry.as_deref(), Some("conntrack-tray"));
    assert_eq!(n.category.as_deref(), Some("network"));
    assert!(n.expire > 0, "expires: {}", n.expire);
    assert!(n.body.starts_with("New program\n"), "{}", n.body);
}

#[test]
fn whitelist_program_edits_the_config_atomically_tells_the_helper_and_silences_the_next() {
    let test =
        "whitelist_program_edits_the_config_atomically_tells_the_helper_and_silences_the_next";
    if !require(test, &["dbus-daemon", "python3"]) {
        return;
    }
    let original =
        "# my own notes\n[whitelist]\n# trusted programs\nprocesses = [\"ssh\"] # keep\n";
    let w = world_with_config(Some(original));
    let path = Applet::config_path(&w.applet.dir);
    use std::os::unix::fs::MetadataExt;
    let inode = std::fs::metadata(&path).expect("meta").ino();
    w.applet
        .emit(&connection("/usr/bin/curl", "9.9.9.9", 443, false));
    let n = w.notified(1).remove(0);
    // The applet listens for the button right after showing the notification; press it until
    // the press is heard (whitelisting twice is whitelisting once).
    let heard = wait_until(WAIT, || {
        w.notes.invoke(n.id, "whitelist-program");
        std::thread::sleep(Duration::from_millis(200));
        w.applet
            .helper_log()
            .contains("/usr/bin/curl")
            .then_some(())
    });
    assert!(
        heard.is_some(),
        "the helper did not get the new config: {}",
        w.applet.helper_log()
    );
    let text = w.config_text();
    assert!(
        text.starts_with("# my own notes\n[whitelist]\n# trusted programs\n"),
        "{text}"
    );
    assert!(
        text.contains("processes = [\"ssh\", \"/usr/bin/curl\"] # keep"),
        "{text}"
    );
    assert_ne!(
        std::fs::metadata(&path).expect("meta").ino(),
        inode,
        "written by rename"
    );
    // The next flow of curl is silent; another program's is not.
    w.applet
        .emit(&connection("/usr/bin/curl", "9.9.9.10", 443, false));
    w.applet
        .emit(&connection("/usr/bin/wget", "9.9.9.11", 443, false));
    let all = w.notified(2);
    std::thread::sleep(Duration::from_millis(300));
    let all2 = w.notes.seen.all();
    assert_eq!(all.len(), all2.len());
    assert!(all2[1].summary.ends_with("← wget"), "{all2:?}");
    assert!(all2.iter().all(|n| !n.summary.contains("9.9.9.10")));
}

#[test]
fn the_menu_lists_recent_events_and_toggles_and_a_click_reconfigures_the_helper() {
    let test = "the_menu_lists_recent_events_and_toggles_and_a_click_reconfigures_the_helper";
    if !require(test, &["dbus-daemon", "python3"]) {
        return;
    }
    let w = world();
    w.applet
        .emit(&connection("/usr/bin/curl", "9.9.9.9", 443, false));
    w.notified(1);
    let service = w.menu_service();
    let conn = w.bus.connect();
    let root = wait_until(WAIT, || {
        let m = get_layout(&conn, &service);
        m.find("9.9.9.9:443 ← curl, on fakehost")
            .is_some()
            .then_some(m)
    })
    .unwrap_or_else(|| panic!("no recent entry in {:?}", get_layout(&conn, &service)));
    for label in [
        "Recent connections",
        "Pause monitoring",
        "Notifications",
        "Show unknown processes",
        "Critical ports only",
        "All protocols",
        "Start on login",
        "Show connections…",
        "Quit",
    ] {
        assert!(
            root.find(label).is_some(),
            "{label} missing from {:?}",
            root.labels()
        );
    }
    assert!(
        root.children[0].label.starts_with("Monitoring "),
        "{:?}",
        root.children[0].label
    );
    let recent = root
        .find("9.9.9.9:443 ← curl, on fakehost")
        .expect("recent");
    assert_eq!(
        recent.labels(),
        [
            "Whitelist curl",
            "Whitelist 9.9.9.9",
            "Mute 1 h",
            "Copy details"
        ]
    );
    let critical = root.find("Critical ports only").expect("toggle");
    assert_eq!(critical.toggle, Some(0));
    click(&conn, &service, critical.id);
    assert!(
        w.wait_log("\"critical_only\":true"),
        "{}",
        w.applet.helper_log()
    );
    assert!(
        w.config_text().contains("critical_only = true"),
        "{}",
        w.config_text()
    );
    let again = wait_until(WAIT, || {
        let m = get_layout(&conn, &service);
        (m.find("Critical ports only")?.toggle == Some(1)).then_some(())
    });
    assert!(again.is_some(), "the toggle does not show as on");
    // "Start on login" writes the autostart entry, and a second click removes it.
    let autostart = w.applet.dir.join("config/autostart/conntrack-tray.desktop");
    let toggle = root.find("Start on login").expect("autostart toggle").id;
    click(&conn, &service, toggle);
    let written = wait_until(WAIT, || std::fs::read_to_string(&autostart).ok());
    assert!(
        written.is_some_and(|t| t.contains("Exec=conntrack-tray")),
        "no autostart entry"
    );
    let toggle = wait_until(WAIT, || {
        let m = get_layout(&conn, &service);
        let t = m.find("Start on login")?;
        (t.toggle == Some(1)).then_some(t.id)
    })
    .expect("shown as on");
    click(&conn, &service, toggle);
    assert!(
        wait_until(WAIT, || (!autostart.exists()).then_some(())).is_some(),
        "not removed"
    );
}

#[test]
fn a_thousand_events_from_thirteen_programs_make_six_notifications_updated_in_place() {
    let test = "a_thousand_events_from_thirteen_programs_make_six_notifications_updated_in_place";
    if !require(test, &["dbus-daemon", "python3"]) {
        return;
    }
    let w = world();
    let lines: Vec<String> = (0..1000)
        .map(|i| {
            connection(
                &format!("/usr/bin/p{}", i % 13),
                &format!("10.1.{}.{}", i / 250, i % 250),
                443,
                false,
            )
        })
        .collect();
    let started = std::time::Instant::now();
    w.applet.emit(&lines.join("\n"));
    // Wait until the applet has seen all of them (the recent menu shows the last).
    let service = w.menu_service();
    let conn = w.bus.connect();
    let last = "10.1.3.249:443 ← p11, on fakehost";
    // A thousand menu rebuilds take seconds on a busy machine: wait longer than WAIT (it
    // returns as soon as the last one is there).
    let seen = wait_until(6 * WAIT, || {
        get_layout(&conn, &service).find(last).map(|_| ())
    });
    assert!(seen.is_some(), "the last event never reached the menu");
    // The folded counts arrive as updates in place within a second or two.
    let counted = wait_until(WAIT, || {
        let screen = w.notes.seen.on_screen();
        screen
            .iter()
            .any(|n| n.summary.contains("connections to"))
            .then_some(screen)
    })
    .unwrap_or_else(|| panic!("no update in place: {:?}", w.notes.seen.all()));
    // Five programs of their own (per_minute), the other eight in one group naming three.
    assert_eq!(counted.len(), 6, "{counted:?}");
    assert!(
        counted.iter().any(|n| n
            .summary
            .starts_with("8 new programs: p5, p6, p7, and 5 more")),
        "{counted:?}"
    );
    let all = w.notes.seen.all();
    assert!(all.iter().any(|n| n.replaces != 0), "updates replace");
    // At most one update a second for each.
    let secs = started.elapsed().as_secs() + 2;
    for n in &counted {
        let calls = all.iter().filter(|a| a.id == n.id).count() as u64;
        assert!(calls <= secs, "{calls} calls for {} in {secs} s", n.id);
    }
    // All over one D-Bus connection, and every one expires.
    assert!(all.iter().all(|n| n.sender == all[0].sender), "{all:?}");
    assert!(all.iter().all(|n| n.expire > 0), "{all:?}");
}

#[test]
fn lost_events_are_told_once_and_counted_in_the_menu() {
    let test = "lost_events_are_told_once_and_counted_in_the_menu";
    if !require(test, &["dbus-daemon", "python3"]) {
        return;
    }
    let w = world();
    w.applet.emit(
        &[
            r#"{"type":"lost","count":40,"reason":"kernel"}"#,
            r#"{"type":"lost","count":2,"reason":"kernel"}"#,
        ]
        .join("\n"),
    );
    let n = w.notified(1);
    assert!(
        n[0].body.contains("unseen") && n[0].body.contains("40 on fakehost"),
        "{:?}",
        n[0]
    );
    let service = w.menu_service();
    let conn = w.bus.connect();
    let want = "Monitoring fakehost — 0 today, 42 lost";
    let status = wait_until(WAIT, || {
        let root = get_layout(&conn, &service);
        let first = root.children.first().map(|c| c.label.clone());
        (first.as_deref() == Some(want)).then_some(())
    });
    assert!(
        status.is_some(),
        "the menu's status line counts every lost event: {:?}",
        get_layout(&conn, &service).labels()
    );
    // The second record comes within the minute: counted, told with the next notice.
    assert_eq!(w.notes.seen.all().len(), 1);
}

#[test]
fn a_crashed_helper_is_restarted_and_gets_its_config_again() {
    let test = "a_crashed_helper_is_restarted_and_gets_its_config_again";
    if !require(test, &["dbus-daemon", "python3"]) {
        return;
    }
    let w = world();
    assert!(w.wait_log("{\"cmd\":\"config\""));
    w.applet.emit("crash");
    assert!(
        w.applet.wait_helper_started(2),
        "not restarted: {}",
        w.applet.helper_log()
    );
    let configs = || w.applet.helper_log().matches("{\"cmd\":\"config\"").count();
    let again = wait_until(WAIT, || (configs() == 2).then_some(()));
    assert!(again.is_some(), "{}", w.applet.helper_log());
    // And it works again.
    w.applet
        .emit(&connection("/usr/bin/curl", "9.9.9.9", 443, false));
    w.notified(1);
}

#[test]
fn no_helper_is_left_running_after_the_applet_quits_or_is_killed() {
    let test = "no_helper_is_left_running_after_the_applet_quits_or_is_killed";
    if !require(test, &["dbus-daemon", "python3"]) {
        return;
    }
    for signal in [
        nix::sys::signal::Signal::SIGTERM,
        nix::sys::signal::Signal::SIGKILL,
    ] {
        let mut w = world();
        let pid = w.applet.helper_pids()[0];
        assert!(common::alive(pid));
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(w.applet.child.id() as i32),
            signal,
        )
        .expect("signal");
        let _ = w.applet.child.wait();
        assert!(
            wait_until(Duration::from_secs(3), || (!common::alive(pid))
                .then_some(()))
            .is_some(),
            "the helper outlived the applet ({signal:?})"
        );
    }
}

#[test]
fn a_second_instance_has_the_running_one_show_itself_and_exits_0() {
    let test = "a_second_instance_has_the_running_one_show_itself_and_exits_0";
    if !require(test, &["dbus-daemon", "python3"]) {
        return;
    }
    let w = world();
    // Running: it has said hello and got its config.
    assert!(w.wait_log("{\"cmd\":\"config\""));
    let out = std::process::Command::new(common::APPLET)
        .arg("--helper")
        .arg(common::fake_helper())
        .env("DBUS_SESSION_BUS_ADDRESS", &w.bus.address)
        .output()
        .expect("second");
    assert_eq!(out.status.code(), Some(0));
    let said = String::from_utf8_lossy(&out.stdout);
    let pid = w.applet.child.id();
    assert!(
        said.contains(&format!(
            "already running in this session (pid {pid}): told it to show itself"
        )),
        "{said}"
    );
    let shown = wait_until(WAIT, || {
        w.notes
            .seen
            .all()
            .into_iter()
            .find(|n| n.body.starts_with("conntrack-tray is running"))
    })
    .unwrap_or_else(|| panic!("{:?}", w.notes.seen.all()));
    assert_eq!(
        shown.body,
        "conntrack-tray is running — Monitoring fakehost — 0 today, 0 lost"
    );
    assert!(w.applet.helper_pids().len() == 1, "no second helper");
}

#[test]
fn quit_from_the_menu_ends_the_applet() {
    let test = "quit_from_the_menu_ends_the_applet";
    if !require(test, &["dbus-daemon", "python3"]) {
        return;
    }
    let mut w = world();
    let service = w.menu_service();
    let conn = w.bus.connect();
    let quit = wait_until(WAIT, || {
        get_layout(&conn, &service).find("Quit").map(|n| n.id)
    })
    .expect("Quit");
    click(&conn, &service, quit);
    let status = wait_until(WAIT, || w.applet.child.try_wait().ok().flatten()).expect("exited");
    assert!(status.success());
    assert!(
        w.applet.helper_log().contains("eof"),
        "the helper's stdin was closed"
    );
}

#[test]
fn a_remote_host_over_ssh_is_merged_and_named_and_reconnected() {
    let test = "a_remote_host_over_ssh_is_merged_and_named_and_reconnected";
    if !require(test, &["dbus-daemon", "python3"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let bus = Bus::start(dir.path());
    let notes = NotificationServer::start(&bus);
    let watcher = SniWatcher::start(&bus);
    let applet = Applet::start_full(
        &bus,
        dir.path(),
        &[],
        &common::fake_helper(),
        &["--remote", "alice@nas"],
    );
    let ssh_log = dir.path().join("helper.log.ssh");
    let ssh = wait_until(WAIT, || std::fs::read_to_string(&ssh_log).ok()).expect("ssh was run");
    assert!(ssh.contains("-o BatchMode=yes"), "{ssh}");
    assert!(
        ssh.trim_end().ends_with(
            "-- alice@nas sudo -n /usr/libexec/conntrack-tray/conntrack-tray-helper --format json"
        ),
        "{ssh}"
    );
    let remote_log = dir.path().join("helper.log.remote");
    let started = wait_until(WAIT, || {
        std::fs::read_to_string(&remote_log)
            .ok()?
            .contains("{\"cmd\":\"config\"")
            .then_some(())
    });
    assert!(
        started.is_some(),
        "the remote helper did not get its config"
    );
    applet.emit_remote(&connection("/usr/bin/rsync", "9.9.9.9", 873, false));
    let n = wait_until(WAIT, || notes.seen.all().into_iter().next()).expect("a notification");
    assert!(n.body.contains("on nas"), "{}", n.body);
    assert!(
        n.summary.ends_with("· on nas"),
        "the host in the summary: {}",
        n.summary
    );
    assert!(
        n.actions.contains(&"Whitelist rsync on nas".to_string()),
        "{:?}",
        n.actions
    );
    let service = wait_until(WAIT, || watcher.items().first().cloned()).expect("tray");
    let conn = bus.connect();
    let status = wait_until(WAIT, || {
        let m = get_layout(&conn, &service);
        let s = m.children.first()?.label.clone();
        (s.contains("fakehost") && s.contains("nas")).then_some(s)
    });
    assert!(
        status.is_some(),
        "{:?}",
        get_layout(&conn, &service).children.first()
    );
    assert!(get_layout(&conn, &service)
        .find("9.9.9.9:873 ← rsync, on nas")
        .is_some());
    // The connection drops; it is made again.
    applet.emit_remote("crash");
    let again = wait_until(WAIT, || {
        (std::fs::read_to_string(&ssh_log).ok()?.lines().count() >= 2).then_some(())
    });
    assert!(again.is_some(), "not reconnected");
    // Told once when it dropped, and once when it was back, with how long.
    let told = |what: &str| {
        wait_until(WAIT, || {
            notes
                .seen
                .all()
                .into_iter()
                .find(|n| n.body.starts_with(what))
        })
    };
    let down = told("nas: not watched (exited with status 3)").expect("a drop notice");
    let up = told("nas: watched again, after").expect("a recovery notice");
    assert!(
        up.body.ends_with("not watched (exited with status 3)"),
        "{up:?}"
    );
    assert!(down.id != up.id);
}

#[test]
fn without_a_tray_it_keeps_notifying_and_says_so_once() {
    let test = "without_a_tray_it_keeps_notifying_and_says_so_once";
    if !require(test, &["dbus-daemon", "python3"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let bus = Bus::start(dir.path());
    let notes = NotificationServer::start(&bus);
    let applet = Applet::start(&bus, dir.path());
    assert!(applet.wait_helper_started(1));
    applet.emit(&connection("/usr/bin/curl", "9.9.9.9", 443, false));
    let all = wait_until(WAIT, || {
        let all = notes.seen.all();
        all.iter()
            .any(|n| n.summary.ends_with("← curl"))
            .then_some(all)
    })
    .unwrap_or_else(|| panic!("{:?}", notes.seen.all()));
    let said: Vec<_> = all
        .iter()
        .filter(|n| n.body.contains("no system tray"))
        .collect();
    assert_eq!(said.len(), 1, "{all:?}");
}

#[test]
fn a_tray_that_starts_later_still_gets_the_icon() {
    let test = "a_tray_that_starts_later_still_gets_the_icon";
    if !require(test, &["dbus-daemon", "python3"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let bus = Bus::start(dir.path());
    let _notes = NotificationServer::start(&bus);
    let applet = Applet::start(&bus, dir.path());
    assert!(applet.wait_helper_started(1));
    std::thread::sleep(Duration::from_millis(300));
    let watcher = SniWatcher::start(&bus);
    let service = wait_until(WAIT, || watcher.items().first().cloned());
    assert!(
        service.is_some(),
        "the item did not register with a watcher that came later"
    );
    let conn = bus.connect();
    assert!(get_layout(&conn, &service.expect("service"))
        .find("Quit")
        .is_some());
}
