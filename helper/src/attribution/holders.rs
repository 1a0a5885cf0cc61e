//! Which processes hold a socket inode: one [`FdTable`] per process, kept up across lookups,
//! and the search over them within a [`Budget`].
//!
//! A search goes newest process first and the socket owner's processes before the rest, as
//! the index it replaced did (the flows that matter most come from programs that just started
//! and may be gone a millisecond later). Unlike it, it need not stop at the first holder: a
//! socket inherited across `fork` or passed with `SCM_RIGHTS` has several, and naming the
//! newest alone let a program hide behind a trusted one it shared its socket with. So the
//! pipeline's search looks at every process (one stat each, ~3 µs, while nothing changed) and
//! says whether it could ([`Search::complete`]); the reader's stops at the first holder.
//!
//! The processes, their fds and the pid counter come through [`ProcSource`], so the search is
//! tested with plain values; [`super::proc_fds`] is the real one.

use std::collections::HashMap;

use super::fd_table::{Budget, FdSource, FdTable};

/// The machine's processes, as /proc shows them.
pub trait ProcSource: FdSource {
    /// Every process (thread group id) with an identity that changes when its pid is reused:
    /// the inode of its /proc directory.
    fn pids(&mut self) -> Vec<(i32, u64)>;
    /// How many fds `pid` has open (`None` when the kernel does not say) and the uid that owns
    /// them; `None` when the process is gone.
    fn count(&mut self, pid: i32) -> Option<(Option<u64>, u32)>;
    /// The last pid the kernel handed out.
    fn last_pid(&mut self) -> Option<i32>;
    /// The process a task id belongs to (the last id handed out may be a thread's).
    fn tgid(&mut self, tid: i32) -> Option<i32>;
    /// `pid` runs no program: a kernel thread (or a zombie), which never holds an fd.
    fn runs_nothing(&mut self, pid: i32) -> bool;
}

/// How far one search may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Work units ([`Budget`]).
    pub budget: u32,
    /// Look at no more than this many of the newest processes.
    pub pids: Option<usize>,
    /// Look for every holder, not just the first.
    pub all: bool,
    /// Try the few pids handed out last before listing /proc (the reader's way: a program
    /// that just sent and is about to exit is almost always one of them).
    pub fast: bool,
}

/// A process and the fd at which it holds the socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holder {
    pub pid: i32,
    pub fd: i32,
}

/// What a search found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Search {
    /// The holders, in the order found (newest process first, the owner's first).
    pub holders: Vec<Holder>,
    /// Every process was looked at, each table was in step, and the budget lasted. Not a
    /// proof: a process can close and reopen fds between two looks at the same count.
    pub complete: bool,
    /// The budget ran out.
    pub exhausted: bool,
}

/// How many of each table's highest fds a search that found nothing reads again first.
const REVERIFY_TOP: usize = 4;
/// The share of a lookup's budget (one in this many) its deeper re-reading may take.
const REVERIFY_SHARE: u32 = 4;
/// How many of the pids handed out last are tried before /proc is listed.
const FAST_PIDS: i32 = 4;
/// Fds kept in all tables together; past it the largest tables are dropped (and read again,
/// within budgets, when needed). About 60 bytes each: ~8 MB.
const ENTRY_LIMIT: usize = 1 << 17;

struct Known {
    /// The identity from the /proc listing; 0 when the table was made before one was seen.
    ident: u64,
    table: FdTable,
    /// A kernel thread: skipped from then on. Most pids of a machine are (59 of 77 on the
    /// test VM), and each costs a stat a search otherwise.
    kernel: bool,
}

/// The tables of every process looked at so far.
#[derive(Default)]
pub struct HolderIndex {
    tables: HashMap<i32, Known>,
}

impl HolderIndex {
    /// Every holder of socket `inode` (owned by `uid`) that the limits let it find.
    pub fn find<S: ProcSource>(
        &mut self,
        src: &mut S,
        inode: u64,
        uid: u32,
        limits: Limits,
    ) -> Search {
        let mut budget = Budget::new(limits.budget);
        let mut found = Vec::new();
        // 1. Processes that held it at the last look, if they still do.
        let mut known: Vec<Holder> = self
            .tables
            .iter()
            .filter_map(|(pid, k)| {
                let fd = *k.table.fds_of(inode).first()?;
                Some(Holder { pid: *pid, fd })
            })
            .collect();
        known.sort_by_key(|h| std::cmp::Reverse(h.pid));
        for h in known {
            if self.confirm(src, h, inode, &mut budget) {
                found.push(h);
            }
        }
        if !limits.all && !found.is_empty() {
            return self.done(found, false, budget);
        }
        let last = src.last_pid();
        // 2. The reader's fast path, before /proc is listed at all: the few pids handed out
        //    last. A program that just connected and is about to exit is almost always one.
        if limits.fast && found.is_empty() {
            if let Some(h) = self.fast_path(src, last, inode, &mut budget) {
                if !limits.all {
                    return self.done(vec![h], false, budget);
                }
                found.push(h);
            }
        }
        // 3. Every process, newest first, the owner's first.
        let mut complete = true;
        let mut pids = self.listing(src, &mut budget);
        sort_newest_first(&mut pids, last);
        if let Some(limit) = limits.pids {
            if pids.len() > limit {
                pids.truncate(limit);
                complete = false;
            }
        }
        let mut counted = Vec::with_capacity(pids.len());
        for pid in pids {
            if self.tables.get(&pid).is_some_and(|k| k.kernel) {
                continue;
            }
            if !budget.take(Budget::COUNT) {
                complete = false;
                break;
            }
            let Some((count, owner)) = src.count(pid) else {
                continue;
            };
            if count == Some(0) && !self.tables.contains_key(&pid) && src.runs_nothing(pid) {
                self.tables.insert(
                    pid,
                    Known {
                        ident: 0,
                        table: FdTable::default(),
                        kernel: true,
                    },
                );
                continue;
            }
            counted.push((pid, count, owner == uid));
        }
        counted.sort_by_key(|(_, _, owner)| !owner);
        let order: HashMap<i32, usize> = counted
            .iter()
            .enumerate()
            .map(|(i, (pid, _, _))| (*pid, i))
            .collect();
        let mut owners = Vec::new();
        for (pid, count, owner) in counted {
            if owner {
                owners.push(pid);
            }
            let Some(in_sync) = self.sync(src, pid, count, &mut budget) else {
                continue;
            };
            complete &= in_sync;
            if found.iter().any(|h| h.pid == pid) {
                continue;
            }
            let fd = self
                .tables
                .get(&pid)
                .and_then(|k| k.table.fds_of(inode).first().copied());
            if let Some(fd) = fd {
                found.push(Holder { pid, fd });
                if !limits.all {
                    return self.done(found, false, budget);
                }
            }
            if budget.exhausted {
                break;
            }
        }
        // 4. Nothing found the cheap way: read the owner's tables again, newest fds first,
        //    for a close and an open at one number that the counts could not show. First
        //    the few top fds of each (where a program that opens and closes sockets in turn
        //    reuses its number), then deeper, within a share of the budget: a socket nobody
        //    holds any more (a program that sent and exited) is the common miss, and must
        //    not cost a full read of every table.
        if found.is_empty() {
            let mut deep = Budget::new(limits.budget / REVERIFY_SHARE);
            'rounds: for (depth, budget) in [(REVERIFY_TOP, &mut budget), (usize::MAX, &mut deep)] {
                for &pid in &owners {
                    let Some(k) = self.tables.get_mut(&pid) else {
                        continue;
                    };
                    if k.table.reverify(pid, inode, depth, src, budget) {
                        if let Some(fd) = k.table.fds_of(inode).first().copied() {
                            found.push(Holder { pid, fd });
                            if !limits.all {
                                break 'rounds;
                            }
                        }
                    }
                    if budget.exhausted {
                        break;
                    }
                }
                if !found.is_empty() {
                    break;
                }
            }
            budget.exhausted |= deep.exhausted;
        }
        // Known holders were confirmed first; report all in the order of the pass.
        found.sort_by_key(|h| order.get(&h.pid).copied().unwrap_or(usize::MAX));
        self.bound_memory();
        self.done(found, complete && limits.all, budget)
    }

    fn done(&mut self, holders: Vec<Holder>, complete: bool, budget: Budget) -> Search {
        Search {
            holders,
            complete: complete && !budget.exhausted,
            exhausted: budget.exhausted,
        }
    }

    fn confirm<S: ProcSource>(
        &mut self,
        src: &mut S,
        h: Holder,
        inode: u64,
        budget: &mut Budget,
    ) -> bool {
        self.tables
            .get_mut(&h.pid)
            .is_some_and(|k| k.table.confirm(h.pid, h.fd, inode, src, budget))
    }

    /// Brings `pid`'s table in step (making it if new); `None` when the process is gone, else
    /// whether the table is complete.
    fn sync<S: ProcSource>(
        &mut self,
        src: &mut S,
        pid: i32,
        count: Option<u64>,
        budget: &mut Budget,
    ) -> Option<bool> {
        let k = self.tables.entry(pid).or_insert_with(|| Known {
            ident: 0,
            table: FdTable::default(),
            kernel: false,
        });
        if !k.table.sync(pid, count, src, budget) {
            self.tables.remove(&pid);
            return None;
        }
        Some(k.table.in_sync())
    }

    /// The /proc listing; drops the tables of processes gone or whose pid was reused.
    fn listing<S: ProcSource>(&mut self, src: &mut S, budget: &mut Budget) -> Vec<i32> {
        let listed = src.pids();
        // Listing /proc costs about what listing as many fds does; it is paid even when the
        // budget is short, or nothing could be found at all.
        let _ = budget.take(Budget::ENTRY * listed.len() as u32);
        let now: HashMap<i32, u64> = listed.iter().copied().collect();
        self.tables.retain(|pid, k| match now.get(pid) {
            Some(&ident) if k.ident == 0 || k.ident == ident => {
                k.ident = ident;
                true
            }
            _ => false,
        });
        listed.into_iter().map(|(pid, _)| pid).collect()
    }

    fn fast_path<S: ProcSource>(
        &mut self,
        src: &mut S,
        last: Option<i32>,
        inode: u64,
        budget: &mut Budget,
    ) -> Option<Holder> {
        let last = last?;
        for tid in (last - FAST_PIDS + 1..=last).rev().filter(|p| *p > 0) {
            // A known table is a process; anything else may be a thread, of a process
            // whose table is then the one to look at.
            let pid = if self.tables.contains_key(&tid) {
                tid
            } else {
                match src.tgid(tid) {
                    Some(pid) => pid,
                    None => continue,
                }
            };
            if !budget.take(Budget::COUNT) {
                return None;
            }
            let Some((count, _)) = src.count(pid) else {
                continue;
            };
            self.sync(src, pid, count, budget)?;
            let fd = self.tables.get(&pid)?.table.fds_of(inode).first().copied();
            if let Some(fd) = fd {
                return Some(Holder { pid, fd });
            }
        }
        None
    }

    /// The tables of the `n` newest processes, brought in step within `budget`, newest first.
    pub fn newest<S: ProcSource>(
        &mut self,
        src: &mut S,
        n: usize,
        budget: &mut Budget,
    ) -> Vec<i32> {
        let last = src.last_pid();
        let mut pids = self.listing(src, budget);
        sort_newest_first(&mut pids, last);
        let mut out = Vec::new();
        let user = |pid: &i32| !self.tables.get(pid).is_some_and(|k| k.kernel);
        let pids: Vec<i32> = pids.into_iter().filter(user).take(n).collect();
        for pid in pids {
            if !budget.take(Budget::COUNT) {
                break;
            }
            let Some((count, _)) = src.count(pid) else {
                continue;
            };
            if self.sync(src, pid, count, budget).is_some() {
                out.push(pid);
            }
        }
        out
    }

    pub fn table(&self, pid: i32) -> Option<&FdTable> {
        self.tables.get(&pid).map(|k| &k.table)
    }

    /// Fds in all tables together.
    pub fn entries(&self) -> usize {
        self.tables.values().map(|k| k.table.len()).sum()
    }

    /// Drops the largest tables while all together hold more than [`ENTRY_LIMIT`] fds: a
    /// process holding 100,000 sockets costs memory once, not without end.
    fn bound_memory(&mut self) {
        let mut total = self.entries();
        while total > ENTRY_LIMIT {
            let Some((&pid, _)) = self.tables.iter().max_by_key(|(_, k)| k.table.len()) else {
                return;
            };
            if let Some(k) = self.tables.remove(&pid) {
                total -= k.table.len();
            }
        }
    }
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

#[cfg(test)]
#[path = "holders_tests.rs"]
mod tests;
