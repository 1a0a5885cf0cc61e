//! (h) The attribution cost beside a process holding 10,000 sockets: the per-flow lookup
//! time of the library's attributor, as the pipeline and as the reader's early attributor
//! use it, and the real helper's CPU per flow beside it (`BENCH_ONLY=sockets`).
//!
//! The generators `hold-sockets` and `lookup-series` run re-executed inside a namespace.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, UdpSocket};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::common::{config_file, Helper, Net};
use super::{percentile, thread_cpu_secs};

/// Opens `n` UDP sockets (bound to ports when `bound`), says "ready", and holds them until its
/// stdin closes: the process with thousands of sockets that every /proc scan must get past.
pub fn hold_sockets(n: usize, bound: bool) {
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
pub fn lookup_series(
    src: std::net::IpAddr,
    dst: std::net::IpAddr,
    n: u16,
    held: usize,
    bound: bool,
) {
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
            under_way: false,
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
            under_way: false,
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

/// The (f) row: per-flow lookup times with a process holding `held` sockets beside.
pub struct HeldCost {
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

pub fn held_cost(held: usize, bound: bool, n: u16) -> HeldCost {
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

pub fn held_row(label: &str, c: &HeldCost) -> String {
    let per = |cpu: f64| cpu * 1e3 / c.tried.max(1) as f64;
    format!(
        "| (h) attribution with a process holding 10,000 sockets ({label}) | lookup median {:.0} µs, p99 {:.0} µs, right pid {}/{} (early attributor: median {:.0} µs, p99 {:.0} µs); helper quiet: median {:.0} µs, p99 {:.0} µs, right pid {}/{}; helper beside: {:.2} ms CPU a flow (reader thread {:.2} ms), reported {}/{}, attributed {}, wrong pids {} | |",
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
