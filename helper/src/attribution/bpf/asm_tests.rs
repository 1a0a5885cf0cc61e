use super::*;

fn hex(insns: &[Insn]) -> Vec<String> {
    insns
        .iter()
        .map(|i| i.encode().iter().map(|b| format!("{b:02x}")).collect())
        .collect()
}

/// The encoding itself, checked against bytes written out by hand from linux/bpf.h, so
/// the disassembler cannot agree with a wrong assembler.
#[test]
fn instructions_encode_as_the_kernel_reads_them() {
    let mut a = Asm::default();
    a.mov(R1, FP) // r1 = r10
        .add_imm(R1, -48) // r1 += -48
        .load(DW, R6, R1, 8) // r6 = *(u64 *)(r1 + 8)
        .store(W, FP, -80, R0) // *(u32 *)(r10 - 80) = r0
        .store_imm(B, FP, -38, 6) // *(u8 *)(r10 - 38) = 6
        .atomic_add(R0, 8, R1) // lock *(u64 *)(r0 + 8) += r1
        .call(Helper::GetCurrentPidTgid)
        .jne32_imm(R8, 2, "end") // if w8 != 2 goto end
        .load_map(R1, 7)
        .label("end")
        .exit();
    assert_eq!(
        hex(&a.finish().unwrap()),
        [
            "bfa1000000000000",
            "07010000d0ffffff",
            "7916080000000000",
            "630ab0ff00000000",
            "720adaff06000000",
            "db10080000000000",
            "850000000e000000",
            "5608020002000000",
            "1811000007000000",
            "0000000000000000",
            "9500000000000000",
        ]
    );
}

/// Read back as ops, in the ops' own words (their `Debug`, the disassembler's listing).
#[test]
fn what_the_builder_writes_reads_back_as_the_same_ops() {
    let mut a = Asm::default();
    a.mov(R2, FP)
        .mov_imm(R4, 0)
        .add_imm(R2, -96)
        .rsh_imm(R0, 32)
        .load(H, R0, FP, -44)
        .store(DW, FP, -96, R6)
        .store_imm(DW, FP, -32, 0)
        .call(Helper::KtimeGetBootNs)
        .load_map(R1, 8)
        .jeq_imm(R0, 2, "end")
        .jne_imm(R0, 10, "end")
        .jne32_imm(R0, 0xffff_0000, "end")
        .jsle32_imm(R7, 0, "end")
        .sub(R2, R7)
        .jgt_imm(R2, 4096, "end")
        .call(Helper::ProbeReadUser)
        .ja("end")
        .label("end")
        .exit();
    let mut add = Asm::default();
    add.atomic_add(R0, 8, R1);
    assert_eq!(
        disassemble(&add.finish().unwrap()),
        [(
            0,
            Op::AtomicAdd {
                dst: R0,
                off: 8,
                src: R1
            }
        )]
    );
    let listing: Vec<String> = disassemble(&a.finish().unwrap())
        .into_iter()
        .map(|(at, op)| format!("{at}: {op:?}"))
        .collect();
    assert_eq!(
        listing,
        [
            "0: Mov { dst: R2, src: R10 }",
            "1: MovImm { dst: R4, imm: 0 }",
            "2: AddImm { dst: R2, imm: -96 }",
            "3: RshImm { dst: R0, imm: 32 }",
            "4: LoadMem { size: H, dst: R0, src: R10, off: -44 }",
            "5: StoreMem { size: DW, dst: R10, off: -96, src: R6 }",
            "6: StoreImm { size: DW, dst: R10, off: -32, imm: 0 }",
            "7: Call(KtimeGetBootNs)",
            "8: LoadMapFd { dst: R1, fd: 8 }",
            "10: Jump { cmp: Eq, jmp32: false, dst: R0, imm: 2, off: 7 }",
            "11: Jump { cmp: Ne, jmp32: false, dst: R0, imm: 10, off: 6 }",
            "12: Jump { cmp: Ne, jmp32: true, dst: R0, imm: -65536, off: 5 }",
            "13: Jump { cmp: Sle, jmp32: true, dst: R7, imm: 0, off: 4 }",
            "14: Sub { dst: R2, src: R7 }",
            "15: Jump { cmp: Gt, jmp32: false, dst: R2, imm: 4096, off: 2 }",
            "16: Call(ProbeReadUser)",
            "17: Ja { off: 0 }",
            "18: Exit",
        ]
    );
}

#[test]
fn the_map_load_takes_two_slots_and_jumps_count_both() {
    let mut a = Asm::default();
    a.ja("end").load_map(R1, 3).label("end").exit();
    let p = a.finish().unwrap();
    assert_eq!(p.len(), 4);
    assert_eq!(
        disassemble(&p),
        [
            (0, Op::Ja { off: 2 }),
            (1, Op::LoadMapFd { dst: R1, fd: 3 }),
            (3, Op::Exit)
        ]
    );
}

#[test]
fn unknown_slots_are_not_guessed() {
    let odd = [
        Insn::new(0xc3, R0, R1, 0, 0), // a 32-bit atomic add: never written here
        Insn::new(STX | ATOMIC | DW.code(), R0, R1, 0, 0xf1), // a compare-and-exchange
        Insn::new(JMP | CALL, R0, R0, 0, 9999),
        Insn::new(LD | IMM | DW.code(), R1, R0, 0, 5), // a plain 64-bit immediate
    ];
    for (_, op) in disassemble(&odd) {
        assert!(matches!(op, Op::Unknown(_)), "{op:?}");
    }
    let bad_reg = Insn {
        code: JMP | EXIT,
        dst: 12,
        src: 0,
        off: 0,
        imm: 0,
    };
    assert_eq!(disassemble(&[bad_reg]), [(0, Op::Unknown(bad_reg))]);
}

#[test]
fn jumps_to_missing_or_earlier_labels_are_refused() {
    let mut a = Asm::default();
    a.ja("nowhere").exit();
    assert_eq!(a.finish(), Err("nowhere"));
    let mut a = Asm::default();
    a.label("top").mov_imm(R0, 0).ja("top");
    assert_eq!(a.finish(), Err("top"));
}
