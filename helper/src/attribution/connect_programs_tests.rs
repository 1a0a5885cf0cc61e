use super::*;
use crate::attribution::bpf::asm::{disassemble, Helper, Op, B, DW, FP, R0, R1, R3};
use crate::attribution::bpf::btf::Btf;
use crate::attribution::bpf::frame::listing::{
    assert_files_the_current_process, outputs, refusal_counts, stack_writes, then_calls, updates,
};
use crate::attribution::bpf::layout::{KEY_FIELDS, KEY_PAD};
use crate::attribution::connect_hook::BTF_NAMES;
use crate::attribution::tcp_records::{RingFds, RECORD_LEN};

const TASK: TaskOffsets = crate::attribution::bpf::task::tests::TASK_LIKE;
const RING: RingFds = RingFds {
    ring: 8,
    refused: 10,
};

fn offsets() -> Offsets {
    Offsets {
        family: 16,
        dport: 12,
        sport: 800,
        daddr: 0,
        rcv_saddr: 4,
        v6_daddr: 56,
        v6_rcv_saddr: 72,
        net: 48,
        ns_inum: 200,
    }
}

#[test]
fn the_programs_jump_forward_only_and_end_in_exit() {
    let tcp = disassemble(&program(&offsets(), &TASK, 7, RING).unwrap());
    let udp = disassemble(&udp_program(&offsets(), &TASK, 532, 540, 8, None).unwrap());
    for (ops, maps) in [(&tcp, &[7, 7, 7, 10, 8, 8][..]), (&udp, &[8, 8][..])] {
        let len = ops.last().map_or(0, |&(at, _)| at + 1);
        assert_eq!(ops.last().map(|&(_, op)| op), Some(Op::Exit));
        // Every slot is an instruction the assembler writes.
        assert!(ops.iter().all(|(_, op)| !matches!(op, Op::Unknown(_))));
        // Map fds sit in two-slot loads; every jump lands inside the program.
        let found: Vec<i32> = ops
            .iter()
            .filter_map(|&(_, op)| match op {
                Op::LoadMapFd { fd, .. } => Some(fd),
                _ => None,
            })
            .collect();
        assert_eq!(found, maps);
        for &(at, op) in ops.iter() {
            if let Op::Ja { off } | Op::Jump { off, .. } = op {
                let to = at as i64 + 1 + i64::from(off);
                assert!(off >= 0 && to < len as i64, "jump at {at} to {to}");
            }
        }
        // Every field offset the BTF gave is read: added to the base in r3, the
        // source of the probe read that follows.
        for off in [16, 12, 800, 0, 4, 56, 72, 48, 200] {
            let read_at = |i: usize| match ops[i].1 {
                Op::AddImm { dst: R3, imm } => imm == off,
                Op::Mov { dst: R3, .. } => off == 0,
                _ => false,
            };
            assert!(
                (0..ops.len()).any(|i| read_at(i) && then_calls(ops, i, Helper::ProbeReadKernel)),
                "no read at offset {off}"
            );
        }
    }
    // The protocol byte of the key: a constant for TCP, what the socket says for UDP.
    assert!(tcp.iter().any(|&(_, op)| op
        == Op::StoreImm {
            size: B,
            dst: FP,
            off: KEY_PROTO.at(KEY),
            imm: 6
        }));
    assert!(udp.iter().any(|&(_, op)| matches!(
        op,
        Op::StoreMem { size: B, dst: FP, off, .. } if off == KEY_PROTO.at(KEY)
    )));
    assert!(udp
        .iter()
        .any(|&(_, op)| op == Op::AddImm { dst: R3, imm: 532 }));
}

#[test]
fn the_programs_write_the_key_field_by_field_as_the_layout_says() {
    let tcp = disassemble(&program(&offsets(), &TASK, 7, RING).unwrap());
    let udp = disassemble(&udp_program(&offsets(), &TASK, 532, 540, 8, None).unwrap());
    for ops in [&tcp, &udp] {
        // First the whole frame is zeroed, so the padding is zero in every record.
        let zeroing = ops
            .iter()
            .take_while(|&&(_, op)| {
                matches!(
                    op,
                    Op::StoreImm {
                        size: DW,
                        dst: FP,
                        imm: 0,
                        ..
                    }
                )
            })
            .count();
        let zeroed: Vec<(i16, usize)> = stack_writes(&ops[..zeroing]);
        let frame: Vec<(i16, usize)> = (SK..0).step_by(8).map(|o| (o, 8)).collect();
        assert_eq!(zeroed, frame);
        assert!(KEY_PAD.at(KEY) >= SK);
        let mut written = Vec::new();
        for (off, len) in stack_writes(&ops[zeroing..]) {
            if !(KEY..0).contains(&off) {
                continue;
            }
            // Each write into the key falls inside one field, and never on the padding.
            let start = (off - KEY) as usize;
            let field = KEY_FIELDS
                .iter()
                .find(|(_, f)| f.range().contains(&start))
                .map(|&(name, f)| (name, f));
            let Some((name, f)) = field else {
                panic!("a write at key offset {start} is in no field");
            };
            assert!(
                start + len <= f.end(),
                "a write at {start}+{len} spills out of {name}"
            );
            assert_ne!(f, KEY_PAD, "the padding is written");
            written.push(name);
        }
        for (name, f) in KEY_FIELDS {
            assert!(
                f == KEY_PAD || written.contains(&name),
                "{name} is never written"
            );
        }
    }
}

#[test]
fn the_current_process_goes_into_the_value_fields() {
    let tcp = disassemble(&program(&offsets(), &TASK, 7, RING).unwrap());
    let udp = disassemble(&udp_program(&offsets(), &TASK, 532, 540, 8, None).unwrap());
    for ops in [&tcp, &udp] {
        assert_files_the_current_process(ops);
    }
}

#[test]
fn the_records_are_filed_under_their_keys_in_their_maps() {
    let (key, val, sk) = (i32::from(KEY), i32::from(VAL), i32::from(SK));
    let tcp = disassemble(&program(&offsets(), &TASK, 7, RING).unwrap());
    let udp = disassemble(&udp_program(&offsets(), &TASK, 532, 540, 8, None).unwrap());
    // TCP: the note under the socket's address in pending (7), then value and key as one
    // record into the ring (8); UDP: under the tuple only.
    assert_eq!(updates(&tcp), [(7, sk, val)]);
    assert_eq!(outputs(&tcp), [(8, val, RECORD_LEN as i32, WAKE_AT)]);
    // The record carries the ring's refusal count, which a refused record adds to (10).
    assert_eq!(refusal_counts(&tcp), [10]);
    assert!(outputs(&udp).is_empty());
    // UDP: under the tuple; ping and raw sockets under their bare key, in the same map.
    assert_eq!(updates(&udp), [(8, key, val), (8, key, val)]);
    // Leaving SYN_SENT, the note found in pending is copied whole into the value.
    let copied: Vec<(i16, usize)> = tcp
        .windows(2)
        .filter_map(|w| match (w[0].1, w[1].1) {
            (
                Op::LoadMem {
                    size: DW,
                    dst: R1,
                    src: R0,
                    off: from,
                },
                Op::StoreMem {
                    size: DW,
                    dst: FP,
                    off: to,
                    src: R1,
                },
            ) if to == VAL + from => Some((from, 8)),
            _ => None,
        })
        .collect();
    let words: Vec<(i16, usize)> = (0..VALUE_LEN as i16).step_by(8).map(|o| (o, 8)).collect();
    assert_eq!(copied, words);
}

/// The programs as text, one instruction a line in hex (its 8 bytes as the kernel reads
/// them), for [`the_programs_are_the_bytes_they_were`].
fn programs_as_hex() -> String {
    let mut out = String::new();
    let tcp = program(&offsets(), &TASK, 7, RING).unwrap();
    let udp = udp_program(&offsets(), &TASK, 532, 540, 8, None).unwrap();
    let marked = udp_program(&offsets(), &TASK, 532, 540, 8, Some(9)).unwrap();
    for (title, p) in [
        ("tcp: program(&offsets(), &TASK, 7, RING)", tcp),
        // Without port marks, as before there were any.
        ("udp: udp_program(&offsets(), &TASK, 532, 540, 8)", udp),
        (
            "udp: udp_program(&offsets(), &TASK, 532, 540, 8, Some(9))",
            marked,
        ),
    ] {
        out.push_str(&format!("# {title}\n"));
        for i in p {
            let hex: String = i.encode().iter().map(|b| format!("{b:02x}")).collect();
            out.push_str(&hex);
            out.push('\n');
        }
    }
    out
}

/// What the kernel loads is fixed here, byte for byte, for one set of offsets and map fds:
/// moving code between files must not change it. A deliberate change of a program
/// rewrites `testdata/connect_programs.hex` in the same commit.
#[test]
fn the_programs_are_the_bytes_they_were() {
    let golden = include_str!("testdata/connect_programs.hex");
    assert_eq!(programs_as_hex(), golden);
}

#[test]
fn offsets_from_a_kernel_like_btf() {
    let btf = Btf::load(
        std::io::Cursor::new(crate::attribution::bpf::btf::tests::sock_like()),
        BTF_NAMES,
    )
    .unwrap();
    assert_eq!(
        Offsets::from_btf(&btf).unwrap(),
        Offsets {
            ns_inum: 48,
            ..offsets()
        }
    );
}

/// The op indexes at which map `fd` is loaded into r1, for a helper call.
fn loads_of(ops: &[(usize, Op)], fd: i32) -> Vec<usize> {
    ops.iter()
        .enumerate()
        .filter(|&(_, &(_, op))| op == Op::LoadMapFd { dst: R1, fd })
        .map(|(i, _)| i)
        .collect()
}

/// The op indexes of the updates of map `fd`.
fn updates_of(ops: &[(usize, Op)], fd: i32) -> Vec<usize> {
    loads_of(ops, fd)
        .into_iter()
        .filter(|&i| {
            ops[i..]
                .iter()
                .take(7)
                .any(|&(_, op)| op == Op::Call(Helper::MapUpdateElem))
        })
        .collect()
}

#[test]
fn udp_records_mark_their_port_before_they_are_filed_and_tcp_records_do_not() {
    let marks = 9;
    let udp = disassemble(&udp_program(&offsets(), &TASK, 532, 540, 8, Some(marks)).unwrap());
    // One mark, for the connected-socket record (the tuple's), before its update; the ping
    // and raw sockets' bare records are looked up by their own keys, never through marks.
    let marked = loads_of(&udp, marks);
    let filed = updates_of(&udp, 8);
    assert_eq!(marked.len(), 1, "{udp:?}");
    assert_eq!(filed.len(), 2);
    let tuple_update = *filed
        .iter()
        .find(|&&u| u > marked[0])
        .expect("an update after");
    assert!(marked[0] < tuple_update);
    assert_eq!(
        udp[marked[0] + 3].1,
        Op::Call(Helper::MapLookupElem),
        "the mark's slot is looked up: {:?}",
        &udp[marked[0]..marked[0] + 4]
    );
    // One more, atomically, in the slot's first word (a key with a local address) or its
    // second (without).
    let written: Vec<Op> = udp[marked[0]..tuple_update]
        .iter()
        .map(|&(_, op)| op)
        .collect();
    assert!(written.contains(&Op::MovImm { dst: R1, imm: 1 }));
    for off in [0, 8] {
        assert!(written.contains(&Op::AtomicAdd {
            dst: R0,
            off,
            src: R1
        }));
    }
    assert!(!written
        .iter()
        .any(|op| matches!(op, Op::StoreMem { dst: R0, .. })));
    // And the send hook's programs, before their one update.
    for family in [crate::flow::Family::Ipv4, crate::flow::Family::Ipv6] {
        let ns = crate::attribution::send_hook::Netns { cookie: 1, inum: 2 };
        let send = disassemble(
            &crate::attribution::send_hook::program(family, ns, &TASK, 8, Some(marks)).unwrap(),
        );
        let (marked, filed) = (loads_of(&send, marks), updates_of(&send, 8));
        assert_eq!(marked.len(), 1);
        assert_eq!(filed.len(), 1);
        assert!(marked[0] < filed[0]);
    }
    // Without the marks map, no mark; TCP never.
    let plain = disassemble(&udp_program(&offsets(), &TASK, 532, 540, 8, None).unwrap());
    assert!(loads_of(&plain, marks).is_empty());
    let tcp = disassemble(&program(&offsets(), &TASK, 7, RING).unwrap());
    assert!(loads_of(&tcp, marks).is_empty());
}
