//! Which local ports had a UDP send record filed lately, and of which kind, read without a
//! system call.
//!
//! A UDP flow's send record may be under two keys: its tuple, or its tuple with no local
//! address (a socket that lets routing pick its source; see `connect_hook::wildcard_key`),
//! and the newer of the two wins. So every UDP flow cost two `bpf()` lookups, the largest
//! share of the helper's CPU in a burst of datagrams. Most ports only ever see one kind: a
//! connected socket's records have the address, a wildcard-bound socket's `sendto` records
//! have none. The programs note, before each UDP record they file, its time in its local
//! port's slot of a mappable array: one word for records with an address, one for records
//! without. A lookup whose kind has no mark since the oldest record the flow could still
//! take (`since`) would find nothing it may use, and is not made.
//!
//! The marks are per port only (any namespace, any destination, any socket): a mark can
//! make a lookup happen that finds nothing, never skip one that would have found a record.
//! A hostile program sending from the port of a flow it wants named after itself gains
//! nothing: the lookup it causes is the one every flow made before. The array is 65,536
//! slots of 16 bytes: 1 MiB of kernel memory.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use super::bpf::layout::{KEY_LEN, KEY_SADDR, KEY_SPORT};
use super::bpf::sys::{mappable_array_create, Mapped};

/// One slot per local port.
const PORTS: u32 = 1 << 16;
/// Two words a slot: the newest record with a local address, the newest without.
const SLOT: usize = 16;

/// The array, mapped.
pub struct PortMarks {
    map: OwnedFd,
    mapped: Mapped,
}

impl PortMarks {
    pub fn create() -> io::Result<PortMarks> {
        let map = mappable_array_create(SLOT, PORTS, b"ctt_ports")?;
        let mapped = Mapped::new(&map, SLOT * PORTS as usize)?;
        Ok(PortMarks { map, mapped })
    }

    /// The array's file descriptor, for the programs that write it.
    pub fn fd(&self) -> i32 {
        self.map.as_raw_fd()
    }

    /// Whether a record under `key` filed at or after `since_ns` (CLOCK_BOOTTIME) may be in
    /// the map: false only when its port's mark of its kind is older.
    pub fn may_hold(&self, key: &[u8; KEY_LEN], since_ns: u64) -> bool {
        may_hold(key, since_ns, |w| self.mapped.word(w))
    }
}

/// The word of the array that marks records under `key`.
fn word_of(key: &[u8; KEY_LEN]) -> usize {
    let port = u16::from_ne_bytes([key[KEY_SPORT.off], key[KEY_SPORT.off + 1]]);
    let wild = key[KEY_SADDR.range()].iter().all(|&b| b == 0);
    usize::from(port) * 2 + usize::from(wild)
}

/// [`PortMarks::may_hold`] over any array; a word that cannot be read says yes.
fn may_hold(key: &[u8; KEY_LEN], since_ns: u64, word: impl Fn(usize) -> Option<u64>) -> bool {
    word(word_of(key)).is_none_or(|marked| marked >= since_ns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::connect_hook::{key, wildcard_key};
    use crate::flow::{fixtures, Proto};

    #[test]
    fn a_key_s_word_is_its_port_s_slot_and_its_kind() {
        let t = fixtures::flow(Proto::Udp, "10.0.0.1", 0x1234, "9.9.9.9", 53).orig;
        let exact = key(7, &t);
        // The port as the key holds it (network order), read natively, as the program does.
        let slot = usize::from(u16::from_ne_bytes(0x1234u16.to_be_bytes()));
        assert_eq!(word_of(&exact), slot * 2);
        assert_eq!(word_of(&wildcard_key(exact)), slot * 2 + 1);
        let v6 = fixtures::flow(Proto::Udp, "fd00::1", 0x1234, "fd00::9", 53).orig;
        assert_eq!(word_of(&key(7, &v6)), slot * 2);
        // Every port has a slot within the array.
        let last = fixtures::flow(Proto::Udp, "10.0.0.1", u16::MAX, "9.9.9.9", 53).orig;
        assert!(word_of(&wildcard_key(key(7, &last))) < PORTS as usize * SLOT / 8);
    }

    #[test]
    fn a_lookup_is_made_unless_its_kind_s_mark_is_older_than_the_flow_can_take() {
        let t = fixtures::flow(Proto::Udp, "10.0.0.1", 4000, "9.9.9.9", 53).orig;
        let exact = key(7, &t);
        let wild = wildcard_key(exact);
        // Only records without an address were filed from this port, the last at 500.
        let marks = |w: usize| Some(if w == word_of(&wild) { 500 } else { 0 });
        assert!(!may_hold(&exact, 400, marks));
        assert!(may_hold(&wild, 400, marks));
        assert!(may_hold(&wild, 500, marks));
        assert!(!may_hold(&wild, 501, marks));
        // Without a window (since 0) every lookup is made; an unreadable word says yes.
        assert!(may_hold(&exact, 0, marks));
        assert!(may_hold(&exact, 400, |_| None));
    }
}
