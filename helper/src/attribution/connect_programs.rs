//! The code of the record programs [`connect_hook`] loads: the TCP program on
//! `inet_sock_set_state` (where `sock_ops` is refused), the UDP program on
//! `sock_send_length`, and `file_tuple`, the tuple-and-file tail they share with the
//! `sock_ops` program ([`sock_ops`]). Plain values in, instructions out, tested by
//! disassembly (`connect_programs_tests.rs`); the kernel tests load them.
//!
//! [`connect_hook`]: crate::attribution::connect_hook
//! [`sock_ops`]: crate::attribution::sock_ops

use crate::attribution::bpf::asm;
use crate::attribution::bpf::frame::{
    current_process, delete_at, lookup_at, output, read, read_key, read_key_via, read_via,
    update_at, zero_stack, Pointer,
};
use crate::attribution::bpf::frame::{KEY, SK, TMP, VAL};
use crate::attribution::bpf::layout::{
    KEY_DADDR, KEY_DPORT, KEY_FAMILY, KEY_NETNS, KEY_PROTO, KEY_SADDR, KEY_SPORT, VALUE_LEN,
};
use crate::attribution::bpf::task::TaskOffsets;
use crate::attribution::connect_hook::Offsets;
use crate::attribution::record_key::{AF_INET, AF_INET6};
use crate::attribution::ring_records::RingFds;

const TCP_SYN_SENT: i32 = 2;
const IPPROTO_TCP: i32 = 6;
const IPPROTO_UDP: i32 = 17;
const IPPROTO_UDPLITE: i32 = 136;
const IPPROTO_SCTP: i32 = 132;
const IPPROTO_ICMP: i32 = 1;
const IPPROTO_ICMPV6: i32 = 58;
const SOCK_DGRAM: i32 = 2;
const SOCK_RAW: i32 = 3;

/// Reads the key of the socket at r6 (family, addresses, ports, namespace; the protocol byte
/// is the caller's) and files the stack's value and key into the ring `ring`
/// (`attribution::ring_records`); then returns `ret`. `p` says whether r6 is a typed
/// pointer, read with plain loads. Jumps to "out" for a family that is neither IPv4 nor
/// IPv6; defines "file", where a caller with its key on the stack may jump to file it, and
/// "out", which ends the program.
pub(crate) fn file_tuple(a: &mut asm::Asm, p: Pointer, o: &Offsets, ring: RingFds, ret: i32) {
    use asm::*;
    let read = |a: &mut Asm, to, len, base, field| {
        read_via(a, p, to, len, base, field);
    };
    let read_key = |a: &mut Asm, f, base, field| {
        read_key_via(a, p, f, base, field);
    };
    read_key(a, KEY_FAMILY, R6, o.family);
    a.load(H, R0, FP, KEY_FAMILY.at(KEY))
        .jeq_imm(R0, i32::from(AF_INET), "v4")
        .jne_imm(R0, i32::from(AF_INET6), "out");
    read_key(a, KEY_DADDR, R6, o.v6_daddr);
    // A dual-stack socket connected to ::ffff:a.b.c.d: record it as the IPv4 flow it is.
    let daddr = KEY_DADDR.at(KEY);
    a.load(DW, R0, FP, daddr)
        .jne_imm(R0, 0, "v6")
        .load(W, R0, FP, daddr + 8)
        .jne32_imm(R0, u32::from_ne_bytes([0, 0, 0xff, 0xff]), "v6")
        .store_imm(H, FP, KEY_FAMILY.at(KEY), i32::from(AF_INET))
        .store_imm(DW, FP, daddr, 0)
        .store_imm(DW, FP, daddr + 8, 0)
        .ja("v4")
        .label("v6");
    read_key(a, KEY_SADDR, R6, o.v6_rcv_saddr);
    a.ja("ports").label("v4");
    read(a, daddr, 4, R6, o.daddr);
    read(a, KEY_SADDR.at(KEY), 4, R6, o.rcv_saddr);
    a.label("ports");
    read_key(a, KEY_DPORT, R6, o.dport);
    read_key(a, KEY_SPORT, R6, o.sport);
    // The namespace: sk->__sk_common.skc_net.net->ns.inum.
    // Typed only if the pointer itself was loaded typed: read with probe_read, it is a
    // plain number to the verifier.
    let net = read_via(a, p, TMP, 8, R6, o.net);
    a.load(DW, R4, FP, TMP).jeq_imm(R4, 0, "file");
    read_key_via(a, net, KEY_NETNS, R4, o.ns_inum);
    a.label("file");
    output(a, ring.ring, ring.refused, ring.wake_at);
    a.label("out").mov_imm(R0, ret).exit();
}

/// The TCP program, on `inet_sock_set_state(sk, oldstate, newstate)`.
///
/// Entering SYN_SENT happens in `connect()`, in the connecting process, but before the local
/// port is chosen; so the process is noted under the socket's address (`pending`). Leaving
/// SYN_SENT (handshake done, refused, or closed) the ports are known: the note moves to
/// `connects` under the connection's tuple. A program that exits at once has left SYN_SENT by
/// then (a blocking connect waits for the handshake; a close ends it), so its record is there.
pub fn program(
    o: &Offsets,
    t: &TaskOffsets,
    pending_fd: i32,
    ring: RingFds,
) -> Result<Vec<asm::Insn>, &'static str> {
    use asm::*;
    let mut a = Asm::default();
    zero_stack(&mut a);
    // r6 = sk, r7 = oldstate, r8 = newstate (raw tracepoint arguments, one u64 each).
    a.load(DW, R6, R1, 0)
        .load(DW, R7, R1, 8)
        .load(DW, R8, R1, 16)
        .store(DW, FP, SK, R6)
        .jne32_imm(R8, TCP_SYN_SENT as u32, "leaving");
    // Entering SYN_SENT: note the current process under the socket's address.
    current_process(&mut a, t);
    update_at(&mut a, pending_fd, SK, VAL);
    a.ja("out");

    // Leaving SYN_SENT: take the note, if any, and file it under the tuple.
    a.label("leaving").jne32_imm(R7, TCP_SYN_SENT as u32, "out");
    lookup_at(&mut a, pending_fd, SK);
    a.jeq_imm(R0, 0, "out");
    for off in (0..VALUE_LEN as i16).step_by(8) {
        a.load(DW, R1, R0, off).store(DW, FP, VAL + off, R1);
    }
    delete_at(&mut a, pending_fd, SK);
    a.store_imm(B, FP, KEY_PROTO.at(KEY), IPPROTO_TCP);
    file_tuple(&mut a, Pointer::Untyped, o, ring, 0);
    a.finish()
}

/// The UDP program, on `sock_send_length(sk, ret, flags)`, which runs in the sending process
/// right after each successful send of any socket.
///
/// For a connected UDP, UDP-Lite or SCTP socket it files the sender under the socket's
/// tuple, as the TCP program does. The record lands microseconds after the packet left,
/// later than conntrack's event about it, so the helper, finding no record yet, waits for it
/// briefly (see `attribution`). Unconnected UDP sockets (no peer port) cost it one more read:
/// the send hook records those.
///
/// The protocols without ports are filed with what their socket knows: a ping socket
/// (`SOCK_DGRAM`, ICMP or ICMPv6) under its echo identifier (its "port", `inet_sport`, which
/// is the id conntrack reports), a raw socket under its protocol alone: the newest raw sender
/// of that protocol in the namespace. No address is filed for either: an unconnected ping or
/// raw socket names its destination per send, which the tracepoint does not see.
pub fn udp_program(
    o: &Offsets,
    t: &TaskOffsets,
    protocol: i32,
    sk_type: i32,
    ring: RingFds,
) -> Result<Vec<asm::Insn>, &'static str> {
    use asm::*;
    let mut a = Asm::default();
    zero_stack(&mut a);
    // r6 = sk, r7 = the send's result, r8 = the socket's protocol.
    a.load(DW, R6, R1, 0)
        .load(DW, R7, R1, 8)
        .jsle32_imm(R7, 0, "out");
    read(&mut a, TMP, 2, R6, protocol);
    a.load(H, R8, FP, TMP)
        .jeq_imm(R8, IPPROTO_UDP, "udp")
        .jeq_imm(R8, IPPROTO_UDPLITE, "udp")
        .jeq_imm(R8, IPPROTO_SCTP, "udp");
    read(&mut a, TMP, 2, R6, sk_type);
    a.load(H, R0, FP, TMP)
        .jeq_imm(R0, SOCK_RAW, "bare")
        .jne_imm(R0, SOCK_DGRAM, "out")
        .jeq_imm(R8, IPPROTO_ICMP, "ping")
        .jne_imm(R8, IPPROTO_ICMPV6, "out")
        .label("ping");
    read_key(&mut a, KEY_SPORT, R6, o.sport);
    a.label("bare").store(B, FP, KEY_PROTO.at(KEY), R8);
    current_process(&mut a, t);
    read_key(&mut a, KEY_FAMILY, R6, o.family);
    a.load(H, R0, FP, KEY_FAMILY.at(KEY))
        .jeq_imm(R0, i32::from(AF_INET), "bare_ns")
        .jne_imm(R0, i32::from(AF_INET6), "out")
        .label("bare_ns");
    read(&mut a, TMP, 8, R6, o.net);
    a.load(DW, R4, FP, TMP).jeq_imm(R4, 0, "bare_file");
    read_key(&mut a, KEY_NETNS, R4, o.ns_inum);
    a.label("bare_file")
        .ja("file")
        .label("udp")
        .store(B, FP, KEY_PROTO.at(KEY), R8);
    read_key(&mut a, KEY_DPORT, R6, o.dport);
    a.load(H, R0, FP, KEY_DPORT.at(KEY)).jeq_imm(R0, 0, "out");
    current_process(&mut a, t);
    file_tuple(&mut a, Pointer::Untyped, o, ring, 0);
    a.finish()
}

#[cfg(test)]
#[path = "connect_programs_tests.rs"]
mod tests;
