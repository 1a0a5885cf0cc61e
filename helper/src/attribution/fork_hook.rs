//! The kernel tells who started each process: an eBPF program on the `sched_process_fork`
//! tracepoint records, for every new process, the process that called `fork` or `clone` for
//! it (tgid and start time) and the file that process ran (device and inode), in a bounded
//! LRU map under the new process's tgid. The exec hook ([`super::exec_hook`]) loads it.
//!
//! Why: a rule "program X when started by Y" (`whitelist.started_by`) must not match a
//! process Y did not start, and a process's parent is not proof of that. `real_parent` is
//! who forked it *unless* that one exited (the child is then handed to a reaper: init, a
//! subreaper such as `systemd --user`, a pid namespace's init) or it was created with
//! `CLONE_PARENT` (the caller's own parent becomes the parent). A watched program started by
//! Y can do either and make its own children look like Y's. The forking process is
//! `current` in this tracepoint, which no caller can choose, so a fork record proves who
//! forked; and the file it ran then is recorded too, so a Y that exec'd something else since
//! is not taken for the program it was.
//!
//! Threads (a `clone` with `CLONE_THREAD`) are not processes and are not recorded.

use crate::attribution::bpf::asm::{self, Helper, DW, FP, R0, R1, R2, R3, R4, R6, R7, R9, W};
use crate::attribution::bpf::frame::read;
use crate::attribution::bpf::layout::{
    Field, FORK_BY, FORK_BY_DEV, FORK_BY_INO, FORK_BY_START, FORK_LEN, FORK_START, FORK_TGID,
};
use crate::attribution::exe::FileId;
use crate::attribution::exec_hook::{deref, user_dev, ExecOffsets};

/// Fork records kept: 16,384 of 40 bytes. A record is read when its process connects, which
/// may be long after it started; a process forked more than 16,384 processes ago has lost
/// its record, and a `started_by` rule then does not match it (it is reported).
pub const FORK_ENTRIES: u32 = 16384;
/// `sched_process_fork(struct task_struct *parent, struct task_struct *child)`, where the
/// "parent" is the caller of fork (`current`), whatever the child's `real_parent` is.
pub const TRACEPOINT: &[u8] = b"sched_process_fork\0";
pub const PROG_NAME: &[u8] = b"ctt_fork";

/// The stack: the map key (the tgid), a word to read pointers through (where
/// [`deref`] reads them), and the record.
const KEY: i16 = -8;
const REC: i16 = -16 - FORK_LEN as i16;

fn at(f: Field) -> i16 {
    REC + f.off as i16
}

/// The program. r6 = the forking task, r7 = the new one, r9 = a pointer on the way.
pub fn program(o: &ExecOffsets, forks_fd: i32) -> Result<Vec<asm::Insn>, &'static str> {
    let t = &o.task;
    let mut a = asm::Asm::default();
    for off in (REC..0).step_by(8) {
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
    deref(&mut a, R9, R6, t.group_leader, "exe");
    read(&mut a, at(FORK_BY_START), 8, R9, t.start_boottime);
    // The file the forking process runs: mm->exe_file->f_inode, its number and device.
    a.label("exe");
    deref(&mut a, R9, R6, t.mm, "file_it");
    deref(&mut a, R9, R9, o.exe_file, "file_it");
    deref(&mut a, R9, R9, o.f_inode, "file_it");
    read(&mut a, at(FORK_BY_INO), 8, R9, o.i_ino);
    deref(&mut a, R9, R9, o.i_sb, "file_it");
    read(&mut a, at(FORK_BY_DEV), 4, R9, o.s_dev);
    // File it under the tgid, replacing a record of an earlier process with that pid.
    a.label("file_it")
        .load(W, R1, FP, at(FORK_TGID))
        .store(W, FP, KEY, R1)
        .load_map(R1, forks_fd)
        .mov(R2, FP)
        .add_imm(R2, i32::from(KEY))
        .mov(R3, FP)
        .add_imm(R3, i32::from(REC))
        .mov_imm(R4, 0)
        .call(Helper::MapUpdateElem)
        .label("out")
        .mov_imm(R0, 0)
        .exit();
    a.finish()
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
    /// The device (as `stat` reports it) and inode of the file it ran; zeros when unread.
    pub by_file: FileId,
}

/// Reads a map value back into a [`ForkRecord`].
pub fn record(v: &[u8; FORK_LEN]) -> ForkRecord {
    let bytes = |f: Field| &v[f.range()];
    let u32_of = |f| u32::from_ne_bytes(bytes(f).try_into().unwrap_or([0; 4]));
    let u64_of = |f| u64::from_ne_bytes(bytes(f).try_into().unwrap_or([0; 8]));
    ForkRecord {
        pid: u32_of(FORK_TGID),
        start_ns: u64_of(FORK_START),
        by: u32_of(FORK_BY),
        by_start_ns: u64_of(FORK_BY_START),
        by_file: (user_dev(u32_of(FORK_BY_DEV)), u64_of(FORK_BY_INO)),
    }
}

#[cfg(test)]
#[path = "fork_hook_tests.rs"]
mod tests;
