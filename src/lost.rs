//! Lost events: the kernel (a socket buffer overrun) or the helper (a full queue) dropped
//! events in a flood. Never silent: a dropped event is a connection nobody was told about.
//! Every one is counted for the menu's status line; the person is told at once, then at most
//! once a [`EVERY`], with what was lost since summed by host, so a flood of `lost` lines makes
//! one notice a minute, not a flood of notices. Pure: time comes in as an argument.

use std::time::{Duration, Instant};

use crate::text;

/// Lost events are told at once, then at most this often.
pub const EVERY: Duration = Duration::from_secs(60);

#[derive(Debug, Default)]
pub struct Lost {
    /// Every lost event since the start, for the status line.
    pub total: u64,
    /// Lost events not told yet, by host, in the order the hosts first lost some.
    untold: Vec<(String, u64)>,
    told: Option<Instant>,
}

impl Lost {
    /// `count` more events lost on `host`; the notice, when one is due.
    pub fn add(&mut self, host: &str, count: u64, now: Instant) -> Option<String> {
        self.total += count;
        if count == 0 {
            return None;
        }
        match self.untold.iter_mut().find(|(h, _)| h == host) {
            Some((_, n)) => *n += count,
            None => self.untold.push((host.to_string(), count)),
        }
        self.due(now)
    }

    /// When a notice is next due: never while nothing is waiting.
    pub fn next_due(&self) -> Option<Instant> {
        if self.untold.is_empty() {
            return None;
        }
        Some(self.told.map_or_else(Instant::now, |t| t + EVERY))
    }

    /// The notice of what was not told yet, unless one was given less than [`EVERY`] ago.
    pub fn due(&mut self, now: Instant) -> Option<String> {
        let due = self
            .told
            .is_none_or(|t| now.saturating_duration_since(t) >= EVERY);
        if !due || self.untold.is_empty() {
            return None;
        }
        self.told = Some(now);
        let parts: Vec<String> = std::mem::take(&mut self.untold)
            .into_iter()
            .map(|(host, n)| format!("{n} on {}", text::host(&host)))
            .collect();
        Some(format!(
            "connections went unseen: the kernel dropped their events in a flood ({}); \
             the menu shows the total",
            parts.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn told_at_once_then_at_most_once_a_minute_summed_by_host() {
        let mut l = Lost::default();
        let t0 = Instant::now();
        let said = l.add("h", 7, t0).expect("told at once");
        assert!(said.contains("(7 on h)"), "{said}");
        // More within the minute, from two helpers: kept, then told together.
        assert_eq!(l.add("h", 3, t0 + Duration::from_secs(1)), None);
        assert_eq!(l.add("pi\u{202e}", 2, t0 + Duration::from_secs(2)), None);
        assert_eq!(l.add("h", 0, t0 + Duration::from_secs(3)), None);
        assert_eq!(l.due(t0 + Duration::from_secs(30)), None);
        let said = l.due(t0 + Duration::from_secs(61)).expect("due");
        assert!(said.contains("(3 on h, 2 on pi\\u{202e})"), "{said}");
        assert_eq!(l.due(t0 + Duration::from_secs(200)), None, "told once");
        assert_eq!(l.total, 12);
    }
}
