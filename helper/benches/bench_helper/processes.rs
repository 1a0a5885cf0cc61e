//! Part j of the benchmark: who a process is beyond its pid (exec records, parents,
//! containers, protocols without ports), and what the kernel programs cost a connecting
//! program (part k). `BENCH_ONLY=processes` runs it alone.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;

use super::common::container::Container;
use super::common::{config_file, Helper, Net};

const ALL: &str = "[monitor]\nprotocols = [\"all\"]\n[filter]\nrepeat_after_secs = 0\n";

/// Of `n` one-shots: how many were reported with the right pid, and with exe and cmdline.
pub struct Described {
    pub tried: usize,
    pub right_pid: usize,
    pub described: usize,
}

impl Described {
    pub fn row(&self) -> String {
        format!(
            "{}/{} with exe and cmdline, {}/{} right pid",
            self.described, self.tried, self.right_pid, self.tried
        )
    }
}

/// Runs `n` one-shots of `argv` in a fresh namespace pair, the helper started with `extra`.
fn one_shots(n: usize, extra: &[&str], port: u16, argv: impl Fn(&Net) -> Vec<String>) -> Described {
    let mut net = Net::new();
    net.serve(&net.b.clone(), "0.0.0.0", &[8080]);
    let (_d, cfg) = config_file(ALL);
    let mut args = vec!["--config", cfg.to_str().unwrap()];
    args.extend_from_slice(extra);
    let h = Helper::start(&net.a, &args);
    let argv = argv(&net);
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let pids = Net::run_each(&net.a, &argv, n);
    let lines: Vec<Value> = h
        .collect(Duration::from_secs(2))
        .into_iter()
        .filter(|v| v["type"] == "connection" && v["remote_port"] == port)
        .collect();
    let right: Vec<&Value> = lines
        .iter()
        .filter(|v| {
            v["process"]["pid"]
                .as_u64()
                .is_some_and(|p| pids.contains(&p))
        })
        .collect();
    let described = right
        .iter()
        .filter(|v| {
            v["process"]["exe"].is_string()
                && v["process"]["cmdline"]
                    .as_array()
                    .is_some_and(|a| !a.is_empty())
        })
        .count();
    // What a miss looked like, for whoever reads the run: a pid never reported, or a line
    // with the right pid and no exe or command line, or a line with another pid.
    for pid in &pids {
        match right
            .iter()
            .find(|v| v["process"]["pid"].as_u64() == Some(*pid))
        {
            None => eprintln!(
                "  one-shot pid {pid} ({}): no line names it",
                argv[argv.len() - 1]
            ),
            Some(v) if !v["process"]["exe"].is_string() => eprintln!("  one-shot pid {pid}: {v}"),
            Some(_) => {}
        }
    }
    for v in lines.iter().filter(|v| !right.contains(v)) {
        eprintln!("  a line for none of the one-shots: {v}");
    }
    Described {
        tried: n,
        right_pid: right.len(),
        described,
    }
}

fn bash(script: String) -> Vec<String> {
    vec!["bash".into(), "-c".into(), script]
}

/// Rows for TCP, UDP and refused bash one-shots, with and without the exec hook.
pub fn one_shot_rows(n: usize) -> Vec<String> {
    let mut rows = Vec::new();
    for (label, extra) in [
        ("exec records", &[][..]),
        ("no exec hook", &["--no-exec-hook"][..]),
    ] {
        let tcp = one_shots(n, extra, 8080, |net| {
            bash(format!("echo x > /dev/tcp/{}/8080", net.b4()))
        });
        let udp = one_shots(n, extra, 5354, |net| {
            bash(format!("echo x > /dev/udp/{}/5354", net.b4()))
        });
        let refused = one_shots(n, extra, 8090, |net| {
            bash(format!("echo x > /dev/tcp/{}/8090", net.b4()))
        });
        rows.push(format!(
            "| (j) exe and cmdline of bash one-shots, {label} | TCP {}; UDP {}; refused at once {} | no process |",
            tcp.row(),
            udp.row(),
            refused.row()
        ));
    }
    rows
}

/// `sh -c 'sh -c "curl"'` `n` times: how often the chain's first two parents are the two
/// shells, with the right pids (the outer one exited in half of the runs).
pub fn chain_row(n: usize) -> String {
    let mut net = Net::new();
    net.serve(&net.b.clone(), "0.0.0.0", &[8080]);
    let (_d, cfg) = config_file(ALL);
    let h = Helper::start(&net.a, &["--config", cfg.to_str().unwrap()]);
    let url = format!("http://{}:8080/", net.b4());
    let mut right = 0;
    for i in 0..n {
        let inner = format!("echo $$; sleep 0.05; curl -s -m 2 {url} >/dev/null; true");
        let outer = if i % 2 == 0 {
            format!("sh -c '{inner}'; true")
        } else {
            format!("sh -c '{inner}' & sleep 0.02; exit 0")
        };
        let mut c = Net::cmd(&net.a, &["sh", "-c", &outer])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("sh");
        let outer_pid = u64::from(c.id());
        let mut line = String::new();
        let _ = BufReader::new(c.stdout.take().unwrap()).read_line(&mut line);
        let _ = c.wait();
        let inner_pid: u64 = line.trim().parse().unwrap_or(0);
        let v = h.wait_for(Duration::from_secs(3), |v| {
            v["type"] == "connection" && v["remote_port"] == 8080
        });
        let ok = v.is_some_and(|v| {
            let a = &v["process"]["ancestors"];
            a[0]["pid"].as_u64() == Some(inner_pid) && a[1]["pid"].as_u64() == Some(outer_pid)
        });
        right += usize::from(ok);
    }
    format!(
        "| (j) parents of curl in `sh -c 'sh -c curl'` (outer sh exited in half) | {right}/{n} chains right (both shells, right pids) | no process |"
    )
}

/// `n` curls in a "container" (a namespace behind a veth, masqueraded): named how often.
pub fn container_row(n: usize) -> String {
    let mut net = Net::new();
    net.serve(&net.b.clone(), "0.0.0.0", &[8080]);
    let ctr = Container::new(&net);
    let (_d, cfg) = config_file("[filter]\nrepeat_after_secs = 0\n");
    let h = Helper::start(&net.a, &["--config", cfg.to_str().unwrap()]);
    let url = format!("http://{}:8080/", net.b4());
    let pids = Net::run_each(&ctr.ns, &["curl", "-s", "-m", "2", &url], n);
    let lines: Vec<Value> = h
        .collect(Duration::from_secs(2))
        .into_iter()
        .filter(|v| v["type"] == "connection" && v["remote_port"] == 8080)
        .collect();
    let named = lines
        .iter()
        .filter(|v| {
            v["process"]["pid"]
                .as_u64()
                .is_some_and(|p| pids.contains(&p))
        })
        .count();
    format!(
        "| (j) curl in a container (own namespace, bridge-like veth, masquerade) | {named}/{n} named with the right pid ({} reported) | no process |",
        lines.len()
    )
}

/// `n` curls from `b` to a container's published port (DNAT on `a`): how often the inbound
/// flow is named after the container's listener.
pub fn published_row(n: usize) -> String {
    let mut net = Net::new();
    let ctr = Container::new(&net);
    ctr.publish(&net, 8088, 80);
    let server = u64::from(net.serve(&ctr.ns.clone(), "0.0.0.0", &[80]));
    let (_d, cfg) = config_file("[filter]\nrepeat_after_secs = 0\n");
    let h = Helper::start(&net.a, &["--config", cfg.to_str().unwrap()]);
    let url = format!("http://{}:8088/", net.a4());
    Net::run_each(&net.b, &["curl", "-s", "-m", "2", &url], n);
    let lines: Vec<Value> = h
        .collect(Duration::from_secs(2))
        .into_iter()
        .filter(|v| v["type"] == "connection" && v["local_port"] == 8088)
        .collect();
    let named = lines
        .iter()
        .filter(|v| v["process"]["pid"].as_u64() == Some(server))
        .count();
    format!(
        "| (j) inbound to a container's published port (DNAT to its listener) | {named}/{n} named after the listener ({} reported) | no process |",
        lines.len()
    )
}

/// Pings from a ping socket and from a raw socket (`ping` as root, ping sockets off).
pub fn icmp_row(n: usize) -> String {
    let net = Net::new();
    let (_d, cfg) = config_file(ALL);
    let h = Helper::start(&net.a, &["--config", cfg.to_str().unwrap()]);
    let mut counts = Vec::new();
    for (range, label) in [("0 2147483647", "ping socket"), ("1 0", "raw socket")] {
        let st = Net::cmd(
            &net.a,
            &[
                "sysctl",
                "-qw",
                &format!("net.ipv4.ping_group_range={range}"),
            ],
        )
        .status()
        .expect("sysctl");
        assert!(st.success());
        let pids = Net::run_each(&net.a, &["ping", "-c", "1", "-W", "1", &net.b4()], n);
        let lines: Vec<Value> = h
            .collect(Duration::from_secs(2))
            .into_iter()
            .filter(|v| v["type"] == "connection" && v["proto"] == "icmp")
            .collect();
        let named = lines
            .iter()
            .filter(|v| {
                v["process"]["pid"]
                    .as_u64()
                    .is_some_and(|p| pids.contains(&p))
            })
            .count();
        counts.push(format!("{label} {named}/{n}"));
    }
    format!(
        "| (j) ICMP echo named with the right pid | {}; SCTP: this kernel has no SCTP (not measured) | no process |",
        counts.join(", ")
    )
}

/// The run time the kernel counted for every BPF program the helper `pid` loaded, in ns,
/// and their runs (needs `BPF_ENABLE_STATS` held).
pub fn programs_run_time(pid: u32) -> (u64, u64) {
    let mut total = (0, 0);
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let info = std::fs::read_to_string(fd.path()).unwrap_or_default();
        let num = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .and_then(|v| v.trim().parse::<u64>().ok())
        };
        if info.contains("prog_type:") {
            if let (Some(n), Some(t)) = (num("run_cnt:"), num("run_time_ns:")) {
                total.0 += t;
                total.1 += n;
            }
        }
    }
    total
}

/// The µs of each `connect()` in `n` connects from `a` to `b`'s listener.
fn connects(net: &Net, n: u32) -> Vec<f64> {
    let me = std::env::current_exe().expect("exe");
    let dst = format!("{}:8080", net.b4());
    let out = Net::cmd(
        &net.a,
        &[me.to_str().unwrap(), "connect-cost", &dst, &n.to_string()],
    )
    .output()
    .expect("connect-cost");
    printed(&out.stdout)
}

/// The numbers a generator printed, one a line.
fn printed(out: &[u8]) -> Vec<f64> {
    String::from_utf8_lossy(out)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// The median and p90 of `us`.
fn median_p90(mut us: Vec<f64>) -> (f64, f64) {
    us.sort_by(f64::total_cmp);
    let at = |p: f64| {
        us.get(((us.len() as f64 - 1.0) * p) as usize)
            .copied()
            .unwrap_or(f64::NAN)
    };
    (at(0.5), at(0.9))
}

/// The generator: `n` connects to `dst`, each closed at once; one line of µs per connect.
pub fn connect_cost(dst: &str, n: u32) {
    let dst: std::net::SocketAddr = dst.parse().expect("addr");
    for _ in 0..n {
        let t = std::time::Instant::now();
        let s = std::net::TcpStream::connect(dst);
        let us = t.elapsed().as_secs_f64() * 1e6;
        if s.is_ok() {
            println!("{us:.2}");
        }
    }
}

/// What a connecting program pays per `connect()`: alone, with `conntrack -E` listening,
/// with the helper without its kernel programs, with all of them; and those programs' own
/// share, from the kernel's count of their run time.
///
/// The kernel counts run time only while asked to (`BPF_ENABLE_STATS`), and the counting
/// itself costs every run two clock reads, on a hook that runs nine times a connect. The
/// connects that are timed run without it, as a person's do; the run time is counted over
/// a second round of as many connects.
pub fn connect_cost_row(n: u32) -> String {
    const ROUNDS: u32 = 3;
    let mut net = Net::new();
    net.serve(&net.b.clone(), "0.0.0.0", &[8080]);
    // Conntrack on in `a` for every round, with nobody listening: a rule that matches on
    // a connection's state makes the kernel track them.
    for cmd in [
        "add table inet ctt_bench_ct",
        "add chain inet ctt_bench_ct out { type filter hook output priority 0 ; }",
        "add rule inet ctt_bench_ct out ct state new counter",
    ] {
        let st = Net::cmd(&net.a, &["nft", cmd]).status().expect("nft");
        assert!(st.success(), "{cmd}");
    }
    let fmt = |us: Vec<f64>| {
        let (m, p) = median_p90(us);
        format!("median {m:.1} µs, p90 {p:.1} µs")
    };
    // The four setups take turns, a third of the connects each time, so that a machine
    // busier in one stretch than another weighs on all of them alike.
    let per = n.div_ceil(ROUNDS);
    let (mut bare, mut ct, mut without, mut with) = (vec![], Some(vec![]), vec![], vec![]);
    let mut share_ns = 0u64;
    for _ in 0..ROUNDS {
        bare.extend(connects(&net, per));
        match Net::cmd(&net.a, &["conntrack", "-E", "-e", "NEW"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
        {
            Ok(mut child) => {
                std::thread::sleep(Duration::from_millis(300));
                if let Some(ct) = ct.as_mut() {
                    ct.extend(connects(&net, per));
                }
                let _ = child.kill();
                let _ = child.wait();
            }
            Err(_) => ct = None,
        }
        {
            let _h = Helper::start(&net.a, &["--no-connect-hook", "--no-exec-hook"]);
            without.extend(connects(&net, per));
        }
        let h = Helper::start(&net.a, &[]);
        with.extend(connects(&net, per));
        let _stats = super::bpf_run_time_stats();
        let before = programs_run_time(h.pid());
        connects(&net, per);
        share_ns += programs_run_time(h.pid()).0 - before.0;
    }
    let share = share_ns as f64 / 1000.0 / f64::from(per * ROUNDS);
    // The floor: a program that does nothing, on the TCP program's hook (sock_ops), run as
    // often.
    let (floor, runs) = {
        let _stats = super::bpf_run_time_stats();
        let _probe = conntrack_tray_helper::attribution::sock_ops::empty_probe()
            .expect("an empty sock_ops program");
        let before = programs_run_time(std::process::id());
        connects(&net, n);
        let after = programs_run_time(std::process::id());
        (
            (after.0 - before.0) as f64 / 1000.0 / f64::from(n),
            (after.1 - before.1) as f64 / f64::from(n),
        )
    };
    format!(
        "| (k) a program's cost per `connect()`, {} connects each (conntrack on; {ROUNDS} turns) | nobody listening: {}; helper without kernel programs: {}; helper with all its programs: {}; the programs' own run time: {share:.2} µs a connect; an empty program on the same hook (sock_ops): {floor:.2} µs a connect ({runs:.1} runs) | {} |",
        per * ROUNDS,
        fmt(bare),
        fmt(without),
        fmt(with),
        ct.map(fmt).unwrap_or_else(|| "not installed".into())
    )
}

/// The generator: `n` forks, each child exiting at once and waited for; one line of µs per
/// fork (fork to the child's reaping).
#[allow(unsafe_code)]
pub fn fork_cost(n: u32) {
    for _ in 0..n {
        let t = std::time::Instant::now();
        // SAFETY: the child only calls `_exit`, which is async-signal-safe.
        let pid = unsafe { libc::fork() };
        if pid == 0 {
            // SAFETY: as above.
            unsafe { libc::_exit(0) };
        }
        if pid > 0 {
            let mut status = 0;
            // SAFETY: waits for the child just made.
            unsafe { libc::waitpid(pid, &mut status, 0) };
            println!("{:.2}", t.elapsed().as_secs_f64() * 1e6);
        }
    }
}

/// Median and p90 µs of a fork in `n` forks in `a`.
fn forks(net: &Net, n: u32) -> (f64, f64) {
    let me = std::env::current_exe().expect("exe");
    let out = Net::cmd(&net.a, &[me.to_str().unwrap(), "fork-cost", &n.to_string()])
        .output()
        .expect("fork-cost");
    median_p90(printed(&out.stdout))
}

/// What the fork records (the `sched_process_fork` program `whitelist.started_by` needs) cost
/// a forking program: forks with the helper without its exec and fork programs, with all its
/// programs, and those programs' own run time per fork.
///
/// As for connects, the timed forks run without the kernel's run-time counting, and the run
/// time is counted over a second round.
pub fn fork_cost_row(n: u32) -> String {
    let net = Net::new();
    let fmt = |(m, p): (f64, f64)| format!("median {m:.1} µs, p90 {p:.1} µs");
    let without = {
        let _h = Helper::start(&net.a, &["--no-exec-hook"]);
        forks(&net, n)
    };
    let (with, share) = {
        let h = Helper::start(&net.a, &[]);
        let r = forks(&net, n);
        let _stats = super::bpf_run_time_stats();
        let before = programs_run_time(h.pid());
        forks(&net, n);
        let after = programs_run_time(h.pid());
        (r, (after.0 - before.0) as f64 / 1000.0 / f64::from(n))
    };
    format!(
        "| (l) a program's cost per `fork()`, {n} forks (fork to reaping) | helper without exec and fork programs: {}; helper with all its programs: {}; the programs' own run time: {share:.2} µs a fork | |",
        fmt(without),
        fmt(with),
    )
}
