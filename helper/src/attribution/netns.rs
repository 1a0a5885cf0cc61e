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
//! for it. The number of namespaces asked per flow is bounded.

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
    /// More namespaces than [`NAMESPACES_ASKED`] were found: `known` is not all of them.
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
        let found: Vec<(u64, u32)> = std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| {
                let pid: u32 = e.file_name().to_str()?.parse().ok()?;
                let m = std::fs::metadata(e.path().join("ns/net")).ok()?;
                Some((m.ino(), pid))
            })
            .collect();
        self.known = others(found.iter().map(|&(ns, _)| ns), self.own);
        self.truncated = self.known.len() == NAMESPACES_ASKED
            && found.iter().any(|&(ns, _)| {
                u32::try_from(ns).is_ok_and(|n| n != self.own && !self.known.contains(&n))
            });
        self.members = members(&found, &self.known);
        true
    }
}

/// The lowest pid of each namespace of `known` in `found` (namespace, pid), by namespace.
fn members(found: &[(u64, u32)], known: &[u32]) -> Vec<(u32, u32)> {
    let mut out: Vec<(u32, u32)> = known.iter().map(|&ns| (ns, u32::MAX)).collect();
    for &(ns, pid) in found {
        let Ok(ns) = u32::try_from(ns) else { continue };
        if let Ok(i) = out.binary_search_by_key(&ns, |&(n, _)| n) {
            out[i].1 = out[i].1.min(pid);
        }
    }
    out
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

    #[test]
    fn each_namespace_has_its_lowest_pid_as_member() {
        let found = [(5, 40), (3, 12), (5, 7), (9, 1)];
        let known = others(found.iter().map(|&(n, _)| n), 9);
        assert_eq!(members(&found, &known), [(3, 12), (5, 7)]);
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
