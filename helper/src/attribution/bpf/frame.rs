//! What the record programs write alike: their stack frame, the current process into the
//! record's value, and the map update that files it.
//!
//! Three programs file records (TCP connects, sends on connected UDP sockets, sends to an
//! address on unconnected ones), two generators write them (`attribution::connect_hook`,
//! `attribution::send_hook`), and one lookup reads them all. So the parts every record shares
//! are written once, here: a value that one program filled differently from another would
//! read back as another process, and nothing would fail. Both generators import this file;
//! it imports neither.

use super::asm::{self, Helper, DW, FP, H, R0, R1, R2, R3, R4, R9, W};
use super::layout::{
    Field, KEY_LEN, PENDING_KEY_LEN, VALUE_BOOT_NS, VALUE_COMM, VALUE_LEN, VALUE_REFUSED,
    VALUE_START, VALUE_TGID, VALUE_UID,
};
use super::task::TaskOffsets;

// The programs' stack, down from the frame pointer: the map key, the map value, a scratch
// word, the socket's address (the pending map's key). Within the key and the value, each
// field is where `bpf::layout` says: a store to the key's netns is at `KEY_NETNS.at(KEY)`.
pub const KEY: i16 = -(KEY_LEN as i16);
pub const VAL: i16 = KEY - VALUE_LEN as i16;
pub const TMP: i16 = VAL - 8;
pub const SK: i16 = TMP - PENDING_KEY_LEN as i16;
// `output` files the value and the key with one copy.
const _: () = assert!(VAL + VALUE_LEN as i16 == KEY);

/// Zeroes the stack the programs use: the verifier wants what helpers read initialised, and
/// the key's padding (`KEY_PAD`) and unused address bytes must be zero to match the keys
/// the helper builds.
pub fn zero_stack(a: &mut asm::Asm) {
    for off in (SK..0).step_by(8) {
        a.store_imm(DW, FP, off, 0);
    }
}

/// Reads `len` bytes at `base` + `field` (kernel memory) into the stack at `to`.
pub fn read(a: &mut asm::Asm, to: i16, len: i32, base: asm::Reg, field: i32) {
    a.mov(R1, FP)
        .add_imm(R1, i32::from(to))
        .mov_imm(R2, len)
        .mov(R3, base);
    if field != 0 {
        a.add_imm(R3, field);
    }
    a.call(Helper::ProbeReadKernel);
}

/// Reads a key field whole from `base` + `field` (kernel memory) into the stack's key.
pub fn read_key(a: &mut asm::Asm, f: Field, base: asm::Reg, field: i32) {
    read(a, f.at(KEY), f.len as i32, base, field);
}

/// What a program knows of the pointer it reads a socket (or a namespace) through.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pointer {
    /// A bare address (a raw tracepoint's argument): each read is a `probe_read_kernel`.
    Untyped,
    /// A pointer the verifier knows the type of (from `bpf_skc_to_tcp_sock`, and the pointers
    /// loaded through it): each read is a plain load, which the kernel makes fault-safe. A
    /// helper call costs about 0.05 µs on the CI machines, and a tuple is seven reads.
    Typed,
}

/// As [`read`], through a pointer of the kind `p` says: a typed read is one load (two 8-byte
/// loads for 16 bytes) and a store per piece, using r0. Returns how it was read: a length
/// other than 2, 4, 8 or 16, or a field out of a load's reach (no kernel lays a socket out
/// so), is read with `probe_read_kernel` (r1 to r3) whatever `p` says. What it read is then
/// a plain number to the verifier, even a pointer: the caller reads through it as `Untyped`.
pub fn read_via(
    a: &mut asm::Asm,
    p: Pointer,
    to: i16,
    len: i32,
    base: asm::Reg,
    field: i32,
) -> Pointer {
    let pieces = match len {
        2 => Some((H, 2, 1)),
        4 => Some((W, 4, 1)),
        8 => Some((DW, 8, 1)),
        16 => Some((DW, 8, 2)),
        _ => None,
    };
    let reach = i16::try_from(field)
        .ok()
        .zip(i16::try_from(field + len - 1).ok());
    match (p, pieces, reach) {
        (Pointer::Typed, Some((size, step, n)), Some((at, _))) => {
            for i in 0..n {
                a.load(size, R0, base, at + i * step)
                    .store(size, FP, to + i * step, R0);
            }
            Pointer::Typed
        }
        _ => {
            read(a, to, len, base, field);
            Pointer::Untyped
        }
    }
}

/// As [`read_key`], through a pointer of the kind `p` says (see [`read_via`]).
pub fn read_key_via(a: &mut asm::Asm, p: Pointer, f: Field, base: asm::Reg, field: i32) -> Pointer {
    read_via(a, p, f.at(KEY), f.len as i32, base, field)
}

/// The current process into the value: tgid, uid, CLOCK_BOOTTIME, comm, and the process's
/// start time (`current->group_leader->start_boottime`; a thread's own differs).
///
/// Through `bpf_get_current_task_btf`: the task as a typed pointer, whose fields the program
/// loads directly (the kernel makes each a fault-safe load). One helper call and plain loads,
/// where four helpers (pid, uid, comm, task) and two `probe_read`s took about 0.8 µs a record
/// on the CI machines (a call costs about 0.1 µs there).
pub fn current_process(a: &mut asm::Asm, task: &TaskOffsets) {
    a.call(Helper::GetCurrentTaskBtf)
        .load(W, R1, R0, task.tgid as i16)
        .store(W, FP, VALUE_TGID.at(VAL), R1)
        .load(DW, R1, R0, task.comm as i16)
        .store(DW, FP, VALUE_COMM.at(VAL), R1)
        .load(DW, R1, R0, task.comm as i16 + 8)
        .store(DW, FP, VALUE_COMM.at(VAL) + 8, R1)
        .load(DW, R1, R0, task.cred as i16)
        .load(W, R1, R1, task.cred_uid as i16)
        .store(W, FP, VALUE_UID.at(VAL), R1)
        .load(DW, R1, R0, task.group_leader as i16)
        .load(DW, R1, R1, task.start_boottime as i16)
        .store(DW, FP, VALUE_START.at(VAL), R1)
        .call(Helper::KtimeGetBootNs)
        .store(DW, FP, VALUE_BOOT_NS.at(VAL), R0);
}

/// Files the stack's value under the stack's key in map `fd`, replacing an older record with
/// the same key (`BPF_ANY`): the newest connect or send is the one a new flow is read against.
pub fn update(a: &mut asm::Asm, fd: i32) {
    update_at(a, fd, KEY, VAL);
}

/// Files the stack's value and key (one piece: the value lies right below the key) as a
/// record in the ring buffer `ring` (`bpf_ringbuf_output`), without waking its reader unless
/// more than `wake_at` bytes are waiting (`BPF_RB_AVAIL_DATA`, then `BPF_RB_FORCE_WAKEUP`
/// instead of `BPF_RB_NO_WAKEUP`). The count of records the ring refused, slot 0 of the
/// array `refused`, goes into the value first, and a record the ring refuses (full) adds one
/// to it (an atomic add: a count no preempted program can set back). The reader holds a
/// record whose count is not the current one suspect: a newer record under its key may be
/// the one refused. Defines the labels "counted", "wake", "emit" and "filed"; clobbers r9.
pub fn output(a: &mut asm::Asm, ring: i32, refused: i32, wake_at: i32) {
    const AVAIL_DATA: i32 = 0;
    const NO_WAKEUP: i32 = 1;
    const FORCE_WAKEUP: i32 = 2;
    a.store_imm(W, FP, TMP, 0);
    lookup_at(a, refused, TMP);
    a.mov(R9, R0)
        .jeq_imm(R0, 0, "counted")
        .load(DW, R1, R9, 0)
        .store(W, FP, VALUE_REFUSED.at(VAL), R1)
        .label("counted")
        .load_map(R1, ring)
        .mov_imm(R2, AVAIL_DATA)
        .call(Helper::RingbufQuery)
        .mov_imm(R4, NO_WAKEUP)
        .jgt_imm(R0, wake_at, "wake")
        .ja("emit")
        .label("wake")
        .mov_imm(R4, FORCE_WAKEUP)
        .label("emit")
        .load_map(R1, ring)
        .mov(R2, FP)
        .add_imm(R2, i32::from(VAL))
        .mov_imm(R3, (VALUE_LEN + KEY_LEN) as i32)
        .call(Helper::RingbufOutput)
        .jeq_imm(R0, 0, "filed")
        .jeq_imm(R9, 0, "filed")
        .mov_imm(R1, 1)
        .atomic_add(R9, 0, R1)
        .label("filed");
}

/// Looks the key on the stack at `key` up in map `fd`: r0 is the value's address, or 0.
pub fn lookup_at(a: &mut asm::Asm, fd: i32, key: i16) {
    map_call(a, fd, key, Helper::MapLookupElem);
}

/// Deletes the key on the stack at `key` from map `fd`.
pub fn delete_at(a: &mut asm::Asm, fd: i32, key: i16) {
    map_call(a, fd, key, Helper::MapDeleteElem);
}

fn map_call(a: &mut asm::Asm, fd: i32, key: i16, helper: Helper) {
    a.load_map(R1, fd)
        .mov(R2, FP)
        .add_imm(R2, i32::from(key))
        .call(helper);
}

/// Files the value on the stack at `value` under the key at `key` in map `fd` (`BPF_ANY`).
pub fn update_at(a: &mut asm::Asm, fd: i32, key: i16, value: i16) {
    a.load_map(R1, fd)
        .mov(R2, FP)
        .add_imm(R2, i32::from(key))
        .mov(R3, FP)
        .add_imm(R3, i32::from(value))
        .mov_imm(R4, 0)
        .call(Helper::MapUpdateElem);
}

/// Readers of assembled programs, for the generators' tests.
#[cfg(test)]
pub mod listing {
    use super::VAL;
    use crate::attribution::bpf::asm::{Cmp, Helper, Op, Reg, DW, FP, R0, R1, R2, R3, R4, R9, W};
    use crate::attribution::bpf::layout::{
        VALUE_BOOT_NS, VALUE_COMM, VALUE_REFUSED, VALUE_START, VALUE_TGID, VALUE_UID,
    };

    /// A program the verifier can take as written: every op known, jumps forward only and
    /// within it, and an `exit` last.
    pub fn assert_forward_only(ops: &[(usize, Op)]) {
        let len = ops.last().map_or(0, |&(at, _)| at + 1);
        assert_eq!(ops.last().map(|&(_, op)| op), Some(Op::Exit));
        for &(at, op) in ops {
            assert!(!matches!(op, Op::Unknown(_)), "unknown op at {at}");
            if let Op::Ja { off } | Op::Jump { off, .. } = op {
                assert!(off >= 0, "backward jump at {at}");
                assert!(at + 1 + (off as usize) < len, "jump past the end at {at}");
            }
        }
    }

    /// Whether the op at `i` is followed by a call of `helper`.
    pub fn then_calls(ops: &[(usize, Op)], i: usize, helper: Helper) -> bool {
        ops.get(i + 1).map(|&(_, op)| op) == Some(Op::Call(helper))
    }

    /// What a program writes into its stack: `(offset from the frame pointer, bytes)` for
    /// each store, and for each helper that fills a buffer (`probe_read_kernel`,
    /// `get_current_comm`) the buffer it was given, from the `r1 = fp; r1 += to; r2 = len`
    /// that sets up its call.
    pub fn stack_writes(ops: &[(usize, Op)]) -> Vec<(i16, usize)> {
        let mut out = Vec::new();
        for (i, &(at, op)) in ops.iter().enumerate() {
            match op {
                Op::StoreMem { size, dst, off, .. } | Op::StoreImm { size, dst, off, .. }
                    if dst == FP =>
                {
                    out.push((off, size.bytes()));
                }
                Op::Call(Helper::ProbeReadKernel | Helper::GetCurrentComm) => {
                    let before = &ops[i.saturating_sub(6)..i];
                    let find = |reg: Reg| {
                        before.iter().rposition(|&(_, op)| match op {
                            Op::AddImm { dst, .. } | Op::MovImm { dst, .. } => dst == reg,
                            _ => false,
                        })
                    };
                    let (Some(to), Some(len)) = (find(R1), find(R2)) else {
                        panic!("a buffer call at {at} without its buffer set up");
                    };
                    assert_eq!(before[to - 1].1, Op::Mov { dst: R1, src: FP }, "at {at}");
                    let (Op::AddImm { imm: to, .. }, Op::MovImm { imm: len, .. }) =
                        (before[to].1, before[len].1)
                    else {
                        panic!("a buffer call at {at} not on the stack");
                    };
                    out.push((to as i16, len as usize));
                }
                _ => {}
            }
        }
        out
    }

    /// The `(map fd, key on the stack, value on the stack)` of each map update, read from the
    /// `r1 = map; r2 = fp + key; r3 = fp + value` that sets it up.
    pub fn updates(ops: &[(usize, Op)]) -> Vec<(i32, i32, i32)> {
        let mut out = Vec::new();
        for (i, &(_, op)) in ops.iter().enumerate() {
            if op != Op::Call(Helper::MapUpdateElem) {
                continue;
            }
            let before: Vec<Op> = ops[i - 6..i].iter().map(|&(_, op)| op).collect();
            let Op::LoadMapFd { dst: R1, fd } = before[0] else {
                panic!("an update at {i} without its map: {before:?}");
            };
            let (Op::AddImm { dst: R2, imm: k }, Op::AddImm { dst: R3, imm: v }) =
                (before[2], before[4])
            else {
                panic!("an update at {i} without its key and value: {before:?}");
            };
            assert_eq!(before[1], Op::Mov { dst: R2, src: FP });
            assert_eq!(before[3], Op::Mov { dst: R3, src: FP });
            // BPF_ANY: a new record replaces an older one with the same key.
            assert_eq!(before[5], Op::MovImm { dst: R4, imm: 0 });
            out.push((fd, k, v));
        }
        out
    }

    /// The `(ring fd, record on the stack, its length, bytes waiting past which it wakes the
    /// reader)` of each ring output, read from the query before it and the
    /// `r1 = ring; r2 = fp + record; r3 = length` that sets it up. The flags are no wakeup
    /// unless the query said more than that is waiting.
    pub fn outputs(ops: &[(usize, Op)]) -> Vec<(i32, i32, i32, i32)> {
        let mut out = Vec::new();
        for (i, &(_, op)) in ops.iter().enumerate() {
            if op != Op::Call(Helper::RingbufOutput) {
                continue;
            }
            let before: Vec<Op> = ops[i - 11..i].iter().map(|&(_, op)| op).collect();
            let (Op::LoadMapFd { dst: R1, fd: asked }, Op::LoadMapFd { dst: R1, fd }) =
                (before[0], before[7])
            else {
                panic!("an output at {i} without its ring: {before:?}");
            };
            assert_eq!(asked, fd, "the ring asked is the ring filed");
            assert_eq!(
                before[1],
                Op::MovImm { dst: R2, imm: 0 },
                "BPF_RB_AVAIL_DATA"
            );
            assert_eq!(before[2], Op::Call(Helper::RingbufQuery));
            assert_eq!(
                before[3],
                Op::MovImm { dst: R4, imm: 1 },
                "BPF_RB_NO_WAKEUP"
            );
            let Op::Jump {
                cmp: Cmp::Gt,
                dst: R0,
                imm: wake_at,
                off: 1,
                jmp32: false,
                ..
            } = before[4]
            else {
                panic!("an output at {i} with no check of what waits: {before:?}");
            };
            assert_eq!(before[5], Op::Ja { off: 1 });
            assert_eq!(
                before[6],
                Op::MovImm { dst: R4, imm: 2 },
                "BPF_RB_FORCE_WAKEUP"
            );
            assert_eq!(before[8], Op::Mov { dst: R2, src: FP });
            let (Op::AddImm { dst: R2, imm: from }, Op::MovImm { dst: R3, imm: len }) =
                (before[9], before[10])
            else {
                panic!("an output at {i} without its record: {before:?}");
            };
            out.push((fd, from, len, wake_at));
        }
        out
    }

    /// The refusal-count array's fd of each ring output: before it, slot 0 of the array
    /// (the key a zero on the stack at `TMP`) is looked up into r9 and, if there, its count
    /// copied into the value; after it, a refused record (r0 not 0) adds one to the count.
    /// Both skips land right after what they skip.
    pub fn refusal_counts(ops: &[(usize, Op)]) -> Vec<i32> {
        let skips_to = |at: usize, op: Op, reg: Reg, end: usize| {
            let Op::Jump {
                cmp: Cmp::Eq,
                jmp32: false,
                dst,
                imm: 0,
                off,
            } = op
            else {
                panic!("no null check at {at}: {op:?}");
            };
            assert_eq!(dst, reg, "at {at}");
            assert_eq!(at as i64 + 1 + i64::from(off), end as i64, "at {at}");
        };
        let mut out = Vec::new();
        for (i, &(_, op)) in ops.iter().enumerate() {
            if op != Op::Call(Helper::RingbufOutput) {
                continue;
            }
            let before: Vec<(usize, Op)> = ops[i - 20..i - 11].to_vec();
            let op = |k: usize| before[k].1;
            assert_eq!(
                op(0),
                Op::StoreImm {
                    size: W,
                    dst: FP,
                    off: super::TMP,
                    imm: 0
                },
                "output at {i}: {before:?}"
            );
            let Op::LoadMapFd { dst: R1, fd } = op(1) else {
                panic!("output at {i}: no refusal count: {before:?}");
            };
            assert_eq!(op(2), Op::Mov { dst: R2, src: FP });
            assert_eq!(
                op(3),
                Op::AddImm {
                    dst: R2,
                    imm: i32::from(super::TMP)
                }
            );
            assert_eq!(op(4), Op::Call(Helper::MapLookupElem));
            assert_eq!(op(5), Op::Mov { dst: R9, src: R0 });
            skips_to(before[6].0, op(6), R0, ops[i - 11].0);
            assert_eq!(
                op(7),
                Op::LoadMem {
                    size: DW,
                    dst: R1,
                    src: R9,
                    off: 0
                }
            );
            assert_eq!(
                op(8),
                Op::StoreMem {
                    size: W,
                    dst: FP,
                    off: VALUE_REFUSED.at(VAL),
                    src: R1
                }
            );
            let after: Vec<(usize, Op)> = ops[i + 1..i + 5].to_vec();
            let end = after[3].0 + 1;
            skips_to(after[0].0, after[0].1, R0, end);
            skips_to(after[1].0, after[1].1, R9, end);
            assert_eq!(after[2].1, Op::MovImm { dst: R1, imm: 1 });
            assert_eq!(
                after[3].1,
                Op::AtomicAdd {
                    dst: R9,
                    off: 0,
                    src: R1
                }
            );
            out.push(fd);
        }
        out
    }

    /// The current process goes into the value's fields, all of it before the record is
    /// filed: tgid, comm, uid and the leader's start loaded from the task
    /// (`get_current_task_btf`, no other call in between, so r0 stays the task), and the
    /// boot time.
    pub fn assert_files_the_current_process(ops: &[(usize, Op)]) {
        let op = |i: usize| ops.get(i).map(|&(_, op)| op);
        let call = |h| {
            ops.iter()
                .position(|&(_, op)| op == Op::Call(h))
                .unwrap_or_else(|| panic!("no call of {h:?}"))
        };
        let task = call(Helper::GetCurrentTaskBtf);
        let time = call(Helper::KtimeGetBootNs);
        assert!(task < time);
        assert_eq!(
            op(time + 1),
            Some(Op::StoreMem {
                size: DW,
                dst: FP,
                off: VALUE_BOOT_NS.at(VAL),
                src: R0
            })
        );
        let between = &ops[task + 1..time];
        assert!(between.iter().all(|&(_, o)| !matches!(o, Op::Call(_))));
        let comm = VALUE_COMM.at(VAL);
        for (size, off) in [
            (W, VALUE_TGID.at(VAL)),
            (DW, comm),
            (DW, comm + 8),
            (W, VALUE_UID.at(VAL)),
            (DW, VALUE_START.at(VAL)),
        ] {
            let stored = Op::StoreMem {
                size,
                dst: FP,
                off,
                src: R1,
            };
            assert!(
                between.iter().any(|&(_, o)| o == stored),
                "no {stored:?} from the task"
            );
        }
        assert_eq!(VALUE_COMM.len, 16);
        // Filed into a map or a ring, whichever the program's records go to.
        let filed = ops
            .iter()
            .position(|&(_, op)| {
                op == Op::Call(Helper::MapUpdateElem) || op == Op::Call(Helper::RingbufOutput)
            })
            .unwrap_or_else(|| panic!("no record filed"));
        assert!(task < filed && time < filed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::bpf::asm::{disassemble, Op, R6};

    fn ops_of(p: Pointer, len: i32, field: i32) -> (Pointer, Vec<Op>) {
        let mut a = asm::Asm::default();
        let used = read_via(&mut a, p, TMP, len, R6, field);
        a.exit();
        let ops = disassemble(&a.finish().expect("no jumps"));
        (used, ops.into_iter().map(|(_, op)| op).collect())
    }

    fn probe_reads(ops: &[Op]) -> usize {
        ops.iter()
            .filter(|&&op| op == Op::Call(Helper::ProbeReadKernel))
            .count()
    }

    #[test]
    fn a_typed_read_is_plain_loads_and_says_so() {
        for (len, loads) in [(2, 1), (4, 1), (8, 1), (16, 2)] {
            let (used, ops) = ops_of(Pointer::Typed, len, 100);
            assert_eq!(used, Pointer::Typed);
            assert_eq!(probe_reads(&ops), 0, "{len}: {ops:?}");
            let n = ops
                .iter()
                .filter(|op| matches!(op, Op::LoadMem { src: R6, .. }))
                .count();
            assert_eq!(n, loads, "{len}: {ops:?}");
        }
    }

    /// What can't be loaded is read with probe_read, and the caller is told, so that a
    /// pointer read so is not then loaded through (the verifier would refuse the program).
    #[test]
    fn out_of_reach_or_odd_lengths_fall_back_to_probe_read_and_say_untyped() {
        for (len, field) in [
            (8, 40_000),
            (16, i32::from(i16::MAX) - 8),
            (12, 100),
            (1, 0),
        ] {
            let (used, ops) = ops_of(Pointer::Typed, len, field);
            assert_eq!(used, Pointer::Untyped, "{len} at {field}");
            assert_eq!(probe_reads(&ops), 1, "{len} at {field}: {ops:?}");
            assert!(
                !ops.iter()
                    .any(|op| matches!(op, Op::LoadMem { src: R6, .. })),
                "{ops:?}"
            );
        }
        let (used, ops) = ops_of(Pointer::Untyped, 8, 100);
        assert_eq!((used, probe_reads(&ops)), (Pointer::Untyped, 1));
    }
}
