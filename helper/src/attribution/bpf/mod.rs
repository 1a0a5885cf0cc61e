//! The kernel-side half of the connect records: reading the kernel's own type information,
//! assembling small eBPF programs, and the `bpf()` system calls that load them.
//!
//! - [`btf`]: where a field of a kernel structure sits, from the running kernel's BTF.
//! - [`asm`]: the instruction assembler the programs are written with, and its
//!   disassembler, which the tests read the programs back with.
//! - [`layout`]: the record's key and value fields, one table for the program that writes
//!   them and the helper that builds keys and decodes values.
//! - [`frame`]: what every record program writes alike (its stack, the current process, the
//!   map update).
//! - `sys`: the `bpf()` system calls (maps, program load, tracepoint attach); the hook's
//!   only unsafe code.
//!
//! The hook itself, which puts these together, is `attribution::connect_hook`. It imports
//! these files and none of them imports it; that is why the record's layout and frame live
//! here, where the program generator and the lookups reach them without a cycle.

pub mod asm;
pub mod btf;
pub mod frame;
pub mod layout;
pub(crate) mod sys;
