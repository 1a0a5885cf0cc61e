//! One process's open fds as last read from /proc, kept in step with few reads.
//!
//! Why: the index this replaced listed every fd of a process on each miss. Behind a process
//! holding 10,000 sockets that was 10,000 readlinks (~5 µs each on the 2-core test VM) and a
//! listing (~8 ms), twice a lookup: 150 ms a UDP flow (bench row f). Here a process's table is
//! read once and then kept up. The kernel counts a process's open fds (the size of
//! `/proc/<pid>/fd`, Linux ≥ 6.2, one stat of ~3 µs), so an unchanged count costs nothing more.
//! A changed count is explained by reading the few fd numbers the kernel hands out next (the
//! lowest free ones: `socket`, `open`, `dup` and `SCM_RIGHTS` all take the lowest) or, for
//! closes, the highest ones; only what the probes cannot explain lists the fds again.
//!
//! What a count cannot show: a close and an open at the same number between two looks (a
//! swap). [`FdTable::reverify`] reads known entries again, newest fd numbers first, for the
//! lookups that found nothing the cheap way.
//!
//! All work is charged to a [`Budget`]; a table left unfinished is resumed by the next lookup.
//! The logic runs over the [`FdSource`] trait, so it is tested with plain values.

use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What one fd of a process is, as read now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Read {
    Socket(u64),
    Other,
    Closed,
}

/// A process's fds as the kernel shows them.
pub trait FdSource {
    /// Up to `max` open fd numbers of `pid` from `from` upward, ascending, and whether the
    /// listing reached the last one; `None` when the process is gone.
    fn list(&mut self, pid: i32, from: i32, max: usize) -> Option<(Vec<i32>, bool)>;
    /// What fd `fd` of `pid` is now.
    fn read(&mut self, pid: i32, fd: i32) -> Read;
}

/// Work a lookup may still do, in units of about a microsecond on the 2-core test VM
/// (measured in bench row f). Counted, not timed: the same lookup does the same work on any
/// machine, and a test can say how much.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    left: u32,
    /// Some work was refused: the answer may be incomplete.
    pub exhausted: bool,
}

impl Budget {
    /// One `readlink` of an fd (~5 µs).
    pub const READ: u32 = 5;
    /// One fd number listed by `getdents` (~0.8 µs).
    pub const ENTRY: u32 = 1;
    /// One stat of a process's fd directory (~3 µs).
    pub const COUNT: u32 = 3;

    pub fn new(units: u32) -> Budget {
        Budget {
            left: units,
            exhausted: false,
        }
    }

    /// Takes `cost` units if they are left; marks the budget exhausted otherwise.
    pub fn take(&mut self, cost: u32) -> bool {
        if self.left >= cost {
            self.left -= cost;
            true
        } else {
            self.exhausted = true;
            false
        }
    }

    pub fn left(&self) -> u32 {
        self.left
    }
}

/// Listing a table again costs more than probing it when more than this share of its entries
/// would be probed.
const PROBE_SHARE: usize = 4;
/// Fd numbers listed per `list` call.
const LIST_CHUNK: usize = 512;

/// What the table knows of one fd.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entry {
    Socket(u64),
    Other,
    /// Listed, not read yet.
    Unread,
}

/// One process's fds: every number listed, what each is once read, and its sockets by inode.
#[derive(Debug, Default)]
pub struct FdTable {
    fds: BTreeMap<i32, Entry>,
    unread: BTreeSet<i32>,
    sockets: HashMap<u64, Vec<i32>>,
    /// While being listed: the next fd number to list from.
    listing: Option<i32>,
    /// Listed at least once.
    built: bool,
}

impl FdTable {
    /// How many fds the table holds.
    pub fn len(&self) -> usize {
        self.fds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.fds.is_empty()
    }

    /// The table matches the process as of its last sync: listed, every entry read.
    pub fn in_sync(&self) -> bool {
        self.built && self.listing.is_none() && self.unread.is_empty()
    }

    /// The fds at which the table last saw socket `inode`.
    pub fn fds_of(&self, inode: u64) -> &[i32] {
        self.sockets.get(&inode).map_or(&[], Vec::as_slice)
    }

    /// The socket fds, highest number first (the newest, when numbers are handed out lowest
    /// first and nothing was closed below them).
    pub fn sockets_newest_first(&self) -> impl Iterator<Item = (i32, u64)> + '_ {
        self.fds.iter().rev().filter_map(|(fd, e)| match e {
            Entry::Socket(i) => Some((*fd, *i)),
            _ => None,
        })
    }

    fn set(&mut self, fd: i32, e: Entry) {
        if let Some(Entry::Socket(old)) = self.fds.insert(fd, e) {
            self.forget_socket(old, fd);
        }
        if e == Entry::Unread {
            self.unread.insert(fd);
        } else {
            self.unread.remove(&fd);
        }
        if let Entry::Socket(i) = e {
            self.sockets.entry(i).or_default().push(fd);
        }
    }

    fn remove(&mut self, fd: i32) {
        if let Some(Entry::Socket(old)) = self.fds.remove(&fd) {
            self.forget_socket(old, fd);
        }
        self.unread.remove(&fd);
    }

    fn forget_socket(&mut self, inode: u64, fd: i32) {
        if let Some(v) = self.sockets.get_mut(&inode) {
            v.retain(|f| *f != fd);
            if v.is_empty() {
                self.sockets.remove(&inode);
            }
        }
    }

    /// Records what a read found at `fd`.
    fn learn(&mut self, fd: i32, r: Read) {
        match r {
            Read::Socket(i) => self.set(fd, Entry::Socket(i)),
            Read::Other => self.set(fd, Entry::Other),
            Read::Closed => self.remove(fd),
        }
    }

    /// Brings the table in step with a process that has `count` fds open now (`None`: the
    /// kernel does not say, before Linux 6.2), within `budget`. Returns `false` when the
    /// process is gone.
    pub fn sync(
        &mut self,
        pid: i32,
        count: Option<u64>,
        src: &mut impl FdSource,
        budget: &mut Budget,
    ) -> bool {
        if self.listing.is_none() {
            let have = self.fds.len() as u64;
            let explained = match count {
                _ if !self.built => false,
                Some(now) if now == have => true,
                Some(now) if now > have => self.probe_opened(pid, now - have, src, budget),
                Some(now) => self.probe_closed(pid, have - now, src, budget),
                None => false,
            };
            if !explained {
                self.listing = Some(0);
            }
        }
        if let Some(from) = self.listing {
            match self.list_from(pid, from, src, budget) {
                Some(next) => self.listing = next,
                None => return false,
            }
        }
        self.read_unread(pid, src, budget);
        true
    }

    /// `n` more fds than the table has: the `n` lowest free numbers, read one by one. False
    /// when one of them is not open (something was closed too) or the probes cost more than
    /// a listing; the budget running out leaves the table unexplained as well.
    fn probe_opened(
        &mut self,
        pid: i32,
        n: u64,
        src: &mut impl FdSource,
        budget: &mut Budget,
    ) -> bool {
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        if n.saturating_mul(PROBE_SHARE) > self.fds.len().max(PROBE_SHARE) {
            return false;
        }
        let free: Vec<i32> = lowest_free(&self.fds).take(n).collect();
        for fd in free {
            if !budget.take(Budget::READ) {
                return false;
            }
            match src.read(pid, fd) {
                Read::Closed => return false,
                r => self.learn(fd, r),
            }
        }
        true
    }

    /// `n` fewer fds: the `n` highest numbers, if they are the ones closed.
    fn probe_closed(
        &mut self,
        pid: i32,
        n: u64,
        src: &mut impl FdSource,
        budget: &mut Budget,
    ) -> bool {
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        if n.saturating_mul(PROBE_SHARE) > self.fds.len() {
            return false;
        }
        let top: Vec<i32> = self.fds.keys().rev().take(n).copied().collect();
        for fd in top {
            if !budget.take(Budget::READ) {
                return false;
            }
            let r = src.read(pid, fd);
            self.learn(fd, r);
            if r != Read::Closed {
                return false;
            }
        }
        true
    }

    /// Lists from fd number `from`: new numbers are entered unread, numbers no longer listed
    /// are dropped. Returns where to go on next time (`Some(None)` when done), `None` when the
    /// process is gone.
    fn list_from(
        &mut self,
        pid: i32,
        mut from: i32,
        src: &mut impl FdSource,
        budget: &mut Budget,
    ) -> Option<Option<i32>> {
        loop {
            let affordable = (budget.left() / Budget::ENTRY) as usize;
            if affordable == 0 {
                budget.exhausted = true;
                return Some(Some(from));
            }
            let (fds, done) = src.list(pid, from, affordable.min(LIST_CHUNK))?;
            budget.take(Budget::ENTRY * fds.len() as u32);
            // Everything between `from` and the last number listed that was not listed is
            // closed; at the end, everything above it too.
            let upto = match (done, fds.last()) {
                (true, _) => i32::MAX,
                (false, Some(last)) => *last,
                (false, None) => return Some(Some(from)),
            };
            let gone: Vec<i32> = self
                .fds
                .range(from..=upto)
                .map(|(fd, _)| *fd)
                .filter(|fd| fds.binary_search(fd).is_err())
                .collect();
            for fd in gone {
                self.remove(fd);
            }
            for fd in &fds {
                if !self.fds.contains_key(fd) {
                    self.set(*fd, Entry::Unread);
                }
            }
            if done {
                self.built = true;
                return Some(None);
            }
            from = upto.saturating_add(1);
        }
    }

    /// Reads unread entries, highest number first, while the budget lasts.
    fn read_unread(&mut self, pid: i32, src: &mut impl FdSource, budget: &mut Budget) {
        while let Some(fd) = self.unread.last().copied() {
            if !budget.take(Budget::READ) {
                return;
            }
            let r = src.read(pid, fd);
            self.learn(fd, r);
        }
    }

    /// Reads up to `n` known entries again, highest number first, while the budget lasts,
    /// to find swaps a count cannot show; stops once socket `want` is seen. When an entry
    /// turned out closed, the table is listed again (something may have opened elsewhere).
    /// Returns whether `want` was seen.
    pub fn reverify(
        &mut self,
        pid: i32,
        want: u64,
        n: usize,
        src: &mut impl FdSource,
        budget: &mut Budget,
    ) -> bool {
        let fds: Vec<i32> = self.fds.keys().rev().take(n).copied().collect();
        let mut closed = false;
        for fd in fds {
            if !budget.take(Budget::READ) {
                return false;
            }
            let r = src.read(pid, fd);
            self.learn(fd, r);
            if r == Read::Socket(want) {
                return true;
            }
            closed |= r == Read::Closed;
        }
        if closed {
            match self.list_from(pid, 0, src, budget) {
                Some(next) => self.listing = next,
                None => return false,
            }
            self.read_unread(pid, src, budget);
        }
        !self.fds_of(want).is_empty()
    }

    /// Checks that `fd` still holds socket `inode` (one read), correcting the table if not.
    pub fn confirm(
        &mut self,
        pid: i32,
        fd: i32,
        inode: u64,
        src: &mut impl FdSource,
        budget: &mut Budget,
    ) -> bool {
        if !budget.take(Budget::READ) {
            return false;
        }
        let r = src.read(pid, fd);
        self.learn(fd, r);
        r == Read::Socket(inode)
    }
}

/// Fd numbers not in `fds`, lowest first: the holes, then everything above the highest.
fn lowest_free(fds: &BTreeMap<i32, Entry>) -> impl Iterator<Item = i32> + '_ {
    let mut keys = fds.keys().copied().peekable();
    let mut n = 0i32;
    std::iter::from_fn(move || loop {
        match keys.peek() {
            Some(&k) if k == n => {
                keys.next();
                n = n.checked_add(1)?;
            }
            Some(&k) if k < n => {
                keys.next();
            }
            _ => {
                let out = n;
                n = n.checked_add(1)?;
                return Some(out);
            }
        }
    })
}

#[cfg(test)]
pub(crate) mod fake {
    //! A process table in memory: fd → what it is, with counts of the work asked of it.
    use super::{FdSource, Read};
    use std::collections::{BTreeMap, HashMap};

    #[derive(Default)]
    pub struct FakeFds {
        pub procs: HashMap<i32, BTreeMap<i32, Read>>,
        pub reads: u64,
        pub listed: u64,
    }

    impl FakeFds {
        /// A process whose fds 0..n are sockets with inodes `base + fd`.
        pub fn with_sockets(pid: i32, n: i32, base: u64) -> FakeFds {
            let mut f = FakeFds::default();
            f.procs.insert(
                pid,
                (0..n)
                    .map(|fd| (fd, Read::Socket(base + fd as u64)))
                    .collect(),
            );
            f
        }

        pub fn count(&self, pid: i32) -> Option<u64> {
            self.procs.get(&pid).map(|t| t.len() as u64)
        }

        /// Opens `r` at the lowest free number, as the kernel does; returns it.
        pub fn open(&mut self, pid: i32, r: Read) -> i32 {
            let t = self.procs.entry(pid).or_default();
            let fd = (0..).find(|n| !t.contains_key(n)).unwrap_or(0);
            t.insert(fd, r);
            fd
        }

        pub fn close(&mut self, pid: i32, fd: i32) {
            if let Some(t) = self.procs.get_mut(&pid) {
                t.remove(&fd);
            }
        }
    }

    impl FdSource for FakeFds {
        fn list(&mut self, pid: i32, from: i32, max: usize) -> Option<(Vec<i32>, bool)> {
            let t = self.procs.get(&pid)?;
            let mut it = t.range(from..).map(|(fd, _)| *fd);
            let fds: Vec<i32> = it.by_ref().take(max).collect();
            self.listed += fds.len() as u64;
            Some((fds, it.next().is_none()))
        }

        fn read(&mut self, pid: i32, fd: i32) -> Read {
            self.reads += 1;
            self.procs
                .get(&pid)
                .and_then(|t| t.get(&fd).copied())
                .unwrap_or(Read::Closed)
        }
    }
}

#[cfg(test)]
#[path = "fd_table_tests.rs"]
mod tests;
