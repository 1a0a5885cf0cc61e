use super::*;
use crate::attribution::bpf::asm::{disassemble, Op};
use crate::attribution::bpf::btf::tests::Builder;

const TASK: TaskOffsets = crate::attribution::bpf::task::tests::TASK_LIKE;

fn offsets() -> ExecOffsets {
    ExecOffsets {
        task: TASK,
        arg_start: 300,
        arg_end: 308,
        exe_file: 400,
        mnt_ns: 24,
        mnt_inum: 8,
        bprm_file: 64,
        bprm_interp: 96,
        f_inode: 32,
        i_ino: 64,
        i_sb: 40,
        s_dev: 16,
    }
}

fn ops() -> Vec<(usize, Op)> {
    disassemble(&program(&offsets(), 5, 6, 8).unwrap())
}

#[test]
fn the_program_jumps_forward_only_knows_every_op_and_ends_in_exit() {
    crate::attribution::bpf::frame::listing::assert_forward_only(&ops());
}

#[test]
fn the_header_is_zeroed_before_anything_is_read_into_it() {
    let ops = ops();
    let first_read = ops
        .iter()
        .position(|&(_, op)| op == Op::Call(Helper::ProbeReadKernel))
        .unwrap();
    let zeroed: Vec<i16> = ops[..first_read]
        .iter()
        .filter_map(|&(_, op)| match op {
            Op::StoreImm {
                size: DW,
                dst: R8,
                off,
                imm: 0,
            } => Some(off),
            _ => None,
        })
        .collect();
    let want: Vec<i16> = (0..EXEC_HEADER_LEN as i16).step_by(8).collect();
    assert_eq!(zeroed, want);
}

#[test]
fn argv_is_read_with_a_length_bounded_to_its_field() {
    let ops = ops();
    let user = ops
        .iter()
        .position(|&(_, op)| op == Op::Call(Helper::ProbeReadUser))
        .unwrap();
    // The length comes from r9, which a `> 4096` jump bounds (else it is set to 4096).
    assert!(ops[..user].iter().any(|&(_, op)| matches!(
        op,
        Op::Jump { cmp: asm::Cmp::Gt, dst: R9, imm, .. } if imm == EXEC_ARGS.len as i32
    )));
    assert!(ops[..user]
        .iter()
        .rev()
        .take(4)
        .any(|&(_, op)| op == Op::Mov { dst: R2, src: R9 }));
    assert!(ops[..user].iter().rev().take(6).any(|&(_, op)| op
        == Op::AddImm {
            dst: R1,
            imm: EXEC_ARGS.off as i32
        }));
}

#[test]
fn the_record_is_filed_from_the_scratch_slot_under_the_tgid() {
    let ops = ops();
    let update = ops
        .iter()
        .position(|&(_, op)| op == Op::Call(Helper::MapUpdateElem))
        .unwrap();
    let before: Vec<Op> = ops[update - 7..update].iter().map(|&(_, op)| op).collect();
    assert_eq!(
        before[0],
        Op::LoadMem {
            size: W,
            dst: R1,
            src: R8,
            off: EXEC_TGID.off as i16
        }
    );
    assert_eq!(before[2], Op::LoadMapFd { dst: R1, fd: 6 });
    assert_eq!(before[5], Op::Mov { dst: R3, src: R8 });
    assert_eq!(before[6], Op::MovImm { dst: R4, imm: 0 });
}

fn value(pid: u32, start: u64, path: &str, args: &[u8]) -> Box<[u8; EXEC_LEN]> {
    let mut v = Box::new([0u8; EXEC_LEN]);
    v[EXEC_TGID.range()].copy_from_slice(&pid.to_ne_bytes());
    v[EXEC_PPID.range()].copy_from_slice(&1u32.to_ne_bytes());
    v[EXEC_START.range()].copy_from_slice(&start.to_ne_bytes());
    v[EXEC_DEV.range()].copy_from_slice(&((8u32 << 20) | 1).to_ne_bytes());
    v[EXEC_INO.range()].copy_from_slice(&77u64.to_ne_bytes());
    v[EXEC_COMM.off..EXEC_COMM.off + 4].copy_from_slice(b"curl");
    v[EXEC_PATH.off..EXEC_PATH.off + path.len()].copy_from_slice(path.as_bytes());
    let n = args.len().min(EXEC_ARGS.len);
    v[EXEC_ARGS.off..EXEC_ARGS.off + n].copy_from_slice(&args[..n]);
    v[EXEC_ARGS_LEN.range()].copy_from_slice(&(args.len() as u32).to_ne_bytes());
    v
}

#[test]
fn a_record_reads_back_with_its_path_args_and_device() {
    let r = record(&value(42, 9, "/usr/bin/curl", b"curl\0-s\0https://x\0"));
    assert_eq!(r.pid, 42);
    assert_eq!(r.ppid, 1);
    assert_eq!(r.start_ns, 9);
    assert_eq!(r.comm, "curl");
    assert_eq!(r.path.as_deref(), Some("/usr/bin/curl"));
    assert_eq!(r.args, ["curl", "-s", "https://x"]);
    // 8:1 as stat reports it.
    assert_eq!(r.file, (libc::makedev(8, 1), 77));
}

#[test]
fn a_relative_path_is_not_a_path_and_a_lying_length_is_cut() {
    let mut v = value(42, 9, "./x", b"x\0");
    v[EXEC_ARGS_LEN.range()].copy_from_slice(&u32::MAX.to_ne_bytes());
    let r = record(&v);
    assert_eq!(r.path, None);
    // Cut at the field: 4096 bytes of "x\0\0\0...", split as a command line would be.
    assert_eq!(r.args.first().map(String::as_str), Some("x"));
}

#[test]
fn offsets_from_a_kernel_like_btf() {
    let mut b = Builder::new();
    crate::attribution::bpf::task::tests::task_like(&mut b);
    let u32t = b.int("unsigned int", 4);
    let u64t = b.int("unsigned long", 8);
    let p = b.ptr(u64t);
    let anon = b.composite(
        false,
        "",
        16,
        &[("arg_start", u64t, 0), ("arg_end", u64t, 8)],
    );
    b.composite(
        false,
        "mm_struct",
        1024,
        &[("", anon, 300), ("exe_file", p, 400)],
    );
    b.composite(false, "nsproxy", 64, &[("mnt_ns", p, 24)]);
    let ns = b.composite(false, "ns_common", 24, &[("inum", u32t, 16)]);
    b.composite(false, "mnt_namespace", 128, &[("ns", ns, 0)]);
    b.composite(
        false,
        "linux_binprm",
        512,
        &[("file", p, 64), ("interp", p, 96)],
    );
    b.composite(false, "file", 256, &[("f_inode", p, 32)]);
    b.composite(false, "inode", 600, &[("i_sb", p, 40), ("i_ino", u64t, 64)]);
    b.composite(false, "super_block", 1500, &[("s_dev", u32t, 16)]);
    let names: Vec<&str> = BTF_NAMES
        .iter()
        .chain(crate::attribution::bpf::task::BTF_NAMES)
        .copied()
        .collect();
    let btf = Btf::load(std::io::Cursor::new(b.build()), &names).unwrap();
    let mut want = offsets();
    want.arg_start = 300;
    want.arg_end = 308;
    want.mnt_inum = 16;
    assert_eq!(ExecOffsets::from_btf(&btf).unwrap(), want);
}

#[test]
fn the_image_entry_takes_the_record_s_file_start_and_time() {
    let ops: Vec<Op> = ops().into_iter().map(|(_, op)| op).collect();
    // Each image field is loaded from the record's (r8) and stored whole into the entry.
    for (from, to) in [
        (EXEC_START, IMAGE_START),
        (EXEC_INO, IMAGE_INO),
        (EXEC_DEV, IMAGE_DEV),
        (EXEC_AT, IMAGE_EXEC),
    ] {
        let copied = ops.windows(2).any(|w| {
            w[0] == Op::LoadMem {
                size: if from.len == 8 { DW } else { W },
                dst: R1,
                src: R8,
                off: from.off as i16,
            } && w[1]
                == Op::StoreMem {
                    size: if to.len == 8 { DW } else { W },
                    dst: FP,
                    off: IMG + to.off as i16,
                    src: R1,
                }
        });
        assert!(copied, "{to:?} is not copied from {from:?}");
    }
}
