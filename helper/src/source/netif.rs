//! The machine's own addresses, kept current: read with getifaddrs, re-read whenever rtnetlink
//! announces an address change.

use std::io;
use std::net::IpAddr;

use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

use crate::direction::LocalAddrs;

/// rtnetlink multicast groups for address changes (RTMGRP_IPV4_IFADDR, RTMGRP_IPV6_IFADDR).
const RTMGRP_IPV4_IFADDR: u32 = 0x10;
const RTMGRP_IPV6_IFADDR: u32 = 0x100;

/// The current interface addresses of this network namespace.
pub fn local_addrs() -> io::Result<LocalAddrs> {
    let addrs = nix::ifaddrs::getifaddrs().map_err(io::Error::from)?;
    Ok(LocalAddrs::new(addrs.filter_map(|a| {
        let sa = a.address?;
        if let Some(v4) = sa.as_sockaddr_in() {
            Some(IpAddr::V4(v4.ip()))
        } else {
            sa.as_sockaddr_in6().map(|v6| IpAddr::V6(v6.ip()))
        }
    })))
}

/// A subscription to address changes. `wait` blocks until one happens.
pub struct AddrWatch {
    socket: Socket,
    buf: Vec<u8>,
}

impl AddrWatch {
    pub fn open() -> io::Result<AddrWatch> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind(&SocketAddr::new(0, RTMGRP_IPV4_IFADDR | RTMGRP_IPV6_IFADDR))?;
        Ok(AddrWatch {
            socket,
            buf: vec![0; 16 * 1024],
        })
    }

    /// Blocks until the kernel announces an address change (or drops announcements, which
    /// means the same: re-read).
    pub fn wait(&mut self) -> io::Result<()> {
        match self.socket.recv(&mut &mut self.buf[..], 0) {
            Ok(_) => Ok(()),
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => Ok(()),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_is_always_local() {
        let a = local_addrs().expect("getifaddrs");
        assert!(a.is_local(&"127.0.0.1".parse().expect("ip")));
    }
}
