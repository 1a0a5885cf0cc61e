//! [`ProcSource`] over the real /proc: the few system calls the holder search makes.
//!
//! Each is one call, relative to a directory already open: `statat(/proc, "PID/fd")` for a
//! process's fd count and owner, `getdents64` from a `lseek` position for a listing (the
//! position in `/proc/<pid>/fd` is the fd number + 2, so a listing resumes where it
//! stopped), and `readlinkat(PID/fd, "N")` for one fd. The fd directory of the process being
//! read stays open until [`ProcFds::release`], so reading 100 of its fds walks no path 100
//! times.

use std::mem::MaybeUninit;
use std::os::fd::OwnedFd;

use rustix::fs::{AtFlags, Mode, OFlags, RawDir, SeekFrom};

use super::fd_table::{FdSource, Read};
use super::holders::ProcSource;

pub struct ProcFds {
    proc: Option<OwnedFd>,
    /// The fd directory open now, and whose.
    open: Option<(i32, OwnedFd)>,
    /// This process: its fd directory shows the directory this reads it through, which is
    /// left out, or every look at the helper itself would see a change.
    me: i32,
    /// The kernel reports fd counts as the size of `/proc/<pid>/fd` (Linux ≥ 6.2).
    counts: bool,
}

impl Default for ProcFds {
    fn default() -> Self {
        ProcFds::new()
    }
}

impl ProcFds {
    pub fn new() -> ProcFds {
        let proc = rustix::fs::open(
            "/proc",
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .ok();
        // This process has at least stdin, stdout and stderr open, or the fd it just opened.
        let counts = rustix::fs::stat("/proc/self/fd").is_ok_and(|st| st.st_size > 0);
        ProcFds {
            proc,
            open: None,
            me: i32::try_from(std::process::id()).unwrap_or(0),
            counts,
        }
    }

    /// Whether fd counts come from the kernel; without them every look at a process lists it.
    pub fn has_counts(&self) -> bool {
        self.counts
    }

    /// Closes the fd directory kept open.
    pub fn release(&mut self) {
        self.open = None;
    }

    fn fd_dir(&mut self, pid: i32) -> Option<&OwnedFd> {
        if self.open.as_ref().map(|(p, _)| *p) != Some(pid) {
            let proc = self.proc.as_ref()?;
            let dir = rustix::fs::openat(
                proc,
                format!("{pid}/fd"),
                OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .ok()?;
            self.open = Some((pid, dir));
        }
        self.open.as_ref().map(|(_, d)| d)
    }

    fn read_small(&self, path: &str) -> Option<String> {
        let proc = self.proc.as_ref()?;
        let fd =
            rustix::fs::openat(proc, path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).ok()?;
        let mut buf = vec![0u8; 4096];
        let n = rustix::io::read(&fd, &mut buf).ok()?;
        buf.truncate(n);
        String::from_utf8(buf).ok()
    }
}

impl FdSource for ProcFds {
    fn list(&mut self, pid: i32, from: i32, max: usize) -> Option<(Vec<i32>, bool)> {
        let me = self.me;
        let dir = self.fd_dir(pid)?;
        let own = (pid == me).then(|| std::os::fd::AsRawFd::as_raw_fd(dir));
        let pos = u64::try_from(from).unwrap_or(0).saturating_add(2);
        rustix::fs::seek(dir, SeekFrom::Start(pos)).ok()?;
        let mut buf = [MaybeUninit::<u8>::uninit(); 16 * 1024];
        let mut it = RawDir::new(dir, &mut buf);
        let mut out = Vec::new();
        while out.len() < max {
            match it.next() {
                Some(Ok(e)) => {
                    let n = e.file_name().to_str().ok().and_then(|n| n.parse().ok());
                    if let Some(n) = n.filter(|n| Some(*n) != own) {
                        out.push(n);
                    }
                }
                Some(Err(_)) if out.is_empty() => return None,
                Some(Err(_)) | None => return Some((out, true)),
            }
        }
        Some((out, false))
    }

    fn read(&mut self, pid: i32, fd: i32) -> Read {
        let Some(dir) = self.fd_dir(pid) else {
            return Read::Closed;
        };
        let mut buf = [0u8; 64];
        match rustix::fs::readlinkat_raw(dir, fd.to_string(), &mut buf[..]) {
            Ok(n) => match socket_inode(&buf[..n.min(buf.len())]) {
                Some(inode) => Read::Socket(inode),
                None => Read::Other,
            },
            // Refused: an LSM's or a container's decision, which the watched user cannot
            // make (root may read the fds of any process of theirs, non-dumpable, in their
            // own user namespace or not). Taken as no socket, not as closed: the fd is there,
            // and calling it closed would list the process again on every look.
            Err(rustix::io::Errno::ACCESS | rustix::io::Errno::PERM) => Read::Other,
            Err(_) => Read::Closed,
        }
    }
}

impl ProcSource for ProcFds {
    fn pids(&mut self) -> Vec<(i32, u64)> {
        let Some(proc) = self.proc.as_ref() else {
            return Vec::new();
        };
        if rustix::fs::seek(proc, SeekFrom::Start(0)).is_err() {
            return Vec::new();
        }
        let mut buf = [MaybeUninit::<u8>::uninit(); 16 * 1024];
        let mut it = RawDir::new(proc, &mut buf);
        let mut out = Vec::new();
        while let Some(Ok(e)) = it.next() {
            if let Some(pid) = e.file_name().to_str().ok().and_then(|n| n.parse().ok()) {
                out.push((pid, e.ino()));
            }
        }
        out
    }

    fn count(&mut self, pid: i32) -> Option<(Option<u64>, u32)> {
        let proc = self.proc.as_ref()?;
        let st = rustix::fs::statat(proc, format!("{pid}/fd"), AtFlags::empty()).ok()?;
        let held = u64::from(pid == self.me && self.open.is_some());
        let count = u64::try_from(st.st_size)
            .ok()
            .filter(|_| self.counts)
            .map(|c| c.saturating_sub(held));
        Some((count, st.st_uid))
    }

    fn last_pid(&mut self) -> Option<i32> {
        self.read_small("sys/kernel/ns_last_pid")?
            .trim()
            .parse()
            .ok()
    }

    fn runs_nothing(&mut self, pid: i32) -> bool {
        // A kernel thread has no executable: its `exe` link does not resolve (ENOENT), where
        // a process's does, even for a deleted file ("… (deleted)").
        let Some(proc) = self.proc.as_ref() else {
            return false;
        };
        let mut buf = [0u8; 8];
        matches!(
            rustix::fs::readlinkat_raw(proc, format!("{pid}/exe"), &mut buf[..]),
            Err(rustix::io::Errno::NOENT)
        )
    }

    fn tgid(&mut self, tid: i32) -> Option<i32> {
        self.read_small(&format!("{tid}/status"))?
            .lines()
            .find_map(|l| l.strip_prefix("Tgid:")?.trim().parse().ok())
    }
}

/// The inode of a `socket:[N]` link target.
pub fn socket_inode(link: &[u8]) -> Option<u64> {
    std::str::from_utf8(link.strip_prefix(b"socket:[")?.strip_suffix(b"]")?)
        .ok()?
        .parse()
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_its_own_fds_as_the_search_does() {
        let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let inode = rustix::fs::fstat(&sock).expect("fstat").st_ino;
        let fd = std::os::fd::AsRawFd::as_raw_fd(&sock);
        let me = i32::try_from(std::process::id()).expect("pid");
        let mut src = ProcFds::new();
        assert_eq!(src.read(me, fd), Read::Socket(inode));
        assert_eq!(src.read(me, 1 << 20), Read::Closed);
        let (all, done) = src.list(me, 0, 100_000).expect("listed");
        assert!(done && all.contains(&fd));
        // A listing resumes at a number, and stops at `max`.
        let (from_fd, _) = src.list(me, fd, 1).expect("listed");
        assert_eq!(from_fd, vec![fd]);
        if src.has_counts() {
            let (count, uid) = src.count(me).expect("counted");
            assert!(count.is_some_and(|c| c >= 3));
            assert_eq!(uid, rustix::process::geteuid().as_raw());
        }
        if src.has_counts() {
            // Its own directory, open now, is neither listed nor counted.
            let (all, _) = src.list(me, 0, 100_000).expect("listed");
            let (count, _) = src.count(me).expect("counted");
            assert_eq!(count, Some(all.len() as u64));
        }
        assert!(src.pids().iter().any(|(p, ino)| *p == me && *ino != 0));
        assert!(src.last_pid().is_some());
        assert_eq!(src.tgid(me), Some(me));
        // kthreadd is pid 2 where the pid namespace is the machine's.
        if std::fs::read_to_string("/proc/2/comm").is_ok_and(|c| c.trim() == "kthreadd") {
            assert!(src.runs_nothing(2));
        }
        assert!(!src.runs_nothing(me));
        src.release();
    }

    #[test]
    fn socket_links_are_parsed_strictly() {
        assert_eq!(socket_inode(b"socket:[12345]"), Some(12345));
        assert_eq!(socket_inode(b"/dev/null"), None);
        assert_eq!(socket_inode(b"socket:[12x]"), None);
        assert_eq!(socket_inode(b"socket:[1"), None);
    }
}
