//! Whether the file `/proc/PID/exe` names is the file the process was started from, for a
//! process that could have changed it.
//!
//! `/proc/PID/exe` is `mm->exe_file`, and a process can set that itself: `prctl(PR_SET_MM,
//! PR_SET_MM_MAP)` with an `exe_fd` needs only `CAP_CHECKPOINT_RESTORE` in the process's own
//! user namespace, which any program gets by making one (`unshare(CLONE_NEWUSER)`). The
//! kernel's one condition, that the old executable is no longer mapped, is met by a program
//! run through the dynamic loader that unmaps the loader. Measured here: an unprivileged
//! python did that and `/proc/PID/exe` then read `/usr/bin/curl`, with curl's device and
//! inode, which every check of the path passed (`helper/tests/attacks.rs`).
//!
//! And not only its own: a process that shares its memory (`clone(CLONE_VM)`, not a thread)
//! can make a user namespace of its own and set the `exe_file` of the memory both use, so a
//! process in the machine's user namespace can show a file it never ran too. So the file
//! counts where the kernel's records show it: the exec record of the process's last `execve`
//! names that very file (the file the kernel ran, `bprm->file`, which no prctl changes), or
//! it never exec'd and its fork record shows its forker ran that file at the fork, and the
//! forker's image is shown the same way, up to eight forks back. A record that shows another
//! file means the executable was set since: not verified. Where no record reaches (a process
//! started before the helper, or one whose records were evicted), a process in the machine's
//! user namespace is believed as `/proc` shows it (left open: one that started before the
//! helper and shares its memory with a masquerading one), and any other is not verified.

use crate::attribution::exe::FileId;
use crate::attribution::fork_hook::ForkRecord;

/// How far back a chain of forks is followed.
const FORKS_BACK: usize = 8;

/// A process's start time, as precisely as it is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// From a kernel record: CLOCK_BOOTTIME nanoseconds.
    Ns(u64),
    /// From `/proc/PID/stat`: clock ticks.
    Ticks(u64),
}

/// The records of one process, found by pid and start time.
pub trait Records {
    /// The file its last `execve` ran, from its exec record.
    fn exec_file(&mut self, pid: u32, start: Start) -> Option<FileId>;
    /// Its fork record.
    fn fork(&mut self, pid: u32, start: Start) -> Option<ForkRecord>;
    /// Whether a record's file (the kernel's device) and a `stat`'s are one file (see
    /// `attribution::devices`).
    fn same_file(&mut self, kernel: FileId, seen: FileId) -> bool {
        kernel == seen
    }
}

/// What the records say of process `pid` (started at `start`) running file `id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    /// Its last exec ran that file, or its forkers' chain reaches an exec of it.
    Runs,
    /// A record shows another file: it set its executable since (or a process sharing its
    /// memory did).
    Differs,
    /// No record reaches back to an exec (started before the helper, or evicted).
    Unknown,
}

/// What the records show of process `pid` (started at `start`) running file `id`.
pub fn shown(records: &mut impl Records, pid: u32, start: Start, id: FileId) -> Shown {
    let (mut pid, mut start) = (pid, start);
    for _ in 0..FORKS_BACK {
        if let Some(file) = records.exec_file(pid, start) {
            return if records.same_file(file, id) {
                Shown::Runs
            } else {
                Shown::Differs
            };
        }
        let Some(f) = records.fork(pid, start) else {
            return Shown::Unknown;
        };
        if !records.same_file(f.by_file, id) {
            return Shown::Differs;
        }
        if f.by == 0 || f.by_start_ns == 0 {
            return Shown::Unknown;
        }
        (pid, start) = (f.by, Start::Ns(f.by_start_ns));
    }
    Shown::Unknown
}

/// Why a process's executable is not believed when its records show another file.
pub const DIFFERS: &str = "the executable /proc shows is not the file its exec record ran: a \
    program can set it (PR_SET_MM_MAP, from a user namespace of its own)";
/// Why, when no record reaches it and it runs in a user namespace of its own.
pub const UNKNOWN: &str = "runs in a user namespace of its own, where a program can set the \
    executable /proc shows (PR_SET_MM_MAP), and no exec or fork record shows what it ran";

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Default)]
    struct Table {
        execs: HashMap<(u32, u64), FileId>,
        forks: HashMap<(u32, u64), ForkRecord>,
    }

    fn ns(s: Start) -> u64 {
        match s {
            Start::Ns(n) | Start::Ticks(n) => n,
        }
    }

    impl Records for Table {
        fn exec_file(&mut self, pid: u32, start: Start) -> Option<FileId> {
            self.execs.get(&(pid, ns(start))).copied()
        }
        fn fork(&mut self, pid: u32, start: Start) -> Option<ForkRecord> {
            self.forks.get(&(pid, ns(start))).copied()
        }
    }

    const CURL: FileId = (1, 10);
    const LOADER: FileId = (1, 20);

    fn forked(pid: u32, start: u64, by: u32, by_start: u64, file: FileId) -> ForkRecord {
        ForkRecord {
            pid,
            start_ns: start,
            by,
            by_start_ns: by_start,
            by_file: file,
        }
    }

    #[test]
    fn an_exec_record_of_that_file_proves_it_and_one_of_another_disproves_it() {
        let mut t = Table::default();
        t.execs.insert((5, 50), CURL);
        assert_eq!(shown(&mut t, 5, Start::Ns(50), CURL), Shown::Runs);
        // The masquerade: it exec'd the loader and set its executable to curl since.
        t.execs.insert((6, 60), LOADER);
        assert_eq!(shown(&mut t, 6, Start::Ns(60), CURL), Shown::Differs);
        // Another process with the pid, or no record at all.
        assert_eq!(shown(&mut t, 5, Start::Ns(51), CURL), Shown::Unknown);
        assert_eq!(shown(&mut t, 7, Start::Ns(70), CURL), Shown::Unknown);
    }

    #[test]
    fn a_forked_child_is_proven_through_its_forkers_up_to_an_exec() {
        let mut t = Table::default();
        t.execs.insert((2, 20), CURL);
        t.forks.insert((3, 30), forked(3, 30, 2, 20, CURL));
        t.forks.insert((4, 40), forked(4, 40, 3, 30, CURL));
        assert_eq!(shown(&mut t, 4, Start::Ns(40), CURL), Shown::Runs);
        // A child that set its executable after the fork: it differs from its fork record.
        assert_eq!(shown(&mut t, 4, Start::Ns(40), LOADER), Shown::Differs);
        // A forker that had set its executable before forking (or whose memory a sibling
        // shares and set): its exec record differs.
        t.execs.insert((8, 80), LOADER);
        t.forks.insert((9, 90), forked(9, 90, 8, 80, CURL));
        assert_eq!(shown(&mut t, 9, Start::Ns(90), CURL), Shown::Differs);
        // A chain the records do not reach back to an exec.
        t.forks.insert((11, 110), forked(11, 110, 12, 120, CURL));
        assert_eq!(shown(&mut t, 11, Start::Ns(110), CURL), Shown::Unknown);
    }

    #[test]
    fn a_chain_is_followed_eight_forks_back_and_a_loop_ends_unknown() {
        let mut t = Table::default();
        t.execs.insert((100, 1), CURL);
        for pid in 101..=108 {
            t.forks.insert((pid, 1), forked(pid, 1, pid - 1, 1, CURL));
        }
        assert_eq!(shown(&mut t, 107, Start::Ns(1), CURL), Shown::Runs);
        assert_eq!(shown(&mut t, 108, Start::Ns(1), CURL), Shown::Unknown);
        let mut l = Table::default();
        l.forks.insert((1, 1), forked(1, 1, 2, 1, CURL));
        l.forks.insert((2, 1), forked(2, 1, 1, 1, CURL));
        assert_eq!(shown(&mut l, 1, Start::Ns(1), CURL), Shown::Unknown);
    }
}
