//! Which local ports ever had a UDP send record filed, and of which kind, read without a
//! system call.
//!
//! A UDP flow's send record may be under two keys: its tuple, or its tuple with no local
//! address (a socket that lets routing pick its source; see `record_key::wildcard_key`),
//! and the newer of the two wins. So every UDP flow cost two `bpf()` lookups, the largest
//! share of the helper's CPU in a burst of datagrams. Most ports only ever see one kind: a
//! connected socket's records have the address, a wildcard-bound socket's `sendto` records
//! have none. Before each UDP record they file, the programs count it in its local port's
//! slot of a mappable array (an atomic add: one count for records with an address, one for
//! records without), and a lookup of a kind whose count is still zero, so that no record
//! of it was ever filed from that port since the helper started, is not made.
//!
//! A count only grows, so no program, however long it stalls between counting and filing,
//! can make a count look as if nothing were filed. The counts are per port only (any
//! namespace, any destination, any socket): a count can make a lookup happen that finds
//! nothing, never skip one that would have found a record. A hostile program sending from
//! the port of a flow it wants named after itself gains nothing: the lookup it causes is the
//! one every flow made before. A port used once for each kind costs both lookups from then
//! on, as before. The array is 65,536 slots of 16 bytes: 1 MiB of kernel memory, mapped by
//! the helper; only the pages of ports it looks at become part of its resident memory.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};

use super::bpf::layout::{KEY_LEN, KEY_SADDR, KEY_SPORT};
use super::bpf::sys::{mappable_array_create, Mapped};

/// One slot per local port.
const PORTS: u32 = 1 << 16;
/// Two words a slot: the count of records with a local address, the count of those without.
const SLOT: usize = 16;

/// The array, mapped.
pub struct PortMarks {
    map: OwnedFd,
    mapped: Mapped,
}

impl PortMarks {
    pub fn create() -> io::Result<PortMarks> {
        // A 64-bit count is read and added to whole only on 64-bit machines (a 32-bit
        // kernel's JIT splits the add, and reading one takes a write there).
        if cfg!(not(target_pointer_width = "64")) {
            return Err(io::ErrorKind::Unsupported.into());
        }
        let map = mappable_array_create(SLOT, PORTS, b"ctt_ports")?;
        let mapped = Mapped::new(&map, SLOT * PORTS as usize)?;
        Ok(PortMarks { map, mapped })
    }

    /// The array's file descriptor, for the programs that write it.
    pub fn fd(&self) -> i32 {
        self.map.as_raw_fd()
    }

    /// Whether a record under `key` may be in the map: false only when no record of its
    /// kind was ever filed from its port.
    pub fn may_hold(&self, key: &[u8; KEY_LEN]) -> bool {
        may_hold(key, |w| self.mapped.word(w))
    }
}

/// The word of the array that counts records under `key`.
fn word_of(key: &[u8; KEY_LEN]) -> usize {
    let port = u16::from_ne_bytes([key[KEY_SPORT.off], key[KEY_SPORT.off + 1]]);
    let wild = key[KEY_SADDR.range()].iter().all(|&b| b == 0);
    usize::from(port) * 2 + usize::from(wild)
}

/// [`PortMarks::may_hold`] over any array; a word that cannot be read says yes.
fn may_hold(key: &[u8; KEY_LEN], word: impl Fn(usize) -> Option<u64>) -> bool {
    word(word_of(key)).is_none_or(|count| count > 0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::attribution::record_key::{key, wildcard_key};
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
    fn a_lookup_is_made_unless_no_record_of_its_kind_was_ever_filed_from_its_port() {
        let t = fixtures::flow(Proto::Udp, "10.0.0.1", 4000, "9.9.9.9", 53).orig;
        let exact = key(7, &t);
        let wild = wildcard_key(exact);
        // Only records without an address were filed from this port, three of them.
        let counts = |w: usize| Some(if w == word_of(&wild) { 3 } else { 0 });
        assert!(!may_hold(&exact, counts));
        assert!(may_hold(&wild, counts));
        // Another port: nothing filed, nothing asked.
        let other = fixtures::flow(Proto::Udp, "10.0.0.1", 4001, "9.9.9.9", 53).orig;
        assert!(!may_hold(&wildcard_key(key(7, &other)), counts));
        // An unreadable word says yes.
        assert!(may_hold(&exact, |_| None));
    }
}
