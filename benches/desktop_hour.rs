//! The applet's "desktop hour" (issue 11): `cargo build --release -p conntrack-tray-helper &&
//! cargo bench -p conntrack-tray --bench desktop_hour` (as root; the cargo runner asks sudo).
//! About two minutes.
//!
//! A compressed hour on a desktop, played against the real applet and the real helper: the
//! applet runs in network namespace a (and the helper, its child, with it), on a private
//! dbus-daemon where a recording notification server stands in for the desktop's. Every
//! program is a copy of the system python under a name of its own, a real file the helper
//! verifies, running `desktop_hour/program.py`, which prints the wall-clock time of each
//! connect():
//!
//! - five whitelisted programs (by absolute path, in the applet's config, which the applet
//!   sends to the helper) make 150 connections spread over the hour;
//! - a browser, not whitelisted, makes 500 connections to 200 destinations (20 addresses of
//!   namespace b × 10 ports; the ports nobody listens on refuse, which still makes a flow) in
//!   about five seconds;
//! - ten new programs make one connection each, alternately to port 443 (a critical port) and
//!   to 8080: three pairs in the middle of the browser's burst, two after it.
//!
//! Then, once the applet has closed every notification, 30 s without connections, for the
//! wakeups of the applet and of the helper; then the same hour again, where everything is
//! known. It prints Markdown rows for the README: the notifications per program (new ones and
//! in-place replacements), the connect() → Notify latency of the new programs, what the
//! whitelisted programs and the hour as a whole showed, the critical urgency of known traffic,
//! and the idle wakeups per second, per thread name.
//!
//! The helper runs with `repeat_after_secs = 0`: with the default (300 s) it would hold back
//! the whole second hour as repeats, so the applet's own judgement of known traffic would never
//! be asked; and the applet then gets every one of the browser's 500 connections, not 200,
//! which is its harder case.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a benchmark that cannot set up must stop

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../helper/tests/common/mod.rs"]
mod nets;
#[path = "desktop_hour/procs.rs"]
mod procs;
#[path = "desktop_hour/screen.rs"]
mod screen;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{wait_until, Applet, Bus, Killed, NotificationServer, Notified, SniWatcher};
use procs::{per_second, recorded, wakeups};

const NAME: &str = "desktop_hour";

/// The whitelisted programs and the port each talks to.
const WHITELISTED: [(&str, u16); 5] = [
    ("backup-agent", 443),
    ("mail-sync", 993),
    ("chat-client", 5222),
    ("update-check", 443),
    ("file-sync", 8384),
];
const WHITELISTED_CONNECTS: usize = 30;
const WHITELISTED_GAP: f64 = 0.6;
const BROWSER: &str = "browser";
/// The browser's addresses: 10.213.N.10 to .29, added to namespace b.
const BROWSER_HOSTS: std::ops::Range<u8> = 10..30;
const BROWSER_PORTS: [u16; 10] = [443, 80, 8443, 8000, 8001, 8888, 3000, 5000, 9000, 9443];
const BROWSER_CONNECTS: usize = 500;
/// When the burst starts, in seconds into the hour, and the time between its connects.
const BROWSER_START: f64 = 2.0;
const BROWSER_GAP: f64 = 0.01;
/// When each pair of new programs connects, in seconds into the hour: the first of a pair to
/// port 443, the second [`PAIR_GAP`] later to 8080. The burst runs from 2 s to about 7 s, so
/// three pairs fall in it and two after.
const PAIRS: [f64; 5] = [3.0, 4.5, 6.0, 10.0, 15.0];
const PAIR_GAP: f64 = 0.8;
/// The ports namespace b listens on; the others refuse.
const SERVED: [u16; 5] = [443, 8080, 993, 5222, 8384];
/// Time for the programs to start before the hour does.
const LEAD: f64 = 3.0;
/// A program stays this long after its last connection.
const HOLD: f64 = 1.0;
const IDLE: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, PartialEq)]
enum Role {
    Whitelisted,
    Browser,
    New { port: u16, mid_burst: bool },
}

/// One program of the hour: its copy of python and what it connects to when.
struct Program {
    name: String,
    exe: PathBuf,
    role: Role,
    /// Seconds into the hour of its first connect, and between its connects.
    start: f64,
    gap: f64,
    targets: Vec<String>,
    /// The file the targets are in, one `HOST:PORT` a line.
    list: PathBuf,
}

fn wall(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The programs of the hour, each a fresh copy of python in `bin`.
fn programs(bin: &Path, net: &nets::Net, browser_hosts: &[String]) -> Vec<Program> {
    let python = std::fs::canonicalize(nets::PY).expect("the system python");
    std::fs::create_dir_all(bin).expect("bin folder");
    let b = net.b4();
    let mut out = Vec::new();
    let mut add = |name: String, role, start, gap, targets: Vec<String>| {
        let exe = bin.join(&name);
        std::fs::copy(&python, &exe).expect("copy python");
        let list = bin.join(format!("{name}.targets"));
        std::fs::write(&list, targets.join("\n")).expect("targets");
        out.push(Program {
            name,
            exe,
            role,
            start,
            gap,
            targets,
            list,
        });
    };
    for (i, (name, port)) in WHITELISTED.iter().enumerate() {
        let targets = vec![format!("{b}:{port}"); WHITELISTED_CONNECTS];
        let start = 0.1 * i as f64;
        add(
            name.to_string(),
            Role::Whitelisted,
            start,
            WHITELISTED_GAP,
            targets,
        );
    }
    let destinations: Vec<String> = browser_hosts
        .iter()
        .flat_map(|h| BROWSER_PORTS.iter().map(move |p| format!("{h}:{p}")))
        .collect();
    let targets = (0..BROWSER_CONNECTS)
        .map(|i| destinations[i % destinations.len()].clone())
        .collect();
    add(
        BROWSER.into(),
        Role::Browser,
        BROWSER_START,
        BROWSER_GAP,
        targets,
    );
    let burst_end = BROWSER_START + BROWSER_CONNECTS as f64 * BROWSER_GAP;
    for i in 0..2 * PAIRS.len() {
        let (start, port) = match i % 2 {
            0 => (PAIRS[i / 2], 443),
            _ => (PAIRS[i / 2] + PAIR_GAP, 8080),
        };
        let role = Role::New {
            port,
            mid_burst: start < burst_end,
        };
        add(
            format!("newprog-{:02}", i + 1),
            role,
            start,
            0.0,
            vec![format!("{b}:{port}")],
        );
    }
    out
}

/// One hour played: its span on the wall clock and the connect() times of each program.
struct Run {
    from: SystemTime,
    to: SystemTime,
    connects: HashMap<String, Vec<f64>>,
}

impl Run {
    /// The Notify calls the server received during the hour.
    fn notes(&self, all: &[Notified]) -> Vec<Notified> {
        all.iter()
            .filter(|n| n.at >= self.from && n.at <= self.to)
            .cloned()
            .collect()
    }
}

fn hour(net: &nets::Net, programs: &[Program], script: &Path) -> Run {
    let from = SystemTime::now();
    let t0 = wall(from) + LEAD;
    let children: Vec<_> = programs
        .iter()
        .map(|p| {
            let argv = [
                p.exe.display().to_string(),
                script.display().to_string(),
                format!("{:.6}", t0 + p.start),
                p.gap.to_string(),
                HOLD.to_string(),
                p.list.display().to_string(),
            ];
            let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
            nets::Net::cmd(&net.a, &argv)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::inherit())
                .spawn()
                .expect("a program of the hour")
        })
        .collect();
    let mut connects = HashMap::new();
    for (child, p) in children.into_iter().zip(programs) {
        let out = child.wait_with_output().expect("program output");
        let times: Vec<f64> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect();
        assert_eq!(times.len(), p.targets.len(), "{} did not connect", p.name);
        connects.insert(p.name.clone(), times);
    }
    // The last news of the hour is shown at most a second after it came (`alerts`).
    std::thread::sleep(Duration::from_secs(2));
    Run {
        from,
        to: SystemTime::now(),
        connects,
    }
}

/// Keeps what a child writes to a pipe, so it never blocks on a full one.
fn drain(r: impl std::io::Read + Send + 'static, into: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            into.lock().unwrap().push(line);
        }
    });
}

fn main() {
    if !nets::root_or_skip(NAME) || !nets::require(NAME, &["ip", "nft", "python3", "dbus-daemon"]) {
        return;
    }
    let helper = nets::helper_bin();
    assert!(
        helper.exists(),
        "{} is not built: cargo build --release -p conntrack-tray-helper",
        helper.display()
    );
    let net = nets::Net::new();
    let browser_hosts: Vec<String> = BROWSER_HOSTS.map(|h| net.add_b4(h)).collect();
    let dir = tempfile::tempdir().expect("tmp");
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/desktop_hour");
    let script = here.join("program.py");
    let ports: Vec<String> = SERVED.iter().map(u16::to_string).collect();
    let server_py = here.join("server.py");
    let mut argv = vec![nets::PY, server_py.to_str().unwrap(), "0.0.0.0"];
    argv.extend(ports.iter().map(String::as_str));
    let mut server = Killed(
        nets::Net::cmd(&net.b, &argv)
            .stdout(Stdio::piped())
            .spawn()
            .expect("servers"),
    );
    let mut ready = String::new();
    BufReader::new(server.0.stdout.take().unwrap())
        .read_line(&mut ready)
        .unwrap();
    assert_eq!(ready.trim(), "ready", "the servers did not start");

    let programs = programs(&dir.path().join("bin"), &net, &browser_hosts);
    let whitelist: Vec<String> = programs
        .iter()
        .filter(|p| p.role == Role::Whitelisted)
        .map(|p| format!("{:?}", p.exe.display().to_string()))
        .collect();
    let config = Applet::config_path(dir.path());
    std::fs::create_dir_all(config.parent().unwrap()).unwrap();
    std::fs::write(
        &config,
        format!(
            "[filter]\nrepeat_after_secs = 0\n\n[whitelist]\nprocesses = [{}]\n",
            whitelist.join(", ")
        ),
    )
    .unwrap();

    let bus = Bus::start(dir.path());
    let notes = NotificationServer::start(&bus);
    let _watcher = SniWatcher::start(&bus);
    let mut applet =
        Applet::start_with(&bus, dir.path(), &["ip", "netns", "exec", &net.a], &helper);
    let said = Arc::new(Mutex::new(Vec::new()));
    drain(applet.child.stdout.take().unwrap(), said.clone());
    drain(applet.child.stderr.take().unwrap(), said.clone());
    let applet_pid = applet.child.id();
    let helper_pid = wait_until(Duration::from_secs(10), || {
        nets::nft_tables(&net.a)
            .contains("conntrack_tray_")
            .then(|| procs::helper_pid(applet_pid))
            .flatten()
    })
    .expect("the helper did not start in the namespace");
    // Its settings (the whitelist) follow its hello.
    std::thread::sleep(Duration::from_secs(1));

    eprintln!("the hour...");
    let first = hour(&net, &programs, &script);
    let in_first = recorded(&dir.path().join("state"), &first);
    let first_notes = first.notes(&notes.seen.all());

    eprintln!("until the applet has closed every notification...");
    wait_until(Duration::from_secs(45), || {
        notes.seen.on_screen().is_empty().then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    eprintln!("{} s idle...", IDLE.as_secs());
    let idle_from = SystemTime::now();
    let (applet_before, helper_before) = (wakeups(applet_pid), wakeups(helper_pid));
    std::thread::sleep(IDLE);
    let (applet_after, helper_after) = (wakeups(applet_pid), wakeups(helper_pid));
    let idle_secs = idle_from.elapsed().map(|d| d.as_secs_f64()).unwrap_or(30.0);
    let idle_notes = notes
        .seen
        .all()
        .iter()
        .filter(|n| n.at >= idle_from)
        .count();

    eprintln!("the same hour again...");
    let second = hour(&net, &programs, &script);
    let in_second = recorded(&dir.path().join("state"), &second);
    let second_notes = second.notes(&notes.seen.all());

    screen::report(
        &programs,
        &first,
        &first_notes,
        &second_notes,
        &in_first,
        &in_second,
    );
    println!(
        "| idle wakeups, applet, {idle_secs:.0} s without connections (target ≤ 0.2/s) | {} |",
        per_second(&applet_before, &applet_after, idle_secs)
    );
    println!(
        "| idle wakeups, helper, the same 30 s (target ≤ 0.2/s) | {} |",
        per_second(&helper_before, &helper_after, idle_secs)
    );
    if idle_notes > 0 {
        println!("| Notify calls while idle | {idle_notes} |");
    }
    drop(applet);
    // The helper leaves when its stdin closes; make sure before the namespaces go.
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(helper_pid as i32),
        nix::sys::signal::Signal::SIGKILL,
    );
    let said = said.lock().unwrap();
    if !said.is_empty() {
        eprintln!("the applet said:\n{}", said.join("\n"));
    }
}
