//! (g) What a caller of the helper can make it hold through its stdin
//! (`BENCH_ONLY=abuse`).

use std::time::Duration;

use super::common::{self, Helper, Net};
use super::peak_rss_kib;

fn rss_kib(pid: u32) -> u64 {
    common::status_kib(pid, "VmRSS").unwrap_or(0)
}

pub struct Abuse {
    pub after_configs: u64,
    pub after_toggles: u64,
    pub peak: u64,
}

/// What a caller of the helper can make it hold: a hundred configurations of 1 MB each
/// (10,000 whitelisted paths), then 200,000 pause/resume commands, while no flow comes.
pub fn stdin_abuse() -> Abuse {
    let net = Net::new();
    let mut h = Helper::start(&net.a, &[]);
    let paths: Vec<String> = (0..10_000).map(|i| format!("/opt/{i:0>94}")).collect();
    let cmd = serde_json::json!({"cmd": "config", "config": {"whitelist": {"processes": paths}}})
        .to_string();
    for _ in 0..100 {
        h.send(&cmd);
    }
    let acks = |h: &Helper, n: usize| {
        (0..n)
            .filter(|_| {
                h.wait_for(Duration::from_secs(30), |v| v["type"] == "ack")
                    .is_some()
            })
            .count()
    };
    let configs = acks(&h, 100);
    let after_configs = rss_kib(h.pid());
    for i in 0..200_000 {
        h.send(if i % 2 == 0 {
            r#"{"cmd":"pause"}"#
        } else {
            r#"{"cmd":"resume"}"#
        });
    }
    let toggles = acks(&h, 200_000);
    eprintln!("stdin abuse: {configs}/100 config acks, {toggles}/200000 pause/resume acks");
    Abuse {
        after_configs,
        after_toggles: rss_kib(h.pid()),
        peak: peak_rss_kib(h.pid()),
    }
}
