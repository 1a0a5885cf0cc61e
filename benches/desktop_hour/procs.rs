//! What the bench reads of the processes: the wakeups of each thread, the helper's pid, and
//! the connections the applet wrote to its history.

use std::collections::BTreeMap;
use std::path::Path;

use super::{wall, Run};

/// Context switches of each thread of `pid` by name: the helper tests' reader.
pub use super::nets::wakeups;

/// Wakeups per second between two readings: the total, and the threads that woke, busiest
/// first.
pub fn per_second(
    before: &BTreeMap<String, u64>,
    after: &BTreeMap<String, u64>,
    secs: f64,
) -> String {
    let mut threads: Vec<(String, f64)> = super::nets::wakeups_between(before, after)
        .into_iter()
        .map(|(name, n)| (name, n as f64 / secs))
        .filter(|(_, r)| *r > 0.0)
        .collect();
    threads.sort_by(|a, b| b.1.total_cmp(&a.1));
    // A fold from 0.0: an empty `sum()` of floats is -0.0, printed "-0.00".
    let total: f64 = threads.iter().fold(0.0, |t, (_, r)| t + r);
    let list: Vec<String> = threads
        .iter()
        .map(|(n, r)| format!("`{n}` {r:.2}"))
        .collect();
    match list.is_empty() {
        true => format!("{total:.2}/s"),
        false => format!("{total:.2}/s ({})", list.join(", ")),
    }
}

/// The helper: the child of `applet` running conntrack-tray-helper.
pub fn helper_pid(applet: u32) -> Option<u32> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid: u32 = e.file_name().to_str()?.parse().ok()?;
        let stat = std::fs::read_to_string(e.path().join("stat")).ok()?;
        let ppid: u32 = stat
            .rsplit(')')
            .next()?
            .split_whitespace()
            .nth(1)?
            .parse()
            .ok()?;
        let cmdline = std::fs::read(e.path().join("cmdline")).ok()?;
        (ppid == applet && String::from_utf8_lossy(&cmdline).contains("conntrack-tray-helper"))
            .then_some(pid)
    })
}

/// Seconds since the epoch of the helper's `ts` (`2026-11-25T14:49:41.146425Z`, UTC).
pub fn ts_secs(ts: &str) -> Option<f64> {
    let (date, time) = ts.strip_suffix('Z')?.split_once('T')?;
    let num = |s: &str| s.parse::<i64>().ok();
    let date: Vec<i64> = date.split('-').map(num).collect::<Option<_>>()?;
    let (hms, frac) = time.split_once('.').unwrap_or((time, "0"));
    let hms: Vec<i64> = hms.split(':').map(num).collect::<Option<_>>()?;
    let (&[y, m, d], &[h, min, sec]) = (&date[..], &hms[..]) else {
        return None;
    };
    // Days from the civil date (H. Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let days = era * 146_097 + yoe * 365 + yoe / 4 - yoe / 100 + doy - 719_468;
    let frac: f64 = format!("0.{frac}").parse().ok()?;
    Some((days * 86_400 + h * 3600 + min * 60 + sec) as f64 + frac)
}

/// The connections of `run` the applet recorded (its history, by the helper's time stamps:
/// the log rotates, so an earlier hour may be gone from it), by program name; `unknown` for
/// those without a process.
pub fn recorded(state: &Path, run: &Run) -> BTreeMap<String, usize> {
    let (from, to) = (wall(run.from), wall(run.to));
    let mut out = BTreeMap::new();
    let log = state.join("conntrack-tray/events.jsonl");
    for file in [log.with_extension("jsonl.1"), log] {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let c = &v["connection"];
            let Some(ts) = c["ts"].as_str().and_then(ts_secs) else {
                continue;
            };
            if ts < from || ts > to {
                continue;
            }
            let p = &c["process"];
            let name = p["exe"]
                .as_str()
                .and_then(|e| e.rsplit('/').next())
                .or(p["comm"].as_str())
                .unwrap_or("unknown");
            *out.entry(name.to_string()).or_insert(0) += 1;
        }
    }
    out
}
