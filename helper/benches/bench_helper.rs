//! The helper's benchmark: `cargo bench -p conntrack-tray-helper` (as root; the cargo runner
//! asks sudo). It builds its own network namespaces, like the tests, and prints a Markdown
//! table for the README:
//!
//! a. events delivered vs flows created for a 50,000-flow UDP burst, side by side with
//!    `conntrack -E -e NEW` on the same burst when `conntrack` is installed;
//! b. latency from `connect()` to the JSON line (median and p99);
//! c. attribution rate: short-lived curls, bash `/dev/tcp` one-shots, connects to a closed
//!    port, and long-lived connections;
//! d. the helper's CPU time per event and peak RSS, and conntrack's;
//! f. attribution cost while one process holds 10,000 sockets (`BENCH_ONLY=sockets`): the
//!    per-flow lookup time of the library's attributor (median, p99), and the real helper's
//!    CPU per flow beside it.
//!
//! The binary also serves as its own traffic generator: run with a first argument of
//! `udp-burst`, `connect-series`, `hold-sockets` or `lookup-series` it sends traffic, holds
//! sockets or times lookups instead (re-executed inside a namespace).

#![allow(clippy::expect_used, clippy::unwrap_used)] // a benchmark that cannot set up must stop

#[path = "../tests/common/mod.rs"]
mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{config_file, Helper, Net};
use serde_json::Value;

const BURST: u32 = 50_000;

fn now_us() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

/// Traffic generators, run inside a namespace by re-executing this binary.
fn generator(args: &[String]) -> bool {
    match args.first().map(String::as_str) {
        Some("udp-burst") => {
            let dst: std::net::IpAddr = args[1].parse().expect("ip");
            let n: u32 = args[2].parse().expect("count");
            // One socket per 50,000 ports, so every datagram is a new flow.
            let socks: Vec<UdpSocket> = (0..n.div_ceil(50_000))
                .map(|_| UdpSocket::bind("0.0.0.0:0").expect("bind"))
                .collect();
            let start = Instant::now();
            for i in 0..n {
                let port = 10_000 + (i % 50_000) as u16;
                let s = &socks[(i / 50_000) as usize];
                let _ = s.send_to(b"x", SocketAddr::new(dst, port));
            }
            println!("sent {n} {}", start.elapsed().as_secs_f64());
            let _ = std::io::stdout().flush();
            // Keep the socket open while the helper attributes the burst.
            std::thread::sleep(Duration::from_secs(60));
            true
        }
        Some("connect-series") => {
            let dst: SocketAddr = args[1].parse().expect("addr");
            let n: u32 = args[2].parse().expect("count");
            let gap = Duration::from_millis(args[3].parse().expect("ms"));
            let mut held = Vec::new();
            for _ in 0..n {
                let t = now_us();
                let s = TcpStream::connect(dst).expect("connect");
                println!("{} {}", s.local_addr().expect("addr").port(), t);
                held.push(s);
                std::thread::sleep(gap);
            }
            let _ = std::io::stdout().flush();
            true
        }
        Some("hold-sockets") => {
            hold_sockets(args[1].parse().expect("count"), args[2] == "bound");
            true
        }
        Some("lookup-series") => {
            lookup_series(
                args[1].parse().expect("ip"),
                args[2].parse().expect("ip"),
                args[3].parse().expect("count"),
                args[4].parse().expect("held"),
                args[5] == "bound",
            );
            true
        }
        _ => false,
    }
}

/// Opens `n` UDP sockets (bound to ports when `bound`), says "ready", and holds them until its
/// stdin closes: the process with thousands of sockets that every /proc scan must get past.
fn hold_sockets(n: usize, bound: bool) {
    use rustix::process::{getrlimit, setrlimit, Resource, Rlimit};
    let want = n as u64 + 64;
    let cur = getrlimit(Resource::Nofile);
    let hard = cur.maximum.map_or(want, |h| h.max(want));
    setrlimit(
        Resource::Nofile,
        Rlimit {
            current: Some(want),
            maximum: Some(hard),
        },
    )
    .expect("raise RLIMIT_NOFILE");
    let held: Vec<UdpSocket> = (0..n)
        .map(|_| {
            if bound {
                UdpSocket::bind("0.0.0.0:0").expect("bind")
            } else {
                // An unbound datagram socket: in no table of the kernel's, only in /proc.
                let fd = rustix::net::socket(
                    rustix::net::AddressFamily::INET,
                    rustix::net::SocketType::DGRAM,
                    None,
                )
                .expect("socket");
                UdpSocket::from(fd)
            }
        })
        .collect();
    println!("ready {}", held.len());
    let _ = std::io::stdout().flush();
    let mut sink = String::new();
    let _ = std::io::stdin().read_line(&mut sink);
}

/// Sends `n` UDP datagrams from `src`, each from a fresh socket to its own port of `dst`, and
/// times the library's attribution of each flow right after the send: once as the pipeline
/// does it, once as the reader's early attributor (scan limit 64). Prints one line a flow:
/// `port pipeline_us early_us pipeline_pid early_pid`.
fn lookup_series(src: std::net::IpAddr, dst: std::net::IpAddr, n: u16, held: usize, bound: bool) {
    use conntrack_tray_helper::attribution::procfs::ProcIndex;
    use conntrack_tray_helper::attribution::sock_diag::SockDiag;
    use conntrack_tray_helper::attribution::{Attributor, SocketAttributor};
    use conntrack_tray_helper::direction::Sides;
    use conntrack_tray_helper::flow::{Direction, Proto, Tuple};

    // The holder starts after this process, so a newest-first scan meets it first.
    let me = std::env::current_exe().expect("exe");
    let mut holder = Command::new(me)
        .args([
            "hold-sockets",
            &held.to_string(),
            if bound { "bound" } else { "unbound" },
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("holder");
    let mut line = String::new();
    BufReader::new(holder.stdout.take().expect("stdout"))
        .read_line(&mut line)
        .expect("holder ready");
    assert!(line.starts_with("ready"), "holder: {line:?}");
    println!("ready {}", holder.id());
    let _ = std::io::stdout().flush();
    std::thread::sleep(Duration::from_millis(300));

    let mut pipeline =
        SocketAttributor::new(SockDiag::open().expect("sock_diag"), ProcIndex::new());
    let mut early = SocketAttributor::new(SockDiag::open().expect("sock_diag"), ProcIndex::new());
    early.processes.set_scan_limit(Some(64));
    let mut out = std::io::stdout().lock();
    for i in 0..n {
        let s = UdpSocket::bind(SocketAddr::new(src, 0)).expect("bind");
        let dport = 20_000 + i;
        let _ = s.send_to(b"x", SocketAddr::new(dst, dport));
        let sport = s.local_addr().expect("addr").port();
        let socket = Tuple {
            proto: Proto::Udp,
            src,
            dst,
            sport,
            dport,
            icmp: None,
        };
        let sides = Sides {
            direction: Direction::Outbound,
            socket,
            local_ip: src,
            local_port: sport,
            remote_ip: dst,
            remote_port: dport,
        };
        let t = Instant::now();
        let p = pipeline.attribute(&sides);
        let pipe_us = t.elapsed().as_secs_f64() * 1e6;
        let t = Instant::now();
        let e = early.attribute(&sides);
        let early_us = t.elapsed().as_secs_f64() * 1e6;
        let pid = |a: Option<conntrack_tray_helper::attribution::Attribution>| {
            a.map_or(0, |a| a.process.pid)
        };
        writeln!(
            out,
            "{dport} {pipe_us:.1} {early_us:.1} {} {}",
            pid(p),
            pid(e)
        )
        .expect("out");
        // Apart, so the helper beside handles each flow on its own, as it would a program's.
        std::thread::sleep(Duration::from_millis(10));
    }
    // The same lookups with the helper quiet: fresh bound sockets that send nothing, so no
    // flow reaches the helper and the two cores are the lookup's. Lines `q pipeline_us pid`.
    for i in 0..n {
        let s = UdpSocket::bind(SocketAddr::new(src, 0)).expect("bind");
        let sport = s.local_addr().expect("addr").port();
        let dport = 40_000 + i;
        let sides = Sides {
            direction: Direction::Outbound,
            socket: Tuple {
                proto: Proto::Udp,
                src,
                dst,
                sport,
                dport,
                icmp: None,
            },
            local_ip: src,
            local_port: sport,
            remote_ip: dst,
            remote_port: dport,
        };
        let t = Instant::now();
        let p = pipeline.attribute(&sides);
        let us = t.elapsed().as_secs_f64() * 1e6;
        writeln!(out, "q {us:.1} {}", p.map_or(0, |a| a.process.pid)).expect("out");
        std::thread::sleep(Duration::from_millis(2));
    }
    drop(out);
    drop(holder.stdin.take());
    let _ = holder.wait();
}

fn proc_cpu_secs(pid: u32) -> f64 {
    stat_cpu_secs(&std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default())
}

/// utime + stime of a process's or thread's `stat` text, in seconds.
fn stat_cpu_secs(stat: &str) -> f64 {
    let after = stat.rsplit(')').next().unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse().ok()).unwrap_or(0.0);
    ticks / 100.0
}

/// CPU seconds of each thread of `pid`, by thread name (threads of one name summed).
fn thread_cpu_secs(pid: u32) -> std::collections::BTreeMap<String, f64> {
    let mut out = std::collections::BTreeMap::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for t in tasks.flatten() {
        let stat = std::fs::read_to_string(t.path().join("stat")).unwrap_or_default();
        let name = stat
            .split_once('(')
            .and_then(|(_, r)| r.rsplit_once(')'))
            .map(|(n, _)| n.to_string())
            .unwrap_or_default();
        *out.entry(name).or_insert(0.0) += stat_cpu_secs(&stat);
    }
    out
}

fn peak_rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

struct Burst {
    created: u32,
    rate: f64,
    helper_seen: u64,
    helper_lost: u64,
    helper_attributed: u64,
    /// CPU seconds spent from the start of the burst to its last line; the reader thread's
    /// share apart.
    helper_cpu: f64,
    reader_cpu: f64,
    helper_rss: u64,
    conntrack_seen: Option<u64>,
    conntrack_cpu: f64,
    conntrack_rss: u64,
    /// From the generator's last datagram to the helper's last line.
    drained_ms: f64,
}

fn burst(flows: u32, with_conntrack: bool) -> Burst {
    let net = Net::new();
    let (_d, cfg) =
        config_file("[monitor]\nprotocols = [\"all\"]\n[filter]\nrepeat_after_secs = 0\n");
    let h = Helper::start(&net.a, &["--config", cfg.to_str().unwrap()]);
    let ct = with_conntrack.then(|| {
        // Line-buffered, so every event it shows is counted even when it is stopped.
        let mut child = Net::cmd(
            &net.a,
            &[
                "stdbuf",
                "-oL",
                "conntrack",
                "-E",
                "-e",
                "NEW",
                "-p",
                "udp",
                "-b",
                "33554432",
            ],
        )
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("conntrack -E");
        let stdout = child.stdout.take().expect("stdout");
        let dst = format!("dst={}", net.b4());
        let counter = std::thread::spawn(move || {
            BufReader::new(stdout)
                .lines()
                .map_while(Result::ok)
                .filter(|l| l.contains(&dst))
                .count() as u64
        });
        (child, counter)
    });
    std::thread::sleep(Duration::from_millis(500));
    // CPU from here on only: starting up (BTF, nft, the first /proc scan) is not per event.
    let threads_before = thread_cpu_secs(h.pid());
    let ct_before = ct
        .as_ref()
        .map(|(c, _)| proc_cpu_secs(c.id()))
        .unwrap_or(0.0);
    let me = std::env::current_exe().expect("exe");
    let mut gen = Net::cmd(
        &net.a,
        &[
            me.to_str().unwrap(),
            "udp-burst",
            &net.b4(),
            &flows.to_string(),
        ],
    )
    .stdout(Stdio::piped())
    .spawn()
    .expect("generator");
    let mut line = String::new();
    BufReader::new(gen.stdout.take().unwrap())
        .read_line(&mut line)
        .expect("sent line");
    let secs: f64 = line
        .split_whitespace()
        .nth(2)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1.0);

    let b4 = net.b4();
    let (mut seen, mut lost, mut attributed) = (0u64, 0u64, 0u64);
    let mut last_change = Instant::now();
    let sent_at = Instant::now();
    let mut last_line = sent_at;
    while last_change.elapsed() < Duration::from_secs(3) && seen + lost < u64::from(flows) {
        if let Ok(v) = h.lines.recv_timeout(Duration::from_millis(200)) {
            if v["type"] == "connection" && v["proto"] == "udp" && v["remote_ip"] == b4.as_str() {
                seen += 1;
                if !v["process"].is_null() {
                    attributed += 1;
                }
            } else if v["type"] == "lost" {
                lost += v["count"].as_u64().unwrap_or(0);
            }
            last_change = Instant::now();
            last_line = last_change;
        }
    }
    let threads_after = thread_cpu_secs(h.pid());
    let spent = |name: Option<&str>| -> f64 {
        threads_after
            .iter()
            .filter(|(n, _)| name.is_none_or(|want| n.as_str() == want))
            .map(|(n, after)| after - threads_before.get(n).copied().unwrap_or(0.0))
            .sum()
    };
    let (helper_cpu, reader_cpu) = (spent(None), spent(Some("ct-reader")));
    let helper_rss = peak_rss_kib(h.pid());
    let mut out = Burst {
        created: flows,
        rate: f64::from(flows) / secs,
        drained_ms: last_line.saturating_duration_since(sent_at).as_secs_f64() * 1000.0,
        helper_seen: seen,
        helper_lost: lost,
        helper_attributed: attributed,
        helper_cpu,
        reader_cpu,
        helper_rss,
        conntrack_seen: None,
        conntrack_cpu: 0.0,
        conntrack_rss: 0,
    };
    if let Some((ct, counter)) = ct {
        std::thread::sleep(Duration::from_secs(1));
        out.conntrack_cpu = proc_cpu_secs(ct.id()) - ct_before;
        out.conntrack_rss = peak_rss_kib(ct.id());
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(ct.id() as i32),
            nix::sys::signal::Signal::SIGINT,
        );
        let mut ct = ct;
        let _ = ct.wait();
        out.conntrack_seen = counter.join().ok();
    }
    let _ = gen.kill();
    let _ = gen.wait();
    drop(h);
    out
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// connect() → JSON line, for `n` held connections `gap_ms` apart.
fn latency(n: u32, gap_ms: u64) -> Vec<f64> {
    let mut net = Net::new();
    net.serve(&net.b.clone(), "0.0.0.0", &[8080]);
    let (_d, cfg) = config_file("[filter]\nrepeat_after_secs = 0\n");
    let h = Helper::start(&net.a, &["--config", cfg.to_str().unwrap()]);
    let me = std::env::current_exe().expect("exe");
    let gen = Net::cmd(
        &net.a,
        &[
            me.to_str().unwrap(),
            "connect-series",
            &format!("{}:8080", net.b4()),
            &n.to_string(),
            &gap_ms.to_string(),
        ],
    )
    .stdout(Stdio::piped())
    .spawn()
    .expect("generator");
    let mut arrived = std::collections::HashMap::new();
    let end = Instant::now() + Duration::from_millis(n as u64 * gap_ms + 5000);
    while arrived.len() < n as usize && Instant::now() < end {
        if let Ok(v) = h.lines.recv_timeout(Duration::from_millis(100)) {
            if v["type"] == "connection" && v["remote_port"] == 8080 {
                arrived.insert(v["local_port"].as_u64().unwrap_or(0), now_us());
            }
        }
    }
    let out = gen.wait_with_output().expect("generator output");
    let mut lat: Vec<f64> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut it = l.split_whitespace();
            let port: u64 = it.next()?.parse().ok()?;
            let t: u64 = it.next()?.parse().ok()?;
            Some((arrived.get(&port)? - t) as f64 / 1000.0)
        })
        .collect();
    lat.sort_by(|a, b| a.partial_cmp(b).unwrap());
    lat
}

struct Rate {
    attributed: usize,
    reported: usize,
    tried: usize,
    right_pid: bool,
}

/// Runs `n` clients one after another (each a command in namespace a); counts how many of
/// their flows were reported and attributed, and checks no wrong pid was named.
fn attribution(label: &str, n: usize, server: bool, client: impl Fn(&Net) -> Vec<String>) -> Rate {
    let mut net = Net::new();
    if server {
        net.serve(&net.b.clone(), "0.0.0.0", &[8080]);
    }
    let (_d, cfg) =
        config_file("[monitor]\nprotocols = [\"all\"]\n[filter]\nrepeat_after_secs = 0\n");
    let h = Helper::start(&net.a, &["--config", cfg.to_str().unwrap()]);
    let mut pids = Vec::new();
    let argv = client(&net);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    for _ in 0..n {
        let mut c = Net::cmd(&net.a, &argv)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect(label);
        pids.push(u64::from(c.id()));
        let _ = c.wait();
    }
    let lines: Vec<Value> = h
        .collect(Duration::from_secs(2))
        .into_iter()
        .filter(|v| v["type"] == "connection" && v["remote_port"] == 8080)
        .collect();
    let named: Vec<u64> = lines
        .iter()
        .filter_map(|v| v["process"]["pid"].as_u64())
        .collect();
    Rate {
        attributed: named.len(),
        reported: lines.len(),
        tried: n,
        right_pid: named.iter().all(|p| pids.contains(p)),
    }
}

/// The (f) row: per-flow lookup times with a process holding `held` sockets beside.
struct HeldCost {
    pipeline_us: Vec<f64>,
    early_us: Vec<f64>,
    /// The pipeline's lookups again, with the helper beside quiet.
    quiet_us: Vec<f64>,
    quiet_right: usize,
    /// Flows the library named with the series' own pid, of `tried`.
    lib_right: usize,
    tried: usize,
    reported: usize,
    attributed: usize,
    wrong: usize,
    helper_cpu: f64,
    reader_cpu: f64,
}

fn held_cost(held: usize, bound: bool, n: u16) -> HeldCost {
    let net = Net::new();
    let (_d, cfg) =
        config_file("[monitor]\nprotocols = [\"all\"]\n[filter]\nrepeat_after_secs = 0\n");
    let h = Helper::start(&net.a, &["--config", cfg.to_str().unwrap()]);
    let me = std::env::current_exe().expect("exe");
    let mut gen = Net::cmd(
        &net.a,
        &[
            me.to_str().unwrap(),
            "lookup-series",
            &net.a4(),
            &net.b4(),
            &n.to_string(),
            &held.to_string(),
            if bound { "bound" } else { "unbound" },
        ],
    )
    .stdout(Stdio::piped())
    .spawn()
    .expect("generator");
    let series_pid = u64::from(gen.id());
    let mut out = BufReader::new(gen.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).expect("ready line");
    assert!(line.starts_with("ready"), "generator: {line:?}");
    let before = thread_cpu_secs(h.pid());
    let (mut pipeline_us, mut early_us, mut lib_right) = (Vec::new(), Vec::new(), 0);
    let (mut quiet_us, mut quiet_right) = (Vec::new(), 0);
    for l in out.lines().map_while(Result::ok) {
        let f: Vec<&str> = l.split_whitespace().collect();
        if f.len() == 3 && f[0] == "q" {
            quiet_us.push(f[1].parse().unwrap_or(f64::NAN));
            if f[2].parse::<u64>().ok() == Some(series_pid) {
                quiet_right += 1;
            }
            continue;
        }
        if f.len() < 5 {
            continue;
        }
        pipeline_us.push(f[1].parse().unwrap_or(f64::NAN));
        early_us.push(f[2].parse().unwrap_or(f64::NAN));
        if f[3].parse::<u64>().ok() == Some(series_pid) {
            lib_right += 1;
        }
    }
    let _ = gen.wait();
    let b4 = net.b4();
    let ports = 20_000..20_000 + u64::from(n);
    let (mut reported, mut attributed, mut wrong) = (0, 0, 0);
    let mut last = Instant::now();
    // The helper may be behind: wait until every flow is in, or 3 s without a line.
    while reported < n as usize && last.elapsed() < Duration::from_secs(3) {
        let Ok(v) = h.lines.recv_timeout(Duration::from_millis(200)) else {
            continue;
        };
        last = Instant::now();
        let port = v["remote_port"].as_u64().unwrap_or(0);
        if v["type"] != "connection" || v["remote_ip"] != b4.as_str() || !ports.contains(&port) {
            continue;
        }
        reported += 1;
        match v["process"]["pid"].as_u64() {
            Some(p) if p == series_pid => attributed += 1,
            Some(_) => wrong += 1,
            None => {}
        }
    }
    let after = thread_cpu_secs(h.pid());
    let spent = |name: Option<&str>| -> f64 {
        after
            .iter()
            .filter(|(k, _)| name.is_none_or(|want| k.as_str() == want))
            .map(|(k, a)| a - before.get(k).copied().unwrap_or(0.0))
            .sum()
    };
    pipeline_us.sort_by(|a, b| a.partial_cmp(b).unwrap());
    early_us.sort_by(|a, b| a.partial_cmp(b).unwrap());
    quiet_us.sort_by(|a, b| a.partial_cmp(b).unwrap());
    HeldCost {
        quiet_us,
        quiet_right,
        tried: pipeline_us.len(),
        pipeline_us,
        early_us,
        lib_right,
        reported,
        attributed,
        wrong,
        helper_cpu: spent(None),
        reader_cpu: spent(Some("ct-reader")),
    }
}

fn held_row(label: &str, c: &HeldCost) -> String {
    let per = |cpu: f64| cpu * 1e3 / c.tried.max(1) as f64;
    format!(
        "| (f) attribution with a process holding 10,000 sockets ({label}) | lookup median {:.0} µs, p99 {:.0} µs, right pid {}/{} (early attributor: median {:.0} µs, p99 {:.0} µs); helper quiet: median {:.0} µs, p99 {:.0} µs, right pid {}/{}; helper beside: {:.2} ms CPU a flow (reader thread {:.2} ms), reported {}/{}, attributed {}, wrong pids {} | |",
        percentile(&c.pipeline_us, 0.5),
        percentile(&c.pipeline_us, 0.99),
        c.lib_right,
        c.tried,
        percentile(&c.early_us, 0.5),
        percentile(&c.early_us, 0.99),
        percentile(&c.quiet_us, 0.5),
        percentile(&c.quiet_us, 0.99),
        c.quiet_right,
        c.quiet_us.len(),
        per(c.helper_cpu),
        per(c.reader_cpu),
        c.reported,
        c.tried,
        c.attributed,
        c.wrong,
    )
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    if generator(&args) {
        return;
    }
    if !common::root_or_skip("bench_helper") {
        return;
    }
    // Every part makes namespaces (ip) and starts helpers (nft); the latency part and the
    // attribution clients run the test peer (python3), curl and bash. `conntrack` is only the
    // comparison beside the burst: without it that column says "not installed".
    let only = std::env::var("BENCH_ONLY").ok();
    let tools: &[&str] = match only.as_deref() {
        Some("latency") => &["ip", "nft", "python3"],
        Some("burst") | Some("sockets") => &["ip", "nft"],
        _ => &["ip", "nft", "python3", "curl", "bash"],
    };
    if !common::require("bench_helper", tools) {
        return;
    }
    let have_conntrack = Command::new("conntrack")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if only.as_deref() == Some("sockets") {
        for (label, bound) in [("unbound", false), ("bound UDP", true)] {
            eprintln!("10,000 sockets held ({label})...");
            println!("{}", held_row(label, &held_cost(10_000, bound, 200)));
        }
        return;
    }
    if only.as_deref() == Some("latency") {
        let lat = latency(200, 5);
        println!(
            "latency: median {:.3} ms, p99 {:.3} ms ({} measured)",
            percentile(&lat, 0.5),
            percentile(&lat, 0.99),
            lat.len()
        );
        return;
    }
    eprintln!("burst ({BURST} UDP flows)...");
    let b = burst(BURST, have_conntrack);
    if only.as_deref() == Some("burst") {
        let per = |cpu: f64, n: u64| cpu * 1e6 / n.max(1) as f64;
        println!(
            "burst at {:.0} flows/s: {}/{} shown, {} lost; helper {:.1} µs/event (reader {:.1}); conntrack -E {}",
            b.rate,
            b.helper_seen,
            b.created,
            b.helper_lost,
            per(b.helper_cpu, b.helper_seen),
            per(b.reader_cpu, b.helper_seen),
            b.conntrack_seen
                .map(|c| format!("{c} shown, {:.1} µs/event", per(b.conntrack_cpu, c)))
                .unwrap_or_default()
        );
        return;
    }
    eprintln!("burst without conntrack -E running beside...");
    let solo = burst(BURST, false);
    eprintln!("flood (100,000 UDP flows)...");
    let flood = burst(100_000, false);
    eprintln!("latency...");
    let lat = latency(200, 5);
    eprintln!("attribution...");
    let curl = attribution("curl", 200, true, |n| {
        [
            "curl",
            "-s",
            "-m",
            "0.05",
            &format!("http://{}:8080/", n.b4()),
        ]
        .map(String::from)
        .to_vec()
    });
    // The one-shots race the reader for the CPU, so they vary: three rounds, each shown.
    let bash: Vec<Rate> = (0..3)
        .map(|_| {
            attribution("bash", 100, true, |n| {
                ["bash", "-c", &format!("echo x > /dev/tcp/{}/8080", n.b4())]
                    .map(String::from)
                    .to_vec()
            })
        })
        .collect();
    let closed = attribution("closed", 50, false, |n| {
        ["curl", "-s", "-m", "1", &format!("http://{}:8080/", n.b4())]
            .map(String::from)
            .to_vec()
    });
    let udp = attribution("udp", 100, false, |n| {
        ["bash", "-c", &format!("echo x > /dev/udp/{}/8080", n.b4())]
            .map(String::from)
            .to_vec()
    });
    let long = attribution("long", 20, true, |n| {
        let script = common::peer_script().display().to_string();
        [
            "python3".to_string(),
            script,
            "connect".into(),
            n.b4(),
            "8080".into(),
            "0.5".into(),
        ]
        .to_vec()
    });

    eprintln!("10,000 sockets held...");
    let held = held_cost(10_000, true, 200);

    let pct = |a: u64, b: u64| 100.0 * a as f64 / b.max(1) as f64;
    println!("| measure | conntrack-tray-helper | conntrack -E -e NEW (1.4.7) |");
    println!("|---|---|---|");
    println!(
        "| (a) 50,000-flow UDP burst at {:.0} flows/s, both listening: events shown | {} ({:.1}%), lost records: {} | {} |",
        b.rate,
        b.helper_seen,
        pct(b.helper_seen, u64::from(b.created)),
        b.helper_lost,
        b.conntrack_seen.map(|c| format!("{c} ({:.1}%)", pct(c, u64::from(b.created)))).unwrap_or_else(|| "not installed".into())
    );
    println!(
        "| (a) same burst, helper alone ({:.0} flows/s) | {} ({:.1}%), lost records: {}, attributed: {} | |",
        solo.rate,
        solo.helper_seen,
        pct(solo.helper_seen, u64::from(solo.created)),
        solo.helper_lost,
        solo.helper_attributed
    );
    println!("| (b) connect() → JSON line, 200 connections 5 ms apart | median {:.3} ms, p99 {:.3} ms ({} measured) | |", percentile(&lat, 0.5), percentile(&lat, 0.99), lat.len());
    let row = |r: &Rate| {
        format!(
            "{}/{} ({:.0}%), reported {}/{}, wrong pids: {}",
            r.attributed,
            r.tried,
            pct(r.attributed as u64, r.tried as u64),
            r.reported,
            r.tried,
            if r.right_pid { "none" } else { "SOME" }
        )
    };
    println!(
        "| (c) attribution, short-lived curl (exits ≤ 50 ms after connect) | {} | no attribution |",
        row(&curl)
    );
    println!(
        "| (c) attribution, bash /dev/tcp one-shot, three rounds | {} | no attribution |",
        bash.iter().map(&row).collect::<Vec<_>>().join("; ")
    );
    println!(
        "| (c) attribution, connect to a closed port (RST at once) | {} | no attribution |",
        row(&closed)
    );
    println!(
        "| (c) attribution, bash /dev/udp one-shot (connect, send, exit) | {} | no attribution |",
        row(&udp)
    );
    println!(
        "| (c) attribution, long-lived connection | {} | no attribution |",
        row(&long)
    );
    println!(
        "| (d) CPU per event during the burst | {:.1} µs ({:.2} s for {} events, incl. attribution; reader thread {:.1} µs) | {} |",
        b.helper_cpu * 1e6 / b.helper_seen.max(1) as f64,
        b.helper_cpu,
        b.helper_seen,
        b.reader_cpu * 1e6 / b.helper_seen.max(1) as f64,
        b.conntrack_seen.map(|c| format!("{:.1} µs ({:.2} s for {c} events)", b.conntrack_cpu * 1e6 / c.max(1) as f64, b.conntrack_cpu)).unwrap_or_default()
    );
    println!(
        "| (d) peak RSS | {:.1} MiB | {} |",
        b.helper_rss as f64 / 1024.0,
        if b.conntrack_seen.is_some() {
            format!("{:.1} MiB", b.conntrack_rss as f64 / 1024.0)
        } else {
            String::new()
        }
    );
    println!(
        "| (e) 100,000-flow flood at {:.0} flows/s | reported {}, lost {} (together {} of {}), peak RSS {:.1} MiB, last line {:.0} ms after the last datagram | |",
        flood.rate,
        flood.helper_seen,
        flood.helper_lost,
        flood.helper_seen + flood.helper_lost,
        flood.created,
        flood.helper_rss as f64 / 1024.0,
        flood.drained_ms
    );
    println!("{}", held_row("bound UDP", &held));
}
