use super::super::fd_table::{fake::FakeFds, Read};
use super::*;
use std::collections::HashMap;

/// Processes in memory: fds (via [`FakeFds`]), owners, identities, threads.
#[derive(Default)]
struct World {
    fds: FakeFds,
    owner: HashMap<i32, u32>,
    ident: HashMap<i32, u64>,
    threads: HashMap<i32, i32>,
    kernel: Vec<i32>,
    last: Option<i32>,
    counts: u64,
}

impl World {
    fn spawn(&mut self, pid: i32, uid: u32, sockets: &[u64]) {
        self.owner.insert(pid, uid);
        self.ident.insert(pid, 1_000_000 + pid as u64);
        self.fds.procs.insert(pid, Default::default());
        for fd in 0..3 {
            self.fds
                .procs
                .get_mut(&pid)
                .unwrap()
                .insert(fd, Read::Other);
        }
        for s in sockets {
            self.fds.open(pid, Read::Socket(*s));
        }
        self.last = Some(pid);
    }
    fn kill(&mut self, pid: i32) {
        self.owner.remove(&pid);
        self.ident.remove(&pid);
        self.fds.procs.remove(&pid);
    }
}

impl FdSource for World {
    fn list(&mut self, pid: i32, from: i32, max: usize) -> Option<(Vec<i32>, bool)> {
        self.fds.list(pid, from, max)
    }
    fn read(&mut self, pid: i32, fd: i32) -> Read {
        self.fds.read(pid, fd)
    }
}

impl ProcSource for World {
    fn pids(&mut self) -> Vec<(i32, u64)> {
        self.ident.iter().map(|(p, i)| (*p, *i)).collect()
    }
    fn count(&mut self, pid: i32) -> Option<(Option<u64>, u32)> {
        self.counts += 1;
        Some((self.fds.count(pid), *self.owner.get(&pid)?))
    }
    fn last_pid(&mut self) -> Option<i32> {
        self.last
    }
    fn runs_nothing(&mut self, pid: i32) -> bool {
        self.kernel.contains(&pid)
    }
    fn tgid(&mut self, tid: i32) -> Option<i32> {
        self.threads
            .get(&tid)
            .copied()
            .or_else(|| self.owner.contains_key(&tid).then_some(tid))
    }
}

/// The pipeline's limits (see `procfs`).
const ALL: Limits = Limits {
    budget: 16_000,
    pids: None,
    all: true,
    fast: false,
};
/// The reader's, but stopping at the first holder.
const EARLY: Limits = Limits {
    budget: 640,
    pids: Some(64),
    all: false,
    fast: true,
};
/// The reader's limits (see `procfs`).
const READER: Limits = Limits { all: true, ..EARLY };

fn pids(s: &Search) -> Vec<i32> {
    s.holders.iter().map(|h| h.pid).collect()
}

#[test]
fn newest_first_follows_the_pid_counter_around_its_wrap() {
    let mut pids = vec![1, 300, 27171, 22113, 22196, 24169, 5];
    sort_newest_first(&mut pids, Some(22196));
    assert_eq!(pids, vec![22196, 22113, 300, 5, 1, 27171, 24169]);
    sort_newest_first(&mut pids, None);
    assert_eq!(pids, vec![27171, 24169, 22196, 22113, 300, 5, 1]);
}

#[test]
fn every_holder_of_a_shared_socket_is_found() {
    let mut w = World::default();
    w.spawn(10, 1000, &[500]);
    w.spawn(20, 1000, &[600]);
    w.spawn(30, 65534, &[500]);
    let mut idx = HolderIndex::default();
    let s = idx.find(&mut w, 500, 1000, ALL);
    assert_eq!(pids(&s), vec![10, 30], "the owner's first, then the rest");
    assert!(s.complete);
    // The reader's search stops at the first: on its fast path, the newest process,
    // whoever owns it.
    let s = HolderIndex::default().find(&mut w, 500, 1000, EARLY);
    assert_eq!(pids(&s), vec![30]);
    assert!(!s.complete);
    // The reader's goes on among the newest processes, for a holder that sends and
    // exits before the pipeline looks; with three processes it looked at them all.
    let s = HolderIndex::default().find(&mut w, 500, 1000, READER);
    assert_eq!(pids(&s), vec![10, 30]);
    assert!(s.complete);
}

#[test]
fn a_socket_passed_on_later_is_seen_on_the_next_search() {
    let mut w = World::default();
    w.spawn(10, 1000, &[500]);
    w.spawn(20, 1000, &[]);
    let mut idx = HolderIndex::default();
    assert_eq!(pids(&idx.find(&mut w, 500, 1000, ALL)), vec![10]);
    // SCM_RIGHTS: the receiver gets the lowest free fd.
    w.fds.open(20, Read::Socket(500));
    let s = idx.find(&mut w, 500, 1000, ALL);
    assert_eq!(pids(&s), vec![20, 10], "newest first");
    // The sender closes its copy: one holder again.
    w.fds.close(10, 3);
    assert_eq!(pids(&idx.find(&mut w, 500, 1000, ALL)), vec![20]);
}

#[test]
fn a_process_with_ten_thousand_sockets_costs_a_stat_once_its_table_is_known() {
    let mut w = World::default();
    w.spawn(10, 1000, &[]);
    w.spawn(20, 1000, &[]);
    let many = (3..10_003).map(|fd| (fd, Read::Socket(fd as u64 - 2)));
    w.fds.procs.get_mut(&20).unwrap().extend(many);
    let mut idx = HolderIndex::default();
    let mut first = 0;
    // The first searches read the big table, within their budgets.
    for round in 0.. {
        let s = idx.find(&mut w, 7, 1000, ALL);
        if s.complete {
            first = round;
            break;
        }
        assert!(round < 8, "{s:?}");
    }
    assert!(first >= 1, "10,000 fds do not fit one budget");
    // Now each new socket of the other process costs one read, whatever the big one has.
    for i in 0..100 {
        let reads = w.fds.reads;
        w.fds.open(10, Read::Socket(50_000 + i));
        let s = idx.find(&mut w, 50_000 + i, 1000, ALL);
        assert_eq!(pids(&s), vec![10]);
        assert!(s.complete);
        assert!(
            w.fds.reads - reads <= 2,
            "round {i}: {}",
            w.fds.reads - reads
        );
    }
    // And the reader's search never reads past its budget, even for a table it never saw.
    let before = w.fds.reads + w.fds.listed;
    let s = HolderIndex::default().find(&mut w, 10_000, 1000, EARLY);
    assert!(w.fds.reads + w.fds.listed - before <= 640);
    assert!(s.exhausted);
}

#[test]
fn a_budget_cut_search_is_incomplete_and_says_so() {
    let mut w = World::default();
    for pid in 1..=200 {
        w.spawn(pid, 1000, &[pid as u64]);
    }
    let mut idx = HolderIndex::default();
    let s = idx.find(&mut w, 1, 1000, Limits { budget: 300, ..ALL });
    assert!(!s.complete && s.exhausted);
    let s = idx.find(
        &mut w,
        150,
        1000,
        Limits {
            pids: Some(10),
            ..ALL
        },
    );
    assert!(!s.complete, "not every process was looked at");
}

#[test]
fn kernel_threads_cost_one_stat_once_and_a_process_without_fds_is_no_kernel_thread() {
    let mut w = World::default();
    for pid in 2..12 {
        w.spawn(pid, 0, &[]);
        w.fds.procs.insert(pid, Default::default());
        w.kernel.push(pid);
    }
    // A daemon that closed every fd, then got a socket passed.
    w.spawn(20, 1000, &[]);
    w.fds.procs.insert(20, Default::default());
    let mut idx = HolderIndex::default();
    assert!(idx.find(&mut w, 500, 1000, ALL).holders.is_empty());
    let counts = w.counts;
    w.fds.open(20, Read::Socket(500));
    assert_eq!(pids(&idx.find(&mut w, 500, 1000, ALL)), vec![20]);
    assert_eq!(
        w.counts - counts,
        1,
        "the kernel threads were not looked at again"
    );
}

#[test]
fn a_reused_pid_is_a_new_table() {
    let mut w = World::default();
    w.spawn(10, 1000, &[500]);
    let mut idx = HolderIndex::default();
    assert_eq!(pids(&idx.find(&mut w, 500, 1000, ALL)), vec![10]);
    w.kill(10);
    // Same pid, same fd count, another process: 501 where 500 was.
    w.spawn(10, 1000, &[501]);
    w.ident.insert(10, 42);
    let s = idx.find(&mut w, 501, 1000, ALL);
    assert_eq!(pids(&s), vec![10]);
    assert!(idx.find(&mut w, 500, 1000, ALL).holders.is_empty());
}

#[test]
fn the_fast_path_names_the_process_of_a_new_thread_id() {
    let mut w = World::default();
    w.spawn(10, 1000, &[500]);
    w.threads.insert(11, 10);
    w.last = Some(11);
    let mut idx = HolderIndex::default();
    let s = idx.find(&mut w, 500, 1000, EARLY);
    assert_eq!(pids(&s), vec![10]);
    assert_eq!(w.counts, 1, "found before /proc was listed");
}

#[test]
fn a_swap_the_count_cannot_show_is_found_when_nothing_else_is() {
    let mut w = World::default();
    w.spawn(10, 1000, &[500, 501]);
    let mut idx = HolderIndex::default();
    assert_eq!(pids(&idx.find(&mut w, 501, 1000, ALL)), vec![10]);
    // Close the top socket and open another: the same number, the same count.
    w.fds.close(10, 4);
    w.fds.open(10, Read::Socket(502));
    let s = idx.find(&mut w, 502, 1000, ALL);
    assert_eq!(pids(&s), vec![10]);
}

#[test]
fn memory_is_bounded_by_dropping_the_largest_table() {
    let mut w = World::default();
    w.spawn(10, 1000, &[1]);
    w.spawn(20, 1000, &[]);
    let big = (3..ENTRY_LIMIT as i32 + 10).map(|fd| (fd, Read::Socket(100 + fd as u64)));
    w.fds.procs.get_mut(&20).unwrap().extend(big);
    let mut idx = HolderIndex::default();
    for _ in 0..3 {
        idx.find(
            &mut w,
            1,
            1000,
            Limits {
                budget: 1_000_000,
                ..ALL
            },
        );
        assert!(idx.entries() <= ENTRY_LIMIT);
    }
    assert!(idx.table(10).is_some() && idx.table(20).is_none());
}
