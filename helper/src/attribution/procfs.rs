//! [`Processes`] over /proc: which processes hold a socket inode, and what they are.
//!
//! The search is [`HolderIndex`]'s, over per-process fd tables kept up across lookups, within
//! a budget per lookup: a process holding 10,000 sockets costs one stat a lookup once its
//! table is known (bench row f: a lookup went from ~150 ms to under a millisecond), and a
//! lookup that runs out of budget names nobody rather than stall; the flow is still reported,
//! with `process: null`. A holder is named only after its fd was read pointing at the inode
//! during this lookup, and its details are trusted only if its start time is the same before
//! and after they were read, so a reused pid is never reported.
//!
//! Two kinds of lookup: the pipeline's looks at every process, for every holder; the reader's
//! (after [`ProcIndex::set_scan_limit`]) runs at real-time priority, tries the pids handed out
//! last first, and looks at the newest processes only, within a small budget: it sees a
//! holder that sends and exits before the pipeline could, and leaves the rest to the
//! pipeline ([`super::Attributor::complete`]).

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use procfs::process::Stat;
use procfs::FromRead;

use super::context::Contexts;
use super::exec_hook::{ExecRecord, Execs};
use super::fd_table::Budget;
use super::holders::{HolderIndex, Limits};
use super::image::{self, Shown, Start};
use super::lineage::{self, Node, Parent, Tree};
use super::proc_fds::ProcFds;
use super::{exe, Connector, Held, Processes, HOLDERS_LISTED};

use crate::event::{Ancestor, Process};

/// How much of a command line is kept: the rest of a hostile 1 MB argv is cut, and the cut
/// marked with a last element of "…".
pub const CMDLINE_LIMIT: usize = 4096;
const CACHE_LIMIT: usize = 4096;

/// The pipeline's budget for one lookup, in [`Budget`] units (about a microsecond each on the
/// 2-core test VM): a full pass over a desktop's ~400 processes while nothing changed takes
/// ~1,600; the rest reads what did (~2,800 fds, or lists 14,000). A process of 10,000 fds
/// seen for the first time is read over about four lookups.
pub const LOOKUP_BUDGET: u32 = 16_000;
/// The reader's budget per process it may look at: 64 processes give 640 units, at most 128
/// fds read, so the real-time thread cannot be made to read 10,000.
const EARLY_UNITS_PER_PID: u32 = 10;
/// How many of the newest processes the closed-socket search looks at.
const CLOSED_SCAN_LIMIT: usize = 64;

/// What the lookups did, for tests and `--debug`.
#[derive(Default, Debug, Clone, Copy)]
pub struct ProcStats {
    pub lookups: u64,
    /// Lookups that named a holder.
    pub found: u64,
    pub misses: u64,
    /// Lookups cut short by their budget.
    pub exhausted: u64,
    /// Lookups that found more than one holder.
    pub shared: u64,
}

pub struct ProcIndex {
    root: PathBuf,
    src: ProcFds,
    index: HolderIndex,
    /// Process details by (pid, start time), with the identity of the file it ran;
    /// revalidated against `stat` and that file on every use (an execve keeps both keys).
    cache: HashMap<(i32, u64), (Process, Option<exe::FileId>, u64)>,
    /// The helper's own mount namespace, against which executables are checked.
    own_mnt: Option<u64>,
    /// The helper's own user namespace (the machine's): see [`image`].
    own_user: Option<u64>,
    /// Which device a record's file is on, as `stat` reports it.
    devices: super::devices::Devices,
    users: HashMap<u32, Option<String>>,
    scan_limit: Option<usize>,
    /// The last answer of [`Processes::by_pid`] for each pid, and when it was proven.
    named: HashMap<i32, Named>,
    /// The kernel's exec records, when the exec hook is loaded.
    execs: Option<Box<dyn Execs + Send>>,
    /// Parents already described, by (pid, start time in ticks); revalidated by comm.
    parents: HashMap<(u32, u64), Node>,
    /// The exec record [`Processes::by_pid`] found for a process (pid, exact start, comm).
    recorded: HashMap<(u32, u64), (String, Option<ExecRecord>)>,
    /// Nanoseconds in one of `/proc`'s clock ticks.
    tick_ns: u64,
    /// Cgroups and namespaces, read once per process described (see [`super::context`]).
    contexts: Contexts,
    pub stats: ProcStats,
}

/// A process that was alive at `checked_ns` (CLOCK_BOOTTIME) with this comm and start time.
///
/// Alive at its start and at `checked_ns`, with the same start time, it is one process all
/// along, so a kernel record taken in between is its own with no further read. In a burst
/// from one program the reader is ahead of the pipeline, so one read of /proc covers every
/// record already queued (before: a `stat` read and an exe check per flow, 38 µs of the
/// helper's CPU per event in the benchmark's burst).
#[derive(Debug, Clone)]
struct Named {
    comm: String,
    start_ns: u64,
    checked_ns: u64,
    /// When its image entry says it last exec'd (0: not known, or not since its fork).
    exec_ns: u64,
    process: Process,
}

const NAMED_LIMIT: usize = 1024;

/// A TCP socket, not listening, with no peer, whose local end is `local`.
fn is_closed_tcp_at(fd: &std::os::fd::OwnedFd, local: SocketAddr) -> bool {
    use rustix::net::sockopt;
    if sockopt::socket_protocol(fd).ok().flatten() != Some(rustix::net::ipproto::TCP) {
        return false;
    }
    if sockopt::socket_acceptconn(fd).unwrap_or(true) {
        return false;
    }
    if !matches!(
        rustix::net::getpeername(fd),
        Err(rustix::io::Errno::NOTCONN)
    ) {
        return false;
    }
    let Ok(name) = rustix::net::getsockname(fd) else {
        return false;
    };
    let Ok(addr) = SocketAddr::try_from(name) else {
        return false;
    };
    addr.port() == local.port()
        && (addr.ip().to_canonical() == local.ip().to_canonical() || addr.ip().is_unspecified())
}

impl Default for ProcIndex {
    fn default() -> Self {
        ProcIndex::new()
    }
}

impl ProcIndex {
    pub fn new() -> ProcIndex {
        ProcIndex {
            root: PathBuf::from("/proc"),
            src: ProcFds::new(),
            index: HolderIndex::default(),
            cache: HashMap::new(),
            own_mnt: exe::mount_ns(Path::new("/proc/self")),
            own_user: user_ns(Path::new("/proc/self")),
            devices: super::devices::Devices::new(),
            users: HashMap::new(),
            scan_limit: None,
            named: HashMap::new(),
            execs: None,
            parents: HashMap::new(),
            recorded: HashMap::new(),
            tick_ns: 1_000_000_000 / procfs::ticks_per_second().max(1),
            contexts: Contexts::new(),
            stats: ProcStats::default(),
        }
    }

    /// Describes exited processes and parents from the kernel's exec records too.
    pub fn with_execs(mut self, execs: Box<dyn Execs + Send>) -> ProcIndex {
        self.execs = Some(execs);
        self
    }

    /// The process's parents, from `parent` up.
    fn ancestors(&mut self, parent: Option<Parent>) -> std::sync::Arc<Vec<Ancestor>> {
        std::sync::Arc::new(lineage::walk(self, parent))
    }

    /// Makes this the reader's index: each lookup tries the pids handed out last, then looks
    /// at no more than the `limit` newest processes, within a budget in proportion. `None` is
    /// the pipeline's: every process, [`LOOKUP_BUDGET`].
    pub fn set_scan_limit(&mut self, limit: Option<usize>) {
        self.scan_limit = limit;
    }

    fn limits(&self) -> Limits {
        match self.scan_limit {
            Some(n) => Limits {
                budget: u32::try_from(n)
                    .unwrap_or(u32::MAX)
                    .saturating_mul(EARLY_UNITS_PER_PID)
                    .min(LOOKUP_BUDGET),
                pids: Some(n),
                all: true,
                fast: true,
            },
            None => Limits {
                budget: LOOKUP_BUDGET,
                pids: None,
                all: true,
                fast: false,
            },
        }
    }

    /// A process among the newest whose open TCP socket is closed and had `local` as its
    /// local end. Each candidate socket is looked at through a duplicate taken with
    /// `pidfd_getfd` (what `ss` cannot show any more, the socket itself still knows), newest
    /// fds first, within the lookup's budget.
    fn closed_tcp_holder(&mut self, local: SocketAddr) -> Option<Process> {
        let limits = self.limits();
        let mut budget = Budget::new(limits.budget);
        let n = limits
            .pids
            .unwrap_or(CLOSED_SCAN_LIMIT)
            .min(CLOSED_SCAN_LIMIT);
        let pids = self.index.newest(&mut self.src, n, &mut budget);
        self.src.release();
        for pid in pids {
            let fds: Vec<i32> = self
                .index
                .table(pid)
                .map(|t| t.sockets_newest_first().map(|(fd, _)| fd).collect())
                .unwrap_or_default();
            if fds.is_empty() {
                continue;
            }
            let Some(rpid) = rustix::process::Pid::from_raw(pid) else {
                continue;
            };
            let Ok(pidfd) = rustix::process::pidfd_open(rpid, rustix::process::PidfdFlags::empty())
            else {
                continue;
            };
            for fd in fds {
                if !budget.take(Budget::READ) {
                    self.stats.exhausted += 1;
                    return None;
                }
                let Ok(dup) = rustix::process::pidfd_getfd(
                    &pidfd,
                    fd,
                    rustix::process::PidfdGetfdFlags::empty(),
                ) else {
                    continue;
                };
                if is_closed_tcp_at(&dup, local) {
                    let stat = self.stat(pid)?;
                    return self.describe(stat);
                }
            }
        }
        None
    }

    fn stat(&self, pid: i32) -> Option<Stat> {
        Stat::from_file(self.root.join(format!("{pid}/stat"))).ok()
    }

    fn user(&mut self, uid: u32) -> Option<String> {
        self.users
            .entry(uid)
            .or_insert_with(|| {
                nix::unistd::User::from_uid(nix::unistd::Uid::from_raw(uid))
                    .ok()
                    .flatten()
                    .map(|u| u.name)
            })
            .clone()
    }

    /// Describes the process `stat` came from.
    fn describe(&mut self, stat: Stat) -> Option<Process> {
        self.describe_exec(stat).map(|(p, _)| p)
    }

    /// The same, and when the process last exec'd, as its image entry says (0: not known,
    /// or not since it was forked).
    fn describe_exec(&mut self, stat: Stat) -> Option<(Process, u64)> {
        let (pid, start) = (stat.pid, stat.starttime);
        let dir = self.root.join(pid.to_string());
        if let Some((cached, id, exec_ns)) = self.cache.get(&(pid, start)) {
            // An execve keeps pid and start time but changes the file (and mostly comm); a
            // program that execs another with the same name must not inherit its verdict.
            // (`cwd` is the one read with the rest: a readlink a flow cost a burst's reader
            // more than the lookup itself.)
            if cached.comm == stat.comm && *id == exe::check_id(&dir) {
                return Some((cached.clone(), *exec_ns));
            }
        }
        let uid = owner_uid(&dir)?;
        let exe = std::fs::read_link(dir.join("exe"))
            .ok()
            .map(|e| e.to_string_lossy().into_owned());
        let upid = u32::try_from(pid).ok()?;
        let facts = exe::check(&dir, exe.as_deref(), self.own_mnt);
        let (facts, exec_ns) = self.held_to_records(&dir, upid, Start::Ticks(start), facts);
        let cmdline = read_cmdline(&dir.join("cmdline"));
        let context = self.contexts.of(pid);
        // The process must still be the one we started reading: same start time at the end.
        if self.stat(pid)?.starttime != start {
            return None;
        }
        let user = self.user(uid);
        let parent = self.parent_of(upid, start, stat.ppid);
        let ancestors = self.ancestors(parent);
        let parent_forked = self.parent_forked(upid, Start::Ticks(start), &ancestors, parent);
        let process = Process {
            pid: upid,
            comm: stat.comm,
            exe,
            cmdline,
            uid,
            user,
            exe_verified: facts.verified,
            exe_unverified: facts.unverified,
            exe_system: facts.system,
            ancestors,
            parent_forked,
            cwd: read_cwd(&dir),
            exited: false,
            exe_file: facts.version,
            context: Some(std::sync::Arc::new(context)),
            ..Default::default()
        };
        if self.cache.len() >= CACHE_LIMIT {
            self.cache.clear();
        }
        self.cache
            .insert((pid, start), (process.clone(), facts.id, exec_ns));
        Some((process, exec_ns))
    }
}

impl Processes for ProcIndex {
    fn by_inode(&mut self, inode: u64, uid: u32) -> Option<Process> {
        self.holders(inode, uid).processes.into_iter().next()
    }

    fn holders(&mut self, inode: u64, uid: u32) -> Held {
        self.stats.lookups += 1;
        let limits = self.limits();
        let search = self.index.find(&mut self.src, inode, uid, limits);
        self.src.release();
        if search.exhausted {
            self.stats.exhausted += 1;
        }
        let mut processes = Vec::new();
        let mut described = 0;
        for h in &search.holders {
            if processes.len() > HOLDERS_LISTED {
                break;
            }
            described += 1;
            let Some(stat) = self.stat(h.pid) else {
                continue;
            };
            let (pid_stat, ppid) = (stat.starttime, stat.ppid);
            if let Some(p) = self.describe(stat) {
                let p = self.exiting_by_record(p, pid_stat, ppid);
                processes.push(p);
            }
        }
        let more = search.holders.len() - described;
        match processes.len() {
            0 => self.stats.misses += 1,
            1 => self.stats.found += 1,
            _ => {
                self.stats.found += 1;
                self.stats.shared += 1;
            }
        }
        Held {
            processes,
            more: u32::try_from(more).unwrap_or(u32::MAX),
            complete: search.complete,
        }
    }

    fn by_closed_tcp(&mut self, local: SocketAddr) -> Option<Process> {
        self.closed_tcp_holder(local)
    }

    fn by_pid(&mut self, c: &Connector) -> Option<Process> {
        let (comm, at_boot_ns) = (c.comm.as_str(), c.at_boot_ns);
        let pid = i32::try_from(c.pid).ok()?;
        // The record's start time, where it has one, names the process exactly.
        let exact = (c.start_ns != 0).then_some(c.start_ns);
        let tick_ns = self.tick_ns;
        if let Some(n) = self.named.get(&pid) {
            if n.comm == comm
                && n.start_ns <= at_boot_ns
                && at_boot_ns <= n.checked_ns
                && exact.is_none_or(|ns| lineage::ticks(ns, tick_ns) * tick_ns == n.start_ns)
            {
                return Some(image::made_before(n.process.clone(), n.exec_ns, at_boot_ns));
            }
        }
        // Taken before the read: the process is alive at least until then.
        let checked_ns = super::records::boot_ns();
        let stat = self.stat(pid)?;
        // Start times are in clock ticks, rounded down: a process started in the same tick
        // as the connect passes, one started a tick later (a reused pid) does not.
        let start_ns = stat.starttime.saturating_mul(tick_ns);
        if stat.comm != comm
            || start_ns > at_boot_ns
            || exact.is_some_and(|ns| lineage::ticks(ns, tick_ns) != stat.starttime)
        {
            return None;
        }
        let stat_start = stat.starttime;
        let (mut process, mut exec_ns) = self.describe_exec(stat)?;
        // What it exec'd, as the kernel recorded it then, when it has not exec'd since the
        // connect: the command line it was started with (a process can rewrite the one
        // /proc shows, and one that is exiting shows none, or part of it), and for one that
        // is exiting (a zombie: no exe any more) the rest of what the record knows. Looked
        // up once per process and name (an exec changes the name): a 4.4 KB copy per flow
        // was a tenth of a burst's CPU.
        let start = exact.map_or(Start::Ticks(stat_start), Start::Ns);
        let key = (c.pid, c.start_ns);
        // (A record without a start time names no process exactly: never cached.)
        let cached = self.recorded.get(&key).filter(|_| c.start_ns != 0);
        let record = match cached {
            Some((name, r)) if *name == c.comm => r.clone(),
            _ => {
                let r = self.record(c.pid, start);
                if self.recorded.len() >= NAMED_LIMIT {
                    self.recorded.clear();
                }
                self.recorded.insert(key, (c.comm.clone(), r.clone()));
                r
            }
        };
        // The exec record is looked at too: it is there when the image entry is not (a
        // process older than the helper, which exec'd since).
        if let Some(r) = &record {
            exec_ns = exec_ns.max(r.exec_ns);
        }
        if let Some(r) = record.filter(|r| r.exec_ns <= at_boot_ns) {
            if process.exe.is_none() {
                process = self.described_by_record(c, r);
            } else {
                process.cmdline = r.args;
            }
        }
        if self.named.len() >= NAMED_LIMIT {
            self.named.clear();
        }
        self.named.insert(
            pid,
            Named {
                comm: comm.to_string(),
                start_ns,
                checked_ns,
                exec_ns,
                process: process.clone(),
            },
        );
        Some(image::made_before(process, exec_ns, at_boot_ns))
    }

    fn exited(&mut self, c: &Connector) -> Option<Process> {
        if c.start_ns == 0 {
            return None;
        }
        let r = self.record(c.pid, Start::Ns(c.start_ns))?;
        // It exec'd again after connecting: the record is of the program it became.
        if r.exec_ns > c.at_boot_ns {
            return None;
        }
        Some(self.described_by_record(c, r))
    }

    fn user_name(&mut self, uid: u32) -> Option<String> {
        self.user(uid)
    }
}

impl Tree for ProcIndex {
    fn live(&mut self, pid: u32, start: Option<u64>) -> Option<Node> {
        let stat = self.stat(i32::try_from(pid).ok()?)?;
        if start.is_some_and(|ns| lineage::ticks(ns, self.tick_ns) != stat.starttime) {
            return None;
        }
        let key = (pid, stat.starttime);
        if let Some(n) = self.parents.get(&key) {
            if n.ancestor.comm == stat.comm {
                return Some(n.clone());
            }
        }
        let dir = self.root.join(pid.to_string());
        let exe = std::fs::read_link(dir.join("exe"))
            .ok()
            .map(|e| e.to_string_lossy().into_owned());
        let facts = exe::check(&dir, exe.as_deref(), self.own_mnt);
        let (facts, _) = self.held_to_records(&dir, pid, Start::Ticks(stat.starttime), facts);
        let cmdline = lineage::short_cmdline(&read_cmdline(&dir.join("cmdline")));
        let node = Node {
            parent: self.parent_of(pid, stat.starttime, stat.ppid),
            last: pid == 1 || stat.session == stat.pid,
            ancestor: Ancestor {
                pid,
                comm: stat.comm,
                exe,
                cmdline,
                exe_verified: facts.verified,
                exited: false,
            },
        };
        if self.parents.len() >= CACHE_LIMIT {
            self.parents.clear();
        }
        self.parents.insert(key, node.clone());
        Some(node)
    }

    fn exited(&mut self, pid: u32, start: u64) -> Option<Node> {
        let r = self.record(pid, Start::Ns(start))?;
        let verified = self.record_verdict(&r).is_ok();
        Some(Node {
            parent: Some((r.ppid, Some(r.parent_start_ns))),
            last: false,
            ancestor: Ancestor {
                pid,
                comm: r.comm,
                exe: r.path,
                cmdline: lineage::short_cmdline(&r.args),
                exe_verified: verified,
                exited: true,
            },
        })
    }
}

/// The inode of a process's user namespace (`proc_dir` is `/proc/PID` or `/proc/self`).
fn user_ns(proc_dir: &Path) -> Option<u64> {
    std::fs::metadata(proc_dir.join("ns/user"))
        .ok()
        .map(|m| m.ino())
}

/// The working directory, as the process's own mount namespace names it.
fn read_cwd(dir: &Path) -> Option<String> {
    std::fs::read_link(dir.join("cwd"))
        .ok()
        .map(|c| c.to_string_lossy().into_owned())
}

/// Reads a NUL-separated command line, replacing invalid UTF-8 and cutting it at
/// [`CMDLINE_LIMIT`] bytes.
pub fn read_cmdline(path: &std::path::Path) -> Vec<String> {
    let mut buf = Vec::new();
    if let Ok(f) = std::fs::File::open(path) {
        // One byte more than the limit tells whether anything was cut.
        let _ = f.take(CMDLINE_LIMIT as u64 + 1).read_to_end(&mut buf);
    }
    split_cmdline(&buf)
}

pub fn split_cmdline(buf: &[u8]) -> Vec<String> {
    let truncated = buf.len() > CMDLINE_LIMIT;
    let buf = &buf[..buf.len().min(CMDLINE_LIMIT)];
    let mut args: Vec<String> = buf
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    // A well-formed cmdline ends with NUL, which leaves one empty piece at the end.
    if args.last().is_some_and(|a| a.is_empty()) && !truncated {
        args.pop();
    }
    if truncated {
        args.push("…".to_string());
    }
    args
}

/// The owner uid of a path, for tests and diagnostics.
pub fn owner_uid(path: &std::path::Path) -> Option<u32> {
    std::fs::metadata(path).ok().map(|m| m.uid())
}

#[path = "procfs_records.rs"]
mod records;

#[cfg(test)]
#[path = "procfs_tests.rs"]
mod tests;
