//! Watching a host over ssh, for real: the applet, in namespace `a`, runs the real ssh to a
//! real sshd in namespace `b`, which runs the real helper through sudo (`remote/host.rs`).
//! Over the applet's private bus, with the notifications recorded: remote events name their
//! host, refusals are told once with their fix and not retried, a helper killed on the host
//! is watched again, a client that vanished leaves no root helper behind, the applet's own
//! link is no news, one host named twice runs one helper, and `remote setup` gets a host
//! ready.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a test that cannot set up must fail loudly

mod common;
#[path = "remote/host.rs"]
mod host;
#[path = "../helper/tests/common/mod.rs"]
mod nets;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{
    click, get_layout, wait_until, Applet, Bus, NotificationServer, Notified, SniWatcher,
};
use conntrack_tray_helper::commands::{HEARTBEAT_EVERY, HEARTBEAT_TIMEOUT};
use host::{Remote, HOST, PORT, WRONG_KEY_HOST};

const WAIT: Duration = Duration::from_secs(15);

/// What these tests run: the namespaces, the local helper's table, the peers, the bus, and
/// on the host sshd, sudo and the test user's account.
const TOOLS: &[&str] = &[
    "ip",
    "nft",
    "python3",
    "dbus-daemon",
    "sshd",
    "ssh",
    "ssh-keygen",
    "sudo",
    "visudo",
    "useradd",
    "userdel",
];

/// Root, the programs, and the helper built (as `cargo test --workspace` builds it).
fn can_run(test: &str) -> bool {
    if !nets::root_or_skip(test) || !nets::require(test, TOOLS) {
        return false;
    }
    let helper = nets::helper_bin();
    if helper.exists() {
        return true;
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "{} is not built",
        helper.display()
    );
    eprintln!(
        "SKIPPED {test}: {} is not built (cargo test --workspace builds it)",
        helper.display()
    );
    false
}

/// One applet in namespace `a` watching the host, with a bus, a notification server and a
/// tray of its own, and the real ssh.
struct Watcher {
    _applet: Applet,
    conn: zbus::blocking::Connection,
    tray: SniWatcher,
    notes: NotificationServer,
    _bus: Bus,
    /// One line per ssh run: its pid and arguments.
    ssh_runs: PathBuf,
    started: Instant,
    dir: tempfile::TempDir,
}

impl Watcher {
    /// `[remote] hosts = HOSTS`, `helper = HELPER`; `local` is this machine's helper.
    fn start(
        remote: &Remote,
        name: &str,
        hosts: &[&str],
        helper: &str,
        local: &Path,
        extra: &[&str],
    ) -> Watcher {
        let dir = tempfile::tempdir().expect("tmp");
        let config = Applet::config_path(dir.path());
        std::fs::create_dir_all(config.parent().expect("dir")).expect("config dir");
        let hosts: Vec<String> = hosts.iter().map(|h| format!("{h:?}")).collect();
        let text = format!(
            "[remote]\nhosts = [{}]\nhelper = {helper:?}\n",
            hosts.join(", ")
        );
        std::fs::write(&config, text).expect("config");
        let bus = Bus::start(dir.path());
        let notes = NotificationServer::start(&bus);
        let tray = SniWatcher::start(&bus);
        let (path, ssh_runs) = remote.path(name);
        let started = Instant::now();
        let ns = ["ip", "netns", "exec", remote.net.a.as_str()];
        let applet = Applet::start_env(&bus, dir.path(), &ns, local, extra, &[("PATH", &path)]);
        Watcher {
            _applet: applet,
            conn: bus.connect(),
            tray,
            notes,
            _bus: bus,
            ssh_runs,
            started,
            dir,
        }
    }

    fn all(&self) -> Vec<Notified> {
        self.notes.seen.all()
    }

    /// The first notification that `pred` accepts, within `WAIT`.
    fn note(&self, what: &str, pred: impl Fn(&Notified) -> bool) -> Notified {
        wait_until(WAIT, || self.all().into_iter().find(&pred))
            .unwrap_or_else(|| panic!("no notification {what}: {:#?}", self.all()))
    }

    /// The applet's notice (a notification of its own) whose text starts with `start`.
    fn told(&self, start: &str) -> Notified {
        self.note(start, |n| n.body.starts_with(start))
    }

    fn service(&self) -> String {
        wait_until(WAIT, || self.tray.items().first().cloned()).expect("the tray item")
    }

    /// The menu's status line once `pred` accepts it.
    fn status(&self, pred: impl Fn(&str) -> bool) -> String {
        let service = self.service();
        let line = || {
            let menu = get_layout(&self.conn, &service);
            menu.children.first().map(|c| c.label.clone())
        };
        wait_until(WAIT, || line().filter(|s| pred(s)))
            .unwrap_or_else(|| panic!("status line: {:?}", line()))
    }

    fn ssh_runs(&self) -> Vec<String> {
        std::fs::read_to_string(&self.ssh_runs)
            .unwrap_or_default()
            .lines()
            .map(String::from)
            .collect()
    }

    /// The history's lines, as JSON.
    fn history(&self) -> Vec<serde_json::Value> {
        let file = self.dir.path().join("state/conntrack-tray/events.jsonl");
        std::fs::read_to_string(file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }
}

fn sigkill(pid: i32) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("kill");
}

#[test]
fn a_watched_host_is_named_watched_again_after_its_helper_is_killed_and_own_link_is_no_news() {
    let test =
        "a_watched_host_is_named_watched_again_after_its_helper_is_killed_and_own_link_is_no_news";
    if !can_run(test) {
        return;
    }
    let mut remote = Remote::start();
    remote.allow(&remote.line_for(&remote.helper));
    let target = remote.target();
    // The same host twice: in the config, and on the command line as an ssh:// URL.
    let url = format!("ssh://{target}");
    let local = nets::helper_bin();
    let w = Watcher::start(
        &remote,
        "events",
        &[&target],
        &remote.helper,
        &local,
        &["--remote", &url],
    );
    // The label as configured; the host's own name beside it (here the test machine's).
    let status = w.status(|s| s.starts_with("Monitoring ") && s.contains(&format!(", {HOST} (")));
    assert!(!status.contains(';'), "{status}");

    // One link, one helper on the host: named twice, it is started once.
    std::thread::sleep(Duration::from_secs(2));
    let helpers = remote.helpers(&remote.helper);
    assert_eq!(helpers.len(), 1, "helpers on the host: {helpers:?}");
    let runs = w.ssh_runs();
    assert_eq!(runs.len(), 1, "{runs:?}");
    assert!(
        runs[0].ends_with(&format!(
            "-- {target} sudo -n {} --format json",
            remote.helper
        )),
        "{runs:?}"
    );
    assert!(nets::nft_tables(&remote.net.b).contains("conntrack_tray"));

    // A connection on the host is notified, with the host in the summary.
    let (b, b4) = (remote.net.b.clone(), remote.net.b4());
    remote.net.serve(&b, &b4, &[8080]);
    std::thread::sleep(Duration::from_millis(300));
    remote.net.client(&b, &["connect", &b4, "8080", "0.5"]);
    let n = w.note("for the host's connection", |n| {
        n.summary.contains(":8080 ← ")
    });
    assert!(
        n.summary.starts_with(&format!("{b4}:8080 ← python3"))
            && n.summary.ends_with(&format!(" · on {HOST}")),
        "{}",
        n.summary
    );

    // Its helper killed there: told once it is not watched, and once it is again.
    sigkill(helpers[0]);
    let down = w.told(&format!("{HOST}: not watched ("));
    assert!(down.body.contains("; trying again in "), "{}", down.body);
    let back = w.told(&format!("{HOST}: watched again, after "));
    assert!(back.body.contains(" s not watched ("), "{}", back.body);
    assert_eq!(w.ssh_runs().len(), 2, "{:?}", w.ssh_runs());
    let again = wait_until(WAIT, || {
        let h = remote.helpers(&remote.helper);
        (h.len() == 1 && h[0] != helpers[0]).then_some(h)
    });
    assert!(again.is_some(), "{:?}", remote.helpers(&remote.helper));

    // The applet's own ssh connection, seen by the local helper: in the history, marked,
    // and in no notification.
    let own = wait_until(WAIT, || {
        w.history().into_iter().find(|l| {
            l["connection"]["remote_port"] == PORT && l["connection"]["remote_ip"] == b4.as_str()
        })
    })
    .unwrap_or_else(|| panic!("the link is not in the history: {:?}", w.history()));
    assert_eq!(own["own"], true, "{own}");
    // (The first ssh's, or the second's: the local helper may have started after the first.)
    let ssh: Vec<u64> = w
        .ssh_runs()
        .iter()
        .filter_map(|l| l.split(' ').next()?.parse().ok())
        .collect();
    let pid = own["connection"]["process"]["pid"].as_u64();
    assert!(pid.is_some_and(|p| ssh.contains(&p)), "{own} {ssh:?}");
    for n in w.all() {
        let text = format!("{}\n{}", n.summary, n.body);
        assert!(
            !text.contains(&format!(":{PORT}")) && !text.contains("← ssh"),
            "the own link was notified: {n:?}"
        );
    }
}

#[test]
fn a_client_that_vanished_leaves_no_helper_on_the_host_after_the_heartbeat_timeout() {
    let test = "a_client_that_vanished_leaves_no_helper_on_the_host_after_the_heartbeat_timeout";
    if !can_run(test) {
        return;
    }
    let remote = Remote::start();
    remote.allow(&remote.line_for(&remote.helper));
    // The URL form with the port.
    let b4 = remote.net.b4();
    let url = format!("ssh://{}@{b4}:{PORT}", remote.user);
    let w = Watcher::start(
        &remote,
        "cut",
        &[],
        &remote.helper,
        &common::fake_helper(),
        &["--remote", &url],
    );
    w.status(|s| s.starts_with(&format!("Monitoring fakehost, {b4}:{PORT} (")));
    assert_eq!(remote.helpers(&remote.helper).len(), 1);
    assert!(nets::nft_tables(&remote.net.b).contains("conntrack_tray"));
    // Once it has heard a heartbeat (the applet sends the first one HEARTBEAT_EVERY after
    // it starts), the link goes dark: no FIN, no RST, nothing.
    let heard = w.started + HEARTBEAT_EVERY + Duration::from_secs(3);
    std::thread::sleep(heard.saturating_duration_since(Instant::now()));
    remote.cut_link();
    let cut = Instant::now();
    let gone = wait_until(HEARTBEAT_TIMEOUT + Duration::from_secs(15), || {
        remote
            .helpers(&remote.helper)
            .is_empty()
            .then(|| cut.elapsed())
    });
    let gone = gone.unwrap_or_else(|| {
        panic!(
            "the helper still runs {:?} after the link was cut",
            cut.elapsed()
        )
    });
    eprintln!("the remote helper exited {gone:?} after the link was cut");
    assert!(gone <= Duration::from_secs(45), "{gone:?}");
    let tables = nets::nft_tables(&remote.net.b);
    assert!(!tables.contains("conntrack_tray"), "{tables}");
}

/// `conntrack-tray --config CONFIG remote setup TARGET` in namespace `a`, with `[remote]
/// helper = HELPER`: its exit code and output.
fn setup(remote: &Remote, target: &str, helper: &str) -> (Option<i32>, String) {
    let config = remote.dir.path().join("setup.toml");
    std::fs::write(&config, format!("[remote]\nhelper = {helper:?}\n")).expect("config");
    let (path, _) = remote.path("setup");
    let config = config.display().to_string();
    let args = [
        "timeout",
        "60",
        common::APPLET,
        "--config",
        &config,
        "remote",
        "setup",
        target,
    ];
    let out = nets::Net::cmd(&remote.net.a, &args)
        .env("PATH", path)
        .output()
        .expect("remote setup");
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    (out.status.code(), text)
}

#[test]
fn refusals_are_told_with_their_fix_and_not_retried_and_setup_gets_the_host_ready() {
    let test = "refusals_are_told_with_their_fix_and_not_retried_and_setup_gets_the_host_ready";
    if !can_run(test) {
        return;
    }
    let remote = Remote::start();
    let target = remote.target();
    // A sudoers line for a helper that is not there (uninstalled since, say): sudo says
    // "command not found" only for a command it would run.
    let gone = remote.dir.path().join("gone/conntrack-tray-helper");
    let gone = gone.display().to_string();
    remote.allow(&remote.line_for(&gone));
    let fake = common::fake_helper();
    let wrong_key = format!("{}@{WRONG_KEY_HOST}", remote.user);
    let start = |name: &str, host: &str, helper: &str| {
        Watcher::start(&remote, name, &[host], helper, &fake, &[])
    };
    let cases = [
        (
            start("key", &wrong_key, &remote.helper),
            WRONG_KEY_HOST,
            "ssh authentication failed",
        ),
        (
            start("sudo", &target, &remote.helper),
            HOST,
            "sudo wants a password",
        ),
        (
            start("gone", &target, &gone),
            HOST,
            "the helper was not found",
        ),
    ];
    for (w, host, why) in &cases {
        let n = w.told(&format!("{host}: not watched: {why}; "));
        assert!(
            n.body
                .ends_with("Choose \"Start monitoring…\" in the menu once it is fixed."),
            "{}",
            n.body
        );
        w.status(|s| {
            s.starts_with("Monitoring fakehost — ")
                && s.contains(&format!("; {host}: refused ({why}; "))
        });
        assert!(get_layout(&w.conn, &w.service())
            .find("Start monitoring…")
            .is_some());
    }
    let refused = Instant::now();

    // Meanwhile, `remote setup` on the same host: the wrong key, then sudo not set up...
    let (code, out) = setup(&remote, &wrong_key, &remote.helper);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("ssh authentication failed: "), "{out}");
    let (code, out) = setup(&remote, &target, &remote.helper);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains(&format!("ok, logged in as {}", remote.user)),
        "{out}"
    );
    assert!(out.contains(&format!("ok, {}", remote.helper)), "{out}");
    assert!(out.contains("sudo: a password is required"), "{out}");
    // ...which prints the one line, pinned to the invocation; visudo takes it as it is...
    let line = out
        .lines()
        .find(|l| l.contains("NOPASSWD"))
        .unwrap_or_else(|| panic!("no sudoers line: {out}"))
        .trim()
        .to_string();
    assert_eq!(line, remote.line_for(&remote.helper));
    remote.allow(&line);
    // ...and with it the host is ready.
    let (code, out) = setup(&remote, &target, &remote.helper);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains(&format!("{target} is ready to be watched.")),
        "{out}"
    );
    assert!(
        out.contains(&format!("helper = \"{}\"", remote.helper)),
        "{out}"
    );

    // None was tried again on its own.
    let window = refused + Duration::from_secs(10);
    std::thread::sleep(window.saturating_duration_since(Instant::now()));
    for (w, host, _) in &cases {
        let told: Vec<String> = w.all().into_iter().map(|n| n.body).collect();
        assert_eq!(
            w.ssh_runs().len(),
            1,
            "{host}: {:?} {told:#?}",
            w.ssh_runs()
        );
    }
    // Fixed, the host is watched once the person asks.
    let (w, _, _) = &cases[1];
    let service = w.service();
    let item = get_layout(&w.conn, &service)
        .find("Start monitoring…")
        .map(|m| m.id)
        .expect("Start monitoring…");
    click(&w.conn, &service, item);
    w.status(|s| s.starts_with(&format!("Monitoring fakehost, {HOST} (")));
    assert_eq!(w.ssh_runs().len(), 2, "{:?}", w.ssh_runs());
    assert_eq!(remote.helpers(&remote.helper).len(), 1);
}
