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
//! A compromised helper should not be root either: before restricting, [`leave_root`] moves
//! the process to an unprivileged user (`conntrack-tray` when the system has that user, else
//! `nobody`), keeping the capabilities across the switch (`PR_SET_KEEPCAPS`). Its files in
//! /proc then belong to root and it is not dumpable, so no process of that user can ptrace
//! it; whatever else a foothold in it could reach is what that user and the few kept
//! capabilities allow.
//!
//! Capabilities belong to threads, so this runs on the main thread before any other thread is
//! started: every thread inherits the restricted set and the user.

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

/// The user the helper runs as after setting up, when the system has one of that name.
pub const SERVICE_USER: &str = "conntrack-tray";

#[derive(Debug, thiserror::Error)]
pub enum PrivilegeError {
    #[error("cannot leave root: {0}")]
    Switch(nix::Error),
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

/// Who the helper becomes: [`SERVICE_USER`], else `nobody`.
fn unprivileged_user() -> Option<(nix::unistd::Uid, nix::unistd::Gid, String)> {
    [SERVICE_USER, "nobody"].into_iter().find_map(|name| {
        let u = nix::unistd::User::from_name(name).ok().flatten()?;
        (!u.uid.is_root()).then_some((u.uid, u.gid, u.name))
    })
}

/// Moves a root process to an unprivileged user, keeping its capabilities; returns the user's
/// name, or `None` when it was not root (nothing to leave). Call before [`restrict`], which
/// then cuts the capabilities down to the few kept.
pub fn leave_root() -> Result<Option<String>, PrivilegeError> {
    if !nix::unistd::Uid::effective().is_root() {
        return Ok(None);
    }
    let Some((uid, gid, name)) = unprivileged_user() else {
        return Err(PrivilegeError::Switch(nix::Error::ENOENT));
    };
    nix::sys::prctl::set_keepcaps(true).map_err(PrivilegeError::Switch)?;
    nix::unistd::setgroups(&[]).map_err(PrivilegeError::Switch)?;
    nix::unistd::setresgid(gid, gid, gid).map_err(PrivilegeError::Switch)?;
    nix::unistd::setresuid(uid, uid, uid).map_err(PrivilegeError::Switch)?;
    nix::sys::prctl::set_keepcaps(false).map_err(PrivilegeError::Switch)?;
    // The switch cleared the effective set; the permitted one was kept.
    let permitted = caps::read(None, CapSet::Permitted)?;
    caps::set(None, CapSet::Effective, &permitted)?;
    Ok(Some(name))
}
