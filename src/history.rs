//! History: the recent connections for the menu, and every reported event appended to
//! `$XDG_STATE_HOME/conntrack-tray/events.jsonl`, so the menu survives a restart.
//!
//! The log rotates at [`ROTATE_BYTES`] to `events.jsonl.1` (one old file kept), so it stays
//! bounded however long the applet runs. It holds every user's command lines, so it is
//! private (0600 in a 0700 directory, see `files`), and each line is JSON with every control
//! and format character escaped (`sanitize::json_line`), so printing it shows none raw.
//!
//! A line is `{"on": MACHINE, "connection": {…}}`: the connection nested whole, so none of its
//! fields (it has its own `host`, the looked-up name) can collide with the machine's.

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};

use conntrack_tray_helper::sanitize::json_line;
use conntrack_tray_helper::Connection;
use serde::{Deserialize, Serialize};

use crate::files;

pub const RECENT: usize = 20;
/// 8 MiB: thousands of events even with the longest command lines (4 KiB, a history line
/// about 4.5 KB), where 1 MiB held under 300 and a single burst pushed out what had just been
/// notified.
pub const ROTATE_BYTES: u64 = 8 << 20;

/// A reported connection and the machine (the helper's host) it was seen on.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Seen {
    #[serde(rename = "on")]
    pub host: String,
    #[serde(rename = "connection")]
    pub conn: Connection,
    /// The applet's own ssh link to a watched host: kept, never notified.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub own: bool,
}

/// The line format before the connection was nested: its fields beside the machine's `host`.
/// Lines of connections without a looked-up name read back this way; those with one had two
/// `host` keys and never read back at all.
#[derive(Deserialize)]
struct Flat {
    host: String,
    #[serde(flatten)]
    conn: Connection,
}

/// One history line, either format.
pub(crate) fn parse_line(line: &str) -> Option<Seen> {
    serde_json::from_str::<Seen>(line).ok().or_else(|| {
        let f = serde_json::from_str::<Flat>(line).ok()?;
        Some(Seen {
            host: f.host,
            conn: f.conn,
            own: false,
        })
    })
}

/// Just the time of a line, either format: `ts` of the nested connection, or beside the
/// machine's `host` in the flat one.
#[derive(Deserialize)]
#[serde(untagged)]
enum Dated {
    Nested {
        connection: Stamp,
        /// The applet's own link: kept, not counted.
        #[serde(default)]
        own: bool,
    },
    Flat {
        ts: String,
    },
}

#[derive(Deserialize)]
struct Stamp {
    ts: String,
}

impl Dated {
    fn ts(&self) -> &str {
        match self {
            Dated::Nested { connection, .. } => &connection.ts,
            Dated::Flat { ts } => ts,
        }
    }
}

/// The UTC day of a timestamp as the helper writes it ("2026-11-25T10:00:00.000000Z" is on
/// "2026-11-25"), which is how the applet counts "today".
pub fn day_of(ts: &str) -> &str {
    ts.get(..10).unwrap_or("")
}

/// Today, UTC, as [`day_of`] gives it: from the same formatter the helper's timestamps come
/// from.
pub fn today() -> String {
    let now = conntrack_tray_helper::pipeline::timestamp(std::time::SystemTime::now());
    day_of(&now).to_string()
}

/// How many lines of the file at `path` are events of `day`, read a line at a time, and
/// whether its first event is of `day` (`None`: it has none, or there is no file).
fn count_in(path: &Path, day: &str) -> (u64, Option<bool>) {
    let Ok(f) = std::fs::File::open(path) else {
        return (0, None);
    };
    let mut first = None;
    let mut n = 0;
    for dated in BufReader::new(f)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| serde_json::from_str::<Dated>(&l).ok())
    {
        let on_day = day_of(dated.ts()) == day;
        first.get_or_insert(on_day);
        let own = matches!(dated, Dated::Nested { own: true, .. });
        n += u64::from(on_day && !own);
    }
    (n, first)
}

pub struct History {
    path: Option<PathBuf>,
    recent: VecDeque<Seen>,
    /// The directory was made the applet's own (created or tightened to 0700).
    dir_ready: bool,
    /// [`ROTATE_BYTES`], but in tests.
    rotate_bytes: u64,
}

impl History {
    pub fn default_path() -> Option<PathBuf> {
        directories::ProjectDirs::from("", "", "conntrack-tray")
            .and_then(|d| d.state_dir().map(|s| s.join("events.jsonl")))
    }

    /// Opens the log at `path` (`None`: memory only) and reads its last [`RECENT`] events.
    /// An existing directory and files of an older version, wider than they should be, are
    /// made private at once (a failure shows at the first append).
    pub fn open(path: Option<PathBuf>) -> History {
        let mut recent = VecDeque::with_capacity(RECENT);
        if let Some(p) = &path {
            let _ = files::tighten_dir(parent(p));
            for file in [rotated(p), p.clone()] {
                let _ = files::tighten(&file);
                let Ok(f) = std::fs::File::open(&file) else {
                    continue;
                };
                for seen in BufReader::new(f)
                    .lines()
                    .map_while(Result::ok)
                    .filter_map(|l| parse_line(&l))
                {
                    if recent.len() == RECENT {
                        recent.pop_back();
                    }
                    recent.push_front(seen);
                }
            }
        }
        History {
            path,
            recent,
            dir_ready: false,
            rotate_bytes: ROTATE_BYTES,
        }
    }

    /// Newest first.
    pub fn recent(&self) -> impl Iterator<Item = &Seen> {
        self.recent.iter()
    }

    pub fn get(&self, i: usize) -> Option<&Seen> {
        self.recent.get(i)
    }

    /// How many kept events are of `day` (see [`day_of`]), so "N today" survives a restart.
    /// The log is read a line at a time, never whole; the rotated file only when the day began
    /// before the current one (its first event is of the day, or it has none): older events
    /// are not kept, and events are appended in order.
    pub fn count_day(&self, day: &str) -> u64 {
        let Some(path) = &self.path else {
            return 0;
        };
        match count_in(path, day) {
            (n, Some(false)) => n,
            (n, _) => n + count_in(&rotated(path), day).0,
        }
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
        if !self.dir_ready {
            files::own_dir(parent(path))?;
            self.dir_ready = true;
        }
        append(path, &json_line(&line), self.rotate_bytes)
    }
}

fn parent(p: &Path) -> &Path {
    p.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or_else(|| Path::new("."))
}

fn rotated(p: &Path) -> PathBuf {
    let mut s = p.as_os_str().to_owned();
    s.push(".1");
    PathBuf::from(s)
}

/// Appends one line, rotating first when the file is full (the rotated file keeps the
/// current one's 0600).
fn append(path: &Path, line: &str, rotate_bytes: u64) -> std::io::Result<()> {
    if std::fs::symlink_metadata(path)
        .map(|m| m.len())
        .unwrap_or(0)
        >= rotate_bytes
    {
        std::fs::rename(path, rotated(path))?;
    }
    let mut f = files::open_append(path)?;
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
            own: false,
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
    fn a_connection_with_a_looked_up_name_survives_a_restart() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("events.jsonl");
        let mut with_name = seen(443);
        with_name.conn.host = Some("example.com".into());
        with_name.conn.host_source = Some(conntrack_tray_helper::event::HostSource::Dns);
        let mut h = History::open(Some(path.clone()));
        h.push(with_name.clone()).expect("push");
        h.push(seen(80)).expect("push");
        let again: Vec<Seen> = History::open(Some(path.clone()))
            .recent()
            .cloned()
            .collect();
        assert_eq!(again, vec![seen(80), with_name]);
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(text.matches("\"host\"").count(), 1, "{text}");
    }

    #[test]
    fn lines_of_the_flat_format_still_read_back() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("events.jsonl");
        let mut flat = serde_json::to_value(fixtures::connection("9.9.9.9", 22)).expect("json");
        flat["host"] = "laptop".into();
        std::fs::write(&path, format!("{flat}\nnot json\n")).expect("write");
        let h = History::open(Some(path));
        let got: Vec<&Seen> = h.recent().collect();
        assert_eq!(got.len(), 1);
        assert_eq!(
            (got[0].host.as_str(), got[0].conn.remote_port),
            ("laptop", Some(22))
        );
    }

    #[test]
    fn the_log_is_private_and_holds_no_raw_control_or_format_character() {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let dir = tempfile::tempdir().expect("tmp");
        let state = dir.path().join("state");
        std::fs::create_dir(&state).expect("mkdir");
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        let path = state.join("events.jsonl");
        // An older version's file, readable by all.
        std::fs::write(&path, "").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let mut s = seen(443);
        s.conn.process = Some(conntrack_tray_helper::Process {
            cmdline: vec![
                "curl".into(),
                "-H".into(),
                "X-Api-Key: s3cr3t\u{202e}\n".into(),
            ],
            ..fixtures::process("/usr/bin/curl")
        });
        let mut h = History::open(Some(path.clone()));
        h.push(s.clone()).expect("push");
        let mode = |p: &Path| std::fs::metadata(p).expect("meta").mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&state), 0o700);
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(
            !text
                .trim_end()
                .chars()
                .any(conntrack_tray_helper::sanitize::is_hidden),
            "{text:?}"
        );
        assert_eq!(History::open(Some(path)).recent().next(), Some(&s));
    }

    fn seen_at(port: u16, ts: &str) -> Seen {
        let mut s = seen(port);
        s.conn.ts = ts.into();
        s
    }

    #[test]
    fn the_events_of_a_day_are_counted_in_both_files_and_formats() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("events.jsonl");
        let line = |s: &Seen| serde_json::to_string(s).expect("json");
        let mut flat =
            serde_json::to_value(&seen_at(22, "2026-11-25T23:59:59.999999Z").conn).expect("json");
        flat["host"] = "laptop".into();
        // The rotated file: the day before, then the day's first events (one in the old format).
        let old = [
            line(&seen_at(1, "2026-11-24T23:59:59.999999Z")),
            line(&seen_at(2, "2026-11-25T00:00:00.000000Z")),
            flat.to_string(),
        ];
        std::fs::write(rotated(&path), old.join("\n") + "\n").expect("write");
        let current = [
            line(&seen_at(3, "2026-11-25T08:00:00.000000Z")),
            "not json".to_string(),
            line(&seen_at(4, "2026-11-25T09:00:00.000000Z")),
        ];
        std::fs::write(&path, current.join("\n") + "\n").expect("write");
        let h = History::open(Some(path.clone()));
        assert_eq!(h.count_day("2026-11-25"), 4);
        assert_eq!(
            h.count_day("2026-11-24"),
            0,
            "the day is over before the current file"
        );
        assert_eq!(h.count_day("2026-11-26"), 0);
        // The day began in the current file: the rotated one is not read.
        std::fs::write(
            &path,
            [
                line(&seen_at(5, "2026-11-24T22:00:00.000000Z")),
                current.join("\n"),
            ]
            .join("\n"),
        )
        .expect("write");
        assert_eq!(h.count_day("2026-11-25"), 2);
        // No current file yet (just rotated): the rotated one holds the day.
        std::fs::remove_file(&path).expect("rm");
        assert_eq!(h.count_day("2026-11-25"), 2);
        assert_eq!(History::open(None).count_day("2026-11-25"), 0);
    }

    #[test]
    fn today_is_the_utc_day_of_a_helper_timestamp() {
        assert_eq!(day_of("2026-11-25T10:00:00.000000Z"), "2026-11-25");
        assert_eq!(day_of("short"), "");
        let t = today();
        assert_eq!(t.len(), 10);
        assert_eq!(
            day_of(&conntrack_tray_helper::pipeline::timestamp(
                std::time::SystemTime::now()
            )),
            t
        );
    }

    #[test]
    fn the_log_rotates_and_stays_bounded() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("events.jsonl");
        let mut h = History::open(Some(path.clone()));
        const LIMIT: u64 = 1 << 20;
        h.rotate_bytes = LIMIT;
        let n = (3 * LIMIT / 300) as u16;
        for port in 0..n {
            h.push(seen(port)).expect("push");
        }
        let size = std::fs::metadata(&path).expect("meta").len();
        let old = std::fs::metadata(rotated(&path)).expect("rotated").len();
        use std::os::unix::fs::MetadataExt;
        let mode = std::fs::metadata(rotated(&path)).expect("rotated").mode();
        assert_eq!(mode & 0o777, 0o600, "the rotated file is private too");
        assert!(size <= LIMIT + 1024 && old <= LIMIT + 1024, "{size} {old}");
        assert_eq!(
            History::open(Some(path))
                .recent()
                .next()
                .and_then(|s| s.conn.remote_port),
            Some(n - 1)
        );
    }
}
