//! Which flows are worth telling the person about. Pure: no clock, no OS.
//!
//! The rules run in a fixed order, cheapest first, and split so that a flow dropped on
//! protocol, direction, loopback or remote address never costs a process lookup:
//! [`before_attribution`], then with the process (or none) [`process_rule`], so a
//! whitelisted program's flow costs no name lookup, then [`host_rule`] (a name counts only
//! once the process that looked it up is known), and last [`repeat_rule`].

use std::num::NonZeroUsize;
use std::time::{Duration, Instant};

use lru::LruCache;

use crate::config::{Config, Whitelist};
use crate::direction::Sides;
use crate::event::{
    AttributedBy, ChangedSince, Connection, ExeChanged, FileVersion, HostSource, Process,
};
use crate::flow::{Direction, Proto};

/// Why a flow was not reported; shown with `--debug`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Skip {
    Protocol,
    Direction,
    Loopback,
    RemoteWhitelisted,
    HostWhitelisted,
    ProgramHostWhitelisted,
    ProcessWhitelisted,
    Unknown,
    NotCritical,
    Repeat,
}

/// Whether a port pair touches a critical port: the remote port, and for inbound flows also
/// the local one (someone connecting to our web server). Numbers, never substrings.
pub fn is_critical(cfg: &Config, sides: &Sides) -> bool {
    if !sides.socket.proto.has_ports() {
        return false;
    }
    let ports = &cfg.critical.ports;
    ports.contains(&sides.remote_port)
        || (sides.direction == Direction::Inbound && ports.contains(&sides.local_port))
}

/// The rules that need no process: protocol, direction, loopback, remote whitelist.
pub fn before_attribution(cfg: &Config, sides: &Sides) -> Result<(), Skip> {
    if !cfg.watches_proto(sides.socket.proto) {
        return Err(Skip::Protocol);
    }
    // A forwarded flow may be a local container's outbound one: that is known only once
    // its process is found (see `forward_rule`).
    let container = sides.direction == Direction::Forward
        && cfg.monitor.directions.contains(&Direction::Outbound);
    if !cfg.monitor.directions.contains(&sides.direction) && !container {
        return Err(Skip::Direction);
    }
    if cfg.filter.ignore_loopback && sides.is_loopback() {
        return Err(Skip::Loopback);
    }
    if cfg
        .whitelist
        .remote
        .iter()
        .any(|net| net.contains(&sides.remote_ip))
    {
        return Err(Skip::RemoteWhitelisted);
    }
    Ok(())
}

/// A forwarded flow whose process was found in another network namespace on this machine
/// (a container's) is that machine's outbound flow: it is reported as one, and stands or
/// falls with the outbound direction. Any other forwarded flow only when forwarded flows are
/// watched.
pub fn forward_rule(cfg: &Config, sides: &mut Sides, by: Option<AttributedBy>) -> Result<(), Skip> {
    if sides.direction != Direction::Forward {
        return Ok(());
    }
    if by == Some(AttributedBy::Container) {
        sides.direction = Direction::Outbound;
        return Ok(());
    }
    if cfg.monitor.directions.contains(&Direction::Forward) {
        Ok(())
    } else {
        Err(Skip::Direction)
    }
}

/// The name the connecting process looked up, against `whitelist.hosts` and
/// `whitelist.program_hosts`. Only a name from one of the system's resolvers counts: a PTR
/// name is the address owner's choice, and a name from a server of the program's own
/// choosing is the program's (see [`HostSource::may_whitelist`]).
pub fn host_rule(
    cfg: &Config,
    process: Option<&Process>,
    host: Option<(&str, HostSource)>,
) -> Result<(), Skip> {
    host_whitelisted(&cfg.whitelist, process, host).map_or(Ok(()), Err)
}

/// Which host entry of `wl`, if any, accepts `host` for `process`.
fn host_whitelisted(
    wl: &Whitelist,
    process: Option<&Process>,
    host: Option<(&str, HostSource)>,
) -> Option<Skip> {
    let (name, _) = host.filter(|(_, source)| source.may_whitelist())?;
    if wl.hosts.iter().any(|p| p.matches(name)) {
        return Some(Skip::HostWhitelisted);
    }
    let paired = process.is_some_and(|p| {
        wl.program_hosts
            .iter()
            .any(|e| e.host.matches(name) && process_matches(&e.program, p))
            && pin_holds(wl, p)
    });
    paired.then_some(Skip::ProgramHostWhitelisted)
}

/// Whether an entry of `whitelist.started_by` names this process: the program as an entry of
/// `processes` would, and its parent (the first of its ancestors) by its verified path, but
/// only where the kernel's fork record proves that parent forked it, running that very file
/// ([`Process::parent_forked`]). A program can be handed to a reaper or given its caller's
/// parent (`CLONE_PARENT`), so a parent alone proves nothing.
pub fn started_by(wl: &Whitelist, p: &Process) -> bool {
    let parent = p
        .ancestors
        .first()
        .filter(|a| p.parent_forked && a.exe_verified)
        .and_then(|a| a.exe.as_deref());
    parent.is_some_and(|parent| {
        wl.started_by
            .iter()
            .any(|e| e.parent.0 == parent && process_matches(&e.program, p))
    })
}

/// Whether a process entry of `wl` (`processes`, or `started_by` with its proof) silences
/// the process, pins aside.
fn process_entry(wl: &Whitelist, p: &Process) -> bool {
    wl.processes.iter().any(|e| process_matches(e, p)) || started_by(wl, p)
}

/// Whether a reported connection falls under `wl` now (the applet asks, for connections
/// reported before the person added an entry): the same rules as the helper's, on the same
/// evidence.
pub fn whitelisted(wl: &Whitelist, c: &Connection) -> bool {
    // A process that shared the socket with others is no evidence (see [`process_rule`]).
    let alone = c.also_held_by.is_empty() && c.also_held_by_more == 0 && !c.holders_incomplete;
    let process = c.process.as_ref().filter(|_| alone);
    process.is_some_and(|p| process_entry(wl, p) && pin_holds(wl, p))
        || wl.remote.iter().any(|r| r.contains(&c.remote_ip))
        || host_whitelisted(wl, process, c.host.as_deref().zip(c.host_source)).is_some()
}

/// Whether a whitelist entry names this process, on evidence the process cannot forge.
///
/// An absolute path matches only a verified executable at exactly that path (the very file,
/// by device and inode: see [`crate::attribution::exe`]). A bare name matches the verified
/// executable's file name, and only for a system file (owned by root, in folders only root
/// can write), since anyone can copy a program under any name into their own folders. The
/// process name (`comm`) never matches: a program sets its own.
pub fn process_matches(entry: &str, p: &Process) -> bool {
    let Some(exe) = p.exe.as_deref().filter(|_| p.exe_verified) else {
        return false;
    };
    if entry.starts_with('/') {
        exe == entry
    } else {
        p.exe_system && exe.rsplit('/').next().is_some_and(|name| name == entry)
    }
}

/// The hashes pinned (`whitelist.pinned`) for the process's verified executable.
fn pins<'a>(wl: &'a Whitelist, p: &'a Process) -> impl Iterator<Item = &'a str> + 'a {
    let exe = p.exe.as_deref().filter(|_| p.exe_verified);
    wl.pinned
        .iter()
        .filter(move |pin| Some(pin.program.0.as_str()) == exe)
        .map(|pin| pin.sha256.0.as_str())
}

/// Whether the process runs a binary its pins allow: its file has no pin (settings from
/// before pins keep their meaning), or it has the hash of one. An unknown hash (not hashed,
/// too large) allows nothing that is pinned.
pub fn pin_holds(wl: &Whitelist, p: &Process) -> bool {
    let mut pins = pins(wl, p).peekable();
    pins.peek().is_none()
        || p.exe_sha256
            .as_deref()
            .is_some_and(|h| pins.any(|pin| pin == h))
}

/// Whether an entry of `processes`, `started_by` or `program_hosts` names the process (pins
/// aside).
fn named_by(wl: &Whitelist, p: &Process) -> bool {
    process_entry(wl, p)
        || wl
            .program_hosts
            .iter()
            .any(|e| process_matches(&e.program, p))
}

/// Whether a verdict on this process depends on its hash: an entry names it and its file
/// has a pin. Only then does the pipeline wait for the hash.
pub fn needs_hash(wl: &Whitelist, p: &Process) -> bool {
    pins(wl, p).next().is_some() && named_by(wl, p)
}

/// A whitelisted program that runs another binary than the one pinned when it was
/// whitelisted: what the event says about it (the newest pin as `was`).
pub fn exe_changed(wl: &Whitelist, p: &Process) -> Option<ExeChanged> {
    if pin_holds(wl, p) || !named_by(wl, p) {
        return None;
    }
    Some(ExeChanged {
        path: p.exe.clone()?,
        was: pins(wl, p).last()?.to_string(),
        now: p.exe_sha256.clone(),
        since: ChangedSince::Whitelisted,
    })
}

/// The rules that need the process: process whitelist, `show_unknown`, `critical_only`.
///
/// `alone`: the process is proven the only holder of the flow's socket, or a kernel record
/// named it. A socket several processes hold may have been used by any of them, so a
/// whitelist entry for one of them does not speak for the flow: a program that passes its
/// socket to a trusted one (or runs one with it inherited) and sends on it is reported.
pub fn process_rule(
    cfg: &Config,
    sides: &Sides,
    process: Option<&Process>,
    alone: bool,
) -> Result<(), Skip> {
    match process {
        Some(p) if alone && process_entry(&cfg.whitelist, p) && pin_holds(&cfg.whitelist, p) => {
            return Err(Skip::ProcessWhitelisted);
        }
        None if !cfg.filter.show_unknown => return Err(Skip::Unknown),
        _ => {}
    }
    if cfg.filter.critical_only && !is_critical(cfg, sides) {
        return Err(Skip::NotCritical);
    }
    Ok(())
}

/// The last rule, the repeat filter: run only for flows that every other rule lets through,
/// so only a flow that would be reported counts as a repeat. `alone` as for
/// [`process_rule`].
pub fn repeat_rule(
    cfg: &Config,
    sides: &Sides,
    process: Option<&Process>,
    alone: bool,
    repeats: &mut RepeatFilter,
    now: Instant,
) -> Result<(), Skip> {
    let window = Duration::from_secs(cfg.filter.repeat_after_secs);
    let key = RepeatKey {
        who: Who::of(process, alone),
        proto: sides.socket.proto,
        remote_ip: sides.remote_ip,
        remote_port: sides.remote_port,
    };
    if !repeats.first_in_window(key, window, now) {
        return Err(Skip::Repeat);
    }
    Ok(())
}

/// What makes two reports "the same": who, protocol, remote address and port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepeatKey {
    pub who: Who,
    pub proto: Proto,
    pub remote_ip: std::net::IpAddr,
    pub remote_port: u16,
}

/// Who made a flow, as the repeat filter tells them apart: on the same evidence as the
/// whitelist. A repeat is not reported, so a flow must never count as a repeat of another
/// program's: the watched code would name itself after a program the person just saw
/// connect (its `comm`, an exe path in a mount namespace of its own) and its flows to the
/// same place would go unreported for the window.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Who {
    /// A verified executable, alone on its socket: the file at that path, and which version
    /// of it (a binary replaced at the path is another program).
    Program {
        exe: String,
        version: Option<FileVersion>,
    },
    /// Any other process is only itself: its pid, with the name and path it gave (so that a
    /// pid reused within the window must also claim the same ones), and whether its socket
    /// was held by others too.
    Process {
        pid: u32,
        comm: String,
        exe: Option<String>,
        shared: bool,
    },
    /// No process known.
    Unknown,
}

impl Who {
    pub fn of(process: Option<&Process>, alone: bool) -> Who {
        match process {
            None => Who::Unknown,
            Some(p) => match p.exe.as_ref().filter(|_| p.exe_verified && alone) {
                Some(exe) => Who::Program {
                    exe: exe.clone(),
                    version: p.exe_file,
                },
                None => Who::Process {
                    pid: p.pid,
                    comm: p.comm.clone(),
                    exe: p.exe.clone(),
                    shared: !alone,
                },
            },
        }
    }
}

/// Remembers when each key was last reported. Bounded: the least recently reported key is
/// forgotten first, so a flood of distinct flows costs at most `capacity` entries.
pub struct RepeatFilter {
    seen: LruCache<RepeatKey, Instant>,
    evicted: u64,
}

impl RepeatFilter {
    pub const DEFAULT_CAPACITY: usize = 8192;

    pub fn new(capacity: usize) -> RepeatFilter {
        let cap = NonZeroUsize::new(capacity).unwrap_or(NonZeroUsize::MIN);
        RepeatFilter {
            seen: LruCache::new(cap),
            evicted: 0,
        }
    }

    /// True when `key` was not reported within `window` before `now`, and records it as
    /// reported now. A zero window turns the filter off.
    pub fn first_in_window(&mut self, key: RepeatKey, window: Duration, now: Instant) -> bool {
        if window.is_zero() {
            return true;
        }
        if let Some(last) = self.seen.get(&key) {
            if now.saturating_duration_since(*last) < window {
                return false;
            }
        }
        // `push` hands back either the old entry of the same key or the one it evicted.
        let existed = self.seen.contains(&key);
        if self.seen.push(key, now).is_some() && !existed {
            self.evicted += 1;
        }
        true
    }

    pub fn len(&self) -> usize {
        self.seen.len()
    }

    pub fn is_empty(&self) -> bool {
        self.seen.is_empty()
    }

    /// How many keys were forgotten to stay within capacity.
    pub fn evicted(&self) -> u64 {
        self.evicted
    }

    /// Forgets everything, e.g. when the filter config changes.
    pub fn clear(&mut self) {
        self.seen.clear();
    }
}

#[cfg(test)]
#[path = "filter_tests.rs"]
mod tests;

#[cfg(test)]
#[path = "filter_pin_tests.rs"]
mod pin_tests;
