//! History: the recent connections for the menu, and every reported event appended to
//! `$XDG_STATE_HOME/conntrack-tray/events.jsonl`, so the menu survives a restart.
//!
//! The log rotates at [`ROTATE_BYTES`] to `events.jsonl.1` (one old file kept), so it stays
//! bounded however long the applet runs.

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use conntrack_tray_helper::Connection;
use serde::{Deserialize, Serialize};

pub const RECENT: usize = 20;
pub const ROTATE_BYTES: u64 = 1 << 20;

/// A reported connection and the host it was seen on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seen {
    pub host: String,
    #[serde(flatten)]
    pub conn: Connection,
}

pub struct History {
    path: Option<PathBuf>,
    recent: VecDeque<Seen>,
}

impl History {
    pub fn default_path() -> Option<PathBuf> {
        directories::ProjectDirs::from("", "", "conntrack-tray")
            .and_then(|d| d.state_dir().map(|s| s.join("events.jsonl")))
    }

    /// Opens the log at `path` (`None`: memory only) and reads its last [`RECENT`] events.
    pub fn open(path: Option<PathBuf>) -> History {
        let mut recent = VecDeque::with_capacity(RECENT);
        if let Some(p) = &path {
            for file in [rotated(p), p.clone()] {
                let Ok(f) = std::fs::File::open(&file) else {
                    continue;
                };
                for line in BufReader::new(f).lines().map_while(Result::ok) {
                    if let Ok(seen) = serde_json::from_str::<Seen>(&line) {
                        if recent.len() == RECENT {
                            recent.pop_back();
                        }
                        recent.push_front(seen);
                    }
                }
            }
        }
        History { path, recent }
    }

    /// Newest first.
    pub fn recent(&self) -> impl Iterator<Item = &Seen> {
        self.recent.iter()
    }

    pub fn get(&self, i: usize) -> Option<&Seen> {
        self.recent.get(i)
    }

    /// Records an event in memory and in the log. A failing disk loses the log line, not the
    /// event (the error is returned for the caller to show once).
    pub fn push(&mut self, seen: Seen) -> std::io::Result<()> {
        let line = serde_json::to_string(&seen).map_err(std::io::Error::other);
        if self.recent.len() == RECENT {
            self.recent.pop_back();
        }
        self.recent.push_front(seen);
        let (Some(path), Ok(line)) = (&self.path, line) else {
            return Ok(());
        };
        append(path, &line)
    }
}

fn rotated(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".1");
    PathBuf::from(s)
}

fn append(path: &Path, line: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    if std::fs::metadata(path).map(|m| m.len()).unwrap_or(0) >= ROTATE_BYTES {
        std::fs::rename(path, rotated(path))?;
    }
    let mut f = OpenOptions::new().create(true).append(true).open(path)?;
    writeln!(f, "{line}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    fn seen(port: u16) -> Seen {
        Seen {
            host: "localhost".into(),
            conn: fixtures::connection("9.9.9.9", port),
        }
    }

    #[test]
    fn keeps_the_last_twenty_newest_first_across_a_restart() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("state/events.jsonl");
        let mut h = History::open(Some(path.clone()));
        for port in 1..=25 {
            h.push(seen(port)).expect("push");
        }
        let ports: Vec<_> = h.recent().map(|s| s.conn.remote_port).collect();
        assert_eq!(ports.len(), RECENT);
        assert_eq!(ports[0], Some(25));
        let again = History::open(Some(path));
        let ports2: Vec<_> = again.recent().map(|s| s.conn.remote_port).collect();
        assert_eq!(ports, ports2);
    }

    #[test]
    fn the_log_rotates_and_stays_bounded() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("events.jsonl");
        let mut h = History::open(Some(path.clone()));
        let n = (3 * ROTATE_BYTES / 300) as u16;
        for port in 0..n {
            h.push(seen(port)).expect("push");
        }
        let size = std::fs::metadata(&path).expect("meta").len();
        let old = std::fs::metadata(rotated(&path)).expect("rotated").len();
        assert!(
            size <= ROTATE_BYTES + 1024 && old <= ROTATE_BYTES + 1024,
            "{size} {old}"
        );
        assert_eq!(
            History::open(Some(path))
                .recent()
                .next()
                .and_then(|s| s.conn.remote_port),
            Some(n - 1)
        );
    }
}
