use super::*;
use crate::attribution::bpf::asm::{disassemble, Helper, Op, B, DW, FP, R0, R1, R3};
use crate::attribution::bpf::btf::Btf;
use crate::attribution::bpf::frame::listing::{
    assert_files_the_current_process, outputs, refusal_counts, stack_writes, then_calls, updates,
};
use crate::attribution::bpf::layout::{KEY_FIELDS, KEY_PAD};
use crate::attribution::connect_hook::BTF_NAMES;
use crate::attribution::ring_records::{RingFds, RECORD_LEN};

const TASK: TaskOffsets = crate::attribution::bpf::task::tests::TASK_LIKE;
const WAKE_AT: i32 = 1 << 18;
const RING: RingFds = RingFds {
    ring: 8,
    refused: 10,
    wake_at: WAKE_AT,
};
/// The UDP records' ring, in the programs that file UDP records.
const UDP_RING: RingFds = RingFds {
    ring: 12,
    refused: 11,
    wake_at: 1 << 17,
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
    let udp = disassemble(&udp_program(&offsets(), &TASK, 532, 540, UDP_RING).unwrap());
    for (ops, maps) in [(&tcp, &[7, 7, 7, 10, 8, 8][..]), (&udp, &[11, 12, 12][..])] {
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
    let udp = disassemble(&udp_program(&offsets(), &TASK, 532, 540, UDP_RING).unwrap());
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
    let udp = disassemble(&udp_program(&offsets(), &TASK, 532, 540, UDP_RING).unwrap());
    for ops in [&tcp, &udp] {
        assert_files_the_current_process(ops);
    }
}

#[test]
fn the_records_are_filed_under_their_keys_in_their_maps() {
    let (val, sk) = (i32::from(VAL), i32::from(SK));
    let tcp = disassemble(&program(&offsets(), &TASK, 7, RING).unwrap());
    let udp = disassemble(&udp_program(&offsets(), &TASK, 532, 540, UDP_RING).unwrap());
    // TCP: the note under the socket's address in pending (7), then value and key as one
    // record into the ring (8); UDP: under the tuple only.
    assert_eq!(updates(&tcp), [(7, sk, val)]);
    assert_eq!(outputs(&tcp), [(8, val, RECORD_LEN as i32, WAKE_AT)]);
    // The record carries the ring's refusal count, which a refused record adds to (10).
    assert_eq!(refusal_counts(&tcp), [10]);
    // UDP: into its own ring, with its own count, by one output that the tuple's record and
    // the ping and raw sockets' bare records (which jump to it) share; no map is written.
    assert_eq!(outputs(&udp), [(12, val, RECORD_LEN as i32, 1 << 17)]);
    assert_eq!(refusal_counts(&udp), [11]);
    assert!(updates(&udp).is_empty());
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
    let udp = udp_program(&offsets(), &TASK, 532, 540, UDP_RING).unwrap();
    for (title, p) in [
        ("tcp: program(&offsets(), &TASK, 7, RING)", tcp),
        (
            "udp: udp_program(&offsets(), &TASK, 532, 540, UDP_RING)",
            udp,
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

/// The map fds each program loads.
fn maps_of(ops: &[(usize, Op)]) -> Vec<i32> {
    ops.iter()
        .filter_map(|&(_, op)| match op {
            Op::LoadMapFd { fd, .. } => Some(fd),
            _ => None,
        })
        .collect()
}

/// A flood of datagrams fills the UDP records' ring, never the TCP one: every program that
/// files a UDP record (the `sock_send_length` one and the send hook's) uses only the UDP
/// ring and its count, and the TCP program never touches them.
#[test]
fn udp_records_go_to_their_own_ring_and_tcp_records_to_theirs() {
    let udp = disassemble(&udp_program(&offsets(), &TASK, 532, 540, UDP_RING).unwrap());
    assert_eq!(maps_of(&udp), [11, 12, 12]);
    for family in [crate::flow::Family::Ipv4, crate::flow::Family::Ipv6] {
        let ns = crate::attribution::send_hook::Netns { cookie: 1, inum: 2 };
        let send = disassemble(
            &crate::attribution::send_hook::program(family, ns, &TASK, UDP_RING).unwrap(),
        );
        assert_eq!(maps_of(&send), [11, 12, 12]);
        assert_eq!(
            outputs(&send),
            [(12, i32::from(VAL), RECORD_LEN as i32, 1 << 17)]
        );
    }
    let tcp = disassemble(&program(&offsets(), &TASK, 7, RING).unwrap());
    assert!(maps_of(&tcp).iter().all(|fd| ![11, 12].contains(fd)));
}
