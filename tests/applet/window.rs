//! The connections window end to end (issue 13): the applet under Xvfb, its menu's *Show
//! connections…* clicked over the private bus, the window mapped on the display (as xdotool
//! sees it), a second click and a left click (Activate) bringing the same one forward instead
//! of a second, its frame drawn on the display, the mutes the Rules view lists and ends over D-Bus, and the window gone with
//! the applet.

use super::*;

use std::process::Command;

const TITLE: &str = "conntrack-tray: Connections";
const BUS_NAME: &str = "io.github.conntrack_tray.Applet";
const PATH: &str = "/io/github/conntrack_tray/Applet";
/// [`TITLE`] as xdotool's pattern (a regular expression; the title has nothing special in it).
const TITLE_PATTERN: &str = "^conntrack-tray: Connections$";
/// The window's first frame on a loaded machine (a debug build, every test of the binary at
/// once).
const MAPPED_WITHIN: Duration = Duration::from_secs(60);

/// The programs this test needs beyond the others': xdotool and xwd are not in the shared
/// list of helper/tests/common/require.rs, so they are checked here the same way (a skip with
/// the package's name, a failure under CI=true).
fn have_tool(test: &str, program: &str, arg: &str, package: &str) -> bool {
    let found = Command::new(program).arg(arg).output().is_ok();
    if !found {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test}: {program} is missing (install {package})"
        );
        eprintln!("skipping {test}: {program} is missing (install {package})");
    }
    found
}

/// How many different pixel values the window `id` shows, from an `xwd` dump: 1 for a window
/// that was mapped but never drawn (or drawn as one colour), many for text on a background.
fn colours(display: &str, id: &str) -> usize {
    let Ok(out) = Command::new("xwd")
        .args(["-silent", "-id", id])
        .env("DISPLAY", display)
        .output()
    else {
        return 0;
    };
    let field = |i: usize| {
        out.stdout
            .get(i * 4..i * 4 + 4)
            .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    // XWD: the header's size, then 24 more fields; the 20th is the colour map's length (12
    // bytes an entry), then the pixels (32 bits each at depth 24).
    let start = field(0) + field(19) * 12;
    let pixels = out.stdout.get(start..).unwrap_or_default();
    let distinct: std::collections::HashSet<&[u8]> = pixels.chunks_exact(4).collect();
    distinct.len()
}

/// The ids of the windows named [`TITLE`] on `display`, mapped ones only.
fn windows(display: &str) -> Vec<String> {
    let out = Command::new("xdotool")
        .args(["search", "--onlyvisible", "--name", TITLE_PATTERN])
        .env("DISPLAY", display)
        .output()
        .expect("xdotool");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn show_connections_in_the_menu_maps_one_window_under_xvfb() {
    let test = "show_connections_in_the_menu_maps_one_window_under_xvfb";
    if !require(test, &["dbus-daemon", "python3", "Xvfb"])
        || !have_tool(test, "xdotool", "version", "xdotool")
        || !have_tool(test, "xwd", "-help", "x11-apps")
    {
        return;
    }
    let (_x, display) = super::trust::xvfb().expect("Xvfb");
    let dir = tempfile::tempdir().expect("tmp");
    // A kept history for the window to read.
    let state = dir.path().join("state/conntrack-tray");
    std::fs::create_dir_all(&state).expect("mkdir");
    let c = connection_value("/usr/bin/curl", "9.9.9.9", 443, false);
    let line = serde_json::json!({"on": "fakehost", "connection": c}).to_string();
    std::fs::write(state.join("events.jsonl"), line + "\n").expect("history");
    let bus = Bus::start(dir.path());
    let notes = NotificationServer::start(&bus);
    let watcher = SniWatcher::start(&bus);
    let env = [("DISPLAY", display.as_str())];
    let applet = Applet::start_env(&bus, dir.path(), &[], &common::fake_helper(), &[], &env);
    assert!(applet.wait_helper_started(1));
    let service = wait_until(WAIT, || watcher.items().first().cloned()).expect("tray item");
    let conn = bus.connect();
    let show = wait_until(WAIT, || {
        get_layout(&conn, &service)
            .find("Show connections…")
            .map(|n| n.id)
    })
    .expect("Show connections… in the menu");
    click(&conn, &service, show);
    let mapped = wait_until(MAPPED_WITHIN, || {
        let w = windows(&display);
        (!w.is_empty()).then_some(w)
    });
    if mapped.is_none() {
        // What there is instead: the display's windows and the applet's children.
        let tree = Command::new("xwininfo")
            .args(["-root", "-tree"])
            .env("DISPLAY", &display)
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        let children = Command::new("ps")
            .args([
                "--ppid",
                &applet.child.id().to_string(),
                "-o",
                "pid,stat,args",
            ])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
            .unwrap_or_default();
        panic!("no window named {TITLE} mapped on {display}:\n{tree}\n{children}");
    }
    assert_eq!(mapped.as_ref().map(Vec::len), Some(1), "{mapped:?}");
    // And drawn: the list's text on its background (the CPU rasterizer's frame reached the
    // display), not an empty or black window.
    let id = mapped.iter().flatten().next().cloned().unwrap_or_default();
    let drawn = wait_until(MAPPED_WITHIN, || {
        Some(colours(&display, &id)).filter(|&n| n >= 8)
    });
    assert!(
        drawn.is_some(),
        "the window shows {} colours: not drawn",
        colours(&display, &id)
    );
    // Again, and a left click: the same window, not a second. (The id read afresh: the
    // menu may have been rebuilt since.)
    let show = get_layout(&conn, &service)
        .find("Show connections…")
        .map_or(show, |n| n.id);
    click(&conn, &service, show);
    conn.call_method(
        Some(service.as_str()),
        "/StatusNotifierItem",
        Some("org.kde.StatusNotifierItem"),
        "Activate",
        &(10i32, 10i32),
    )
    .expect("Activate");
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(windows(&display), mapped.unwrap_or_default());
    assert!(
        notes.seen.all().is_empty(),
        "nothing to tell: {:?}",
        notes.seen.all()
    );
    // A mute from a notification is what the window's Rules view asks the applet for, and
    // Unmute ends it.
    applet.emit(&connection("/usr/bin/curl", "9.9.9.9", 443, false));
    let id = wait_until(WAIT, || notes.seen.all().first().map(|n| n.id)).expect("notified");
    notes.invoke(id, "mute");
    let call = |method: &str, body: &(&str, &str)| {
        let reply = if method == "Mutes" {
            conn.call_method(Some(BUS_NAME), PATH, Some(BUS_NAME), method, &())
        } else {
            conn.call_method(Some(BUS_NAME), PATH, Some(BUS_NAME), method, body)
        };
        reply.unwrap_or_else(|e| panic!("{method}: {e}"))
    };
    let muted = wait_until(WAIT, || {
        let m: Vec<(String, String, u64)> = call("Mutes", &("", ""))
            .body()
            .deserialize()
            .expect("a(sst)");
        (!m.is_empty()).then_some(m)
    })
    .expect("the mute listed");
    assert_eq!(
        (muted[0].0.as_str(), muted[0].1.as_str()),
        ("", "/usr/bin/curl")
    );
    call("Unmute", &("", "/usr/bin/curl"));
    let ended = wait_until(WAIT, || {
        let m: Vec<(String, String, u64)> = call("Mutes", &("", ""))
            .body()
            .deserialize()
            .expect("a(sst)");
        m.is_empty().then_some(())
    });
    assert!(ended.is_some(), "Unmute ended the mute");
    // The applet goes, and its window with it.
    drop(applet);
    let gone = wait_until(Duration::from_secs(10), || {
        windows(&display).is_empty().then_some(())
    });
    assert!(gone.is_some(), "the window outlived the applet");
}
