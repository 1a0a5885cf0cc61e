//! The kernel-side half of the connect records: reading the kernel's own type information,
//! assembling small eBPF programs, and the `bpf()` system calls that load them.
//!
//! - [`btf`]: where a field of a kernel structure sits, from the running kernel's BTF.
//! - [`asm`]: the instruction assembler the programs are written with, and its
//!   disassembler, which the tests read the programs back with.
//! - [`layout`]: the record's key and value fields, one table for the programs that write
//!   them and the helper that builds keys and decodes values.
//! - [`frame`]: what every record program writes alike (its stack, the current process, the
//!   map update).
//! - [`task`]: where `struct task_struct`'s fields sit (the process's start time, its
//!   parent), for the records and the exec hook.
//! - `sys`: the `bpf()` system calls (maps, program load, tracepoint and cgroup attach), and
//!   `ring`: a ring buffer map read through `mmap`; the hooks' only unsafe code.
//!
//! The hooks themselves, which put these together, are `attribution::connect_hook` and
//! `attribution::send_hook`. They import these files and none of them imports either; that
//! is why the record's layout and frame live here, where the program generators and the
//! lookups all reach them without a cycle.

pub mod asm;
pub mod btf;
pub mod frame;
pub mod layout;
pub(crate) mod ring;
pub(crate) mod sys;
pub mod task;
