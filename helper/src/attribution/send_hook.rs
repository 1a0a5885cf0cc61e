//! The kernel tells who sent a datagram to an address: a cgroup `sendmsg` program records, for
//! every UDP send that names its destination (`sendto`, `sendmsg` with an address, on any
//! socket, connected or not), the sending process under the flow's addresses and ports.
//!
//! An unconnected UDP socket has no peer, so the socket tables cannot tell which of several
//! sockets bound to one port (`SO_REUSEADDR`, `SO_REUSEPORT`) sent a datagram, nor whether
//! the sender was still there by the time anyone looked: the helper used to name whoever held
//! the port, and a hostile program sharing a port with a trusted daemon was reported as the
//! daemon. The record is made in the sending process, inside `udp_sendmsg` (or
//! `udpv6_sendmsg`), before the packet exists: when conntrack announces the flow the record
//! is there already, even for a program that sent one datagram and exited.
//!
//! Why this hook: `BPF_CGROUP_UDP4_SENDMSG` and `BPF_CGROUP_UDP6_SENDMSG` run for exactly the
//! sends whose destination the socket does not fix, they see that destination
//! (`user_ip4`/`user_ip6`, `user_port`) and the source the socket will use when it has one
//! (`msg_src_ip4`/`msg_src_ip6`: the bound address, or an `IP_PKTINFO` one), and the local
//! port is bound already (`inet_send_prepare` autobinds before `udp_sendmsg` runs the hook).
//! The `sock_send_length` tracepoint the connected-socket records come from fires after the
//! send, and a kprobe on `udp_sendmsg` would depend on a kernel function's name and
//! arguments. The program observes and never filters: it always returns 1 (allow).
//!
//! It is attached to the root of the cgroup v2 hierarchy through a BPF link, so it runs for
//! every process below it (all of them); a link attaches as `BPF_F_ALLOW_MULTI`, beside
//! whatever others attached, and is detached when its last file descriptor closes, so the
//! helper leaves nothing behind, also when it is killed. Records are filed in the same ring
//! and under the same keys as the connected-socket send records ([`bpf::layout`]), so one
//! lookup reads both. When the socket will pick its source address only at routing (a socket
//! bound to the wildcard address), the key's local address is zero, and the lookup asks for
//! that key too.
//!
//! Only sends in the helper's own network namespace are recorded: the program compares the
//! socket's namespace cookie with the helper's (a constant in the program), and writes the
//! helper's namespace inode into the key, as the other programs do. Sends elsewhere never
//! become flows the helper reads, and cost the program one helper call.
//!
//! [`bpf::layout`]: crate::attribution::bpf::layout

use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use crate::attribution::bpf::asm;
use crate::attribution::bpf::frame::{current_process, output, zero_stack, KEY};
use crate::attribution::bpf::layout::{
    KEY_DADDR, KEY_DPORT, KEY_FAMILY, KEY_NETNS, KEY_PROTO, KEY_SADDR, KEY_SPORT,
};
use crate::attribution::bpf::sys::{self, AttachType, ProgType};
use crate::attribution::bpf::task::TaskOffsets;
use crate::attribution::ring_records::RingFds;
use crate::flow::Family;

#[derive(Debug, thiserror::Error)]
pub enum SendHookError {
    #[error("cannot mount cgroup2, and none at /sys/fs/cgroup or /sys/fs/cgroup/unified")]
    NoCgroup2,
    #[error("{what}: {err}")]
    Sys { what: &'static str, err: io::Error },
    #[error("the kernel refused the send hook: {err}: {log}")]
    Verifier { err: io::Error, log: String },
}

/// The helper's network namespace, as the program tells it apart and as the keys name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Netns {
    /// `bpf_get_netns_cookie`, `SO_NETNS_COOKIE`: never reused.
    pub cookie: u64,
    /// `net->ns.inum`, the key's namespace field (`KEY_NETNS`).
    pub inum: u32,
}

/// `struct bpf_sock_addr` (linux/bpf.h), the program's context: offsets of the user API,
/// which the kernel never moves (it rewrites each access to the real field).
mod ctx {
    /// The destination, IPv4 hook only (network order).
    pub const USER_IP4: i16 = 4;
    /// The destination, IPv6 hook only (network order), four words.
    pub const USER_IP6: i16 = 8;
    /// The destination port, network order in the low 16 bits.
    pub const USER_PORT: i16 = 24;
    /// `IPPROTO_UDP` or `IPPROTO_UDPLITE`.
    pub const PROTOCOL: i16 = 36;
    /// The source the socket will use, 0 when routing will choose it; IPv4 hook only.
    pub const MSG_SRC_IP4: i16 = 40;
    /// The same for the IPv6 hook, four words.
    pub const MSG_SRC_IP6: i16 = 44;
    /// The socket, a `struct bpf_sock *` the verifier knows is not NULL.
    pub const SK: i16 = 64;
}

/// `struct bpf_sock.src_port`: the local port, in host order.
const SOCK_SRC_PORT: i16 = 44;

/// The programs' name, as `bpftool prog` lists them.
const PROG_NAME: &[u8] = b"ctt_send";

const AF_INET: i32 = 2;
const AF_INET6: i32 = 10;

/// The program for one family's hook (`Ipv4`: `BPF_CGROUP_UDP4_SENDMSG`, which also sees a
/// dual-stack IPv6 socket's sends to `::ffff:a.b.c.d`, as the IPv4 flows they are), filing
/// into the send records' ring `ring` (`attribution::ring_records`).
pub fn program(
    family: Family,
    ns: Netns,
    task: &TaskOffsets,
    ring: RingFds,
) -> Result<Vec<asm::Insn>, &'static str> {
    use asm::*;
    let (af, words, dst, src) = match family {
        Family::Ipv4 => (AF_INET, 1, ctx::USER_IP4, ctx::MSG_SRC_IP4),
        Family::Ipv6 => (AF_INET6, 4, ctx::USER_IP6, ctx::MSG_SRC_IP6),
    };
    let mut a = Asm::default();
    // r6 = the context.
    a.mov(R6, R1);
    zero_stack(&mut a);
    // Only the helper's namespace: the cookie's high word, then its low word.
    a.mov(R1, R6)
        .call(Helper::GetNetnsCookie)
        .mov(R1, R0)
        .rsh_imm(R1, 32)
        .jne32_imm(R1, (ns.cookie >> 32) as u32, "out")
        .jne32_imm(R0, ns.cookie as u32, "out")
        .store_imm(W, FP, KEY_NETNS.at(KEY), ns.inum as i32)
        .store_imm(H, FP, KEY_FAMILY.at(KEY), af)
        .load(W, R0, R6, ctx::PROTOCOL)
        .store(B, FP, KEY_PROTO.at(KEY), R0)
        .load(W, R0, R6, ctx::USER_PORT)
        .store(H, FP, KEY_DPORT.at(KEY), R0);
    for i in 0..words {
        a.load(W, R0, R6, dst + 4 * i)
            .store(W, FP, KEY_DADDR.at(KEY) + 4 * i, R0);
    }
    for i in 0..words {
        a.load(W, R0, R6, src + 4 * i)
            .store(W, FP, KEY_SADDR.at(KEY) + 4 * i, R0);
    }
    // The key has the local port in network order: high byte first.
    let sport = KEY_SPORT.at(KEY);
    a.load(DW, R7, R6, ctx::SK)
        .load(W, R0, R7, SOCK_SRC_PORT)
        .store(B, FP, sport + 1, R0)
        .rsh_imm(R0, 8)
        .store(B, FP, sport, R0);
    current_process(&mut a, task);
    output(&mut a, ring.ring, ring.refused, ring.wake_at);
    a.label("out").mov_imm(R0, 1).exit();
    a.finish()
}

/// Where the root cgroup was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CgroupRoot {
    /// A cgroup2 file system mounted for the purpose, attached to no folder.
    PrivateMount,
    /// A cgroup2 mount point.
    Path(PathBuf),
}

const CGROUP2_SUPER_MAGIC: u64 = 0x6367_7270;

/// The root of the cgroup v2 hierarchy (of the helper's cgroup namespace), open. Every
/// process is in some cgroup below it, so a program attached there runs for all.
///
/// First a cgroup2 file system of its own (`fsopen`, `fsmount`, since 5.2, and attached to
/// no folder: nobody sees it, and it is gone with its last file descriptor), because where
/// the hierarchy is mounted varies: `/sys/fs/cgroup` on unified systems, `/sys/fs/cgroup/
/// unified` on hybrid ones, nowhere on v1-only ones, and inside `ip netns exec`, which mounts
/// a fresh `/sys`, nowhere either. Then those mount points.
pub fn open_root_cgroup() -> Result<(OwnedFd, CgroupRoot), SendHookError> {
    use rustix::fs::{openat, Mode, OFlags};
    use rustix::mount::MountAttrFlags;
    use rustix::mount::{fsconfig_create, fsmount, fsopen, FsMountFlags, FsOpenFlags};
    let private = (|| -> io::Result<OwnedFd> {
        let fs = fsopen("cgroup2", FsOpenFlags::FSOPEN_CLOEXEC)?;
        fsconfig_create(&fs)?;
        let mnt = fsmount(
            &fs,
            FsMountFlags::FSMOUNT_CLOEXEC,
            MountAttrFlags::MOUNT_ATTR_RDONLY
                | MountAttrFlags::MOUNT_ATTR_NOSUID
                | MountAttrFlags::MOUNT_ATTR_NODEV
                | MountAttrFlags::MOUNT_ATTR_NOEXEC,
        )?;
        // The mount's own descriptor is an O_PATH one, which BPF_LINK_CREATE refuses.
        let dir = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        Ok(openat(&mnt, ".", dir, Mode::empty())?)
    })();
    if let Ok(dir) = private {
        return Ok((dir, CgroupRoot::PrivateMount));
    }
    let path = ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| {
            // `f_type`'s width and sign vary by architecture.
            rustix::fs::statfs(p)
                .is_ok_and(|s| u64::try_from(s.f_type).ok() == Some(CGROUP2_SUPER_MAGIC))
        })
        .ok_or(SendHookError::NoCgroup2)?;
    Ok((open_dir(&path)?, CgroupRoot::Path(path)))
}

fn open_dir(p: &Path) -> Result<OwnedFd, SendHookError> {
    std::fs::File::open(p)
        .map(OwnedFd::from)
        .map_err(|err| SendHookError::Sys {
            what: "cannot open the root cgroup",
            err,
        })
}

/// The ids of the programs attached to the root cgroup for `family`'s send hook (attached
/// there by anyone, not only by this process): to tell whether the helper's are there, or
/// gone.
pub fn attached(family: Family) -> Result<Vec<u32>, SendHookError> {
    let (dir, _) = open_root_cgroup()?;
    sys::prog_query(&dir, attach_type(family)).map_err(|err| SendHookError::Sys {
        what: "cannot list the root cgroup's programs",
        err,
    })
}

fn attach_type(family: Family) -> AttachType {
    match family {
        Family::Ipv4 => AttachType::Udp4Sendmsg,
        Family::Ipv6 => AttachType::Udp6Sendmsg,
    }
}

/// The attached programs. Dropping it (or the helper's death) detaches them.
pub struct SendHook {
    /// Each family's program and link.
    _fds: Vec<OwnedFd>,
    /// Where the root cgroup they are attached to was found.
    pub cgroup: CgroupRoot,
}

impl SendHook {
    /// Loads both families' programs, filing into the ring `ring`, and attaches them to the root
    /// cgroup; both or neither. Needs CAP_BPF, CAP_PERFMON and CAP_NET_ADMIN, CAP_SYS_ADMIN
    /// to mount cgroup2 (else a mount point must be visible), and kernel 5.14 (the namespace
    /// cookie of the helper's own sockets). The cgroup's descriptor is closed once linked: a
    /// link holds the cgroup itself.
    pub fn open(
        ring: RingFds,
        netns_inum: u32,
        task: &TaskOffsets,
    ) -> Result<SendHook, SendHookError> {
        let sys_err = |what: &'static str| move |err: io::Error| SendHookError::Sys { what, err };
        let (dir, cgroup) = open_root_cgroup()?;
        let cookie = sys::netns_cookie().map_err(sys_err("cannot read the namespace cookie"))?;
        let ns = Netns {
            cookie,
            inum: netns_inum,
        };
        let mut fds = Vec::with_capacity(4);
        for family in [Family::Ipv4, Family::Ipv6] {
            let insns = program(family, ns, task, ring).map_err(|label| SendHookError::Sys {
                what: "send hook program",
                err: io::Error::other(format!("unresolved jump to {label}")),
            })?;
            let code: Vec<u8> = insns.iter().flat_map(|i| i.encode()).collect();
            let prog = sys::prog_load(
                ProgType::CgroupSockAddr(attach_type(family)),
                &code,
                PROG_NAME,
            )
            .map_err(|e| match e {
                sys::LoadError::Fd(err) => SendHookError::Sys {
                    what: "send hook program",
                    err,
                },
                sys::LoadError::Refused { err, log } => SendHookError::Verifier { err, log },
            })?;
            let link = sys::link_cgroup(&prog, &dir, attach_type(family))
                .map_err(sys_err("cannot attach the send hook to the root cgroup"))?;
            fds.push(prog);
            fds.push(link);
        }
        Ok(SendHook { _fds: fds, cgroup })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::bpf::asm::{disassemble, Helper, Op, B, DW, FP, H, R0, R1, R6, R7, W};
    use crate::attribution::bpf::frame::listing::{
        assert_files_the_current_process, outputs, refusal_counts, stack_writes, updates,
    };
    use crate::attribution::bpf::frame::{SK, VAL};
    use crate::attribution::bpf::layout::{KEY_FIELDS, KEY_PAD};
    use crate::attribution::ring_records::RECORD_LEN;

    const RING: RingFds = RingFds {
        ring: 7,
        refused: 9,
        wake_at: 1 << 17,
    };

    const NS: Netns = Netns {
        cookie: 0x0000_1234_0000_5678,
        inum: 0xf000_0001,
    };

    fn ops(family: Family) -> Vec<(usize, Op)> {
        disassemble(&program(family, NS, &TaskOffsets::default(), RING).unwrap())
    }

    #[test]
    fn every_path_ends_allowing_the_send() {
        for family in [Family::Ipv4, Family::Ipv6] {
            let ops = ops(family);
            let len = ops.last().map_or(0, |&(at, _)| at + 1);
            assert!(ops.iter().all(|(_, op)| !matches!(op, Op::Unknown(_))));
            // One exit, at the end, after r0 = 1; every jump lands on or before it.
            let exits: Vec<usize> = (0..ops.len()).filter(|&i| ops[i].1 == Op::Exit).collect();
            assert_eq!(exits, [ops.len() - 1]);
            assert_eq!(ops[ops.len() - 2].1, Op::MovImm { dst: R0, imm: 1 });
            for &(at, op) in &ops {
                if let Op::Ja { off } | Op::Jump { off, .. } = op {
                    let to = at as i64 + 1 + i64::from(off);
                    assert!(off >= 0 && to < len as i64, "jump at {at} to {to}");
                }
                // r0 is set only by helper calls and loads before the end: never a verdict.
                if let Op::MovImm { dst: R0, imm } = op {
                    assert_eq!(imm, 1, "at {at}");
                }
            }
        }
    }

    #[test]
    fn only_the_helpers_namespace_is_recorded() {
        let ops = ops(Family::Ipv4);
        let cookie = ops
            .iter()
            .position(|&(_, op)| op == Op::Call(Helper::GetNetnsCookie))
            .unwrap();
        // Called with the context, before anything is filed.
        assert_eq!(ops[cookie - 1].1, Op::Mov { dst: R1, src: R6 });
        assert_eq!(ops[0].1, Op::Mov { dst: R6, src: R1 });
        let jumps: Vec<(asm::Reg, i32)> = ops[cookie..]
            .iter()
            .filter_map(|&(_, op)| match op {
                Op::Jump {
                    jmp32: true,
                    dst,
                    imm,
                    ..
                } => Some((dst, imm)),
                _ => None,
            })
            .collect();
        assert_eq!(jumps, [(R1, 0x1234), (R0, 0x5678)]);
        assert_eq!(ops[cookie + 2].1, Op::RshImm { dst: R1, imm: 32 });
        assert!(ops.iter().any(|&(_, op)| op
            == Op::StoreImm {
                size: W,
                dst: FP,
                off: KEY_NETNS.at(KEY),
                imm: NS.inum as i32
            }));
    }

    #[test]
    fn the_key_is_the_flows_as_the_layout_says() {
        for (family, af, words) in [(Family::Ipv4, 2, 1), (Family::Ipv6, 10, 4)] {
            let ops = ops(family);
            let (dst, src) = match family {
                Family::Ipv4 => (ctx::USER_IP4, ctx::MSG_SRC_IP4),
                Family::Ipv6 => (ctx::USER_IP6, ctx::MSG_SRC_IP6),
            };
            // Each context word is loaded into r0 and stored at its key field.
            let copied = |from: i16, to: i16, size| {
                ops.windows(2).any(|w| {
                    w[0].1
                        == Op::LoadMem {
                            size: W,
                            dst: R0,
                            src: R6,
                            off: from,
                        }
                        && w[1].1
                            == Op::StoreMem {
                                size,
                                dst: FP,
                                off: to,
                                src: R0,
                            }
                })
            };
            assert!(copied(ctx::PROTOCOL, KEY_PROTO.at(KEY), B));
            assert!(copied(ctx::USER_PORT, KEY_DPORT.at(KEY), H));
            for i in 0..words {
                assert!(copied(dst + 4 * i, KEY_DADDR.at(KEY) + 4 * i, W), "{i}");
                assert!(copied(src + 4 * i, KEY_SADDR.at(KEY) + 4 * i, W), "{i}");
            }
            assert!(ops.iter().any(|&(_, op)| op
                == Op::StoreImm {
                    size: H,
                    dst: FP,
                    off: KEY_FAMILY.at(KEY),
                    imm: af
                }));
            // The port from the socket, host order, swapped into the key's network order.
            let sk = ops
                .iter()
                .position(|&(_, op)| {
                    op == Op::LoadMem {
                        size: DW,
                        dst: R7,
                        src: R6,
                        off: ctx::SK,
                    }
                })
                .unwrap();
            let sport = KEY_SPORT.at(KEY);
            let swap: Vec<Op> = ops[sk + 1..sk + 5].iter().map(|&(_, op)| op).collect();
            assert_eq!(
                swap,
                [
                    Op::LoadMem {
                        size: W,
                        dst: R0,
                        src: R7,
                        off: SOCK_SRC_PORT
                    },
                    Op::StoreMem {
                        size: B,
                        dst: FP,
                        off: sport + 1,
                        src: R0
                    },
                    Op::RshImm { dst: R0, imm: 8 },
                    Op::StoreMem {
                        size: B,
                        dst: FP,
                        off: sport,
                        src: R0
                    },
                ]
            );
            // The frame is zeroed first, and nothing writes the key's padding or outside
            // a field.
            let frame: Vec<(i16, usize)> = (SK..0).step_by(8).map(|o| (o, 8)).collect();
            let writes = stack_writes(&ops);
            assert_eq!(writes[..frame.len()], frame[..]);
            for &(off, len) in &writes[frame.len()..] {
                if !(KEY..0).contains(&off) {
                    continue;
                }
                let start = (off - KEY) as usize;
                let (name, f) = KEY_FIELDS
                    .iter()
                    .find(|(_, f)| f.range().contains(&start))
                    .copied()
                    .unwrap();
                assert!(start + len <= f.end(), "{name}");
                assert_ne!(f, KEY_PAD);
            }
        }
    }

    #[test]
    fn the_sender_and_its_key_are_filed_into_the_send_records_ring() {
        for family in [Family::Ipv4, Family::Ipv6] {
            let ops = ops(family);
            assert_eq!(
                outputs(&ops),
                [(7, i32::from(VAL), RECORD_LEN as i32, 1 << 17)],
                "{ops:?}"
            );
            assert_eq!(refusal_counts(&ops), [9], "{ops:?}");
            assert!(updates(&ops).is_empty(), "no map is written");
            assert_files_the_current_process(&ops);
        }
    }
}
