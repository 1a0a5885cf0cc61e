//! The reader thread's scheduling priority.
//!
//! A program that connects, writes and closes (`bash -c 'echo > /dev/tcp/…'`) keeps its CPU
//! from `connect()` to `exit()` unless something preempts it, and once it has closed the
//! socket nobody can say whose it was. Measured on a 2-core VM: with normal priority the
//! reader attributed 4 of 40 such one-shots, with nice -20 31 of 40, with SCHED_RR priority 1
//! all 40. So the reader runs at the lowest real-time priority: it wakes up at once, and the
//! kernel's real-time throttling (by default 95% of each second) bounds what it can take,
//! though it only reads, parses and, when idle, makes one bounded lookup per flow.

use std::io;

/// Raises the calling thread to SCHED_RR priority 1, or failing that (no CAP_SYS_NICE) to
/// nice -20, or leaves it. Returns what it got, for `--debug`. Threads it starts afterwards
/// inherit the policy.
pub fn raise_reader_priority() -> &'static str {
    if set_round_robin().is_ok() {
        return "SCHED_RR 1";
    }
    let tid = rustix::thread::gettid();
    if rustix::process::setpriority_process(Some(tid), -20).is_ok() {
        return "nice -20";
    }
    "normal"
}

/// Back to SCHED_OTHER and nice 0 (always allowed: it only lowers the priority).
pub fn normal_priority() {
    let _ = set_policy(libc::SCHED_OTHER, 0);
    let _ = rustix::process::setpriority_process(Some(rustix::thread::gettid()), 0);
}

fn set_round_robin() -> io::Result<()> {
    set_policy(libc::SCHED_RR, 1)
}

#[allow(unsafe_code)]
fn set_policy(policy: libc::c_int, priority: libc::c_int) -> io::Result<()> {
    let param = libc::sched_param {
        sched_priority: priority,
    };
    // SAFETY: sched_setscheduler reads a valid, initialised sched_param for the calling
    // thread (pid 0) and touches no memory of ours beyond it.
    let rc = unsafe { libc::sched_setscheduler(0, policy, &param) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}
