//! The TCP connect records: filed by the connect programs into a ring buffer, kept by the
//! helper in an index of the newest [`CAPACITY`], looked up by the flow's key.
//!
//! Why not the LRU hash map the UDP send records are in: its update was half of what the
//! programs cost each `connect()` (a build that skipped it ran in 365 ns a connect, not 740),
//! and a connecting program pays that in `connect()` itself. `bpf_ringbuf_output` is a lock,
//! a copy and a store. The index keeps what an LRU map of the same size kept: the newest
//! records, each under its key, a newer record under the same key replacing the older, and
//! one pushed out once [`CAPACITY`] newer ones came, in the order the kernel filed them, so a
//! flood of connects anywhere evicts what it held exactly as before.
//!
//! The ring should not fill. Lookups drain it, and when it is half full the programs wake
//! [`TcpRecords::run_drain`] (`BPF_RB_FORCE_WAKEUP`; every other record is filed without a
//! wakeup, which would cost each connect an interrupt), which drains it again at once while
//! records keep coming. A record that does not fit is lost, and the index would still hold
//! an older record under its key, a tuple's earlier connect by another process: so each
//! record carries the count of records the ring had refused when it was filed (a one-slot
//! array, added to atomically by every refusal), and one whose count is not the current one
//! counts as none (fails closed: the flow holds no record). A count, not a time: a program
//! preempted between reading the clock and storing it could set a time back. Likewise a
//! record still being written (its program preempted) holds back the ones behind it, which
//! may include the lookup's own: a lookup that cannot get past one waits briefly, then finds
//! nothing.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Mutex;
use std::time::Duration;

use super::bpf::layout::{KEY_LEN, VALUE_LEN, VALUE_REFUSED};
use super::bpf::ring::{Drained, Ring};
use super::bpf::sys::{mappable_array_create, ring_create, Mapped};

/// A record as the programs file it: the value, then the key (their stack's order, so one
/// copy files both).
pub const RECORD_LEN: usize = VALUE_LEN + KEY_LEN;
/// The ring's size: 5,041 records of 104 bytes (with the kernel's header). The kernel maps
/// all of it, twice over, when the helper maps it: 1 MiB of the helper's resident size, kernel
/// memory that a larger ring would add to.
pub const RING_BYTES: u32 = 1 << 19;
/// Filled past this, each record wakes the drain thread.
pub const WAKE_AT: i32 = (RING_BYTES / 2) as i32;
/// Records kept: at 100,000 connects a second, a third of a second of them. The helper's
/// reader looks a flow up within milliseconds of its connect.
pub const CAPACITY: usize = 32768;
/// After a drain of fewer than [`BUSY_DRAIN`] records the thread naps this long before it
/// waits again. Its wait ends at once if records came during the nap (`poll` on the ring says
/// whether any wait), so a steady stream of connects costs it a drain every 10 ms, not one
/// per record; once a nap ends with the ring empty, it sleeps until the ring is half full
/// (2,520 records: 25 ms of connects at 100,000 a second).
const DRAIN_NAP: Duration = Duration::from_millis(10);
/// Records the ring holds at once (each with the kernel's 8-byte header).
const RING_RECORDS: usize = RING_BYTES as usize / (RECORD_LEN + 8);
/// A drain of this many records (a quarter of the ring) is not followed by a nap: at that
/// rate the ring would fill during one.
const BUSY_DRAIN: usize = RING_RECORDS / 4;
/// Records handed to the index at one hold of the lock, so that a lookup waits for a drain
/// thread that was preempted holding it no longer than this takes.
const BATCH: usize = 256;
/// How often, and how long apart, a lookup tries again to get past a record still being
/// written before it gives up: a program writes one in well under a microsecond unless it
/// was preempted.
const BUSY_TRIES: usize = 10;
const BUSY_PAUSE: Duration = Duration::from_micros(20);

/// The newest records in the order they were filed, and where each key's newest is.
#[derive(Default)]
struct Index {
    /// Slot `n % CAPACITY` holds the `n`th record read; filled up to [`CAPACITY`], then
    /// overwritten oldest first.
    records: Vec<[u8; RECORD_LEN]>,
    read: usize,
    /// A key's hash (keyed per helper: no one else can make two keys meet) to its slot.
    slots: HashMap<u64, u32>,
    hasher: std::hash::RandomState,
}

impl Index {
    fn key_of(rec: &[u8; RECORD_LEN]) -> &[u8] {
        &rec[VALUE_LEN..]
    }

    /// Files a record read from the ring; one of another length is ignored.
    fn insert(&mut self, rec: &[u8]) {
        let Ok(rec) = <[u8; RECORD_LEN]>::try_from(rec) else {
            return;
        };
        let slot = self.read % CAPACITY;
        self.read = self.read.wrapping_add(1);
        let at = slot as u32;
        if let Some(old) = self.records.get_mut(slot) {
            let h = self.hasher.hash_one(Self::key_of(old));
            // Unless a newer record under the same key is filed elsewhere.
            if self.slots.get(&h) == Some(&at) {
                self.slots.remove(&h);
            }
            *old = rec;
        } else {
            self.records.push(rec);
        }
        let h = self.hasher.hash_one(Self::key_of(&rec));
        self.slots.insert(h, at);
    }

    fn get(&self, key: &[u8; KEY_LEN]) -> Option<[u8; VALUE_LEN]> {
        let slot = *self.slots.get(&self.hasher.hash_one(&key[..]))?;
        let rec = self.records.get(slot as usize)?;
        // A hash shared by two keys: the slot holds the other one's.
        if Self::key_of(rec) != key {
            return None;
        }
        <[u8; VALUE_LEN]>::try_from(&rec[..VALUE_LEN]).ok()
    }
}

struct Inner {
    ring: Ring,
    index: Index,
}

impl Inner {
    /// Hands at most `most` records to the index.
    fn drain(&mut self, most: usize) -> Drained {
        let Inner { ring, index } = self;
        ring.drain(most, |rec| index.insert(rec))
    }
}

/// The file descriptors the programs file TCP records with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingFds {
    /// The ring buffer.
    pub ring: i32,
    /// The one-slot array of the count of records the ring refused.
    pub refused: i32,
}

/// The ring and the index, shared by every lookup handle and the drain thread.
pub struct TcpRecords {
    map: OwnedFd,
    refused: OwnedFd,
    /// The count of records the ring refused (one 64-bit word).
    refusals: Mapped,
    inner: Mutex<Inner>,
}

impl TcpRecords {
    pub fn create() -> io::Result<TcpRecords> {
        let map = ring_create(RING_BYTES, b"ctt_connects")?;
        let ring = Ring::new(&map, RING_BYTES as usize)?;
        let refused = mappable_array_create(8, 1, b"ctt_refused")?;
        let refusals = Mapped::new(&refused, rustix::param::page_size())?;
        Ok(TcpRecords {
            map,
            refused,
            refusals,
            inner: Mutex::new(Inner {
                ring,
                index: Index::default(),
            }),
        })
    }

    /// The file descriptors for the programs that file into the ring.
    pub fn fds(&self) -> RingFds {
        RingFds {
            ring: self.map.as_raw_fd(),
            refused: self.refused.as_raw_fd(),
        }
    }

    fn inner(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The newest record under `key`, after reading what the ring holds; none if the ring
    /// refused a record since it was filed, which may have been a newer one under the same
    /// key, or if a record still being written keeps the lookup from the rest.
    pub fn find(&self, key: &[u8; KEY_LEN]) -> Option<[u8; VALUE_LEN]> {
        let found = {
            let mut inner = self.inner();
            let mut tries = 0;
            for _ in 0..=RING_RECORDS / BATCH + BUSY_TRIES {
                let d = inner.drain(BATCH);
                if d.busy {
                    if tries == BUSY_TRIES {
                        return None;
                    }
                    tries += 1;
                    std::thread::sleep(BUSY_PAUSE);
                } else if d.read < BATCH {
                    break;
                }
            }
            inner.index.get(key)?
        };
        // Read after the drain. With the `sock_ops` program a refusal of this connection's
        // record was counted inside its `connect()`, before its first packet; the tracepoint
        // fallback files once the handshake is over, possibly after this lookup.
        let now = self.refusals.word(0)?;
        let seen = u32::from_ne_bytes(found[VALUE_REFUSED.range()].try_into().ok()?);
        (seen == now as u32).then_some(found)
    }

    /// The count of records the ring refused.
    #[cfg(test)]
    pub fn refusals(&self) -> Option<u64> {
        self.refusals.word(0)
    }

    /// Drains the ring whenever the programs say it is half full; returns only if waiting
    /// fails.
    pub fn run_drain(&self) -> io::Error {
        use rustix::event::{poll, PollFd, PollFlags};
        loop {
            let mut fds = [PollFd::new(&self.map, PollFlags::IN)];
            match poll(&mut fds, None) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return e.into(),
            }
            let mut read = 0;
            for _ in 0..=RING_RECORDS / BATCH {
                // The lock is let go between batches, for the lookups.
                let d = self.inner().drain(BATCH);
                read += d.read;
                if d.busy || d.read < BATCH {
                    break;
                }
            }
            if read < BUSY_DRAIN {
                std::thread::sleep(DRAIN_NAP);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key: u8, tgid: u8) -> [u8; RECORD_LEN] {
        let mut r = [0u8; RECORD_LEN];
        r[0] = tgid;
        r[VALUE_LEN..].fill(key);
        r
    }

    fn key(k: u8) -> [u8; KEY_LEN] {
        [k; KEY_LEN]
    }

    #[test]
    fn the_newest_record_under_a_key_is_found_and_others_are_not() {
        let mut ix = Index::default();
        ix.insert(&record(1, 10));
        ix.insert(&record(2, 20));
        ix.insert(&record(1, 11));
        assert_eq!(ix.get(&key(1)).map(|v| v[0]), Some(11));
        assert_eq!(ix.get(&key(2)).map(|v| v[0]), Some(20));
        assert_eq!(ix.get(&key(3)), None);
        // A record of another length is not one the programs file.
        ix.insert(&[7u8; RECORD_LEN - 8]);
        assert_eq!(ix.get(&key(7)), None);
        assert_eq!(ix.read, 3);
    }

    #[test]
    fn a_record_is_pushed_out_by_exactly_capacity_newer_ones() {
        let mut ix = Index::default();
        ix.insert(&record(1, 10));
        for i in 0..CAPACITY - 1 {
            let mut r = record(0, 0);
            r[VALUE_LEN..VALUE_LEN + 8].copy_from_slice(&(i as u64 + 1000).to_ne_bytes());
            ix.insert(&r);
        }
        assert_eq!(
            ix.get(&key(1)).map(|v| v[0]),
            Some(10),
            "still the newest 32,768"
        );
        ix.insert(&record(2, 20));
        assert_eq!(ix.get(&key(1)), None, "the 32,769th pushed it out");
        assert_eq!(ix.get(&key(2)).map(|v| v[0]), Some(20));
        assert_eq!(ix.records.len(), CAPACITY);
        assert!(ix.slots.len() <= CAPACITY);
    }

    #[test]
    fn an_older_record_pushed_out_leaves_a_newer_one_under_its_key() {
        let mut ix = Index::default();
        ix.insert(&record(1, 10));
        ix.insert(&record(1, 11));
        for i in 0..CAPACITY - 1 {
            let mut r = record(0, 0);
            r[VALUE_LEN..VALUE_LEN + 8].copy_from_slice(&(i as u64 + 1000).to_ne_bytes());
            ix.insert(&r);
        }
        // The first slot was overwritten; the key's newer record, in the second, is there.
        assert_eq!(ix.get(&key(1)).map(|v| v[0]), Some(11));
    }
}
