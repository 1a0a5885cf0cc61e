//! (i) How often an idle helper wakes up (`BENCH_ONLY=idle`): with no connection it should
//! wake only for events, timers that are due and signals, so a laptop's CPU can stay asleep.
//! Wakeups are counted as context switches of every thread ([`common::wakeups`]).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::common::{self, Helper, Net};

/// How long the helper runs before counting starts (its threads start and settle).
const SETTLE: Duration = Duration::from_secs(3);
/// How long it is counted.
const PERIOD: Duration = Duration::from_secs(30);

pub struct Idle {
    /// Wakeups in the period, by thread name.
    pub per_thread: BTreeMap<String, u64>,
    pub secs: f64,
    /// Lines the helper wrote in the period (none, when nothing happened in its namespace).
    pub lines: usize,
}

impl Idle {
    pub fn total(&self) -> u64 {
        self.per_thread.values().sum()
    }
}

/// Starts a helper in a namespace of its own, where nothing connects, and counts its wakeups
/// over [`PERIOD`] after [`SETTLE`].
pub fn idle_wakeups() -> Idle {
    let net = Net::new();
    let h = Helper::start(&net.a, &[]);
    std::thread::sleep(SETTLE);
    let _ = h.lines.try_iter().count();
    let before = common::wakeups(h.pid());
    let t0 = Instant::now();
    std::thread::sleep(PERIOD);
    let after = common::wakeups(h.pid());
    let secs = t0.elapsed().as_secs_f64();
    Idle {
        per_thread: common::wakeups_between(&before, &after),
        secs,
        lines: h.lines.try_iter().count(),
    }
}

/// The README's row: the rate of the whole helper, then each thread's count in the period.
pub fn idle_row(i: &Idle) -> String {
    let threads: Vec<String> = i
        .per_thread
        .iter()
        .map(|(name, n)| format!("{name}: {n}"))
        .collect();
    let lines = match i.lines {
        0 => String::new(),
        n => format!("; {n} lines written meanwhile"),
    };
    format!(
        "| (i) idle wakeups, no connections, {:.0} s | helper: {:.2}/s ({}){lines} | |",
        i.secs,
        i.total() as f64 / i.secs.max(f64::MIN_POSITIVE),
        threads.join(", ")
    )
}
