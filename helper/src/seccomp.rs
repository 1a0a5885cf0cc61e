//! A seccomp allow-list: once set up, the helper can make only the system calls it uses.
//!
//! Everything the helper parses comes from the watched program (its names, its packets, its
//! commands). Should a bug in that parsing ever give a program a foothold in the helper, the
//! foothold should be worth little: besides running as an unprivileged user with a few
//! capabilities ([`crate::privileges`]), the helper cannot start a program (`execve`), trace
//! one, mount, load a module, open a new kind of socket option it never uses, and so on —
//! every call not listed here fails with EPERM. The list was taken from `strace -f` of the
//! helper through its kernel tests (attribution, DNS, commands, reopening, exit paths) and is
//! checked by those same tests, which run with the filter on.
//!
//! The filter is installed on the main thread before the other threads start, so every
//! thread inherits it.

use std::collections::BTreeMap;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

/// The system calls the set-up helper makes, by name, for the error messages and the tests.
pub const ALLOWED: &[(&str, libc::c_long)] = &[
    // Files: /proc, the passwd database, resolv.conf, BTF is read before.
    ("read", libc::SYS_read),
    ("readv", libc::SYS_readv),
    ("pread64", libc::SYS_pread64),
    ("write", libc::SYS_write),
    ("writev", libc::SYS_writev),
    ("close", libc::SYS_close),
    ("lseek", libc::SYS_lseek),
    ("fstat", libc::SYS_fstat),
    ("newfstatat", libc::SYS_newfstatat),
    ("statx", libc::SYS_statx),
    ("readlinkat", libc::SYS_readlinkat),
    ("faccessat", libc::SYS_faccessat),
    ("faccessat2", libc::SYS_faccessat2),
    ("getdents64", libc::SYS_getdents64),
    ("fcntl", libc::SYS_fcntl),
    ("ioctl", libc::SYS_ioctl),
    ("dup", libc::SYS_dup),
    ("dup3", libc::SYS_dup3),
    ("pipe2", libc::SYS_pipe2),
    // Memory.
    ("mmap", libc::SYS_mmap),
    ("munmap", libc::SYS_munmap),
    ("mprotect", libc::SYS_mprotect),
    ("mremap", libc::SYS_mremap),
    ("madvise", libc::SYS_madvise),
    ("brk", libc::SYS_brk),
    // Threads, time, scheduling.
    ("futex", libc::SYS_futex),
    ("clone", libc::SYS_clone),
    ("clone3", libc::SYS_clone3),
    ("set_robust_list", libc::SYS_set_robust_list),
    ("rseq", libc::SYS_rseq),
    ("set_tid_address", libc::SYS_set_tid_address),
    ("sched_yield", libc::SYS_sched_yield),
    ("sched_getaffinity", libc::SYS_sched_getaffinity),
    ("sched_setscheduler", libc::SYS_sched_setscheduler),
    ("sched_getparam", libc::SYS_sched_getparam),
    ("sched_getscheduler", libc::SYS_sched_getscheduler),
    ("setpriority", libc::SYS_setpriority),
    ("clock_gettime", libc::SYS_clock_gettime),
    ("clock_nanosleep", libc::SYS_clock_nanosleep),
    ("nanosleep", libc::SYS_nanosleep),
    ("poll", libc::SYS_poll),
    ("ppoll", libc::SYS_ppoll),
    ("prctl", libc::SYS_prctl),
    ("prlimit64", libc::SYS_prlimit64),
    ("getrandom", libc::SYS_getrandom),
    ("uname", libc::SYS_uname),
    ("exit", libc::SYS_exit),
    ("exit_group", libc::SYS_exit_group),
    ("restart_syscall", libc::SYS_restart_syscall),
    // Identity (read only).
    ("getpid", libc::SYS_getpid),
    ("gettid", libc::SYS_gettid),
    ("getuid", libc::SYS_getuid),
    ("geteuid", libc::SYS_geteuid),
    ("getgid", libc::SYS_getgid),
    ("getegid", libc::SYS_getegid),
    ("capget", libc::SYS_capget),
    // Signals (the signal thread, panics).
    ("rt_sigaction", libc::SYS_rt_sigaction),
    ("rt_sigprocmask", libc::SYS_rt_sigprocmask),
    ("rt_sigreturn", libc::SYS_rt_sigreturn),
    ("sigaltstack", libc::SYS_sigaltstack),
    ("tgkill", libc::SYS_tgkill),
    // Sockets: netlink (conntrack, sock_diag, rtnetlink, nf_tables), the packet socket, the
    // reverse-DNS worker's UDP socket.
    ("socket", libc::SYS_socket),
    ("socketpair", libc::SYS_socketpair),
    ("bind", libc::SYS_bind),
    ("connect", libc::SYS_connect),
    ("sendto", libc::SYS_sendto),
    ("sendmsg", libc::SYS_sendmsg),
    ("recvfrom", libc::SYS_recvfrom),
    ("recvmsg", libc::SYS_recvmsg),
    ("recvmmsg", libc::SYS_recvmmsg),
    ("getsockname", libc::SYS_getsockname),
    ("getpeername", libc::SYS_getpeername),
    ("getsockopt", libc::SYS_getsockopt),
    ("setsockopt", libc::SYS_setsockopt),
    ("shutdown", libc::SYS_shutdown),
    // The connect records (map lookups) and the closed-socket fallback.
    ("bpf", libc::SYS_bpf),
    ("pidfd_open", libc::SYS_pidfd_open),
    ("pidfd_getfd", libc::SYS_pidfd_getfd),
];

/// The older calls of x86_64 that the C library and std still use there (`readlink`,
/// `stat`, `access`) and its thread-pointer call.
#[cfg(target_arch = "x86_64")]
const LEGACY: &[(&str, libc::c_long)] = &[
    ("readlink", libc::SYS_readlink),
    ("stat", libc::SYS_stat),
    ("lstat", libc::SYS_lstat),
    ("access", libc::SYS_access),
    ("arch_prctl", libc::SYS_arch_prctl),
];
#[cfg(not(target_arch = "x86_64"))]
const LEGACY: &[(&str, libc::c_long)] = &[];

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("cannot build the seccomp filter: {0}")]
    Build(#[from] seccompiler::BackendError),
    #[error("cannot install the seccomp filter: {0}")]
    Install(#[from] seccompiler::Error),
    #[error("no seccomp filter for this architecture")]
    Arch,
}

fn arch() -> Result<TargetArch, SeccompError> {
    if cfg!(target_arch = "x86_64") {
        Ok(TargetArch::x86_64)
    } else if cfg!(target_arch = "aarch64") {
        Ok(TargetArch::aarch64)
    } else {
        Err(SeccompError::Arch)
    }
}

/// Flags that would let `openat` write, create or truncate a file.
const OPEN_FOR_WRITING: u64 =
    (libc::O_WRONLY | libc::O_RDWR | libc::O_CREAT | libc::O_TRUNC | libc::O_APPEND) as u64;

/// The filter: the calls in [`ALLOWED`] pass, `openat` only to read (the helper writes no
/// file once set up: its log is opened before) unless `terminals` (`--broadcast` opens the
/// logged-in terminals to write to them), every other call fails with EPERM.
pub fn program(terminals: bool) -> Result<BpfProgram, SeccompError> {
    use seccompiler::{SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompRule};
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = ALLOWED
        .iter()
        .chain(LEGACY)
        .map(|&(_, nr)| (nr, Vec::new()))
        .collect();
    let read_only = SeccompCondition::new(
        2,
        SeccompCmpArgLen::Dword,
        SeccompCmpOp::MaskedEq(OPEN_FOR_WRITING),
        0,
    )?;
    let open_rules = if terminals {
        Vec::new()
    } else {
        vec![SeccompRule::new(vec![read_only])?]
    };
    rules.insert(libc::SYS_openat, open_rules);
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Errno(libc::EPERM as u32),
        SeccompAction::Allow,
        arch()?,
    )?;
    Ok(filter.try_into()?)
}

/// Installs the filter on the calling thread (and so on every thread it starts later).
/// Needs no-new-privs, which [`crate::privileges::restrict`] sets.
pub fn confine(terminals: bool) -> Result<(), SeccompError> {
    let prog = program(terminals)?;
    seccompiler::apply_filter(&prog)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_filter_builds_and_lists_each_call_once_without_exec_or_ptrace() {
        let prog = program(false).expect("filter");
        assert!(program(true).expect("filter").len() < prog.len());
        assert!(!prog.is_empty());
        let mut nrs: Vec<_> = ALLOWED.iter().chain(LEGACY).map(|(_, n)| *n).collect();
        nrs.sort_unstable();
        nrs.dedup();
        assert_eq!(
            nrs.len(),
            ALLOWED.len() + LEGACY.len(),
            "a call listed twice"
        );
        assert!(
            !nrs.contains(&libc::SYS_openat),
            "openat has its own read-only rule"
        );
        for denied in [
            libc::SYS_execve,
            libc::SYS_execveat,
            libc::SYS_ptrace,
            libc::SYS_mount,
            libc::SYS_setuid,
            libc::SYS_setresuid,
            libc::SYS_init_module,
            libc::SYS_kill,
            libc::SYS_unlinkat,
            libc::SYS_process_vm_writev,
        ] {
            assert!(!nrs.contains(&denied), "{denied} must stay denied");
        }
    }
}
