//! The TCP connect record, filed in `connect()` itself before the first packet leaves: a
//! `sock_ops` program, attached to the root cgroup, that acts on `BPF_SOCK_OPS_TCP_CONNECT_CB`.
//!
//! Why not only the `inet_sock_set_state` program of [`connect_hook`]: entering SYN_SENT
//! happens before the local port is chosen, so that program notes the connector under the
//! socket's address and files it under the tuple only when the socket *leaves* SYN_SENT. The
//! helper reads a flow's event when its SYN leaves, so for any connection whose handshake is
//! still under way (any server further than the helper's reading time, or one that lets SYNs
//! wait on purpose) there was no record yet, and the socket's holder named the flow. A review
//! of the exec-time check showed what that allows: a program starts a connect to a server of
//! its own that answers late, hands the socket to a whitelisted program (an exec, or a child
//! started with the descriptor), and that program, the socket's only holder, is named and
//! silenced. `tcp_connect()` calls the `sock_ops` programs (`tcp_call_bpf`) first thing, in
//! the connecting process, with the ports chosen and before the SYN is built: the record is
//! there before conntrack's event is.
//!
//! It is also cheaper: one run files the record, with no note to file, find and delete. The
//! program still runs for the other `sock_ops` events of every TCP socket (timeouts, window,
//! ECN, established; both ends of a local connection), and does nothing for them but return.
//!
//! It only observes: it returns 1 on every path and never writes the context's reply, so TCP
//! behaves as if it were not there (`tcp_call_bpf` then answers as with no program). Where the
//! hook is not available (no cgroup v2 mount and no way to mount one, or a kernel that refuses
//! the program), [`connect_hook`] falls back to its tracepoint program.
//!
//! [`connect_hook`]: crate::attribution::connect_hook

use std::io;
use std::os::fd::OwnedFd;

use crate::attribution::bpf::asm::{self, Helper, B, DW, FP, R0, R1, R2, R6, W};
use crate::attribution::bpf::btf::Btf;
use crate::attribution::bpf::frame::{current_process, zero_stack, Pointer, KEY, VAL};
use crate::attribution::bpf::layout::{KEY_PROTO, VALUE_BY_WRITE, VALUE_FLAGS};
use crate::attribution::bpf::sys::{self, AttachType, ProgType};
use crate::attribution::bpf::task::TaskOffsets;
use crate::attribution::connect_hook::{HookError, Offsets};
use crate::attribution::connect_programs::file_tuple;
use crate::attribution::ring_records::RingFds;
use crate::attribution::send_hook::open_root_cgroup;

/// `BPF_SOCK_OPS_TCP_CONNECT_CB`: `tcp_connect()` is about to send the SYN.
pub const TCP_CONNECT_CB: i32 = 3;
const IPPROTO_TCP: i32 = 6;
const PROG_NAME: &[u8] = b"ctt_tcp_connect";

/// The program. `sk` is where `struct bpf_sock_ops` keeps its socket pointer (from BTF).
///
/// r6 is the socket as `struct tcp_sock` (`bpf_skc_to_tcp_sock`): the context's own pointer
/// may not be offset, and the tuple is read from the socket as the tracepoint program reads it
/// (`file_tuple`), dual-stack addresses and the namespace included.
///
/// A connect made by a write (TCP Fast Open: `tcp_sendmsg_fastopen` sets `fastopen_req` and
/// then connects) is marked [`VALUE_BY_WRITE`]: on a socket connected with
/// `TCP_FASTOPEN_CONNECT`, `connect()` only chose the port, and the SYN waits for the first
/// write, whoever makes it (a review had a program connect so, and hand the socket to a
/// whitelisted program as its standard output: the record named that program).
pub fn program(
    o: &Offsets,
    t: &TaskOffsets,
    sk: i16,
    fastopen_req: i16,
    ring: RingFds,
) -> Result<Vec<asm::Insn>, &'static str> {
    let mut a = asm::Asm::default();
    a.load(W, R2, R1, 0)
        .jne_imm(R2, TCP_CONNECT_CB, "out")
        .load(DW, R1, R1, sk)
        .jeq_imm(R1, 0, "out")
        .call(Helper::SkcToTcpSock)
        .jeq_imm(R0, 0, "out")
        .mov(R6, R0);
    zero_stack(&mut a);
    current_process(&mut a, t);
    a.load(DW, R1, R6, fastopen_req)
        .jeq_imm(R1, 0, "connect")
        .store_imm(W, FP, VALUE_FLAGS.at(VAL), VALUE_BY_WRITE)
        .label("connect")
        .store_imm(B, FP, KEY_PROTO.at(KEY), IPPROTO_TCP);
    file_tuple(&mut a, Pointer::Typed, o, ring, 1);
    a.finish()
}

/// The attached program and its link; dropping it (or the helper's death) detaches it.
pub struct SockOpsHook {
    _fds: [OwnedFd; 2],
}

impl SockOpsHook {
    /// Loads the program, filing into the ring `ring`, and links it to the root cgroup. Needs
    /// CAP_BPF, CAP_PERFMON, CAP_NET_ADMIN (and CAP_SYS_ADMIN to mount cgroup2 where none is
    /// visible).
    pub fn open(
        btf: &Btf,
        o: &Offsets,
        t: &TaskOffsets,
        ring: RingFds,
    ) -> Result<SockOpsHook, HookError> {
        let at = |ty: &'static str, field: &'static str| -> Result<i16, HookError> {
            let off = btf.offset_of(ty, &[field])?;
            i16::try_from(off).map_err(|_| HookError::Sys {
                what: "a field's offset is out of a load's reach",
                err: io::Error::other(format!("{ty}.{field}")),
            })
        };
        let (sk, fastopen_req) = (at("bpf_sock_ops", "sk")?, at("tcp_sock", "fastopen_req")?);
        Ok(SockOpsHook {
            _fds: load_and_link(program(o, t, sk, fastopen_req, ring))?,
        })
    }
}

/// The ids of the `sock_ops` programs attached to the root cgroup (by anyone): to tell whether
/// the helper's is there, or gone.
pub fn attached() -> Result<Vec<u32>, HookError> {
    let (dir, _) = open_root_cgroup().map_err(|e| HookError::Sys {
        what: "cannot open the root cgroup",
        err: io::Error::other(e.to_string()),
    })?;
    sys::prog_query(&dir, AttachType::SockOps).map_err(|err| HookError::Sys {
        what: "cannot list the root cgroup's programs",
        err,
    })
}

/// A `sock_ops` program that does nothing but return 1, attached where [`SockOpsHook`] is:
/// the kernel's run time accounting's floor under its figure, for the benchmark.
pub fn empty_probe() -> Result<[OwnedFd; 2], HookError> {
    let mut a = asm::Asm::default();
    a.mov_imm(R0, 1).exit();
    load_and_link(a.finish())
}

/// Loads an assembled `sock_ops` program and links it to the root cgroup: the program and its
/// link, which detaches it when closed.
fn load_and_link(program: Result<Vec<asm::Insn>, &'static str>) -> Result<[OwnedFd; 2], HookError> {
    let insns = program.map_err(|label| HookError::Sys {
        what: "sock_ops program",
        err: io::Error::other(format!("unresolved jump to {label}")),
    })?;
    let code: Vec<u8> = insns.iter().flat_map(|i| i.encode()).collect();
    let prog = sys::prog_load(ProgType::SockOps, &code, PROG_NAME)?;
    let (dir, _) = open_root_cgroup().map_err(|e| HookError::Sys {
        what: "cannot open the root cgroup",
        err: io::Error::other(e.to_string()),
    })?;
    let link =
        sys::link_cgroup(&prog, &dir, AttachType::SockOps).map_err(|err| HookError::Sys {
            what: "cannot attach the sock_ops program to the root cgroup",
            err,
        })?;
    Ok([prog, link])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::bpf::asm::{disassemble, Op};
    use crate::attribution::bpf::frame::listing::{
        assert_files_the_current_process, assert_forward_only, outputs, refusal_counts, updates,
    };
    use crate::attribution::bpf::frame::VAL;
    use crate::attribution::bpf::task::tests::TASK_LIKE;
    use crate::attribution::ring_records::RECORD_LEN;

    const SK: i16 = 184;
    const WAKE_AT: i32 = 1 << 18;
    const RING: RingFds = RingFds {
        ring: 7,
        refused: 9,
        wake_at: WAKE_AT,
    };

    fn offsets() -> Offsets {
        Offsets {
            family: 16,
            dport: 12,
            sport: 780,
            daddr: 0,
            rcv_saddr: 4,
            v6_daddr: 56,
            v6_rcv_saddr: 72,
            net: 48,
            ns_inum: 120,
        }
    }

    fn ops() -> Vec<(usize, Op)> {
        disassemble(&program(&offsets(), &TASK_LIKE, SK, 1600, RING).unwrap())
    }

    #[test]
    fn every_path_ends_returning_1_and_tcp_behaves_as_without_it() {
        let ops = ops();
        assert_forward_only(&ops);
        assert!(ops.iter().all(|(_, op)| !matches!(op, Op::Unknown(_))));
        let exits: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].1 == Op::Exit).collect();
        assert_eq!(exits, [ops.len() - 1]);
        assert_eq!(ops[ops.len() - 2].1, Op::MovImm { dst: R0, imm: 1 });
        for &(at, op) in &ops {
            if let Op::MovImm { dst: R0, imm } = op {
                assert_eq!(imm, 1, "at {at}");
            }
            // The context (r1 on entry) is only read: the reply is never written.
            if let Op::StoreMem { dst, .. } | Op::StoreImm { dst, .. } = op {
                assert_eq!(dst, FP, "a store outside the stack at {at}");
            }
        }
    }

    #[test]
    fn only_the_connect_event_files_a_record_of_the_connecting_process() {
        let ops = ops();
        let head: Vec<Op> = ops[..7].iter().map(|&(_, op)| op).collect();
        assert_eq!(
            head[0],
            Op::LoadMem {
                size: W,
                dst: R2,
                src: R1,
                off: 0
            }
        );
        // Any other event (and a context without a socket) jumps straight to the end.
        let out = ops[ops.len() - 2].0 as i64;
        for (i, reg) in [(1, R2), (3, R1), (5, R0)] {
            let Op::Jump { dst, imm, off, .. } = head[i] else {
                panic!("no jump at {i}: {head:?}");
            };
            assert_eq!(dst, reg);
            assert_eq!(imm, if i == 1 { TCP_CONNECT_CB } else { 0 });
            assert_eq!(ops[i].0 as i64 + 1 + i64::from(off), out, "at {i}");
        }
        assert_eq!(
            head[2],
            Op::LoadMem {
                size: DW,
                dst: R1,
                src: R1,
                off: SK
            }
        );
        assert_eq!(head[4], Op::Call(Helper::SkcToTcpSock));
        assert_eq!(head[6], Op::Mov { dst: R6, src: R0 });
        assert_files_the_current_process(&ops);
        // One record, into the ring, of the stack's value and key (one piece).
        assert!(updates(&ops).is_empty(), "{ops:?}");
        assert_eq!(
            outputs(&ops),
            [(7, i32::from(VAL), RECORD_LEN as i32, WAKE_AT)],
            "{ops:?}"
        );
        assert_eq!(refusal_counts(&ops), [9], "{ops:?}");
        // Marked TCP.
        assert!(ops.iter().any(|&(_, op)| op
            == Op::StoreImm {
                size: B,
                dst: FP,
                off: KEY_PROTO.at(KEY),
                imm: IPPROTO_TCP
            }));
    }

    /// The socket is a typed pointer (`bpf_skc_to_tcp_sock`), so the tuple is read with
    /// plain loads, each field from its offset into its place in the key, and no helper call.
    #[test]
    fn the_tuple_is_loaded_from_the_typed_socket_into_the_key_without_a_helper_call() {
        use crate::attribution::bpf::asm::{H, R4};
        use crate::attribution::bpf::frame::{KEY, TMP};
        use crate::attribution::bpf::layout::{
            KEY_DADDR, KEY_DPORT, KEY_FAMILY, KEY_NETNS, KEY_SADDR, KEY_SPORT,
        };
        let ops = ops();
        assert!(
            !ops.iter()
                .any(|&(_, op)| op == Op::Call(Helper::ProbeReadKernel)),
            "{ops:?}"
        );
        let o = offsets();
        let (v4d, v4s) = (KEY_DADDR.at(KEY), KEY_SADDR.at(KEY));
        let expected: [(asm::Size, asm::Reg, i32, i16); 12] = [
            (H, R6, o.family, KEY_FAMILY.at(KEY)),
            (DW, R6, o.v6_daddr, v4d),
            (DW, R6, o.v6_daddr + 8, v4d + 8),
            (DW, R6, o.v6_rcv_saddr, v4s),
            (DW, R6, o.v6_rcv_saddr + 8, v4s + 8),
            (W, R6, o.daddr, v4d),
            (W, R6, o.rcv_saddr, v4s),
            (H, R6, o.dport, KEY_DPORT.at(KEY)),
            (H, R6, o.sport, KEY_SPORT.at(KEY)),
            (DW, R6, o.net, TMP),
            (W, R4, o.ns_inum, KEY_NETNS.at(KEY)),
            // The namespace pointer, spilled and read back into r4.
            (DW, FP, i32::from(TMP), 0),
        ];
        // Nothing else is read from the socket but the Fast Open request.
        let mut from_socket: Vec<(asm::Size, i32)> = ops
            .iter()
            .filter_map(|&(_, op)| match op {
                Op::LoadMem {
                    size, src: R6, off, ..
                } => Some((size, i32::from(off))),
                _ => None,
            })
            .collect();
        let mut want: Vec<(asm::Size, i32)> = expected
            .iter()
            .filter(|e| e.1 == R6)
            .map(|e| (e.0, e.2))
            .chain([(DW, 1600)])
            .collect();
        from_socket.sort_by_key(|&(s, o)| (o, s.bytes()));
        want.sort_by_key(|&(s, o)| (o, s.bytes()));
        assert_eq!(from_socket, want);
        // The namespace: its pointer loaded, spilled, read back into r4 and checked for null,
        // then the inode number loaded through it, in that order.
        let net = ops
            .iter()
            .position(|&(_, op)| {
                op == Op::LoadMem {
                    size: DW,
                    dst: R0,
                    src: R6,
                    off: o.net as i16,
                }
            })
            .expect("the namespace pointer is loaded");
        let run: Vec<Op> = ops[net + 1..net + 6].iter().map(|&(_, op)| op).collect();
        assert_eq!(
            run[0],
            Op::StoreMem {
                size: DW,
                dst: FP,
                off: TMP,
                src: R0
            }
        );
        assert_eq!(
            run[1],
            Op::LoadMem {
                size: DW,
                dst: R4,
                src: FP,
                off: TMP
            }
        );
        assert!(
            matches!(
                run[2],
                Op::Jump {
                    dst: R4,
                    imm: 0,
                    ..
                }
            ),
            "{:?}",
            run[2]
        );
        assert_eq!(
            run[3],
            Op::LoadMem {
                size: W,
                dst: R0,
                src: R4,
                off: o.ns_inum as i16
            }
        );
        for (size, src, field, to) in expected {
            let load = Op::LoadMem {
                size,
                dst: if src == FP { R4 } else { R0 },
                src,
                off: field as i16,
            };
            let i = ops
                .iter()
                .position(|&(_, op)| op == load)
                .unwrap_or_else(|| panic!("no {load:?} in {ops:?}"));
            if src != FP {
                assert_eq!(
                    ops[i + 1].1,
                    Op::StoreMem {
                        size,
                        dst: FP,
                        off: to,
                        src: R0
                    },
                    "after {load:?}"
                );
            }
        }
    }

    #[test]
    fn a_connect_that_a_write_made_is_marked_so() {
        let ops = ops();
        let read = Op::LoadMem {
            size: DW,
            dst: R1,
            src: R6,
            off: 1600,
        };
        let i = ops
            .iter()
            .position(|&(_, op)| op == read)
            .expect("tcp_sock.fastopen_req is read");
        // Without a Fast Open request the flag is left zero; with one it is set, before the
        // record is filed.
        assert!(
            matches!(
                ops[i + 1].1,
                Op::Jump {
                    dst: R1,
                    imm: 0,
                    off: 1,
                    ..
                }
            ),
            "{:?}",
            ops[i + 1]
        );
        assert_eq!(
            ops[i + 2].1,
            Op::StoreImm {
                size: W,
                dst: FP,
                off: VALUE_FLAGS.at(VAL),
                imm: VALUE_BY_WRITE
            }
        );
        let update = ops
            .iter()
            .position(|&(_, op)| op == Op::Call(Helper::RingbufOutput))
            .expect("a record filed");
        assert!(i < update);
    }
}
