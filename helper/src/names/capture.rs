//! The DNS answers this machine receives, from a packet socket with a classic BPF filter.
//!
//! The filter runs in the kernel and passes only UDP from port 53 (IPv4 unfragmented, IPv6
//! with no extension header), so the helper never sees other traffic. The socket is read
//! without blocking by the pipeline right before it names a flow's remote end: an answer that
//! reached the kernel before the program's connect is then already in the socket's queue.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use rustix::net::{AddressFamily, Protocol, SocketFlags, SocketType};

use crate::names::dns::DnsNames;

/// ETH_P_ALL, every protocol.
const ETH_P_ALL: u16 = 0x0003;
/// SKF_AD_OFF + SKF_AD_PROTOCOL: the packet's ethertype, for sockets without a link header.
const AD_PROTOCOL: u32 = 0xffff_f000;

/// `(udp or tcp) src port 53`, for IPv4 and IPv6, on a SOCK_DGRAM packet socket (data starts
/// at the IP header). UDP and TCP keep their source port in the same place. Jumps are
/// relative to the next instruction.
const FILTER: [libc::sock_filter; 18] = [
    ins(0x28, 0, 0, AD_PROTOCOL), // 0: A = ethertype
    ins(0x15, 0, 8, 0x0800),      // 1: IPv4? else 10
    ins(0x30, 0, 0, 9),           // 2: A = ip protocol
    ins(0x15, 1, 0, 17),          // 3: UDP? to 5
    ins(0x15, 0, 12, 6),          // 4: TCP? else drop
    ins(0x28, 0, 0, 6),           // 5: A = flags + fragment offset
    ins(0x45, 10, 0, 0x1fff),     // 6: a fragment? drop
    ins(0xb1, 0, 0, 0),           // 7: X = IP header length
    ins(0x48, 0, 0, 0),           // 8: A = source port
    ins(0x15, 6, 7, 53),          // 9: 53? accept : drop
    ins(0x15, 0, 6, 0x86dd),      // 10: IPv6? else drop
    ins(0x30, 0, 0, 6),           // 11: A = next header
    ins(0x15, 1, 0, 17),          // 12: UDP? to 14
    ins(0x15, 0, 3, 6),           // 13: TCP? else drop
    ins(0x28, 0, 0, 40),          // 14: A = source port
    ins(0x15, 0, 1, 53),          // 15: 53? accept : drop
    ins(0x06, 0, 0, 0xffff),      // 16: accept
    ins(0x06, 0, 0, 0),           // 17: drop
];

const fn ins(code: u16, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
    libc::sock_filter { code, jt, jf, k }
}

pub struct DnsCapture {
    fd: OwnedFd,
    buf: Vec<u8>,
}

impl DnsCapture {
    /// Opens the capture (needs CAP_NET_RAW, so before the helper drops its capabilities).
    pub fn open() -> io::Result<DnsCapture> {
        let fd = rustix::net::socket_with(
            AddressFamily::PACKET,
            SocketType::DGRAM,
            SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
            std::num::NonZeroU32::new(u32::from(ETH_P_ALL.to_be())).map(Protocol::from_raw),
        )?;
        attach_filter(&fd)?;
        Ok(DnsCapture {
            fd,
            buf: vec![0; 65536],
        })
    }

    /// Reads every captured packet waiting in the socket into `names`; returns how many.
    pub fn drain(&mut self, names: &mut DnsNames, now: std::time::Instant) -> usize {
        let mut n = 0;
        // Bounded: a flood of answers cannot keep the pipeline here.
        while n < 4096 {
            match rustix::net::recv(&self.fd, &mut self.buf, rustix::net::RecvFlags::DONTWAIT) {
                Ok((len, _)) => {
                    let len = len.min(self.buf.len());
                    names.observe_packet(&self.buf[..len], now);
                    n += 1;
                }
                Err(_) => break,
            }
        }
        n
    }
}

#[allow(unsafe_code)]
fn attach_filter(fd: &OwnedFd) -> io::Result<()> {
    let prog = libc::sock_fprog {
        len: FILTER.len() as u16,
        filter: FILTER.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points at a static, valid filter of `len` instructions; the kernel copies
    // it during the call and keeps no pointer to it.
    let rc = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_ATTACH_FILTER,
            std::ptr::addr_of!(prog).cast(),
            std::mem::size_of::<libc::sock_fprog>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_jump_of_the_filter_lands_inside_it() {
        for (i, f) in FILTER.iter().enumerate() {
            if f.code & 0x07 == 0x05 {
                assert!(i + 1 + usize::from(f.jt) < FILTER.len(), "jt of {i}");
                assert!(i + 1 + usize::from(f.jf) < FILTER.len(), "jf of {i}");
            }
        }
        assert_eq!(FILTER[16].code, 0x06);
        assert_eq!(FILTER[17].k, 0);
    }
}
