//! Real parts for the applet's end-to-end tests: a private `dbus-daemon`, a notification
//! server and a StatusNotifierWatcher on it (started before anything could ask D-Bus to
//! activate a real one), a scripted helper, and the applet itself.
//!
//! Each test first says which programs it runs ([`require`]): `dbus-daemon` for the bus,
//! `python3` for the scripted helper, and whatever else it starts itself.

#![allow(dead_code)]

// The helper's test module has the same file: one list of programs and packages for both.
// (A target that includes both modules, like applet_kernel, has it twice, which is harmless.)
#[allow(clippy::duplicate_mod)]
#[path = "../../helper/tests/common/require.rs"]
mod require;
#[allow(unused_imports)] // a target that includes both modules uses one of them
pub use require::require;

mod files;
#[allow(unused_imports)] // not every target looks at files
pub use files::{mode, nobody_reads};

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use zbus::zvariant::{OwnedValue, Value};

pub const APPLET: &str = env!("CARGO_BIN_EXE_conntrack-tray");

pub fn fake_helper() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/tools/fake_helper.py")
}

/// PATH with tests/tools first, so `ssh` is the scripted stand-in.
pub fn tools_path() -> String {
    let tools = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/tools");
    format!(
        "{}:{}",
        tools.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

/// Polls `f` every 20 ms until it returns Some, for at most `timeout`.
pub fn wait_until<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if Instant::now() >= end {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A child process killed (and reaped) when the guard goes, even when a test fails.
pub struct Killed(pub Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A private session bus.
pub struct Bus {
    pub address: String,
    child: Child,
}

impl Bus {
    pub fn start(dir: &Path) -> Bus {
        let sock = dir.join("bus");
        let mut child = Command::new("dbus-daemon")
            .args(["--session", "--nofork", "--nopidfile", "--print-address=1"])
            .arg(format!("--address=unix:path={}", sock.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("dbus-daemon (Debian: apt install dbus-daemon)");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("address");
        Bus {
            address: line.trim().to_string(),
            child,
        }
    }

    pub fn connect(&self) -> zbus::blocking::Connection {
        zbus::blocking::connection::Builder::address(self.address.as_str())
            .expect("address")
            .build()
            .expect("connect to the test bus")
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One Notify call as the server received it.
#[derive(Debug, Clone)]
pub struct Notified {
    pub id: u32,
    pub app_name: String,
    pub icon: String,
    pub summary: String,
    pub body: String,
    pub actions: Vec<String>,
    pub urgency: Option<u8>,
    /// The id it asked to replace (0: a new notification).
    pub replaces: u32,
    /// `expire_timeout` in ms (-1: the server's default, 0: never).
    pub expire: i32,
    pub desktop_entry: Option<String>,
    pub category: Option<String>,
    /// The unique bus name of the sender: one connection for every notification.
    pub sender: String,
    /// When the server received the call (the wall clock, to compare with other processes').
    pub at: std::time::SystemTime,
}

#[derive(Clone, Default)]
pub struct Recorder(pub Arc<Mutex<Vec<Notified>>>, pub Arc<Mutex<Vec<u32>>>);

impl Recorder {
    /// Every Notify call, in order (a replacement is a call of its own).
    pub fn all(&self) -> Vec<Notified> {
        self.0.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// The ids CloseNotification was called with.
    pub fn closed(&self) -> Vec<u32> {
        self.1.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// The notifications as the screen has them: the last call for each id.
    pub fn on_screen(&self) -> Vec<Notified> {
        let closed = self.closed();
        let mut out: Vec<Notified> = Vec::new();
        for n in self.all() {
            match out.iter_mut().find(|o| o.id == n.id) {
                Some(o) => *o = n,
                None => out.push(n),
            }
        }
        out.retain(|n| !closed.contains(&n.id));
        out
    }
}

struct Notifications {
    seen: Recorder,
}

#[zbus::interface(name = "org.freedesktop.Notifications")]
impl Notifications {
    fn get_capabilities(&self) -> Vec<String> {
        ["actions", "body", "body-markup"]
            .map(String::from)
            .to_vec()
    }

    #[allow(clippy::too_many_arguments)]
    fn notify(
        &self,
        #[zbus(header)] header: zbus::message::Header<'_>,
        app_name: String,
        replaces_id: u32,
        app_icon: String,
        summary: String,
        body: String,
        actions: Vec<String>,
        hints: HashMap<String, OwnedValue>,
        expire_timeout: i32,
    ) -> u32 {
        let at = std::time::SystemTime::now();
        let mut v = self.seen.0.lock().expect("lock");
        let known = replaces_id != 0 && v.iter().any(|n| n.id == replaces_id);
        let id = if known {
            replaces_id
        } else {
            v.iter().map(|n| n.id).max().unwrap_or(0) + 1
        };
        let urgency = hints.get("urgency").and_then(|u| u8::try_from(u).ok());
        let text = |k: &str| {
            hints
                .get(k)
                .and_then(|v| String::try_from(v.try_clone().ok()?).ok())
        };
        v.push(Notified {
            id,
            app_name,
            icon: app_icon,
            summary,
            body,
            actions,
            urgency,
            replaces: replaces_id,
            expire: expire_timeout,
            desktop_entry: text("desktop-entry"),
            category: text("category"),
            sender: header.sender().map(|s| s.to_string()).unwrap_or_default(),
            at,
        });
        id
    }

    fn close_notification(&self, id: u32) {
        self.seen.1.lock().expect("lock").push(id);
    }

    fn get_server_information(&self) -> (String, String, String, String) {
        (
            "test".into(),
            "conntrack-tray tests".into(),
            "1".into(),
            "1.2".into(),
        )
    }
}

/// A notification server on the bus that records Notify calls and can press buttons.
pub struct NotificationServer {
    pub conn: zbus::blocking::Connection,
    pub seen: Recorder,
}

impl NotificationServer {
    pub fn start(bus: &Bus) -> NotificationServer {
        let seen = Recorder::default();
        let conn = zbus::blocking::connection::Builder::address(bus.address.as_str())
            .expect("address")
            .name("org.freedesktop.Notifications")
            .expect("name")
            .serve_at(
                "/org/freedesktop/Notifications",
                Notifications { seen: seen.clone() },
            )
            .expect("serve")
            .build()
            .expect("notification server");
        NotificationServer { conn, seen }
    }

    /// Emits NotificationClosed (reason 2: dismissed by the user) for notification `id`.
    pub fn dismiss(&self, id: u32) {
        self.conn
            .emit_signal(
                None::<()>,
                "/org/freedesktop/Notifications",
                "org.freedesktop.Notifications",
                "NotificationClosed",
                &(id, 2u32),
            )
            .expect("emit NotificationClosed");
    }

    /// Emits ActionInvoked, as if the person clicked `key` on notification `id`.
    pub fn invoke(&self, id: u32, key: &str) {
        self.conn
            .emit_signal(
                None::<()>,
                "/org/freedesktop/Notifications",
                "org.freedesktop.Notifications",
                "ActionInvoked",
                &(id, key),
            )
            .expect("emit ActionInvoked");
    }
}

struct Watcher {
    items: Arc<Mutex<Vec<String>>>,
}

#[zbus::interface(name = "org.kde.StatusNotifierWatcher")]
impl Watcher {
    fn register_status_notifier_item(
        &self,
        service: String,
        #[zbus(header)] hdr: zbus::message::Header<'_>,
    ) {
        // An item may register with its bus name or with an object path (then: the sender).
        let name = if service.starts_with('/') {
            hdr.sender().map(|s| s.to_string()).unwrap_or_default()
        } else {
            service
        };
        if let Ok(mut v) = self.items.lock() {
            v.push(name);
        }
    }

    fn register_status_notifier_host(&self, _service: String) {}

    #[zbus(property)]
    fn registered_status_notifier_items(&self) -> Vec<String> {
        self.items.lock().map(|v| v.clone()).unwrap_or_default()
    }

    #[zbus(property)]
    fn is_status_notifier_host_registered(&self) -> bool {
        true
    }

    #[zbus(property)]
    fn protocol_version(&self) -> i32 {
        0
    }
}

/// A StatusNotifierWatcher that records which items registered.
pub struct SniWatcher {
    pub conn: zbus::blocking::Connection,
    items: Arc<Mutex<Vec<String>>>,
}

impl SniWatcher {
    pub fn start(bus: &Bus) -> SniWatcher {
        let items = Arc::new(Mutex::new(Vec::new()));
        let conn = zbus::blocking::connection::Builder::address(bus.address.as_str())
            .expect("address")
            .name("org.kde.StatusNotifierWatcher")
            .expect("name")
            .serve_at(
                "/StatusNotifierWatcher",
                Watcher {
                    items: items.clone(),
                },
            )
            .expect("serve")
            .build()
            .expect("watcher");
        SniWatcher { conn, items }
    }

    pub fn items(&self) -> Vec<String> {
        self.items.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// A dbusmenu item: id, label, toggle state, children.
#[derive(Debug, Clone)]
pub struct MenuNode {
    pub id: i32,
    pub label: String,
    pub toggle: Option<i32>,
    pub children: Vec<MenuNode>,
}

impl MenuNode {
    pub fn find(&self, label: &str) -> Option<&MenuNode> {
        if self.label == label {
            return Some(self);
        }
        self.children.iter().find_map(|c| c.find(label))
    }

    pub fn labels(&self) -> Vec<String> {
        self.children.iter().map(|c| c.label.clone()).collect()
    }
}

type Layout = (i32, HashMap<String, OwnedValue>, Vec<OwnedValue>);

fn node(l: Layout) -> MenuNode {
    let (id, props, children) = l;
    let label = props
        .get("label")
        .and_then(|v| String::try_from(v.clone()).ok())
        .unwrap_or_default();
    let toggle = props
        .get("toggle-state")
        .and_then(|v| i32::try_from(v).ok());
    let children = children
        .into_iter()
        .filter_map(|c| Layout::try_from(c).ok())
        .map(node)
        .collect();
    MenuNode {
        id,
        label,
        toggle,
        children,
    }
}

/// The applet's menu, read over com.canonical.dbusmenu GetLayout.
pub fn get_layout(conn: &zbus::blocking::Connection, service: &str) -> MenuNode {
    let reply = conn
        .call_method(
            Some(service),
            "/MenuBar",
            Some("com.canonical.dbusmenu"),
            "GetLayout",
            &(0i32, -1i32, Vec::<String>::new()),
        )
        .expect("GetLayout");
    let (_rev, layout): (u32, Layout) = reply.body().deserialize().expect("layout");
    node(layout)
}

/// Clicks menu item `id` (dbusmenu Event "clicked").
pub fn click(conn: &zbus::blocking::Connection, service: &str, id: i32) {
    conn.call_method(
        Some(service),
        "/MenuBar",
        Some("com.canonical.dbusmenu"),
        "Event",
        &(id, "clicked", Value::from(0i32), 0u32),
    )
    .expect("Event clicked");
}

/// The applet with a scripted helper, its own config, state and bus.
pub struct Applet {
    pub child: Child,
    pub dir: PathBuf,
    pub events: PathBuf,
    pub log: PathBuf,
}

impl Applet {
    pub fn config_path(dir: &Path) -> PathBuf {
        dir.join("config/conntrack-tray/config.toml")
    }

    pub fn start(bus: &Bus, dir: &Path) -> Applet {
        Applet::start_with(bus, dir, &[], &fake_helper())
    }

    /// Starts the applet as `PREFIX... conntrack-tray --helper HELPER --no-pkexec` (a prefix
    /// such as `ip netns exec NS` runs it in a network namespace).
    pub fn start_with(bus: &Bus, dir: &Path, prefix: &[&str], helper: &Path) -> Applet {
        Applet::start_full(bus, dir, prefix, helper, &[])
    }

    /// As [`Applet::start_with`], with extra arguments; `ssh` is the scripted one from
    /// tests/tools.
    pub fn start_full(
        bus: &Bus,
        dir: &Path,
        prefix: &[&str],
        helper: &Path,
        extra: &[&str],
    ) -> Applet {
        Applet::start_env(bus, dir, prefix, helper, extra, &[])
    }

    /// As [`Applet::start_full`], with `env` set after the tests' own variables: a `PATH`
    /// there replaces the one with the scripted `ssh`.
    pub fn start_env(
        bus: &Bus,
        dir: &Path,
        prefix: &[&str],
        helper: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Applet {
        let events = dir.join("events.jsonl");
        let log = dir.join("helper.log");
        std::fs::write(&events, "").expect("events");
        let mut cmd = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(APPLET);
                c
            }
            None => Command::new(APPLET),
        };
        let child = cmd
            .arg("--helper")
            .arg(helper)
            .arg("--no-pkexec")
            .args(extra)
            .env("PATH", tools_path())
            .env("DBUS_SESSION_BUS_ADDRESS", &bus.address)
            .env("XDG_CONFIG_HOME", dir.join("config"))
            .env("XDG_STATE_HOME", dir.join("state"))
            .env("HOME", dir)
            .env("FAKE_EVENTS", &events)
            .env("FAKE_LOG", &log)
            // No window of the tests' on the desktop that runs them: a test gives a display.
            .env_remove("DISPLAY")
            .env_remove("WAYLAND_DISPLAY")
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("applet");
        Applet {
            child,
            dir: dir.to_path_buf(),
            events,
            log,
        }
    }

    /// Makes the scripted helper print `line`.
    pub fn emit(&self, line: &str) {
        append(&self.events, line);
    }

    /// Makes the scripted remote helper (behind the scripted ssh) print `line`.
    pub fn emit_remote(&self, line: &str) {
        let mut p = self.events.clone().into_os_string();
        p.push(".remote");
        append(Path::new(&p), line);
    }

    pub fn helper_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The pids of the scripted helpers started so far.
    pub fn helper_pids(&self) -> Vec<i32> {
        self.helper_log()
            .lines()
            .filter_map(|l| l.strip_prefix("start ")?.parse().ok())
            .collect()
    }

    pub fn wait_helper_started(&self, n: usize) -> bool {
        wait_until(Duration::from_secs(10), || {
            (self.helper_pids().len() >= n).then_some(())
        })
        .is_some()
    }
}

impl Drop for Applet {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        for pid in self.helper_pids() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn append(path: &Path, line: &str) {
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .open(path)
        .expect("events");
    writeln!(f, "{line}").expect("append");
}

pub fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map(|s| {
                s.rsplit(')')
                    .next()
                    .unwrap_or("")
                    .trim_start()
                    .starts_with('Z')
            })
            .unwrap_or(true)
}

/// A connection event line as the helper writes it.
pub fn connection(exe: &str, remote: &str, port: u16, critical: bool) -> String {
    connection_value(exe, remote, port, critical).to_string()
}

/// The same event as JSON, to change fields of. The exe is verified and a system file, as the
/// helper finds /usr/bin/curl (a whitelist entry matches only a verified exe).
pub fn connection_value(exe: &str, remote: &str, port: u16, critical: bool) -> serde_json::Value {
    let comm = exe.rsplit('/').next().unwrap_or(exe);
    serde_json::json!({
        "type": "connection", "ts": "2026-11-25T10:00:00.000000Z", "proto": "tcp",
        "family": "ipv4", "direction": "outbound", "local_ip": "10.0.0.1", "local_port": 43210,
        "remote_ip": remote, "remote_port": port, "critical": critical,
        "process": {"pid": 4242, "comm": comm, "exe": exe, "cmdline": [comm], "uid": 1000,
            "user": "alice", "exe_verified": true, "exe_system": true}
    })
}
