use super::*;
use crate::fixtures;

fn conn(port: u16, exe: &str) -> Connection {
    Connection {
        process: Some(fixtures::process(exe)),
        ..fixtures::connection("9.9.9.9", port)
    }
}

fn app(dir: &tempfile::TempDir) -> App {
    let s = Settings::load(dir.path().join("config.toml")).expect("settings");
    App::new(
        s,
        History::open(None),
        Learned::open(None),
        Caps {
            actions: true,
            markup: true,
        },
    )
}

fn ev(c: Connection) -> Event {
    Event::Connection(Box::new(c))
}

#[test]
fn a_connection_becomes_a_notification_and_a_recent_entry() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = app(&dir);
    let fx = a.on_event("laptop", ev(conn(443, "/usr/bin/curl")), Instant::now());
    assert!(
        matches!(&fx[..], [Effect::Notify { note, .. }] if note.summary == "9.9.9.9:443 ← curl")
    );
    assert_eq!(a.events_today(), 1);
    assert!(a.unseen);
    let v = a.view("s".into(), false, false);
    assert_eq!(v.recent[0].label, "9.9.9.9:443 ← curl, on laptop");
}

#[test]
fn the_body_of_a_notification_opens_the_window_at_its_connection() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = app(&dir);
    let now = Instant::now();
    let fx = a.on_event("h", ev(conn(443, "/usr/bin/curl")), now);
    let Effect::Notify { id, .. } = fx[0].clone() else {
        panic!("{fx:?}")
    };
    let fx = a.on_action(id, notify::ACTION_DETAILS, now);
    let [Effect::ShowWindow(Some(key))] = &fx[..] else {
        panic!("{fx:?}")
    };
    assert_eq!(
        (key.machine.as_str(), key.program.as_deref(), key.port),
        ("h", Some("/usr/bin/curl"), Some(443))
    );
    assert_eq!(
        a.on_menu(crate::tray::WINDOW, false, now),
        vec![Effect::ShowWindow(None)]
    );
}

#[test]
fn whitelisting_from_a_notification_writes_the_exe_path_and_silences_the_next() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = app(&dir);
    let now = Instant::now();
    let fx = a.on_event("h", ev(conn(443, "/usr/bin/curl")), now);
    let Effect::Notify { id, .. } = fx[0].clone() else {
        panic!("{fx:?}")
    };
    assert_eq!(
        a.on_action(id, notify::ACTION_WL_PROGRAM, now),
        vec![Effect::SendConfig]
    );
    assert!(a
        .settings
        .config
        .whitelist
        .processes
        .contains(&"/usr/bin/curl".to_string()));
    assert!(a
        .on_event("h", ev(conn(8443, "/usr/bin/curl")), now)
        .is_empty());
    // Another curl elsewhere is not whitelisted by the path.
    assert!(!a.on_event("h", ev(conn(8443, "/opt/curl")), now).is_empty());
}

#[test]
fn a_whitelisted_program_sharing_its_socket_does_not_silence_the_connection() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = app(&dir);
    a.settings.config.whitelist.processes = vec!["/usr/bin/curl".into()];
    let now = Instant::now();
    assert!(a
        .on_event("h", ev(conn(443, "/usr/bin/curl")), now)
        .is_empty());
    let shared = Connection {
        also_held_by: vec![fixtures::process("/tmp/evil")],
        ..conn(444, "/usr/bin/curl")
    };
    assert!(!a.whitelisted("h", &shared));
    assert!(!a.on_event("h", ev(shared), now).is_empty());
    let unsure = Connection {
        holders_incomplete: true,
        ..conn(445, "/usr/bin/curl")
    };
    assert!(!a.whitelisted("h", &unsure));
}

#[test]
fn the_applets_own_ssh_link_is_kept_marked_and_not_notified_on_either_end() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = app(&dir);
    let server = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
    let link = std::net::TcpStream::connect(server.local_addr().expect("addr")).expect("tcp");
    let port = link.local_addr().expect("addr").port();
    let sshd = link.peer_addr().expect("addr").port();
    // This test process stands in for the ssh process of the link to "nas".
    a.set_links(vec![("nas".into(), Some(std::process::id()))]);
    let now = Instant::now();
    let mut here = conn(22, "/usr/bin/ssh");
    if let Some(p) = here.process.as_mut() {
        p.pid = std::process::id();
    }
    assert!(a.on_event("laptop", ev(here), now).is_empty());
    let mut there = conn(22, "/usr/sbin/sshd");
    there.direction = conntrack_tray_helper::Direction::Inbound;
    there.remote_port = Some(port);
    there.local_port = Some(sshd);
    assert!(a.on_event("nas", ev(there.clone()), now).is_empty());
    assert!(a.history.recent().all(|s| s.own), "kept, marked");
    assert_eq!(
        a.events_today(),
        0,
        "not counted as the watched programs' traffic"
    );
    assert!(text::recent_label(a.history.recent().next().expect("one"))
        .ends_with("(this applet's ssh link)"));
    // A program there that connects to the link's port here from another port of its own
    // (it cannot have sshd's) is news, with the host in the summary.
    let mut fake = there.clone();
    fake.local_port = Some(50_000);
    let fx = a.on_event("nas", ev(fake), now);
    assert!(
        matches!(&fx[..], [Effect::Notify { note, .. }] if note.summary.ends_with("· on nas")),
        "{fx:?}"
    );
    assert!(!a.history.recent().next().expect("newest").own);
}

#[test]
fn a_remote_connection_is_whitelisted_on_its_host_only_or_everywhere() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = app(&dir);
    a.set_links(vec![("nas".into(), None)]);
    let now = Instant::now();
    let fx = a.on_event("nas", ev(conn(443, "/usr/bin/curl")), now);
    let Effect::Notify { id, note } = fx[0].clone() else {
        panic!("{fx:?}")
    };
    let labels: Vec<&str> = note.actions.iter().map(|(_, l)| l.as_str()).collect();
    assert_eq!(
        labels,
        [
            "Details",
            "Whitelist curl on nas",
            "Mute 1 h on nas",
            "Whitelist 9.9.9.9 on nas"
        ]
    );
    assert_eq!(
        a.on_action(id, notify::ACTION_WL_PROGRAM_ON_HOST, now),
        vec![Effect::SendConfig]
    );
    let text = std::fs::read_to_string(a.settings.path()).expect("config");
    assert!(text.contains("[remote.on.nas]"), "{text}");
    assert!(a.settings.config.whitelist.processes.is_empty());
    assert_eq!(
        a.settings
            .config
            .helper_config_on("nas")
            .whitelist
            .processes,
        ["/usr/bin/curl"]
    );
    // Silent on nas, still reported here.
    assert!(a.whitelisted("nas", &conn(8443, "/usr/bin/curl")));
    assert!(!a.whitelisted("laptop", &conn(8443, "/usr/bin/curl")));
    // The menu offers both scopes for a connection seen on nas.
    let v = a.view("s".into(), false, false);
    let menu = tray::menu(&v);
    let tray::Entry::Sub { items, .. } = &menu[2] else {
        panic!("recent")
    };
    let labels: Vec<String> = items
        .iter()
        .filter_map(|e| match e {
            tray::Entry::Sub { label, items } if label.contains("on nas") => Some(
                items
                    .iter()
                    .filter_map(|i| match i {
                        tray::Entry::Action { label, .. } => Some(label.clone()),
                        _ => None,
                    })
                    .collect::<Vec<_>>()
                    .join(" | "),
            ),
            _ => None,
        })
        .collect();
    assert!(
        labels.iter().any(|l| l
            == "Whitelist curl on nas | Whitelist curl everywhere | Whitelist 9.9.9.9 on nas | Whitelist 9.9.9.9 everywhere | Mute 1 h on nas | Mute 1 h everywhere | Copy details"),
        "{labels:?}"
    );
}

#[test]
fn whitelisting_a_name_silences_it_everywhere_it_resolves() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = app(&dir);
    let now = Instant::now();
    let mut c = conn(443, "/usr/bin/curl");
    c.host = Some("api.github.com".into());
    c.host_source = Some(conntrack_tray_helper::event::HostSource::Dns);
    let fx = a.on_event("h", ev(c.clone()), now);
    let Effect::Notify { id, note } = fx[0].clone() else {
        panic!("{fx:?}")
    };
    assert!(note
        .actions
        .iter()
        .any(|(k, _)| k == notify::ACTION_WL_HOST));
    assert_eq!(
        a.on_action(id, notify::ACTION_WL_HOST, now),
        vec![Effect::SendConfig]
    );
    assert_eq!(
        a.settings.config.whitelist.hosts[0].to_string(),
        "api.github.com"
    );
    c.remote_ip = "140.82.112.9".parse().expect("ip");
    assert!(a.on_event("h", ev(c), now).is_empty());
}

#[test]
fn toggles_edit_the_config_and_reach_the_helper() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = app(&dir);
    let now = Instant::now();
    assert_eq!(
        a.on_menu(tray::CRITICAL_ONLY, false, now),
        vec![Effect::SendConfig]
    );
    assert!(a.settings.config.filter.critical_only);
    assert_eq!(
        a.on_menu(tray::PAUSE, false, now),
        vec![Effect::Pause(true)]
    );
    assert_eq!(a.icon_state(true), tray::IconState::Paused);
    assert!(
        a.on_event("h", ev(conn(443, "/usr/bin/curl")), now)
            .is_empty(),
        "paused"
    );
    assert_eq!(
        a.on_menu(tray::AUTOSTART, false, now),
        vec![Effect::Autostart(true)]
    );
    assert_eq!(a.on_menu(tray::QUIT, false, now), vec![Effect::Quit]);
    // Persisted: a fresh load sees the toggles.
    let again = Settings::load(dir.path().join("config.toml")).expect("load");
    assert!(again.config.filter.critical_only && again.config.applet.paused);
}

#[test]
fn a_thousand_events_from_nine_programs_make_five_notifications_and_one_group() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = app(&dir);
    let t0 = Instant::now();
    let mut ids = std::collections::BTreeSet::new();
    for i in 0..1000u16 {
        let mut c = conn(1000 + i, &format!("/usr/bin/p{}", i % 9));
        c.remote_ip = std::net::IpAddr::from([10, 1, (i / 256) as u8, (i % 256) as u8]);
        for e in a.on_event("h", ev(c), t0) {
            if let Effect::Notify { id, .. } = e {
                ids.insert(id);
            }
        }
    }
    // Five programs of their own (the limit), the other four in one group.
    assert_eq!(ids.len(), 6, "{ids:?}");
    // A second later each is updated in place with its counts, never a new one.
    let fx = a.on_tick(t0 + Duration::from_secs(1));
    let updated: Vec<&Note> = fx
        .iter()
        .filter_map(|e| match e {
            Effect::Notify { id, note } if ids.contains(id) => Some(note),
            _ => None,
        })
        .collect();
    assert_eq!(updated.len(), 6, "{fx:?}");
    assert!(
        updated
            .iter()
            .any(|n| n.summary.starts_with("4 new programs: /usr/bin/p5")
                || n.summary.starts_with("4 new programs: p5")),
        "{updated:?}"
    );
    assert!(updated.iter().any(|n| n
        .summary
        .contains("112 connections to 112 destinations in the last minute")));
    // Ten seconds after their last news they are closed by the applet itself.
    let fx = a.on_tick(t0 + alerts::EXPIRE + Duration::from_millis(1));
    assert_eq!(
        fx.iter().filter(|e| matches!(e, Effect::Close(_))).count(),
        6
    );
    // Nothing left to do: no timer until the next event (what was learned was written).
    assert_eq!(a.next_due(), None);
    assert!(!a.learned.dirty());
}

#[test]
fn mute_and_recent_menu_actions() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = app(&dir);
    let now = Instant::now();
    a.on_event("h", ev(conn(443, "/usr/bin/curl")), now);
    assert!(a
        .on_menu(&tray::recent_id(0, RecentAction::Mute), false, now)
        .is_empty());
    assert!(a
        .on_event(
            "h",
            ev(conn(444, "/usr/bin/curl")),
            now + Duration::from_secs(120)
        )
        .iter()
        .all(|e| !matches!(e, Effect::Notify { .. })));
    let fx = a.on_menu(
        &tray::recent_id(0, RecentAction::WhitelistRemote),
        false,
        now,
    );
    assert_eq!(fx, vec![Effect::SendConfig]);
    assert_eq!(a.settings.config.whitelist.remote[0].to_string(), "9.9.9.9");
    let fx = a.on_menu(&tray::recent_id(0, RecentAction::Copy), false, now);
    assert!(matches!(&fx[..], [Effect::Copy(t)] if t.contains("exe: /usr/bin/curl")));
}

#[test]
fn an_edited_file_is_picked_up_and_a_broken_one_is_reported_once() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = app(&dir);
    let path = dir.path().join("config.toml");
    std::fs::write(&path, "[filter]\ncritical_only = true\n").expect("write");
    assert_eq!(a.on_tick(Instant::now()), vec![Effect::SendConfig]);
    assert!(a.settings.config.filter.critical_only);
    std::thread::sleep(Duration::from_millis(20));
    std::fs::write(&path, "[filter]\ncritical_only = 3\n").expect("write");
    let fx = a.on_tick(Instant::now());
    assert!(
        matches!(&fx[..], [Effect::Tell(t)] if t.contains(":2:") && t.contains("previous settings")),
        "{fx:?}"
    );
    assert!(
        a.settings.config.filter.critical_only,
        "last good config stays"
    );
    assert!(a.on_tick(Instant::now()).is_empty(), "once");
}

#[test]
fn lost_and_error_lines() {
    let dir = tempfile::tempdir().expect("tmp");
    let mut a = app(&dir);
    let lost = |count| Event::Lost {
        count,
        reason: "kernel".into(),
    };
    let now = Instant::now();
    let fx = a.on_event("h", lost(7), now);
    assert!(
        matches!(&fx[..], [Effect::Tell(t)] if t.contains("7 on h")),
        "told at once: {fx:?}"
    );
    // Within the minute, counted, not told again (see `lost`).
    assert!(a.on_event("pi", lost(2), now).is_empty());
    assert!(a.on_tick(now).is_empty());
    assert_eq!(a.lost.total, 9);
    let fx = a.on_event(
        "h",
        Event::Error {
            message: "bad\nthing".into(),
        },
        Instant::now(),
    );
    assert_eq!(fx, vec![Effect::Tell("h: bad\\x0athing".into())]);
}
