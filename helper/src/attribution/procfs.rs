//! [`Processes`] over /proc: which process holds a socket inode.
//!
//! An inode → (pid, fd, start time) index is built from `/proc/*/fd` and refreshed on a miss.
//! A hit is trusted only after the pid's fd still points at that inode and the pid's start
//! time is the one recorded, so a reused pid is never reported. A refresh scans the newest pids
//! first and stops at the first match: the flows that matter most come from programs that just
//! started, and may be gone a millisecond later (a prototype that scanned in ascending order
//! matched only 7–14 of 20 short-lived curls).

use std::collections::HashMap;
use std::io::Read;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use procfs::process::Stat;
use procfs::FromRead;

use super::{exe, Processes};
use crate::event::Process;

/// How much of a command line is kept: the rest of a hostile 1 MB argv is cut, and the cut
/// marked with a last element of "…".
pub const CMDLINE_LIMIT: usize = 4096;
/// Index entries kept before the index is rebuilt from scratch (bounded memory).
const INDEX_LIMIT: usize = 1 << 16;
const CACHE_LIMIT: usize = 4096;

/// Where a socket inode was last seen open. `start` is the pid's start time once known; an
/// entry indexed in passing (another socket of a scanned process) gets it on its first use.
#[derive(Debug, Clone, Copy)]
struct Holder {
    pid: i32,
    fd: i32,
    start: Option<u64>,
}

#[derive(Default, Debug, Clone, Copy)]
pub struct ProcStats {
    pub hits: u64,
    pub scans: u64,
    pub scanned_pids: u64,
    pub misses: u64,
}

pub struct ProcIndex {
    root: PathBuf,
    index: HashMap<u64, Holder>,
    /// Process details by (pid, start time), with the identity of the file it ran;
    /// revalidated against `stat` and that file on every use (an execve keeps both keys).
    cache: HashMap<(i32, u64), (Process, Option<exe::FileId>)>,
    /// The helper's own mount namespace, against which executables are checked.
    own_mnt: Option<u64>,
    users: HashMap<u32, Option<String>>,
    scan_limit: Option<usize>,
    pub stats: ProcStats,
}

/// How many of the pids handed out last are tried before /proc is listed.
const FAST_PIDS: i32 = 4;
/// How many of the newest processes the closed-socket search looks at.
const CLOSED_SCAN_LIMIT: usize = 64;

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
            index: HashMap::new(),
            cache: HashMap::new(),
            own_mnt: exe::mount_ns(Path::new("/proc/self")),
            users: HashMap::new(),
            scan_limit: None,
            stats: ProcStats::default(),
        }
    }

    /// Pids under /proc, newest first (see [`sort_newest_first`]).
    fn pids_newest_first_from(&self, last: Option<i32>) -> Vec<i32> {
        let mut pids: Vec<i32> = std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .collect();
        sort_newest_first(&mut pids, last);
        pids
    }

    fn pids_newest_first(&self) -> Vec<i32> {
        self.pids_newest_first_from(self.last_pid())
    }

    /// Indexes every socket of `pid`; returns the holder of `want` if this pid has it.
    fn index_pid(&mut self, pid: i32, want: u64) -> Option<Holder> {
        for (fd, inode) in self.socket_fds(pid, Some(want)) {
            let h = Holder {
                pid,
                fd,
                start: None,
            };
            if self.index.len() >= INDEX_LIMIT {
                self.index.clear();
            }
            self.index.insert(inode, h);
            if inode == want {
                return Some(h);
            }
        }
        None
    }

    /// The socket fds of `pid` with their inodes, stopping after `until` if given.
    ///
    /// One `getdents` and one `readlink` per fd, nothing else: this runs while a short-lived
    /// program may be closing its socket, and on this kind of VM each syscall costs microseconds.
    fn socket_fds(&self, pid: i32, until: Option<u64>) -> Vec<(i32, u64)> {
        let mut out = Vec::new();
        let Ok(dir) = std::fs::read_dir(self.root.join(format!("{pid}/fd"))) else {
            return out;
        };
        for entry in dir.flatten() {
            let Some(fd) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(link) = std::fs::read_link(entry.path()) else {
                continue;
            };
            if let Some(inode) = socket_inode(link.as_os_str().as_encoded_bytes()) {
                out.push((fd, inode));
                if until == Some(inode) {
                    break;
                }
            }
        }
        out
    }

    /// The thread group (process) id of a task id, from its `status`.
    fn tgid(&self, tid: i32) -> Option<i32> {
        let status = std::fs::read_to_string(self.root.join(format!("{tid}/status"))).ok()?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("Tgid:")?.trim().parse().ok())
    }

    /// The last pid the kernel handed out, from `/proc/sys/kernel/ns_last_pid`.
    fn last_pid(&self) -> Option<i32> {
        let mut f = std::fs::File::open(self.root.join("sys/kernel/ns_last_pid")).ok()?;
        let mut buf = [0u8; 16];
        let n = f.read(&mut buf).ok()?;
        std::str::from_utf8(&buf[..n]).ok()?.trim().parse().ok()
    }

    fn scan(&mut self, inode: u64, uid: u32) -> Option<Holder> {
        self.stats.scans += 1;
        // Fast path, before listing /proc at all: the few pids handed out last. A program
        // that just connected and is about to exit is almost always one of them.
        let last = self.last_pid();
        if let Some(last) = last {
            for pid in (last - FAST_PIDS + 1..=last).rev().filter(|p| *p > 0) {
                if let Some(h) = self.index_pid(pid, inode) {
                    // The last id handed out may be a thread's; /proc/<tid> shows its
                    // process's fds. Name the process. (A thread that just ended tells
                    // nothing: go on to the full scan.)
                    match self.tgid(pid) {
                        Some(tgid) if tgid != pid => {
                            let h = Holder { pid: tgid, ..h };
                            self.index.insert(inode, h);
                            return Some(h);
                        }
                        Some(_) => return Some(h),
                        None => {
                            self.index.remove(&inode);
                            break;
                        }
                    }
                }
            }
        }
        let mut pids = self.pids_newest_first_from(last);
        if let Some(limit) = self.scan_limit {
            pids.truncate(limit);
        }
        let mut others = Vec::new();
        // First the processes of the socket's owner, then the rest (a daemon may have changed
        // its uid after opening the socket).
        for pid in pids {
            if owner_uid(&self.root.join(pid.to_string())) != Some(uid) {
                others.push(pid);
                continue;
            }
            self.stats.scanned_pids += 1;
            if let Some(h) = self.index_pid(pid, inode) {
                return Some(h);
            }
        }
        for pid in others {
            self.stats.scanned_pids += 1;
            if let Some(h) = self.index_pid(pid, inode) {
                return Some(h);
            }
        }
        None
    }

    /// Scans at most the `limit` newest processes; `None` scans all.
    pub fn set_scan_limit(&mut self, limit: Option<usize>) {
        self.scan_limit = limit;
    }

    /// A process among the newest whose open TCP socket is closed and had `local` as its
    /// local end. Each candidate socket is looked at through a duplicate taken with
    /// `pidfd_getfd` (what `ss` cannot show any more, the socket itself still knows).
    fn closed_tcp_holder(&mut self, local: SocketAddr) -> Option<Process> {
        let mut pids = self.pids_newest_first();
        pids.truncate(
            self.scan_limit
                .unwrap_or(CLOSED_SCAN_LIMIT)
                .min(CLOSED_SCAN_LIMIT),
        );
        for pid in pids {
            let sockets = self.socket_fds(pid, None);
            if sockets.is_empty() {
                continue;
            }
            let Some(rpid) = rustix::process::Pid::from_raw(pid) else {
                continue;
            };
            let Ok(pidfd) = rustix::process::pidfd_open(rpid, rustix::process::PidfdFlags::empty())
            else {
                continue;
            };
            for (fd, _) in sockets {
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

    /// The indexed holder still has the inode open at the same fd, and is the same process
    /// (same start time) as when indexed. One readlink and one read of `stat`.
    fn still_holds(&mut self, inode: u64) -> Option<Stat> {
        let h = self.index.get(&inode).copied()?;
        let link = std::fs::read_link(self.root.join(format!("{}/fd/{}", h.pid, h.fd))).ok()?;
        if socket_inode(link.as_os_str().as_encoded_bytes()) != Some(inode) {
            return None;
        }
        let stat = self.stat(h.pid)?;
        match h.start {
            Some(start) if start != stat.starttime => return None,
            Some(_) => {}
            None => {
                if let Some(e) = self.index.get_mut(&inode) {
                    e.start = Some(stat.starttime);
                }
            }
        }
        Some(stat)
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
        let (pid, start) = (stat.pid, stat.starttime);
        let dir = self.root.join(pid.to_string());
        if let Some((cached, id)) = self.cache.get(&(pid, start)) {
            // An execve keeps pid and start time but changes the file (and mostly comm); a
            // program that execs another with the same name must not inherit its verdict.
            if cached.comm == stat.comm && *id == exe::check_id(&dir) {
                return Some(cached.clone());
            }
        }
        let uid = owner_uid(&dir)?;
        let exe = std::fs::read_link(dir.join("exe"))
            .ok()
            .map(|e| e.to_string_lossy().into_owned());
        let facts = exe::check(&dir, exe.as_deref(), self.own_mnt);
        let cmdline = read_cmdline(&dir.join("cmdline"));
        // The process must still be the one we started reading: same start time at the end.
        if self.stat(pid)?.starttime != start {
            return None;
        }
        let user = self.user(uid);
        let process = Process {
            pid: u32::try_from(pid).ok()?,
            comm: stat.comm,
            exe,
            cmdline,
            uid,
            user,
            exe_verified: facts.verified,
            exe_unverified: facts.unverified,
            exe_system: facts.system,
        };
        if self.cache.len() >= CACHE_LIMIT {
            self.cache.clear();
        }
        self.cache.insert((pid, start), (process.clone(), facts.id));
        Some(process)
    }
}

impl Processes for ProcIndex {
    fn by_inode(&mut self, inode: u64, uid: u32) -> Option<Process> {
        if self.index.contains_key(&inode) {
            if let Some(found) = self.still_holds(inode).and_then(|st| self.describe(st)) {
                self.stats.hits += 1;
                return Some(found);
            }
            self.index.remove(&inode);
        }
        let found = self
            .scan(inode, uid)
            .and_then(|_| self.still_holds(inode))
            .and_then(|st| self.describe(st));
        if found.is_none() {
            self.stats.misses += 1;
        }
        found
    }

    fn by_closed_tcp(&mut self, local: SocketAddr) -> Option<Process> {
        self.closed_tcp_holder(local)
    }

    fn by_pid(&mut self, pid: u32, comm: &str, at_boot_ns: u64) -> Option<Process> {
        let stat = self.stat(i32::try_from(pid).ok()?)?;
        // Start times are in clock ticks, rounded down: a process started in the same tick
        // as the connect passes, one started a tick later (a reused pid) does not.
        let tick_ns = 1_000_000_000 / procfs::ticks_per_second().max(1);
        if stat.comm != comm || stat.starttime.saturating_mul(tick_ns) > at_boot_ns {
            return None;
        }
        self.describe(stat)
    }

    fn user_name(&mut self, uid: u32) -> Option<String> {
        self.user(uid)
    }
}

/// The inode of a `socket:[N]` link target.
fn socket_inode(link: &[u8]) -> Option<u64> {
    std::str::from_utf8(link.strip_prefix(b"socket:[")?.strip_suffix(b"]")?)
        .ok()?
        .parse()
        .ok()
}

/// Orders pids newest first. Pids are handed out upwards from the last one given and wrap
/// around at `pid_max` (32768 on many systems), so "newest" is: downwards from the last pid
/// handed out, then downwards from the top. Plain descending order put two old high-pid
/// processes before every new one after a wrap, and short-lived programs were missed.
pub fn sort_newest_first(pids: &mut [i32], last: Option<i32>) {
    match last {
        Some(last) => pids.sort_unstable_by_key(|&p| {
            if p <= last {
                (0, last - p)
            } else {
                (1, i32::MAX - p)
            }
        }),
        None => pids.sort_unstable_by(|a, b| b.cmp(a)),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newest_first_follows_the_pid_counter_around_its_wrap() {
        let mut pids = vec![1, 300, 27171, 22113, 22196, 24169, 5];
        sort_newest_first(&mut pids, Some(22196));
        assert_eq!(pids, vec![22196, 22113, 300, 5, 1, 27171, 24169]);
        sort_newest_first(&mut pids, None);
        assert_eq!(pids, vec![27171, 24169, 22196, 22113, 300, 5, 1]);
    }

    #[test]
    fn cmdline_splits_on_nul_and_drops_the_final_empty_piece() {
        assert_eq!(
            split_cmdline(b"curl\0https://x\0"),
            vec!["curl", "https://x"]
        );
        assert_eq!(split_cmdline(b"a\0\0b\0"), vec!["a", "", "b"]);
        assert!(split_cmdline(b"").is_empty());
    }

    #[test]
    fn cmdline_replaces_invalid_utf8() {
        assert_eq!(split_cmdline(b"ev\xffil\0"), vec!["ev\u{fffd}il"]);
    }

    #[test]
    fn cmdline_is_cut_at_the_limit_and_marked() {
        let big = vec![b'x'; 1 << 20];
        let args = split_cmdline(&big);
        assert_eq!(args.len(), 2);
        assert_eq!(args[0].len(), CMDLINE_LIMIT);
        assert_eq!(args[1], "…");
    }

    #[test]
    fn a_refused_connect_is_found_through_the_socket_it_left_open() {
        use rustix::net::{connect, socket, AddressFamily, SocketType};
        // A port nobody listens on: bind one, note it, close it.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let fd = socket(AddressFamily::INET, SocketType::STREAM, None).expect("socket");
        let target: SocketAddr = ([127, 0, 0, 1], port).into();
        assert!(connect(&fd, &target).is_err(), "nobody listens there");
        let local =
            SocketAddr::try_from(rustix::net::getsockname(&fd).expect("name")).expect("inet");
        assert!(is_closed_tcp_at(&fd, local));
        assert!(!is_closed_tcp_at(
            &fd,
            SocketAddr::new(local.ip(), local.port().wrapping_add(1))
        ));
        // A live listener is not a closed socket.
        let l = std::net::TcpListener::bind("127.0.0.1:0").expect("listen");
        let lfd: std::os::fd::OwnedFd = l.try_clone().expect("clone").into();
        assert!(!is_closed_tcp_at(&lfd, l.local_addr().expect("addr")));

        let mut idx = ProcIndex::new();
        let me = idx.by_closed_tcp(local).expect("found through pidfd_getfd");
        assert_eq!(me.pid, std::process::id());
        drop(fd);
    }

    #[test]
    fn finds_its_own_socket_and_describes_itself() {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        // A socket's inode is what fstat reports for it.
        let inode = rustix::fs::fstat(&sock).expect("fstat").st_ino;
        let mut idx = ProcIndex::new();
        let uid = owner_uid(std::path::Path::new("/proc/self")).expect("uid");
        let p = idx.by_inode(inode, uid).expect("found");
        assert_eq!(p.pid, std::process::id());
        assert_eq!(idx.stats.scans, 1);
        // The second lookup is an index hit.
        let again = idx.by_inode(inode, uid).expect("found again");
        assert_eq!(again, p);
        assert_eq!(idx.stats.hits, 1);
        drop(sock);
        // A socket nobody holds is a miss, not a guess.
        assert_eq!(idx.by_inode(u64::MAX - 1, uid), None);
    }
}
