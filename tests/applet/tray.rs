//! The tray shows the state (issue 11): the icon a StatusNotifierItem host reads is the
//! shipped state art and follows the state, a left click is Activate, today's count
//! survives a restart, and a second launch has the running applet show itself.

use super::*;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::SystemTime;

use zbus::zvariant::OwnedValue;

const SNI: &str = "org.kde.StatusNotifierItem";

/// One pixmap of the StatusNotifierItem spec: width, height, ARGB32 in network byte order.
type Pixmap = (i32, i32, Vec<u8>);

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A property of the applet's StatusNotifierItem.
fn sni_property(conn: &zbus::blocking::Connection, service: &str, name: &str) -> OwnedValue {
    let reply = conn
        .call_method(
            Some(service),
            "/StatusNotifierItem",
            Some("org.freedesktop.DBus.Properties"),
            "Get",
            &(SNI, name),
        )
        .unwrap_or_else(|e| panic!("Get {name}: {e}"));
    reply.body().deserialize().expect("a variant")
}

fn icon_pixmap(conn: &zbus::blocking::Connection, service: &str) -> Vec<Pixmap> {
    Vec::<Pixmap>::try_from(sni_property(conn, service, "IconPixmap")).expect("a(iiay)")
}

/// A PNG file's pixels, decoded here on their own; rsvg-convert writes 8-bit RGBA
/// (icons/render.sh), and nothing else is expected.
fn decode(path: &Path) -> (u32, u32, Vec<u8>) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .expect("png");
    let mut buf = vec![0; reader.output_buffer_size().expect("size")];
    let frame = reader.next_frame(&mut buf).expect("frame");
    assert_eq!(
        (frame.color_type, frame.bit_depth),
        (png::ColorType::Rgba, png::BitDepth::Eight),
        "{}",
        path.display()
    );
    buf.truncate(frame.buffer_size());
    (frame.width, frame.height, buf)
}

/// The committed PNG of a state at `size` as the pixmap the spec wants.
fn art(state: &str, size: u32) -> Pixmap {
    let (w, h, rgba) = decode(&root().join(format!(
        "icons/hicolor/{size}x{size}/status/conntrack-tray-{state}.png"
    )));
    let argb = rgba
        .chunks_exact(4)
        .flat_map(|p| [p[3], p[0], p[1], p[2]])
        .collect();
    (w as i32, h as i32, argb)
}

/// The state's art at the sizes the applet serves.
fn state_art(state: &str) -> Vec<Pixmap> {
    vec![art(state, 22), art(state, 48)]
}

/// Waits until the served icon is `state`'s art.
fn wait_icon(conn: &zbus::blocking::Connection, service: &str, state: &str) {
    let want = state_art(state);
    let got = wait_until(WAIT, || (icon_pixmap(conn, service) == want).then_some(()));
    let now: Vec<(i32, i32)> = icon_pixmap(conn, service)
        .iter()
        .map(|(w, h, _)| (*w, *h))
        .collect();
    assert!(
        got.is_some(),
        "the icon is not the {state} art (sizes {now:?})"
    );
}

#[test]
fn the_icon_over_dbus_is_the_state_art_and_follows_the_state() {
    let test = "the_icon_over_dbus_is_the_state_art_and_follows_the_state";
    if !require(test, &["dbus-daemon", "python3"]) {
        return;
    }
    let w = world();
    let service = w.menu_service();
    let conn = w.bus.connect();
    wait_icon(&conn, &service, "monitoring");
    // A connection not looked at yet.
    w.applet
        .emit(&connection("/usr/bin/curl", "9.9.9.9", 443, false));
    w.notified(1);
    wait_icon(&conn, &service, "alert");
    // Paused (a menu click is also a look at the menu).
    let pause = wait_until(WAIT, || {
        get_layout(&conn, &service)
            .find("Pause monitoring")
            .map(|n| n.id)
    })
    .expect("Pause monitoring");
    click(&conn, &service, pause);
    wait_icon(&conn, &service, "paused");
    // The helper dies: while it waits for its restart nothing is watched.
    w.applet.emit("crash");
    wait_icon(&conn, &service, "error");
    // Restarted, still paused.
    assert!(w.applet.wait_helper_started(2));
    wait_icon(&conn, &service, "paused");
}

#[test]
fn the_committed_pngs_are_the_svgs_rendered() {
    let test = "the_committed_pngs_are_the_svgs_rendered";
    if !require(test, &["rsvg-convert"]) {
        return;
    }
    let out = tempfile::tempdir().expect("tmp");
    for state in ["monitoring", "alert", "paused", "error"] {
        for size in [16u32, 22, 24, 32, 48, 64] {
            let fresh = out.path().join(format!("{state}-{size}.png"));
            let status = Command::new("rsvg-convert")
                .args(["-w", &size.to_string(), "-h", &size.to_string()])
                .arg(root().join(format!("icons/conntrack-tray-{state}.svg")))
                .arg("-o")
                .arg(&fresh)
                .status()
                .expect("rsvg-convert");
            assert!(status.success());
            let committed = root().join(format!(
                "icons/hicolor/{size}x{size}/status/conntrack-tray-{state}.png"
            ));
            let ((_, _, a), (_, _, b)) = (decode(&fresh), decode(&committed));
            assert_eq!(a.len(), b.len(), "{state} {size}");
            // Another librsvg may round an edge differently, never draw another picture.
            let off = a.iter().zip(&b).map(|(x, y)| x.abs_diff(*y)).max();
            assert!(
                off <= Some(8),
                "{} is not {state}.svg rendered (run icons/render.sh)",
                committed.display()
            );
        }
    }
}

#[test]
fn a_left_click_is_activate_and_the_menu_stays_on_the_right_click() {
    let test = "a_left_click_is_activate_and_the_menu_stays_on_the_right_click";
    if !require(test, &["dbus-daemon", "python3"]) {
        return;
    }
    let mut w = world();
    let service = w.menu_service();
    let conn = w.bus.connect();
    let is_menu = bool::try_from(sni_property(&conn, &service, "ItemIsMenu")).expect("b");
    assert!(!is_menu, "ItemIsMenu: a left click has its own action");
    let menu = zbus::zvariant::OwnedObjectPath::try_from(sni_property(&conn, &service, "Menu"))
        .expect("o");
    assert_eq!(menu.as_str(), "/MenuBar");
    // A left click is Activate: it opens the connections window (tests/applet/window.rs);
    // with no display, as here, the status is told instead.
    conn.call_method(
        Some(service.as_str()),
        "/StatusNotifierItem",
        Some(SNI),
        "Activate",
        &(10i32, 10i32),
    )
    .expect("Activate");
    let told = wait_until(WAIT, || {
        w.notes
            .seen
            .all()
            .into_iter()
            .find(|n| n.body.starts_with("conntrack-tray is running"))
    });
    assert!(told.is_some(), "{:?}", w.notes.seen.all());
    assert!(
        w.applet.child.try_wait().expect("wait").is_none(),
        "still running"
    );
    assert!(get_layout(&conn, &service).find("Quit").is_some());
}

/// A history line of the applet's own format, for a connection at `ts`.
fn history_line(ts: &str, port: u16) -> String {
    let mut c = connection_value("/usr/bin/curl", "9.9.9.9", port, false);
    c["ts"] = ts.into();
    serde_json::json!({"on": "fakehost", "connection": c}).to_string()
}

fn utc_day(t: SystemTime) -> String {
    conntrack_tray_helper::pipeline::timestamp(t)[..10].to_string()
}

fn status_label(w: &World, want: &str) -> String {
    let service = w.menu_service();
    let conn = w.bus.connect();
    wait_until(WAIT, || {
        let s = get_layout(&conn, &service).children.first()?.label.clone();
        s.contains(want).then_some(s)
    })
    .unwrap_or_else(|| {
        panic!(
            "no {want:?} in {:?}",
            get_layout(&conn, &service).children.first()
        )
    })
}

#[test]
fn todays_count_survives_a_restart() {
    let test = "todays_count_survives_a_restart";
    if !require(test, &["dbus-daemon", "python3"]) {
        return;
    }
    let now = SystemTime::now();
    let today = utc_day(now);
    let yesterday = utc_day(now - Duration::from_secs(86_400));
    let dir = tempfile::tempdir().expect("tmp");
    let state = dir.path().join("state/conntrack-tray");
    std::fs::create_dir_all(&state).expect("mkdir");
    // The rotated file ends with the day's first event; the current one has two more, and
    // lines of the day before in both.
    let rotated = [
        history_line(&format!("{yesterday}T23:00:00.000000Z"), 1),
        history_line(&format!("{today}T00:00:01.000000Z"), 2),
    ];
    let current = [
        history_line(&format!("{today}T00:10:00.000000Z"), 3),
        history_line(&format!("{yesterday}T23:59:59.000000Z"), 4),
        history_line(&format!("{today}T00:20:00.000000Z"), 5),
    ];
    std::fs::write(state.join("events.jsonl.1"), rotated.join("\n") + "\n").expect("write");
    std::fs::write(state.join("events.jsonl"), current.join("\n") + "\n").expect("write");
    let w = world_in(dir);
    let label = status_label(&w, " today");
    if utc_day(SystemTime::now()) != today {
        eprintln!("SKIPPED the count: the UTC day changed during the test");
        return;
    }
    assert_eq!(label, "Monitoring fakehost — 3 today, 0 lost");
    // And the count goes on from there.
    let mut next = connection_value("/usr/bin/curl", "9.9.9.10", 443, false);
    next["ts"] = format!("{today}T00:30:00.000000Z").into();
    w.applet.emit(&next.to_string());
    status_label(&w, "— 4 today");
}

/// Runs a second `conntrack-tray` on the world's bus, as the person would.
fn second_launch(w: &World) -> std::process::Output {
    Command::new(common::APPLET)
        .arg("--helper")
        .arg(common::fake_helper())
        .arg("--no-pkexec")
        .env("DBUS_SESSION_BUS_ADDRESS", &w.bus.address)
        .env("HOME", &w.applet.dir)
        .env("XDG_CONFIG_HOME", w.applet.dir.join("config"))
        .env("XDG_STATE_HOME", w.applet.dir.join("state"))
        .output()
        .expect("second launch")
}

#[test]
fn show_calls_in_a_loop_make_at_most_one_notification_a_second() {
    let test = "show_calls_in_a_loop_make_at_most_one_notification_a_second";
    if !require(test, &["dbus-daemon", "python3"]) {
        return;
    }
    let w = world();
    w.menu_service();
    let conn = w.bus.connect();
    let shows = || {
        w.notes
            .seen
            .all()
            .iter()
            .filter(|n| n.body.starts_with("conntrack-tray is running"))
            .count()
    };
    let started = std::time::Instant::now();
    for _ in 0..200 {
        conn.call_method(
            Some("io.github.conntrack_tray.Applet"),
            "/io/github/conntrack_tray/Applet",
            Some("io.github.conntrack_tray.Applet"),
            "Show",
            &(),
        )
        .expect("Show");
    }
    let took = started.elapsed();
    assert!(wait_until(WAIT, || (shows() >= 1).then_some(())).is_some());
    std::thread::sleep(Duration::from_millis(300));
    let allowed = 1 + took.as_secs() as usize + 1;
    assert!(
        shows() <= allowed,
        "{} notifications for 200 calls in {took:?}",
        shows()
    );
    // The second launch still works after the flood (a second later).
    std::thread::sleep(Duration::from_secs(1));
    assert_eq!(second_launch(&w).status.code(), Some(0));
}

#[test]
fn a_name_held_by_another_program_is_said_and_fails() {
    let test = "a_name_held_by_another_program_is_said_and_fails";
    if !require(test, &["dbus-daemon"]) {
        return;
    }
    let dir = tempfile::tempdir().expect("tmp");
    let bus = Bus::start(dir.path());
    // A program of the session that took the applet's name first, with no Show.
    let _squatter = zbus::blocking::connection::Builder::address(bus.address.as_str())
        .expect("address")
        .name("io.github.conntrack_tray.Applet")
        .expect("name")
        .build()
        .expect("squatter");
    let out = Command::new(common::APPLET)
        .arg("--helper")
        .arg(common::fake_helper())
        .env("DBUS_SESSION_BUS_ADDRESS", &bus.address)
        .env("HOME", dir.path())
        .output()
        .expect("applet");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    let me = std::process::id();
    assert!(
        err.contains(&format!("pid {me} holds io.github.conntrack_tray.Applet"))
            && err.contains("did not take Show: no answer within 3 s"),
        "{err}"
    );
}
