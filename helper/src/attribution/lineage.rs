//! Who started a process: the chain of its parents, nearest first, as they were.
//!
//! `/proc/PID/stat` names a live process's parent, but only the one it has now: when the
//! parent exits, the child is handed to a reaper (init, or a subreaper), and the chain that
//! says "curl, started by sh, started by `npm install`" is gone by the time anyone looks. The
//! exec records keep it: each says who the parent was, by pid *and* start time, when the
//! process exec'd, and a parent that has exited is described from its own record. So the
//! walk prefers a record's parent over `/proc`'s, and names each step by pid and start time,
//! which a later process given the same pid never matches.
//!
//! The walk is over the small [`Tree`] trait, so it is tested with tables here; the real tree
//! (`/proc` and the exec records) is `procfs::ProcIndex`'s.

use std::collections::HashSet;

use crate::event::{Ancestor, ANCESTORS_KEPT, ANCESTOR_ARGS_KEPT};

/// How long one argument of a parent's command line may be; the rest is cut and marked.
pub const ANCESTOR_ARG_CHARS: usize = 100;

/// A process's parent as a record or `/proc` names it: its pid, and its start time
/// (CLOCK_BOOTTIME nanoseconds, from an exec record) when known.
pub type Parent = (u32, Option<u64>);

/// One step of the chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    pub ancestor: Ancestor,
    /// Its own parent, if any (pid 0: none).
    pub parent: Option<Parent>,
    /// A session leader (or init): the chain ends with it.
    pub last: bool,
}

/// Processes, live or exited, by pid and start time.
pub trait Tree {
    /// The live process `pid`, if it started at `start` (any, when `None`).
    fn live(&mut self, pid: u32, start: Option<u64>) -> Option<Node>;
    /// Process `pid` that started at `start` and has exited, from its exec record.
    fn exited(&mut self, pid: u32, start: u64) -> Option<Node>;
}

/// The chain from `first` (the process's parent) up, at most [`ANCESTORS_KEPT`] steps, ending
/// with a session leader or init, or where nothing more is known.
pub fn walk(tree: &mut impl Tree, first: Option<Parent>) -> Vec<Ancestor> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut next = first;
    while let Some((pid, start)) = next {
        if pid == 0 || out.len() >= ANCESTORS_KEPT || !seen.insert(pid) {
            break;
        }
        let node = match tree.live(pid, start) {
            Some(n) => n,
            None => match start.and_then(|s| tree.exited(pid, s)) {
                Some(n) => n,
                None => break,
            },
        };
        out.push(node.ancestor);
        if node.last {
            break;
        }
        next = node.parent;
    }
    out
}

/// A parent's command line, cut short: [`ANCESTOR_ARGS_KEPT`] arguments of at most
/// [`ANCESTOR_ARG_CHARS`] characters, a cut marked with "…".
pub fn short_cmdline(args: &[String]) -> Vec<String> {
    let mut out: Vec<String> = args
        .iter()
        .take(ANCESTOR_ARGS_KEPT)
        .map(|a| {
            if a.chars().count() > ANCESTOR_ARG_CHARS {
                let mut s: String = a.chars().take(ANCESTOR_ARG_CHARS).collect();
                s.push('…');
                s
            } else {
                a.clone()
            }
        })
        .collect();
    if args.len() > ANCESTOR_ARGS_KEPT {
        out.push("…".into());
    }
    out
}

/// Nanoseconds since boot in `/proc`'s clock ticks, rounded down as the kernel rounds.
pub fn ticks(ns: u64, tick_ns: u64) -> u64 {
    ns / tick_ns.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    #[derive(Default)]
    struct Table {
        live: HashMap<u32, (u64, Node)>,
        exited: HashMap<(u32, u64), Node>,
    }

    fn node(pid: u32, comm: &str, parent: Option<Parent>, last: bool) -> Node {
        Node {
            ancestor: Ancestor {
                pid,
                comm: comm.into(),
                ..Default::default()
            },
            parent,
            last,
        }
    }

    impl Tree for Table {
        fn live(&mut self, pid: u32, start: Option<u64>) -> Option<Node> {
            let (s, n) = self.live.get(&pid)?;
            start.is_none_or(|want| want == *s).then(|| n.clone())
        }
        fn exited(&mut self, pid: u32, start: u64) -> Option<Node> {
            let mut n = self.exited.get(&(pid, start))?.clone();
            n.ancestor.exited = true;
            Some(n)
        }
    }

    fn pids(v: &[Ancestor]) -> Vec<(u32, bool)> {
        v.iter().map(|a| (a.pid, a.exited)).collect()
    }

    #[test]
    fn walks_live_parents_to_the_session_leader() {
        let mut t = Table::default();
        t.live
            .insert(30, (3, node(30, "sh", Some((20, Some(2))), false)));
        t.live
            .insert(20, (2, node(20, "sh", Some((10, None)), false)));
        t.live
            .insert(10, (1, node(10, "bash", Some((1, None)), true)));
        t.live.insert(1, (0, node(1, "systemd", None, true)));
        assert_eq!(
            pids(&walk(&mut t, Some((30, Some(3))))),
            [(30, false), (20, false), (10, false)]
        );
    }

    #[test]
    fn an_exited_parent_comes_from_its_record_and_the_walk_goes_on() {
        let mut t = Table::default();
        t.exited
            .insert((20, 2), node(20, "npm", Some((10, Some(1))), false));
        t.live.insert(10, (1, node(10, "bash", None, true)));
        assert_eq!(
            pids(&walk(&mut t, Some((20, Some(2))))),
            [(20, true), (10, false)]
        );
    }

    #[test]
    fn a_reused_pid_is_not_the_parent() {
        let mut t = Table::default();
        // Pid 20 is alive, but started later than the parent the record names; the record
        // of the parent itself was evicted: the chain ends, it does not borrow the stranger.
        t.live
            .insert(20, (9, node(20, "evil", Some((1, None)), false)));
        assert!(walk(&mut t, Some((20, Some(2)))).is_empty());
        // Without a start time to check, /proc's word is taken (it names a live parent).
        assert_eq!(pids(&walk(&mut t, Some((20, None)))), [(20, false)]);
    }

    #[test]
    fn the_chain_is_bounded_and_a_loop_ends_it() {
        let mut t = Table::default();
        for pid in 100..200 {
            t.live
                .insert(pid, (0, node(pid, "x", Some((pid + 1, None)), false)));
        }
        assert_eq!(walk(&mut t, Some((100, None))).len(), ANCESTORS_KEPT);
        let mut t = Table::default();
        t.live.insert(5, (0, node(5, "a", Some((6, None)), false)));
        t.live.insert(6, (0, node(6, "b", Some((5, None)), false)));
        assert_eq!(
            pids(&walk(&mut t, Some((5, None)))),
            [(5, false), (6, false)]
        );
        assert!(walk(&mut t, None).is_empty());
        assert!(walk(&mut t, Some((0, None))).is_empty());
    }

    #[test]
    fn a_parent_s_command_line_is_cut_short_and_marked() {
        let args: Vec<String> = (0..20).map(|i| format!("a{i}")).collect();
        let cut = short_cmdline(&args);
        assert_eq!(cut.len(), ANCESTOR_ARGS_KEPT + 1);
        assert_eq!(cut.last().map(String::as_str), Some("…"));
        let long = vec!["x".repeat(1000)];
        let cut = short_cmdline(&long);
        assert_eq!(cut[0].chars().count(), ANCESTOR_ARG_CHARS + 1);
        assert!(cut[0].ends_with('…'));
        assert_eq!(short_cmdline(&["ls".to_string()]), ["ls"]);
    }

    #[test]
    fn ticks_round_down() {
        assert_eq!(ticks(1_999_999_999, 10_000_000), 199);
        assert_eq!(ticks(5, 0), 5);
    }
}
