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
use crate::event::{AttributedBy, ChangedSince, Connection, ExeChanged, HostSource, Process};
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
/// so only a flow that would be reported counts as a repeat.
pub fn repeat_rule(
    cfg: &Config,
    sides: &Sides,
    process: Option<&Process>,
    repeats: &mut RepeatFilter,
    now: Instant,
) -> Result<(), Skip> {
    let window = Duration::from_secs(cfg.filter.repeat_after_secs);
    let key = RepeatKey {
        program: process.map(|p| p.exe.clone().unwrap_or_else(|| p.comm.clone())),
        proto: sides.socket.proto,
        remote_ip: sides.remote_ip,
        remote_port: sides.remote_port,
    };
    if !repeats.first_in_window(key, window, now) {
        return Err(Skip::Repeat);
    }
    Ok(())
}

/// What makes two reports "the same": program, protocol, remote address and port.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RepeatKey {
    /// The exe path, or `comm` when the path is unknown; `None` for unknown processes.
    pub program: Option<String>,
    pub proto: Proto,
    pub remote_ip: std::net::IpAddr,
    pub remote_port: u16,
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
mod tests {
    use super::*;
    use crate::config::{ProtoSel, RemoteNet};
    use crate::direction::{classify, LocalAddrs};

    fn sides(proto: Proto, src: &str, sport: u16, dst: &str, dport: u16) -> Sides {
        let flow = crate::flow::fixtures::flow(proto, src, sport, dst, dport);
        classify(&flow, &LocalAddrs::new(["10.0.0.1".parse().expect("ip")]))
    }

    fn out(dport: u16) -> Sides {
        sides(Proto::Tcp, "10.0.0.1", 40000, "93.184.216.34", dport)
    }

    fn proc_(comm: &str, exe: &str) -> Process {
        Process {
            pid: 42,
            comm: comm.into(),
            exe: Some(exe.into()),
            cmdline: vec![comm.into()],
            uid: 1000,
            user: Some("alice".into()),
            exe_verified: true,
            exe_system: true,
            ..Default::default()
        }
    }

    /// The rules after attribution, in the pipeline's order (no name).
    fn after_attribution(
        cfg: &Config,
        s: &Sides,
        p: Option<&Process>,
        alone: bool,
        repeats: &mut RepeatFilter,
        now: Instant,
    ) -> Result<(), Skip> {
        process_rule(cfg, s, p, alone)?;
        repeat_rule(cfg, s, p, repeats, now)
    }

    fn run(cfg: &Config, s: &Sides, p: Option<&Process>) -> Result<(), Skip> {
        before_attribution(cfg, s)?;
        after_attribution(cfg, s, p, true, &mut RepeatFilter::new(16), Instant::now())
    }

    #[test]
    fn tcp_only_by_default_and_all_protocols_on_request() {
        let mut cfg = Config::default();
        let udp = sides(Proto::Udp, "10.0.0.1", 4000, "9.9.9.9", 53);
        assert_eq!(before_attribution(&cfg, &udp), Err(Skip::Protocol));
        assert_eq!(before_attribution(&cfg, &out(443)), Ok(()));
        cfg.monitor.protocols = vec![ProtoSel::All];
        assert_eq!(before_attribution(&cfg, &udp), Ok(()));
    }

    #[test]
    fn forward_is_off_by_default_unless_a_local_container_s() {
        let mut cfg = Config::default();
        let fwd = sides(Proto::Tcp, "192.168.1.2", 4000, "9.9.9.9", 443);
        // It may be a container's outbound flow: that is known after attribution.
        assert_eq!(before_attribution(&cfg, &fwd), Ok(()));
        let mut routed = fwd;
        assert_eq!(forward_rule(&cfg, &mut routed, None), Err(Skip::Direction));
        let by = Some(AttributedBy::Socket);
        assert_eq!(forward_rule(&cfg, &mut routed, by), Err(Skip::Direction));
        let mut container = fwd;
        let by = Some(AttributedBy::Container);
        assert_eq!(forward_rule(&cfg, &mut container, by), Ok(()));
        assert_eq!(container.direction, Direction::Outbound);
        cfg.monitor.directions = vec![Direction::Inbound];
        assert_eq!(before_attribution(&cfg, &fwd), Err(Skip::Direction));
        cfg.monitor.directions.push(Direction::Forward);
        assert_eq!(forward_rule(&cfg, &mut { fwd }, None), Ok(()));
        assert_eq!(before_attribution(&cfg, &fwd), Ok(()));
        cfg.monitor.directions = vec![Direction::Forward];
        assert_eq!(before_attribution(&cfg, &out(443)), Err(Skip::Direction));
    }

    #[test]
    fn loopback_is_ignored_unless_asked_for() {
        let mut cfg = Config::default();
        let lo = sides(Proto::Tcp, "127.0.0.1", 4000, "127.0.0.1", 8080);
        assert_eq!(before_attribution(&cfg, &lo), Err(Skip::Loopback));
        cfg.filter.ignore_loopback = false;
        assert_eq!(before_attribution(&cfg, &lo), Ok(()));
    }

    #[test]
    fn whitelisted_cidr_is_silent_in_both_families() {
        let mut cfg = Config::default();
        cfg.whitelist.remote = vec![
            "93.184.0.0/16".parse::<RemoteNet>().expect("net"),
            "2001:db8::/32".parse().expect("net"),
        ];
        assert_eq!(
            before_attribution(&cfg, &out(443)),
            Err(Skip::RemoteWhitelisted)
        );
        let v6 = sides(Proto::Tcp, "::1", 4000, "2001:db8::9", 443);
        // ::1 is loopback only at both ends; this one goes out.
        assert_eq!(before_attribution(&cfg, &v6), Err(Skip::RemoteWhitelisted));
        let other = sides(Proto::Tcp, "10.0.0.1", 4000, "93.185.0.1", 443);
        assert_eq!(before_attribution(&cfg, &other), Ok(()));
    }

    #[test]
    fn inbound_whitelist_applies_to_the_client_address() {
        let mut cfg = Config::default();
        cfg.whitelist.remote = vec!["198.51.100.7".parse().expect("net")];
        let inbound = sides(Proto::Tcp, "198.51.100.7", 51000, "10.0.0.1", 22);
        assert_eq!(
            before_attribution(&cfg, &inbound),
            Err(Skip::RemoteWhitelisted)
        );
    }

    #[test]
    fn process_whitelist_by_path_and_by_the_name_of_a_system_file_never_by_comm() {
        let curl = proc_("curl", "/usr/bin/curl");
        assert!(process_matches("curl", &curl));
        assert!(process_matches("/usr/bin/curl", &curl));
        assert!(!process_matches("/usr/local/bin/curl", &curl));
        assert!(!process_matches("cur", &curl));
        assert!(!process_matches("bin/curl", &curl));
        // comm is the program's own choice (prctl(PR_SET_NAME)): it never matches.
        let ff = proc_("MainThread", "/usr/lib/firefox/firefox");
        assert!(process_matches("firefox", &ff));
        assert!(!process_matches("MainThread", &ff));
        let renamed = proc_("ssh", "/usr/bin/python3");
        assert!(!process_matches("ssh", &renamed));

        // A copy named `ssh` in the user's own folder: the path matches itself only, the bare
        // name not at all.
        let copy = Process {
            exe_system: false,
            ..proc_("ssh", "/home/alice/.cache/x/ssh")
        };
        assert!(!process_matches("ssh", &copy));
        assert!(process_matches("/home/alice/.cache/x/ssh", &copy));
        // An exe the helper could not verify (another mount namespace, gone, replaced)
        // matches nothing, not even its own path.
        let unverified = Process {
            exe_verified: false,
            exe_system: false,
            exe_unverified: Some("runs in another mount namespace".into()),
            ..proc_("ssh", "/usr/bin/ssh")
        };
        assert!(!process_matches("/usr/bin/ssh", &unverified));
        assert!(!process_matches("ssh", &unverified));
        let gone = Process {
            exe: None,
            exe_verified: false,
            ..proc_("ssh", "/usr/bin/ssh")
        };
        assert!(!process_matches("ssh", &gone));

        let mut cfg = Config::default();
        assert!(
            cfg.whitelist.processes.is_empty(),
            "the default trusts no program"
        );
        cfg.whitelist.processes = vec!["firefox".into()];
        assert_eq!(
            run(&cfg, &out(443), Some(&ff)),
            Err(Skip::ProcessWhitelisted)
        );
        assert_eq!(run(&cfg, &out(443), Some(&curl)), Ok(()));
    }

    #[test]
    fn unknown_processes_follow_show_unknown() {
        let mut cfg = Config::default();
        assert_eq!(run(&cfg, &out(443), None), Ok(()));
        cfg.filter.show_unknown = false;
        assert_eq!(run(&cfg, &out(443), None), Err(Skip::Unknown));
    }

    #[test]
    fn critical_ports_are_numbers_not_substrings() {
        let mut cfg = Config::default();
        cfg.critical.ports = vec![80];
        assert!(is_critical(&cfg, &out(80)));
        assert!(!is_critical(&cfg, &out(8080)));
        assert!(!is_critical(&cfg, &out(8)));
        // The local port of an outbound flow does not count.
        let s = sides(Proto::Tcp, "10.0.0.1", 80, "9.9.9.9", 5000);
        assert!(!is_critical(&cfg, &s));
        // ... but for an inbound flow it does.
        let inbound = sides(Proto::Tcp, "9.9.9.9", 5000, "10.0.0.1", 80);
        assert!(is_critical(&cfg, &inbound));
        // ICMP has no ports.
        let icmp = sides(Proto::Icmp, "10.0.0.1", 0, "9.9.9.9", 0);
        cfg.critical.ports = vec![0];
        assert!(!is_critical(&cfg, &icmp));
    }

    #[test]
    fn critical_only_drops_the_rest() {
        let mut cfg = Config::default();
        cfg.filter.critical_only = true;
        let curl = proc_("curl", "/usr/bin/curl");
        assert_eq!(run(&cfg, &out(443), Some(&curl)), Ok(()));
        assert_eq!(run(&cfg, &out(8443), Some(&curl)), Err(Skip::NotCritical));
    }

    #[test]
    fn repeat_filter_reports_once_per_window() {
        let cfg = Config::default(); // 300 s
        let curl = proc_("curl", "/usr/bin/curl");
        let mut rep = RepeatFilter::new(16);
        let t0 = Instant::now();
        let s = out(443);
        let mut go = |s: &Sides, p: Option<&Process>, t: Instant| {
            after_attribution(&cfg, s, p, true, &mut rep, t)
        };
        assert_eq!(go(&s, Some(&curl), t0), Ok(()));
        assert_eq!(
            go(&s, Some(&curl), t0 + Duration::from_secs(10)),
            Err(Skip::Repeat)
        );
        // Another port, program or unknown process is another key.
        assert_eq!(go(&out(80), Some(&curl), t0), Ok(()));
        assert_eq!(go(&s, Some(&proc_("wget", "/usr/bin/wget")), t0), Ok(()));
        assert_eq!(go(&s, None, t0), Ok(()));
        // A suppressed repeat does not extend the window.
        assert_eq!(
            go(&s, Some(&curl), t0 + Duration::from_secs(299)),
            Err(Skip::Repeat)
        );
        assert_eq!(go(&s, Some(&curl), t0 + Duration::from_secs(300)), Ok(()));
    }

    #[test]
    fn repeat_window_zero_reports_every_flow() {
        let mut cfg = Config::default();
        cfg.filter.repeat_after_secs = 0;
        let mut rep = RepeatFilter::new(16);
        let t0 = Instant::now();
        for _ in 0..3 {
            assert_eq!(
                after_attribution(&cfg, &out(443), None, true, &mut rep, t0),
                Ok(())
            );
        }
        assert!(rep.is_empty());
    }

    #[test]
    fn repeat_memory_is_bounded_and_forgets_the_oldest() {
        let cfg = Config::default();
        let mut rep = RepeatFilter::new(4);
        let t0 = Instant::now();
        for port in 1..=10 {
            assert_eq!(
                after_attribution(&cfg, &out(port), None, true, &mut rep, t0),
                Ok(())
            );
        }
        assert_eq!(rep.len(), 4);
        assert_eq!(rep.evicted(), 6);
        // Port 1 was forgotten, so it is reported again; port 10 is still remembered.
        assert_eq!(
            after_attribution(&cfg, &out(1), None, true, &mut rep, t0),
            Ok(())
        );
        assert_eq!(
            after_attribution(&cfg, &out(10), None, true, &mut rep, t0),
            Err(Skip::Repeat)
        );
    }

    #[test]
    fn whitelisted_flows_do_not_enter_the_repeat_memory() {
        let mut cfg = Config::default();
        cfg.whitelist.processes = vec!["firefox".into()];
        let mut rep = RepeatFilter::new(16);
        let ff = proc_("firefox", "/usr/lib/firefox/firefox");
        let r = after_attribution(&cfg, &out(443), Some(&ff), true, &mut rep, Instant::now());
        assert_eq!(r, Err(Skip::ProcessWhitelisted));
        assert!(rep.is_empty());
    }

    #[test]
    fn a_shared_or_unchecked_socket_matches_no_whitelist_entry() {
        let mut cfg = Config::default();
        cfg.whitelist.processes = vec!["firefox".into(), "/usr/lib/firefox/firefox".into()];
        let ff = proc_("firefox", "/usr/lib/firefox/firefox");
        let mut rep = RepeatFilter::new(16);
        let now = Instant::now();
        assert_eq!(
            after_attribution(&cfg, &out(443), Some(&ff), true, &mut rep, now),
            Err(Skip::ProcessWhitelisted)
        );
        // The same process, its socket held by another too (or not every holder checked).
        assert_eq!(
            after_attribution(&cfg, &out(443), Some(&ff), false, &mut rep, now),
            Ok(())
        );
    }
}

#[cfg(test)]
#[path = "filter_pin_tests.rs"]
mod pin_tests;
