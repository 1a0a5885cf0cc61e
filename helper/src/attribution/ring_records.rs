//! The kernel's records of who connected and who sent: filed by the record programs into
//! ring buffers, one for TCP connects and one for UDP (and other datagram) sends, and kept by
//! the helper in an index of the newest records of each, looked up by the flow's key.
//!
//! Why not LRU hash maps: an update hashes the key, takes a bucket lock, pops a free entry
//! and writes it, cache-cold, into a map of megabytes; measured, it was half of what the
//! connect programs cost each `connect()` (a build that skipped it ran in 365 ns a connect,
//! not 740), and 1.1 µs of each `sendto()` in a burst of datagrams to new destinations, where
//! a connecting or sending program pays it in the system call itself. Reading a hash map
//! costs the helper a `bpf()` system call per key, a quarter of its pipeline thread's time in
//! such a burst. `bpf_ringbuf_output` is a lock, a copy and a store, and the index is read
//! without a system call. It keeps what an LRU map of the same size kept: the newest records,
//! each under its key, a newer record under the same key replacing the older, and one pushed
//! out once [`Spec::capacity`] newer ones came, in the order the kernel filed them, so a
//! flood of connects or datagrams evicts what its own index held, never the other's.
//!
//! A ring should not fill. Lookups drain it, and when it is half full the programs wake
//! [`run_drains`] (`BPF_RB_FORCE_WAKEUP`; every other record is filed without a wakeup,
//! which would cost each connect or send an interrupt), which drains it again at once while
//! records keep coming. A record that does not fit is lost, and the index would still hold
//! an older record under its key, a tuple's earlier connect or send by another process: so
//! each record carries the count of records its ring had refused when it was filed (a
//! one-slot array, added to atomically by every refusal), and one whose count is not the
//! current one counts as none (fails closed: the flow holds no record). A count, not a time:
//! a program preempted between reading the clock and storing it could set a time back.
//! Likewise a record still being written (its program preempted) holds back the ones behind
//! it, which may include the lookup's own: a lookup that cannot get past one waits briefly,
//! then finds nothing.

use std::hash::BuildHasher;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::bpf::layout::{KEY_LEN, VALUE_LEN, VALUE_REFUSED};
use super::bpf::ring::{Drained, Ring};
use super::bpf::sys::{mappable_array_create, ring_create, Mapped};

/// A record as the programs file it: the value, then the key (their stack's order, so one
/// copy files both).
pub const RECORD_LEN: usize = VALUE_LEN + KEY_LEN;
/// A record in the ring, with the kernel's 8-byte header.
const IN_RING: usize = RECORD_LEN + 8;

/// The size of a ring and of its index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Spec {
    /// The ring's size, a power of two of at least a page. The kernel maps all of it, twice
    /// over, when the helper maps it: twice this of the helper's resident size, and kernel
    /// memory that a larger ring would add to.
    pub ring_bytes: u32,
    /// Records the index keeps.
    pub capacity: usize,
    /// The maps' names, as `bpftool map` lists them.
    pub ring_name: &'static [u8],
    pub refused_name: &'static [u8],
}

/// The TCP connect records: a ring of 5,041 records (512 KiB) and the newest 32,768, a
/// third of a second of connects at 100,000 a second; the helper's reader looks a flow up
/// within milliseconds of its connect.
pub const TCP: Spec = Spec {
    ring_bytes: 1 << 19,
    capacity: 32768,
    ring_name: b"ctt_connects",
    refused_name: b"ctt_refused",
};

/// The UDP send records (connected and unconnected UDP, UDP-Lite, SCTP, ping and raw
/// sockets). A record must outlive the wait for its lookup, and in a burst of datagrams to
/// many destinations that wait is long: when the pipeline's queue is full the reader reads
/// events late, and in the benchmark's 50,000-flow burst (33,000 datagrams a second from one
/// socket) the last flows were read more than a second after they were sent, with some
/// 33,000 sends filed in between. So twice the TCP records' count: 65,536, in 4 MiB of the
/// helper's memory when all are there (64 bytes each, with the index). The ring is half the
/// TCP one (2,520 records): a stream of datagrams to one destination files a record per
/// datagram, drained every 10 ms.
pub const UDP: Spec = Spec {
    ring_bytes: 1 << 18,
    capacity: 65536,
    ring_name: b"ctt_sends",
    refused_name: b"ctt_sends_ref",
};

impl Spec {
    /// Records the ring holds at once.
    fn ring_records(&self) -> usize {
        self.ring_bytes as usize / IN_RING
    }
    /// Filled past this many bytes, each record wakes the drain thread.
    pub fn wake_at(&self) -> i32 {
        i32::try_from(self.ring_bytes / 2).unwrap_or(i32::MAX)
    }
}

/// After a drain of fewer than a quarter of a ring's records the thread naps this long
/// before it waits again. Its wait ends at once if records came during the nap (`poll` on
/// the rings says whether any wait), so a steady stream of connects or sends costs it a
/// drain every 10 ms, not one per record; once a nap ends with the rings empty, it sleeps
/// until one is half full (2,520 TCP records: 25 ms of connects at 100,000 a second). A
/// drain of a quarter of a ring is not followed by a nap: at that rate the ring would fill
/// during one.
const DRAIN_NAP: Duration = Duration::from_millis(10);
/// Records handed to the index at one hold of the lock, so that a lookup waits for a drain
/// thread that was preempted holding it no longer than this takes.
const BATCH: usize = 256;
/// How often, and how long apart, a lookup tries again to get past a record still being
/// written before it gives up: a program writes one in well under a microsecond unless it
/// was preempted.
const BUSY_TRIES: usize = 10;
const BUSY_PAUSE: Duration = Duration::from_micros(20);

/// A record as the index keeps it: the sender, and two hashes of its key in place of the
/// key (48 bytes), so that a record takes 64 bytes, not 96.
#[derive(Clone, Copy)]
struct Kept {
    /// The key's hash in the slot map.
    hash: u64,
    /// Another hash of the key, of the same keyed hash function over the key with a tag
    /// before it: a record is taken for a key only if both match. No one outside the helper
    /// knows the hash's key, and two keys meet in both with a chance of one in 2^128.
    check: u64,
    value: [u8; VALUE_LEN],
}

/// What [`Index::check`] hashes before the key.
const CHECK_TAG: u8 = 0xc7;

/// The newest records in the order they were filed, and where each key's newest is.
struct Index {
    capacity: usize,
    /// Slot `n % capacity` holds the `n`th record read; filled up to `capacity`, then
    /// overwritten oldest first.
    records: Vec<Kept>,
    read: usize,
    /// Each key's slot, found by the key's hash (keyed per helper: no one else can make two
    /// keys meet), which the slot's record keeps.
    slots: hashbrown::HashTable<u32>,
    hasher: std::hash::RandomState,
}

impl Index {
    fn new(capacity: usize) -> Index {
        Index {
            capacity,
            // Reserved, not touched: the pages become resident as records fill them, and the
            // index never grows by copying itself (which held twice its size for a moment).
            records: Vec::with_capacity(capacity),
            read: 0,
            slots: hashbrown::HashTable::with_capacity(capacity),
            hasher: std::hash::RandomState::new(),
        }
    }

    /// Files a record read from the ring; one of another length is ignored.
    fn insert(&mut self, rec: &[u8]) {
        if rec.len() != RECORD_LEN {
            return;
        }
        let (value, key) = rec.split_at(VALUE_LEN);
        let Ok(value) = <[u8; VALUE_LEN]>::try_from(value) else {
            return;
        };
        let kept = Kept {
            hash: self.hasher.hash_one(key),
            check: self.check(key),
            value,
        };
        let slot = self.read % self.capacity;
        self.read = self.read.wrapping_add(1);
        let at = slot as u32;
        if let Some(old) = self.records.get(slot).copied() {
            // Unless a newer record under the same key is filed elsewhere.
            if let Ok(e) = self.slots.find_entry(old.hash, |&s| s == at) {
                e.remove();
            }
        }
        // The key's older record, if any, is found by its hash and check, and its place in
        // the table taken over.
        let records = &self.records;
        let same = |&s: &u32| {
            records
                .get(s as usize)
                .is_some_and(|r| r.hash == kept.hash && r.check == kept.check)
        };
        if let Ok(mut e) = self.slots.find_entry(kept.hash, same) {
            *e.get_mut() = at;
        } else {
            let records = &self.records;
            let hash_of = |&s: &u32| records.get(s as usize).map_or(0, |r| r.hash);
            self.slots.insert_unique(kept.hash, at, hash_of);
        }
        match self.records.get_mut(slot) {
            Some(old) => *old = kept,
            None => self.records.push(kept),
        }
    }

    fn get(&self, key: &[u8; KEY_LEN]) -> Option<[u8; VALUE_LEN]> {
        let hash = self.hasher.hash_one(&key[..]);
        // The check is hashed only for a record of the same hash: of the two keys a UDP flow
        // is looked up by (with and without its local address), one usually has none.
        let mut check = None;
        let records = &self.records;
        let slot = self.slots.find(hash, |&s| {
            records.get(s as usize).is_some_and(|r| {
                r.hash == hash && r.check == *check.get_or_insert_with(|| self.check(&key[..]))
            })
        })?;
        records.get(*slot as usize).map(|r| r.value)
    }

    fn check(&self, key: &[u8]) -> u64 {
        self.hasher.hash_one((CHECK_TAG, key))
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

/// The file descriptors the programs file records with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingFds {
    /// The ring buffer.
    pub ring: i32,
    /// The one-slot array of the count of records the ring refused.
    pub refused: i32,
    /// Filled past this many bytes, a record wakes the drain thread.
    pub wake_at: i32,
}

/// A ring and its index, shared by every lookup handle and the drain thread.
pub struct RingRecords {
    spec: Spec,
    map: OwnedFd,
    refused: OwnedFd,
    /// The count of records the ring refused (one 64-bit word).
    refusals: Mapped,
    inner: Mutex<Inner>,
}

impl RingRecords {
    pub fn create(spec: Spec) -> io::Result<RingRecords> {
        let map = ring_create(spec.ring_bytes, spec.ring_name)?;
        let ring = Ring::new(&map, spec.ring_bytes as usize)?;
        let refused = mappable_array_create(8, 1, spec.refused_name)?;
        let refusals = Mapped::new(&refused, rustix::param::page_size())?;
        Ok(RingRecords {
            spec,
            map,
            refused,
            refusals,
            inner: Mutex::new(Inner {
                ring,
                index: Index::new(spec.capacity.max(1)),
            }),
        })
    }

    /// The file descriptors for the programs that file into the ring.
    pub fn fds(&self) -> RingFds {
        RingFds {
            ring: self.map.as_raw_fd(),
            refused: self.refused.as_raw_fd(),
            wake_at: self.spec.wake_at(),
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
            for _ in 0..=self.spec.ring_records() / BATCH + BUSY_TRIES {
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
        // record was counted inside its `connect()`, before its first packet, and a send's
        // inside the send, before its datagram; the tracepoint fallback files once the
        // handshake is over, possibly after this lookup.
        let now = self.refusals.word(0)?;
        let seen = u32::from_ne_bytes(found[VALUE_REFUSED.range()].try_into().ok()?);
        (seen == now as u32).then_some(found)
    }

    /// The count of records the ring refused.
    #[cfg(test)]
    pub fn refusals(&self) -> Option<u64> {
        self.refusals.word(0)
    }

    /// Drains the ring: at most a ring's worth, a batch at a time, letting the lock go
    /// between batches for the lookups. Returns the records read.
    fn drain_all(&self) -> usize {
        let mut read = 0;
        for _ in 0..=self.spec.ring_records() / BATCH {
            let d = self.inner().drain(BATCH);
            read += d.read;
            if d.busy || d.read < BATCH {
                break;
            }
        }
        read
    }
}

/// Drains the rings whenever the programs say one is half full; returns only if waiting
/// fails.
pub fn run_drains(rings: &[Arc<RingRecords>]) -> io::Error {
    use rustix::event::{poll, PollFd, PollFlags};
    loop {
        let mut fds: Vec<PollFd<'_>> = rings
            .iter()
            .map(|r| PollFd::new(&r.map, PollFlags::IN))
            .collect();
        match poll(&mut fds, None) {
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return e.into(),
        }
        let mut busy = false;
        for r in rings {
            busy |= r.drain_all() >= r.spec.ring_records() / 4;
        }
        if !busy {
            std::thread::sleep(DRAIN_NAP);
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

    const CAPACITY: usize = TCP.capacity;

    #[test]
    fn the_newest_record_under_a_key_is_found_and_others_are_not() {
        let mut ix = Index::new(CAPACITY);
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
        let mut ix = Index::new(CAPACITY);
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
        let mut ix = Index::new(CAPACITY);
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

    #[test]
    fn a_record_is_taken_only_for_the_key_both_its_hashes_are_of() {
        let mut ix = Index::new(CAPACITY);
        ix.insert(&record(1, 10));
        // Another key made to meet key 1's record in the slot map and in its first hash:
        // the second hash tells them apart.
        let other = ix.hasher.hash_one(&key(2)[..]);
        ix.slots.clear();
        ix.slots.insert_unique(other, 0, |_| other);
        ix.records[0].hash = other;
        assert_eq!(ix.get(&key(2)), None);
        // Both hashes as key 2's: only then is it taken for key 2.
        ix.records[0].check = ix.check(&key(2));
        assert_eq!(ix.get(&key(2)).map(|v| v[0]), Some(10));
    }

    #[test]
    fn each_kind_of_record_is_pushed_out_by_its_own_capacity() {
        let mut ix = Index::new(UDP.capacity);
        ix.insert(&record(1, 10));
        for i in 0..TCP.capacity {
            let mut r = record(0, 0);
            r[VALUE_LEN..VALUE_LEN + 8].copy_from_slice(&(i as u64 + 1000).to_ne_bytes());
            ix.insert(&r);
        }
        assert_eq!(ix.get(&key(1)).map(|v| v[0]), Some(10), "UDP keeps more");
        const { assert!(UDP.capacity > TCP.capacity) };
        assert!(UDP.wake_at() < UDP.ring_bytes as i32 && TCP.wake_at() > UDP.wake_at());
    }
}
