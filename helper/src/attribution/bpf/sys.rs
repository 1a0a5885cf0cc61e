//! The `bpf()` system calls the record programs need: create a map, look a key up, load a
//! program, attach it to a tracepoint or (through a link) to a cgroup, and list what a cgroup
//! has attached; and the network namespace's cookie, which the send hook compares with. The
//! only unsafe code of the hooks is here.
//!
//! There is no loader crate under this: the ones that exist bring an object-file toolchain
//! the hand-assembled programs do not need. `union bpf_attr` is filled in as bytes, not
//! as a `#[repr(C)]` struct, because the kernel wants every byte it does not read zeroed
//! (padding included) and its size grows with each kernel; each command's fields are named
//! below with their offsets from linux/bpf.h, typed by width so a 4-byte field cannot take an
//! 8-byte write. The unsafe code is here, each with its reason: the system call itself,
//! taking ownership of the file descriptor it returns, `getsockopt` for the namespace
//! cookie, and mapping an array's values into the process ([`Mapped`]).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

// Commands (linux/bpf.h, `enum bpf_cmd`).
const BPF_MAP_CREATE: libc::c_long = 0;
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_RAW_TRACEPOINT_OPEN: libc::c_long = 17;
const BPF_LINK_CREATE: libc::c_long = 28;
const BPF_MAP_TYPE_HASH: u32 = 1;
const BPF_MAP_TYPE_ARRAY: u32 = 2;
/// A hash map's records allocated as filed (`map_flags`).
const BPF_F_NO_PREALLOC: u32 = 1;
const BPF_MAP_TYPE_PERCPU_ARRAY: u32 = 6;
/// `BPF_F_MMAPABLE` (since 5.5): an array whose values the process can map.
const BPF_F_MMAPABLE: u32 = 1 << 10;
const BPF_MAP_TYPE_LRU_HASH: u32 = 9;
const BPF_MAP_TYPE_RINGBUF: u32 = 27;
const BPF_PROG_TYPE_SOCK_OPS: u32 = 13;
const BPF_PROG_TYPE_RAW_TRACEPOINT: u32 = 17;
const BPF_PROG_TYPE_CGROUP_SOCK_ADDR: u32 = 18;
/// `SO_NETNS_COOKIE` (asm-generic/socket.h, since 5.14; the libc crate has no name for it).
const SO_NETNS_COOKIE: libc::c_int = 71;

/// What a program is, for the kernel: its type and, for cgroup programs, the hook it is for
/// (`expected_attach_type`, which decides what of its context it may read).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProgType {
    RawTracepoint,
    /// `BPF_PROG_TYPE_CGROUP_SOCK_ADDR` for this attach type.
    CgroupSockAddr(AttachType),
    /// `BPF_PROG_TYPE_SOCK_OPS`, for [`AttachType::SockOps`].
    SockOps,
}

/// The cgroup hooks used here (linux/bpf.h, `enum bpf_attach_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttachType {
    /// `BPF_CGROUP_SOCK_OPS`: a TCP socket's events (`tcp_call_bpf`), among them the connect.
    SockOps = 3,
    /// `BPF_CGROUP_UDP4_SENDMSG`: `udp_sendmsg` with a destination address.
    Udp4Sendmsg = 14,
    /// `BPF_CGROUP_UDP6_SENDMSG`: `udpv6_sendmsg` with a destination address.
    Udp6Sendmsg = 15,
}

/// A 4-byte field of `union bpf_attr`, at its offset.
#[derive(Debug, Clone, Copy)]
struct U32(usize);
/// An 8-byte field (a `__u64`, or a pointer as `__aligned_u64`).
#[derive(Debug, Clone, Copy)]
struct U64(usize);
/// A `char [BPF_OBJ_NAME_LEN]` name: 16 bytes, NUL-terminated.
#[derive(Debug, Clone, Copy)]
struct Name(usize);

const OBJ_NAME_LEN: usize = 16;

/// `BPF_MAP_CREATE`'s fields.
mod map_create {
    use super::{Name, U32};
    /// Through `map_ifindex`.
    pub const SIZE: usize = 48;
    pub const MAP_TYPE: U32 = U32(0);
    pub const KEY_SIZE: U32 = U32(4);
    pub const VALUE_SIZE: U32 = U32(8);
    pub const MAX_ENTRIES: U32 = U32(12);
    pub const MAP_FLAGS: U32 = U32(16);
    pub const MAP_NAME: Name = Name(28);
}

/// `BPF_MAP_*_ELEM`'s fields.
mod map_elem {
    use super::{U32, U64};
    /// Through `flags`.
    pub const SIZE: usize = 32;
    pub const MAP_FD: U32 = U32(0);
    pub const KEY: U64 = U64(8);
    pub const VALUE: U64 = U64(16);
}

/// `BPF_PROG_LOAD`'s fields.
mod prog_load {
    use super::{Name, U32, U64};
    /// Through `core_relo_cnt`.
    pub const SIZE: usize = 120;
    pub const PROG_TYPE: U32 = U32(0);
    pub const INSN_CNT: U32 = U32(4);
    pub const INSNS: U64 = U64(8);
    pub const LICENSE: U64 = U64(16);
    pub const LOG_LEVEL: U32 = U32(24);
    pub const LOG_SIZE: U32 = U32(28);
    pub const LOG_BUF: U64 = U64(32);
    pub const PROG_NAME: Name = Name(48);
    pub const EXPECTED_ATTACH_TYPE: U32 = U32(68);
}

/// `BPF_LINK_CREATE`'s fields.
mod link_create {
    use super::U32;
    /// Through `flags`; the kernel zeroes the rest.
    pub const SIZE: usize = 16;
    pub const PROG_FD: U32 = U32(0);
    pub const TARGET_FD: U32 = U32(4);
    pub const ATTACH_TYPE: U32 = U32(8);
}

/// `BPF_PROG_QUERY`'s fields.
mod prog_query {
    use super::{U32, U64};
    /// Through `prog_cnt` and its padding.
    pub const SIZE: usize = 32;
    pub const TARGET_FD: U32 = U32(0);
    pub const ATTACH_TYPE: U32 = U32(4);
    pub const PROG_IDS: U64 = U64(16);
    pub const PROG_CNT: U32 = U32(24);
}

/// `BPF_RAW_TRACEPOINT_OPEN`'s fields.
mod raw_tracepoint_open {
    use super::{U32, U64};
    /// Through `prog_fd` and its padding.
    pub const SIZE: usize = 16;
    pub const NAME: U64 = U64(0);
    pub const PROG_FD: U32 = U32(8);
}

/// A `union bpf_attr` being filled in: named fields, the rest zero, as the kernel requires of
/// the bytes it does not read.
struct Attr<const N: usize>([u8; N]);

impl<const N: usize> Attr<N> {
    fn new() -> Self {
        Attr([0; N])
    }
    fn u32(&mut self, f: U32, v: u32) -> &mut Self {
        self.0[f.0..f.0 + 4].copy_from_slice(&v.to_ne_bytes());
        self
    }
    fn u64(&mut self, f: U64, v: u64) -> &mut Self {
        self.0[f.0..f.0 + 8].copy_from_slice(&v.to_ne_bytes());
        self
    }
    /// A pointer the kernel reads during the call: the caller keeps what it points at
    /// borrowed until [`bpf`] returns.
    fn ptr<T>(&mut self, f: U64, p: *const T) -> &mut Self {
        self.u64(f, p as usize as u64)
    }
    /// At most 15 bytes of `v`, so the name stays NUL-terminated.
    fn name(&mut self, f: Name, v: &[u8]) -> &mut Self {
        let v = &v[..v.len().min(OBJ_NAME_LEN - 1)];
        self.0[f.0..f.0 + v.len()].copy_from_slice(v);
        self
    }
}

#[allow(unsafe_code)]
fn bpf<const N: usize>(cmd: libc::c_long, attr: &mut Attr<N>) -> io::Result<libc::c_long> {
    // SAFETY: `attr` is a live, fully initialised buffer of N bytes, and every pointer
    // written into it points at memory borrowed for the duration of this call.
    let rc = unsafe { libc::syscall(libc::SYS_bpf, cmd, attr.0.as_mut_ptr(), N as libc::c_long) };
    if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(rc)
    }
}

#[allow(unsafe_code)]
fn fd_of(rc: libc::c_long) -> io::Result<OwnedFd> {
    let fd = libc::c_int::try_from(rc).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
    // SAFETY: the kernel has just returned `fd` as a new file descriptor, owned by no one
    // else; it is closed exactly once, by the OwnedFd.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// An LRU hash map of `entries` records; `name` is cut to 15 bytes.
pub fn map_create(key: usize, value: usize, entries: u32, name: &[u8]) -> io::Result<OwnedFd> {
    create(BPF_MAP_TYPE_LRU_HASH, key, value, entries, name)
}

/// A hash map of up to `entries` records that are never evicted, only deleted, allocated as
/// they are filed (`BPF_F_NO_PREALLOC`): its memory follows what is in it, not its bound.
pub fn hash_create(key: usize, value: usize, entries: u32, name: &[u8]) -> io::Result<OwnedFd> {
    create_with(
        BPF_MAP_TYPE_HASH,
        key,
        value,
        entries,
        BPF_F_NO_PREALLOC,
        name,
    )
}

/// A per-CPU array of one `value`-byte slot: a program's scratch space for a record larger
/// than its 512-byte stack, which no other CPU can write while the program fills it.
pub fn scratch_create(value: usize, name: &[u8]) -> io::Result<OwnedFd> {
    create(BPF_MAP_TYPE_PERCPU_ARRAY, 4, value, 1, name)
}

/// An array of `entries` slots of `value` bytes that the process can map
/// ([`Mapped`]) and so read without a system call.
pub fn mappable_array_create(value: usize, entries: u32, name: &[u8]) -> io::Result<OwnedFd> {
    create_with(BPF_MAP_TYPE_ARRAY, 4, value, entries, BPF_F_MMAPABLE, name)
}

/// A ring buffer of `bytes` (a power of two, whole pages) that programs file records into
/// with `bpf_ringbuf_output` (since 5.8), read through [`super::ring::Ring`].
pub fn ring_create(bytes: u32, name: &[u8]) -> io::Result<OwnedFd> {
    create(BPF_MAP_TYPE_RINGBUF, 0, 0, bytes, name)
}

fn create(ty: u32, key: usize, value: usize, entries: u32, name: &[u8]) -> io::Result<OwnedFd> {
    create_with(ty, key, value, entries, 0, name)
}

fn create_with(
    ty: u32,
    key: usize,
    value: usize,
    entries: u32,
    flags: u32,
    name: &[u8],
) -> io::Result<OwnedFd> {
    use map_create::*;
    let mut a = Attr::<SIZE>::new();
    a.u32(MAP_TYPE, ty)
        .u32(KEY_SIZE, key as u32)
        .u32(VALUE_SIZE, value as u32)
        .u32(MAX_ENTRIES, entries)
        .u32(MAP_FLAGS, flags)
        .name(MAP_NAME, name);
    fd_of(bpf(BPF_MAP_CREATE, &mut a)?)
}

/// A new shared mapping of `len` bytes of `map` from byte `offset`, with protection `prot`,
/// at an address the kernel picks. The caller unmaps it.
#[allow(unsafe_code)]
pub fn map_shared(
    map: &OwnedFd,
    len: usize,
    prot: libc::c_int,
    offset: usize,
) -> io::Result<std::ptr::NonNull<u8>> {
    let offset = libc::off_t::try_from(offset).map_err(|_| io::ErrorKind::InvalidInput)?;
    // SAFETY: a new shared mapping at an address the kernel picks: no memory of this process
    // is touched or aliased; the kernel checks length, offset and protection against the map.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            prot,
            libc::MAP_SHARED,
            map.as_raw_fd(),
            offset,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    std::ptr::NonNull::new(p.cast()).ok_or_else(|| io::ErrorKind::InvalidData.into())
}

/// The values of an array made by [`mappable_array_create`], mapped read-only, as 8-byte
/// words. The kernel's programs write them at any time: each word is read whole, with an
/// atomic load, never as a reference to plain memory.
pub struct Mapped {
    words: std::ptr::NonNull<std::sync::atomic::AtomicU64>,
    len: usize,
}

// SAFETY: the mapping is shared memory, read only through atomic loads, and stays mapped
// until the value is dropped, whichever thread holds it.
#[allow(unsafe_code)]
unsafe impl Send for Mapped {}
// SAFETY: as above; `word` takes `&self` and does nothing but atomic loads.
#[allow(unsafe_code)]
unsafe impl Sync for Mapped {}

impl Mapped {
    /// Maps the first `bytes` of `map`'s values (a whole number of pages).
    pub fn new(map: &OwnedFd, bytes: usize) -> io::Result<Mapped> {
        let words = map_shared(map, bytes, libc::PROT_READ, 0)?.cast();
        Ok(Mapped {
            words,
            len: bytes / 8,
        })
    }

    /// Word `i`, if the mapping has it.
    #[allow(unsafe_code)]
    pub fn word(&self, i: usize) -> Option<u64> {
        if i >= self.len {
            return None;
        }
        // SAFETY: `i` is within the mapping, which is page-aligned and lives as long as
        // `self`; `AtomicU64` has the size and alignment of `u64`.
        let w = unsafe { &*self.words.as_ptr().add(i) };
        Some(w.load(std::sync::atomic::Ordering::Acquire))
    }
}

impl Drop for Mapped {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: the mapping made in `new`, of this length, unmapped once; no reference
        // into it outlives `word`.
        unsafe {
            libc::munmap(self.words.as_ptr().cast(), self.len * 8);
        }
    }
}

/// Why a program was not loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The kernel took it, but its file descriptor came back unusable.
    #[error("{0}")]
    Fd(io::Error),
    /// The kernel (its verifier, mostly) refused it; `log` is the last lines of the
    /// verifier's log, which say why.
    #[error("{err}: {log}")]
    Refused { err: io::Error, log: String },
}

/// Loads `code` (encoded instructions) as a raw tracepoint program named `name`.
pub fn prog_load_raw_tracepoint(code: &[u8], name: &[u8]) -> Result<OwnedFd, LoadError> {
    prog_load(ProgType::RawTracepoint, code, name)
}

/// Loads `code` (encoded instructions) as a program of type `ty` named `name`.
pub fn prog_load(ty: ProgType, code: &[u8], name: &[u8]) -> Result<OwnedFd, LoadError> {
    use prog_load::*;
    let license = b"Dual MIT/GPL\0";
    let (prog_type, attach) = match ty {
        ProgType::RawTracepoint => (BPF_PROG_TYPE_RAW_TRACEPOINT, 0),
        ProgType::CgroupSockAddr(at) => (BPF_PROG_TYPE_CGROUP_SOCK_ADDR, at as u32),
        ProgType::SockOps => (BPF_PROG_TYPE_SOCK_OPS, 0),
    };
    let load = |log: Option<&mut Vec<u8>>| {
        let mut a = Attr::<SIZE>::new();
        a.u32(PROG_TYPE, prog_type)
            .u32(INSN_CNT, (code.len() / 8) as u32)
            .ptr(INSNS, code.as_ptr())
            .ptr(LICENSE, license.as_ptr())
            .name(PROG_NAME, name)
            .u32(EXPECTED_ATTACH_TYPE, attach);
        if let Some(log) = log {
            a.u32(LOG_LEVEL, 1)
                .u32(LOG_SIZE, log.len() as u32)
                .ptr(LOG_BUF, log.as_mut_ptr());
            bpf(BPF_PROG_LOAD, &mut a)
        } else {
            bpf(BPF_PROG_LOAD, &mut a)
        }
    };
    match load(None) {
        Ok(fd) => fd_of(fd).map_err(LoadError::Fd),
        Err(err) => {
            // Again with the verifier's log, to say why.
            let mut log = vec![0u8; 256 * 1024];
            let _ = load(Some(&mut log));
            let end = log.iter().position(|&b| b == 0).unwrap_or(log.len());
            let text = String::from_utf8_lossy(&log[..end]);
            let tail: Vec<&str> = text.lines().rev().take(3).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            Err(LoadError::Refused {
                err,
                log: tail.join(" / "),
            })
        }
    }
}

/// Attaches `prog` to the cgroup open at `cgroup` for hook `attach`, through a link: the
/// link's file descriptor is the attachment. Closing it, or the death of every process
/// holding it (SIGKILL included), detaches the program; nothing outlives the helper, and a
/// link never displaces programs others attached (links attach as `BPF_F_ALLOW_MULTI`).
pub fn link_cgroup(prog: &OwnedFd, cgroup: &OwnedFd, attach: AttachType) -> io::Result<OwnedFd> {
    use link_create::*;
    let mut a = Attr::<SIZE>::new();
    a.u32(PROG_FD, prog.as_raw_fd() as u32)
        .u32(TARGET_FD, cgroup.as_raw_fd() as u32)
        .u32(ATTACH_TYPE, attach as u32);
    fd_of(bpf(BPF_LINK_CREATE, &mut a)?)
}

/// The ids of the programs attached to the cgroup open at `cgroup` for hook `attach` (not
/// those it inherits from its ancestors).
pub fn prog_query(cgroup: &OwnedFd, attach: AttachType) -> io::Result<Vec<u32>> {
    use prog_query::*;
    // Programs may be attached between the two calls: then the second says ENOSPC, and the
    // count it returns is the new one.
    let mut count = 0u32;
    for _ in 0..4 {
        let mut ids = vec![0u32; count as usize];
        let mut a = Attr::<SIZE>::new();
        a.u32(TARGET_FD, cgroup.as_raw_fd() as u32)
            .u32(ATTACH_TYPE, attach as u32)
            .u32(PROG_CNT, count);
        if count > 0 {
            a.ptr(PROG_IDS, ids.as_mut_ptr());
        }
        let r = bpf(BPF_PROG_QUERY, &mut a);
        let returned = u32::from_ne_bytes([
            a.0[PROG_CNT.0],
            a.0[PROG_CNT.0 + 1],
            a.0[PROG_CNT.0 + 2],
            a.0[PROG_CNT.0 + 3],
        ]);
        match r {
            Ok(_) if count > 0 || returned == 0 => {
                ids.truncate(returned as usize);
                return Ok(ids);
            }
            Ok(_) => count = returned,
            Err(e) if e.raw_os_error() == Some(libc::ENOSPC) => count = returned,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::other("the cgroup's programs kept changing"))
}

/// The cookie of the calling thread's network namespace, as `bpf_get_netns_cookie` gives it
/// for a socket of that namespace (`SO_NETNS_COOKIE` on a socket made for the purpose).
/// Unlike the namespace's inode number, a cookie is never reused.
#[allow(unsafe_code)]
pub fn netns_cookie() -> io::Result<u64> {
    use rustix::net::{socket, AddressFamily, SocketType};
    let sock = socket(AddressFamily::INET, SocketType::DGRAM, None)?;
    let mut cookie = 0u64;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: `sock` is an open socket for the whole call; the kernel writes at most `len`
    // (8) bytes into `cookie`, a live u64, and the new length into `len`, a live socklen_t.
    let rc = unsafe {
        libc::getsockopt(
            sock.as_raw_fd(),
            libc::SOL_SOCKET,
            SO_NETNS_COOKIE,
            (&mut cookie as *mut u64).cast::<libc::c_void>(),
            &mut len,
        )
    };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    if len as usize != std::mem::size_of::<u64>() {
        return Err(io::ErrorKind::InvalidData.into());
    }
    Ok(cookie)
}

/// Attaches `prog` to the tracepoint `name` (NUL-terminated): the link, which detaches it
/// when closed.
pub fn attach(prog: &OwnedFd, name: &[u8]) -> io::Result<OwnedFd> {
    use raw_tracepoint_open::*;
    if name.last() != Some(&0) {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    let mut a = Attr::<SIZE>::new();
    a.ptr(NAME, name.as_ptr())
        .u32(PROG_FD, prog.as_raw_fd() as u32);
    fd_of(bpf(BPF_RAW_TRACEPOINT_OPEN, &mut a)?)
}

/// Whether `key` is in the map; its value is then in `value`.
pub fn map_lookup<const K: usize, const V: usize>(
    map: &OwnedFd,
    key: &[u8; K],
    value: &mut [u8; V],
) -> io::Result<bool> {
    use map_elem::*;
    let mut a = Attr::<SIZE>::new();
    a.u32(MAP_FD, map.as_raw_fd() as u32)
        .ptr(KEY, key.as_ptr())
        .ptr(VALUE, value.as_mut_ptr());
    match bpf(BPF_MAP_LOOKUP_ELEM, &mut a) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(false),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// (offset, length, alignment) of a command's fields.
    fn spans(u32s: &[U32], u64s: &[U64], names: &[Name]) -> Vec<(usize, usize, usize)> {
        let mut s: Vec<(usize, usize, usize)> = u32s.iter().map(|f| (f.0, 4, 4)).collect();
        s.extend(u64s.iter().map(|f| (f.0, 8, 8)));
        s.extend(names.iter().map(|f| (f.0, OBJ_NAME_LEN, 1)));
        s.sort_unstable();
        s
    }

    /// Within the size passed to the kernel, apart, and each aligned to its width as in the
    /// kernel's struct (so a typo of an offset is caught here rather than as EINVAL).
    fn assert_laid_out(what: &str, size: usize, spans: &[(usize, usize, usize)]) {
        let mut end = 0;
        for &(off, len, align) in spans {
            assert!(off >= end, "{what}: field at {off} overlaps the one before");
            assert_eq!(off % align, 0, "{what}: field at {off} misaligned");
            end = off + len;
        }
        assert!(end <= size, "{what}: fields end at {end}, past {size}");
    }

    #[test]
    fn each_command_s_fields_fit_its_attr() {
        use super::raw_tracepoint_open as rt;
        use super::{map_create as mc, map_elem as me, prog_load as pl};
        let map_create = spans(
            &[
                mc::MAP_TYPE,
                mc::KEY_SIZE,
                mc::VALUE_SIZE,
                mc::MAX_ENTRIES,
                mc::MAP_FLAGS,
            ],
            &[],
            &[mc::MAP_NAME],
        );
        assert_laid_out("map_create", mc::SIZE, &map_create);
        let map_elem = spans(&[me::MAP_FD], &[me::KEY, me::VALUE], &[]);
        assert_laid_out("map_elem", me::SIZE, &map_elem);
        let prog_load = spans(
            &[
                pl::PROG_TYPE,
                pl::INSN_CNT,
                pl::LOG_LEVEL,
                pl::LOG_SIZE,
                pl::EXPECTED_ATTACH_TYPE,
            ],
            &[pl::INSNS, pl::LICENSE, pl::LOG_BUF],
            &[pl::PROG_NAME],
        );
        assert_laid_out("prog_load", pl::SIZE, &prog_load);
        let raw = spans(&[rt::PROG_FD], &[rt::NAME], &[]);
        assert_laid_out("raw_tracepoint_open", rt::SIZE, &raw);
        use super::{link_create as lc, prog_query as pq};
        let link = spans(&[lc::PROG_FD, lc::TARGET_FD, lc::ATTACH_TYPE], &[], &[]);
        assert_laid_out("link_create", lc::SIZE, &link);
        let query = spans(
            &[pq::TARGET_FD, pq::ATTACH_TYPE, pq::PROG_CNT],
            &[pq::PROG_IDS],
            &[],
        );
        assert_laid_out("prog_query", pq::SIZE, &query);
    }

    #[test]
    fn names_are_cut_to_stay_nul_terminated() {
        let mut a = Attr::<{ map_create::SIZE }>::new();
        a.name(map_create::MAP_NAME, b"0123456789abcdefgh");
        assert_eq!(&a.0[28..43], b"0123456789abcde");
        assert_eq!(a.0[43], 0);
        let mut a = Attr::<{ prog_load::SIZE }>::new();
        a.name(prog_load::PROG_NAME, b"ctt_connect");
        assert_eq!(&a.0[48..59], b"ctt_connect");
        assert!(a.0[59..64].iter().all(|&b| b == 0));
    }
}
