//! Whether the file `/proc/PID/exe` names is the file the process runs, for a program that
//! could have changed it.
//!
//! `/proc/PID/exe` is `mm->exe_file`, and a process can set that itself: `prctl(PR_SET_MM,
//! PR_SET_MM_MAP)` with an `exe_fd` needs only `CAP_CHECKPOINT_RESTORE` in the process's own
//! user namespace, which any program gets by making one (`unshare(CLONE_NEWUSER)`). The
//! kernel's one condition, that the old executable is no longer mapped, is met by a program
//! run through the dynamic loader that unmaps the loader. Measured here: an unprivileged
//! python did that and `/proc/PID/exe` then read `/usr/bin/curl`, with curl's device and
//! inode, which every check of the path passed (`helper/tests/attacks.rs`). A process that
//! shares its memory with another (`clone(CLONE_VM)`, not a thread) can do it for that one
//! too, though the other stays in the machine's user namespace.
//!
//! So the kernel keeps, for every process started since the helper, its **image**: the file
//! its last `execve` ran (`bprm->file`, which no prctl changes), or for a process that has not
//! exec'd, its forker's image, copied at the fork. One entry per live process, deleted when
//! the process is gone and never evicted (`exec_hook`, `fork_hook`). A verified path stays
//! verified only where the image shows that same file.
//!
//! Where there is no entry, or the entry was copied from a forker that had none (it then
//! holds that forker's `mm->exe_file`, is marked inherited and names that forker's start),
//! what decides is when: a process (or forker) that started before the entries began is
//! believed as `/proc` shows it if it is in the machine's user namespace, and any other is
//! not verified. One that started after has lost its entry (the table is full: the watched
//! code can hold that many processes where `pid_max` allows) and is not verified either.
//! Left open: a process started before the helper whose memory a masquerading process
//! shares, and the processes it forks.
//!
//! An entry also says when the exec that made it ran. A program can connect and then exec a
//! whitelisted program (named after it from the start, so the connect record's name agrees)
//! before the helper reads the flow: `/proc` and the image then both show the real program,
//! and only the time tells that it came after the connect ([`made_before`]).

use crate::attribution::exe::FileId;
use crate::attribution::fork_hook::Image;
use crate::event::Process;

/// A process's start time, as precisely as it is known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    /// From a kernel record: CLOCK_BOOTTIME nanoseconds.
    Ns(u64),
    /// From `/proc/PID/stat`: clock ticks.
    Ticks(u64),
}

/// What the image entry says of a process running file `id`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shown {
    /// Its image is that file.
    Runs,
    /// Its image is another file: it set its executable since (or a process sharing its
    /// memory did).
    Differs,
    /// The file is what a forker without an image had as its `mm->exe_file`; that forker
    /// started at this time (CLOCK_BOOTTIME ns).
    Inherited(u64),
    /// No entry of this process.
    Unknown,
}

/// What `image` (the entry under the process's pid, if any) shows of the process that
/// started at `start` running `id`; `same_start` and `same_file` compare as the caller can
/// (ticks, and devices as `stat` reports them).
pub fn shown(
    image: Option<Image>,
    same_start: impl Fn(u64) -> bool,
    id: FileId,
    same_file: impl FnOnce(FileId, FileId) -> bool,
) -> Shown {
    let Some(i) = image.filter(|i| i.start_ns != 0 && same_start(i.start_ns)) else {
        return Shown::Unknown;
    };
    if !same_file(i.file, id) {
        Shown::Differs
    } else if i.inherited {
        Shown::Inherited(i.origin_ns)
    } else {
        Shown::Runs
    }
}

/// When the process that started at `start` last exec'd, as `image` (the entry under its
/// pid, if any) says: 0 when that is not known, or it has not exec'd since it was forked.
pub fn exec_ns(image: Option<Image>, same_start: impl Fn(u64) -> bool) -> u64 {
    image
        .filter(|i| i.start_ns != 0 && same_start(i.start_ns))
        .map_or(0, |i| i.exec_ns)
}

/// `process`, described now, as the maker of a connection at `at_ns` (CLOCK_BOOTTIME ns; 0:
/// not known) when it last exec'd at `exec_ns`. A program can connect and then exec a
/// whitelisted one, under that one's name from the start: what `/proc` shows then is not
/// what connected, and is not believed for it.
pub fn made_before(process: Process, exec_ns: u64, at_ns: u64) -> Process {
    if at_ns == 0 || exec_ns <= at_ns {
        return process;
    }
    process.unverified(EXECED_SINCE)
}

/// Why a process's executable is not believed when it exec'd after it connected.
pub const EXECED_SINCE: &str = "it ran another program after it connected (execve): the \
    connection was made by the program it ran before, and what /proc shows now is not that";

/// Why a process's executable is not believed when its image is another file.
pub const DIFFERS: &str = "the executable /proc shows is not the file the kernel ran for it: a \
    program can set it (PR_SET_MM_MAP, from a user namespace of its own)";
/// Why, when it started after the image entries began and has none (or its forker had
/// lost its own): the table was full, or the watched code made it so.
pub const LOST: &str = "started after the helper, but the kernel holds no record of what it \
    ran (more live processes than the record table holds?), and a program can set the \
    executable /proc shows (PR_SET_MM_MAP)";
/// Why, when there is no image to go by and it runs in a user namespace of its own.
pub const UNKNOWN: &str = "runs in a user namespace of its own, where a program can set the \
    executable /proc shows (PR_SET_MM_MAP), and the kernel holds no record of what it ran";

#[cfg(test)]
mod tests {
    use super::*;

    const CURL: FileId = (1, 10);
    const LOADER: FileId = (1, 20);

    fn image(start_ns: u64, file: FileId, inherited: bool) -> Option<Image> {
        Some(Image {
            start_ns,
            file,
            inherited,
            origin_ns: 3,
            exec_ns: 0,
        })
    }

    fn show(i: Option<Image>, start: u64, id: FileId) -> Shown {
        shown(i, |s| s == start, id, |a, b| a == b)
    }

    #[test]
    fn the_image_decides_and_another_process_s_says_nothing() {
        assert_eq!(show(image(5, CURL, false), 5, CURL), Shown::Runs);
        // The masquerade: it ran the loader and set its executable to curl since.
        assert_eq!(show(image(5, LOADER, false), 5, CURL), Shown::Differs);
        assert_eq!(show(image(5, LOADER, true), 5, CURL), Shown::Differs);
        // Copied from a forker that had no image: only what that forker's /proc said.
        assert_eq!(show(image(5, CURL, true), 5, CURL), Shown::Inherited(3));
        // An entry of an earlier process with the pid, a zero start, or none.
        assert_eq!(show(image(4, LOADER, false), 5, CURL), Shown::Unknown);
        assert_eq!(show(image(0, CURL, false), 0, CURL), Shown::Unknown);
        assert_eq!(show(None, 5, CURL), Shown::Unknown);
    }

    #[test]
    fn a_process_that_exec_d_after_it_connected_is_not_believed_for_that_connection() {
        let at = |exec_ns| {
            Some(Image {
                exec_ns,
                ..image(5, CURL, false).expect("image")
            })
        };
        assert_eq!(exec_ns(at(90), |s| s == 5), 90);
        // Another process's entry under the pid, or none: not known.
        assert_eq!(exec_ns(at(90), |s| s == 6), 0);
        assert_eq!(exec_ns(None, |_| true), 0);
        let verified = Process {
            exe: Some("/usr/bin/curl".into()),
            exe_verified: true,
            exe_system: true,
            ..Default::default()
        };
        // Exec'd before the connect (or at the same nanosecond), or never since its fork.
        for (exec, connect) in [(90, 100), (100, 100), (0, 100), (90, 0)] {
            assert_eq!(made_before(verified.clone(), exec, connect), verified);
        }
        // Exec'd after it: what it runs now did not connect.
        let p = made_before(verified.clone(), 110, 100);
        assert!(!p.exe_verified && !p.exe_system, "{p:?}");
        assert_eq!(p.exe_unverified.as_deref(), Some(EXECED_SINCE));
        assert_eq!(p.exe, verified.exe);
    }
}
