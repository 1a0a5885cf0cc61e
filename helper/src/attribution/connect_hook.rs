//! The kernel tells who connected: an eBPF program records, for every outbound TCP connection,
//! the process that called `connect()`, under the connection's addresses and ports (the
//! `sock_ops` program of [`sock_ops`], filed before the SYN leaves; where the kernel refuses
//! that, the `inet_sock_set_state` program, filed when the handshake is over); another,
//! on `sock_send_length`, records the sender on connected UDP sockets; and the cgroup programs
//! of [`send_hook`] record the sender of every UDP datagram sent to an address (unconnected
//! sockets).
//!
//! Socket lookups run after the kernel's conntrack event, and a program that connects and
//! exits at once (a bash `/dev/tcp` one-shot, a connect refused at once) can be gone by then:
//! a prototype named only 24 of 40 bash one-shots that way. The tracepoint fires inside
//! `connect()` in the connecting process, so the record does not depend on the process living
//! on; the helper looks it up by the flow's tuple.
//!
//! The programs are small and written as instructions ([`connect_programs`]), with the assembler
//! of [`bpf::asm`], because building eBPF from C or Rust needs a toolchain (clang, bpf-linker)
//! that building this crate must not. Where `struct sock`'s fields sit comes from the running
//! kernel's BTF ([`bpf::btf`]); where a record's fields sit is [`bpf::layout`], the one table
//! the programs store by and the lookups here build keys and read values by. The two tracepoint
//! programs are raw tracepoint programs: function-entry hooks (fentry) are refused on some
//! kernels (EPERM on the CI machines) where tracepoints are not. Records go into ring
//! buffers the helper drains into indexes of its own ([`ring_records`]): filing one costs a
//! connect half what an LRU map update did, and halves what the kernel programs cost per
//! datagram (the burst benchmark's: 1.0–1.4 µs per flow with LRU maps, 0.5–0.6 µs with
//! rings), and a lookup is no system call. Records carry the network namespace, so a connect in another
//! namespace with the same addresses is never taken for ours.
//!
//! TCP records and UDP records are kept in separate rings and indexes, each bounded by its own
//! capacity: a flood of datagrams, which a hostile program can send at will, pushes out older
//! UDP records only, never the connect records of TCP.
//!
//! [`send_hook`]: crate::attribution::send_hook
//! [`ring_records`]: crate::attribution::ring_records
//! [`connect_programs`]: crate::attribution::connect_programs
//! [`sock_ops`]: crate::attribution::sock_ops
//! [`bpf::asm`]: crate::attribution::bpf::asm
//! [`bpf::btf`]: crate::attribution::bpf::btf
//! [`bpf::layout`]: crate::attribution::bpf::layout

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use super::record_key::{bare_key, connector, key, wildcard_key};
use super::{Connector, Connects, UdpRecords};
use crate::attribution::bpf::btf::{Btf, BtfError};
use crate::attribution::bpf::layout::{KEY_LEN, PENDING_KEY_LEN, VALUE_LEN};
use crate::attribution::bpf::task::{self, TaskOffsets};
use crate::attribution::bpf::{asm, sys};
use crate::attribution::connect_programs::{program, udp_program};
use crate::attribution::netns::Namespaces;
use crate::attribution::ring_records::{self, RingRecords};
use crate::attribution::send_hook::SendHook;
use crate::attribution::sock_ops::SockOpsHook;
use crate::flow::{Proto, Tuple};

#[derive(Debug, thiserror::Error)]
pub enum HookError {
    #[error("{0}")]
    Btf(#[from] BtfError),
    #[error("{what}: {err}")]
    Sys { what: &'static str, err: io::Error },
    #[error("the kernel refused the connect hook: {err}: {log}")]
    Verifier { err: io::Error, log: String },
}

impl From<sys::LoadError> for HookError {
    fn from(e: sys::LoadError) -> HookError {
        match e {
            sys::LoadError::Fd(err) => HookError::Sys {
                what: "connect hook program",
                err,
            },
            sys::LoadError::Refused { err, log } => HookError::Verifier { err, log },
        }
    }
}

/// Where the fields the program reads sit, in bytes from the start of `struct sock`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offsets {
    pub family: i32,
    pub dport: i32,
    /// `inet_sock.inet_sport`: `skc_num` is zeroed before a refused connect's tracepoint
    /// fires (the port is released first); the network-order copy is not.
    pub sport: i32,
    pub daddr: i32,
    pub rcv_saddr: i32,
    pub v6_daddr: i32,
    pub v6_rcv_saddr: i32,
    pub net: i32,
    /// Within `struct net`.
    pub ns_inum: i32,
}

/// The BTF names [`Offsets::from_btf`] and [`ConnectLog::open`] look up.
pub const BTF_NAMES: &[&str] = &[
    "sock",
    "sock_common",
    "__sk_common",
    "skc_daddr",
    "skc_rcv_saddr",
    "skc_dport",
    "inet_sock",
    "inet_sport",
    "skc_family",
    "skc_net",
    "skc_v6_daddr",
    "skc_v6_rcv_saddr",
    "net",
    "ns",
    "inum",
    "sk_protocol",
    "sk_type",
    "bpf_sock_ops",
    "sk",
    "tcp_sock",
    "fastopen_req",
];

/// The running kernel's BTF, with what both hooks look up: read once (it is megabytes, and
/// parsing it is most of the helper's start-up).
pub fn kernel_btf() -> Result<Btf, HookError> {
    let f = std::fs::File::open("/sys/kernel/btf/vmlinux").map_err(|err| HookError::Sys {
        what: "cannot read the kernel's BTF (/sys/kernel/btf/vmlinux)",
        err,
    })?;
    let names: Vec<&str> = BTF_NAMES
        .iter()
        .chain(task::BTF_NAMES)
        .chain(crate::attribution::exec_hook::BTF_NAMES)
        .copied()
        .collect();
    Ok(Btf::load(f, &names)?)
}

/// The TCP tracepoint: `inet_sock_set_state(const struct sock *sk, int oldstate, int newstate)`.
const TRACEPOINT: &[u8] = b"inet_sock_set_state\0";
/// Both programs' name, as `bpftool prog` lists them.
const PROG_NAME: &[u8] = b"ctt_connect";
/// The UDP tracepoint: `sock_send_length(struct sock *sk, int ret, int flags)`, since 6.3.
const UDP_TRACEPOINT: &[u8] = b"sock_send_length\0";

impl Offsets {
    pub fn from_btf(btf: &Btf) -> Result<Offsets, BtfError> {
        let base = btf.offset_of("sock", &["__sk_common"])?;
        let sc = |f: &str| -> Result<i32, BtfError> {
            let off = base + btf.offset_of("sock_common", &[f])?;
            i32::try_from(off).map_err(|_| BtfError::Missing(format!("sock_common.{f}")))
        };
        // `possible_net_t` is empty without network namespaces; then there is no pointer.
        if btf.size_at("sock_common", &["skc_net"])? != 8 {
            return Err(BtfError::Missing("sock_common.skc_net.net".into()));
        }
        let net = base + btf.offset_of("sock_common", &["skc_net", "net"])?;
        let ns_inum = btf.offset_of("net", &["ns", "inum"])?;
        let int =
            |v: u32, what: &str| i32::try_from(v).map_err(|_| BtfError::Missing(what.to_string()));
        Ok(Offsets {
            family: sc("skc_family")?,
            dport: sc("skc_dport")?,
            sport: int(
                btf.offset_of("inet_sock", &["inet_sport"])?,
                "inet_sock.inet_sport",
            )?,
            daddr: sc("skc_daddr")?,
            rcv_saddr: sc("skc_rcv_saddr")?,
            v6_daddr: sc("skc_v6_daddr")?,
            v6_rcv_saddr: sc("skc_v6_rcv_saddr")?,
            net: int(net, "sock_common.skc_net")?,
            ns_inum: int(ns_inum, "net.ns.inum")?,
        })
    }
}

/// Connections in SYN_SENT at once: the handshakes in flight.
const PENDING_ENTRIES: u32 = 8192;

/// The loaded hook. Dropping it detaches the programs and frees the maps.
pub struct ConnectLog {
    records: ConnectReader,
    /// The TCP program (and the map it notes connects in while their port is unknown).
    _tcp: Tcp,
    /// The connected-UDP program and its link, when the kernel took them.
    _udp: Option<[OwnedFd; 2]>,
    /// The unconnected-UDP programs and their links, when the kernel took them.
    _send: Option<SendHook>,
    /// Why there are no records of sends on connected UDP sockets, if there are none.
    pub udp_off: Option<String>,
    /// Why there are no records of sends to an address, if there are none.
    pub send_off: Option<String>,
    /// Why TCP records are filed only when the handshake is over, if they are.
    pub tcp_late: Option<String>,
}

/// Where the TCP records come from; held only to keep the programs attached.
#[allow(dead_code)]
enum Tcp {
    /// The connect itself ([`sock_ops`](crate::attribution::sock_ops)).
    SockOps(SockOpsHook),
    /// The tracepoint program and its link, and its notes: the state changes.
    Tracepoint { pending: OwnedFd, fds: [OwnedFd; 2] },
}

impl ConnectLog {
    /// Loads and attaches the programs. Needs CAP_BPF and CAP_PERFMON (or CAP_SYS_ADMIN);
    /// the send hook also CAP_NET_ADMIN.
    /// `btf` is the kernel's, read with [`kernel_btf`].
    pub fn open(btf: &Btf) -> Result<ConnectLog, HookError> {
        let offsets = Offsets::from_btf(btf)?;
        let task = TaskOffsets::from_btf(btf)?;
        let protocol = btf.offset_of("sock", &["sk_protocol"]);
        let sk_type = btf.offset_of("sock", &["sk_type"]);
        let sys_err = |what: &'static str| move |err: io::Error| HookError::Sys { what, err };
        let netns = crate::attribution::netns::own_netns()
            .map_err(sys_err("cannot read the network namespace"))?;
        let sends = std::sync::Arc::new(
            RingRecords::create(ring_records::UDP)
                .map_err(sys_err("cannot create the send records' ring"))?,
        );
        // The connect itself files the record where the kernel lets a `sock_ops` program do
        // it (`sock_ops`); else the state changes do, once the handshake is over.
        let tcp_records = std::sync::Arc::new(
            RingRecords::create(ring_records::TCP)
                .map_err(sys_err("cannot create the connect records' ring"))?,
        );
        let (tcp, tcp_late) = match SockOpsHook::open(btf, &offsets, &task, tcp_records.fds()) {
            Ok(h) => (Tcp::SockOps(h), None),
            Err(e) => {
                let pending =
                    sys::map_create(PENDING_KEY_LEN, VALUE_LEN, PENDING_ENTRIES, b"ctt_pending")
                        .map_err(sys_err("cannot create the pending map"))?;
                let fds = load_and_attach(
                    program(&offsets, &task, pending.as_raw_fd(), tcp_records.fds()),
                    TRACEPOINT,
                )?;
                (Tcp::Tracepoint { pending, fds }, Some(e.to_string()))
            }
        };
        // UDP is a bonus: older kernels lack the tracepoint, or have sk_protocol as a bitfield.
        let udp = protocol
            .and_then(|p| Ok((p, sk_type?)))
            .map_err(HookError::from)
            .and_then(|(protocol, sk_type)| {
                let protocol = i32::try_from(protocol)
                    .map_err(|_| BtfError::Missing("sock.sk_protocol".into()))?;
                let sk_type =
                    i32::try_from(sk_type).map_err(|_| BtfError::Missing("sock.sk_type".into()))?;
                load_and_attach(
                    udp_program(&offsets, &task, protocol, sk_type, sends.fds()),
                    UDP_TRACEPOINT,
                )
            });
        let (udp, udp_off) = match udp {
            Ok(fds) => (Some(fds), None),
            Err(e) => (None, Some(e.to_string())),
        };
        // So is the send hook: it needs cgroup v2, and kernel 5.14.
        let (send, send_off) = match SendHook::open(sends.fds(), netns, &task) {
            Ok(h) => (Some(h), None),
            Err(e) => (None, Some(e.to_string())),
        };
        let udp_records = UdpRecords {
            connected: udp.is_some(),
            unconnected: send.is_some(),
        };
        Ok(ConnectLog {
            records: ConnectReader {
                tcp: tcp_records,
                sends,
                netns,
                udp: udp_records,
                tcp_at_connect: matches!(tcp, Tcp::SockOps(_)),
                elsewhere: Namespaces::new(netns),
            },
            _tcp: tcp,
            _udp: udp,
            _send: send,
            udp_off,
            send_off,
            tcp_late,
        })
    }

    /// The TCP and the UDP records, for the thread that drains their rings when they fill
    /// ([`ring_records::run_drains`]).
    pub fn ring_records(&self) -> Vec<std::sync::Arc<RingRecords>> {
        vec![self.records.tcp.clone(), self.records.sends.clone()]
    }

    /// Another handle on the records, for a second attributor (the programs stay attached
    /// as long as this `ConnectLog` lives).
    pub fn reader(&self) -> io::Result<ConnectReader> {
        Ok(ConnectReader {
            tcp: self.records.tcp.clone(),
            sends: self.records.sends.clone(),
            netns: self.records.netns,
            udp: self.records.udp,
            tcp_at_connect: self.records.tcp_at_connect,
            elsewhere: Namespaces::new(self.records.netns),
        })
    }
}

impl Connects for ConnectLog {
    fn connector(&mut self, t: &Tuple) -> io::Result<Option<Connector>> {
        self.records.connector(t)
    }
    fn udp_records(&self) -> UdpRecords {
        self.records.udp
    }
    fn tcp_at_connect(&self) -> bool {
        self.records.tcp_at_connect
    }
    fn connector_elsewhere(&mut self, t: &Tuple) -> io::Result<Option<Connector>> {
        self.records.connector_elsewhere(t)
    }
}

/// Loads an assembled program and attaches it to `tracepoint` (NUL-terminated): the program
/// and its link, which detaches it when closed.
fn load_and_attach(
    program: Result<Vec<asm::Insn>, &'static str>,
    tracepoint: &'static [u8],
) -> Result<[OwnedFd; 2], HookError> {
    let name = std::str::from_utf8(tracepoint)
        .unwrap_or("?")
        .trim_end_matches('\0');
    let insns = program.map_err(|label| HookError::Sys {
        what: "connect hook program",
        err: io::Error::other(format!("unresolved jump to {label} ({name})")),
    })?;
    let code: Vec<u8> = insns.iter().flat_map(|i| i.encode()).collect();
    let prog = sys::prog_load_raw_tracepoint(&code, PROG_NAME)?;
    let link = sys::attach(&prog, tracepoint).map_err(|err| HookError::Sys {
        what: "cannot attach the connect hook to its tracepoint",
        err: io::Error::new(err.kind(), format!("{name}: {err}")),
    })?;
    Ok([prog, link])
}

/// A lookup handle on a [`ConnectLog`]'s records.
pub struct ConnectReader {
    /// TCP connects.
    tcp: std::sync::Arc<RingRecords>,
    /// UDP sends, connected and unconnected, and the other datagram protocols'.
    sends: std::sync::Arc<RingRecords>,
    netns: u32,
    udp: UdpRecords,
    /// Whether every TCP connect files its record before its first packet (`sock_ops`).
    tcp_at_connect: bool,
    /// The machine's other network namespaces, for flows forwarded from them.
    elsewhere: Namespaces,
}

impl ConnectReader {
    /// The record of `t` filed in namespace `netns`: see [`Connects::connector`].
    fn connector_in(&self, netns: u32, t: &Tuple) -> io::Result<Option<Connector>> {
        let find = |r: &RingRecords, k: &[u8; KEY_LEN]| r.find(k).map(|v| connector(&v));
        Ok(match t.proto {
            Proto::Tcp => find(&self.tcp, &key(netns, t)),
            Proto::Udp | Proto::UdpLite | Proto::Sctp => {
                let k = key(netns, t);
                newer(find(&self.sends, &k), find(&self.sends, &wildcard_key(k)))
            }
            // A ping socket's record under its echo id, else a raw socket's under the
            // protocol: see `udp_program`.
            Proto::Icmp | Proto::Icmpv6 => {
                let id = t.icmp.map_or(0, |i| i.id);
                find(&self.sends, &bare_key(netns, t, id))
                    .or_else(|| find(&self.sends, &bare_key(netns, t, 0)))
            }
            _ => find(&self.sends, &bare_key(netns, t, 0)),
        })
    }

    /// The newest record of `t` in the namespaces known, the list read again once if none.
    fn in_known(&self, t: &Tuple) -> io::Result<Option<Connector>> {
        let mut best = None;
        for &ns in self.elsewhere.known() {
            best = newer(best, self.connector_in(ns, t)?);
        }
        Ok(best)
    }
}

fn newer(a: Option<Connector>, b: Option<Connector>) -> Option<Connector> {
    match (a, b) {
        (Some(a), Some(b)) => Some(if b.at_boot_ns > a.at_boot_ns { b } else { a }),
        (a, b) => a.or(b),
    }
}

impl Connects for ConnectReader {
    /// A TCP flow's connect record; a UDP flow's newest send record, under its tuple or,
    /// filed by a socket that let routing choose its source, under its tuple with no local
    /// address ([`wildcard_key`]). Both are asked and the newer wins: the exact key may hold
    /// an older send of another socket sharing the port.
    fn connector(&mut self, t: &Tuple) -> io::Result<Option<Connector>> {
        self.connector_in(self.netns, t)
    }
    fn udp_records(&self) -> UdpRecords {
        self.udp
    }
    fn tcp_at_connect(&self) -> bool {
        self.tcp_at_connect
    }
    fn connector_elsewhere(&mut self, t: &Tuple) -> io::Result<Option<Connector>> {
        if let Some(c) = self.in_known(t)? {
            return Ok(Some(c));
        }
        if !self.elsewhere.rescan() {
            return Ok(None);
        }
        self.in_known(t)
    }
}

#[cfg(test)]
#[path = "connect_hook_tests.rs"]
mod tests;
