//! Where the fields of `struct task_struct` the programs read sit, from the kernel's BTF.
//!
//! Every record names a process by its tgid, and a tgid alone is not a process: pids are
//! reused. What makes one unique is the tgid with its start time, `start_boottime` of the
//! thread group's leader (what `/proc/PID/stat` reports, in clock ticks), so the connect and
//! send records carry it and the exec records are filed and checked by it: an exec record is
//! only ever read for the process that made it, never for a later one with the same pid.

use super::btf::{Btf, BtfError};

/// Offsets in `struct task_struct`, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TaskOffsets {
    /// `pid_t tgid`.
    pub tgid: i32,
    /// `pid_t pid`: the thread's id, the tgid for a process's first thread.
    pub pid: i32,
    /// `struct task_struct *real_parent`: the process that forked it (until it exits and the
    /// child is handed to a reaper).
    pub real_parent: i32,
    /// `struct task_struct *group_leader`: a thread's process.
    pub group_leader: i32,
    /// `u64 start_boottime`: CLOCK_BOOTTIME nanoseconds at fork; kept across exec.
    pub start_boottime: i32,
    /// `struct mm_struct *mm`.
    pub mm: i32,
    /// `struct nsproxy *nsproxy`.
    pub nsproxy: i32,
    /// `char comm[16]`.
    pub comm: i32,
    /// `const struct cred *cred`: the subjective credentials (`current_cred()`).
    pub cred: i32,
    /// Within `struct cred`: `kuid_t uid`, the real uid as the kernel holds it (what
    /// `bpf_get_current_uid_gid` reads, in the initial user namespace).
    pub cred_uid: i32,
}

/// The BTF names [`TaskOffsets::from_btf`] looks up.
pub const BTF_NAMES: &[&str] = &[
    "task_struct",
    "tgid",
    "pid",
    "real_parent",
    "group_leader",
    "start_boottime",
    "mm",
    "nsproxy",
    "comm",
    "cred",
    "uid",
];

impl TaskOffsets {
    pub fn from_btf(btf: &Btf) -> Result<TaskOffsets, BtfError> {
        // Within what a load's 16-bit offset reaches: `current_process` loads fields directly.
        let at = |f: &str| -> Result<i32, BtfError> {
            let off = btf.offset_of("task_struct", &[f])?;
            i16::try_from(off)
                .map(i32::from)
                .map_err(|_| BtfError::Missing(format!("task_struct.{f}")))
        };
        Ok(TaskOffsets {
            tgid: at("tgid")?,
            pid: at("pid")?,
            real_parent: at("real_parent")?,
            group_leader: at("group_leader")?,
            start_boottime: at("start_boottime")?,
            mm: at("mm")?,
            nsproxy: at("nsproxy")?,
            comm: at("comm")?,
            cred: at("cred")?,
            cred_uid: i16::try_from(btf.offset_of("cred", &["uid"])?)
                .map(i32::from)
                .map_err(|_| BtfError::Missing("cred.uid".into()))?,
        })
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;
    use crate::attribution::bpf::btf::tests::Builder;

    /// The offsets [`task_like`] lays the fields at: the task offsets of every generator's
    /// tests.
    pub const TASK_LIKE: TaskOffsets = TaskOffsets {
        tgid: 1200,
        pid: 1196,
        real_parent: 1208,
        group_leader: 1224,
        start_boottime: 1600,
        mm: 900,
        nsproxy: 2000,
        comm: 2400,
        cred: 2300,
        cred_uid: 4,
    };

    /// A cut-down `struct task_struct`, with the pointers the programs follow.
    pub fn task_like(b: &mut Builder) -> u32 {
        let u32t = b.int("u32", 4);
        let u64t = b.int("u64", 8);
        let ptr = b.ptr(u64t);
        b.composite(
            false,
            "task_struct",
            4096,
            &[
                ("tgid", u32t, 1200),
                ("pid", u32t, 1196),
                ("real_parent", ptr, 1208),
                ("group_leader", ptr, 1224),
                ("start_boottime", u64t, 1600),
                ("mm", ptr, 900),
                ("nsproxy", ptr, 2000),
                ("comm", u64t, 2400),
                ("cred", ptr, 2300),
            ],
        );
        b.composite(false, "cred", 64, &[("uid", u32t, 4)])
    }

    #[test]
    fn offsets_from_a_kernel_like_btf() {
        let mut b = Builder::new();
        task_like(&mut b);
        let btf = Btf::load(std::io::Cursor::new(b.build()), BTF_NAMES).unwrap();
        assert_eq!(TaskOffsets::from_btf(&btf).unwrap(), TASK_LIKE);
    }

    #[test]
    fn a_kernel_without_the_field_says_which() {
        let mut b = Builder::new();
        let u32t = b.int("u32", 4);
        b.composite(
            false,
            "task_struct",
            64,
            &[("tgid", u32t, 0), ("pid", u32t, 4)],
        );
        let btf = Btf::load(std::io::Cursor::new(b.build()), BTF_NAMES).unwrap();
        let e = TaskOffsets::from_btf(&btf).unwrap_err().to_string();
        assert!(e.contains("real_parent"), "{e}");
    }
}
