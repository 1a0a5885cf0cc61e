//! Alerts that keep the new program in view (issue 11): novelty first, one live notification
//! per program updated in place, critical urgency only for news on a critical port, every
//! notification expiring and closed when the applet quits, what was learned kept across a
//! restart and forgotten on request, and the restart notice before a password prompt.

use super::*;

/// A connection line of `exe` to `remote`:`port`.
fn to(exe: &str, remote: &str, port: u16, critical: bool) -> String {
    connection(exe, remote, port, critical)
}

impl World {
    /// Waits until the menu's recent connections show `label` (so the applet has seen it).
    fn in_menu(&self, label: &str) {
        let service = self.menu_service();
        let conn = self.bus.connect();
        let seen = wait_until(WAIT, || get_layout(&conn, &service).find(label).map(|_| ()));
        assert!(
            seen.is_some(),
            "{label} never reached the menu: {:?}",
            get_layout(&conn, &service).labels()
        );
    }

    fn click_menu(&self, label: &str) {
        let service = self.menu_service();
        let conn = self.bus.connect();
        let id = wait_until(WAIT, || {
            get_layout(&conn, &service).find(label).map(|n| n.id)
        })
        .unwrap_or_else(|| panic!("no {label} in the menu"));
        click(&conn, &service, id);
    }

    fn quit(mut self) -> tempfile::TempDir {
        self.click_menu("Quit");
        let status = wait_until(WAIT, || self.applet.child.try_wait().ok().flatten());
        assert!(status.is_some_and(|s| s.success()), "the applet quit");
        std::mem::replace(&mut self._dir, tempfile::tempdir().expect("tmp"))
    }
}

#[test]
fn a_new_program_mid_burst_is_notified_at_once_with_critical_urgency_on_a_critical_port() {
    let test =
        "a_new_program_mid_burst_is_notified_at_once_with_critical_urgency_on_a_critical_port";
    if !require(test, &["dbus-daemon", "python3"]) {
        return;
    }
    let w = world();
    let mut lines: Vec<String> = (0..300)
        .map(|i| {
            to(
                "/usr/bin/firefox",
                &format!("10.2.{}.{}", i / 200, i % 200),
                8443,
                false,
            )
        })
        .collect();
    lines.insert(
        150,
        to("/home/alice/.cache/x/tool", "203.0.113.9", 443, true),
    );
    w.applet.emit(&lines.join("\n"));
    let new = wait_until(WAIT, || {
        w.notes
            .seen
            .all()
            .into_iter()
            .find(|n| n.summary.contains("← tool"))
    })
    .unwrap_or_else(|| {
        panic!(
            "the new program got no notification: {:?}",
            w.notes.seen.all()
        )
    });
    assert_eq!(new.urgency, Some(2), "news on a critical port: {new:?}");
    assert!(new.body.starts_with("New program"), "{new:?}");
    let firefox: Vec<common::Notified> = w
        .notes
        .seen
        .all()
        .into_iter()
        .filter(|n| n.summary.contains("← firefox"))
        .collect();
    assert!(!firefox.is_empty());
    assert!(firefox
        .iter()
        .all(|n| n.id != new.id && n.urgency == Some(1)));
    let ids: std::collections::BTreeSet<u32> = firefox.iter().map(|n| n.id).collect();
    assert_eq!(
        ids.len(),
        1,
        "one notification for the chatty program: {firefox:?}"
    );
}

#[test]
fn a_known_programs_later_connections_replace_its_notification() {
    let test = "a_known_programs_later_connections_replace_its_notification";
    if !require(test, &["dbus-daemon", "python3"]) {
        return;
    }
    let w = world();
    w.applet.emit(&to("/usr/bin/curl", "9.9.9.9", 443, false));
    let first = w.notified(1).remove(0);
    std::thread::sleep(Duration::from_millis(1100));
    w.applet.emit(&to("/usr/bin/curl", "9.9.9.10", 443, false));
    let second = w.notified(2).remove(1);
    assert_eq!(
        (second.id, second.replaces),
        (first.id, first.id),
        "{second:?}"
    );
    assert!(
        second.summary.starts_with(
            "9.9.9.10:443 ← curl · 2 connections to 2 destinations in the last minute"
        ),
        "{second:?}"
    );
    assert!(second.body.starts_with("New destination"), "{second:?}");
    assert_eq!(w.notes.seen.on_screen().len(), 1);
}

#[test]
fn known_pairs_are_quiet_and_forget_what_was_learned_makes_them_new() {
    let test = "known_pairs_are_quiet_and_forget_what_was_learned_makes_them_new";
    if !require(test, &["dbus-daemon", "python3"]) {
        return;
    }
    let w = world();
    w.applet.emit(&to("/usr/bin/curl", "9.9.9.9", 443, false));
    let first = w.notified(1).remove(0);
    // The person dismissed it; the same pair again is history and menu only.
    w.notes.dismiss(first.id);
    std::thread::sleep(Duration::from_millis(300));
    let mut again = connection_value("/usr/bin/curl", "9.9.9.9", 443, false);
    again["local_port"] = 43211.into();
    w.applet.emit(&again.to_string());
    // Another program's connection after it: once that one is notified, the repeat was seen.
    w.applet.emit(&to("/usr/bin/wget", "9.9.9.8", 443, false));
    w.notified(2);
    std::thread::sleep(Duration::from_millis(300));
    let all = w.notes.seen.all();
    assert_eq!(all.len(), 2, "the known pair made no notification: {all:?}");
    w.click_menu("Forget what was learned");
    std::thread::sleep(Duration::from_millis(300));
    w.applet.emit(&to("/usr/bin/curl", "9.9.9.9", 443, false));
    let n = w.notified(3).remove(2);
    assert!(
        n.summary.contains("← curl") && n.body.starts_with("New program"),
        "{n:?}"
    );
}

#[test]
fn what_was_learned_survives_a_restart_and_quitting_closes_the_notifications() {
    let test = "what_was_learned_survives_a_restart_and_quitting_closes_the_notifications";
    if !require(test, &["dbus-daemon", "python3"]) {
        return;
    }
    let w = world();
    w.applet.emit(&to("/usr/bin/curl", "9.9.9.9", 443, false));
    let first = w.notified(1).remove(0);
    let closed = w.notes.seen.clone();
    let dir = w.quit();
    assert!(
        closed.closed().contains(&first.id),
        "closed on quit: {:?}",
        closed.closed()
    );
    let learned = dir.path().join("state/conntrack-tray/learned.json");
    assert_eq!(common::mode(&learned), 0o600);
    // The new helper's start must be its own line in the log (it skips events written
    // before it started).
    std::fs::remove_file(dir.path().join("helper.log")).expect("old log");
    let w = world_in(dir);
    let mut known = connection_value("/usr/bin/curl", "9.9.9.9", 443, false);
    known["local_port"] = 43999.into();
    w.applet.emit(&known.to_string());
    w.in_menu("9.9.9.9:443 ← curl, on fakehost");
    w.applet.emit(&to("/usr/bin/curl", "9.9.9.7", 443, false));
    let n = w.notified(1).remove(0);
    assert!(
        n.summary.starts_with("9.9.9.7:443 ← curl"),
        "only the new one: {n:?}"
    );
    assert!(n.body.starts_with("New destination"), "{n:?}");
}

#[test]
fn the_restart_notice_comes_before_the_password_prompt() {
    let test = "the_restart_notice_comes_before_the_password_prompt";
    if !require(test, &["dbus-daemon", "python3"]) {
        return;
    }
    let w = world_with_args(tempfile::tempdir().expect("tmp"), &["--pkexec"]);
    let pkexec_log = format!("{}.pkexec", w.applet.log.display());
    let prompts = || {
        std::fs::read_to_string(&pkexec_log)
            .unwrap_or_default()
            .lines()
            .count()
    };
    assert_eq!(prompts(), 1, "started through the stand-in pkexec");
    w.applet.emit("crash");
    let notice = wait_until(WAIT, || {
        w.notes
            .seen
            .all()
            .into_iter()
            .find(|n| n.summary.starts_with("Monitoring stopped"))
    })
    .expect("a notice that monitoring stopped");
    assert_eq!(
        notice.summary,
        "Monitoring stopped: the helper exited with status 3"
    );
    assert!(notice.body.contains("needs your password"), "{notice:?}");
    assert!(
        notice.actions.contains(&"restart-now".to_string()),
        "{notice:?}"
    );
    // No prompt of its own accord within the notice's time.
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(prompts(), 1, "no prompt right after the notice");
    w.notes.invoke(notice.id, "restart-now");
    assert!(
        w.applet.wait_helper_started(2),
        "started on request: {}",
        w.applet.helper_log()
    );
    assert_eq!(prompts(), 2);
    // Declining leaves it stopped, and the menu offers to start it.
    w.applet.emit("crash");
    let second = wait_until(WAIT, || {
        let all = w.notes.seen.all();
        let n: Vec<_> = all
            .into_iter()
            .filter(|n| n.summary.starts_with("Monitoring stopped"))
            .collect();
        (n.len() == 2).then(|| n[1].clone())
    })
    .expect("a second notice");
    w.notes.invoke(second.id, "no-restart");
    w.in_menu("Start monitoring…");
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(prompts(), 2, "not restarted after Don't restart");
}
