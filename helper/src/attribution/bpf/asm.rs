//! A tiny eBPF assembler, and the disassembler that reads its output back.
//!
//! The connect hook's programs are a few hundred instructions, written in Rust because
//! compiling eBPF from C or Rust needs a toolchain (clang, bpf-linker) that building this
//! crate must not. The assembler has what one straight program with forward jumps needs and
//! no more: each builder method is one instruction of linux/bpf.h, and [`Asm::finish`]
//! resolves the jumps to labels.
//!
//! Every instruction the builder writes is an [`Op`], which [`Op::encode`] turns into the
//! kernel's 8-byte slots and [`disassemble`] turns back; so a test says "stores the tgid at
//! this offset" or "calls `get_current_pid_tgid`", not "has an opcode 0x63". Anything the
//! disassembler does not know comes back as [`Op::Unknown`], never as a guess.

use std::collections::HashMap;

/// A register, r0 to r10. r10 is the read-only frame pointer; the stack is below it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Reg(u8);

impl std::fmt::Debug for Reg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "R{}", self.0)
    }
}

pub const R0: Reg = Reg(0);
pub const R1: Reg = Reg(1);
pub const R2: Reg = Reg(2);
pub const R3: Reg = Reg(3);
pub const R4: Reg = Reg(4);
pub const R5: Reg = Reg(5);
pub const R6: Reg = Reg(6);
pub const R7: Reg = Reg(7);
pub const R8: Reg = Reg(8);
pub const R9: Reg = Reg(9);
/// The frame pointer, r10.
pub const FP: Reg = Reg(10);

impl Reg {
    fn from_number(n: u8) -> Option<Reg> {
        (n <= 10).then_some(Reg(n))
    }
}

/// The width of a memory access.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Size {
    /// 1 byte.
    B,
    /// 2 bytes.
    H,
    /// 4 bytes.
    W,
    /// 8 bytes.
    DW,
}

pub const B: Size = Size::B;
pub const H: Size = Size::H;
pub const W: Size = Size::W;
pub const DW: Size = Size::DW;

impl Size {
    pub fn bytes(self) -> usize {
        match self {
            Size::B => 1,
            Size::H => 2,
            Size::W => 4,
            Size::DW => 8,
        }
    }

    fn code(self) -> u8 {
        match self {
            Size::W => 0x00,
            Size::H => 0x08,
            Size::B => 0x10,
            Size::DW => 0x18,
        }
    }

    fn from_code(code: u8) -> Size {
        match code & 0x18 {
            0x00 => Size::W,
            0x08 => Size::H,
            0x10 => Size::B,
            _ => Size::DW,
        }
    }
}

/// The kernel helpers the programs call, by their ids (linux/bpf.h, `enum bpf_func_id`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Helper {
    MapLookupElem = 1,
    MapUpdateElem = 2,
    MapDeleteElem = 3,
    GetCurrentPidTgid = 14,
    GetCurrentUidGid = 15,
    GetCurrentComm = 16,
    GetCurrentTask = 35,
    ProbeReadUser = 112,
    ProbeReadKernel = 113,
    ProbeReadKernelStr = 115,
    GetNetnsCookie = 122,
    KtimeGetBootNs = 125,
    SkcToTcpSock = 137,
    GetCurrentTaskBtf = 158,
    RingbufOutput = 130,
    RingbufQuery = 134,
}

impl Helper {
    const ALL: [Helper; 16] = [
        Helper::RingbufOutput,
        Helper::RingbufQuery,
        Helper::MapLookupElem,
        Helper::MapUpdateElem,
        Helper::MapDeleteElem,
        Helper::GetCurrentPidTgid,
        Helper::GetCurrentUidGid,
        Helper::GetCurrentComm,
        Helper::GetCurrentTask,
        Helper::ProbeReadUser,
        Helper::ProbeReadKernel,
        Helper::ProbeReadKernelStr,
        Helper::GetNetnsCookie,
        Helper::KtimeGetBootNs,
        Helper::SkcToTcpSock,
        Helper::GetCurrentTaskBtf,
    ];

    pub fn id(self) -> i32 {
        self as i32
    }

    fn from_id(id: i32) -> Option<Helper> {
        Helper::ALL.into_iter().find(|h| h.id() == id)
    }
}

/// A conditional jump's comparison, of `dst` with an immediate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cmp {
    Eq,
    Ne,
    /// Signed `<=`.
    Sle,
    /// Unsigned `>`: what bounds a length for the verifier.
    Gt,
}

impl Cmp {
    const ALL: [Cmp; 4] = [Cmp::Eq, Cmp::Ne, Cmp::Sle, Cmp::Gt];

    fn code(self) -> u8 {
        match self {
            Cmp::Eq => JEQ,
            Cmp::Ne => JNE,
            Cmp::Sle => JSLE,
            Cmp::Gt => JGT,
        }
    }
}

/// One instruction, as the builder means it. Offsets of jumps count instruction slots from
/// the next one; a 64-bit immediate load takes two slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    /// `dst = src`
    Mov {
        dst: Reg,
        src: Reg,
    },
    /// `dst = imm`
    MovImm {
        dst: Reg,
        imm: i32,
    },
    /// `dst += imm`
    AddImm {
        dst: Reg,
        imm: i32,
    },
    /// `dst -= src`
    Sub {
        dst: Reg,
        src: Reg,
    },
    /// `dst >>= imm` (logical)
    RshImm {
        dst: Reg,
        imm: i32,
    },
    /// `dst = *(size *)(src + off)`
    LoadMem {
        size: Size,
        dst: Reg,
        src: Reg,
        off: i16,
    },
    /// `*(size *)(dst + off) = src`
    StoreMem {
        size: Size,
        dst: Reg,
        off: i16,
        src: Reg,
    },
    /// `*(size *)(dst + off) = imm`
    StoreImm {
        size: Size,
        dst: Reg,
        off: i16,
        imm: i32,
    },
    Call(Helper),
    Exit,
    /// A map's fd as a 64-bit immediate, which the kernel turns into the map's address.
    LoadMapFd {
        dst: Reg,
        fd: i32,
    },
    /// `goto +off`
    Ja {
        off: i16,
    },
    /// `if dst <cmp> imm goto +off`, on the low 32 bits if `jmp32`.
    Jump {
        cmp: Cmp,
        jmp32: bool,
        dst: Reg,
        imm: i32,
        off: i16,
    },
    /// `lock *(u64 *)(dst + off) += src` (`BPF_ATOMIC`, `BPF_ADD`, 64 bits; `BPF_XADD`
    /// since 3.18): a count no two CPUs can lose an increment of, and that never goes back.
    AtomicAdd {
        dst: Reg,
        off: i16,
        src: Reg,
    },
    /// An instruction slot this module does not write.
    Unknown(Insn),
}

// Instruction classes, sources, operations (linux/bpf_common.h, linux/bpf.h).
const LD: u8 = 0x00;
const LDX: u8 = 0x01;
const ST: u8 = 0x02;
const STX: u8 = 0x03;
const JMP: u8 = 0x05;
const JMP32: u8 = 0x06;
const ALU64: u8 = 0x07;
const MEM: u8 = 0x60;
const ATOMIC: u8 = 0xc0;
const IMM: u8 = 0x00;
const K: u8 = 0x00;
const X: u8 = 0x08;
const ADD: u8 = 0x00;
const SUB: u8 = 0x10;
const RSH: u8 = 0x70;
const MOV: u8 = 0xb0;
const JA: u8 = 0x00;
const JEQ: u8 = 0x10;
const JGT: u8 = 0x20;
const JNE: u8 = 0x50;
const JSLE: u8 = 0xd0;
const CALL: u8 = 0x80;
const EXIT: u8 = 0x90;
const PSEUDO_MAP_FD: u8 = 1;

/// One 8-byte instruction slot, as the kernel reads it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    code: u8,
    dst: u8,
    src: u8,
    off: i16,
    imm: i32,
}

impl Insn {
    fn new(code: u8, dst: Reg, src: Reg, off: i16, imm: i32) -> Insn {
        Insn {
            code,
            dst: dst.0,
            src: src.0,
            off,
            imm,
        }
    }

    pub fn encode(self) -> [u8; 8] {
        let mut b = [0u8; 8];
        b[0] = self.code;
        b[1] = (self.dst & 0x0f) | (self.src << 4);
        b[2..4].copy_from_slice(&self.off.to_le_bytes());
        b[4..8].copy_from_slice(&self.imm.to_le_bytes());
        b
    }

    /// The op of a one-slot instruction ([`disassemble`] pairs the two-slot ones).
    fn decode(self) -> Op {
        let reg = Reg::from_number;
        let unknown = Op::Unknown(self);
        let (Some(dst), Some(src)) = (reg(self.dst), reg(self.src)) else {
            return unknown;
        };
        let (off, imm) = (self.off, self.imm);
        let size = Size::from_code(self.code);
        let zero_imm = imm == 0;
        match self.code {
            c if c == ALU64 | MOV | X && off == 0 && zero_imm => Op::Mov { dst, src },
            c if c == ALU64 | MOV | K && off == 0 && src == R0 => Op::MovImm { dst, imm },
            c if c == ALU64 | ADD | K && off == 0 && src == R0 => Op::AddImm { dst, imm },
            c if c == ALU64 | SUB | X && off == 0 && zero_imm => Op::Sub { dst, src },
            c if c == ALU64 | RSH | K && off == 0 && src == R0 => Op::RshImm { dst, imm },
            c if c & !0x18 == LDX | MEM && zero_imm => Op::LoadMem {
                size,
                dst,
                src,
                off,
            },
            c if c & !0x18 == STX | MEM && zero_imm => Op::StoreMem {
                size,
                dst,
                off,
                src,
            },
            c if c & !0x18 == ST | MEM && src == R0 => Op::StoreImm {
                size,
                dst,
                off,
                imm,
            },
            c if c == STX | ATOMIC | DW.code() && zero_imm => Op::AtomicAdd { dst, off, src },
            c if c == JMP | CALL && dst == R0 && src == R0 && off == 0 => {
                Helper::from_id(imm).map_or(unknown, Op::Call)
            }
            c if c == JMP | EXIT && dst == R0 && src == R0 && off == 0 && zero_imm => Op::Exit,
            c if c == JMP | JA && dst == R0 && src == R0 && zero_imm => Op::Ja { off },
            c => {
                let (class, jmp32) = (c & 0x07, c & 0x07 == JMP32);
                let cmp = Cmp::ALL.into_iter().find(|m| m.code() | K == c & 0xf8);
                match cmp {
                    Some(cmp) if (class == JMP || jmp32) && src == R0 => Op::Jump {
                        cmp,
                        jmp32,
                        dst,
                        imm,
                        off,
                    },
                    _ => unknown,
                }
            }
        }
    }
}

impl Op {
    /// The instruction slots: the second only for a 64-bit immediate load.
    pub fn encode(self) -> (Insn, Option<Insn>) {
        let one = |code, dst, src, off, imm| (Insn::new(code, dst, src, off, imm), None);
        match self {
            Op::Mov { dst, src } => one(ALU64 | MOV | X, dst, src, 0, 0),
            Op::MovImm { dst, imm } => one(ALU64 | MOV | K, dst, R0, 0, imm),
            Op::AddImm { dst, imm } => one(ALU64 | ADD | K, dst, R0, 0, imm),
            Op::Sub { dst, src } => one(ALU64 | SUB | X, dst, src, 0, 0),
            Op::RshImm { dst, imm } => one(ALU64 | RSH | K, dst, R0, 0, imm),
            Op::LoadMem {
                size,
                dst,
                src,
                off,
            } => one(LDX | MEM | size.code(), dst, src, off, 0),
            Op::StoreMem {
                size,
                dst,
                off,
                src,
            } => one(STX | MEM | size.code(), dst, src, off, 0),
            Op::StoreImm {
                size,
                dst,
                off,
                imm,
            } => one(ST | MEM | size.code(), dst, R0, off, imm),
            Op::AtomicAdd { dst, off, src } => one(STX | ATOMIC | DW.code(), dst, src, off, 0),
            Op::Call(helper) => one(JMP | CALL, R0, R0, 0, helper.id()),
            Op::Exit => one(JMP | EXIT, R0, R0, 0, 0),
            Op::LoadMapFd { dst, fd } => {
                let mut first = Insn::new(LD | IMM | DW.code(), dst, R0, 0, fd);
                first.src = PSEUDO_MAP_FD;
                (first, Some(Insn::new(0, R0, R0, 0, 0)))
            }
            Op::Ja { off } => one(JMP | JA, R0, R0, off, 0),
            Op::Jump {
                cmp,
                jmp32,
                dst,
                imm,
                off,
            } => {
                let class = if jmp32 { JMP32 } else { JMP };
                one(class | cmp.code() | K, dst, R0, off, imm)
            }
            Op::Unknown(insn) => (insn, None),
        }
    }
}

/// The program's ops, each with the slot it starts at (the slot a jump's offset counts from).
pub fn disassemble(insns: &[Insn]) -> Vec<(usize, Op)> {
    let mut out = Vec::with_capacity(insns.len());
    let mut at = 0;
    while let Some(&insn) = insns.get(at) {
        let wide = insn.code == LD | IMM | DW.code() && insn.src == PSEUDO_MAP_FD;
        match (wide, insns.get(at + 1), Reg::from_number(insn.dst)) {
            (true, Some(&next), Some(dst))
                if next == Insn::new(0, R0, R0, 0, 0) && insn.off == 0 =>
            {
                out.push((at, Op::LoadMapFd { dst, fd: insn.imm }));
                at += 2;
            }
            _ => {
                out.push((at, insn.decode()));
                at += 1;
            }
        }
    }
    out
}

/// A program being written: ops in order, labels, and the jumps still to resolve.
#[derive(Default)]
pub struct Asm {
    insns: Vec<Insn>,
    labels: HashMap<&'static str, usize>,
    jumps: Vec<(usize, &'static str)>,
}

impl Asm {
    fn op(&mut self, op: Op) -> &mut Self {
        let (first, second) = op.encode();
        self.insns.push(first);
        self.insns.extend(second);
        self
    }
    pub fn mov(&mut self, dst: Reg, src: Reg) -> &mut Self {
        self.op(Op::Mov { dst, src })
    }
    pub fn mov_imm(&mut self, dst: Reg, imm: i32) -> &mut Self {
        self.op(Op::MovImm { dst, imm })
    }
    pub fn add_imm(&mut self, dst: Reg, imm: i32) -> &mut Self {
        self.op(Op::AddImm { dst, imm })
    }
    pub fn sub(&mut self, dst: Reg, src: Reg) -> &mut Self {
        self.op(Op::Sub { dst, src })
    }
    pub fn rsh_imm(&mut self, dst: Reg, imm: i32) -> &mut Self {
        self.op(Op::RshImm { dst, imm })
    }
    /// `dst = *(size *)(src + off)`
    pub fn load(&mut self, size: Size, dst: Reg, src: Reg, off: i16) -> &mut Self {
        self.op(Op::LoadMem {
            size,
            dst,
            src,
            off,
        })
    }
    /// `*(size *)(dst + off) = src`
    pub fn store(&mut self, size: Size, dst: Reg, off: i16, src: Reg) -> &mut Self {
        self.op(Op::StoreMem {
            size,
            dst,
            off,
            src,
        })
    }
    /// `*(size *)(dst + off) = imm`
    pub fn store_imm(&mut self, size: Size, dst: Reg, off: i16, imm: i32) -> &mut Self {
        self.op(Op::StoreImm {
            size,
            dst,
            off,
            imm,
        })
    }
    /// `lock *(u64 *)(dst + off) += src`
    pub fn atomic_add(&mut self, dst: Reg, off: i16, src: Reg) -> &mut Self {
        self.op(Op::AtomicAdd { dst, off, src })
    }
    pub fn call(&mut self, helper: Helper) -> &mut Self {
        self.op(Op::Call(helper))
    }
    pub fn exit(&mut self) -> &mut Self {
        self.op(Op::Exit)
    }
    /// A map's fd as a 64-bit immediate, which the kernel turns into the map's address.
    pub fn load_map(&mut self, dst: Reg, fd: i32) -> &mut Self {
        self.op(Op::LoadMapFd { dst, fd })
    }
    fn jump(&mut self, op: Op, to: &'static str) -> &mut Self {
        self.jumps.push((self.insns.len(), to));
        self.op(op)
    }
    pub fn ja(&mut self, to: &'static str) -> &mut Self {
        self.jump(Op::Ja { off: 0 }, to)
    }
    fn jump_imm(
        &mut self,
        cmp: Cmp,
        jmp32: bool,
        dst: Reg,
        imm: i32,
        to: &'static str,
    ) -> &mut Self {
        let op = Op::Jump {
            cmp,
            jmp32,
            dst,
            imm,
            off: 0,
        };
        self.jump(op, to)
    }
    pub fn jeq_imm(&mut self, dst: Reg, imm: i32, to: &'static str) -> &mut Self {
        self.jump_imm(Cmp::Eq, false, dst, imm, to)
    }
    pub fn jne_imm(&mut self, dst: Reg, imm: i32, to: &'static str) -> &mut Self {
        self.jump_imm(Cmp::Ne, false, dst, imm, to)
    }
    /// Compares the low 32 bits only, so an immediate with the top bit set means itself.
    pub fn jne32_imm(&mut self, dst: Reg, imm: u32, to: &'static str) -> &mut Self {
        self.jump_imm(Cmp::Ne, true, dst, imm as i32, to)
    }
    /// Signed `<=` on the low 32 bits (an `int` argument).
    pub fn jsle32_imm(&mut self, dst: Reg, imm: i32, to: &'static str) -> &mut Self {
        self.jump_imm(Cmp::Sle, true, dst, imm, to)
    }
    /// Unsigned `>` on all 64 bits.
    pub fn jgt_imm(&mut self, dst: Reg, imm: i32, to: &'static str) -> &mut Self {
        self.jump_imm(Cmp::Gt, false, dst, imm, to)
    }
    pub fn label(&mut self, name: &'static str) -> &mut Self {
        self.labels.insert(name, self.insns.len());
        self
    }
    /// Resolves the jumps; `Err` names a label that was never placed or lies behind its jump
    /// (a bug here).
    pub fn finish(mut self) -> Result<Vec<Insn>, &'static str> {
        for (at, to) in std::mem::take(&mut self.jumps) {
            let target = *self.labels.get(to).ok_or(to)?;
            let rel = i16::try_from(target as i64 - at as i64 - 1).map_err(|_| to)?;
            if rel < 0 {
                return Err(to);
            }
            self.insns[at].off = rel;
        }
        Ok(self.insns)
    }
}

#[cfg(test)]
#[path = "asm_tests.rs"]
mod tests;
