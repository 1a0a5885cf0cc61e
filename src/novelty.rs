//! What the person has been told about: the programs and, for each, the destinations it has
//! contacted. A connection is a [`Novelty::NewProgram`], a [`Novelty::NewDestination`] or
//! [`Novelty::Known`], and only novelty interrupts the person (see `alerts`).
//!
//! Kept in `$XDG_STATE_HOME/conntrack-tray/learned.json` (0600 in a 0700 folder, written
//! atomically), so a restart does not make every program new again.
//!
//! The keys are what the watched program cannot choose for someone else:
//! - a program is its *verified* executable (the helper proved the file by device and inode);
//!   an unverified one is kept apart under its reported path and name, so a copy or a
//!   bind-mounted look-alike never counts as the real program already seen;
//! - a destination is the name only when the system's resolver gave it to that program
//!   (`HostSource::may_whitelist`); a name from the program's own DNS server, or a PTR name,
//!   is the program's or the address owner's choice, so the address stands instead.
//!
//! Bounded: at most [`PROGRAMS`] programs, [`DESTINATIONS`] destinations each and [`TOTAL`]
//! in all (a hostile program can make thousands of programs each contact thousands of
//! destinations), the least recently seen forgotten first (forgetting only makes something
//! new again, never quiet).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use conntrack_tray_helper::event::HostSource;
use conntrack_tray_helper::Connection;
use serde::{Deserialize, Serialize};

use crate::files;

pub const PROGRAMS: usize = 4096;
pub const DESTINATIONS: usize = 4096;
/// Destinations of all programs together (a few MB in memory and in the file).
pub const TOTAL: usize = 65_536;

/// What a connection is to the person.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Novelty {
    /// The program's first reported connection ever.
    NewProgram,
    /// A known program's first contact with this destination.
    NewDestination,
    /// A (program, destination) pair seen before.
    Known,
}

/// The program key of a connection (see the module's rules).
pub fn program_key(c: &Connection) -> String {
    match &c.process {
        Some(p) => match (&p.exe, p.exe_verified) {
            (Some(exe), true) => exe.clone(),
            (exe, _) => format!("unverified:{}:{}", exe.as_deref().unwrap_or("-"), p.comm),
        },
        None => "unknown".into(),
    }
}

/// The destination key of a connection: name or address, and port.
pub fn destination_key(c: &Connection) -> String {
    let believed = c.host_source.is_some_and(HostSource::may_whitelist);
    let at = match c.host.as_deref().filter(|_| believed) {
        Some(name) => name.to_ascii_lowercase(),
        None => c.remote_ip.to_string(),
    };
    match c.remote_port {
        Some(port) => format!("{at}:{port}"),
        None => format!("{at} {}", c.proto),
    }
}

/// A program's destinations, by key, with the tick they were last seen at.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
struct Program {
    seen: u64,
    destinations: HashMap<String, u64>,
    /// The SHA-256 of its binary when first seen (and since it was last told changed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    sha256: Option<String>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Stored {
    #[serde(default)]
    programs: BTreeMap<String, Program>,
}

/// The learned programs and destinations.
pub struct Learned {
    path: Option<PathBuf>,
    programs: HashMap<String, Program>,
    /// A counter that orders uses, for forgetting the least recent.
    clock: u64,
    /// Destinations of all programs.
    total: usize,
    dirty: bool,
}

impl Learned {
    pub fn default_path() -> Option<PathBuf> {
        directories::ProjectDirs::from("", "", "conntrack-tray")
            .and_then(|d| d.state_dir().map(|s| s.join("learned.json")))
    }

    /// Reads what was learned from `path` (`None`: memory only). A missing or unreadable file
    /// means nothing learned: everything is new, nothing is silenced by it.
    pub fn open(path: Option<PathBuf>) -> Learned {
        let stored: Stored = path
            .as_deref()
            .and_then(|p| std::fs::read(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .unwrap_or_default();
        let clock = stored
            .programs
            .values()
            .flat_map(|p| std::iter::once(p.seen).chain(p.destinations.values().copied()))
            .max()
            .unwrap_or(0);
        let programs: HashMap<String, Program> = stored.programs.into_iter().collect();
        let total = programs.values().map(|p| p.destinations.len()).sum();
        Learned {
            path,
            programs,
            clock,
            total,
            dirty: false,
        }
    }

    /// What `c` is, and learns it.
    pub fn learn(&mut self, c: &Connection) -> Novelty {
        self.clock += 1;
        let now = self.clock;
        let (program, destination) = (program_key(c), destination_key(c));
        let novelty = match self.programs.get_mut(&program) {
            Some(p) => {
                p.seen = now;
                match p.destinations.get_mut(&destination) {
                    Some(t) => {
                        *t = now;
                        return Novelty::Known;
                    }
                    None => {
                        if p.destinations.len() >= DESTINATIONS {
                            forget_oldest(&mut p.destinations);
                            self.total -= 1;
                        }
                        p.destinations.insert(destination, now);
                        self.total += 1;
                        Novelty::NewDestination
                    }
                }
            }
            None => {
                if self.programs.len() >= PROGRAMS {
                    self.forget_least_recent(None);
                }
                let mut p = Program {
                    seen: now,
                    sha256: c.process.as_ref().and_then(|p| p.exe_sha256.clone()),
                    ..Default::default()
                };
                p.destinations.insert(destination, now);
                self.programs.insert(program.clone(), p);
                self.total += 1;
                Novelty::NewProgram
            }
        };
        while self.total > TOTAL && self.programs.len() > 1 {
            self.forget_least_recent(Some(&program));
        }
        self.dirty = true;
        novelty
    }

    /// The hash a known program's binary had, when `c` shows it running another one; from
    /// then on the new hash is the one known (one notice per change). A program first seen
    /// without a hash takes the first it is seen with.
    pub fn binary_changed(&mut self, c: &Connection) -> Option<String> {
        let now = c.process.as_ref()?.exe_sha256.as_deref()?;
        let p = self.programs.get_mut(&program_key(c))?;
        match &p.sha256 {
            Some(was) if was == now => None,
            was => {
                let was = was.clone();
                p.sha256 = Some(now.to_string());
                self.dirty = true;
                was
            }
        }
    }

    /// Forgets the program seen least recently (never `keep`).
    fn forget_least_recent(&mut self, keep: Option<&str>) {
        let oldest = self
            .programs
            .iter()
            .filter(|(k, _)| Some(k.as_str()) != keep)
            .min_by_key(|(_, p)| p.seen)
            .map(|(k, _)| k.clone());
        if let Some(p) = oldest.and_then(|k| self.programs.remove(&k)) {
            self.total -= p.destinations.len();
        }
    }

    /// "Forget what was learned": everything is new again.
    pub fn forget(&mut self) {
        self.programs.clear();
        self.total = 0;
        self.dirty = true;
    }

    #[cfg(test)]
    pub fn programs(&self) -> usize {
        self.programs.len()
    }

    /// Writes the file if anything new was learned since the last save.
    pub fn save(&mut self) -> std::io::Result<()> {
        if !self.dirty {
            return Ok(());
        }
        if let Some(path) = &self.path {
            write(path, &self.programs)?;
        }
        self.dirty = false;
        Ok(())
    }

    #[cfg(test)]
    pub fn dirty(&self) -> bool {
        self.dirty
    }
}

fn forget_oldest(m: &mut HashMap<String, u64>) {
    let oldest = m.iter().min_by_key(|(_, t)| **t).map(|(k, _)| k.clone());
    if let Some(k) = oldest {
        m.remove(&k);
    }
}

fn write(path: &Path, programs: &HashMap<String, Program>) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        files::own_dir(dir)?;
    }
    let stored = Stored {
        programs: programs
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
    };
    let bytes = serde_json::to_vec(&stored).map_err(std::io::Error::other)?;
    files::write_atomically(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;
    use conntrack_tray_helper::Process;

    fn conn(exe: &str, remote: &str, port: u16) -> Connection {
        Connection {
            process: Some(fixtures::process(exe)),
            ..fixtures::connection(remote, port)
        }
    }

    #[test]
    fn a_known_program_with_another_binary_is_told_once_per_change() {
        let mut l = Learned::open(None);
        let with = |sha: Option<&str>| {
            let mut c = conn("/usr/bin/curl", "9.9.9.9", 443);
            if let Some(p) = c.process.as_mut() {
                p.exe_sha256 = sha.map(str::to_string);
            }
            c
        };
        // Unknown programs have nothing to compare with; the first hash is kept.
        assert_eq!(l.binary_changed(&with(Some("a"))), None);
        l.learn(&with(Some("a")));
        assert_eq!(l.binary_changed(&with(Some("a"))), None);
        assert_eq!(l.binary_changed(&with(None)), None, "no hash says nothing");
        assert_eq!(l.binary_changed(&with(Some("b"))), Some("a".into()));
        assert_eq!(l.binary_changed(&with(Some("b"))), None, "told once");
        // A program learned before hashes takes its first hash quietly.
        let mut old = conn("/usr/bin/git", "9.9.9.9", 443);
        l.learn(&old);
        if let Some(p) = old.process.as_mut() {
            p.exe_sha256 = Some("c".into());
        }
        assert_eq!(l.binary_changed(&old), None);
    }

    #[test]
    fn first_program_then_new_destination_then_known() {
        let mut l = Learned::open(None);
        assert_eq!(
            l.learn(&conn("/usr/bin/curl", "9.9.9.9", 443)),
            Novelty::NewProgram
        );
        assert_eq!(
            l.learn(&conn("/usr/bin/curl", "9.9.9.9", 443)),
            Novelty::Known
        );
        assert_eq!(
            l.learn(&conn("/usr/bin/curl", "9.9.9.9", 80)),
            Novelty::NewDestination
        );
        assert_eq!(
            l.learn(&conn("/usr/bin/wget", "9.9.9.9", 443)),
            Novelty::NewProgram
        );
        l.forget();
        assert_eq!(
            l.learn(&conn("/usr/bin/curl", "9.9.9.9", 443)),
            Novelty::NewProgram
        );
    }

    #[test]
    fn an_unverified_look_alike_is_not_the_program_already_seen() {
        let mut l = Learned::open(None);
        l.learn(&conn("/usr/bin/ssh", "9.9.9.9", 22));
        let mut fake = conn("/usr/bin/ssh", "9.9.9.9", 22);
        fake.process = Some(Process {
            exe_verified: false,
            ..fixtures::process("/usr/bin/ssh")
        });
        assert_eq!(l.learn(&fake), Novelty::NewProgram);
    }

    #[test]
    fn a_name_from_the_programs_own_resolver_is_no_destination_of_its_own() {
        let mut l = Learned::open(None);
        let named = |host: &str, source| Connection {
            host: Some(host.into()),
            host_source: Some(source),
            ..conn("/usr/bin/curl", "6.6.6.6", 443)
        };
        l.learn(&named("github.com", HostSource::Dns));
        // The same address under a name the program chose is the address, not github.com.
        assert_eq!(
            destination_key(&named("github.com", HostSource::OwnResolver)),
            "6.6.6.6:443"
        );
        assert_eq!(
            l.learn(&named("github.com", HostSource::OwnResolver)),
            Novelty::NewDestination
        );
        assert_eq!(
            l.learn(&named("GitHub.com", HostSource::Dns)),
            Novelty::Known
        );
    }

    #[test]
    fn what_was_learned_survives_a_restart_in_a_private_file() {
        let dir = tempfile::tempdir().expect("tmp");
        let path = dir.path().join("state/learned.json");
        let mut l = Learned::open(Some(path.clone()));
        l.learn(&conn("/usr/bin/curl", "9.9.9.9", 443));
        l.save().expect("save");
        assert!(!l.dirty());
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&path).expect("file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let mut again = Learned::open(Some(path));
        assert_eq!(again.programs(), 1);
        assert_eq!(
            again.learn(&conn("/usr/bin/curl", "9.9.9.9", 443)),
            Novelty::Known
        );
    }

    #[test]
    fn many_programs_with_many_destinations_stay_within_the_total() {
        let mut l = Learned::open(None);
        for p in 0..40 {
            for d in 0..2000u32 {
                let ip = std::net::Ipv4Addr::from(0x0a00_0000 + d).to_string();
                l.learn(&conn(&format!("/tmp/x/p{p}"), &ip, 443));
            }
        }
        assert!(l.total <= TOTAL, "{}", l.total);
        let counted: usize = l.programs.values().map(|p| p.destinations.len()).sum();
        assert_eq!(counted, l.total);
        // The newest program is all there; the oldest went first.
        assert_eq!(l.programs["/tmp/x/p39"].destinations.len(), 2000);
        assert!(!l.programs.contains_key("/tmp/x/p0"));
    }

    #[test]
    fn bounded_and_the_least_recent_goes_first() {
        let mut l = Learned::open(None);
        for i in 0..(DESTINATIONS + 10) {
            let ip = format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256);
            l.learn(&conn("/usr/bin/curl", &ip, 443));
        }
        let p = &l.programs["/usr/bin/curl"];
        assert_eq!(p.destinations.len(), DESTINATIONS);
        assert!(!p.destinations.contains_key("10.0.0.0:443"));
        assert!(p.destinations.contains_key(&format!(
            "10.0.{}.{}:443",
            (DESTINATIONS + 9) / 256 % 256,
            (DESTINATIONS + 9) % 256
        )));
    }
}
