//! The helper's benchmark: `cargo bench -p conntrack-tray-helper` (as root; the cargo runner
//! asks sudo). It builds its own network namespaces, like the tests, and prints a Markdown
//! table for the README:
//!
//! a. events delivered vs flows created for a 50,000-flow UDP burst, side by side with
//!    `conntrack -E -e NEW` on the same burst when `conntrack` is installed;
//! b. latency from `connect()` to the JSON line (median and p99);
//! c. attribution rate: short-lived curls, bash `/dev/tcp` one-shots, connects to a closed
//!    port, UDP one-shots (connected and unconnected), and long-lived connections;
//! d. the helper's CPU time per event and peak RSS, and conntrack's;
//! e. a 100,000-flow flood;
//! f. what the kernel-side send records add to the cost of a UDP send;
//! g. what a caller can make the helper hold through its stdin (`abuse.rs`);
//! h. attribution cost while one process holds 10,000 sockets (`sockets.rs`): the per-flow
//!    lookup time of the library's attributor (median, p99), and the real helper's CPU per
//!    flow beside it;
//! i. wakeups of an idle helper, per thread, over 30 s with no connection (`idle.rs`);
//! j. exe and command line of one-shots with and without exec records, parent chains, a
//!    container's flows, pings (`processes.rs`);
//! k. what a connecting program pays per `connect()` with the helper's kernel programs, and
//!    their own run time (`processes.rs`).
//!
//! The binary also serves as its own traffic generator: run with a first argument of
//! `udp-burst`, `udp-same`, `connect-series`, `hold-sockets` or `lookup-series` it sends
//! traffic, holds sockets or times lookups instead (re-executed inside a namespace).
//! `BENCH_ONLY=latency|burst|udp-sendto|send-cost|abuse|sockets|idle|processes|costs` runs
//! one part alone (`costs`: what the kernel programs cost a connect and a fork, rows k, l).
//! `BENCH_BURST_FLOWS=N` makes the burst N flows long; `BENCH_THREADS=1` prints the CPU each
//! of the helper's threads spent in the burst.

#![allow(clippy::expect_used, clippy::unwrap_used)] // a benchmark that cannot set up must stop

#[path = "bench_helper/abuse.rs"]
mod abuse;
#[path = "bench_helper/burst.rs"]
mod burst;
#[path = "../tests/common/mod.rs"]
mod common;
#[path = "bench_helper/idle.rs"]
mod idle;
#[path = "bench_helper/processes.rs"]
mod processes;
#[path = "bench_helper/send_cost.rs"]
mod send_cost;
#[path = "bench_helper/sockets.rs"]
mod sockets;

use std::io::Write;
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use burst::burst;
use common::{config_file, Helper, Net};
use send_cost::{print_send_cost, send_cost};
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
        Some("udp-same") => {
            // The cost of a send, not of a flow: `n` datagrams to one address, on an
            // unconnected socket (sendto) or a connected one (send).
            let dst: SocketAddr = args[1].parse().expect("addr");
            let n: u32 = args[2].parse().expect("count");
            let connected = args.get(3).map(String::as_str) == Some("connected");
            let s =
                UdpSocket::bind(if dst.is_ipv4() { "0.0.0.0:0" } else { "[::]:0" }).expect("bind");
            if connected {
                s.connect(dst).expect("connect");
            }
            let start = Instant::now();
            for _ in 0..n {
                let _ = if connected {
                    s.send(b"x")
                } else {
                    s.send_to(b"x", dst)
                };
            }
            println!("{}", start.elapsed().as_nanos() as f64 / f64::from(n));
            true
        }
        Some("fork-cost") => {
            processes::fork_cost(args[1].parse().expect("count"));
            true
        }
        Some("connect-cost") => {
            processes::connect_cost(&args[1], args[2].parse().expect("count"));
            true
        }
        Some("hold-sockets") => {
            sockets::hold_sockets(args[1].parse().expect("count"), args[2] == "bound");
            true
        }
        Some("lookup-series") => {
            sockets::lookup_series(
                args[1].parse().expect("ip"),
                args[2].parse().expect("ip"),
                args[3].parse().expect("count"),
                args[4].parse().expect("held"),
                args[5] == "bound",
            );
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
        _ => false,
    }
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
        *out.entry(name).or_insert(0.0) += common::stat_cpu_secs(&stat);
    }
    out
}

fn peak_rss_kib(pid: u32) -> u64 {
    common::status_kib(pid, "VmHWM").unwrap_or(0)
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
    /// Events the helper said it lost (`lost` lines), which would explain a flow not reported.
    lost: u64,
}

/// Runs `n` clients one after another (each a command in namespace a); counts how many of
/// their flows were reported and attributed, and checks no wrong pid was named.
fn attribution(n: usize, server: bool, client: impl Fn(&Net) -> Vec<String>) -> Rate {
    let mut net = Net::new();
    if server {
        net.serve(&net.b.clone(), "0.0.0.0", &[8080]);
    }
    let (_d, cfg) =
        config_file("[monitor]\nprotocols = [\"all\"]\n[filter]\nrepeat_after_secs = 0\n");
    let h = Helper::start(&net.a, &["--config", cfg.to_str().unwrap()]);
    let argv = client(&net);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let pids = Net::run_each(&net.a, &argv, n);
    let all = h.collect(Duration::from_secs(2));
    let lost = all
        .iter()
        .filter(|v| v["type"] == "lost")
        .filter_map(|v| v["count"].as_u64())
        .sum();
    let lines: Vec<Value> = all
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
        lost,
    }
}

/// The kernel's count of BPF program runs and their run time, kept while the returned file
/// descriptor is open (`BPF_ENABLE_STATS`), and only then: closing it turns them off again.
#[allow(unsafe_code)]
fn bpf_run_time_stats() -> std::os::fd::OwnedFd {
    use std::os::fd::FromRawFd;
    const BPF_ENABLE_STATS: libc::c_long = 32;
    // `enable_stats.type` = BPF_STATS_RUN_TIME (0), and nothing else.
    let mut attr = [0u8; 8];
    // SAFETY: `attr` is a live, initialised 8-byte buffer, the size passed; the kernel reads
    // it during the call only.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, BPF_ENABLE_STATS, attr.as_mut_ptr(), 8) };
    assert!(
        rc >= 0,
        "BPF_ENABLE_STATS: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: the kernel has just returned `rc` as a new descriptor that nothing else owns.
    unsafe { std::os::fd::OwnedFd::from_raw_fd(rc as i32) }
}

fn unconnected_udp_one_shots() -> Rate {
    attribution(100, false, |n| {
        [
            "python3".to_string(),
            "-c".into(),
            format!(
                "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM).sendto(b'x', ('{}', 8080))",
                n.b4()
            ),
        ]
        .to_vec()
    })
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
        Some("abuse" | "burst" | "sockets" | "idle" | "costs") => &["ip", "nft"],
        Some("processes" | "one-shots") => &["ip", "nft", "python3", "curl", "bash", "ping"],
        Some("udp-sendto" | "send-cost") => &["ip", "nft", "python3"],
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
            println!(
                "{}",
                sockets::held_row(label, &sockets::held_cost(10_000, bound, 200))
            );
        }
        return;
    }
    if only.as_deref() == Some("processes") {
        print_processes();
        return;
    }
    if only.as_deref() == Some("costs") {
        println!("{}", processes::connect_cost_row(2000));
        println!("{}", processes::fork_cost_row(2000));
        return;
    }
    if only.as_deref() == Some("one-shots") {
        for row in processes::one_shot_rows(100) {
            println!("{row}");
        }
        return;
    }
    if only.as_deref() == Some("idle") {
        println!("{}", idle::idle_row(&idle::idle_wakeups()));
        return;
    }
    if only.as_deref() == Some("abuse") {
        let a = abuse::stdin_abuse();
        println!(
            "stdin abuse: RSS {:.1} MiB after 100 × 1 MB configs, {:.1} MiB after 200,000 pause/resume, peak {:.1} MiB",
            a.after_configs as f64 / 1024.0,
            a.after_toggles as f64 / 1024.0,
            a.peak as f64 / 1024.0
        );
        return;
    }
    if only.as_deref() == Some("udp-sendto") {
        let r = unconnected_udp_one_shots();
        println!(
            "unconnected UDP one-shots (python sendto, exit): {}/{} named, reported {}, wrong pids: {}",
            r.attributed,
            r.tried,
            r.reported,
            if r.right_pid { "none" } else { "SOME" }
        );
        return;
    }
    if only.as_deref() == Some("send-cost") {
        print_send_cost(send_cost());
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
    // BENCH_BURST_FLOWS: a longer burst, to profile the helper through it.
    let flows = std::env::var("BENCH_BURST_FLOWS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(BURST);
    eprintln!("burst ({flows} UDP flows)...");
    let b = burst(flows, have_conntrack);
    if only.as_deref() == Some("burst") {
        let per = |cpu: f64, n: u64| cpu * 1e6 / n.max(1) as f64;
        println!(
            "burst at {:.0} flows/s: {}/{} shown, {} lost, {} attributed; helper {:.1} µs/event (reader {:.1}, kernel programs {:.1}); conntrack -E {}",
            b.rate,
            b.helper_seen,
            b.created,
            b.helper_lost,
            b.helper_attributed,
            per(b.helper_cpu, b.helper_seen),
            per(b.reader_cpu, b.helper_seen),
            per(b.bpf_cpu, b.helper_seen),
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
    let curl = attribution(200, true, |n| {
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
            attribution(100, true, |n| {
                ["bash", "-c", &format!("echo x > /dev/tcp/{}/8080", n.b4())]
                    .map(String::from)
                    .to_vec()
            })
        })
        .collect();
    let closed = attribution(50, false, |n| {
        ["curl", "-s", "-m", "1", &format!("http://{}:8080/", n.b4())]
            .map(String::from)
            .to_vec()
    });
    let udp = attribution(100, false, |n| {
        ["bash", "-c", &format!("echo x > /dev/udp/{}/8080", n.b4())]
            .map(String::from)
            .to_vec()
    });
    let sendto = unconnected_udp_one_shots();
    eprintln!("cost per send...");
    let cost = send_cost();
    let long = attribution(20, true, |n| {
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
            "{}/{} ({:.0}%), reported {}/{}, wrong pids: {}{}",
            r.attributed,
            r.tried,
            pct(r.attributed as u64, r.tried as u64),
            r.reported,
            r.tried,
            if r.right_pid { "none" } else { "SOME" },
            if r.lost > 0 {
                format!(", lost records: {}", r.lost)
            } else {
                String::new()
            }
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
        "| (c) attribution, unconnected UDP one-shot (python sendto, exit) | {} | no attribution |",
        row(&sendto)
    );
    println!(
        "| (c) attribution, long-lived connection | {} | no attribution |",
        row(&long)
    );
    println!(
        "| (d) CPU per event during the burst | {:.1} µs with its kernel programs ({:.2} s for {} events, incl. attribution; reader thread {:.1} µs; kernel programs {:.1} µs) | {} |",
        (b.helper_cpu + b.bpf_cpu) * 1e6 / b.helper_seen.max(1) as f64,
        b.helper_cpu + b.bpf_cpu,
        b.helper_seen,
        b.reader_cpu * 1e6 / b.helper_seen.max(1) as f64,
        b.bpf_cpu * 1e6 / b.helper_seen.max(1) as f64,
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
    print_send_cost(cost);
    let stdin = abuse::stdin_abuse();
    println!(
        "| (g) stdin abuse: 100 × 1 MB config commands, then 200,000 pause/resume | RSS {:.1} MiB after the configs, {:.1} MiB after pause/resume; peak {:.1} MiB | |",
        stdin.after_configs as f64 / 1024.0,
        stdin.after_toggles as f64 / 1024.0,
        stdin.peak as f64 / 1024.0
    );
    eprintln!("10,000 sockets held...");
    let held = sockets::held_cost(10_000, true, 200);
    println!("{}", sockets::held_row("bound UDP", &held));
    eprintln!("idle helper (33 s)...");
    println!("{}", idle::idle_row(&idle::idle_wakeups()));
    print_processes();
}

/// Part j (exec records, parents, containers, ICMP) and k (a connect's cost).
fn print_processes() {
    eprintln!("one-shots with and without exec records...");
    for row in processes::one_shot_rows(100) {
        println!("{row}");
    }
    eprintln!("parent chains...");
    println!("{}", processes::chain_row(20));
    eprintln!("container...");
    println!("{}", processes::container_row(20));
    println!("{}", processes::published_row(20));
    eprintln!("pings...");
    println!("{}", processes::icmp_row(20));
    eprintln!("cost per connect...");
    println!("{}", processes::connect_cost_row(2000));
    eprintln!("cost per fork...");
    println!("{}", processes::fork_cost_row(2000));
}
