//! What a lookup says of a socket's holders: the types the attributor, the pipeline and the
//! filter share.
//!
//! A socket passed with `SCM_RIGHTS` or inherited across `fork` has several holders, and
//! when no kernel record says which one used it, naming one of them alone let a program hide
//! behind a trusted one it shared its socket with. So an attribution carries the others, and
//! whether every process was looked at; the filter whitelists only a process proven alone.

use crate::event::Process;

/// How many holders of a shared socket are described besides the one named; the rest are
/// counted. A socket inherited by a pool of 100 workers makes one line, not 100 descriptions.
pub const HOLDERS_LISTED: usize = 8;

/// The processes found holding a socket inode ([`super::Processes::holders`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Held {
    /// The first is the one [`super::Processes::by_inode`] names; at most 1 + [`HOLDERS_LISTED`].
    pub processes: Vec<Process>,
    /// Holders found beyond those described.
    pub more: u32,
    /// Every process was looked at, within the lookup's budget.
    pub complete: bool,
}

/// The other processes holding a flow's socket, besides the one named.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Holders {
    /// At most [`HOLDERS_LISTED`].
    pub others: Vec<Process>,
    /// Holders found beyond `others`.
    pub more: u32,
    /// Every process was looked at; when not, others may hold the socket unseen.
    pub complete: bool,
    /// The socket's inode and owner, to look again ([`super::Attributor::complete`]); inode 0 when
    /// there is nothing to look at (a kernel record decided).
    pub inode: u64,
    pub uid: u32,
}

impl Holders {
    /// No others to look for: a kernel record named the process.
    pub fn decided() -> Holders {
        Holders {
            others: Vec::new(),
            more: 0,
            complete: true,
            inode: 0,
            uid: 0,
        }
    }

    /// The holders of socket `inode` (owned by `uid`) besides `named`, from what a lookup
    /// found.
    pub(crate) fn of(named: &Process, held: Held, inode: u64, uid: u32) -> Holders {
        let mut others: Vec<Process> = held
            .processes
            .into_iter()
            .filter(|p| p.pid != named.pid)
            .collect();
        let extra = others.len().saturating_sub(HOLDERS_LISTED);
        others.truncate(HOLDERS_LISTED);
        Holders {
            others,
            more: held
                .more
                .saturating_add(u32::try_from(extra).unwrap_or(u32::MAX)),
            complete: held.complete,
            inode,
            uid,
        }
    }
}

impl Holders {
    /// These holders and those of `seen` (an earlier look at the same socket, which may have
    /// found one gone since), at most [`HOLDERS_LISTED`] listed, the rest counted.
    pub(crate) fn with(mut self, seen: Holders) -> Holders {
        let more = seen.more;
        let new: Vec<Process> = seen
            .others
            .into_iter()
            .filter(|p| !self.others.iter().any(|o| o.pid == p.pid))
            .collect();
        self.others.extend(new);
        let extra = self.others.len().saturating_sub(HOLDERS_LISTED);
        self.others.truncate(HOLDERS_LISTED);
        self.more = self
            .more
            .max(more)
            .saturating_add(u32::try_from(extra).unwrap_or(u32::MAX));
        self
    }
}
