//! One flow in, at most one report out: classification, the filter rules, naming and
//! attribution in their fixed order. No threads and no I/O of its own: attribution and names
//! are handed in ([`Attributor`], [`Names`]), so the whole decision path is tested with
//! recorded flows, a table of sockets and DNS answers fed by hand.

use std::time::{Instant, SystemTime};

use crate::attribution::exe_hash::ExeHashes;
use crate::attribution::{Attribution, Attributor};
use crate::commands::Command;
use crate::config::Config;
use crate::direction::{classify, LocalAddrs};
use crate::event::HostSource;
use crate::event::{Connection, Event, Family};
use crate::filter::{self, RepeatFilter, Skip};
use crate::flow::{Flow, FlowEvent};
use crate::names::Names;

/// Counters for `--debug` and the benchmark.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Stats {
    pub flows: u64,
    pub reported: u64,
    pub attributed: u64,
    pub unattributed: u64,
    pub skipped: u64,
    pub paused: u64,
}

pub struct Pipeline<A> {
    cfg: Config,
    addrs: LocalAddrs,
    names: Names,
    repeats: RepeatFilter,
    attributor: A,
    /// The executables' hashes; without them (tests) a process keeps the hash it came with.
    hashes: Option<ExeHashes>,
    paused: bool,
    pub stats: Stats,
}

/// What became of one flow.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Report(Box<Connection>),
    Skipped(Skip),
    Paused,
    /// Not a NEW event.
    Ignored,
}

/// RFC 3339, UTC, microseconds.
pub fn timestamp(t: SystemTime) -> String {
    humantime::format_rfc3339_micros(t).to_string()
}

impl<A: Attributor> Pipeline<A> {
    /// A pipeline that names processes with `attributor` and addresses with `names`.
    pub fn new(cfg: Config, addrs: LocalAddrs, attributor: A, names: Names) -> Self {
        Pipeline {
            cfg,
            addrs,
            names,
            repeats: RepeatFilter::new(RepeatFilter::DEFAULT_CAPACITY),
            attributor,
            hashes: None,
            paused: false,
            stats: Stats::default(),
        }
    }

    /// Names each process's executable by hash (see [`crate::attribution::exe_hash`]).
    pub fn with_hashes(mut self, hashes: ExeHashes) -> Self {
        self.hashes = Some(hashes);
        self
    }

    /// The hash of the process's executable, waited for only when a whitelist verdict
    /// depends on it, and whether it is the one pinned when it was whitelisted.
    fn identify(&self, p: &mut crate::event::Process) {
        if let Some(h) = &self.hashes {
            h.fill(p, filter::needs_hash(&self.cfg.whitelist, p));
        }
        p.exe_changed = filter::exe_changed(&self.cfg.whitelist, p).map(Box::new);
    }

    pub fn config(&self) -> &Config {
        &self.cfg
    }

    pub fn set_addrs(&mut self, addrs: LocalAddrs) {
        self.addrs = addrs;
    }

    /// How full the bounded tables are and how much they forgot to stay bounded, for `--debug`.
    pub fn tables(&self) -> String {
        format!(
            "repeat memory {} (forgot {}), {}",
            self.repeats.len(),
            self.repeats.evicted(),
            self.names.tables()
        )
    }

    /// Things to tell the reader (a reverse-DNS worker that could not start).
    pub fn take_notices(&mut self) -> Vec<String> {
        self.names.take_notices()
    }

    /// The names, for the capture's timer and for tests that feed answers by hand.
    pub fn names_mut(&mut self) -> &mut Names {
        &mut self.names
    }

    /// Applies a stdin command; returns the acknowledgement to send.
    pub fn command(&mut self, cmd: Command) -> Event {
        let name = cmd.name().to_string();
        match cmd {
            Command::Config { config } => {
                if config.filter != self.cfg.filter || config.whitelist != self.cfg.whitelist {
                    // New rules: what was suppressed as a repeat under the old ones may matter now.
                    self.repeats.clear();
                }
                self.cfg = *config;
            }
            Command::Pause => self.paused = true,
            Command::Resume => self.paused = false,
            // The service loop keeps the heartbeat's time; nothing in the filter changes.
            Command::Heartbeat => {}
        }
        Event::Ack { cmd: name }
    }

    /// Decides about one flow. `at` is when it was read (the report's timestamp), `now` the
    /// monotonic clock for the repeat window.
    /// `now` is when the event was read (the repeat window and attribution go by it), `early`
    /// the reader's attribution, when it made one.
    pub fn flow(
        &mut self,
        flow: &Flow,
        at: SystemTime,
        now: Instant,
        early: Option<Attribution>,
    ) -> Outcome {
        self.flow_with(flow, at, now, early, true)
    }

    /// As [`Pipeline::flow`]; `may_wait` says whether a reverse lookup may hold this flow for
    /// its timeout (not while others are queued behind it).
    pub fn flow_with(
        &mut self,
        flow: &Flow,
        at: SystemTime,
        now: Instant,
        early: Option<Attribution>,
        may_wait: bool,
    ) -> Outcome {
        if flow.event != FlowEvent::New {
            return Outcome::Ignored;
        }
        self.stats.flows += 1;
        if self.paused {
            self.stats.paused += 1;
            return Outcome::Paused;
        }
        let mut sides = classify(flow, &self.addrs);
        if let Err(skip) = filter::before_attribution(&self.cfg, &sides) {
            self.stats.skipped += 1;
            return Outcome::Skipped(skip);
        }
        // The reader stops at the first holder of a socket; the others are looked for here.
        let mut found = match early {
            Some(a) => Some(self.attributor.complete(a)),
            None => self.attributor.attribute_read_at(&sides, now),
        };
        if let Err(skip) = filter::forward_rule(&self.cfg, &mut sides, found.as_ref().map(|a| a.by))
        {
            self.stats.skipped += 1;
            return Outcome::Skipped(skip);
        }
        if let Some(a) = found.as_mut() {
            self.identify(&mut a.process);
        }
        if found.is_some() {
            self.stats.attributed += 1;
        } else {
            self.stats.unattributed += 1;
        }
        let process = found.as_ref().map(|a| &a.process);
        let alone = found.as_ref().is_some_and(Attribution::alone);
        // The rules that need only the process come before naming: a whitelisted program's
        // flow costs no name lookup (and no PTR query leaves for it).
        if let Err(skip) = filter::process_rule(&self.cfg, &sides, process, alone) {
            self.stats.skipped += 1;
            return Outcome::Skipped(skip);
        }
        // The name this process looked up, if it did: a name is never borrowed from another
        // program's lookup. For names no DNS answer gave, a PTR name if configured (marked;
        // it never whitelists).
        let named = process.and_then(|p| {
            self.names.catch_up(now);
            self.names.dns_name(p.pid, &sides.remote_ip, now)
        });
        let (host, host_source) = match named {
            Some((h, source)) => (Some(h), Some(source)),
            None => {
                let name = self
                    .names
                    .ptr_name(&sides.remote_ip, &self.cfg.names, may_wait);
                let source = name.as_ref().map(|_| HostSource::Ptr);
                (name, source)
            }
        };
        let host_rule = filter::host_rule(
            &self.cfg,
            process.filter(|_| alone),
            host.as_deref().zip(host_source),
        );
        if let Err(skip) = host_rule {
            self.stats.skipped += 1;
            return Outcome::Skipped(skip);
        }
        if let Err(skip) =
            filter::repeat_rule(&self.cfg, &sides, process, alone, &mut self.repeats, now)
        {
            self.stats.skipped += 1;
            return Outcome::Skipped(skip);
        }
        self.stats.reported += 1;
        let has_ports = sides.socket.proto.has_ports();
        Outcome::Report(Box::new(Connection {
            ts: timestamp(at),
            proto: sides.socket.proto,
            family: Family::of(&sides.local_ip),
            direction: sides.direction,
            local_ip: sides.local_ip,
            local_port: has_ports.then_some(sides.local_port),
            remote_ip: sides.remote_ip,
            remote_port: has_ports.then_some(sides.remote_port),
            host,
            host_source,
            icmp: flow.orig.icmp,
            critical: filter::is_critical(&self.cfg, &sides),
            ct_id: flow.id,
            zone: flow.zone,
            mark: flow.mark,
            attributed_by: found.as_ref().map(|a| a.by),
            holders_incomplete: found.as_ref().is_some_and(|a| !a.holders.complete),
            also_held_by_more: found.as_ref().map_or(0, |a| a.holders.more),
            also_held_by: found
                .as_ref()
                .map(|a| a.holders.others.clone())
                .unwrap_or_default(),
            process: found.map(|a| a.process),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::Attribution;
    use crate::config::ProtoSel;
    use crate::direction::Sides;
    use crate::event::{AttributedBy, Direction, Icmp, Process, Proto};
    use std::collections::HashMap;

    /// Attribution by local port, from a table.
    struct ByPort(HashMap<u16, Process>);
    impl Attributor for ByPort {
        fn attribute(&mut self, sides: &Sides) -> Option<Attribution> {
            self.0.get(&sides.socket.sport).map(|p| Attribution {
                process: p.clone(),
                by: AttributedBy::Socket,
                holders: crate::attribution::Holders::decided(),
            })
        }
    }

    fn flow(proto: Proto, src: &str, sport: u16, dst: &str, dport: u16) -> Flow {
        Flow {
            id: Some(99),
            mark: Some(0),
            ..crate::flow::fixtures::flow(proto, src, sport, dst, dport)
        }
    }

    fn pipeline() -> Pipeline<ByPort> {
        let curl = Process {
            pid: 4242,
            comm: "curl".into(),
            exe: Some("/usr/bin/curl".into()),
            cmdline: vec!["curl".into()],
            uid: 1000,
            user: Some("alice".into()),
            exe_verified: true,
            exe_system: true,
            ..Default::default()
        };
        let ssh = Process {
            comm: "ssh".into(),
            exe: Some("/usr/bin/ssh".into()),
            ..curl.clone()
        };
        let table = HashMap::from([(40000, curl), (40001, ssh)]);
        let mut cfg = Config::default();
        cfg.whitelist.processes = vec!["ssh".into()];
        Pipeline::new(
            cfg,
            LocalAddrs::new(["10.0.0.1".parse().expect("ip")]),
            ByPort(table),
            Names::new(crate::names::capture::Shared::without_capture()),
        )
    }

    fn report(o: Outcome) -> Connection {
        match o {
            Outcome::Report(c) => *c,
            other => panic!("expected a report, got {other:?}"),
        }
    }

    #[test]
    fn an_outbound_flow_becomes_a_complete_report() {
        let mut p = pipeline();
        let c = report(p.flow(
            &flow(Proto::Tcp, "10.0.0.1", 40000, "93.184.216.34", 443),
            SystemTime::UNIX_EPOCH,
            Instant::now(),
            None,
        ));
        assert_eq!(c.ts, "1970-01-01T00:00:00.000000Z");
        assert_eq!(c.direction, Direction::Outbound);
        assert_eq!((c.local_port, c.remote_port), (Some(40000), Some(443)));
        assert!(c.critical);
        assert_eq!(c.ct_id, Some(99));
        assert_eq!(c.process.as_ref().map(|p| p.pid), Some(4242));
        assert_eq!(p.stats.reported, 1);
    }

    #[test]
    fn whitelisted_process_and_repeat_are_silent() {
        let mut p = pipeline();
        let now = Instant::now();
        let t = SystemTime::now();
        assert!(matches!(
            p.flow(
                &flow(Proto::Tcp, "10.0.0.1", 40001, "9.9.9.9", 22),
                t,
                now,
                None
            ),
            Outcome::Skipped(Skip::ProcessWhitelisted)
        ));
        let f = flow(Proto::Tcp, "10.0.0.1", 40000, "9.9.9.9", 443);
        report(p.flow(&f, t, now, None));
        assert_eq!(p.flow(&f, t, now, None), Outcome::Skipped(Skip::Repeat));
    }

    #[test]
    fn unknown_flow_is_reported_with_no_process() {
        let mut p = pipeline();
        let c = report(p.flow(
            &flow(Proto::Tcp, "10.0.0.1", 5555, "9.9.9.9", 443),
            SystemTime::now(),
            Instant::now(),
            None,
        ));
        assert_eq!(c.process, None);
        assert_eq!(p.stats.unattributed, 1);
    }

    #[test]
    fn icmp_reports_type_and_code_without_ports() {
        let mut p = pipeline();
        p.command(Command::Config {
            config: Box::new(Config {
                monitor: crate::config::Monitor {
                    protocols: vec![ProtoSel::All],
                    ..Default::default()
                },
                ..Default::default()
            }),
        });
        let mut f = flow(Proto::Icmp, "10.0.0.1", 0, "9.9.9.9", 0);
        f.orig.icmp = Some(Icmp {
            kind: 8,
            code: 0,
            id: 7,
        });
        let c = report(p.flow(&f, SystemTime::now(), Instant::now(), None));
        assert_eq!((c.local_port, c.remote_port), (None, None));
        assert_eq!(c.icmp.map(|i| i.kind), Some(8));
        assert!(!c.critical);
    }

    #[test]
    fn pause_resume_and_config_commands() {
        let mut p = pipeline();
        let f = flow(Proto::Tcp, "10.0.0.1", 40000, "9.9.9.9", 443);
        assert_eq!(
            p.command(Command::Pause),
            Event::Ack {
                cmd: "pause".into()
            }
        );
        assert_eq!(
            p.flow(&f, SystemTime::now(), Instant::now(), None),
            Outcome::Paused
        );
        p.command(Command::Resume);
        report(p.flow(&f, SystemTime::now(), Instant::now(), None));
        // A new config takes effect at once and forgets the repeat memory.
        let mut cfg = Config::default();
        cfg.filter.critical_only = true;
        p.command(Command::Config {
            config: Box::new(cfg),
        });
        report(p.flow(&f, SystemTime::now(), Instant::now(), None));
        let f2 = flow(Proto::Tcp, "10.0.0.1", 40000, "9.9.9.9", 8443);
        assert_eq!(
            p.flow(&f2, SystemTime::now(), Instant::now(), None),
            Outcome::Skipped(Skip::NotCritical)
        );
    }

    #[test]
    fn an_early_attribution_is_used_as_is() {
        let mut p = pipeline();
        let early = Attribution {
            process: Process {
                pid: 7,
                comm: "early".into(),
                exe: None,
                cmdline: vec![],
                uid: 0,
                user: None,
                ..Default::default()
            },
            by: AttributedBy::Socket,
            holders: crate::attribution::Holders::decided(),
        };
        // Port 5555 is unknown to the pipeline's own attributor: the early one names it.
        let f = flow(Proto::Tcp, "10.0.0.1", 5555, "9.9.9.9", 443);
        let c = report(p.flow(&f, SystemTime::now(), Instant::now(), Some(early)));
        assert_eq!(c.process.map(|p| p.pid), Some(7));
    }

    #[test]
    fn destroy_events_are_ignored() {
        let mut p = pipeline();
        let mut f = flow(Proto::Tcp, "10.0.0.1", 40000, "9.9.9.9", 443);
        f.event = FlowEvent::Destroy;
        assert_eq!(
            p.flow(&f, SystemTime::now(), Instant::now(), None),
            Outcome::Ignored
        );
        assert_eq!(p.stats.flows, 0);
    }

    /// Finishes the reader's attributions as the pipeline's socket search would: with one
    /// more holder found, or (`None`) with the search cut short by its budget.
    struct Finish(Option<Process>);
    impl Attributor for Finish {
        fn attribute(&mut self, _: &Sides) -> Option<Attribution> {
            None
        }
        fn complete(&mut self, mut found: Attribution) -> Attribution {
            if let (false, Some(other)) = (found.holders.complete, &self.0) {
                found.holders.others.push(other.clone());
                found.holders.complete = true;
            }
            found
        }
    }

    #[test]
    fn a_whitelisted_process_sharing_its_socket_is_reported_with_every_holder() {
        let ssh = Process {
            pid: 5,
            comm: "ssh".into(),
            exe: Some("/usr/bin/ssh".into()),
            exe_verified: true,
            exe_system: true,
            ..Default::default()
        };
        let evil = Process {
            pid: 66,
            comm: "python3".into(),
            ..Default::default()
        };
        let mut cfg = Config::default();
        cfg.whitelist.processes = vec!["ssh".into()];
        let addrs = LocalAddrs::new(["10.0.0.1".parse().expect("ip")]);
        let early = |complete| Attribution {
            process: ssh.clone(),
            by: AttributedBy::BoundSocket,
            holders: crate::attribution::Holders {
                others: Vec::new(),
                more: 0,
                complete,
                inode: 77,
                uid: 1000,
            },
        };
        let now = Instant::now();
        let at = SystemTime::now();
        let mut p = Pipeline::new(
            cfg.clone(),
            addrs.clone(),
            Finish(Some(evil.clone())),
            Names::new(crate::names::capture::Shared::without_capture()),
        );
        // Alone: the whitelist entry silences it.
        let alone = Attribution {
            holders: crate::attribution::Holders::decided(),
            ..early(true)
        };
        let f = flow(Proto::Tcp, "10.0.0.1", 40001, "9.9.9.9", 443);
        assert_eq!(
            p.flow(&f, at, now, Some(alone)),
            Outcome::Skipped(Skip::ProcessWhitelisted)
        );
        // The reader found ssh first; the pipeline finds python3 holding the socket too.
        let f = flow(Proto::Tcp, "10.0.0.1", 40002, "9.9.9.9", 443);
        let c = report(p.flow(&f, at, now, Some(early(false))));
        assert_eq!(c.process.map(|p| p.pid), Some(5));
        assert_eq!(c.also_held_by, vec![evil]);
        assert!(!c.holders_incomplete);
        // A search that could not look at every process proves nothing either.
        let mut p = Pipeline::new(
            cfg,
            addrs,
            Finish(None),
            Names::new(crate::names::capture::Shared::without_capture()),
        );
        let f = flow(Proto::Tcp, "10.0.0.1", 40003, "9.9.9.9", 443);
        let c = report(p.flow(&f, at, now, Some(early(false))));
        assert!(c.holders_incomplete && c.also_held_by.is_empty());
    }
}
