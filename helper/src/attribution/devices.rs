//! The kernel's device numbers and the ones `stat` reports, which differ on some filesystems.
//!
//! The kernel-side records name a file by its inode and its super block's device
//! (`i_sb->s_dev`), and `stat` names it by `st_dev`. Those are the same number on most
//! filesystems, but not on btrfs, where `stat` reports the subvolume's own device. Comparing
//! them as they are would call every file on btrfs another file. `/proc/self/mountinfo`
//! lists each mount's super block device, and a `stat` of the mount point shows the device
//! files there report: that pairing, made from the helper's own mount table (which no
//! program in another mount namespace can change), is what lets a record's device stand for
//! a `stat`'s. The inode numbers must be equal in any case.
//!
//! Left open: a btrfs super block holds every subvolume, each numbering its inodes apart, and
//! a user can make subvolumes of their own. A file in one with the inode number of a file in
//! a mounted subvolume pairs with it. So this pairing is used where a record must *agree*
//! with `/proc` (`attribution::image`), never to verify a path from a record alone.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::time::{Duration, Instant};

use crate::attribution::exe::FileId;

/// How often the mount table is read again, at most, when a pairing is not known.
const REREAD: Duration = Duration::from_secs(1);

/// The pairing of super block devices with the devices `stat` reports under them.
#[derive(Debug, Default)]
pub struct Devices {
    seen_as: HashMap<u64, Vec<u64>>,
    read_at: Option<Instant>,
}

impl Devices {
    pub fn new() -> Devices {
        Devices::default()
    }

    /// Whether `kernel` (a record's device and inode) and `seen` (a `stat`'s) are one file.
    pub fn same(&mut self, kernel: FileId, seen: FileId) -> bool {
        if kernel.1 != seen.1 {
            return false;
        }
        if kernel.0 == seen.0 || self.paired(kernel.0, seen.0) {
            return true;
        }
        if self.read_at.is_some_and(|t| t.elapsed() < REREAD) {
            return false;
        }
        self.read_at = Some(Instant::now());
        self.seen_as = pairs(&std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default());
        self.paired(kernel.0, seen.0)
    }

    fn paired(&self, kernel: u64, seen: u64) -> bool {
        self.seen_as.get(&kernel).is_some_and(|s| s.contains(&seen))
    }
}

/// Each mount's super block device, with the device a `stat` of its mount point reports,
/// where they differ.
fn pairs(mountinfo: &str) -> HashMap<u64, Vec<u64>> {
    let mut out: HashMap<u64, Vec<u64>> = HashMap::new();
    for (kernel, at) in mounts(mountinfo) {
        let Ok(m) = std::fs::metadata(&at) else {
            continue;
        };
        if m.dev() != kernel {
            out.entry(kernel).or_default().push(m.dev());
        }
    }
    out
}

/// Filesystems whose files `stat` reports on another device than their super block's. Only
/// their mount points are looked at: a `stat` of every mount point would wake automounts and
/// could hang on a dead network mount.
const OWN_DEVICES: &[&str] = &["btrfs", "bcachefs"];

/// `(device, mount point)` of each line of a mountinfo table of a filesystem in
/// [`OWN_DEVICES`] (fields 3 and 5, and the type after the ` - `; the mount point's spaces
/// and such are octal escapes).
fn mounts(mountinfo: &str) -> Vec<(u64, String)> {
    mountinfo
        .lines()
        .filter_map(|line| {
            let (fields, rest) = line.split_once(" - ")?;
            let fstype = rest.split(' ').next()?;
            if !OWN_DEVICES.contains(&fstype) {
                return None;
            }
            let mut f = fields.split(' ');
            let dev = f.nth(2)?;
            let at = f.nth(1)?;
            let (major, minor) = dev.split_once(':')?;
            let dev = libc::makedev(major.parse().ok()?, minor.parse().ok()?);
            Some((dev, unescape(at)))
        })
        .collect()
}

/// Undoes mountinfo's `\ooo` escapes.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        match (b[i], octal) {
            (b'\\', Some(d)) => {
                let v = d.iter().fold(0u32, |v, c| v * 8 + u32::from(c - b'0'));
                out.push(u8::try_from(v).unwrap_or(b'?'));
                i += 4;
            }
            (c, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_lines_give_device_and_unescaped_mount_point() {
        let table = "22 1 0:31 / / rw,relatime shared:1 - btrfs /dev/vda2 rw\n\
                     40 22 8:1 / /mnt/my\\040disk rw - btrfs /dev/sda1 rw\n\
                     41 22 0:50 / /net rw - autofs systemd-1 rw\n\
                     42 22 8:2 / /home rw - ext4 /dev/sda2 rw\n\
                     garbage\n";
        assert_eq!(
            mounts(table),
            [
                (libc::makedev(0, 31), "/".to_string()),
                (libc::makedev(8, 1), "/mnt/my disk".to_string()),
            ]
        );
        assert_eq!(unescape("a\\134b\\"), "a\\b\\");
    }

    #[test]
    fn one_file_needs_the_same_inode_and_a_device_the_mounts_pair() {
        let mut d = Devices {
            seen_as: HashMap::from([(7, vec![40])]),
            read_at: Some(Instant::now()),
        };
        assert!(d.same((3, 9), (3, 9)));
        assert!(d.same((7, 9), (40, 9)), "btrfs: the subvolume's device");
        assert!(
            !d.same((7, 9), (41, 9)),
            "another filesystem's file with that inode"
        );
        assert!(!d.same((7, 9), (40, 10)));
        assert!(!d.same((3, 9), (4, 9)));
    }
}
