use super::*;
use crate::attribution::bpf::asm::{disassemble, Helper, Op, R3, R8};
use crate::attribution::bpf::frame::listing::stack_writes;
use crate::attribution::bpf::layout::FORK_FLAGS;

fn offsets() -> ExecOffsets {
    ExecOffsets {
        task: crate::attribution::bpf::task::tests::TASK_LIKE,
        exe_file: 400,
        f_inode: 32,
        i_ino: 64,
        i_sb: 40,
        s_dev: 16,
        ..Default::default()
    }
}

fn ops() -> Vec<(usize, Op)> {
    disassemble(&program(&offsets(), 7, 9).unwrap())
}

#[test]
fn the_program_jumps_forward_only_knows_every_op_and_ends_in_exit() {
    let ops = ops();
    crate::attribution::bpf::frame::listing::assert_forward_only(&ops);
    assert!(
        !ops.iter()
            .any(|&(_, op)| matches!(op, Op::LoadMem { src: R8, .. })),
        "r8 is not set here"
    );
    let task = crate::attribution::bpf::task::tests::TASK_LIKE;
    crate::attribution::bpf::frame::listing::assert_forward_only(&disassemble(
        &free_program(&task, 9).unwrap(),
    ));
}

#[test]
fn the_stack_is_zeroed_before_anything_is_read_into_it_and_reads_stay_in_their_fields() {
    let ops = ops();
    let first_call = ops
        .iter()
        .position(|&(_, op)| matches!(op, Op::Call(_)))
        .unwrap();
    let zeroed: Vec<i16> = ops[..first_call]
        .iter()
        .filter_map(|&(_, op)| match op {
            Op::StoreImm {
                size: DW,
                dst: FP,
                off,
                imm: 0,
            } => Some(off),
            _ => None,
        })
        .collect();
    assert_eq!(zeroed, (IMG..0).step_by(8).collect::<Vec<_>>());
    assert_eq!(zeroed.first(), Some(&IMG));
    // Every write lands in the key, the pointer word or one field of the record or the
    // image, whole.
    let fields = [
        FORK_TGID,
        FORK_BY,
        FORK_START,
        FORK_BY_START,
        FORK_BY_INO,
        FORK_BY_DEV,
        FORK_FLAGS,
    ];
    let image = [IMAGE_START, IMAGE_INO, IMAGE_DEV, IMAGE_FLAGS, IMAGE_ORIGIN];
    for (off, len) in stack_writes(&ops).into_iter().skip(zeroed.len()) {
        let in_field = fields.iter().any(|f| off == at(*f) && len == f.len)
            || image.iter().any(|f| off == img(*f) && len == f.len);
        assert!(
            in_field || (off, len) == (KEY, 4) || (off, len) == (-16, 8),
            "a write of {len} at {off}"
        );
    }
}

#[test]
fn a_thread_is_not_recorded_and_a_process_is_filed_under_its_tgid() {
    let ops = ops();
    // The tgid and pid of the new task are compared (a subtraction) before anything else is
    // read, and a difference jumps to the end.
    let sub = ops
        .iter()
        .position(|&(_, op)| matches!(op, Op::Sub { .. }))
        .unwrap();
    assert!(matches!(ops[sub + 1].1, Op::Jump { imm: 0, .. }));
    let reads = ops[..sub]
        .iter()
        .filter(|&&(_, op)| op == Op::Call(Helper::ProbeReadKernel))
        .count();
    assert_eq!(reads, 2);
    let update = ops
        .iter()
        .position(|&(_, op)| op == Op::Call(Helper::MapUpdateElem))
        .unwrap();
    let before: Vec<Op> = ops[update - 8..update].iter().map(|&(_, op)| op).collect();
    assert_eq!(
        before[0],
        Op::LoadMem {
            size: W,
            dst: R1,
            src: FP,
            off: at(FORK_TGID)
        }
    );
    assert_eq!(before[2], Op::LoadMapFd { dst: R1, fd: 7 });
    assert_eq!(
        before[6],
        Op::AddImm {
            dst: R3,
            imm: REC.into()
        }
    );
}

#[test]
fn a_record_reads_back_with_its_forker_and_file() {
    let mut v = [0u8; FORK_LEN];
    v[FORK_TGID.range()].copy_from_slice(&42u32.to_ne_bytes());
    v[FORK_BY.range()].copy_from_slice(&7u32.to_ne_bytes());
    v[FORK_START.range()].copy_from_slice(&1000u64.to_ne_bytes());
    v[FORK_BY_START.range()].copy_from_slice(&900u64.to_ne_bytes());
    v[FORK_BY_INO.range()].copy_from_slice(&77u64.to_ne_bytes());
    v[FORK_BY_DEV.range()].copy_from_slice(&((8u32 << 20) | 1).to_ne_bytes());
    let r = record(&v);
    assert_eq!(
        r,
        ForkRecord {
            pid: 42,
            start_ns: 1000,
            by: 7,
            by_start_ns: 900,
            by_file: (libc::makedev(8, 1), 77),
            inherited: false,
        }
    );
    v[FORK_FLAGS.range()].copy_from_slice(&1u32.to_ne_bytes());
    assert!(record(&v).inherited);
}

#[test]
fn a_forker_s_image_is_what_the_child_gets_and_its_exe_file_only_marked_inherited() {
    let ops = ops();
    let lookup = ops
        .iter()
        .position(|&(_, op)| op == Op::Call(Helper::MapLookupElem))
        .expect("the forker's image is looked up");
    // Looked up in the image map (fd 9) under the forker's tgid, before mm->exe_file is read.
    assert!(ops[..lookup]
        .iter()
        .any(|&(_, op)| op == Op::LoadMapFd { dst: R1, fd: 9 }));
    let exe_file = ops
        .iter()
        .position(|&(_, op)| matches!(op, Op::AddImm { dst: R3, imm: 400 }))
        .expect("mm->exe_file read");
    assert!(lookup < exe_file);
    // The inherited mark is stored on the path that reads mm->exe_file, before it.
    let mark = ops
        .iter()
        .position(|&(_, op)| {
            op == Op::StoreImm {
                size: W,
                dst: FP,
                off: at(FORK_FLAGS),
                imm: IMAGE_INHERITED,
            }
        })
        .expect("marked");
    assert!(lookup < mark && mark < exe_file);
    // Two updates: the fork record (fd 7), then the child's image (fd 9).
    let updates: Vec<usize> = ops
        .iter()
        .enumerate()
        .filter(|(_, &(_, op))| op == Op::Call(Helper::MapUpdateElem))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(updates.len(), 2);
    assert_eq!(ops[updates[0] - 6].1, Op::LoadMapFd { dst: R1, fd: 7 });
    assert_eq!(ops[updates[1] - 6].1, Op::LoadMapFd { dst: R1, fd: 9 });
}

#[test]
fn the_free_program_deletes_only_the_entry_of_the_process_freed() {
    let task = crate::attribution::bpf::task::tests::TASK_LIKE;
    let ops = disassemble(&free_program(&task, 9).unwrap());
    let delete = ops
        .iter()
        .position(|&(_, op)| op == Op::Call(Helper::MapDeleteElem))
        .expect("a delete");
    // Before it: the leader check (a subtraction of pid from tgid) and the start comparison
    // (a second subtraction, of the entry's start), each jumping out on a difference.
    let subs: Vec<usize> = ops[..delete]
        .iter()
        .enumerate()
        .filter(|(_, &(_, op))| matches!(op, Op::Sub { .. }))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(subs.len(), 2);
    for s in subs {
        assert!(matches!(ops[s + 1].1, Op::Jump { imm: 0, .. }));
    }
    assert_eq!(ops.last().map(|&(_, op)| op), Some(Op::Exit));
}
