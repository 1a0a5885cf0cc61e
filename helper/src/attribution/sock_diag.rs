//! [`Sockets`] over NETLINK_SOCK_DIAG (inet_diag): the kernel's own socket tables.
//!
//! Thin on purpose: it builds requests with `netlink-packet-sock-diag`, sends them on one
//! socket kept open for the helper's life, and turns answers into [`SockEntry`]. The decisions
//! (which answer belongs to which flow) live in the parent module, tested without a kernel.

use std::io;
use std::net::IpAddr;

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_DUMP, NLM_F_REQUEST,
};
use netlink_packet_sock_diag::{
    constants::{AF_INET, AF_INET6, IPPROTO_SCTP, IPPROTO_TCP, IPPROTO_UDP, IPPROTO_UDPLITE},
    inet::{ExtensionFlags, InetRequest, InetResponse, SocketId, StateFlags},
    SockDiagMessage,
};
use netlink_sys::{protocols::NETLINK_SOCK_DIAG, Socket, SocketAddr};

use super::{SockEntry, Sockets};
use crate::flow::{Family, Proto, Tuple};

/// The "no cookie" value: without it the kernel insists on matching a socket cookie.
const NO_COOKIE: [u8; 8] = [0xff; 8];

pub struct SockDiag {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl SockDiag {
    pub fn open() -> io::Result<SockDiag> {
        let mut socket = Socket::new(NETLINK_SOCK_DIAG)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(SockDiag {
            socket,
            seq: 0,
            buf: vec![0; 64 * 1024],
        })
    }

    /// Sends `req` and collects the answers; with `port`, a dump answers only for sockets on
    /// that local port (a filter the kernel runs, see [`port_filter`]).
    fn request(
        &mut self,
        req: InetRequest,
        dump: bool,
        port: Option<u16>,
    ) -> io::Result<Vec<SockEntry>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut header = NetlinkHeader::default();
        header.flags = NLM_F_REQUEST | if dump { NLM_F_DUMP } else { 0 };
        header.sequence_number = seq;
        let mut msg = NetlinkMessage::new(header, SockDiagMessage::InetRequest(req).into());
        msg.finalize();
        let mut out = vec![0; msg.buffer_len()];
        msg.serialize(&mut out);
        if let Some(port) = port {
            out.extend_from_slice(&port_filter(port));
            let len = u32::try_from(out.len()).unwrap_or(u32::MAX);
            out[..4].copy_from_slice(&len.to_ne_bytes());
        }
        self.socket.send(&out, 0)?;

        let mut entries = Vec::new();
        loop {
            let n = self.socket.recv(&mut &mut self.buf[..], 0)?;
            let mut offset = 0;
            while offset < n {
                let bytes = &self.buf[offset..n];
                let msg = NetlinkMessage::<SockDiagMessage>::deserialize(bytes)
                    .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = msg.header.length as usize;
                if len == 0 {
                    break;
                }
                offset += (len + 3) & !3;
                if msg.header.sequence_number != seq {
                    // A late answer to an earlier request that timed out or errored.
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::InnerMessage(SockDiagMessage::InetResponse(r)) => {
                        if let Some(e) = entry(&r) {
                            entries.push(e);
                        }
                        if !dump {
                            return Ok(entries);
                        }
                    }
                    NetlinkPayload::Done(_) => return Ok(entries),
                    NetlinkPayload::Error(e) => {
                        // ENOENT: no such socket. Anything else is a real error.
                        return match e.code {
                            None => Ok(entries),
                            Some(code) if -code.get() == libc::ENOENT => Ok(entries),
                            Some(code) => Err(io::Error::from_raw_os_error(-code.get())),
                        };
                    }
                    _ => {}
                }
            }
        }
    }
}

/// `INET_DIAG_REQ_BYTECODE`: the attribute of a dump request that filters in the kernel.
const INET_DIAG_REQ_BYTECODE: u16 = 1;
const INET_DIAG_BC_NOP: u8 = 0;
const INET_DIAG_BC_S_GE: u8 = 2;
const INET_DIAG_BC_S_LE: u8 = 3;

/// The attribute asking for sockets whose local port is `port`: "sport >= port, then
/// sport <= port" (`S_EQ` only came in Linux 4.16). Each comparison is an op (code, bytes to
/// jump when true, when false) followed by one that carries the port; jumping to the end
/// accepts, jumping 4 past it rejects.
///
/// Why: a dump of every UDP socket ran for each UDP flow whose socket the exact lookup could
/// not name, and with 10,000 sockets bound it took 10–22 ms (bench row f); filtered, the
/// kernel sends one answer instead of 10,000.
fn port_filter(port: u16) -> [u8; 20] {
    let op = |code: u8, yes: u8, no: u16| {
        let mut b = [code, yes, 0, 0];
        b[2..].copy_from_slice(&no.to_ne_bytes());
        b
    };
    let mut out = [0u8; 20];
    out[..2].copy_from_slice(&20u16.to_ne_bytes());
    out[2..4].copy_from_slice(&INET_DIAG_REQ_BYTECODE.to_ne_bytes());
    out[4..8].copy_from_slice(&op(INET_DIAG_BC_S_GE, 8, 20));
    out[8..12].copy_from_slice(&op(INET_DIAG_BC_NOP, 0, port));
    out[12..16].copy_from_slice(&op(INET_DIAG_BC_S_LE, 8, 12));
    out[16..20].copy_from_slice(&op(INET_DIAG_BC_NOP, 0, port));
    out
}

fn proto_number(p: Proto) -> Option<u8> {
    match p {
        Proto::Tcp => Some(IPPROTO_TCP),
        Proto::Udp => Some(IPPROTO_UDP),
        Proto::UdpLite => Some(IPPROTO_UDPLITE),
        Proto::Sctp => Some(IPPROTO_SCTP),
        _ => None,
    }
}

fn af(f: Family) -> u8 {
    match f {
        Family::Ipv4 => AF_INET,
        Family::Ipv6 => AF_INET6,
    }
}

fn entry(r: &InetResponse) -> Option<SockEntry> {
    let h = &r.header;
    let id = &h.socket_id;
    let family = match h.family {
        AF_INET => Family::Ipv4,
        AF_INET6 => Family::Ipv6,
        _ => return None,
    };
    Some(SockEntry {
        family,
        proto: Proto::Tcp, // replaced by the caller, which knows what it asked for
        state: h.state,
        src: id.source_address,
        sport: id.source_port,
        dst: id.destination_address,
        dport: id.destination_port,
        uid: h.uid,
        inode: u64::from(h.inode),
    })
}

fn socket_id(family: Family, src: IpAddr, sport: u16, dst: IpAddr, dport: u16) -> SocketId {
    let mut id = match family {
        Family::Ipv4 => SocketId::new_v4(),
        Family::Ipv6 => SocketId::new_v6(),
    };
    id.source_address = src;
    id.source_port = sport;
    id.destination_address = dst;
    id.destination_port = dport;
    id.cookie = NO_COOKIE;
    id
}

impl Sockets for SockDiag {
    fn exact(&mut self, family: Family, t: &Tuple) -> io::Result<Option<SockEntry>> {
        let Some(protocol) = proto_number(t.proto) else {
            return Ok(None);
        };
        if Family::of(&t.src) != family || Family::of(&t.dst) != family {
            return Ok(None);
        }
        // The kernel's UDP lookup reads the request from the packet's point of view ("src and
        // dst are swapped for historical reasons", net/ipv4/udp_diag.c): the local end goes in
        // `dst`. TCP's reads it from the socket's. Get this wrong and UDP silently answers
        // with the receiving socket.
        let id = match t.proto {
            Proto::Udp | Proto::UdpLite => socket_id(family, t.dst, t.dport, t.src, t.sport),
            _ => socket_id(family, t.src, t.sport, t.dst, t.dport),
        };
        let req = InetRequest {
            family: af(family),
            protocol,
            extensions: ExtensionFlags::empty(),
            states: StateFlags::all(),
            socket_id: id,
        };
        Ok(self.request(req, false, None)?.pop().map(|mut e| {
            e.proto = t.proto;
            e
        }))
    }

    fn dump(
        &mut self,
        family: Family,
        proto: Proto,
        listening_only: bool,
        local_port: u16,
    ) -> io::Result<Vec<SockEntry>> {
        let Some(protocol) = proto_number(proto) else {
            return Ok(Vec::new());
        };
        let mut id = socket_id(family, unspecified(family), 0, unspecified(family), 0);
        id.cookie = [0; 8];
        let req = InetRequest {
            family: af(family),
            protocol,
            extensions: ExtensionFlags::empty(),
            states: if listening_only {
                StateFlags::LISTEN
            } else {
                StateFlags::all()
            },
            socket_id: id,
        };
        let mut entries = self.request(req, true, Some(local_port))?;
        for e in &mut entries {
            e.proto = proto;
        }
        Ok(entries)
    }
}

fn unspecified(f: Family) -> IpAddr {
    match f {
        Family::Ipv4 => IpAddr::from([0u8; 4]),
        Family::Ipv6 => IpAddr::from([0u8; 16]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dump_filtered_by_port_answers_for_that_port_only() {
        let mine = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
        let others: Vec<_> = (0..20)
            .map(|_| std::net::UdpSocket::bind("127.0.0.1:0").expect("bind"))
            .collect();
        let port = mine.local_addr().expect("addr").port();
        let mut d = SockDiag::open().expect("sock_diag");
        let got = d.dump(Family::Ipv4, Proto::Udp, false, port).expect("dump");
        let inode = rustix::fs::fstat(&mine).expect("fstat").st_ino;
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!((got[0].sport, got[0].inode), (port, inode));
        drop(others);
    }
}
