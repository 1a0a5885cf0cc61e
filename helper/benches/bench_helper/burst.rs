//! (a), (d), (e): a burst of UDP flows from one socket, and what the helper (and
//! `conntrack -E`, when asked for) spent on it.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use super::common::{self, config_file, Helper, Net};
use super::{bpf_run_time_stats, peak_rss_kib, processes, thread_cpu_secs};

/// What one burst measured.
pub struct Burst {
    pub created: u32,
    pub rate: f64,
    pub helper_seen: u64,
    pub helper_lost: u64,
    pub helper_attributed: u64,
    /// CPU seconds spent from the start of the burst to its last line; the reader thread's
    /// share apart.
    pub helper_cpu: f64,
    pub reader_cpu: f64,
    /// The run time the kernel counted for the helper's BPF programs over the same span.
    pub bpf_cpu: f64,
    pub helper_rss: u64,
    pub conntrack_seen: Option<u64>,
    pub conntrack_cpu: f64,
    pub conntrack_rss: u64,
    /// From the generator's last datagram to the helper's last line.
    pub drained_ms: f64,
}

pub fn burst(flows: u32, with_conntrack: bool) -> Burst {
    // The kernel programs' run time is counted while this is held.
    let _stats = bpf_run_time_stats();
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
            // Read as the helper's lines are (1 MiB at a time), so neither pays for small reads.
            BufReader::with_capacity(1 << 20, stdout)
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
    let bpf_before = processes::programs_run_time(h.pid()).0;
    let ct_before = ct
        .as_ref()
        .map(|(c, _)| common::cpu_secs(c.id()))
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
    let bpf_after = processes::programs_run_time(h.pid()).0;
    let spent = |name: Option<&str>| -> f64 {
        threads_after
            .iter()
            .filter(|(n, _)| name.is_none_or(|want| n.as_str() == want))
            .map(|(n, after)| after - threads_before.get(n).copied().unwrap_or(0.0))
            .sum()
    };
    let (helper_cpu, reader_cpu) = (spent(None), spent(Some("ct-reader")));
    // Each thread's share, for finding where the time goes.
    if std::env::var_os("BENCH_THREADS").is_some() {
        for (n, after) in &threads_after {
            eprintln!(
                "  thread {n}: {:.3} s",
                after - threads_before.get(n).copied().unwrap_or(0.0)
            );
        }
    }
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
        bpf_cpu: bpf_after.saturating_sub(bpf_before) as f64 / 1e9,
        helper_rss,
        conntrack_seen: None,
        conntrack_cpu: 0.0,
        conntrack_rss: 0,
    };
    if let Some((ct, counter)) = ct {
        std::thread::sleep(Duration::from_secs(1));
        out.conntrack_cpu = common::cpu_secs(ct.id()) - ct_before;
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
