//! The kernel-side half of the connect records: reading the kernel's own type information,
//! assembling small eBPF programs, and the `bpf()` system calls that load them.

pub mod btf;
