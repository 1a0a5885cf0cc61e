//! The applet against what the watched code can do as the same user (the trust issue): a
//! disguised process or DNS name (shown escaped, the destination first, also by the real
//! dunst), the history and config kept from other users (0600 files, 0700 directories, and
//! `nobody` trying to read them), the history kept across a restart, a config kept behind a
//! link, and a broken config that trusts nothing.

use super::*;

/// The disguises of the trust issue in one process name: a bidi override (it reversed the
/// destination in dunst), a newline, zero-width characters, and 200 spaces before a fake
/// first line.
fn hostile_name() -> String {
    format!(
        "innocent\u{202e}txt.exe\n\u{200b}\u{200d}\u{feff}{}firefox → github.com (140.82.112.3:443)",
        " ".repeat(200)
    )
}

/// No raw control or format character, but the layout's own line breaks.
fn visible(s: &str) -> bool {
    s.lines().all(|l| !l.chars().any(is_hidden))
}

#[test]
fn a_disguised_process_name_shows_escaped_and_the_destination_first() {
    let test = "a_disguised_process_name_shows_escaped_and_the_destination_first";
    if !require(test, &["dbus-daemon", "python3"]) {
        return;
    }
    let w = world();
    // The name as comm (no exe known), with a looked-up name as strange.
    let mut by_comm = connection_value("/usr/bin/x", "93.184.216.34", 443, false);
    by_comm["process"]["comm"] = hostile_name().into();
    by_comm["process"]["exe"] = serde_json::Value::Null;
    by_comm["host"] = "example.com\u{202e}\u{200b}".into();
    by_comm["host_source"] = "dns".into();
    w.applet.emit(&by_comm.to_string());
    // The name as the exe's file name, from another address.
    let by_exe = connection_value(&format!("/tmp/{}", hostile_name()), "10.9.8.7", 8443, false);
    w.applet.emit(&by_exe.to_string());
    let all = w.notified(2);
    let (first, second) = (&all[0], &all[1]);
    for n in [first, second] {
        assert!(visible(&n.summary) && visible(&n.body), "{n:?}");
        assert_eq!(n.summary.lines().count(), 1, "{n:?}");
        assert!(!n.summary.contains("  "), "{n:?}");
        assert!(n.actions.iter().all(|a| visible(a)), "{n:?}");
    }
    assert!(
        first.summary.starts_with(
            "93.184.216.34:443 (example.com\\u{202e}\\u{200b}) ← innocent\\u{202e}txt.exe\\x0a"
        ),
        "{}",
        first.summary
    );
    // What is new, pid and user, the flow, and nothing forged in between.
    assert_eq!(first.body.lines().count(), 3, "{}", first.body);
    assert!(
        second
            .summary
            .starts_with("10.9.8.7:8443 ← innocent\\u{202e}txt.exe\\x0a"),
        "{}",
        second.summary
    );
    assert_eq!(second.body.lines().count(), 4, "{}", second.body);
    assert!(
        second
            .body
            .starts_with("New program\n/tmp/innocent\\u{202e}txt.exe\\x0a"),
        "{}",
        second.body
    );
    assert!(
        second
            .actions
            .iter()
            .any(|a| a.starts_with("Whitelist innocent\\u{202e}")),
        "{:?}",
        second.actions
    );
    // The menu shows the same, sanitized, destination first.
    let service = w.menu_service();
    let conn = w.bus.connect();
    let labels = wait_until(WAIT, || {
        let m = get_layout(&conn, &service);
        let recent = m.find("Recent connections")?.labels();
        (recent.len() == 2).then_some(recent)
    })
    .expect("two recent entries");
    assert!(labels.iter().all(|l| visible(l)), "{labels:?}");
    assert!(
        labels[0].starts_with("10.9.8.7:8443 ← innocent"),
        "{labels:?}"
    );
}

#[test]
fn history_config_and_autostart_are_private_and_nobody_reads_them() {
    let test = "history_config_and_autostart_are_private_and_nobody_reads_them";
    if !require(test, &["dbus-daemon", "python3"]) {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tmp");
    let home = dir.path();
    // A home others may enter, as Debian makes them, with the XDG folders there already and
    // the applet's config folder made wide by someone; its state folder does not exist yet.
    let wide = std::fs::Permissions::from_mode(0o755);
    let own_config = home.join("config/conntrack-tray");
    std::fs::create_dir_all(&own_config).expect("mkdir");
    std::fs::create_dir_all(home.join("state")).expect("mkdir");
    for d in [home, &home.join("config"), &own_config, &home.join("state")] {
        std::fs::set_permissions(d, wide.clone()).expect("chmod");
    }
    let control = home.join("control.txt");
    std::fs::write(&control, "anyone").expect("write");
    std::fs::set_permissions(&control, std::fs::Permissions::from_mode(0o644)).expect("chmod");
    let w = world_in(dir);
    let home = w.applet.dir.clone();
    assert_eq!(mode(&own_config), 0o700, "tightened at start");
    // Root's command line with a secret in it.
    let mut secret = connection_value("/usr/bin/curl", "9.9.9.9", 443, false);
    secret["process"]["cmdline"] = serde_json::json!(["curl", "-H", "X-Api-Key: s3cr3t"]);
    secret["process"]["uid"] = 0.into();
    secret["process"]["user"] = "root".into();
    w.applet.emit(&secret.to_string());
    w.notified(1);
    let history = home.join("state/conntrack-tray/events.jsonl");
    let logged = wait_until(WAIT, || {
        std::fs::read_to_string(&history)
            .ok()?
            .contains("s3cr3t")
            .then_some(())
    });
    assert!(logged.is_some(), "not in the history");
    // The config and the autostart entry, written by clicks.
    let service = w.menu_service();
    let conn = w.bus.connect();
    // Each click changes the menu (a toggle's state), and its ids with it: the next click
    // waits until the layout shows the toggle flipped, and reads its id from that layout.
    for label in ["Critical ports only", "Start on login"] {
        let root = get_layout(&conn, &service);
        let item = root.find(label).expect("toggle");
        let before = item.toggle;
        click(&conn, &service, item.id);
        let flipped = wait_until(WAIT, || {
            let now = get_layout(&conn, &service);
            (now.find(label)?.toggle != before).then_some(())
        });
        assert!(flipped.is_some(), "{label} did not toggle");
    }
    let config = Applet::config_path(&home);
    let autostart = home.join("config/autostart/conntrack-tray.desktop");
    let written = wait_until(WAIT, || {
        (config.exists() && autostart.exists()).then_some(())
    });
    assert!(
        written.is_some(),
        "the config and autostart entry were not written"
    );
    for file in [&history, &config, &autostart] {
        assert_eq!(mode(file), 0o600, "{}", file.display());
    }
    for d in [
        &home.join("state/conntrack-tray"),
        &own_config,
        &home.join("config/autostart"),
    ] {
        assert_eq!(mode(d), 0o700, "{}", d.display());
    }
    // Folders that are not the applet's are left as they were.
    assert_eq!(mode(&home.join("config")), 0o755);
    assert_eq!(mode(&home.join("state")), 0o755);
    let leftovers: Vec<_> = std::fs::read_dir(&own_config)
        .expect("dir")
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .filter(|n| n != "config.toml")
        .collect();
    assert!(leftovers.is_empty(), "temporary files left: {leftovers:?}");
    // The attack: another user reads the files. (As root only; CI runs it so.)
    match nobody_reads(&control) {
        None => eprintln!("{test}: not root, the read as nobody is not tried"),
        Some(read) => {
            assert!(
                read,
                "nobody cannot even read a 0644 file here: the test proves nothing"
            );
            for file in [&history, &config, &autostart] {
                assert_eq!(
                    nobody_reads(file),
                    Some(false),
                    "nobody read {}",
                    file.display()
                );
            }
        }
    }
}

#[test]
fn the_history_keeps_connections_with_a_looked_up_name_across_a_restart() {
    let test = "the_history_keeps_connections_with_a_looked_up_name_across_a_restart";
    if !require(test, &["dbus-daemon", "python3"]) {
        return;
    }
    let mut w = world();
    let mut named = connection_value("/usr/bin/curl", "93.184.216.34", 443, false);
    named["host"] = "example.com".into();
    named["host_source"] = "dns".into();
    w.applet.emit(&named.to_string());
    w.applet
        .emit(&connection("/usr/bin/wget", "9.9.9.9", 80, false));
    w.notified(2);
    let history = w.applet.dir.join("state/conntrack-tray/events.jsonl");
    let both = wait_until(WAIT, || {
        let text = std::fs::read_to_string(&history).ok()?;
        (text.lines().count() == 2).then_some(())
    });
    assert!(both.is_some(), "{:?}", std::fs::read_to_string(&history));
    // Stop it, and start it again on the same files.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(w.applet.child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .expect("signal");
    let _ = w.applet.child.wait();
    let dir = w.applet.dir.clone();
    w.applet = Applet::start(&w.bus, &dir);
    assert!(w.applet.wait_helper_started(2), "{}", w.applet.helper_log());
    let service = wait_until(WAIT, || {
        let items = w.watcher.items();
        (items.len() >= 2).then(|| items.last().cloned()).flatten()
    })
    .expect("the new tray item registered");
    let conn = w.bus.connect();
    let want = [
        "9.9.9.9:80 ← wget, on fakehost",
        "93.184.216.34:443 (example.com) ← curl, on fakehost",
    ];
    let recent = wait_until(WAIT, || {
        let labels = get_layout(&conn, &service)
            .find("Recent connections")?
            .labels();
        (labels == want).then_some(())
    });
    assert!(
        recent.is_some(),
        "{:?}",
        get_layout(&conn, &service).find("Recent connections")
    );
}

#[test]
fn a_linked_config_is_edited_through_its_target_and_stays_a_link() {
    let test = "a_linked_config_is_edited_through_its_target_and_stays_a_link";
    if !require(test, &["dbus-daemon", "python3"]) {
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().expect("tmp");
    let dots = dir.path().join("dotfiles");
    std::fs::create_dir(&dots).expect("mkdir");
    std::fs::set_permissions(&dots, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let target = dots.join("conntrack-tray.toml");
    std::fs::write(
        &target,
        "# kept in git\n[filter]\ncritical_only = false # mine\n",
    )
    .expect("write");
    let link = Applet::config_path(dir.path());
    std::fs::create_dir_all(link.parent().expect("dir")).expect("mkdir");
    std::os::unix::fs::symlink("../../dotfiles/conntrack-tray.toml", &link).expect("ln");
    let w = world_in(dir);
    let service = w.menu_service();
    let conn = w.bus.connect();
    let toggle = wait_until(WAIT, || {
        get_layout(&conn, &service)
            .find("Critical ports only")
            .map(|n| n.id)
    })
    .expect("toggle");
    click(&conn, &service, toggle);
    assert!(
        w.wait_log("\"critical_only\":true"),
        "{}",
        w.applet.helper_log()
    );
    let meta = std::fs::symlink_metadata(&link).expect("meta");
    assert!(meta.file_type().is_symlink(), "the link was replaced");
    assert_eq!(
        std::fs::read_to_string(&target).expect("read"),
        "# kept in git\n[filter]\ncritical_only = true # mine\n"
    );
    assert_eq!(mode(&target), 0o600);
    assert_eq!(mode(&dots), 0o755, "not the applet's folder");
    assert_eq!(
        std::fs::read_dir(&dots).expect("dir").count(),
        1,
        "a temporary file was left"
    );
}

#[test]
fn a_broken_config_trusts_nothing_says_where_and_is_left_alone() {
    let test = "a_broken_config_trusts_nothing_says_where_and_is_left_alone";
    if !require(test, &["dbus-daemon", "python3"]) {
        return;
    }
    let broken =
        "[whitelist]\nprocesses = [\"/usr/bin/curl\"]\n\n[filter]\ncritical_only = maybe\n";
    let w = world_with_config(Some(broken));
    let notice = wait_until(WAIT, || {
        w.notes
            .seen
            .all()
            .into_iter()
            .find(|n| n.body.contains("nothing is whitelisted"))
    })
    .unwrap_or_else(|| panic!("no notice: {:?}", w.notes.seen.all()));
    assert!(
        notice.body.contains("config.toml:5:") && notice.body.contains("filter.critical_only"),
        "{}",
        notice.body
    );
    // The helper is told to trust nothing, and curl, in the broken file's whitelist, is shown.
    assert!(w.wait_log("\"processes\":[]"), "{}", w.applet.helper_log());
    w.applet
        .emit(&connection("/usr/bin/curl", "9.9.9.9", 443, false));
    let shown = wait_until(WAIT, || {
        w.notes
            .seen
            .all()
            .into_iter()
            .find(|n| n.summary == "9.9.9.9:443 ← curl")
    });
    assert!(shown.is_some(), "{:?}", w.notes.seen.all());
    assert_eq!(w.config_text(), broken, "the file is left as it is");
    // Fixed, it is picked up: curl is trusted from then on.
    let path = Applet::config_path(&w.applet.dir);
    std::fs::write(&path, "[whitelist]\nprocesses = [\"/usr/bin/curl\"]\n").expect("fix");
    assert!(
        w.wait_log("\"processes\":[\"/usr/bin/curl\"]"),
        "{}",
        w.applet.helper_log()
    );
}

/// Starts `Xvfb` on a free display and waits until it is really there (its socket exists and
/// it still runs); returns it and the display name. A few bounded attempts.
pub(super) fn xvfb() -> Option<(common::Killed, String)> {
    use std::io::Read;
    for _ in 0..5 {
        let mut child = common::Killed(
            std::process::Command::new("Xvfb")
                .args([
                    "-displayfd",
                    "1",
                    "-screen",
                    "0",
                    "1024x768x24",
                    "-nolisten",
                    "tcp",
                ])
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::null())
                .spawn()
                .ok()?,
        );
        let mut out = child.0.stdout.take()?;
        let mut buf = [0u8; 16];
        let n = out.read(&mut buf).ok()?;
        let number = String::from_utf8_lossy(&buf[..n]).trim().to_string();
        let socket = std::path::PathBuf::from(format!("/tmp/.X11-unix/X{number}"));
        let ready = wait_until(Duration::from_secs(2), || {
            if child.0.try_wait().ok().flatten().is_some() {
                return Some(false);
            }
            socket.exists().then_some(true)
        });
        if !number.is_empty() && ready == Some(true) {
            // Give the server a moment past creating its socket.
            std::thread::sleep(Duration::from_millis(100));
            return Some((child, format!(":{number}")));
        }
    }
    None
}

#[test]
fn the_real_dunst_under_xvfb_shows_the_notification() {
    let test = "the_real_dunst_under_xvfb_shows_the_notification";
    if !require(
        test,
        &["dbus-daemon", "python3", "Xvfb", "dunst", "dunstctl"],
    ) {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let bus = Bus::start(dir.path());
    let (_x, display) = xvfb().expect("Xvfb");
    let conn = bus.connect();
    let dbus = zbus::blocking::fdo::DBusProxy::new(&conn).expect("proxy");
    // Xvfb announces its display a moment before it always accepts clients, and dunst gives up
    // at once without one: start it again (a few times, bounded) when it exits early.
    let mut dunst = None;
    for _ in 0..5 {
        let mut child = common::Killed(
            std::process::Command::new("dunst")
                .env("DISPLAY", &display)
                .env("DBUS_SESSION_BUS_ADDRESS", &bus.address)
                .env("HOME", dir.path())
                .stdout(std::process::Stdio::null())
                .stderr(std::fs::File::create(dir.path().join("dunst.log")).expect("log"))
                .spawn()
                .expect("dunst"),
        );
        let owned = wait_until(Duration::from_secs(3), || {
            if child.0.try_wait().ok().flatten().is_some() {
                return Some(false);
            }
            dbus.name_has_owner("org.freedesktop.Notifications".try_into().ok()?)
                .ok()?
                .then_some(true)
        });
        if owned == Some(true) {
            dunst = Some(child);
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        dunst.is_some(),
        "dunst did not take the notification name on {display}: {}",
        std::fs::read_to_string(dir.path().join("dunst.log")).unwrap_or_default()
    );
    let applet = Applet::start(&bus, dir.path());
    assert!(applet.wait_helper_started(1));
    applet.emit(&connection("/usr/bin/curl", "9.9.9.9", 443, true));
    // The name that reversed the destination on screen.
    let mut disguised = connection_value("/usr/bin/x", "93.184.216.34", 443, false);
    disguised["process"]["comm"] = hostile_name().into();
    disguised["process"]["exe"] = serde_json::Value::Null;
    applet.emit(&disguised.to_string());
    let dunstctl = |args: &[&str]| {
        std::process::Command::new("dunstctl")
            .args(args)
            .env("DBUS_SESSION_BUS_ADDRESS", &bus.address)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    };
    // Shown: the tray-less notice and the connections.
    let shown = wait_until(WAIT, || {
        (dunstctl(&["count", "displayed"]).parse::<u32>().ok()? >= 3).then_some(())
    });
    assert!(
        shown.is_some(),
        "dunst shows {}",
        dunstctl(&["count", "displayed"])
    );
    dunstctl(&["close-all"]);
    let history = wait_until(WAIT, || {
        let h = dunstctl(&["history"]);
        (h.contains("9.9.9.9:443 ← curl") && h.contains("93.184.216.34:443 ← innocent"))
            .then_some(h)
    });
    let history = history.unwrap_or_else(|| panic!("{}", dunstctl(&["history"])));
    // Neither raw nor as busctl's JSON escape of a raw one.
    assert!(
        !history.contains('\u{202e}') && !history.contains("\\u202e"),
        "{history}"
    );
}

/// The watched code is a client of the same session bus: it can send `ActionInvoked` to
/// everyone or to the applet alone, naming any notification and any button. Only the
/// notification server's presses count, and only of a button the notification shows; a
/// program whose path is not verified gets no "Whitelist" button at all.
#[test]
fn only_the_notification_server_presses_buttons_and_only_those_it_shows() {
    let test = "only_the_notification_server_presses_buttons_and_only_those_it_shows";
    if !require(test, &["dbus-daemon", "python3"]) {
        return;
    }
    let w = world_with_config(Some("[whitelist]\nprocesses = [\"ssh\"]\n"));
    w.applet
        .emit(&connection("/usr/bin/curl", "9.9.9.9", 443, false));
    let n = w.notified(1).remove(0);
    assert!(n.actions.contains(&"whitelist-program".to_string()));
    let hostile = zbus::blocking::connection::Builder::address(w.bus.address.as_str())
        .expect("address")
        .build()
        .expect("the watched code's connection");
    for _ in 0..10 {
        for to in [None, Some(n.sender.as_str())] {
            hostile
                .emit_signal(
                    to,
                    "/org/freedesktop/Notifications",
                    "org.freedesktop.Notifications",
                    "ActionInvoked",
                    &(n.id, "whitelist-program"),
                )
                .expect("emit");
        }
        std::thread::sleep(Duration::from_millis(150));
    }
    assert!(
        !w.config_text().contains("/usr/bin/curl"),
        "a forged press whitelisted: {}",
        w.config_text()
    );

    // The same path in a mount namespace of the watched code's own: not verified, no button;
    // the server's press of the button it does not show changes nothing.
    let mut forged = connection_value("/usr/bin/wget", "9.9.9.10", 443, false);
    forged["process"]["pid"] = 5151.into();
    forged["process"]["exe_verified"] = false.into();
    forged["process"]["exe_unverified"] = "another mount namespace".into();
    forged["process"]["exe_sha256"] = "ab".repeat(32).into();
    w.applet.emit(&forged.to_string());
    let unverified = wait_until(WAIT, || {
        w.notes
            .seen
            .all()
            .into_iter()
            .find(|m| m.summary.contains("9.9.9.10"))
    })
    .unwrap_or_else(|| panic!("no notification: {:?}", w.notes.seen.all()));
    assert!(
        unverified.body.contains("/usr/bin/wget (not verified)"),
        "{}",
        unverified.body
    );
    assert!(
        !unverified
            .actions
            .contains(&"whitelist-program".to_string()),
        "{:?}",
        unverified.actions
    );
    for _ in 0..5 {
        w.notes.invoke(unverified.id, "whitelist-program");
        std::thread::sleep(Duration::from_millis(150));
    }
    let text = w.config_text();
    assert!(
        !text.contains("/usr/bin/wget") && !text.contains(&"ab".repeat(32)),
        "{text}"
    );

    // The server's own press of a button it shows: heard (so the presses above were too).
    let heard = wait_until(WAIT, || {
        w.notes.invoke(n.id, "whitelist-program");
        std::thread::sleep(Duration::from_millis(200));
        w.config_text().contains("/usr/bin/curl").then_some(())
    });
    assert!(heard.is_some(), "{}", w.config_text());
}
