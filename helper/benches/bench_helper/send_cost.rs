//! (f): what the send records cost a sending program, from the kernel's run time of the
//! programs.

use super::bpf_run_time_stats;
use super::common::{Helper, Net};

/// Sends `n` datagrams from namespace `ns` to `dst`; nanoseconds per send, by wall clock.
fn send_ns(ns: &str, dst: &str, n: u32, connected: bool) -> f64 {
    let me = std::env::current_exe().expect("exe");
    let mut argv = vec![
        me.to_str().unwrap().to_string(),
        "udp-same".into(),
        dst.into(),
        n.to_string(),
    ];
    if connected {
        argv.push("connected".into());
    }
    let argv: Vec<&str> = argv.iter().map(String::as_str).collect();
    let out = Net::cmd(ns, &argv).output().expect("generator");
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse::<f64>()
        .expect("ns per send")
}

/// `(runs, run time in ns)` of the send hook's IPv4 program and of the `sock_send_length`
/// program that the helper `pid` loaded, from its fdinfo.
fn record_programs(pid: u32) -> [(u64, u64); 2] {
    let mut links = [None, None];
    let mut runs = std::collections::HashMap::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fdinfo")).expect("fdinfo") {
        let info = std::fs::read_to_string(fd.expect("entry").path()).unwrap_or_default();
        let field = |name: &str| -> Option<String> {
            info.lines()
                .find_map(|l| l.strip_prefix(name))
                .map(|v| v.trim().to_string())
        };
        let num = |name: &str| field(name).and_then(|v| v.parse::<u64>().ok());
        match (field("link_type:").as_deref(), num("prog_id:")) {
            (Some("cgroup"), Some(id)) if field("attach_type:").as_deref() == Some("14") => {
                links[0] = Some(id);
            }
            (Some("raw_tracepoint"), Some(id))
                if field("tp_name:").as_deref() == Some("sock_send_length") =>
            {
                links[1] = Some(id);
            }
            (None, Some(id)) => {
                if let (Some(n), Some(t)) = (num("run_cnt:"), num("run_time_ns:")) {
                    runs.insert(id, (n, t));
                }
            }
            _ => {}
        }
    }
    links.map(|id| {
        id.and_then(|id| runs.get(&id).copied())
            .expect("the helper's send record programs")
    })
}

/// Nanoseconds per run of each of `pid`'s record programs while `send` runs.
fn ns_per_run(pid: u32, send: impl FnOnce()) -> [f64; 2] {
    let before = record_programs(pid);
    send();
    let after = record_programs(pid);
    [0, 1].map(|i| {
        let (runs, ns) = (after[i].0 - before[i].0, after[i].1 - before[i].1);
        ns as f64 / runs.max(1) as f64
    })
}

/// What the send records cost a send, as the kernel counts its programs' run time: the send
/// hook on a `sendto` it records and on one from another namespace (where it stops at the
/// namespace check), and the `sock_send_length` program on a send it records (a connected
/// socket) and on one it does not (an unconnected socket). A wall-clock comparison of
/// sends with and without the programs was tried first: on the shared 2-core VM its rounds
/// differed by more than the programs cost.
pub fn send_cost() -> [f64; 4] {
    const N: u32 = 200_000;
    let _stats = bpf_run_time_stats();
    let mut net = Net::new();
    let other = Net::new();
    // A socket that never reads: its buffer fills and the rest is dropped, with no ICMP
    // error back (which would fail every other send on a connected socket).
    net.serve(&net.b.clone(), "0.0.0.0", &[9]);
    let dst = format!("{}:9", net.b4());
    let h = Helper::start(&net.a, &[]);
    let [hook, tp_unconnected] = ns_per_run(h.pid(), || {
        send_ns(&net.a, &dst, N, false);
    });
    let [_, tp_connected] = ns_per_run(h.pid(), || {
        send_ns(&net.a, &dst, N, true);
    });
    let far = Helper::start(&other.a, &[]);
    let [hook_elsewhere, _] = ns_per_run(far.pid(), || {
        send_ns(&net.a, &dst, N, false);
    });
    [hook, hook_elsewhere, tp_connected, tp_unconnected]
}

pub fn print_send_cost([hook, elsewhere, connected, unconnected]: [f64; 4]) {
    println!(
        "| (f) send records' cost per UDP send (kernel BPF run time) | send hook: {hook:.0} ns per sendto recorded, {elsewhere:.0} ns per sendto in another namespace; sock_send_length: {connected:.0} ns per send recorded (connected socket), {unconnected:.0} ns per send not recorded | |"
    );
}
