//! Least privilege: once its sockets, its nftables table, its log and its connect hook are
//! open, the helper keeps only the capabilities it still uses, and sets no-new-privs. (The
//! hook's program and maps take CAP_BPF and CAP_PERFMON to create; looking records up through
//! the map's fd takes none, so neither is kept.)
//!
//! What each kept capability is for (each checked by a namespace test that runs with them):
//! - CAP_NET_ADMIN: reopening the conntrack subscription after a socket error, and the `nft`
//!   run at exit that removes the table (it inherits the bounding set);
//! - CAP_SYS_PTRACE: reading other users' `/proc/<pid>/fd/*` and `exe` links, and
//!   `pidfd_getfd` for the closed-socket fallback;
//! - CAP_DAC_READ_SEARCH: listing other users' `/proc/<pid>/fd` directories;
//! - CAP_DAC_OVERRIDE, only with `--broadcast`: writing to other users' terminals.
//!
//! Capabilities belong to threads, so this runs on the main thread before any other thread is
//! started: every thread inherits the restricted set.

use caps::{CapSet, Capability, CapsHashSet};

pub fn needed(broadcast: bool) -> CapsHashSet {
    let mut keep: CapsHashSet = [
        Capability::CAP_NET_ADMIN,
        Capability::CAP_SYS_PTRACE,
        Capability::CAP_DAC_READ_SEARCH,
    ]
    .into_iter()
    .collect();
    if broadcast {
        keep.insert(Capability::CAP_DAC_OVERRIDE);
    }
    keep
}

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("cannot set no-new-privs: {0}")]
    NoNewPrivs(nix::Error),
    #[error("cannot drop capabilities: {0}")]
    Caps(#[from] caps::errors::CapsError),
}

/// Sets no-new-privs and reduces the calling thread's bounding, inheritable, permitted and
/// effective sets to `keep` (and clears the ambient set). Without CAP_SETPCAP (not root)
/// there is nothing to drop; the no-new-privs part still applies.
pub fn restrict(keep: &CapsHashSet) -> Result<(), PrivilegeError> {
    nix::sys::prctl::set_no_new_privs().map_err(PrivilegeError::NoNewPrivs)?;
    let permitted = caps::read(None, CapSet::Permitted)?;
    if permitted.contains(&Capability::CAP_SETPCAP) {
        for cap in caps::all() {
            if !keep.contains(&cap) && caps::has_cap(None, CapSet::Bounding, cap)? {
                caps::drop(None, CapSet::Bounding, cap)?;
            }
        }
    }
    caps::clear(None, CapSet::Ambient)?;
    let keep_now: CapsHashSet = keep.intersection(&permitted).copied().collect();
    caps::set(None, CapSet::Inheritable, &CapsHashSet::new())?;
    caps::set(None, CapSet::Effective, &keep_now)?;
    caps::set(None, CapSet::Permitted, &keep_now)?;
    Ok(())
}
