//! The kernel tells what each process became: an eBPF program on the `sched_process_exec`
//! tracepoint records, at every `execve`, the process (tgid and start time), its parent
//! (tgid and start time), the file that runs (path, device and inode, mount namespace), its
//! uid, comm and argv (cut at 4 KiB), in a bounded LRU map under the tgid.
//!
//! Why: a program that connects and exits at once (a bash `/dev/udp` one-shot, a connect
//! refused at once) is named by its connect or send record, but by the time the helper reads
//! the event its `/proc` entry is gone, and with it the path and the command line a person
//! needs (measured before this hook: 1 of 30 bash UDP one-shots arrived with an exe). And a
//! parent that has exited leaves a hole in the chain of who started what. The record is made
//! inside `execve`, in the process itself, so it does not depend on the process living on.
//!
//! A record is only ever read for the process that made it: the lookup names the tgid *and*
//! the start time (both from the connect record, or from the child's exec record for a
//! parent), and a record with another start time is a later process's. Nothing in a record
//! is taken as proof by itself: the path is checked against the file's device and inode in
//! the helper's own mount namespace, as for a live process ([`super::exe`]).
//!
//! Like the connect hook, the program is written with [`bpf::asm`] and the fields' offsets
//! come from the running kernel's BTF. The record (4.4 KB) is larger than a program's stack,
//! so it is filled in a per-CPU scratch slot and filed from there.
//!
//! [`bpf::asm`]: crate::attribution::bpf::asm

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use crate::attribution::bpf::asm::{self, Helper, Reg, DW, FP, R0, R1, R2, R3, R4, R6, R7};
use crate::attribution::bpf::asm::{R8, R9, W};
use crate::attribution::bpf::btf::{Btf, BtfError};
use crate::attribution::bpf::layout::{
    Field, EXEC_ARGS, EXEC_ARGS_LEN, EXEC_AT, EXEC_COMM, EXEC_DEV, EXEC_HEADER_LEN, EXEC_INO,
    EXEC_KEY_LEN, EXEC_LEN, EXEC_MNT_NS, EXEC_PARENT_START, EXEC_PATH, EXEC_PPID, EXEC_START,
    EXEC_TGID, EXEC_UID, FORK_LEN, IMAGE_DEV, IMAGE_EXEC, IMAGE_INO, IMAGE_LEN, IMAGE_START,
};

/// Image entries kept: one per live process started since the helper, deleted when it is
/// gone, never evicted. A machine with more live processes than this files no more until
/// some end; those are then unverified (see `attribution::image`), not taken for another.
const IMAGE_ENTRIES: u32 = 65536;
use crate::attribution::bpf::frame::update_at;
use crate::attribution::bpf::sys;
use crate::attribution::bpf::task::TaskOffsets;
use crate::attribution::connect_hook::HookError;
use crate::attribution::exe::FileId;
use crate::attribution::fork_hook::{self, ForkRecord, Image};
use crate::attribution::procfs::split_cmdline;

/// Where the fields the program reads sit, in bytes from the start of their structures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ExecOffsets {
    pub task: TaskOffsets,
    /// `mm_struct.arg_start`, `arg_end`: where argv sits in the new program's memory.
    pub arg_start: i32,
    pub arg_end: i32,
    /// `mm_struct.exe_file`: the file a process runs (what `/proc/PID/exe` names), read by
    /// the fork program for the process that forks.
    pub exe_file: i32,
    /// `nsproxy.mnt_ns`, then `mnt_namespace.ns.inum`.
    pub mnt_ns: i32,
    pub mnt_inum: i32,
    /// `linux_binprm.file` (the file that runs) and `.interp` (its path).
    pub bprm_file: i32,
    pub bprm_interp: i32,
    /// `file.f_inode`, `inode.i_ino`, `inode.i_sb`, `super_block.s_dev`.
    pub f_inode: i32,
    pub i_ino: i32,
    pub i_sb: i32,
    pub s_dev: i32,
}

/// The BTF names [`ExecOffsets::from_btf`] looks up (with `task::BTF_NAMES`).
pub const BTF_NAMES: &[&str] = &[
    "mm_struct",
    "arg_start",
    "arg_end",
    "exe_file",
    "nsproxy",
    "mnt_ns",
    "mnt_namespace",
    "ns",
    "inum",
    "linux_binprm",
    "file",
    "interp",
    "f_inode",
    "inode",
    "i_ino",
    "i_sb",
    "super_block",
    "s_dev",
];

impl ExecOffsets {
    pub fn from_btf(btf: &Btf) -> Result<ExecOffsets, BtfError> {
        let at = |ty: &str, path: &[&str]| -> Result<i32, BtfError> {
            let off = btf.offset_of(ty, path)?;
            i32::try_from(off).map_err(|_| BtfError::Missing(format!("{ty}.{}", path.join("."))))
        };
        Ok(ExecOffsets {
            task: TaskOffsets::from_btf(btf)?,
            arg_start: at("mm_struct", &["arg_start"])?,
            arg_end: at("mm_struct", &["arg_end"])?,
            exe_file: at("mm_struct", &["exe_file"])?,
            mnt_ns: at("nsproxy", &["mnt_ns"])?,
            mnt_inum: at("mnt_namespace", &["ns", "inum"])?,
            bprm_file: at("linux_binprm", &["file"])?,
            bprm_interp: at("linux_binprm", &["interp"])?,
            f_inode: at("file", &["f_inode"])?,
            i_ino: at("inode", &["i_ino"])?,
            i_sb: at("inode", &["i_sb"])?,
            s_dev: at("super_block", &["s_dev"])?,
        })
    }
}

/// Exec records kept: 4,096 of 4.4 KB, 18 MB of kernel memory. A record is read within
/// milliseconds of its process's connect, or later as a parent's: a parent that exited
/// longer than 4,096 execs ago ends its child's chain early.
const EXEC_ENTRIES: u32 = 4096;
/// The tracepoint: `sched_process_exec(struct task_struct *p, pid_t old_pid,
/// struct linux_binprm *bprm)`.
const TRACEPOINT: &[u8] = b"sched_process_exec\0";
const PROG_NAME: &[u8] = b"ctt_exec";

/// The stack: the map key (the tgid, or the scratch slot's index 0), a word to read
/// pointers through, and the image entry (`layout::IMAGE_*`).
const KEY: i16 = -8;
const TMP: i16 = -16;
const IMG: i16 = TMP - IMAGE_LEN as i16;

/// `*(len *)(base + field)` (kernel memory) into the record at `r8 + to`.
fn read_into(a: &mut asm::Asm, to: Field, base: Reg, field: i32) {
    a.mov(R1, R8)
        .add_imm(R1, to.off as i32)
        .mov_imm(R2, to.len as i32)
        .mov(R3, base)
        .add_imm(R3, field)
        .call(Helper::ProbeReadKernel);
}

/// The pointer at `base + field` into `dst`; jumps to `null` when it is NULL (or unreadable:
/// a failed read leaves zero).
pub(crate) fn deref(a: &mut asm::Asm, dst: Reg, base: Reg, field: i32, null: &'static str) {
    a.mov(R1, FP)
        .add_imm(R1, i32::from(TMP))
        .mov_imm(R2, 8)
        .mov(R3, base)
        .add_imm(R3, field)
        .call(Helper::ProbeReadKernel)
        .load(DW, dst, FP, TMP)
        .jeq_imm(dst, 0, null);
}

/// The program. r6 = the task, r7 = the binprm (later argv's start), r8 = the record being
/// filled (the scratch slot), r9 = a pointer on the way.
pub fn program(
    o: &ExecOffsets,
    scratch_fd: i32,
    execs_fd: i32,
    images_fd: i32,
) -> Result<Vec<asm::Insn>, &str> {
    let t = &o.task;
    let mut a = asm::Asm::default();
    for off in (IMG..0).step_by(8) {
        a.store_imm(DW, FP, off, 0);
    }
    a.load(DW, R6, R1, 0)
        .load(DW, R7, R1, 16)
        .load_map(R1, scratch_fd)
        .mov(R2, FP)
        .add_imm(R2, i32::from(KEY))
        .call(Helper::MapLookupElem)
        .jeq_imm(R0, 0, "out")
        .mov(R8, R0);
    for off in (0..EXEC_HEADER_LEN as i16).step_by(8) {
        a.store_imm(DW, R8, off, 0);
    }
    read_into(&mut a, EXEC_TGID, R6, t.tgid);
    read_into(&mut a, EXEC_START, R6, t.start_boottime);
    a.call(Helper::GetCurrentUidGid)
        .store(W, R8, EXEC_UID.off as i16, R0)
        .call(Helper::KtimeGetBootNs)
        .store(DW, R8, EXEC_AT.off as i16, R0)
        .mov(R1, R8)
        .add_imm(R1, EXEC_COMM.off as i32)
        .mov_imm(R2, EXEC_COMM.len as i32)
        .call(Helper::GetCurrentComm);
    // The parent: its tgid, and its process's start time (the leader's, as /proc shows it).
    deref(&mut a, R9, R6, t.real_parent, "mnt");
    read_into(&mut a, EXEC_PPID, R9, t.tgid);
    deref(&mut a, R9, R9, t.group_leader, "mnt");
    read_into(&mut a, EXEC_PARENT_START, R9, t.start_boottime);
    // The mount namespace the path is in: task->nsproxy->mnt_ns->ns.inum.
    a.label("mnt");
    deref(&mut a, R9, R6, t.nsproxy, "file");
    deref(&mut a, R9, R9, o.mnt_ns, "file");
    read_into(&mut a, EXEC_MNT_NS, R9, o.mnt_inum);
    // The file that runs: bprm->file->f_inode's number and its super block's device.
    a.label("file");
    deref(&mut a, R9, R7, o.bprm_file, "path");
    deref(&mut a, R9, R9, o.f_inode, "path");
    read_into(&mut a, EXEC_INO, R9, o.i_ino);
    deref(&mut a, R9, R9, o.i_sb, "path");
    read_into(&mut a, EXEC_DEV, R9, o.s_dev);
    a.label("path");
    deref(&mut a, R9, R7, o.bprm_interp, "args");
    a.mov(R1, R8)
        .add_imm(R1, EXEC_PATH.off as i32)
        .mov_imm(R2, EXEC_PATH.len as i32)
        .mov(R3, R9)
        .call(Helper::ProbeReadKernelStr);
    // argv: mm->arg_start .. mm->arg_end, in the new program's memory, at most 4 KiB.
    a.label("args");
    deref(&mut a, R9, R6, t.mm, "file_it");
    deref(&mut a, R7, R9, o.arg_start, "file_it");
    a.mov(R1, FP)
        .add_imm(R1, i32::from(TMP))
        .mov_imm(R2, 8)
        .mov(R3, R9)
        .add_imm(R3, o.arg_end)
        .call(Helper::ProbeReadKernel)
        .load(DW, R9, FP, TMP)
        .sub(R9, R7)
        .jgt_imm(R9, EXEC_ARGS.len as i32, "cut")
        .ja("read_args")
        .label("cut")
        .mov_imm(R9, EXEC_ARGS.len as i32)
        .label("read_args")
        .mov(R1, R8)
        .add_imm(R1, EXEC_ARGS.off as i32)
        .mov(R2, R9)
        .mov(R3, R7)
        .call(Helper::ProbeReadUser)
        .jne_imm(R0, 0, "file_it")
        .store(W, R8, EXEC_ARGS_LEN.off as i16, R9);
    // File the record under the tgid, replacing the process's last one.
    a.label("file_it")
        .load(W, R1, R8, EXEC_TGID.off as i16)
        .store(W, FP, KEY, R1)
        .load_map(R1, execs_fd)
        .mov(R2, FP)
        .add_imm(R2, i32::from(KEY))
        .mov(R3, R8)
        .mov_imm(R4, 0)
        .call(Helper::MapUpdateElem)
        // The image: the file this exec ran, under the tgid, for as long as the process lives.
        .load(DW, R1, R8, EXEC_START.off as i16)
        .store(DW, FP, IMG + IMAGE_START.off as i16, R1)
        .load(DW, R1, R8, EXEC_INO.off as i16)
        .store(DW, FP, IMG + IMAGE_INO.off as i16, R1)
        .load(W, R1, R8, EXEC_DEV.off as i16)
        .store(W, FP, IMG + IMAGE_DEV.off as i16, R1)
        .load(DW, R1, R8, EXEC_AT.off as i16)
        .store(DW, FP, IMG + IMAGE_EXEC.off as i16, R1);
    update_at(&mut a, images_fd, KEY, IMG);
    a.label("out").mov_imm(R0, 0).exit();
    a.finish()
}

/// What a process became at its last exec, as the kernel recorded it then.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ExecRecord {
    pub pid: u32,
    pub ppid: u32,
    /// The process's start time (CLOCK_BOOTTIME ns): with the pid, which process this is.
    pub start_ns: u64,
    pub parent_start_ns: u64,
    /// When it exec'd.
    pub exec_ns: u64,
    /// The device (as `stat` reports it) and inode of the file that runs; zeros when unread.
    pub file: FileId,
    pub uid: u32,
    pub mnt_ns: u32,
    pub comm: String,
    /// The path the kernel ran, when it is absolute: a relative one (`./x`) says nothing of
    /// where the file is without the process's working directory.
    pub path: Option<String>,
    pub args: Vec<String>,
}

/// A record's field as the bytes of a number (`f` is one of `layout`'s, within `v`).
pub(crate) fn field<const N: usize>(v: &[u8], f: Field) -> [u8; N] {
    let mut b = [0u8; N];
    b.copy_from_slice(&v[f.range()]);
    b
}

fn c_string(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// The kernel's `dev_t` (major << 20 | minor) as `stat` reports it.
pub(crate) fn user_dev(kdev: u32) -> u64 {
    libc::makedev(kdev >> 20, kdev & 0xf_ffff)
}

/// Reads a map value back into an [`ExecRecord`].
pub fn record(v: &[u8; EXEC_LEN]) -> ExecRecord {
    let u32_of = |f| u32::from_ne_bytes(field(v, f));
    let u64_of = |f| u64::from_ne_bytes(field(v, f));
    let args_len = usize::try_from(u32_of(EXEC_ARGS_LEN))
        .unwrap_or(0)
        .min(EXEC_ARGS.len);
    let args = &v[EXEC_ARGS.off..EXEC_ARGS.off + args_len];
    let path = c_string(&v[EXEC_PATH.range()]);
    ExecRecord {
        pid: u32_of(EXEC_TGID),
        ppid: u32_of(EXEC_PPID),
        start_ns: u64_of(EXEC_START),
        parent_start_ns: u64_of(EXEC_PARENT_START),
        exec_ns: u64_of(EXEC_AT),
        file: (user_dev(u32_of(EXEC_DEV)), u64_of(EXEC_INO)),
        uid: u32_of(EXEC_UID),
        mnt_ns: u32_of(EXEC_MNT_NS),
        comm: c_string(&v[EXEC_COMM.range()]),
        path: path.starts_with('/').then_some(path),
        args: split_cmdline(args),
    }
}

/// Records of what processes exec'd, by tgid.
pub trait Execs {
    /// The newest record under `pid`, of whichever process had it: the caller checks the
    /// start time ([`ExecRecord::start_ns`]) against the process it means.
    fn exec_record(&mut self, pid: u32) -> io::Result<Option<ExecRecord>>;
    /// The newest fork record under `pid` (see [`super::fork_hook`]), checked as above by
    /// the caller. None where there are no fork records.
    fn fork_record(&mut self, _pid: u32) -> io::Result<Option<ForkRecord>> {
        Ok(None)
    }
    /// The image entry under `pid` (see `attribution::image`), checked as above by the
    /// caller. None where there are none.
    fn image(&mut self, _pid: u32) -> io::Result<Option<Image>> {
        Ok(None)
    }
    /// Since when (CLOCK_BOOTTIME ns) every new process gets an image entry: one started
    /// later without an entry has lost it. None where there are no image entries.
    fn images_since(&self) -> Option<u64> {
        None
    }
}

/// The loaded hook. Dropping it detaches the programs and frees the maps.
pub struct ExecLog {
    map: OwnedFd,
    _scratch: OwnedFd,
    _prog: [OwnedFd; 2],
    images: OwnedFd,
    /// The fork records' map, the fork and free programs and their links, when the kernel
    /// took them; and since when they run. Without them there are no usable image entries
    /// (a forked child would have none, and none would be removed).
    forks: Option<([OwnedFd; 5], u64)>,
    /// Why there are no fork records, if there are none.
    pub fork_off: Option<String>,
}

impl ExecLog {
    /// Loads and attaches the program. Needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN).
    /// `btf` is the kernel's (`connect_hook::kernel_btf`).
    pub fn open(btf: &Btf) -> Result<ExecLog, HookError> {
        let offsets = ExecOffsets::from_btf(btf)?;
        let sys_err = |what: &'static str| move |err: io::Error| HookError::Sys { what, err };
        let scratch = sys::scratch_create(EXEC_LEN, b"ctt_exec_slot")
            .map_err(sys_err("cannot create the exec scratch map"))?;
        let map = sys::map_create(EXEC_KEY_LEN, EXEC_LEN, EXEC_ENTRIES, b"ctt_execs")
            .map_err(sys_err("cannot create the exec map"))?;
        let images = sys::hash_create(EXEC_KEY_LEN, IMAGE_LEN, IMAGE_ENTRIES, b"ctt_images")
            .map_err(sys_err("cannot create the image map"))?;
        let insns = program(
            &offsets,
            scratch.as_raw_fd(),
            map.as_raw_fd(),
            images.as_raw_fd(),
        )
        .map_err(|label| HookError::Sys {
            what: "exec hook program",
            err: io::Error::other(format!("unresolved jump to {label}")),
        })?;
        let code: Vec<u8> = insns.iter().flat_map(|i| i.encode()).collect();
        let prog = sys::prog_load_raw_tracepoint(&code, PROG_NAME)?;
        let link = sys::attach(&prog, TRACEPOINT).map_err(|err| HookError::Sys {
            what: "cannot attach the exec hook to sched_process_exec",
            err,
        })?;
        // Without fork records nothing is lost but the proof a `started_by` rule needs:
        // such a rule then matches nothing, and what it would have silenced is reported.
        let (forks, fork_off) = match open_forks(&offsets, &images) {
            Ok(fds) => (Some((fds, boot_ns())), None),
            Err(e) => (None, Some(e.to_string())),
        };
        Ok(ExecLog {
            map,
            _scratch: scratch,
            _prog: [prog, link],
            images,
            forks,
            fork_off,
        })
    }

    /// A lookup handle on the records (the program stays attached as long as this lives).
    pub fn reader(&self) -> io::Result<ExecReader> {
        Ok(ExecReader {
            map: self.map.try_clone()?,
            images: match &self.forks {
                Some((_, since)) => Some((self.images.try_clone()?, *since)),
                None => None,
            },
            forks: match &self.forks {
                Some(([map, ..], _)) => Some(map.try_clone()?),
                None => None,
            },
        })
    }
}

/// The fork and free programs ([`fork_hook`]): the fork map, the programs and their links.
fn open_forks(o: &ExecOffsets, images: &OwnedFd) -> Result<[OwnedFd; 5], HookError> {
    let map = sys::map_create(
        EXEC_KEY_LEN,
        FORK_LEN,
        fork_hook::FORK_ENTRIES,
        b"ctt_forks",
    )
    .map_err(|err| HookError::Sys {
        what: "cannot create the fork map",
        err,
    })?;
    let load = |insns: Result<Vec<asm::Insn>, &'static str>,
                name: &[u8],
                tracepoint: &'static [u8],
                what: &'static str|
     -> Result<[OwnedFd; 2], HookError> {
        let insns = insns.map_err(|label| HookError::Sys {
            what,
            err: io::Error::other(format!("unresolved jump to {label}")),
        })?;
        let code: Vec<u8> = insns.iter().flat_map(|i| i.encode()).collect();
        let prog = sys::prog_load_raw_tracepoint(&code, name)?;
        let link = sys::attach(&prog, tracepoint).map_err(|err| HookError::Sys { what, err })?;
        Ok([prog, link])
    };
    let [fork, fork_link] = load(
        fork_hook::program(o, map.as_raw_fd(), images.as_raw_fd()),
        fork_hook::PROG_NAME,
        fork_hook::TRACEPOINT,
        "the fork hook on sched_process_fork",
    )?;
    let [free, free_link] = load(
        fork_hook::free_program(&o.task, images.as_raw_fd()),
        fork_hook::FREE_PROG_NAME,
        fork_hook::FREE_TRACEPOINT,
        "the free hook on sched_process_free",
    )?;
    Ok([map, fork, fork_link, free, free_link])
}

/// A lookup handle on an [`ExecLog`]'s records.
pub struct ExecReader {
    map: OwnedFd,
    /// The image entries and since when every new process has one.
    images: Option<(OwnedFd, u64)>,
    forks: Option<OwnedFd>,
}

/// CLOCK_BOOTTIME now, in nanoseconds (the clock of the records' start times).
fn boot_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Boottime);
    u64::try_from(t.tv_sec).unwrap_or(0) * 1_000_000_000 + u64::try_from(t.tv_nsec).unwrap_or(0)
}

impl Execs for ExecReader {
    fn exec_record(&mut self, pid: u32) -> io::Result<Option<ExecRecord>> {
        let mut value = Box::new([0u8; EXEC_LEN]);
        if !sys::map_lookup(&self.map, &pid.to_ne_bytes(), &mut value)? {
            return Ok(None);
        }
        let r = record(&value);
        Ok((r.pid == pid).then_some(r))
    }

    fn fork_record(&mut self, pid: u32) -> io::Result<Option<ForkRecord>> {
        let Some(map) = &self.forks else {
            return Ok(None);
        };
        let mut value = [0u8; FORK_LEN];
        if !sys::map_lookup(map, &pid.to_ne_bytes(), &mut value)? {
            return Ok(None);
        }
        let r = fork_hook::record(&value);
        Ok((r.pid == pid).then_some(r))
    }

    fn image(&mut self, pid: u32) -> io::Result<Option<Image>> {
        let Some((images, _)) = &self.images else {
            return Ok(None);
        };
        let mut value = [0u8; IMAGE_LEN];
        if !sys::map_lookup(images, &pid.to_ne_bytes(), &mut value)? {
            return Ok(None);
        }
        Ok(Some(fork_hook::image(&value)))
    }

    fn images_since(&self) -> Option<u64> {
        self.images.as_ref().map(|(_, since)| *since)
    }
}

#[cfg(test)]
#[path = "exec_hook_tests.rs"]
mod tests;
