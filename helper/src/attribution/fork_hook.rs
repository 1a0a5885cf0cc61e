//! The kernel tells who started each process: an eBPF program on the `sched_process_fork`
//! tracepoint records, for every new process, the process that called `fork` or `clone` for
//! it (tgid and start time) and the file that process ran (its image: device and inode), in
//! a bounded LRU map under the new process's tgid, and copies that image into the new
//! process's own entry ([`super::image`]); a program on `sched_process_free` removes the entry
//! when the process is gone. The exec hook ([`super::exec_hook`]) loads them.
//!
//! Why: a rule "program X when started by Y" (`whitelist.started_by`) must not match a
//! process Y did not start, and a process's parent is not proof of that. `real_parent` is
//! who forked it *unless* that one exited (the child is then handed to a reaper: init, a
//! subreaper such as `systemd --user`, a pid namespace's init) or it was created with
//! `CLONE_PARENT` (the caller's own parent becomes the parent). A watched program started by
//! Y can do either and make its own children look like Y's. The forking process is
//! `current` in this tracepoint, which no caller can choose, so a fork record proves who
//! forked; and the file it ran then is recorded too (from its image, which a program that
//! set its own `mm->exe_file` cannot change), so a Y that exec'd something else since is not
//! taken for the program it was.
//!
//! Threads (a `clone` with `CLONE_THREAD`) are not processes and are not recorded.

use crate::attribution::bpf::asm::{self, DW, FP, R0, R1, R2, R6, R7, R9, W};
use crate::attribution::bpf::frame::{delete_at, lookup_at, read, update_at};
use crate::attribution::bpf::layout::{
    Field, FORK_BY, FORK_BY_DEV, FORK_BY_INO, FORK_BY_START, FORK_FLAGS, FORK_LEN, FORK_START,
    FORK_TGID, IMAGE_DEV, IMAGE_EXEC, IMAGE_FLAGS, IMAGE_INHERITED, IMAGE_INO, IMAGE_LEN,
    IMAGE_ORIGIN, IMAGE_START,
};
use crate::attribution::bpf::task::TaskOffsets;
use crate::attribution::exe::FileId;
use crate::attribution::exec_hook::{deref, field, user_dev, ExecOffsets};

/// Fork records kept: 16,384 of 40 bytes. A record is read when its process connects, which
/// may be long after it started; a process forked more than 16,384 processes ago has lost
/// its record, and a `started_by` rule then does not match it (it is reported).
pub const FORK_ENTRIES: u32 = 16384;
/// `sched_process_fork(struct task_struct *parent, struct task_struct *child)`, where the
/// "parent" is the caller of fork (`current`), whatever the child's `real_parent` is.
pub const TRACEPOINT: &[u8] = b"sched_process_fork\0";
pub const PROG_NAME: &[u8] = b"ctt_fork";

/// The stack: the map key (a tgid), a word to read pointers through (where [`deref`] reads
/// them), the fork record, and the new process's image entry.
const KEY: i16 = -8;
const REC: i16 = -16 - FORK_LEN as i16;
const IMG: i16 = REC - IMAGE_LEN as i16;

fn at(f: Field) -> i16 {
    REC + f.off as i16
}

fn img(f: Field) -> i16 {
    IMG + f.off as i16
}

/// The fork program. r6 = the forking task, r7 = the new one, r9 = a pointer on the way.
///
/// The file the forker runs is its image entry's (what its `execve` ran, as the exec program
/// filed it), copied into the new process's entry: so a process that set its own
/// `mm->exe_file` (`attribution::image`) hands its children the file it really ran. Only a
/// forker without an entry (it started before the helper) gives its `mm->exe_file`, marked
/// [`IMAGE_INHERITED`].
pub fn program(
    o: &ExecOffsets,
    forks_fd: i32,
    images_fd: i32,
) -> Result<Vec<asm::Insn>, &'static str> {
    let t = &o.task;
    let mut a = asm::Asm::default();
    for off in (IMG..0).step_by(8) {
        a.store_imm(DW, FP, off, 0);
    }
    a.load(DW, R6, R1, 0).load(DW, R7, R1, 8);
    // A thread's pid is not its tgid: not a process, no record.
    read(&mut a, at(FORK_TGID), 4, R7, t.tgid);
    read(&mut a, KEY, 4, R7, t.pid);
    a.load(W, R1, FP, at(FORK_TGID))
        .jeq_imm(R1, 0, "out")
        .load(W, R2, FP, KEY)
        .sub(R1, R2)
        .jne_imm(R1, 0, "out");
    read(&mut a, at(FORK_START), 8, R7, t.start_boottime);
    read(&mut a, at(FORK_BY), 4, R6, t.tgid);
    deref(&mut a, R9, R6, t.group_leader, "image");
    read(&mut a, at(FORK_BY_START), 8, R9, t.start_boottime);
    // The forker's image, if it is this very process's (same start).
    a.label("image")
        .load(W, R1, FP, at(FORK_BY))
        .store(W, FP, KEY, R1);
    lookup_at(&mut a, images_fd, KEY);
    a.jeq_imm(R0, 0, "inherit")
        .load(DW, R1, R0, IMAGE_START.off as i16)
        .load(DW, R2, FP, at(FORK_BY_START))
        .sub(R1, R2)
        .jne_imm(R1, 0, "inherit")
        .load(DW, R1, R0, IMAGE_INO.off as i16)
        .store(DW, FP, at(FORK_BY_INO), R1)
        .load(W, R1, R0, IMAGE_DEV.off as i16)
        .store(W, FP, at(FORK_BY_DEV), R1)
        .load(W, R1, R0, IMAGE_FLAGS.off as i16)
        .store(W, FP, at(FORK_FLAGS), R1)
        .load(DW, R1, R0, IMAGE_ORIGIN.off as i16)
        .store(DW, FP, img(IMAGE_ORIGIN), R1)
        .ja("file_it");
    // None: the file the forking process runs, mm->exe_file->f_inode, marked as such, with
    // the forker's start time as the origin (before the helper, or an entry lost since).
    a.label("inherit")
        .store_imm(W, FP, at(FORK_FLAGS), IMAGE_INHERITED)
        .load(DW, R1, FP, at(FORK_BY_START))
        .store(DW, FP, img(IMAGE_ORIGIN), R1);
    deref(&mut a, R9, R6, t.mm, "file_it");
    deref(&mut a, R9, R9, o.exe_file, "file_it");
    deref(&mut a, R9, R9, o.f_inode, "file_it");
    read(&mut a, at(FORK_BY_INO), 8, R9, o.i_ino);
    deref(&mut a, R9, R9, o.i_sb, "file_it");
    read(&mut a, at(FORK_BY_DEV), 4, R9, o.s_dev);
    // File the record under the new tgid, replacing a record of an earlier process with it.
    a.label("file_it")
        .load(W, R1, FP, at(FORK_TGID))
        .store(W, FP, KEY, R1);
    update_at(&mut a, forks_fd, KEY, REC);
    // And its image: the forker's file, always (an inode that could not be read, or a
    // file with inode 0, reads as another file, never as no entry).
    a.load(DW, R1, FP, at(FORK_BY_INO))
        .store(DW, FP, img(IMAGE_INO), R1)
        .load(DW, R1, FP, at(FORK_START))
        .store(DW, FP, img(IMAGE_START), R1)
        .load(W, R1, FP, at(FORK_BY_DEV))
        .store(W, FP, img(IMAGE_DEV), R1)
        .load(W, R1, FP, at(FORK_FLAGS))
        .store(W, FP, img(IMAGE_FLAGS), R1);
    update_at(&mut a, images_fd, KEY, IMG);
    a.label("out").mov_imm(R0, 0).exit();
    a.finish()
}

/// `sched_process_free(struct task_struct *p)`: a task's last reference is gone.
pub const FREE_TRACEPOINT: &[u8] = b"sched_process_free\0";
pub const FREE_PROG_NAME: &[u8] = b"ctt_free";

/// The free program: when a process's leader is freed (the process is gone), its image entry
/// goes, if it is still that process's (the pid may have been handed out again before the
/// free: the entry is then the new process's, with another start time).
pub fn free_program(t: &TaskOffsets, images_fd: i32) -> Result<Vec<asm::Insn>, &'static str> {
    const PID: i16 = -16;
    const START: i16 = -24;
    let mut a = asm::Asm::default();
    for off in (START..0).step_by(8) {
        a.store_imm(DW, FP, off, 0);
    }
    a.load(DW, R6, R1, 0);
    read(&mut a, KEY, 4, R6, t.tgid);
    read(&mut a, PID, 4, R6, t.pid);
    a.load(W, R1, FP, KEY)
        .jeq_imm(R1, 0, "out")
        .load(W, R2, FP, PID)
        .sub(R1, R2)
        .jne_imm(R1, 0, "out");
    read(&mut a, START, 8, R6, t.start_boottime);
    lookup_at(&mut a, images_fd, KEY);
    a.jeq_imm(R0, 0, "out")
        .load(DW, R1, R0, IMAGE_START.off as i16)
        .load(DW, R2, FP, START)
        .sub(R1, R2)
        .jne_imm(R1, 0, "out");
    delete_at(&mut a, images_fd, KEY);
    a.label("out").mov_imm(R0, 0).exit();
    a.finish()
}

/// What a process runs, as the kernel saw it: its image entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Image {
    pub start_ns: u64,
    /// The device (as `stat` reports it) and inode.
    pub file: FileId,
    /// The file is a forker's `mm->exe_file`, not what an `execve` ran.
    pub inherited: bool,
    /// For an inherited entry, the start time of that forker: a process started before the
    /// helper had no entry to give, one started after it has lost its own.
    pub origin_ns: u64,
    /// When its last `execve` ran the file (CLOCK_BOOTTIME ns), or 0: it has not exec'd
    /// since it was forked (the fork program leaves it so).
    pub exec_ns: u64,
}

/// Reads an image entry back.
pub fn image(v: &[u8; IMAGE_LEN]) -> Image {
    let u32_of = |f| u32::from_ne_bytes(field(v, f));
    let u64_of = |f| u64::from_ne_bytes(field(v, f));
    Image {
        start_ns: u64_of(IMAGE_START),
        file: (user_dev(u32_of(IMAGE_DEV)), u64_of(IMAGE_INO)),
        inherited: u32_of(IMAGE_FLAGS) & IMAGE_INHERITED as u32 != 0,
        origin_ns: u64_of(IMAGE_ORIGIN),
        exec_ns: u64_of(IMAGE_EXEC),
    }
}

/// Who forked a process, as the kernel recorded it then.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ForkRecord {
    pub pid: u32,
    /// The new process's start time (CLOCK_BOOTTIME ns): with the pid, which process.
    pub start_ns: u64,
    /// The process that called fork, and its start time.
    pub by: u32,
    pub by_start_ns: u64,
    /// The device (as `stat` reports it) and inode of the file it ran (its image's); zeros
    /// when unread.
    pub by_file: FileId,
    /// `by_file` is the forker's `mm->exe_file`: it had no image entry.
    pub inherited: bool,
}

/// Reads a map value back into a [`ForkRecord`].
pub fn record(v: &[u8; FORK_LEN]) -> ForkRecord {
    let u32_of = |f| u32::from_ne_bytes(field(v, f));
    let u64_of = |f| u64::from_ne_bytes(field(v, f));
    ForkRecord {
        pid: u32_of(FORK_TGID),
        start_ns: u64_of(FORK_START),
        by: u32_of(FORK_BY),
        by_start_ns: u64_of(FORK_BY_START),
        by_file: (user_dev(u32_of(FORK_BY_DEV)), u64_of(FORK_BY_INO)),
        inherited: u32_of(FORK_FLAGS) & IMAGE_INHERITED as u32 != 0,
    }
}

#[cfg(test)]
#[path = "fork_hook_tests.rs"]
mod tests;
