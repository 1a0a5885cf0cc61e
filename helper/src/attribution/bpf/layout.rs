//! Where each field of a connect record sits: the one table both sides of the map read.
//!
//! A record is written by the kernel-side program, which stores field by field into a copy
//! of the key and value on its stack, and read by the helper, which builds the same key
//! from a flow's tuple and decodes the value. If the two disagreed by one byte, nothing
//! would fail: every lookup would just miss, and attribution would quietly fall back to the
//! slower socket lookups that cannot name a process that has already exited. So the offsets
//! are written once, here; the program generator stores at `KEY + KEY_NETNS.off` and the
//! helper copies into `KEY_NETNS.range()`, and a test checks that the fields tile the key
//! and value exactly.
//!
//! Byte order: the namespace inode, family, tgid, uid and time are native (the program
//! stores registers); ports and addresses are in network order, as `struct sock` holds them.

use std::ops::Range;

/// A field: `len` bytes at `off` from the start of the key or value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    pub off: usize,
    pub len: usize,
}

impl Field {
    pub const fn end(self) -> usize {
        self.off + self.len
    }

    pub const fn range(self) -> Range<usize> {
        self.off..self.end()
    }

    /// The field's address in a copy of the record that starts at `base` on the program's
    /// stack (a negative offset from the frame pointer).
    pub const fn at(self, base: i16) -> i16 {
        // Fits: every field ends within KEY_LEN or VALUE_LEN (checked below).
        base + self.off as i16
    }
}

/// The connect map's key: the connection as the socket sees it, and its network namespace.
///
/// ```text
///  0 u32 netns inode   4 u16 family   6 u16 remote port (network order)
///  8 u16 local port (network order)   10 u8 IP protocol   11..16 zero
/// 16 [u8; 16] remote address          32 [u8; 16] local address (IPv4: first 4 bytes)
/// ```
pub const KEY_LEN: usize = 48;
/// The network namespace's inode number (`net->ns.inum`).
pub const KEY_NETNS: Field = Field { off: 0, len: 4 };
/// `AF_INET` or `AF_INET6`; an IPv4 flow on a dual-stack socket is `AF_INET`.
pub const KEY_FAMILY: Field = Field { off: 4, len: 2 };
/// The remote port, `skc_dport`.
pub const KEY_DPORT: Field = Field { off: 6, len: 2 };
/// The local port, `inet_sport`.
pub const KEY_SPORT: Field = Field { off: 8, len: 2 };
/// The IP protocol number.
pub const KEY_PROTO: Field = Field { off: 10, len: 1 };
/// Always zero. It puts the addresses at 16, 8-byte aligned, where the program reads and
/// zeroes them a word at a time.
pub const KEY_PAD: Field = Field { off: 11, len: 5 };
/// The remote address: 16 bytes of IPv6, or IPv4's 4 then zeros.
pub const KEY_DADDR: Field = Field { off: 16, len: 16 };
/// The local address, as [`KEY_DADDR`].
pub const KEY_SADDR: Field = Field { off: 32, len: 16 };

/// The key's fields in order, for the tests and anyone checking the table.
pub const KEY_FIELDS: [(&str, Field); 8] = [
    ("netns", KEY_NETNS),
    ("family", KEY_FAMILY),
    ("dport", KEY_DPORT),
    ("sport", KEY_SPORT),
    ("proto", KEY_PROTO),
    ("pad", KEY_PAD),
    ("daddr", KEY_DADDR),
    ("saddr", KEY_SADDR),
];

/// The value, in both maps: `0 u32 tgid, 4 u32 uid, 8 u64 CLOCK_BOOTTIME ns, 16 [u8; 16] comm,
/// 32 u64 the process's start time, 40 u32 flags, 44 u32 refusals seen (TCP, else zero)`.
pub const VALUE_LEN: usize = 48;
/// The thread group id (the process), the top half of `get_current_pid_tgid`.
pub const VALUE_TGID: Field = Field { off: 0, len: 4 };
/// The uid, the low half of `get_current_uid_gid`.
pub const VALUE_UID: Field = Field { off: 4, len: 4 };
/// When it connected, `ktime_get_boot_ns`.
pub const VALUE_BOOT_NS: Field = Field { off: 8, len: 8 };
/// The thread's name, NUL-terminated unless it fills all 16 bytes.
pub const VALUE_COMM: Field = Field { off: 16, len: 16 };
/// When the process started (its leader's `start_boottime`, CLOCK_BOOTTIME ns): with the
/// tgid, what tells this process from a later one given the same pid. Zero when it could not
/// be read.
pub const VALUE_START: Field = Field { off: 32, len: 8 };
/// [`VALUE_BY_WRITE`], or 0.
pub const VALUE_FLAGS: Field = Field { off: 40, len: 4 };
/// A record's count of records its ring had refused when it was filed (the low half of the
/// count in `attribution::ring_records`; each ring has its own count).
pub const VALUE_REFUSED: Field = Field { off: 44, len: 4 };
/// The flag of a TCP record filed when a write opened the connection (TCP Fast Open:
/// `MSG_FASTOPEN`, or the first write on a socket connected with `TCP_FASTOPEN_CONNECT`):
/// the process is the one that wrote, which need not be the one that called `connect()`.
pub const VALUE_BY_WRITE: i32 = 1;

/// The value's fields in order.
pub const VALUE_FIELDS: [(&str, Field); 7] = [
    ("tgid", VALUE_TGID),
    ("uid", VALUE_UID),
    ("boot_ns", VALUE_BOOT_NS),
    ("comm", VALUE_COMM),
    ("start", VALUE_START),
    ("flags", VALUE_FLAGS),
    ("refused", VALUE_REFUSED),
];

/// The pending map's key: the socket's kernel address, while its handshake is in flight.
pub const PENDING_KEY_LEN: usize = 8;

/// The exec map's key: the tgid (native order).
pub const EXEC_KEY_LEN: usize = 4;

/// An exec record, filed by the exec hook under the tgid: what the process became at its
/// last `execve`, and who it came from.
///
/// ```text
///   0 u32 tgid          4 u32 parent's tgid        8 u64 start time (leader's start_boottime)
///  16 u64 parent's start time                     24 u64 when it exec'd (CLOCK_BOOTTIME)
///  32 u64 the executable's inode                  40 u32 its device (the kernel's dev_t)
///  44 u32 uid          48 u32 mount namespace inode 52 u32 bytes of argv read
///  56 [u8; 16] comm    72 [u8; 256] the executable's path, NUL-terminated
/// 328 [u8; 4096] argv, NUL-separated, cut at 4 KiB
/// ```
pub const EXEC_LEN: usize = 4424;
pub const EXEC_TGID: Field = Field { off: 0, len: 4 };
pub const EXEC_PPID: Field = Field { off: 4, len: 4 };
pub const EXEC_START: Field = Field { off: 8, len: 8 };
pub const EXEC_PARENT_START: Field = Field { off: 16, len: 8 };
pub const EXEC_AT: Field = Field { off: 24, len: 8 };
pub const EXEC_INO: Field = Field { off: 32, len: 8 };
pub const EXEC_DEV: Field = Field { off: 40, len: 4 };
pub const EXEC_UID: Field = Field { off: 44, len: 4 };
pub const EXEC_MNT_NS: Field = Field { off: 48, len: 4 };
pub const EXEC_ARGS_LEN: Field = Field { off: 52, len: 4 };
pub const EXEC_COMM: Field = Field { off: 56, len: 16 };
/// `bprm->interp`: the file that runs, which for a script is its interpreter, as
/// `/proc/PID/exe` names it.
pub const EXEC_PATH: Field = Field { off: 72, len: 256 };
pub const EXEC_ARGS: Field = Field {
    off: 328,
    len: 4096,
};
/// Everything before the argv, which the program zeroes before each record: the scratch
/// space it fills is reused, and a field it cannot read must not keep the last exec's value.
pub const EXEC_HEADER_LEN: usize = EXEC_ARGS.off;

pub const EXEC_FIELDS: [(&str, Field); 13] = [
    ("tgid", EXEC_TGID),
    ("ppid", EXEC_PPID),
    ("start", EXEC_START),
    ("parent_start", EXEC_PARENT_START),
    ("at", EXEC_AT),
    ("ino", EXEC_INO),
    ("dev", EXEC_DEV),
    ("uid", EXEC_UID),
    ("mnt_ns", EXEC_MNT_NS),
    ("args_len", EXEC_ARGS_LEN),
    ("comm", EXEC_COMM),
    ("path", EXEC_PATH),
    ("args", EXEC_ARGS),
];

/// A fork record, filed by the fork program under the new process's tgid (native order, as
/// the exec map's key): who called `fork` or `clone` for it, and the file that caller ran.
///
/// ```text
///  0 u32 tgid           4 u32 the forking process's tgid
///  8 u64 start time     16 u64 the forking process's start time (its leader's)
/// 24 u64 the inode of the file the forking process ran    32 u32 its device
/// 36 u32 flags: [`IMAGE_INHERITED`] when that file is the forker's `mm->exe_file`, not its
///        image (the forker had none: it started before the helper)
/// ```
pub const FORK_LEN: usize = 40;
pub const FORK_TGID: Field = Field { off: 0, len: 4 };
pub const FORK_BY: Field = Field { off: 4, len: 4 };
pub const FORK_START: Field = Field { off: 8, len: 8 };
pub const FORK_BY_START: Field = Field { off: 16, len: 8 };
pub const FORK_BY_INO: Field = Field { off: 24, len: 8 };
pub const FORK_BY_DEV: Field = Field { off: 32, len: 4 };
pub const FORK_FLAGS: Field = Field { off: 36, len: 4 };

pub const FORK_FIELDS: [(&str, Field); 7] = [
    ("tgid", FORK_TGID),
    ("by", FORK_BY),
    ("start", FORK_START),
    ("by_start", FORK_BY_START),
    ("by_ino", FORK_BY_INO),
    ("by_dev", FORK_BY_DEV),
    ("flags", FORK_FLAGS),
];

/// An image entry, filed under the tgid by the exec program (the file `execve` ran) and
/// copied by the fork program from the forking process's entry into the new process's; the
/// free program removes it when the process is gone. What a process runs, as only the kernel
/// saw it (see `attribution::image`).
///
/// ```text
///  0 u64 start time   8 u64 the file's inode   16 u32 its device   20 u32 flags
/// 24 u64 for an inherited entry, the start time of the process whose `mm->exe_file` it holds
/// 32 u64 when the process's last `execve` ran that file (CLOCK_BOOTTIME ns; 0 for a process
///        that has not exec'd since it was forked): a connection made before then was made
///        by the program it ran before
/// ```
pub const IMAGE_LEN: usize = 40;
pub const IMAGE_START: Field = Field { off: 0, len: 8 };
pub const IMAGE_INO: Field = Field { off: 8, len: 8 };
pub const IMAGE_DEV: Field = Field { off: 16, len: 4 };
pub const IMAGE_FLAGS: Field = Field { off: 20, len: 4 };
pub const IMAGE_ORIGIN: Field = Field { off: 24, len: 8 };
pub const IMAGE_EXEC: Field = Field { off: 32, len: 8 };
/// The flag of an entry (or fork record) whose file was taken from the forking process's
/// `mm->exe_file`, which a program can set, because the forker had no entry of its own.
pub const IMAGE_INHERITED: i32 = 1;

pub const IMAGE_FIELDS: [(&str, Field); 6] = [
    ("start", IMAGE_START),
    ("ino", IMAGE_INO),
    ("dev", IMAGE_DEV),
    ("flags", IMAGE_FLAGS),
    ("origin", IMAGE_ORIGIN),
    ("exec", IMAGE_EXEC),
];

const _: () = assert!(KEY_LEN + VALUE_LEN <= i16::MAX as usize);

#[cfg(test)]
mod tests {
    use super::*;

    /// Each field starts where the one before it ended, the first at 0 and the last ending
    /// at `len`: no gap, no overlap.
    fn assert_tiles(fields: &[(&str, Field)], len: usize) {
        let mut end = 0;
        for (name, f) in fields {
            assert!(f.len > 0, "{name} is empty");
            assert_eq!(f.off, end, "{name} starts at {} after {end}", f.off);
            end = f.end();
        }
        assert_eq!(end, len);
    }

    #[test]
    fn the_fields_tile_the_key_and_the_value() {
        assert_tiles(&KEY_FIELDS, KEY_LEN);
        assert_tiles(&VALUE_FIELDS, VALUE_LEN);
        assert_tiles(&EXEC_FIELDS, EXEC_LEN);
        assert_tiles(&FORK_FIELDS, FORK_LEN);
        assert_tiles(&IMAGE_FIELDS, IMAGE_LEN);
        assert_eq!(EXEC_HEADER_LEN % 8, 0);
    }

    #[test]
    fn the_program_can_store_each_field_with_aligned_stores() {
        // The program writes the addresses and the time as 8-byte words, the rest as the
        // register width of the field; each must be aligned to its own size.
        for (name, f) in KEY_FIELDS
            .iter()
            .chain(&VALUE_FIELDS)
            .chain(&EXEC_FIELDS)
            .chain(&FORK_FIELDS)
            .chain(&IMAGE_FIELDS)
        {
            let align = if f.len.is_power_of_two() {
                f.len.min(8)
            } else {
                1
            };
            assert_eq!(f.off % align, 0, "{name} is misaligned");
        }
        assert_eq!(KEY_DADDR.off % 8, 0);
        assert_eq!(KEY_SADDR.off % 8, 0);
        assert_eq!(KEY_LEN % 8, 0);
        assert_eq!(VALUE_LEN % 8, 0);
    }

    #[test]
    fn stack_addresses_count_from_the_copy_s_start() {
        assert_eq!(KEY_PROTO.at(-48), -38);
        assert_eq!(VALUE_COMM.at(-88), -72);
        assert_eq!(KEY_SADDR.range(), 32..48);
    }
}
