//! What the connections window shows, as plain values: the kept events folded into one row
//! per program and destination, the filters, the details of one event and the exports. No
//! egui and no files here, so all of it is tested with values.
//!
//! A year of history is far more events than rows: a program talks to the same few places
//! again and again. So each event is folded into its [`Group`] as it is read and then
//! dropped; a group keeps its counts, its first and last time, the latest name and where the
//! latest event's line is ([`Place`]), so its details are read back from the file only when
//! asked for. What a group holds is bounded whatever the number of its events.
//!
//! Nothing the watched programs chose is trusted or shown raw: every string shown passes
//! `conntrack_tray_helper::sanitize` here or in `text`, and the exports escape it too.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::IpAddr;

use conntrack_tray_helper::event::HostSource;
use conntrack_tray_helper::sanitize;
use conntrack_tray_helper::{Direction, Proto};
use serde::{Deserialize, Serialize};

use crate::history::Seen;

/// How long a value in the details may be: a command line of 4 KiB is shown whole.
pub const DETAIL_LIMIT: usize = 8192;

/// Where an event's line is: in which of the files read ([`super::files`]) and at what byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    pub segment: usize,
    pub offset: u64,
}

/// What makes events one row: the program on its machine and the destination. The program
/// is its identity (the exe path, else `comm`), so two programs of one file name stay apart.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct GroupKey {
    pub machine: String,
    /// `None`: no process could be named.
    pub program: Option<String>,
    pub remote: IpAddr,
    pub port: Option<u16>,
    pub proto: Proto,
    pub direction: Direction,
}

impl GroupKey {
    pub fn of(seen: &Seen) -> GroupKey {
        let c = &seen.conn;
        GroupKey {
            machine: seen.host.clone(),
            program: c.process.as_ref().map(|p| p.identity().to_string()),
            remote: c.remote_ip,
            port: c.remote_port,
            proto: c.proto,
            direction: c.direction,
        }
    }

    /// The key as one line of JSON (for `--focus` and the window's control input).
    pub fn to_line(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_line(line: &str) -> Option<GroupKey> {
        serde_json::from_str(line.trim()).ok()
    }
}

/// One event as the list needs it, taken from its line.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub key: GroupKey,
    /// The program's name as a person knows it (the exe's file name, or `comm`).
    pub name: Option<String>,
    pub host: Option<String>,
    pub source: Option<HostSource>,
    pub critical: bool,
    pub own: bool,
    pub ts: String,
    pub at: Place,
}

impl Row {
    pub fn of(seen: &Seen, at: Place) -> Row {
        let c = &seen.conn;
        Row {
            key: GroupKey::of(seen),
            name: c.process.as_ref().map(|p| p.program_name().to_string()),
            host: c.host.clone(),
            source: c.host_source,
            critical: c.critical,
            own: seen.own,
            ts: c.ts.clone(),
            at,
        }
    }
}

/// Every event of one program to one destination.
#[derive(Debug, Clone, PartialEq)]
pub struct Group {
    pub key: GroupKey,
    pub name: Option<String>,
    /// The latest looked-up name and where it came from.
    pub host: Option<String>,
    pub source: Option<HostSource>,
    pub count: u64,
    pub first: String,
    pub last: String,
    pub critical: bool,
    pub own: bool,
    /// The latest event's line.
    pub latest: Place,
    /// What the search looks in, lower case.
    hay: String,
}

impl Group {
    /// The program for a person: its name, sanitized.
    pub fn program(&self) -> String {
        match &self.name {
            Some(n) => crate::text::program_name(n),
            None => "unknown program".into(),
        }
    }

    /// The destination for a person: `9.9.9.9:443 (dns.quad9.net)`, the name marked with where
    /// it came from when that is not the system's resolver.
    pub fn destination(&self) -> String {
        let at = crate::text::endpoint(&self.key.remote, self.key.port);
        let mark = match self.source {
            Some(HostSource::Ptr) => "PTR ",
            Some(HostSource::OwnResolver) => "its own DNS: ",
            Some(HostSource::Dns) | None => "",
        };
        match &self.host {
            Some(h) => format!("{at} ({mark}{})", crate::text::host(h)),
            None => at,
        }
    }

    fn hay(key: &GroupKey, name: Option<&str>, host: Option<&str>) -> String {
        let mut s = String::new();
        for part in [
            Some(key.machine.as_str()),
            key.program.as_deref(),
            name,
            host,
        ]
        .into_iter()
        .flatten()
        {
            s.push_str(&part.to_lowercase());
            s.push('\n');
        }
        let _ = write!(s, "{}", key.remote);
        s
    }
}

/// Which rows are shown. Times are the helper's timestamps (RFC 3339, UTC, one format), so
/// they compare as strings; the caller turns "last hour" into one with the clock.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Filter {
    /// Words that must all be in the program, exe, machine, address or name.
    pub text: String,
    pub port: Option<u16>,
    pub proto: Option<Proto>,
    pub direction: Option<Direction>,
    pub machine: Option<String>,
    /// Only rows with an event at or after this time.
    pub since: Option<String>,
    /// "Only new": only destinations first contacted at or after this time.
    pub new_since: Option<String>,
    pub only_critical: bool,
    pub only_unknown: bool,
}

impl Filter {
    pub fn admits(&self, g: &Group) -> bool {
        let k = &g.key;
        let words = self.text.to_lowercase();
        words.split_whitespace().all(|w| g.hay.contains(w))
            && self.port.is_none_or(|p| k.port == Some(p))
            && self.proto.is_none_or(|p| k.proto == p)
            && self.direction.is_none_or(|d| k.direction == d)
            && self.machine.as_ref().is_none_or(|m| &k.machine == m)
            && self.since.as_ref().is_none_or(|t| g.last >= *t)
            && self.new_since.as_ref().is_none_or(|t| g.first >= *t)
            && (!self.only_critical || g.critical)
            && (!self.only_unknown || k.program.is_none())
    }
}

/// One line of the list: a program's heading, or one of its destinations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Line {
    /// The program of group `first` (its newest destination), with the events and
    /// destinations shown under it.
    Program {
        first: usize,
        events: u64,
        destinations: usize,
    },
    Destination(usize),
}

/// Every group read so far.
#[derive(Debug, Default)]
pub struct Model {
    groups: Vec<Group>,
    index: HashMap<GroupKey, usize>,
    pub events: u64,
    pub machines: BTreeSet<String>,
}

impl Model {
    /// Folds one event in; events come oldest first, and a later one only moves times on.
    pub fn add(&mut self, row: Row) {
        self.events += 1;
        if let Some(&i) = self.index.get(&row.key) {
            let g = &mut self.groups[i];
            g.count += 1;
            g.critical |= row.critical;
            g.own &= row.own;
            if row.ts < g.first {
                g.first = row.ts.clone();
            }
            if row.ts >= g.last {
                g.last = row.ts;
                g.latest = row.at;
                if row.host.is_some() {
                    g.host = row.host;
                    g.source = row.source;
                }
                g.name = row.name.or(g.name.take());
                g.hay = Group::hay(&g.key, g.name.as_deref(), g.host.as_deref());
            }
            return;
        }
        if !self.machines.contains(&row.key.machine) {
            self.machines.insert(row.key.machine.clone());
        }
        let hay = Group::hay(&row.key, row.name.as_deref(), row.host.as_deref());
        self.index.insert(row.key.clone(), self.groups.len());
        self.groups.push(Group {
            key: row.key,
            name: row.name,
            host: row.host,
            source: row.source,
            count: 1,
            first: row.ts.clone(),
            last: row.ts,
            critical: row.critical,
            own: row.own,
            latest: row.at,
            hay,
        });
    }

    pub fn group(&self, i: usize) -> Option<&Group> {
        self.groups.get(i)
    }

    pub fn len(&self) -> usize {
        self.groups.len()
    }

    pub fn find(&self, key: &GroupKey) -> Option<usize> {
        self.index.get(key).copied()
    }

    /// The list for `filter`: programs newest first, each followed by its destinations
    /// newest first.
    pub fn lines(&self, filter: &Filter) -> Vec<Line> {
        let mut programs: HashMap<(&str, Option<&str>), Vec<usize>> = HashMap::new();
        for (i, g) in self.groups.iter().enumerate() {
            if filter.admits(g) {
                programs
                    .entry((&g.key.machine, g.key.program.as_deref()))
                    .or_default()
                    .push(i);
            }
        }
        let mut programs: Vec<Vec<usize>> = programs.into_values().collect();
        for dests in &mut programs {
            dests.sort_by(|&a, &b| self.groups[b].last.cmp(&self.groups[a].last));
        }
        programs.sort_by(|a, b| self.groups[b[0]].last.cmp(&self.groups[a[0]].last));
        let mut lines = Vec::new();
        for dests in programs {
            lines.push(Line::Program {
                first: dests[0],
                events: dests.iter().map(|&i| self.groups[i].count).sum(),
                destinations: dests.len(),
            });
            lines.extend(dests.into_iter().map(Line::Destination));
        }
        lines
    }
}

/// The rows an export holds, one per shown destination.
#[derive(Debug, Serialize)]
struct Exported<'a> {
    machine: &'a str,
    program: Option<&'a str>,
    name: Option<&'a str>,
    direction: String,
    proto: String,
    remote: String,
    port: Option<u16>,
    host: Option<&'a str>,
    host_source: Option<HostSource>,
    count: u64,
    first_seen: &'a str,
    last_seen: &'a str,
    critical: bool,
}

fn exported(g: &Group) -> Exported<'_> {
    Exported {
        machine: &g.key.machine,
        program: g.key.program.as_deref(),
        name: g.name.as_deref(),
        direction: g.key.direction.to_string(),
        proto: g.key.proto.to_string(),
        remote: g.key.remote.to_string(),
        port: g.key.port,
        host: g.host.as_deref(),
        host_source: g.source,
        count: g.count,
        first_seen: &g.first,
        last_seen: &g.last,
        critical: g.critical,
    }
}

/// The groups as JSON lines, each hidden character a `\u` escape (`sanitize::json_line`): the
/// data as it is, safe to print.
pub fn export_jsonl<'a>(groups: impl IntoIterator<Item = &'a Group>) -> String {
    let mut out = String::new();
    for g in groups {
        if let Ok(line) = serde_json::to_string(&exported(g)) {
            out.push_str(&sanitize::json_line(&line));
            out.push('\n');
        }
    }
    out
}

const CSV_HEADER: &str = "machine,program,name,direction,proto,remote,port,host,host_source,count,first_seen,last_seen,critical";

/// The groups as CSV (RFC 4180). Hidden characters are escaped visibly (`sanitize::escape`),
/// and a cell a spreadsheet would take for a formula (`=`, `+`, `-`, `@`) starts with `'`:
/// a program's name is not to run in the reader's spreadsheet.
pub fn export_csv<'a>(groups: impl IntoIterator<Item = &'a Group>) -> String {
    let mut out = String::from(CSV_HEADER);
    out.push_str("\r\n");
    for g in groups {
        let e = exported(g);
        let source = e.host_source.map(|s| {
            serde_json::to_value(s)
                .ok()
                .and_then(|v| v.as_str().map(str::to_string))
                .unwrap_or_default()
        });
        let cells = [
            Some(e.machine.to_string()),
            e.program.map(str::to_string),
            e.name.map(str::to_string),
            Some(e.direction),
            Some(e.proto),
            Some(e.remote),
            e.port.map(|p| p.to_string()),
            e.host.map(str::to_string),
            source,
            Some(e.count.to_string()),
            Some(e.first_seen.to_string()),
            Some(e.last_seen.to_string()),
            Some(e.critical.to_string()),
        ];
        let line: Vec<String> = cells
            .iter()
            .map(|c| csv_cell(c.as_deref().unwrap_or("")))
            .collect();
        out.push_str(&line.join(","));
        out.push_str("\r\n");
    }
    out
}

fn csv_cell(s: &str) -> String {
    let mut s = sanitize::escape(s).into_owned();
    if s.starts_with(['=', '+', '-', '@']) {
        s.insert(0, '\'');
    }
    if s.contains([',', '"', '\r', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// Every field of an event's line, one per entry, for a person: `connection.process.pid:
/// 4242`. Nested objects and lists are spelled out by their path, so a field the helper adds
/// later shows without a change here. Keys and values are sanitized.
pub fn fields(v: &serde_json::Value) -> Vec<String> {
    let mut out = Vec::new();
    flatten("", v, &mut out);
    out
}

fn flatten(path: &str, v: &serde_json::Value, out: &mut Vec<String>) {
    use serde_json::Value;
    let shown = |p: &str| sanitize::display(p, DETAIL_LIMIT);
    match v {
        Value::Object(m) if !m.is_empty() => {
            for (k, v) in m {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                flatten(&p, v, out);
            }
        }
        Value::Array(a) if !a.is_empty() => {
            for (i, v) in a.iter().enumerate() {
                flatten(&format!("{path}[{i}]"), v, out);
            }
        }
        Value::String(s) => out.push(format!("{}: {}", shown(path), shown(s))),
        Value::Object(_) => out.push(format!("{}: {{}}", shown(path))),
        Value::Array(_) => out.push(format!("{}: []", shown(path))),
        other => out.push(format!("{}: {other}", shown(path))),
    }
}

#[cfg(test)]
#[path = "model_tests.rs"]
mod tests;
