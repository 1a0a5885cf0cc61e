//! Which file a process runs, checked so that the watched program cannot choose the answer.
//!
//! `/proc/PID/exe` reads as a path, but the path is the one the process's own mount namespace
//! shows: a program that makes a user and mount namespace (`unshare -rm`) and bind-mounts
//! itself over `/usr/bin/ssh` reads as `/usr/bin/ssh`. The link itself, though, leads to the
//! file that really runs. So a path counts only when the file at that path in the helper's
//! own namespace has the device and inode of the file behind the link. A copy, a symlink, a
//! bind mount, a replaced or deleted file all fail that test, and then no whitelist entry
//! matches. On top of that, a bare name (`ssh`) is only trusted for a file that no user could
//! have put there: owned by root, in folders that only root can write.

use std::os::unix::fs::MetadataExt;
use std::path::Path;

use crate::event::FileVersion;

/// A file's identity: device and inode.
pub type FileId = (u64, u64);

/// What the helper could establish about a process's executable.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExeFacts {
    /// The file behind `/proc/PID/exe`, when it could be read.
    pub id: Option<FileId>,
    /// The same file's version (size, mtime, ctime too): the key its hash is cached under.
    pub version: Option<FileVersion>,
    pub verified: bool,
    pub unverified: Option<String>,
    pub system: bool,
}

/// Why a path is not the running file, from what was observed.
pub fn verdict(
    running: Option<FileId>,
    at_path: Option<FileId>,
    own_mount_ns: bool,
) -> Result<(), &'static str> {
    match (running, at_path) {
        (None, _) => Err("the executable could not be read"),
        (Some(r), Some(p)) if r == p => Ok(()),
        _ if !own_mount_ns => {
            Err("runs in another mount namespace, where the path may name another file")
        }
        (Some(_), None) => Err("no file at that path any more (deleted or renamed)"),
        (Some(_), Some(_)) => Err("the file at that path is not the one running (replaced)"),
    }
}

/// The identity of the file a process runs (`proc_dir` is `/proc/PID`).
pub fn check_id(proc_dir: &Path) -> Option<FileId> {
    file_id(&proc_dir.join("exe"))
}

/// The version of a file from its metadata.
pub fn version(m: &std::fs::Metadata) -> FileVersion {
    FileVersion {
        dev: m.dev(),
        ino: m.ino(),
        size: m.size(),
        mtime: (m.mtime(), m.mtime_nsec()),
        ctime: (m.ctime(), m.ctime_nsec()),
    }
}

fn file_id(path: &Path) -> Option<FileId> {
    std::fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Whether nobody but root could have placed or changed the file at `path`: the file and
/// every folder above it are owned by root and writable by no group and no one else.
pub fn system_location(path: &Path) -> bool {
    let safe = |p: &Path| {
        std::fs::symlink_metadata(p).is_ok_and(|m| m.uid() == 0 && m.mode() & 0o022 == 0)
    };
    path.is_absolute()
        && std::fs::metadata(path).is_ok_and(|m| m.uid() == 0 && m.mode() & 0o022 == 0)
        && path.ancestors().skip(1).all(safe)
}

/// Checks `exe` (read from `proc_dir/exe`) against the file that really runs.
pub fn check(proc_dir: &Path, exe: Option<&str>, own_mnt: Option<u64>) -> ExeFacts {
    let running_version = std::fs::metadata(proc_dir.join("exe"))
        .ok()
        .map(|m| version(&m));
    let running = running_version.map(|v| (v.dev, v.ino));
    let Some(path) = exe else {
        return ExeFacts {
            id: running,
            version: running_version,
            verified: false,
            unverified: Some("the executable could not be read".into()),
            system: false,
        };
    };
    let same_ns = match (own_mnt, mount_ns(proc_dir)) {
        (Some(a), Some(b)) => a == b,
        // Not knowing is not proof of being at home.
        _ => false,
    };
    let path = Path::new(path);
    match verdict(running, file_id(path), same_ns) {
        Ok(()) => ExeFacts {
            id: running,
            version: running_version,
            verified: true,
            unverified: None,
            system: system_location(path),
        },
        Err(why) => ExeFacts {
            id: running,
            version: running_version,
            verified: false,
            unverified: Some(why.into()),
            system: false,
        },
    }
}

/// The inode of a process's mount namespace (`proc_dir` is `/proc/PID` or `/proc/self`).
pub fn mount_ns(proc_dir: &Path) -> Option<u64> {
    std::fs::metadata(proc_dir.join("ns/mnt"))
        .ok()
        .map(|m| m.ino())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_same_device_and_inode_verify() {
        assert_eq!(verdict(Some((1, 2)), Some((1, 2)), true), Ok(()));
        // The same inode verifies even from another namespace: it is the same file.
        assert_eq!(verdict(Some((1, 2)), Some((1, 2)), false), Ok(()));
        assert!(verdict(Some((1, 2)), Some((1, 3)), true).is_err_and(|e| e.contains("replaced")));
        assert!(verdict(Some((1, 2)), Some((1, 3)), false)
            .is_err_and(|e| e.contains("another mount namespace")));
        assert!(verdict(Some((1, 2)), None, true).is_err_and(|e| e.contains("deleted")));
        assert!(verdict(None, Some((1, 2)), true).is_err());
    }

    #[test]
    fn this_test_runs_a_verified_exe_and_a_copy_of_it_is_not_that_exe() {
        let own = mount_ns(Path::new("/proc/self"));
        let exe = std::fs::read_link("/proc/self/exe").expect("own exe");
        let exe = exe.to_str().expect("utf-8 path");
        let me = check(Path::new("/proc/self"), Some(exe), own);
        assert!(me.verified, "{me:?}");
        // A path naming another file (same name, other place) is not what runs.
        let dir = tempfile::tempdir().expect("tmp");
        let copy = dir.path().join("conntrack-tray-helper");
        std::fs::copy(exe, &copy).expect("copy");
        let forged = check(Path::new("/proc/self"), copy.to_str(), own);
        assert!(!forged.verified);
        assert!(forged.unverified.is_some_and(|w| w.contains("replaced")));
        assert!(!check(Path::new("/proc/self"), None, own).verified);
    }

    #[test]
    fn only_root_owned_files_in_root_only_folders_are_system_files() {
        assert!(system_location(Path::new("/usr/bin/env")));
        assert!(!system_location(Path::new("usr/bin/env")));
        let dir = tempfile::tempdir().expect("tmp");
        let f = dir.path().join("ssh");
        std::fs::write(&f, b"#!/bin/sh\n").expect("write");
        // /tmp is writable by everyone (sticky or not, a user could have put a file there).
        assert!(!system_location(&f));
        assert!(!system_location(Path::new("/nonexistent/ssh")));
    }
}
