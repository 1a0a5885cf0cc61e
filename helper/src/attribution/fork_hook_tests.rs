use super::*;
use crate::attribution::bpf::asm::{disassemble, Op, R8};
use crate::attribution::bpf::frame::listing::stack_writes;
use crate::attribution::bpf::layout::FORK_PAD;

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
    disassemble(&program(&offsets(), 7).unwrap())
}

#[test]
fn the_program_jumps_forward_only_knows_every_op_and_ends_in_exit() {
    let ops = ops();
    let len = ops.last().map_or(0, |&(at, _)| at + 1);
    assert_eq!(ops.last().map(|&(_, op)| op), Some(Op::Exit));
    for &(at, op) in &ops {
        assert!(!matches!(op, Op::Unknown(_)), "unknown op at {at}");
        assert!(
            !matches!(op, Op::LoadMem { src: R8, .. }),
            "r8 is not set here"
        );
        if let Op::Ja { off } | Op::Jump { off, .. } = op {
            assert!(off >= 0, "backward jump at {at}");
            assert!(at + 1 + (off as usize) < len, "jump past the end at {at}");
        }
    }
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
    assert_eq!(zeroed, (REC..0).step_by(8).collect::<Vec<_>>());
    // Every write lands in the key, the pointer word or one field of the record, whole.
    let fields = [
        FORK_TGID,
        FORK_BY,
        FORK_START,
        FORK_BY_START,
        FORK_BY_INO,
        FORK_BY_DEV,
    ];
    for (off, len) in stack_writes(&ops).into_iter().skip(zeroed.len()) {
        let in_field = fields.iter().any(|f| off == at(*f) && len == f.len);
        assert!(
            in_field || (off, len) == (KEY, 4) || (off, len) == (-16, 8),
            "a write of {len} at {off}"
        );
    }
    assert!(!stack_writes(&ops).contains(&(at(FORK_PAD), FORK_PAD.len)));
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
        }
    );
}
