//! A `BPF_MAP_TYPE_RINGBUF` map, mapped and read without a system call.
//!
//! Why rings for the connect and send records and not hash maps: a program that files a record
//! with `bpf_ringbuf_output` pays a lock, a copy and a store, where an LRU hash map's update
//! hashes the key, takes a bucket lock and, once the map is full, evicts an older record;
//! measured, that update was half of what the connect programs cost each `connect()`. The
//! helper keeps its own index of what it read (`attribution::ring_records`).
//!
//! The kernel's layout (`kernel/bpf/ringbuf.c`): a page with the consumer position, the only
//! one the reader may write; a page with the producer position; then the data pages, mapped
//! twice in a row so that a record that wraps around the end reads as one piece. Each record
//! has an 8-byte header: its length, with a busy bit while the program still writes it and a
//! discard bit, then the record itself, rounded up to 8 bytes.

use std::io;
use std::os::fd::OwnedFd;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};

use super::sys::map_shared;

const BUSY: u32 = 1 << 31;
const DISCARD: u32 = 1 << 30;
const HEADER: u64 = 8;

/// What a [`Ring::drain`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Drained {
    /// Records read, handed or discarded by their program.
    pub read: usize,
    /// Whether it stopped at a record a program is still writing.
    pub busy: bool,
}

/// The ring, mapped: the consumer's page read-write, the producer's page and the data
/// read-only. Only the one holding it as `&mut` reads records (its consumer position is the
/// reader's own), so there is one reader at a time.
pub struct Ring {
    consumer: NonNull<AtomicU64>,
    producer: NonNull<u8>,
    page: usize,
    /// The data area's size, a power of two.
    size: usize,
}

// SAFETY: the mappings are shared memory, valid until the value is dropped; the positions
// are read and written with atomics only, and records only between positions the producer
// has committed and the consumer has not yet released.
#[allow(unsafe_code)]
unsafe impl Send for Ring {}

impl Ring {
    /// Maps the ring `map` of `size` bytes (the map's `max_entries`).
    #[allow(unsafe_code)]
    pub fn new(map: &OwnedFd, size: usize) -> io::Result<Ring> {
        let page = rustix::param::page_size();
        if !size.is_power_of_two() || !size.is_multiple_of(page) {
            return Err(io::ErrorKind::InvalidInput.into());
        }
        // Only the consumer's page may be written; the kernel refuses write access to the rest.
        let consumer = map_shared(map, page, libc::PROT_READ | libc::PROT_WRITE, 0)?;
        let producer = match map_shared(map, page + 2 * size, libc::PROT_READ, page) {
            Ok(p) => p,
            Err(e) => {
                // SAFETY: the mapping made just above, of this length, unmapped once.
                unsafe { libc::munmap(consumer.as_ptr().cast(), page) };
                return Err(e);
            }
        };
        Ok(Ring {
            consumer: consumer.cast(),
            producer,
            page,
            size,
        })
    }

    #[allow(unsafe_code)]
    fn producer_pos(&self) -> u64 {
        // SAFETY: the producer's page starts with its position, a u64 the kernel writes with
        // release semantics; the page is mapped as long as `self` lives.
        unsafe { &*self.producer.as_ptr().cast::<AtomicU64>() }.load(Ordering::Acquire)
    }

    #[allow(unsafe_code)]
    fn consumer(&self) -> &AtomicU64 {
        // SAFETY: the consumer's page starts with its position; mapped as long as `self`.
        unsafe { self.consumer.as_ref() }
    }

    /// Hands `each` the records committed since the last call, in order, at most `most` of
    /// them and none committed after the call began, and releases them. Stops at a record
    /// still being written (the next call starts there): then the records behind it, which
    /// may be committed already, are not read yet.
    #[allow(unsafe_code)]
    pub fn drain(&mut self, most: usize, mut each: impl FnMut(&[u8])) -> Drained {
        let mask = (self.size - 1) as u64;
        let mut cons = self.consumer().load(Ordering::Acquire);
        // Once: a program filing as fast as this reads cannot keep the call going.
        let prod = self.producer_pos();
        let mut read = 0;
        while read < most && cons < prod {
            // Within the data area: (cons & mask) < size, and the area is mapped twice.
            let at = (cons & mask) as usize;
            // SAFETY: the data area follows the producer's page and is `2 * size` long;
            // `at + 8 <= size`, since records are 8-byte aligned; the header is a u32 the
            // kernel commits with release semantics.
            let data = unsafe { self.producer.as_ptr().add(self.page) };
            // SAFETY: as above.
            let len = unsafe { &*data.add(at).cast::<AtomicU32>() }.load(Ordering::Acquire);
            if len & BUSY != 0 {
                return Drained { read, busy: true };
            }
            let body = u64::from(len & !(BUSY | DISCARD));
            if body + HEADER > self.size as u64 {
                // Longer than the kernel lets a record be: stop rather than read past.
                break;
            }
            if len & DISCARD == 0 {
                // SAFETY: the record lies within the doubly mapped data area (`at < size`,
                // `body + 8 <= size`), the kernel no longer writes it (committed, not busy),
                // and it stays until the consumer position passes it, below.
                let rec = unsafe {
                    std::slice::from_raw_parts(data.add(at + HEADER as usize), body as usize)
                };
                each(rec);
            }
            read += 1;
            cons += (body + HEADER + 7) & !7;
            self.consumer().store(cons, Ordering::Release);
        }
        Drained { read, busy: false }
    }
}

impl Drop for Ring {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: the two mappings made in `new`, of these lengths, unmapped once; no
        // reference into them outlives `drain`.
        unsafe {
            libc::munmap(self.consumer.as_ptr().cast(), self.page);
            libc::munmap(self.producer.as_ptr().cast(), self.page + 2 * self.size);
        }
    }
}
