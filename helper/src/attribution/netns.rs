//! The other network namespaces on this machine, where a container's processes connect.
//!
//! A process in a container behind a bridge (Docker's default network, Podman's, or any
//! namespace with a veth and masquerade) connects inside its own network namespace; this
//! machine's conntrack sees the flow as forwarded, from the container's address, and no
//! socket in the helper's namespace has it. The connect records carry the namespace they
//! were filed in, so the flow's record is there, under the container's namespace: which
//! namespaces to ask is what this module knows. It lists them from `/proc/*/ns/net` (every
//! namespace a process is in), again at most once a second and only when a forwarded flow
//! found no record in the ones already known.
//!
//! A hostile program can make namespaces of its own (with a user namespace, unprivileged),
//! many of them, and file records there with any addresses: but nothing it sends there
//! reaches this machine's conntrack (it has no link to it), so such a record can only match
//! a forwarded flow with the same addresses and ports, and would name the hostile program
//! for it. The number of namespaces asked per flow is bounded, and the namespaces with a
//! process of the machine's user namespace (a rootful container engine's, root's) come
//! first: an unprivileged program's come with a user namespace of their own, so however many
//! it makes, they push none of those out of the list. Not closed: a setuid sandbox (bwrap or
//! firejail installed setuid) makes namespaces in the machine's user namespace, and those
//! still count as the machine's; the namespaces of unprivileged containers (LXD, rootless or
//! userns-remapped engines) are listed with the others, and enough of a program's own can
//! still push them out (their flows are then reported unnamed, as before). A namespace's
//! user namespace is taken from one of its processes (`ns/net`, then `ns/user`, two reads
//! a pid may be reused between): at worst a program's namespace is listed early, which costs
//! a lookup, and a listener there is still checked again before it is named
//! (`attribution::listeners`).

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// At most this many namespaces are asked for one flow.
pub const NAMESPACES_ASKED: usize = 256;
/// The list is read again at most this often.
const RESCAN: Duration = Duration::from_secs(1);

pub struct Namespaces {
    root: PathBuf,
    own: u32,
    known: Vec<u32>,
    /// A process in each known namespace (the lowest pid seen in it), through whose
    /// `/proc/PID/net` the namespace's sockets and addresses are read.
    members: Vec<(u32, u32)>,
    /// More namespaces of the machine's user namespace than [`NAMESPACES_ASKED`] were found:
    /// `known` is not all of them.
    truncated: bool,
    scanned: Option<Instant>,
}

impl Namespaces {
    pub fn new(own: u32) -> Namespaces {
        Namespaces::at(Path::new("/proc"), own)
    }

    pub fn at(root: &Path, own: u32) -> Namespaces {
        Namespaces {
            root: root.to_path_buf(),
            own,
            known: Vec::new(),
            members: Vec::new(),
            truncated: false,
            scanned: None,
        }
    }

    /// The namespaces known, other than the helper's own.
    pub fn known(&self) -> &[u32] {
        &self.known
    }

    /// A process in namespace `ns` when it was last listed (it may have exited since).
    pub fn member(&self, ns: u32) -> Option<u32> {
        self.members
            .binary_search_by_key(&ns, |&(n, _)| n)
            .ok()
            .map(|i| self.members[i].1)
    }

    /// Whether the last list was cut at [`NAMESPACES_ASKED`].
    pub fn truncated(&self) -> bool {
        self.truncated
    }

    /// Where the helper's `/proc` is (a test's stand-in, else `/proc`).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Reads the list again, unless it was read less than a second ago; whether it did.
    pub fn rescan(&mut self) -> bool {
        if self.scanned.is_some_and(|t| t.elapsed() < RESCAN) {
            return false;
        }
        self.scanned = Some(Instant::now());
        let ino = |p: PathBuf| std::fs::metadata(p).ok().map(|m| m.ino());
        let own_user = ino(self.root.join("self/ns/user"));
        let found: Vec<Found> = std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let pid: u32 = e.file_name().to_str()?.parse().ok()?;
                let ns = ino(e.path().join("ns/net"))?;
                let machine = own_user.is_some() && ino(e.path().join("ns/user")) == own_user;
                Some(Found { ns, pid, machine })
            })
            .collect();
        let (known, truncated) = listed(&found, self.own);
        self.known = known;
        self.truncated = truncated;
        self.members = members(&found, &self.known);
        true
    }
}

/// A process seen in a namespace: the namespace's inode, the pid, and whether the process is
/// in the machine's user namespace (the helper's).
#[derive(Debug, Clone, Copy)]
struct Found {
    ns: u64,
    pid: u32,
    machine: bool,
}

/// The namespaces to ask, at most [`NAMESPACES_ASKED`]: first those with a process of the
/// machine's user namespace, then the others; and whether the first kind alone had to be cut.
fn listed(found: &[Found], own: u32) -> (Vec<u32>, bool) {
    let machine = others(found.iter().filter(|f| f.machine).map(|f| f.ns), own);
    let cut = machine.len() == NAMESPACES_ASKED
        && found.iter().filter(|f| f.machine).any(|f| {
            u32::try_from(f.ns).is_ok_and(|n| n != own && machine.binary_search(&n).is_err())
        });
    let mut known = machine;
    let room = NAMESPACES_ASKED - known.len();
    let rest: Vec<u32> = others(found.iter().map(|f| f.ns), own)
        .into_iter()
        .filter(|n| known.binary_search(n).is_err())
        .take(room)
        .collect();
    known.extend(rest);
    known.sort_unstable();
    (known, cut)
}

/// The lowest pid of each namespace of `known` in `found`, by namespace: of the machine's
/// user namespace if the namespace has one, through which its files are read.
fn members(found: &[Found], known: &[u32]) -> Vec<(u32, u32)> {
    // (namespace, pid, of the machine's user namespace)
    let mut out: Vec<(u32, u32, bool)> = known.iter().map(|&ns| (ns, u32::MAX, false)).collect();
    for f in found {
        let Ok(ns) = u32::try_from(f.ns) else {
            continue;
        };
        if let Ok(i) = out.binary_search_by_key(&ns, |&(n, _, _)| n) {
            let (_, pid, machine) = out[i];
            if (f.machine, std::cmp::Reverse(f.pid)) > (machine, std::cmp::Reverse(pid)) {
                out[i] = (ns, f.pid, f.machine);
            }
        }
    }
    out.into_iter().map(|(ns, pid, _)| (ns, pid)).collect()
}

/// The helper's own network namespace (its inode, as the connect records file it).
pub fn own_netns() -> std::io::Result<u32> {
    let ino = std::fs::metadata("/proc/self/ns/net")?.ino();
    u32::try_from(ino).map_err(|_| std::io::Error::from(std::io::ErrorKind::InvalidData))
}

/// The distinct namespace inodes of `inodes` but `own`, at most [`NAMESPACES_ASKED`].
pub fn others(inodes: impl IntoIterator<Item = u64>, own: u32) -> Vec<u32> {
    let set: BTreeSet<u32> = inodes
        .into_iter()
        .filter_map(|i| u32::try_from(i).ok())
        .filter(|&i| i != own)
        .collect();
    set.into_iter().take(NAMESPACES_ASKED).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_list_is_distinct_without_our_own_and_bounded() {
        assert_eq!(others([5, 3, 5, 7, 3], 7), [3, 5]);
        assert_eq!(others(0..10_000u64, 0).len(), NAMESPACES_ASKED);
        assert!(others([u64::MAX], 1).is_empty());
    }

    fn f(ns: u64, pid: u32, machine: bool) -> Found {
        Found { ns, pid, machine }
    }

    #[test]
    fn each_namespace_has_its_lowest_pid_of_the_machine_s_user_namespace_as_member() {
        let found = [
            f(5, 40, true),
            f(3, 12, true),
            f(5, 7, true),
            f(9, 1, true),
            // A lower pid, but in a user namespace of its own.
            f(3, 2, false),
            // Only such processes: the lowest of them.
            f(4, 30, false),
            f(4, 20, false),
        ];
        let (known, cut) = listed(&found, 9);
        assert!(!cut);
        assert_eq!(members(&found, &known), [(3, 12), (4, 20), (5, 7)]);
    }

    #[test]
    fn namespaces_an_unprivileged_program_makes_push_out_none_of_the_machine_s() {
        // 10,000 namespaces of a program's own user namespace, with low inodes; 3 of the
        // machine's with high ones.
        let mut found: Vec<Found> = (1..=10_000).map(|ns| f(ns, 500, false)).collect();
        found.extend([f(90_001, 7, true), f(90_002, 8, true), f(90_003, 9, true)]);
        let (known, cut) = listed(&found, 0);
        assert!(!cut, "the machine's are all in");
        assert_eq!(known.len(), NAMESPACES_ASKED);
        for ns in [90_001, 90_002, 90_003] {
            assert!(known.contains(&ns), "{ns}");
        }
        // More of the machine's than can be asked: that is a cut list.
        let many: Vec<Found> = (1..=300).map(|ns| f(ns, 1, true)).collect();
        let (known, cut) = listed(&many, 0);
        assert!(cut);
        assert_eq!(known.len(), NAMESPACES_ASKED);
        // Exactly as many: not cut.
        let (_, cut) = listed(&many[..NAMESPACES_ASKED], 0);
        assert!(!cut);
    }

    #[test]
    fn the_real_proc_lists_no_namespace_of_our_own_and_is_not_read_twice_at_once() {
        let own = own_netns().unwrap();
        let mut ns = Namespaces::new(own);
        assert!(ns.rescan());
        assert!(!ns.known().contains(&own));
        assert!(ns.known().iter().all(|&n| ns.member(n).is_some()));
        assert!(!ns.rescan());
    }
}
