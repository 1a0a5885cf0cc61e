//! Inbound flows to a container's published port: the listener is in the container's
//! network namespace.
//!
//! A port published by Docker or Podman (`-p 8088:80`) is a DNAT rule: a packet to this
//! machine's port 8088 is sent on to the container's address, port 80. conntrack shows the
//! flow with the container's end in its reply tuple, and no socket in the helper's namespace
//! can receive it: a host socket listening on the wildcard address and the same port is not
//! it. The listener is in the container's namespace, and `/proc/PID/net/tcp` of any process
//! in that namespace lists that namespace's sockets, with their inodes; the inode names the
//! holder as for any other socket. No `setns`, no netlink socket per namespace.
//!
//! A hostile program can make namespaces of its own (with a user namespace, unprivileged),
//! give one the container's address and listen there on the same port, even from a socket
//! it hands to a whitelisted program. So a namespace counts only when a process of the
//! helper's own user namespace is in it (an unprivileged program's namespaces are owned by a
//! user namespace of its own, and so are its processes there; rootful Docker and Podman
//! containers are in the machine's), only when it has the address, and only when exactly
//! one namespace qualifies; a list cut at [`super::netns::NAMESPACES_ASKED`] names nobody.
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

use super::netns::Namespaces;
use crate::flow::Proto;

/// A socket as `/proc/net/{tcp,tcp6,udp,udp6}` lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcSocket {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// The TCP state number (10 listening), 7 for an unconnected UDP socket.
    pub state: u8,
    pub uid: u32,
    pub inode: u64,
}

/// What the other namespaces hold for one local end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listening {
    /// The helper's own namespace has the address: its own sockets are the ones to ask.
    Here,
    None,
    /// One namespace with the address has a listener (or bound UDP socket) for it.
    One {
        socket: ProcSocket,
        netns: u32,
    },
    /// This many namespaces have one: none is named.
    Several(usize),
}

/// How long an answer is kept: a listener lives long, and a published port may take many
/// flows a second, each of which would read every namespace's tables again.
const KEPT: Duration = Duration::from_secs(1);
const KEPT_LIMIT: usize = 1024;

/// The other namespaces' listeners, found through `/proc/PID/net`.
pub struct Elsewhere {
    namespaces: Namespaces,
    kept: HashMap<(Proto, IpAddr, u16), (Instant, Listening)>,
}

impl Elsewhere {
    pub fn new(namespaces: Namespaces) -> Elsewhere {
        Elsewhere {
            namespaces,
            kept: HashMap::new(),
        }
    }

    /// Who listens at `addr`:`port` (`proto`) in another namespace of this machine.
    pub fn listener(&mut self, proto: Proto, addr: IpAddr, port: u16) -> Listening {
        let addr = addr.to_canonical();
        let key = (proto, addr, port);
        if let Some((at, l)) = self.kept.get(&key) {
            if at.elapsed() < KEPT {
                return *l;
            }
        }
        let l = self.look(proto, addr, port);
        if self.kept.len() >= KEPT_LIMIT {
            self.kept.clear();
        }
        self.kept.insert(key, (Instant::now(), l));
        l
    }

    fn look(&mut self, proto: Proto, addr: IpAddr, port: u16) -> Listening {
        let root = self.namespaces.root().to_path_buf();
        if owns(&root.join("self/net"), addr) {
            return Listening::Here;
        }
        self.namespaces.rescan();
        if self.namespaces.truncated() {
            return Listening::Several(self.namespaces.known().len());
        }
        let Some(own_user) = inode(&root.join("self/ns/user")) else {
            return Listening::None;
        };
        let mut found = Vec::new();
        for &ns in self.namespaces.known() {
            let Some(pid) = self.namespaces.member(ns) else {
                continue;
            };
            let dir = root.join(pid.to_string());
            // Still in the namespace it was listed for (its pid may be another's by now),
            // and of the machine's user namespace.
            if inode(&dir.join("ns/net")) != Some(u64::from(ns))
                || inode(&dir.join("ns/user")) != Some(own_user)
            {
                continue;
            }
            let net = dir.join("net");
            if !owns(&net, addr) {
                continue;
            }
            if let Some(socket) = listening_in(&net, proto, addr, port) {
                found.push((socket, ns));
            }
        }
        match found.as_slice() {
            [] => Listening::None,
            [(socket, netns)] => Listening::One {
                socket: *socket,
                netns: *netns,
            },
            more => Listening::Several(more.len()),
        }
    }
}

fn inode(path: &Path) -> Option<u64> {
    std::fs::metadata(path).ok().map(|m| m.ino())
}

/// At most this much of one `/proc/PID/net` file is read: a namespace with a router's
/// table has a `fib_trie` of megabytes.
const FILE_LIMIT: u64 = 4 << 20;

fn read_capped(path: &Path) -> Option<String> {
    String::from_utf8(super::context::read_limited(path, FILE_LIMIT)?).ok()
}

/// Whether the namespace whose `/proc/PID/net` is `net` has `addr` on an interface.
fn owns(net: &Path, addr: IpAddr) -> bool {
    match addr {
        IpAddr::V4(a) => {
            read_capped(&net.join("fib_trie")).is_some_and(|t| local_v4(&t).contains(&a))
        }
        IpAddr::V6(a) => {
            read_capped(&net.join("if_inet6")).is_some_and(|t| local_v6(&t).contains(&a))
        }
    }
}

/// The socket of the namespace at `net` listening (TCP) or bound (UDP) at `addr`:`port`:
/// one bound to that very address first, as the kernel prefers it, else one on the wildcard
/// address (an IPv6 one takes IPv4 too; an IPv4 one no IPv6).
fn listening_in(net: &Path, proto: Proto, addr: IpAddr, port: u16) -> Option<ProcSocket> {
    let (v4, v6, state) = match proto {
        Proto::Tcp => ("tcp", "tcp6", super::TCP_LISTEN),
        Proto::Udp => ("udp", "udp6", 7),
        Proto::UdpLite => ("udplite", "udplite6", 7),
        _ => return None,
    };
    let files: &[&str] = match addr {
        IpAddr::V4(_) => &[v4, v6],
        IpAddr::V6(_) => &[v6],
    };
    let mut sockets = Vec::new();
    for f in files {
        if let Some(text) = read_capped(&net.join(f)) {
            sockets.extend(
                parse_table(&text)
                    .into_iter()
                    .filter(|s| s.state == state && s.inode != 0 && s.local.port() == port),
            );
        }
    }
    let exact = |s: &&ProcSocket| s.local.ip().to_canonical() == addr;
    let wildcard = |s: &&ProcSocket| s.local.ip().to_canonical().is_unspecified();
    sockets
        .iter()
        .find(exact)
        .or_else(|| sockets.iter().find(wildcard))
        .copied()
}

/// The sockets of a `/proc/net/{tcp,udp}{,6}` table; lines that do not parse are left out.
pub fn parse_table(text: &str) -> Vec<ProcSocket> {
    text.lines().skip(1).filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<ProcSocket> {
    let f: Vec<&str> = line.split_whitespace().collect();
    Some(ProcSocket {
        local: endpoint(f.get(1)?)?,
        remote: endpoint(f.get(2)?)?,
        state: u8::from_str_radix(f.get(3)?, 16).ok()?,
        uid: f.get(7)?.parse().ok()?,
        inode: f.get(9)?.parse().ok()?,
    })
}

/// `0100007F:0050`: the address as the kernel's words in this machine's byte order, the
/// port in hex.
fn endpoint(s: &str) -> Option<SocketAddr> {
    let (addr, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let word = |i: usize| {
        addr.get(i * 8..i * 8 + 8)
            .and_then(|w| u32::from_str_radix(w, 16).ok())
            .map(u32::to_ne_bytes)
    };
    let ip = match addr.len() {
        8 => IpAddr::V4(Ipv4Addr::from(word(0)?)),
        32 => {
            let mut b = [0u8; 16];
            for i in 0..4 {
                b[i * 4..i * 4 + 4].copy_from_slice(&word(i)?);
            }
            IpAddr::V6(Ipv6Addr::from(b))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// The namespace's own IPv4 addresses, from `/proc/net/fib_trie`: each leaf followed by a
/// `/32 host LOCAL` line.
pub fn local_v4(fib_trie: &str) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    let mut leaf = None;
    for line in fib_trie.lines() {
        let t = line.trim_start();
        if let Some(a) = t.strip_prefix("|-- ").or_else(|| t.strip_prefix("+-- ")) {
            leaf = a.split(['/', ' ']).next().and_then(|a| a.parse().ok());
        } else if t.starts_with("/32 host LOCAL") {
            if let Some(a) = leaf {
                if !out.contains(&a) {
                    out.push(a);
                }
            }
        }
    }
    out
}

/// The namespace's own IPv6 addresses, from `/proc/net/if_inet6` (32 hex digits first).
pub fn local_v6(if_inet6: &str) -> Vec<Ipv6Addr> {
    if_inet6
        .lines()
        .filter_map(|l| {
            let hex = l.split_whitespace().next()?;
            let v = u128::from_str_radix(hex, 16)
                .ok()
                .filter(|_| hex.len() == 32)?;
            Some(Ipv6Addr::from(v))
        })
        .collect()
}

#[cfg(test)]
#[path = "listeners_tests.rs"]
mod tests;
