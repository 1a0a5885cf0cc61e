//! ctnetlink: the kernel's conntrack events, read from a NETLINK_NETFILTER socket and parsed
//! into [`Flow`]s.
//!
//! The parser is written here, over `netlink-packet-core`'s checked buffers, because
//! `netlink-packet-netfilter` does not cover what we need (ICMP type/code/id, the conntrack
//! id and zone) for event messages. It is total: every length is checked before use, unknown
//! attributes are skipped, and malformed input is an error value, never a panic. Its tests run
//! on message bytes captured from a real kernel (`tests/data/`).

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;
use std::time::Duration;

use netlink_packet_core::{NetlinkBuffer, NlaBuffer, NlasIterator};
use netlink_sys::{protocols::NETLINK_NETFILTER, Socket, SocketAddr};

use crate::flow::{Flow, FlowEvent, Icmp, Proto, Tuple};

/// nfnetlink subsystem of conntrack, and its message types.
const NFNL_SUBSYS_CTNETLINK: u16 = 1;
const IPCTNL_MSG_CT_NEW: u16 = 0;
const IPCTNL_MSG_CT_DELETE: u16 = 2;
const NLMSG_ERROR: u16 = 2;
const NLMSG_OVERRUN: u16 = 4;
/// Multicast groups (NFNLGRP_*).
pub const GROUP_NEW: u32 = 1;
pub const GROUP_DESTROY: u32 = 3;

const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;

// enum ctattr_type
const CTA_TUPLE_ORIG: u16 = 1;
const CTA_TUPLE_REPLY: u16 = 2;
const CTA_PROTOINFO: u16 = 4;
const CTA_MARK: u16 = 8;
const CTA_ID: u16 = 12;
const CTA_ZONE: u16 = 18;
// enum ctattr_tuple
const CTA_PROTOINFO_TCP: u16 = 1;
const CTA_PROTOINFO_TCP_STATE: u16 = 1;

const CTA_TUPLE_IP: u16 = 1;
const CTA_TUPLE_PROTO: u16 = 2;
const CTA_TUPLE_ZONE: u16 = 3;
// enum ctattr_ip
const CTA_IP_V4_SRC: u16 = 1;
const CTA_IP_V4_DST: u16 = 2;
const CTA_IP_V6_SRC: u16 = 3;
const CTA_IP_V6_DST: u16 = 4;
// enum ctattr_l4proto
const CTA_PROTO_NUM: u16 = 1;
const CTA_PROTO_SRC_PORT: u16 = 2;
const CTA_PROTO_DST_PORT: u16 = 3;
const CTA_PROTO_ICMP_ID: u16 = 4;
const CTA_PROTO_ICMP_TYPE: u16 = 5;
const CTA_PROTO_ICMP_CODE: u16 = 6;
const CTA_PROTO_ICMPV6_ID: u16 = 7;
const CTA_PROTO_ICMPV6_TYPE: u16 = 8;
const CTA_PROTO_ICMPV6_CODE: u16 = 9;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("malformed netlink message: {0}")]
    Netlink(String),
    #[error("conntrack message without {0}")]
    Missing(&'static str),
    #[error("conntrack attribute {name} has length {len}, expected {expected}")]
    BadLength {
        name: &'static str,
        len: usize,
        expected: usize,
    },
}

/// One message of a datagram from the conntrack socket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Flow(Flow),
    /// The kernel reported an error (negative errno) on the socket.
    Error(i32),
    /// Anything else (other subsystems or message types): skipped.
    Ignored,
}

/// Parses every netlink message in one datagram. A malformed message ends the datagram (its
/// length cannot be trusted to find the next one); the messages before it are kept.
pub fn parse_datagram(buf: &[u8]) -> Vec<Result<Message, ParseError>> {
    let mut out = Vec::new();
    let mut rest = buf;
    while rest.len() >= NLMSG_HDRLEN {
        let nl = match NetlinkBuffer::new_checked(rest) {
            Ok(nl) => nl,
            Err(e) => {
                out.push(Err(ParseError::Netlink(e.to_string())));
                break;
            }
        };
        let len = nl.length() as usize;
        out.push(parse_message(nl.message_type(), &rest[NLMSG_HDRLEN..len]));
        let aligned = (len + 3) & !3;
        rest = rest.get(aligned..).unwrap_or(&[]);
    }
    out
}

fn parse_message(kind: u16, payload: &[u8]) -> Result<Message, ParseError> {
    if kind == NLMSG_ERROR {
        let code = payload
            .get(..4)
            .and_then(|b| b.try_into().ok())
            .map(i32::from_ne_bytes)
            .ok_or(ParseError::Missing("error code"))?;
        return Ok(Message::Error(code));
    }
    if kind == NLMSG_OVERRUN {
        return Ok(Message::Error(-libc::ENOBUFS));
    }
    if kind >> 8 != NFNL_SUBSYS_CTNETLINK {
        return Ok(Message::Ignored);
    }
    let event = match kind & 0xff {
        IPCTNL_MSG_CT_NEW => FlowEvent::New,
        IPCTNL_MSG_CT_DELETE => FlowEvent::Destroy,
        _ => return Ok(Message::Ignored),
    };
    let attrs = payload
        .get(NFGENMSG_LEN..)
        .ok_or(ParseError::Missing("nfgenmsg header"))?;
    parse_flow(event, attrs).map(Message::Flow)
}

fn nlas(buf: &[u8]) -> impl Iterator<Item = Result<NlaBuffer<&[u8]>, ParseError>> {
    NlasIterator::new(buf).map(|r| r.map_err(|e| ParseError::Netlink(e.to_string())))
}

fn fixed<const N: usize>(v: &[u8], name: &'static str) -> Result<[u8; N], ParseError> {
    v.try_into().map_err(|_| ParseError::BadLength {
        name,
        len: v.len(),
        expected: N,
    })
}

fn be16(v: &[u8], name: &'static str) -> Result<u16, ParseError> {
    fixed::<2>(v, name).map(u16::from_be_bytes)
}

fn be32(v: &[u8], name: &'static str) -> Result<u32, ParseError> {
    fixed::<4>(v, name).map(u32::from_be_bytes)
}

fn u8_(v: &[u8], name: &'static str) -> Result<u8, ParseError> {
    fixed::<1>(v, name).map(|b| b[0])
}

/// Parses a flow's attributes (after the nfgenmsg header).
pub fn parse_flow(event: FlowEvent, attrs: &[u8]) -> Result<Flow, ParseError> {
    let mut orig = None;
    let mut reply = None;
    let mut id = None;
    let mut mark = None;
    let mut zone = None;
    let mut tcp_state = None;
    for nla in nlas(attrs) {
        let nla = nla?;
        let v = nla.value();
        match nla.kind() {
            CTA_PROTOINFO => tcp_state = parse_tcp_state(v)?,
            CTA_TUPLE_ORIG => orig = Some(parse_tuple(v)?),
            CTA_TUPLE_REPLY => reply = Some(parse_tuple(v)?),
            CTA_ID => id = Some(be32(v, "CTA_ID")?),
            CTA_MARK => mark = Some(be32(v, "CTA_MARK")?),
            CTA_ZONE => zone = Some(be16(v, "CTA_ZONE")?),
            _ => {}
        }
    }
    let orig = orig.ok_or(ParseError::Missing("CTA_TUPLE_ORIG"))?;
    Ok(Flow {
        event,
        id,
        zone,
        mark,
        orig,
        reply,
        tcp_state,
        seen_from_syn: false,
        reply_seen_from_syn: false,
        began_before: false,
    })
}

/// The TCP state in a `CTA_PROTOINFO`, if it holds a TCP one.
fn parse_tcp_state(buf: &[u8]) -> Result<Option<u8>, ParseError> {
    for nla in nlas(buf) {
        let nla = nla?;
        if nla.kind() != CTA_PROTOINFO_TCP {
            continue;
        }
        for inner in nlas(nla.value()) {
            let inner = inner?;
            if inner.kind() == CTA_PROTOINFO_TCP_STATE {
                return u8_(inner.value(), "CTA_PROTOINFO_TCP_STATE").map(Some);
            }
        }
    }
    Ok(None)
}

#[derive(Default)]
struct L4 {
    proto: Option<u8>,
    sport: u16,
    dport: u16,
    icmp_type: Option<u8>,
    icmp_code: u8,
    icmp_id: u16,
}

fn parse_tuple(buf: &[u8]) -> Result<Tuple, ParseError> {
    let (mut src, mut dst) = (None, None);
    let mut l4 = L4::default();
    for nla in nlas(buf) {
        let nla = nla?;
        match nla.kind() {
            CTA_TUPLE_IP => {
                for ip in nlas(nla.value()) {
                    let ip = ip?;
                    let v = ip.value();
                    match ip.kind() {
                        CTA_IP_V4_SRC => {
                            src = Some(IpAddr::V4(Ipv4Addr::from(fixed::<4>(v, "CTA_IP_V4_SRC")?)))
                        }
                        CTA_IP_V4_DST => {
                            dst = Some(IpAddr::V4(Ipv4Addr::from(fixed::<4>(v, "CTA_IP_V4_DST")?)))
                        }
                        CTA_IP_V6_SRC => {
                            src = Some(IpAddr::V6(Ipv6Addr::from(fixed::<16>(v, "CTA_IP_V6_SRC")?)))
                        }
                        CTA_IP_V6_DST => {
                            dst = Some(IpAddr::V6(Ipv6Addr::from(fixed::<16>(v, "CTA_IP_V6_DST")?)))
                        }
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_PROTO => {
                for p in nlas(nla.value()) {
                    let p = p?;
                    let v = p.value();
                    match p.kind() {
                        CTA_PROTO_NUM => l4.proto = Some(u8_(v, "CTA_PROTO_NUM")?),
                        CTA_PROTO_SRC_PORT => l4.sport = be16(v, "CTA_PROTO_SRC_PORT")?,
                        CTA_PROTO_DST_PORT => l4.dport = be16(v, "CTA_PROTO_DST_PORT")?,
                        CTA_PROTO_ICMP_ID | CTA_PROTO_ICMPV6_ID => {
                            l4.icmp_id = be16(v, "CTA_PROTO_ICMP_ID")?
                        }
                        CTA_PROTO_ICMP_TYPE | CTA_PROTO_ICMPV6_TYPE => {
                            l4.icmp_type = Some(u8_(v, "CTA_PROTO_ICMP_TYPE")?)
                        }
                        CTA_PROTO_ICMP_CODE | CTA_PROTO_ICMPV6_CODE => {
                            l4.icmp_code = u8_(v, "CTA_PROTO_ICMP_CODE")?
                        }
                        _ => {}
                    }
                }
            }
            CTA_TUPLE_ZONE => {}
            _ => {}
        }
    }
    let proto = Proto::from_number(l4.proto.ok_or(ParseError::Missing("CTA_PROTO_NUM"))?);
    let icmp = if proto.is_icmp() {
        l4.icmp_type.map(|kind| Icmp {
            kind,
            code: l4.icmp_code,
            id: l4.icmp_id,
        })
    } else {
        None
    };
    Ok(Tuple {
        proto,
        src: src.ok_or(ParseError::Missing("source address"))?,
        dst: dst.ok_or(ParseError::Missing("destination address"))?,
        sport: if proto.has_ports() { l4.sport } else { 0 },
        dport: if proto.has_ports() { l4.dport } else { 0 },
        icmp,
    })
}

/// A subscription to conntrack events.
pub struct EventSocket {
    socket: Socket,
    inode: u64,
    rcvbuf: usize,
    groups: Vec<u32>,
    /// The socket's drop counter when last read, to turn ENOBUFS into a count of lost events.
    drops_seen: u64,
    /// How long `recv` waits before it gives up with `WouldBlock`; `None`: until an event.
    idle_wake: Option<Duration>,
}

impl EventSocket {
    /// Subscribes to the given groups with a receive buffer of `rcvbuf` bytes. SO_RCVBUFFORCE
    /// (root) lifts the `rmem_max` cap; without the privilege the plain size is tried.
    pub fn open(groups: &[u32], rcvbuf: usize) -> io::Result<EventSocket> {
        let mut socket = Socket::new(NETLINK_NETFILTER)?;
        socket.bind(&SocketAddr::new(0, 0))?;
        for g in groups {
            socket.add_membership(*g)?;
        }
        let size = rcvbuf.min(i32::MAX as usize);
        if nix::sys::socket::setsockopt(
            &socket.as_fd(),
            nix::sys::socket::sockopt::RcvBufForce,
            &size,
        )
        .is_err()
        {
            socket.set_rx_buf_sz(size)?;
        }
        let inode = nix::sys::stat::fstat(socket.as_fd())
            .map(|s| s.st_ino)
            .unwrap_or(0);
        let mut s = EventSocket {
            socket,
            inode,
            rcvbuf,
            groups: groups.to_vec(),
            drops_seen: 0,
            idle_wake: None,
        };
        s.drops_seen = s.kernel_drops().unwrap_or(0);
        Ok(s)
    }

    /// A new subscription like this one, in its place.
    pub fn reopen(&mut self) -> io::Result<()> {
        let wake = self.idle_wake;
        *self = EventSocket::open(&self.groups, self.rcvbuf)?;
        self.set_idle_wake(wake)
    }

    /// Makes `recv` give up with `WouldBlock` after `after` without an event (`None`: wait
    /// for one however long it takes, the default).
    pub fn set_idle_wake(&mut self, after: Option<Duration>) -> io::Result<()> {
        // A zero timeout means none.
        use nix::sys::time::{TimeVal, TimeValLike};
        let micros = after.unwrap_or(Duration::ZERO).as_micros();
        let tv = TimeVal::microseconds(i64::try_from(micros).unwrap_or(i64::MAX));
        nix::sys::socket::setsockopt(
            &self.socket.as_fd(),
            nix::sys::socket::sockopt::ReceiveTimeout,
            &tv,
        )?;
        self.idle_wake = after;
        Ok(())
    }

    /// Receives one datagram into `buf`.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        self.socket.recv(&mut &mut buf[..], 0)
    }

    /// The datagrams queued, without waiting, as many as `bufs` has buffers, each into its
    /// own (`recvmmsg`: one system call for them all): each one's length, `None` for one its
    /// buffer cut short. `WouldBlock` when none is queued.
    pub fn recv_many_nowait(&self, bufs: &mut [Vec<u8>]) -> io::Result<Vec<Option<usize>>> {
        use nix::sys::socket::{recvmmsg, MsgFlags, MultiHeaders};
        use std::io::IoSliceMut;
        use std::os::fd::AsRawFd;
        let mut headers = MultiHeaders::<()>::preallocate(bufs.len(), None);
        let mut iovs: Vec<[IoSliceMut<'_>; 1]> = bufs
            .iter_mut()
            .map(|b| [IoSliceMut::new(&mut b[..])])
            .collect();
        let got = recvmmsg(
            self.socket.as_raw_fd(),
            &mut headers,
            iovs.iter_mut(),
            MsgFlags::MSG_DONTWAIT,
            None,
        )
        .map_err(io::Error::from)?;
        Ok(got
            .map(|m| (!m.flags.contains(MsgFlags::MSG_TRUNC)).then_some(m.bytes))
            .collect())
    }

    /// The kernel's drop counter of this socket, from /proc/net/netlink.
    fn kernel_drops(&self) -> Option<u64> {
        let text = std::fs::read_to_string("/proc/net/netlink").ok()?;
        netlink_drops(&text, self.inode)
    }

    /// How many events the kernel dropped since the last call. After an ENOBUFS at least
    /// one was, whatever the counter says.
    pub fn take_lost(&mut self, after_enobufs: bool) -> u64 {
        let lost = match self.kernel_drops() {
            Some(now) => {
                let lost = now.saturating_sub(self.drops_seen);
                self.drops_seen = now;
                lost
            }
            None => 0,
        };
        if after_enobufs {
            lost.max(1)
        } else {
            lost
        }
    }
}

/// The `Drops` column of /proc/net/netlink for the socket with this inode.
pub fn netlink_drops(text: &str, inode: u64) -> Option<u64> {
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next()?.split_whitespace().collect();
    let drops_col = header.iter().position(|h| *h == "Drops")?;
    let inode_col = header.iter().position(|h| *h == "Inode")?;
    lines.find_map(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        (cols.get(inode_col)?.parse::<u64>().ok()? == inode)
            .then(|| cols.get(drops_col)?.parse().ok())
            .flatten()
    })
}

/// The kernel's error message for an overflowed socket, as one datagram: nlmsghdr (len 36,
/// NLMSG_ERROR), errno -ENOBUFS, and the original header.
#[cfg(test)]
pub(crate) fn enobufs_datagram() -> Vec<u8> {
    let mut err = vec![36, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    err.extend_from_slice(&(-libc::ENOBUFS).to_ne_bytes());
    err.extend_from_slice(&[0; 16]);
    err
}

#[cfg(test)]
#[path = "conntrack_tests.rs"]
mod tests;
