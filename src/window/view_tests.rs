//! The window's real widgets, driven with egui_kittest over history files: found by their
//! labels, clicked and typed into, and what they show checked.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use egui_kittest::kittest::Queryable;
use egui_kittest::Harness;

use super::files;
use super::model::GroupKey;
use super::view::{Batch, Window};
use crate::fixtures;
use crate::history::Seen;
use crate::settings::Settings;

const CONFIG: &str = "# my rules\n[whitelist]\n# trusted\nprocesses = [\"/usr/bin/ssh\"] # mine\nremote = [\"10.0.0.0/8\"]\n";

fn seen(exe: Option<&str>, remote: &str, port: u16, hour: u32) -> Seen {
    let mut conn = fixtures::connection(remote, port);
    conn.ts = format!("2026-11-25T{hour:02}:00:00.000000Z");
    conn.process = exe.map(|e| conntrack_tray_helper::Process {
        cmdline: vec![e.rsplit('/').next().unwrap_or(e).into(), "-s".into()],
        ..fixtures::process(e)
    });
    Seen {
        host: "laptop".into(),
        conn,
        own: false,
    }
}

fn lines(events: &[Seen]) -> String {
    events
        .iter()
        .map(|s| serde_json::to_string(s).expect("json") + "\n")
        .collect()
}

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    /// A history of curl (two destinations, one of them twice, over both files), ssh, and a
    /// flow of no known process; and a commented configuration.
    fn new() -> Fixture {
        let dir = tempfile::tempdir().expect("tmp");
        let old = seen(Some("/usr/bin/curl"), "9.9.9.9", 443, 1);
        std::fs::write(dir.path().join("events.jsonl.1"), lines(&[old])).expect("write");
        let mut named = seen(Some("/usr/bin/curl"), "9.9.9.9", 443, 5);
        named.conn.host = Some("dns.quad9.net".into());
        named.conn.host_source = Some(conntrack_tray_helper::event::HostSource::Dns);
        let mut unknown = seen(None, "192.0.2.7", 53, 4);
        unknown.conn.critical = true;
        let current = [
            seen(Some("/usr/bin/curl"), "1.1.1.1", 443, 2),
            seen(Some("/usr/bin/ssh"), "10.0.0.5", 22, 3),
            unknown,
            named,
        ];
        std::fs::write(dir.path().join("events.jsonl"), lines(&current)).expect("write");
        std::fs::write(dir.path().join("config.toml"), CONFIG).expect("write");
        Fixture { dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn window(&self) -> Window {
        let settings = Settings::load(self.path("config.toml")).expect("settings");
        let mut rows = Vec::new();
        let segments = files::read_all(&self.path("events.jsonl"), |r| rows.push(r));
        Window::new(settings).with_history(segments, rows)
    }

    fn harness(&self) -> Harness<'static, Window> {
        harness(self.window())
    }
}

fn harness(w: Window) -> Harness<'static, Window> {
    let mut h = Harness::builder()
        .with_size([1200.0, 800.0])
        .build_state(|ctx, w: &mut Window| w.ui(ctx), w);
    h.run();
    h
}

fn has(h: &Harness<'_, Window>, text: &str) -> bool {
    h.query_by_label_contains(text).is_some()
}

#[test]
fn the_list_groups_by_program_then_destination_newest_first() {
    let f = Fixture::new();
    let h = f.harness();
    assert!(has(
        &h,
        "curl (/usr/bin/curl) on laptop — 3 connections, 2 destinations"
    ));
    assert!(has(
        &h,
        "ssh (/usr/bin/ssh) on laptop — 1 connection, 1 destination"
    ));
    assert!(has(&h, "unknown program on laptop"));
    // The rotated file's event counts too, and its name stays with the destination.
    assert!(has(
        &h,
        "9.9.9.9:443 (dns.quad9.net) · tcp out · 2× · 2026-11-25 01:00:00 – 2026-11-25 05:00:00"
    ));
    assert!(has(
        &h,
        "192.0.2.7:53 · tcp out · 1× · 2026-11-25 04:00:00 · critical port"
    ));
    assert!(has(&h, "5 events, 4 destinations"));
}

#[test]
fn search_and_filters_narrow_the_list() {
    let f = Fixture::new();
    let mut h = f.harness();
    h.get_by_label("Search").focus();
    h.run();
    h.get_by_label("Search").type_text("quad9");
    h.run();
    assert!(has(&h, "9.9.9.9:443"));
    assert!(!has(&h, "1.1.1.1:443"));
    assert!(!has(&h, "10.0.0.5:22"));
    h.state_mut().search.clear();
    h.run();
    h.get_by_label("Only critical").click();
    h.run();
    assert!(has(&h, "192.0.2.7:53"));
    assert!(!has(&h, "9.9.9.9:443"));
    h.get_by_label("Only critical").click();
    h.get_by_label("Port").focus();
    h.run();
    h.get_by_label("Port").type_text("22");
    h.run();
    assert!(has(&h, "10.0.0.5:22"));
    assert!(!has(&h, "192.0.2.7:53"));
    h.state_mut().port.clear();
    h.state_mut().only_unknown = true;
    h.run();
    assert!(has(&h, "192.0.2.7:53") && !has(&h, "10.0.0.5:22"));
}

#[test]
fn details_show_every_field_and_copy_as_text_and_json() {
    let f = Fixture::new();
    let mut h = f.harness();
    h.get_by_label_contains("10.0.0.5:22").click();
    h.run();
    for field in [
        "on: laptop",
        "connection.process.exe: /usr/bin/ssh",
        "connection.process.cmdline[1]: -s",
        "connection.remote_port: 22",
        "connection.ts: 2026-11-25T03:00:00.000000Z",
    ] {
        assert!(has(&h, field), "{field}");
    }
    h.get_by_label("Copy as text").click();
    h.run();
    let text = h.state().copied.clone().expect("copied");
    assert!(text.contains("connection.process.pid: 4242\n"), "{text}");
    h.get_by_label("Copy as JSON").click();
    h.run();
    let json = h.state().copied.clone().expect("copied");
    let v: serde_json::Value = serde_json::from_str(&json).expect("json");
    assert_eq!(v["connection"]["remote_port"], 22);
}

#[test]
fn a_rule_is_removed_and_the_comments_stay() {
    let f = Fixture::new();
    let mut h = f.harness();
    h.get_by_label("Rules").click();
    h.run();
    assert!(has(&h, "program /usr/bin/ssh"));
    assert!(has(&h, "same device and inode"));
    assert!(has(&h, "address 10.0.0.0/8"));
    h.get_all_by_label("Remove")
        .next()
        .expect("a Remove button")
        .click();
    h.run();
    let after = std::fs::read_to_string(f.path("config.toml")).expect("read");
    assert!(
        after.starts_with("# my rules\n[whitelist]\n# trusted\n"),
        "{after}"
    );
    assert!(after.contains("processes = [] # mine"), "{after}");
    assert!(after.contains("remote = [\"10.0.0.0/8\"]"), "{after}");
    assert!(h.query_by_label("program /usr/bin/ssh").is_none());
    assert!(has(&h, "removed program /usr/bin/ssh"));
}

#[test]
fn an_entry_is_added_from_a_connection() {
    let f = Fixture::new();
    let mut h = f.harness();
    h.get_by_label_contains("9.9.9.9:443").click();
    h.run();
    h.get_by_label("Whitelist dns.quad9.net").click();
    h.run();
    h.get_by_label("Whitelist curl").click();
    h.run();
    let after = std::fs::read_to_string(f.path("config.toml")).expect("read");
    assert!(after.contains("hosts = [\"dns.quad9.net\"]"), "{after}");
    assert!(
        after.contains("processes = [\"/usr/bin/ssh\", \"/usr/bin/curl\"] # mine"),
        "{after}"
    );
    h.get_by_label("Rules").click();
    h.run();
    assert!(has(&h, "name dns.quad9.net"));
}

#[test]
fn the_shown_rows_export_as_jsonl_and_csv_privately() {
    let f = Fixture::new();
    let mut h = f.harness();
    h.state_mut().export_to = f.path("out/shown").display().to_string();
    h.state_mut().search = "curl".into();
    h.run();
    h.get_by_label("Export JSONL").click();
    h.run();
    h.get_by_label("Export CSV").click();
    h.run();
    let read = |p: &Path| {
        assert_eq!(std::fs::metadata(p).expect("meta").mode() & 0o777, 0o600);
        std::fs::read_to_string(p).expect("read")
    };
    let jsonl = read(&f.path("out/shown.jsonl"));
    let rows: Vec<serde_json::Value> = jsonl
        .lines()
        .map(|l| serde_json::from_str(l).expect("json"))
        .collect();
    assert_eq!(rows.len(), 2, "{jsonl}");
    assert_eq!(rows[0]["remote"], "9.9.9.9");
    assert_eq!(rows[0]["count"], 2);
    let csv = read(&f.path("out/shown.csv"));
    assert_eq!(csv.lines().count(), 3, "{csv}");
    assert!(has(&h, "2 rows written to"));
}

#[test]
fn a_focused_connection_is_opened_even_when_filtered_out() {
    let f = Fixture::new();
    let mut w = f.window();
    w.search = "nothing matches this".into();
    w.focus_on(Some(GroupKey::of(&seen(
        Some("/usr/bin/ssh"),
        "10.0.0.5",
        22,
        3,
    ))));
    let h = harness(w);
    assert!(has(&h, "connection.process.exe: /usr/bin/ssh"));
    assert!(has(&h, "10.0.0.5:22 · tcp out"));
}

#[test]
fn new_events_appear_as_they_arrive() {
    let f = Fixture::new();
    let (tx, rx) = crossbeam_channel::bounded(4);
    let mut h = harness(f.window().with_sources(rx, None));
    assert!(!has(&h, "203.0.113.9:8080"));
    let s = seen(Some("/usr/bin/wget"), "203.0.113.9", 8080, 6);
    let rows = vec![super::model::Row::of(
        &s,
        super::model::Place {
            segment: 0,
            offset: 0,
        },
    )];
    tx.send(Batch {
        segments: Vec::new(),
        rows,
        caught_up: true,
    })
    .expect("send");
    h.run();
    assert!(has(&h, "wget (/usr/bin/wget) on laptop — 1 connection"));
    assert!(has(&h, "203.0.113.9:8080 · tcp out · 1×"));
}

#[test]
fn the_applets_mutes_are_listed_and_unmuted() {
    let f = Fixture::new();
    let mut w = f.window();
    w.now = Some(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000));
    w.mutes = vec![
        ("".into(), "/usr/bin/curl".into(), 1_000_000 + 1800),
        ("nas".into(), "/usr/bin/rsync".into(), 1_000_000 + 60),
        // Over: not shown.
        ("".into(), "/usr/bin/old".into(), 999_000),
    ];
    let mut h = harness(w);
    h.get_by_label("Rules").click();
    h.run();
    assert!(has(&h, "/usr/bin/curl everywhere, 30 min more"));
    assert!(has(&h, "/usr/bin/rsync on nas, 1 min more"));
    assert!(!has(&h, "/usr/bin/old"));
    h.get_all_by_label("Unmute").next().expect("Unmute").click();
    h.run();
    assert_eq!(
        h.state().unmuted,
        [("".to_string(), "/usr/bin/curl".to_string())]
    );
    assert!(!has(&h, "/usr/bin/curl everywhere"));
}
