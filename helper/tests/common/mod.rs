//! Shared setup of the namespace tests: two network namespaces joined by a veth pair, test
//! peers started inside them, and the real helper with its JSON stream.
//!
//! Nothing here touches the host's own namespace: every address lives on the veth pair or on
//! loopback inside the test namespaces, and every process started is killed by pid on drop.
//! The tests need root; without it they skip, except under `CI=true`, where that is a failure.
//! So it is with the programs they run ([`require`]): `ip` for every namespace, `nft` for every
//! helper started here (it adds its nftables table), `python3` for the test peers.

#![allow(dead_code)]

pub mod container;
pub mod nobody;
mod require;
#[allow(unused_imports)] // a target that includes both modules uses one of them
pub use require::require;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{unbounded, Receiver};
use serde_json::Value;

/// The helper binary: cargo's own path for it in the helper's tests and benches, else (from
/// the applet's tests, which include this module) the one built beside the test binary.
pub fn helper_bin() -> PathBuf {
    match option_env!("CARGO_BIN_EXE_conntrack-tray-helper") {
        Some(p) => PathBuf::from(p),
        None => std::env::current_exe()
            .ok()
            .and_then(|e| Some(e.parent()?.parent()?.join("conntrack-tray-helper")))
            .unwrap_or_else(|| PathBuf::from("conntrack-tray-helper")),
    }
}

/// True when the tests can run; panics under CI=true when they cannot.
pub fn root_or_skip(test: &str) -> bool {
    if nix::unistd::Uid::effective().is_root() {
        return true;
    }
    if std::env::var("CI").as_deref() == Ok("true") {
        panic!("{test} needs root, and under CI=true it must run");
    }
    eprintln!("SKIPPED {test}: needs root (network namespaces, conntrack events)");
    false
}

/// A `kB` field of `/proc/PID/status` (`VmRSS`, `VmHWM`), when the process is there.
pub fn status_kib(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
}

/// utime + stime of a process's or thread's `stat` text, in seconds.
pub fn stat_cpu_secs(stat: &str) -> f64 {
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// CPU seconds process `pid` has used; 0 when it is gone.
pub fn cpu_secs(pid: u32) -> f64 {
    stat_cpu_secs(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default())
}

/// Context switches of each thread of `pid` so far (voluntary and not, from
/// `/proc/PID/task/*/status`), by thread name, threads of one name summed: every switch is a
/// time the thread went to sleep or was put aside, so the growth over an idle period counts
/// its wakeups. Empty when the process is gone.
pub fn wakeups(pid: u32) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let Ok(status) = std::fs::read_to_string(t.path().join("status")) else {
            continue; // the thread ended meanwhile
        };
        let field = |name: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
        };
        let switches: u64 = ["voluntary_ctxt_switches", "nonvoluntary_ctxt_switches"]
            .iter()
            .filter_map(|f| field(f)?.parse::<u64>().ok())
            .sum();
        let name = field("Name").unwrap_or("?").to_string();
        *out.entry(name).or_insert(0) += switches;
    }
    out
}

/// The wakeups per thread name between two [`wakeups`] readings (a thread started meanwhile
/// counts from zero).
pub fn wakeups_between(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
) -> BTreeMap<String, u64> {
    after
        .iter()
        .map(|(name, n)| {
            let was = before.get(name).copied().unwrap_or(0);
            (name.clone(), n.saturating_sub(was))
        })
        .collect()
}

/// The file the tests' `python3` really runs (through pyenv's shims, say), as the helper
/// reports and verifies it.
pub fn python_exe() -> String {
    let out = Command::new("python3")
        .args([
            "-c",
            "import os, sys; print(os.path.realpath(sys.executable))",
        ])
        .output()
        .expect("run python3");
    String::from_utf8(out.stdout)
        .expect("utf-8")
        .trim()
        .to_string()
}

pub fn peer_script() -> PathBuf {
    let here = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let own = here.join("tests/tools/peer.py");
    if own.exists() {
        own
    } else {
        here.join("helper/tests/tools/peer.py")
    }
}

/// Runs a set-up command to its end; it must succeed.
pub fn run(args: &[&str]) {
    let out = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {args:?}: {e}"));
    assert!(
        out.status.success(),
        "{args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

static NEXT: AtomicU32 = AtomicU32::new(0);

/// Two namespaces, `a` (where the helper runs) and `b` (the outside world), on a veth pair:
/// a = 10.213.N.1/24 and fd13:N::1/64, b = 10.213.N.2/24 and fd13:N::2/64.
pub struct Net {
    pub a: String,
    pub b: String,
    pub n: u32,
    children: Vec<Child>,
}

impl Net {
    pub fn new() -> Net {
        // Subnets only need to differ within one pair of namespaces, which are private to a
        // test; the counter keeps the names unique within this process.
        let n = NEXT.fetch_add(1, Ordering::SeqCst) % 250 + 1;
        let a = format!("ctt{}-{n}-a", std::process::id());
        let b = format!("ctt{}-{n}-b", std::process::id());
        run(&["ip", "netns", "add", &a]);
        run(&["ip", "netns", "add", &b]);
        let net = Net {
            a: a.clone(),
            b: b.clone(),
            n,
            children: Vec::new(),
        };
        run(&[
            "ip", "link", "add", "veth0", "netns", &a, "type", "veth", "peer", "name", "veth0",
            "netns", &b,
        ]);
        for (ns, host) in [(&a, 1), (&b, 2)] {
            run(&["ip", "-n", ns, "link", "set", "lo", "up"]);
            run(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("10.213.{n}.{host}/24"),
                "dev",
                "veth0",
            ]);
            run(&[
                "ip",
                "-n",
                ns,
                "addr",
                "add",
                &format!("fd13:{n:x}::{host}/64"),
                "dev",
                "veth0",
                "nodad",
            ]);
            run(&["ip", "-n", ns, "link", "set", "veth0", "up"]);
        }
        net
    }

    pub fn a4(&self) -> String {
        format!("10.213.{}.1", self.n)
    }
    pub fn b4(&self) -> String {
        format!("10.213.{}.2", self.n)
    }
    pub fn a6(&self) -> String {
        format!("fd13:{:x}::1", self.n)
    }
    pub fn b6(&self) -> String {
        format!("fd13:{:x}::2", self.n)
    }

    /// A command that runs `args` inside namespace `ns` (the pid is the program's: `ip netns
    /// exec` execs it).
    pub fn cmd(ns: &str, args: &[&str]) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", ns]).args(args);
        c
    }

    /// Runs `argv` in namespace `ns` `n` times, one after another, each to its end (output
    /// discarded); their pids, in order.
    pub fn run_each(ns: &str, argv: &[&str], n: usize) -> Vec<u64> {
        (0..n)
            .map(|_| {
                let mut c = Net::cmd(ns, argv)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .unwrap_or_else(|e| panic!("cannot run {argv:?}: {e}"));
                let pid = u64::from(c.id());
                let _ = c.wait();
                pid
            })
            .collect()
    }

    /// Starts a long-running process and keeps it to kill on drop.
    pub fn spawn(&mut self, mut c: Command) -> u32 {
        let child = c
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn");
        let pid = child.id();
        self.children.push(child);
        pid
    }

    /// Starts the test peer's servers in `ns` on `host` and waits until they listen.
    pub fn serve(&mut self, ns: &str, host: &str, ports: &[u16]) -> u32 {
        let mut args = vec!["serve".to_string(), host.to_string()];
        args.extend(ports.iter().map(|p| p.to_string()));
        let argv: Vec<&str> = args.iter().map(String::as_str).collect();
        self.start_peer(ns, &argv)
    }

    /// Starts a long-running test peer mode in `ns` and waits until it says "ready".
    pub fn start_peer(&mut self, ns: &str, mode: &[&str]) -> u32 {
        let script = peer_script();
        let script = script.display().to_string();
        let mut argv = vec!["python3", script.as_str()];
        argv.extend_from_slice(mode);
        let mut child = Net::cmd(ns, &argv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn server");
        let pid = child.id();
        let mut line = String::new();
        let stdout = child.stdout.take().expect("stdout");
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("server output");
        assert_eq!(line.trim(), "ready", "{mode:?} did not start");
        self.children.push(child);
        pid
    }

    /// Runs a peer client to completion; returns its pid and its first output line.
    pub fn client(&self, ns: &str, args: &[&str]) -> (u32, String) {
        let script = peer_script();
        let script = script.display().to_string();
        let mut argv = vec!["python3", script.as_str()];
        argv.extend_from_slice(args);
        let mut child = Net::cmd(ns, &argv)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn client");
        let pid = child.id();
        let mut line = String::new();
        if let Some(out) = child.stdout.take() {
            let _ = BufReader::new(out).read_line(&mut line);
        }
        let status = child.wait().expect("wait client");
        assert!(status.success(), "client {args:?} failed");
        (pid, line.trim().to_string())
    }
}

impl Net {
    /// Makes `server` the resolver of namespace `a`, as its resolv.conf says: `ip netns exec`
    /// mounts `/etc/netns/<a>/resolv.conf` over `/etc/resolv.conf` for what it runs there
    /// (the helper included). Call before starting the helper. Removed on drop.
    pub fn set_resolver(&self, server: &str) {
        let dir = PathBuf::from("/etc/netns").join(&self.a);
        std::fs::create_dir_all(&dir).expect("/etc/netns/<ns>");
        std::fs::write(dir.join("resolv.conf"), format!("nameserver {server}\n"))
            .expect("resolv.conf");
    }

    /// A second IPv4 address for namespace `b`: 10.213.N.`host`.
    pub fn add_b4(&self, host: u8) -> String {
        let ip = format!("10.213.{}.{host}", self.n);
        run(&[
            "ip",
            "-n",
            &self.b,
            "addr",
            "add",
            &format!("{ip}/24"),
            "dev",
            "veth0",
        ]);
        ip
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        for ns in [&self.a, &self.b] {
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
        let _ = std::fs::remove_dir_all(PathBuf::from("/etc/netns").join(&self.a));
    }
}

/// The real helper running in a namespace, with its JSON lines on a channel.
pub struct Helper {
    pub child: Child,
    stdin: Option<ChildStdin>,
    pub lines: Receiver<Value>,
    pub hello: Value,
    pub stderr: Receiver<String>,
}

impl Helper {
    /// Starts `conntrack-tray-helper --format json ARGS` in `ns` and waits for its hello.
    pub fn start(ns: &str, args: &[&str]) -> Helper {
        Helper::start_wrapped(ns, &[], args)
    }

    /// As [`Helper::start`], through `wrapper` (a command that runs its arguments).
    pub fn start_wrapped(ns: &str, wrapper: &[&str], args: &[&str]) -> Helper {
        let helper = helper_bin();
        let helper = helper.to_str().expect("utf-8 path");
        let mut argv = wrapper.to_vec();
        argv.extend_from_slice(&[helper, "--format", "json"]);
        argv.extend_from_slice(args);
        let mut child = Net::cmd(ns, &argv)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn helper");
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, lines) = unbounded();
        std::thread::spawn(move || {
            // As the applet reads: 1 MiB at a time (see its `READ_BYTES`).
            for line in BufReader::with_capacity(1 << 20, stdout).lines() {
                let Ok(line) = line else { return };
                let v: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("not JSON: {line:?}: {e}"));
                if tx.send(v).is_err() {
                    return;
                }
            }
        });
        let (etx, stderr_rx) = unbounded();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if etx.send(line).is_err() {
                    return;
                }
            }
        });
        let hello = lines
            .recv_timeout(Duration::from_secs(10))
            .expect("hello line");
        assert_eq!(hello["type"], "hello", "first line is the hello: {hello}");
        let stdin = child.stdin.take();
        Helper {
            child,
            stdin,
            lines,
            hello,
            stderr: stderr_rx,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().expect("stdin open");
        writeln!(stdin, "{line}").expect("write command");
        stdin.flush().expect("flush");
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// The next line matching `pred` within `timeout`; lines before it are dropped.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        let end = Instant::now() + timeout;
        loop {
            let left = end.checked_duration_since(Instant::now())?;
            match self.lines.recv_timeout(left) {
                Ok(v) if pred(&v) => return Some(v),
                Ok(_) => {}
                Err(_) => return None,
            }
        }
    }

    /// Every line that arrives within `period`.
    pub fn collect(&self, period: Duration) -> Vec<Value> {
        let end = Instant::now() + period;
        let mut out = Vec::new();
        while let Some(left) = end.checked_duration_since(Instant::now()) {
            match self.lines.recv_timeout(left) {
                Ok(v) => out.push(v),
                Err(_) => break,
            }
        }
        out
    }

    /// Waits for the helper to exit; `None` if it did not within `timeout`.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        let end = Instant::now() + timeout;
        while Instant::now() < end {
            if let Ok(Some(s)) = self.child.try_wait() {
                return Some(s);
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        None
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A connection line to this remote port.
/// The system's python, which `nobody` can run (a python under /root may not be).
/// How long a test waits for a line it expects.
pub const WAIT: Duration = Duration::from_secs(5);

/// The pid a connection line names, if any.
pub fn pid_of(v: &Value) -> Option<u64> {
    v["process"]["pid"].as_u64()
}

/// Runs `n` one-shot clients in `a`; returns their pids and the connection lines to `port`.
pub fn one_shots(
    net: &Net,
    h: &Helper,
    n: usize,
    argv: &[&str],
    port: u16,
) -> (Vec<u64>, Vec<Value>) {
    let pids = Net::run_each(&net.a, argv, n);
    let lines = h
        .collect(Duration::from_secs(2))
        .into_iter()
        .filter(|v| is_conn_to(port)(v))
        .collect();
    (pids, lines)
}

pub const PY: &str = "/usr/bin/python3";

/// The `connection` lines of a stream.
pub fn connections(lines: &[Value]) -> Vec<&Value> {
    lines.iter().filter(|v| v["type"] == "connection").collect()
}

/// The first connection to remote port `port`.
pub fn to_port(lines: &[Value], port: u16) -> Option<&Value> {
    connections(lines)
        .into_iter()
        .find(|v| v["remote_port"] == port)
}

pub fn is_conn_to(port: u16) -> impl Fn(&Value) -> bool {
    move |v| v["type"] == "connection" && v["remote_port"] == port
}

/// Error lines the helper wrote after its hello, e.g. a connect hook it could not load.
pub fn startup_errors(lines: &[serde_json::Value]) -> Vec<&serde_json::Value> {
    lines.iter().filter(|v| v["type"] == "error").collect()
}

/// The nftables tables of a namespace.
pub fn nft_tables(ns: &str) -> String {
    let out = Net::cmd(ns, &["nft", "list", "tables"])
        .output()
        .expect("nft");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// A config file in a fresh temporary directory.
pub fn config_file(toml: &str) -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("config.toml");
    std::fs::write(&path, toml).expect("write config");
    (dir, path)
}
